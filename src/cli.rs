//! The command line: `wspace run | status | explain | dag | show | ls | gc | fsck | verify | bench | kinds`, and
//! `exec-stage` (what a Slurm job runs).
//!
//! Exit codes: 0 success; 1 a stage failed (or `verify` found a difference); 2 the command line or the
//! pipeline file is wrong (nothing ran, nothing in the cache was touched); 130 a run on Slurm was
//! interrupted (its jobs cancelled).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::cache::{Cache, Entry, HistoryLine};
use crate::diag::Diagnostics;
use crate::exec::{Runner, StageReport, Status};
use crate::pipeline::{self, check::parse_set, ExecutorKind, Override, Pipeline};
use crate::progress::Ui;
use crate::registry::Registry;
use crate::report;

#[derive(Parser, Debug)]
#[command(name = "wspace", version, about = "Weight-space learning pipelines with a content-addressed cache")]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CacheArg {
    /// Cache directory
    #[arg(long, env = "WSPACE_CACHE", default_value = "cache")]
    pub cache: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline file (TOML)
    pub file: PathBuf,
    /// Override a parameter: `stage.param=value` (TOML syntax; bare text is a string). Repeatable
    #[arg(long = "set", value_name = "STAGE.PARAM=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub cache: CacheArg,
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
    /// Recompute a cached stage and compare output hashes (proves reproducibility)
    Verify {
        #[command(flatten)]
        p: PipelineArgs,
        stage: String,
        #[arg(short = 'j', long, default_value_t = default_jobs())]
        jobs: usize,
    },
    /// Benchmarks that stage kinds provide (e.g. `wspace bench zoo --help`)
    Bench {
        /// Which benchmark
        name: String,
        /// Its own arguments
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
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

/// A failure that ends the command: a message and an exit code.
pub struct Fail(pub String, pub u8);

impl From<Diagnostics> for Fail {
    fn from(d: Diagnostics) -> Self {
        Fail(d.to_string(), 2)
    }
}

fn load(p: &PipelineArgs, registry: &Registry) -> Result<(Pipeline, Vec<Override>), Fail> {
    let pipeline = pipeline::load(&p.file, registry)?;
    let mut overrides = Vec::new();
    for arg in &p.set {
        overrides.push(parse_set(arg).map_err(|e| Fail(format!("error: {e}"), 2))?);
    }
    // Check the overrides now (with every sweep variant), so a bad `--set` fails before anything runs.
    if !overrides.is_empty() {
        pipeline.validate(&overrides)?;
    }
    Ok((pipeline, overrides))
}

fn stage_index(p: &Pipeline, name: &str) -> Result<usize, Fail> {
    p.select(&[name.to_string()]).map_err(|d| Fail(d.to_string(), 2))?;
    Ok(p.index(name).unwrap_or(0))
}

pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
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
            run(&p, registry, &stages, RunOptions { dry_run, jobs: jobs.max(1), format, sweep_table, executor, quiet })
        }
        Command::Status { p, stages, format } => {
            let opts = RunOptions { dry_run: true, jobs: 1, format, sweep_table: None, executor: None, quiet: true };
            run(&p, registry, &stages, opts)
        }
        Command::ExecStage { spec, shard } => match crate::spec::exec_stage(&spec, shard, registry) {
            Ok(()) => Ok(0),
            Err(e) => Err(Fail(format!("error: {e}"), 1)),
        },
        Command::Explain { p, stage } => explain(&p, registry, &stage),
        Command::Dag { file, dot } => {
            let p = pipeline::load(&file, registry)?;
            println!("{}", if dot { dag_dot(&p) } else { dag_text(&p) });
            Ok(0)
        }
        Command::Show { p, stage, format } => show(&p, registry, &stage, format),
        Command::Ls { cache, format } => ls(&Cache::new(cache.cache), format),
        Command::Gc { pipelines, cache, keep_last, dry_run } => {
            let cache = Cache::new(cache.cache);
            let keep = if pipelines.is_empty() {
                crate::gc::Keep::History(keep_last)
            } else {
                crate::gc::Keep::Exactly(resolved_keys(&pipelines, registry, &cache)?)
            };
            gc(&cache, &keep, dry_run)
        }
        Command::Fsck { cache, repair } => fsck(&Cache::new(cache.cache), repair),
        Command::Verify { p, stage, jobs } => verify(&p, registry, &stage, jobs.max(1)),
        Command::Kinds { kind } => kinds(registry, kind.as_deref()),
        Command::Bench { name, args } => {
            let f = registry.bench(&name).ok_or_else(|| {
                Fail(format!("error: no benchmark `{name}`; known: {}", registry.bench_names().collect::<Vec<_>>().join(", ")), 2)
            })?;
            let out = f(&args).map_err(|e| Fail(e, 2))?;
            println!("{out}");
            Ok(0)
        }
    }
}

