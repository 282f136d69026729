//! Stage kinds built into the runner (no ML): the `command` kind.

pub mod command;
