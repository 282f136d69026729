//! Pipeline files: [`raw`] parses the text (spans kept, no I/O), [`check`] resolves it against the
//! registry into a [`Pipeline`] ([`model`]): kinds found, parameters typed with defaults filled in
//! ([`params`]), inputs connected, the graph acyclic and in topological order ([`graph`], petgraph),
//! sweeps and overrides validated ([`sweep`]); [`executor`] checks where stages run (`[executor]`).
//!
//! This file only re-exports: the modules import one another directly, never through it, so that no
//! two of them import each other.

pub mod check;
pub mod executor;
pub mod graph;
pub mod model;
pub mod params;
pub mod raw;
pub mod sweep;

pub use check::load;
pub use executor::{Executor, ExecutorKind, JobSettings};
pub use model::{Pipeline, Stage, SweepAxis};
pub use sweep::Override;