struct RunOptions {
    dry_run: bool,
    jobs: usize,
    format: Format,
    sweep_table: Option<PathBuf>,
    executor: Option<ExecutorKind>,
    quiet: bool,
}

fn run(p: &PipelineArgs, registry: &Registry, targets: &[String], opts: RunOptions) -> Result<u8, Fail> {
    let RunOptions { dry_run, jobs, format, sweep_table, executor, quiet } = opts;
    let (mut pipeline, overrides) = load(p, registry)?;
    if let Some(kind) = executor {
        pipeline.executor.kind = kind;
    }
    if pipeline.executor.kind != ExecutorKind::Local && !dry_run {
        crate::interrupt::catch();
    }
    let mask = pipeline.select(targets).map_err(|d| Fail(d.to_string(), 2))?;
    let cache = Cache::new(&p.cache.cache);
    let ui = Ui::new(dry_run || quiet);
    let variants = pipeline.variants();
    let mut results: Vec<(Vec<Override>, Vec<StageReport>)> = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (n, variant) in variants.iter().enumerate() {
        // `--set` applies on top of every sweep variant.
        let all: Vec<Override> = variant.iter().chain(&overrides).cloned().collect();
        let vp = pipeline.with_overrides(&all).map_err(|d| Fail(d.to_string(), 2))?;
        if variants.len() > 1 {
            let desc = variant.iter().map(|o| format!("{} = {}", o.address(), o.value)).collect::<Vec<_>>().join(", ");
            ui.line(&format!("── variant {}/{}: {desc}", n + 1, variants.len()));
        }
        let runner = Runner { pipeline: &vp, cache: &cache, ui: &ui, jobs };
        let reports = if dry_run { runner.plan(&mask) } else { runner.run(&mask) };
        if !dry_run {
            used.extend(reports.iter().filter_map(|r| r.key.clone()));
            if mask.contains(&false) {
                // The stages left out are still the pipeline's: what they resolve to stays wanted.
                let all = runner.plan(&vec![true; vp.stages.len()]);
                used.extend(all.into_iter().filter(|r| r.status == Status::Cached).filter_map(|r| r.key));
            }
        }
        if format == Format::Text {
            if variants.len() > 1 {
                println!(
                    "variant {}/{}: {}",
                    n + 1,
                    variants.len(),
                    serde_json::Value::Object(pipeline::check::overrides_json(variant))
                );
            }
            println!("{}", report::summary(&reports));
            print!("{}", report::documents(&reports));
        }
        results.push((variant.clone(), reports));
    }
    if !dry_run {
        let file = std::fs::canonicalize(&p.file).unwrap_or_else(|_| p.file.clone());
        let line = HistoryLine {
            time: crate::cache::now(),
            pipeline: pipeline.name.clone(),
            file: Some(file.display().to_string()),
            keys: used.into_iter().collect(),
        };
        if let Err(e) = cache.append_history(&line) {
            ui.line(&format!("warning: cannot append to the run history: {e}"));
        }
    }
    let mut table_path = None;
    if variants.len() > 1 && !dry_run {
        let (headers, rows) = report::sweep_rows(&results);
        let path = sweep_table.unwrap_or_else(|| Path::new("sweeps").join(format!("{}.csv", pipeline.name)));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Fail(format!("error: {}: {e}", dir.display()), 1))?;
        }
        std::fs::write(&path, report::csv(&headers, &rows)).map_err(|e| Fail(format!("error: {}: {e}", path.display()), 1))?;
        let params: std::collections::BTreeSet<String> =
            results.iter().flat_map(|(o, _)| o.iter().map(Override::address)).collect();
        let page_path = path.with_extension("html");
        let page = crate::sweep_page::page(&pipeline.name, &path, params.len(), &headers, &rows);
        std::fs::write(&page_path, page).map_err(|e| Fail(format!("error: {}: {e}", page_path.display()), 1))?;
        if format == Format::Text {
            let h: Vec<&str> = headers.iter().map(String::as_str).collect();
            println!("\nsweep table ({}):\n{}", path.display(), report::table(&h, &rows));
            println!("sweep plots: {}", page_path.display());
        }
        table_path = Some((path, page_path));
    }
    if format == Format::Json {
        let variants: Vec<_> =
            results.iter().map(|(o, r)| json!({"overrides": pipeline::check::overrides_json(o), "stages": r})).collect();
        let mut obj = json!({"pipeline": pipeline.name, "variants": variants});
        if let Some((table, page)) = table_path {
            obj["sweep_table"] = json!(table);
            obj["sweep_page"] = json!(page);
        }
        println!("{obj}");
    }
    let failed = results.iter().flat_map(|(_, r)| r).any(|r| matches!(r.status, Status::Failed | Status::Skipped));
    Ok(if crate::interrupt::requested() {
        130
    } else if failed {
        1
    } else {
        0
    })
}

