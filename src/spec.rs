//! A stage run, serialised: what `wspace exec-stage SPEC` executes in another process (a Slurm job).
//!
//! The runner decides that a stage must run, takes its build lock and creates its build directory, then
//! writes a [`StageSpec`]: the kind and its code version, the resolved parameters, each input's output
//! directory and output hash, and the build's `out` and `scratch` directories (absolute paths into the
//! cache, which every node must see). `exec-stage` runs the kind there and exits; the runner, which
//! still holds the lock, publishes the result. `exec-stage` never touches the cache otherwise.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wspace_stage_api::{Progress, StageContext, StageKind, Value};

use crate::cache::Manifest;
use crate::digest::path_err;
use crate::error::Error;
use crate::key::StageKey;
use crate::registry::Registry;

/// One input slot of a serialised stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpecInput {
    /// The upstream entry's `out/` directory.
    pub dir: PathBuf,
    /// Its output hash (checked against the entry's manifest before the stage runs).
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSpec {
    pub pipeline: String,
    pub stage: String,
    pub kind: String,
    pub version: u32,
    pub key: StageKey,
    pub params: BTreeMap<String, Value>,
    pub inputs: BTreeMap<String, SpecInput>,
    pub out: PathBuf,
    pub scratch: PathBuf,
    pub workdir: PathBuf,
    pub threads: usize,
    /// 1: one process runs the whole stage; N > 1: N processes each run one shard.
    pub shards: usize,
}

/// Runs a kind in `pool` (when given): its own error ([`Error::Stage`], or [`Error::Stopped`] when the
/// run was interrupted), or [`Error::Panicked`].
pub fn run_kind(
    kind: &dyn StageKind,
    ctx: &StageContext,
    pool: Option<&rayon::ThreadPool>,
    shard: Option<(usize, usize)>,
) -> Result<(), Error> {
    let call = || {
        std::panic::catch_unwind(AssertUnwindSafe(|| match shard {
            Some((index, count)) => kind.run_shard(ctx, index, count),
            None => kind.run(ctx),
        }))
    };
    let result = match pool {
        Some(p) => p.install(call),
        None => call(),
    };
    match result {
        Ok(result) => result.map_err(Error::from),
        Err(panic) => {
            let msg = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(Error::Panicked(msg.unwrap_or_default()))
        }
    }
}

/// `wspace exec-stage SPEC [--shard I]`: runs the stage (or shard `I` of it) that `spec` describes.
pub fn exec_stage(spec: &Path, shard: Option<usize>, registry: &Registry) -> Result<(), Error> {
    let text = std::fs::read_to_string(spec).map_err(|source| Error::ReadSpec { path: spec.to_path_buf(), source })?;
    let spec: StageSpec = serde_json::from_str(&text).map_err(|source| Error::ParseSpec { path: spec.to_path_buf(), source })?;
    let kind = registry.get(&spec.kind).ok_or_else(|| Error::UnknownKind(spec.kind.clone()))?;
    if kind.version() != spec.version {
        return Err(Error::CodeVersion { kind: spec.kind.clone(), ours: kind.version(), theirs: spec.version });
    }
    let shard = match shard {
        None | Some(0) if spec.shards == 1 => None,
        Some(i) if i < spec.shards => Some((i, spec.shards)),
        Some(i) => return Err(Error::NoSuchShard { stage: spec.stage.clone(), shards: spec.shards, shard: i }),
        None => return Err(Error::ShardNeeded { stage: spec.stage.clone(), shards: spec.shards }),
    };
    for dir in [&spec.out, &spec.scratch] {
        std::fs::create_dir_all(dir).map_err(path_err(dir))?;
    }
    let mut inputs = BTreeMap::new();
    for (slot, input) in &spec.inputs {
        check_input(slot, input)?;
        inputs.insert(slot.clone(), input.dir.clone());
    }
    let progress = LogProgress::new(&spec.stage);
    let ctx = StageContext {
        stage: &spec.stage,
        params: &spec.params,
        inputs: &inputs,
        out: &spec.out,
        scratch: &spec.scratch,
        workdir: &spec.workdir,
        threads: spec.threads,
        progress: &progress,
    };
    let what = match shard {
        Some((i, n)) => format!("shard {i} of {n} of stage `{}`", spec.stage),
        None => format!("stage `{}`", spec.stage),
    };
    eprintln!("wspace exec-stage: {what} (kind `{}`, key {}), {} thread(s)", spec.kind, spec.key.short(), spec.threads);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(spec.threads.max(1)).build().map_err(Error::Pool)?;
    // `scancel` sends SIGTERM: the stage stops at its next check, and the task is not marked done.
    crate::interrupt::catch();
    let started = Instant::now();
    run_kind(kind.as_ref(), &ctx, Some(&pool), shard).map_err(|e| Error::Failed { what: what.clone(), source: Box::new(e) })?;
    eprintln!("wspace exec-stage: {what} done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// An input must be the entry the runner meant: a cache the job's node sees under the same path, with
/// the same manifest. (The runner verified the files' hashes before it submitted the job.)
fn check_input(slot: &str, input: &SpecInput) -> Result<(), Error> {
    let manifest = input.dir.with_file_name("entry.json");
    let unreadable = |source: Box<dyn std::error::Error + Send + Sync>| Error::UnreadableInput {
        slot: slot.to_string(),
        manifest: manifest.clone(),
        source,
    };
    let text = std::fs::read_to_string(&manifest).map_err(|e| unreadable(e.into()))?;
    let found = serde_json::from_str::<Manifest>(&text).map_err(|e| unreadable(e.into()))?.output_hash;
    if found != input.hash {
        return Err(Error::OtherInput { slot: slot.to_string(), manifest, held: found, wanted: input.hash.clone() });
    }
    Ok(())
}

/// Progress as log lines (a job's output is a file): one line per tenth of the work, and messages.
struct LogProgress {
    stage: String,
    total: AtomicU64,
    done: AtomicU64,
    unit: Mutex<String>,
    started: Instant,
}

impl LogProgress {
    fn new(stage: &str) -> Self {
        LogProgress {
            stage: stage.to_string(),
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            unit: Mutex::new(String::new()),
            started: Instant::now(),
        }
    }
}

impl Progress for LogProgress {
    fn start(&self, total: u64, unit: &str) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        *self.unit.lock().unwrap() = unit.to_string();
    }
    fn inc(&self, n: u64) {
        let total = self.total.load(Ordering::Relaxed);
        let before = self.done.fetch_add(n, Ordering::Relaxed);
        let now = before + n;
        if total == 0 || now * 10 / total != before * 10 / total || now == total {
            let unit = self.unit.lock().unwrap().clone();
            eprintln!("{}: {now}/{total} {unit} ({:.0} s)", self.stage, self.started.elapsed().as_secs_f64());
        }
    }
    fn message(&self, msg: &str) {
        eprintln!("{}: {msg}", self.stage);
    }
}
