//! The command line: `wspace run | status | explain | dag | show | ls | gc | fsck | verify | bench | kinds`, and
//! `exec-stage` (what a Slurm job runs).
//!
//! # Brief overview
//! This file holds the clap definitions ([`Cli`], [`Command`]: what `wspace --help` shows) and the
//! dispatch; each command's body lives in a module of its own: [`run`] (`run`, `status`), [`explain`],
//! [`dag`], [`show`], [`ls`], [`gc`] (`gc`, `fsck`), [`verify`], [`kinds`]. [`args`] holds the arguments
//! several commands share and turns them into a checked pipeline (and one stage of it); [`fail`] is how
//! a command fails; [`fmt`] holds the small output formatters. Those modules never import this one.
//!
//! Exit codes: 0 success; 1 a stage failed (or `verify` found a difference); 2 the command line or the
//! pipeline file is wrong (nothing ran, nothing in the cache was touched); 3 `verify` found different
//! bytes, every number within its tolerance; 130 / 143 a run was interrupted by SIGINT / SIGTERM (see
//! [`crate::interrupt`]).

mod args;
mod dag;
mod explain;
mod fail;
mod fmt;
mod gc;
mod kinds;
mod ls;
mod run;
mod show;
mod verify;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::cache::Cache;
use crate::pipeline::{self, ExecutorKind};
use crate::registry::Registry;

pub use args::{CacheArg, Format, PipelineArgs};
pub use fail::Fail;