fn explain(p: &PipelineArgs, registry: &Registry, stage: &str) -> Result<u8, Fail> {
    let (pipeline, overrides) = load(p, registry)?;
    let pipeline = pipeline.with_overrides(&overrides).map_err(|d| Fail(d.to_string(), 2))?;
    let i = stage_index(&pipeline, stage)?;
    let cache = Cache::new(&p.cache.cache);
    let ui = Ui::new(true);
    let runner = Runner { pipeline: &pipeline, cache: &cache, ui: &ui, jobs: 1 };
    let st = &pipeline.stages[i];
    println!("stage `{}` (kind `{}`, code version {})", st.name, st.kind.name(), st.kind.version());
    println!("parameters:");
    for (k, v) in &st.params {
        println!("  {k} = {v}");
    }
    let plan = runner.plan(&pipeline.select(&[stage.to_string()]).map_err(|d| Fail(d.to_string(), 2))?);
    let upstream: std::collections::BTreeMap<&str, &StageReport> = plan.iter().map(|r| (r.name.as_str(), r)).collect();
    if !st.inputs.is_empty() {
        println!("inputs:");
        for (slot, name) in pipeline.upstream_names(i) {
            let state = match upstream.get(name.as_str()) {
                Some(r) if r.status == Status::Cached => "cached".to_string(),
                Some(r) => format!("{} first", r.status.as_str()),
                None => "?".into(),
            };
            println!("  {slot} ← stage `{name}` ({state})");
        }
    }
    let last = cache.last_run(&pipeline.name, stage);
    let since_last = |now: &crate::key::Ingredients| match &last {
        None => "no earlier run recorded".to_string(),
        Some(rec) => {
            let changes = crate::reason::diff(&rec.ingredients, now);
            if changes.is_empty() {
                "nothing".into()
            } else {
                changes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; ")
            }
        }
    };
    match runner.cached_entry(i) {
        Ok((entry, ingredients)) => {
            for (name, f) in &ingredients.files {
                println!("file {name}: {} ({})", f.path, f.hash);
            }
            println!("key: {}", entry.manifest.key);
            println!("status: cached ({})", entry.out().display());
            println!("changed since the last recorded run: {}", since_last(&ingredients));
        }
        Err(_) => {
            let Some(r) = plan.iter().find(|r| r.name == stage) else { return Ok(0) };
            match &r.key {
                Some(k) => println!("key: {k}"),
                None => println!("key: not known until the inputs are computed"),
            }
            println!("status: {}", r.status.as_str());
            if r.status == Status::Pending {
                println!("why: {}", r.reason);
                // Compare what is known now: the parameters and files (inputs as last recorded).
                if let Some(rec) = &last {
                    let known = crate::key::Ingredients::of(st, rec.ingredients.inputs.clone(), &pipeline.workdir)
                        .map_err(|e| Fail(format!("error: {e}"), 1))?;
                    println!("changed since the last recorded run (besides inputs): {}", since_last(&known));
                }
            } else {
                println!("changed since the last recorded run: {}", r.reason);
            }
        }
    }
    if let Some(rec) = &last {
        println!("last recorded run: key {} at unix time {}", rec.key.short(), rec.time);
    }
    Ok(0)
}

