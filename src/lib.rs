//! wspace: the runner. A pipeline file → a checked graph → stage keys → the cache → the scheduler → the
//! CLI. This crate knows nothing of any stage kind's internals (they implement
//! [`wspace_stage_api::StageKind`]) and does not depend on candle.
//!
//! # Brief overview
//! - [`pipeline`]: the TOML format ([`pipeline::raw`]: text → spanned items, no I/O) and its checking
//!   ([`pipeline::check`]: kinds, typed parameters, inputs) into a [`pipeline::Pipeline`]; the stage
//!   graph in petgraph ([`pipeline::graph`]: topological order, cycles); sweeps and `--set`
//!   ([`pipeline::sweep`]).
//! - [`key`]: [`key::Ingredients`] → [`key::StageKey`] (blake3 of a canonical encoding).
//! - [`cache`]: the on-disk store and its contract (read its module doc first).
//! - [`exec`]: the scheduler ([`exec::Runner`]); [`reason`]: why a stage reruns; [`error`]: what goes wrong
//!   running stages (cache, stage, Slurm, spec), each error with its causes ([`error::chain`] prints them).
//! - where stages run: in-process, or [`slurm`] jobs that run a serialised [`spec`] (`wspace exec-stage`);
//!   [`interrupt`]: Ctrl-C cancels those jobs.
//! - [`registry`]: `kind = "..."` → implementation; [`builtin`]: the `command` kind.
//! - [`gc`]: what `gc` keeps, and `fsck`; [`compare`]: two versions of an output, number by number (`verify`);
//!   [`machine`]: the machine's float class.
//! - [`cli`]: the commands; [`report`]: tables, JSON, documents and headlines, sweep CSV; [`metrics`]: what
//!   a stage output's `metrics.json` says; [`sweep_page`]: the sweep's page of plots; [`progress`]: bars,
//!   or lines off a terminal.

pub mod builtin;
pub mod cache;
pub mod cli;
pub mod compare;
pub mod diag;
pub mod digest;
pub mod error;
pub mod exec;
pub mod gc;
pub mod interrupt;
pub mod key;
pub mod machine;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod reason;
pub mod registry;
pub mod report;
pub mod slurm;
pub mod spec;
pub mod sweep_page;