#[derive(Parser, Debug)]
#[command(name = "wspace", version, about = "Weight-space learning pipelines with a content-addressed cache")]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline (every sweep variant); only what changed is computed
    Run {
        #[command(flatten)]
        p: PipelineArgs,
        /// Run only these stages and their ancestors
        stages: Vec<String>,
        /// Show what would run and why; run nothing
        #[arg(long)]
        dry_run: bool,
        /// Thread budget: stages run concurrently and share a pool of this many threads
        #[arg(short = 'j', long, default_value_t = default_jobs())]
        jobs: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Where the sweep table goes (default: sweeps/<pipeline name>.csv)
        #[arg(long)]
        sweep_table: Option<PathBuf>,
        /// Where stages run (default: the pipeline's `[executor] kind`, else local)
        #[arg(long, value_enum)]
        executor: Option<ExecutorKind>,
        /// No progress on stderr (bars, progress lines, stage start and end lines); the summary stays
        #[arg(short, long)]
        quiet: bool,
    },
    /// What would run and why, executing nothing
    Status {
        #[command(flatten)]
        p: PipelineArgs,
        /// Only these stages and their ancestors
        stages: Vec<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// A stage's key ingredients, and what changed since its last recorded run
    Explain {
        #[command(flatten)]
        p: PipelineArgs,
        stage: String,
    },
    /// The stage graph (text, or Graphviz with --dot)
    Dag {
        file: PathBuf,
        #[arg(long)]
        dot: bool,
    },
    /// The cached result of a stage: output paths and metrics
    Show {
        #[command(flatten)]
        p: PipelineArgs,
        stage: String,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Cached entries, their sizes and last use
    Ls {
        #[command(flatten)]
        cache: CacheArg,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Remove entries no recent run of any pipeline needs (or, given pipeline files, all but what they
    /// resolve to now), and what killed runs left behind
    Gc {
        /// Keep exactly what these pipeline files resolve to now (every sweep variant), nothing else
        pipelines: Vec<PathBuf>,
        #[command(flatten)]
        cache: CacheArg,
        /// Keep every entry used by the last N runs of each pipeline file
        #[arg(long, default_value_t = 1, conflicts_with = "pipelines")]
        keep_last: usize,
        /// Say what would be removed; remove nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Hash every entry against its manifest; report corrupt, partial and orphaned ones (exit 1 if any;
    /// with --repair, exit 1 only if some could not be removed)
    Fsck {
        #[command(flatten)]
        cache: CacheArg,
        /// Remove what was found
        #[arg(long)]
        repair: bool,
    },
    /// Recompute a cached stage and compare: bytes, then numbers (exit 0 the same bytes, 3 numerically
    /// equal within --rtol/--atol, 1 different)
    Verify {
        #[command(flatten)]
        p: PipelineArgs,
        stage: String,
        #[arg(short = 'j', long, default_value_t = default_jobs())]
        jobs: usize,
        /// Where bytes differ: numbers a, b count as equal when |a − b| ≤ atol + rtol·max(|a|, |b|)
        /// (the defaults: README, "Reproducibility across machines")
        #[arg(long, default_value_t = 1e-4)]
        rtol: f64,
        /// See --rtol
        #[arg(long, default_value_t = 3e-5)]
        atol: f64,
    },
    /// Benchmarks that stage kinds provide (e.g. `wspace bench zoo --help`)
    Bench {
        /// Which benchmark, then its own arguments. One list, so that everything after the name,
        /// `--help` included, goes to the benchmark
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true, value_name = "NAME [ARGS]")]
        args: Vec<String>,
    },
    /// The stage kinds, their parameters and inputs
    Kinds {
        /// Only this kind
        kind: Option<String>,
    },
    /// Run one stage from a spec the runner wrote (what a Slurm job executes)
    ExecStage {
        /// The spec (`cache/jobs/<key>/spec.json`)
        spec: PathBuf,
        /// Which shard to run (Slurm passes `$SLURM_ARRAY_TASK_ID`)
        #[arg(long)]
        shard: Option<usize>,
    },
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn main(registry: Registry) -> ExitCode {
    // `--version` also names the float class: which machines give the same bytes (README, "Reproducibility").
    let long = format!("{}\nfloat class: {}", env!("CARGO_PKG_VERSION"), crate::machine::float_class());
    let matches = Cli::command().long_version(&*Box::leak(long.into_boxed_str())).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_tracing(cli.verbose);
    match dispatch(cli.command, &registry) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(msg, code)) => {
            eprintln!("{msg}");
            ExitCode::from(code)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn dispatch(command: Command, registry: &Registry) -> Result<u8, Fail> {
    match command {
        Command::Run { p, stages, dry_run, jobs, format, sweep_table, executor, quiet } => {
            let opts = run::RunOptions { dry_run, jobs: jobs.max(1), format, sweep_table, executor, quiet };
            run::run(&p, registry, &stages, opts)
        }
        Command::Status { p, stages, format } => {
            let opts = run::RunOptions { dry_run: true, jobs: 1, format, sweep_table: None, executor: None, quiet: true };
            run::run(&p, registry, &stages, opts)
        }
        Command::ExecStage { spec, shard } => match crate::spec::exec_stage(&spec, shard, registry) {
            Ok(()) => Ok(0),
            Err(e) => Err(Fail::error(&e, 1)),
        },
        Command::Explain { p, stage } => explain::explain(&p, registry, &stage),
        Command::Dag { file, dot } => {
            let p = pipeline::load(&file, registry)?;
            println!("{}", if dot { dag::dot(&p) } else { dag::text(&p) });
            Ok(0)
        }
        Command::Show { p, stage, format } => show::show(&p, registry, &stage, format),
        Command::Ls { cache, format } => ls::ls(&Cache::new(cache.cache), format),
        Command::Gc { pipelines, cache, keep_last, dry_run } => {
            let cache = Cache::new(cache.cache);
            let keep = if pipelines.is_empty() {
                crate::gc::Keep::History(keep_last)
            } else {
                crate::gc::Keep::Exactly(gc::resolved_keys(&pipelines, registry, &cache)?)
            };
            gc::gc(&cache, &keep, dry_run)
        }
        Command::Fsck { cache, repair } => gc::fsck(&Cache::new(cache.cache), repair),
        Command::Verify { p, stage, jobs, rtol, atol } => {
            verify::verify(&p, registry, &stage, jobs.max(1), crate::compare::Tolerance { rtol, atol })
        }
        Command::Kinds { kind } => kinds::kinds(registry, kind.as_deref()),
        Command::Bench { args } => {
            let (name, args) = args.split_first().expect("clap requires the name");
            let f = registry.bench(name).ok_or_else(|| {
                Fail(format!("error: no benchmark `{name}`; known: {}", registry.bench_names().collect::<Vec<_>>().join(", ")), 2)
            })?;
            let out = f(args).map_err(|e| Fail(e, 2))?;
            println!("{out}");
            Ok(0)
        }
    }
}