fn dag_text(p: &Pipeline) -> String {
    let mut out = format!("pipeline `{}`: {} stages", p.name, p.stages.len());
    for (i, st) in p.stages.iter().enumerate() {
        out.push_str(&format!("\n{} ({})", st.name, st.kind.name()));
        for (slot, up) in p.upstream_names(i) {
            out.push_str(&format!("\n  {slot} ← {up}"));
        }
    }
    out
}

fn dag_dot(p: &Pipeline) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", p.name);
    for st in &p.stages {
        out.push_str(&format!("  \"{}\" [label=\"{}\\n({})\"];\n", st.name, st.name, st.kind.name()));
    }
    for (i, st) in p.stages.iter().enumerate() {
        for (slot, up) in p.upstream_names(i) {
            out.push_str(&format!("  \"{up}\" -> \"{}\" [label=\"{slot}\"];\n", st.name));
        }
    }
    out.push('}');
    out
}

fn show(p: &PipelineArgs, registry: &Registry, stage: &str, format: Format) -> Result<u8, Fail> {
    let (pipeline, overrides) = load(p, registry)?;
    let pipeline = pipeline.with_overrides(&overrides).map_err(|d| Fail(d.to_string(), 2))?;
    let i = stage_index(&pipeline, stage)?;
    let cache = Cache::new(&p.cache.cache);
    let ui = Ui::new(true);
    let runner = Runner { pipeline: &pipeline, cache: &cache, ui: &ui, jobs: 1 };
    let (entry, _) = runner.cached_entry(i).map_err(|e| Fail(format!("error: {e}"), 1))?;
    cache.verify(&entry).map_err(|bad| {
        Fail(format!("error: the cached result of stage `{stage}` is corrupt ({bad}); the next `wspace run` recomputes it"), 1)
    })?;
    let out = std::fs::canonicalize(entry.out()).unwrap_or(entry.out());
    let metrics: serde_json::Value =
        std::fs::read(out.join("metrics.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(json!({}));
    let m = &entry.manifest;
    if format == Format::Json {
        let files: Vec<_> =
            m.files.iter().map(|f| json!({"path": out.join(&f.path), "size": f.size, "blake3": f.blake3})).collect();
        println!(
            "{}",
            json!({"stage": stage, "kind": m.ingredients.kind, "key": m.key, "output_hash": m.output_hash, "output": out, "seconds": m.seconds, "files": files, "metrics": metrics})
        );
    } else {
        for name in ["report.html", "index.html"] {
            if m.files.iter().any(|f| f.path == name) {
                println!("{}", out.join(name).display());
            }
        }
        println!("stage `{stage}` (kind `{}`), key {}", m.ingredients.kind, m.key);
        println!("output: {}", out.display());
        for f in &m.files {
            println!("  {}  ({} bytes)", out.join(&f.path).display(), f.size);
        }
        if metrics.as_object().is_some_and(|o| !o.is_empty()) {
            println!("metrics: {}", serde_json::to_string_pretty(&metrics).unwrap_or_default());
        }
    }
    Ok(0)
}

fn human_size(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", n as f64 / 1_073_741_824.0),
    }
}

fn last_use(cache: &Cache) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    for line in cache.history() {
        for k in line.keys {
            out.insert(k.0, line.time);
        }
    }
    out
}

