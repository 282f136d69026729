//! Pipeline files: [`raw`] parses the text (spans kept, no I/O), [`check`] resolves it against the
//! registry into a [`Pipeline`]: kinds found, parameters typed with defaults filled in, inputs
//! connected, the graph acyclic and in topological order, sweeps validated; [`graph`] holds the stage
//! graph (petgraph): its topological order and cycles; [`executor`] checks where stages run
//! (`[executor]`).

pub mod check;
pub mod executor;
pub mod graph;
pub mod raw;

pub use check::{load, Override, Pipeline, Stage, SweepAxis};
pub use executor::{Executor, ExecutorKind, JobSettings};