fn ls(cache: &Cache, format: Format) -> Result<u8, Fail> {
    let used = last_use(cache);
    let crate::cache::Scan { entries, unreadable } = cache.scan();
    if format == Format::Json {
        let mut rows: Vec<_> = entries
            .iter()
            .map(|e| {
                let m = &e.manifest;
                json!({"key": m.key, "stage": m.stage, "pipeline": m.pipeline, "kind": m.ingredients.kind, "size": m.size(), "created": m.created, "last_used": used.get(&m.key.0).copied().unwrap_or(m.created)})
            })
            .collect();
        rows.extend(unreadable.iter().map(|(dir, why)| json!({"path": dir, "unreadable": why})));
        println!("{}", json!(rows));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e: &Entry| {
            let m = &e.manifest;
            let t = used.get(&m.key.0).copied().unwrap_or(m.created);
            vec![
                m.key.short().to_string(),
                m.ingredients.kind.clone(),
                format!("{}/{}", m.pipeline, m.stage),
                human_size(m.size()),
                ago(t),
            ]
        })
        .collect();
    println!("{}", report::table(&["key", "kind", "pipeline/stage", "size", "last used"], &rows));
    let total: u64 = entries.iter().map(|e| e.manifest.size()).sum();
    println!("{} entries, {} in {}", entries.len(), human_size(total), cache.root().display());
    report_unreadable(&unreadable);
    Ok(0)
}

fn report_unreadable(unreadable: &[(PathBuf, String)]) {
    for (dir, why) in unreadable {
        eprintln!("warning: unreadable entry {}: {why} (`wspace fsck --repair` removes it)", dir.display());
    }
}

fn ago(t: u64) -> String {
    let d = crate::cache::now().saturating_sub(t);
    match d {
        0..120 => format!("{d} s ago"),
        120..7200 => format!("{} min ago", d / 60),
        7200..172_800 => format!("{} h ago", d / 3600),
        _ => format!("{} days ago", d / 86_400),
    }
}

/// The keys the pipeline files resolve to now, over every sweep variant (stages not computed yet
/// have no entry to keep).
fn resolved_keys(
    files: &[PathBuf],
    registry: &Registry,
    cache: &Cache,
) -> Result<std::collections::HashSet<crate::key::StageKey>, Fail> {
    let ui = Ui::new(true);
    let mut keys = std::collections::HashSet::new();
    for file in files {
        let pipeline = pipeline::load(file, registry)?;
        for variant in pipeline.variants() {
            let vp = pipeline.with_overrides(&variant).map_err(|d| Fail(d.to_string(), 2))?;
            let runner = Runner { pipeline: &vp, cache, ui: &ui, jobs: 1 };
            let plan = runner.plan(&vec![true; vp.stages.len()]);
            keys.extend(plan.into_iter().filter(|r| r.status == Status::Cached).filter_map(|r| r.key));
        }
    }
    Ok(keys)
}

fn gc(cache: &Cache, keep: &crate::gc::Keep, dry_run: bool) -> Result<u8, Fail> {
    let plan = crate::gc::plan(cache, keep);
    let describe = |e: &Entry| {
        let m = &e.manifest;
        format!("{} ({}/{}, {}, {})", m.key.short(), m.pipeline, m.stage, m.ingredients.kind, human_size(m.size()))
    };
    let (n, size) = (plan.remove.len(), human_size(plan.size()));
    println!(
        "{} {n} entries ({size}) and {} leftovers of dead runs:",
        if dry_run { "would remove" } else { "removing" },
        plan.leftovers.len()
    );
    for e in &plan.remove {
        println!("  {}", describe(e));
    }
    for path in &plan.leftovers {
        println!("  {}", path.display());
    }
    for e in &plan.unfinished {
        println!("keeping {}: made by a run that did not finish", describe(e));
    }
    report_unreadable(&plan.unreadable);
    if dry_run {
        return Ok(0);
    }
    let mut freed = 0;
    let mut removed = 0;
    for e in &plan.remove {
        let m = &e.manifest;
        if cache.remove(&m.key).map_err(|e| Fail(format!("error: {e}"), 1))? {
            freed += m.size();
            removed += 1;
        } else {
            println!("kept {}: a run is building it", m.key.short());
        }
    }
    for orphan in &plan.leftovers {
        crate::cache::remove_tree(orphan).map_err(|e| Fail(format!("error: {e}"), 1))?;
    }
    println!("removed {removed} entries, freed {}", human_size(freed));
    Ok(0)
}

fn fsck(cache: &Cache, repair: bool) -> Result<u8, Fail> {
    let (entries, findings) = crate::gc::fsck(cache);
    for f in &findings {
        println!("{:<9} {}: {}", f.what, f.path.display(), f.detail);
    }
    if findings.is_empty() {
        println!("fsck: {entries} entries hashed, all match their manifests; nothing partial or orphaned");
        return Ok(0);
    }
    if !repair {
        println!("fsck: {} problem(s); `wspace fsck --repair` removes them (the next run recomputes)", findings.len());
        return Ok(1);
    }
    let mut left = 0;
    for f in &findings {
        let gone = match &f.key {
            Some(key) => cache.remove(key).map_err(|e| Fail(format!("error: {e}"), 1))?,
            None => crate::cache::remove_tree(&f.path).map(|_| true).map_err(|e| Fail(format!("error: {e}"), 1))?,
        };
        if !gone {
            println!("kept {}: a run is building it", f.path.display());
            left += 1;
        }
    }
    println!("fsck: removed {} of {} problem(s)", findings.len() - left, findings.len());
    Ok(if left == 0 { 0 } else { 1 })
}

fn verify(p: &PipelineArgs, registry: &Registry, stage: &str, jobs: usize) -> Result<u8, Fail> {
    let (pipeline, overrides) = load(p, registry)?;
    let pipeline = pipeline.with_overrides(&overrides).map_err(|d| Fail(d.to_string(), 2))?;
    let i = stage_index(&pipeline, stage)?;
    let cache = Cache::new(&p.cache.cache);
    let ui = Ui::new(!std::io::stderr().is_terminal());
    let runner = Runner { pipeline: &pipeline, cache: &cache, ui: &ui, jobs };
    let (entry, files) = runner.recompute(i).map_err(|e| Fail(format!("error: {e}"), 1))?;
    let recomputed = crate::digest::tree_hash(&files);
    let m = &entry.manifest;
    println!("cached     {}", m.output_hash);
    println!("recomputed {recomputed}");
    if recomputed == m.output_hash {
        println!("reproducible: stage `{stage}` recomputed to the same {} files", files.len());
        return Ok(0);
    }
    let old: std::collections::BTreeMap<&str, &str> = m.files.iter().map(|f| (f.path.as_str(), f.blake3.as_str())).collect();
    let new: std::collections::BTreeMap<&str, &str> = files.iter().map(|f| (f.path.as_str(), f.blake3.as_str())).collect();
    for path in old.keys().chain(new.keys()).collect::<std::collections::BTreeSet<_>>() {
        match (old.get(path), new.get(path)) {
            (Some(a), Some(b)) if a != b => println!("  differs: {path}"),
            (Some(_), None) => println!("  missing in the recomputation: {path}"),
            (None, Some(_)) => println!("  new in the recomputation: {path}"),
            _ => {}
        }
    }
    println!("NOT reproducible: stage `{stage}` gave different output");
    Ok(1)
}

fn kinds(registry: &Registry, only: Option<&str>) -> Result<u8, Fail> {
    if let Some(k) = only {
        if registry.get(k).is_none() {
            return Err(Fail(
                format!("error: no kind `{k}`; known kinds: {}", registry.names().collect::<Vec<_>>().join(", ")),
                2,
            ));
        }
    }
    for kind in registry.kinds().filter(|k| only.is_none_or(|o| o == k.name())) {
        println!("{} (version {}): {}", kind.name(), kind.version(), kind.summary());
        match kind.inputs() {
            wspace_stage_api::Inputs::Any => println!("  inputs: any slot names"),
            wspace_stage_api::Inputs::Slots(slots) => {
                for (s, required, doc) in slots {
                    println!("  input {s}{}: {doc}", if required { "" } else { " (optional)" });
                }
            }
        }
        for p in kind.params() {
            let default = p.default.map(|d| format!(" = {d}")).unwrap_or_else(|| " (required)".into());
            println!("  {}: {}{default} — {}", p.name, p.ty.describe(), p.doc);
        }
        println!();
    }
    Ok(0)
}
