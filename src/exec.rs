//! Executing a checked pipeline against the cache.
//!
//! # Brief overview
//! [`Runner::run`] walks the stages in topological order. A stage whose inputs are all done gets its
//! [`Ingredients`] and key; a cache hit is checked cheaply ([`Cache::verify_fast`]: sizes and mtimes,
//! re-hashed only when they changed) and then done; a corrupt or unreadable hit is recomputed. A miss goes to a
//! worker thread (at most `-j` at a time) that takes the key's build lock, looks again, verifies the
//! entries it will read (recomputing a corrupt one), runs the stage kind inside the run's rayon pool
//! (of `-j` threads) — or, with the Slurm executor, as a Slurm job ([`crate::slurm`]) while it holds
//! the lock — and publishes the result. A failed stage fails nothing but its descendants,
//! which are reported as skipped; the rest of the run goes on. [`Runner::plan`] answers the same
//! questions without running anything (`--dry-run`, `status`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use wspace_stage_api::StageContext;

use crate::cache::{now, Build, Cache, Corruption, Entry, ResumeNote, RunRecord};
use crate::digest::{path_err, PathError};
use crate::error::{chain, Error};
use crate::key::{Ingredients, SlotInput, StageKey};
use crate::pipeline::{ExecutorKind, Pipeline, Stage};
use crate::progress::Ui;
use crate::reason::rerun_reason;
use crate::slurm;
use crate::spec::{run_kind, SpecInput, StageSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ran,
    Cached,
    Failed,
    Skipped,
    /// It was running when the run was interrupted (Ctrl-C, SIGTERM), and stopped.
    Interrupted,
    /// `--dry-run`: would run.
    WouldRun,
    /// `--dry-run`: an upstream stage would run first; runs unless its output comes out unchanged.
    Pending,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ran => "ran",
            Status::Cached => "cached",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Interrupted => "interrupted",
            Status::WouldRun => "would-run",
            Status::Pending => "pending",
        }
    }
}

/// One line of a run's summary (and of `--format json`).
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub name: String,
    pub kind: String,
    pub status: Status,
    pub key: Option<StageKey>,
    pub seconds: f64,
    pub reason: String,
    /// The result's `out/` directory, when there is one.
    #[serde(skip)]
    pub output: Option<PathBuf>,
    /// The stage's document (its `metrics.json` `"document"`, a path inside its output), absolute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document: Option<PathBuf>,
    /// The stage's headline numbers (its `metrics.json` `"headline"` object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headline: Option<serde_json::Map<String, serde_json::Value>>,
}

impl StageReport {
    /// Fills `document` and `headline` from the output's `metrics.json` (see [`crate::metrics::document`]).
    fn with_document(mut self) -> StageReport {
        if let Some(out) = &self.output {
            if let Some((document, headline)) = crate::metrics::document(out) {
                self.document = Some(document);
                self.headline = headline;
            }
        }
        self
    }
}

enum State {
    Waiting,
    Running,
    Done,
    Failed,
}

/// Where each stage of a [`Runner::run`] is, when each running one started, and how many run.
struct Schedule {
    state: Vec<State>,
    started: Vec<Option<Instant>>,
    running: usize,
}

/// What [`Runner::step`] did with a waiting stage.
enum Step {
    /// Nothing yet: an input is not done, or every worker is busy.
    Wait,
    /// Skipped, failed or cached: done with, without a worker.
    Settled,
    /// A worker is claimed for it: start one, with the corruption found under its key (if any) and why
    /// it runs.
    Start { distrust: Option<Corruption>, reason: String },
}

pub struct Runner<'a> {
    pub pipeline: &'a Pipeline,
    pub cache: &'a Cache,
    pub ui: &'a Ui,
    pub jobs: usize,
    /// Called when an interrupted run gives up waiting for stages that do not stop within
    /// [`STOP_GRACE`] ([`SLURM_STOP_GRACE`] with the Slurm executor), with every stage's report: it is expected to print them and exit the process.
    /// Without it, `run` waits for them.
    pub on_abandon: Option<&'a (dyn Fn(Vec<StageReport>) + Sync)>,
}

/// How long an interrupted run waits for its running stages to stop before it abandons them.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// The same with the Slurm executor: a stage stops by asking the controller to cancel its job
/// (`scancel`), which a busy controller may take seconds to answer.
pub const SLURM_STOP_GRACE: Duration = Duration::from_secs(30);

/// Upstream results, shared by the workers.
struct Shared {
    entries: Mutex<Vec<Option<Entry>>>,
    reports: Mutex<Vec<Option<StageReport>>>,
    /// What removing each running stage's unfinished build takes (see [`crate::cache::Build::leftovers`]).
    builds: Mutex<BTreeMap<usize, Vec<PathBuf>>>,
    /// Held while a build is published or abandoned, so that an interrupted run that abandons its
    /// stages never exits half-way through either.
    settling: Mutex<()>,
}

type Outcome = Result<(Entry, Status, String, f64), Error>;

/// A summary table's reason: the first line of an error's text.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

/// The reason a stage was cut by an interrupt gives.
fn interrupted_reason(what: &str) -> String {
    format!("{what} ({})", crate::interrupt::signal_name().unwrap_or("interrupt"))
}

impl<'a> Runner<'a> {
    fn stage(&self, i: usize) -> &'a Stage {
        &self.pipeline.stages[i]
    }

    fn ingredients(&self, i: usize, entries: &[Option<Entry>]) -> Result<Ingredients, Error> {
        let stage = self.stage(i);
        let mut inputs = BTreeMap::new();
        for (slot, &up) in &stage.inputs {
            let e = entries[up].as_ref().ok_or_else(|| Error::NoInput(slot.clone()))?;
            inputs.insert(slot.clone(), SlotInput { stage: self.stage(up).name.clone(), hash: e.manifest.output_hash.clone() });
        }
        Ingredients::of(stage, inputs, &self.pipeline.workdir).map_err(Error::HashParam)
    }

    fn report(
        &self,
        i: usize,
        status: Status,
        key: Option<StageKey>,
        seconds: f64,
        reason: String,
        output: Option<PathBuf>,
    ) -> StageReport {
        let stage = self.stage(i);
        let name = stage.name.clone();
        StageReport {
            name,
            kind: stage.kind.name().to_string(),
            status,
            key,
            seconds,
            reason,
            output,
            document: None,
            headline: None,
        }
        .with_document()
    }

    /// The report of stage `i` failing with `e`, after a line `✗ NAME{what}: ` and the whole chain of
    /// causes; the report's reason is the chain's first line.
    fn failure(&self, i: usize, what: &str, e: &Error, seconds: f64) -> StageReport {
        let text = chain(e);
        self.ui.line(&format!("✗ {}{what}: {text}", self.stage(i).name));
        self.report(i, Status::Failed, None, seconds, first_line(&text), None)
    }

    /// Records the ingredients of a finished stage for `explain`, unless the record already says so.
    fn record(&self, i: usize, key: &StageKey, ingredients: &Ingredients) {
        let name = &self.stage(i).name;
        let last = self.cache.last_run(&self.pipeline.name, name);
        if last.as_ref().map(|r| &r.key) != Some(key) {
            let rec = RunRecord { key: key.clone(), time: now(), ingredients: ingredients.clone() };
            if let Err(e) = self.cache.record_run(&self.pipeline.name, name, &rec) {
                self.ui.line(&format!("warning: cannot record the run of `{name}`: {e}"));
            }
        }
    }

    /// Runs the stages in `mask` (and nothing else). Returns one report per selected stage, in
    /// topological order.
    pub fn run(&self, mask: &[bool]) -> Vec<StageReport> {
        let n = self.pipeline.stages.len();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(self.jobs).build().ok();
        let shared = Shared {
            entries: Mutex::new(vec![None; n]),
            reports: Mutex::new(vec![None; n]),
            builds: Mutex::new(BTreeMap::new()),
            settling: Mutex::new(()),
        };
        let mut sched = Schedule { state: (0..n).map(|_| State::Waiting).collect(), started: vec![None; n], running: 0 };
        let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
        let mut interrupted_at: Option<Instant> = None;

        std::thread::scope(|scope| loop {
            // Settle everything that needs no worker; start workers for ready misses.
            let mut progressed = true;
            while progressed {
                progressed = false;
                for i in (0..n).filter(|&i| mask[i]) {
                    if !matches!(sched.state[i], State::Waiting) {
                        continue;
                    }
                    match self.step(i, &shared, &mut sched) {
                        Step::Wait => {}
                        Step::Settled => progressed = true,
                        Step::Start { distrust, reason } => {
                            let (tx, shared, pool) = (tx.clone(), &shared, pool.as_ref());
                            scope.spawn(move || {
                                let outcome = self.ensure(i, shared, distrust.as_ref(), reason, pool);
                                let _ = tx.send((i, outcome));
                            });
                        }
                    }
                }
            }
            if sched.running == 0 {
                break;
            }
            let received = rx.recv_timeout(Duration::from_millis(20));
            if crate::interrupt::requested() {
                let since = *interrupted_at.get_or_insert_with(|| {
                    self.ui.line(&interrupted_reason("interrupted: stopping the running stages"));
                    Instant::now()
                });
                if received.is_err() && since.elapsed() > self.stop_grace() {
                    if let Some(abandon) = self.on_abandon {
                        abandon(self.abandon_running(&shared, &sched.state, &sched.started));
                    }
                }
            }
            let Ok((i, outcome)) = received else { continue };
            self.finish(i, outcome, &shared, &mut sched);
        });

        shared.reports.into_inner().unwrap().into_iter().flatten().collect()
    }

    /// [`STOP_GRACE`], or [`SLURM_STOP_GRACE`] with the Slurm executor.
    fn stop_grace(&self) -> Duration {
        match self.pipeline.executor.kind {
            ExecutorKind::Local => STOP_GRACE,
            ExecutorKind::Slurm => SLURM_STOP_GRACE,
        }
    }

    /// Settles waiting stage `i` where that needs no worker: skipped (an input failed, or the run was
    /// interrupted), failed (no key), cached; or claims a worker for it when one is free.
    fn step(&self, i: usize, shared: &Shared, sched: &mut Schedule) -> Step {
        let stage = self.stage(i);
        let state = &mut sched.state;
        if let Some((slot, &up)) = stage.inputs.iter().find(|(_, &up)| matches!(state[up], State::Failed)) {
            let cut = shared.reports.lock().unwrap()[up].as_ref().is_some_and(|r| r.status == Status::Interrupted);
            let what = if cut { "was interrupted" } else { "failed" };
            let why = format!("input `{slot}` {what} (stage `{}`)", self.stage(up).name);
            shared.reports.lock().unwrap()[i] = Some(self.report(i, Status::Skipped, None, 0.0, why, None));
            state[i] = State::Failed;
            return Step::Settled;
        }
        if !stage.inputs.values().all(|&up| matches!(state[up], State::Done)) {
            return Step::Wait;
        }
        if crate::interrupt::requested() {
            let why = interrupted_reason("not started: the run was interrupted");
            shared.reports.lock().unwrap()[i] = Some(self.report(i, Status::Skipped, None, 0.0, why, None));
            state[i] = State::Failed;
            return Step::Settled;
        }
        let ingredients = match self.ingredients(i, &shared.entries.lock().unwrap()) {
            Ok(x) => x,
            Err(e) => {
                shared.reports.lock().unwrap()[i] = Some(self.failure(i, "", &e, 0.0));
                state[i] = State::Failed;
                return Step::Settled;
            }
        };
        let key = ingredients.key();
        let (found, distrust) = self.lookup_checked(i, &key);
        match found {
            Ok(Some(entry)) => {
                self.record(i, &key, &ingredients);
                let out = entry.out();
                shared.reports.lock().unwrap()[i] =
                    Some(self.report(i, Status::Cached, Some(key), 0.0, String::new(), Some(out)));
                shared.entries.lock().unwrap()[i] = Some(entry);
                state[i] = State::Done;
                Step::Settled
            }
            Ok(None) | Err(_) if sched.running < self.jobs => {
                let reason = match (&found, &distrust) {
                    (_, Some(bad)) => format!("cached output was corrupt ({bad}); recomputed"),
                    (Err(e), _) => format!("cached entry was unreadable ({e}); recomputed"),
                    _ => {
                        let last = self.cache.last_run(&self.pipeline.name, &stage.name);
                        rerun_reason(last.as_ref().map(|r| &r.ingredients), &ingredients)
                    }
                };
                self.ui.line(&format!("▸ {} ({}): {reason}", stage.name, stage.kind.name()));
                state[i] = State::Running;
                sched.started[i] = Some(Instant::now());
                sched.running += 1;
                Step::Start { distrust, reason }
            }
            _ => Step::Wait,
        }
    }

    /// The entry under stage `i`'s `key`, served only once checked ([`Cache::verify_fast`]); a bad one
    /// comes back as a miss, with what is wrong with it, to be recomputed like a miss.
    fn lookup_checked(&self, i: usize, key: &StageKey) -> (Result<Option<Entry>, PathError>, Option<Corruption>) {
        let found = self.cache.lookup(key);
        tracing::debug!(stage = %self.stage(i).name, key = %key, hit = matches!(found, Ok(Some(_))), "cache lookup");
        match found {
            Ok(Some(entry)) => match self.cache.verify_fast(&entry) {
                Ok(()) => (Ok(Some(entry)), None),
                Err(bad) => (Ok(None), Some(bad)),
            },
            other => (other, None),
        }
    }

    /// Records what stage `i`'s worker came back with.
    fn finish(&self, i: usize, outcome: Outcome, shared: &Shared, sched: &mut Schedule) {
        sched.running -= 1;
        let stage = self.stage(i);
        let seconds = sched.started[i].map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        match outcome {
            Ok((entry, status, reason, seconds)) => {
                self.ui.line(&format!("✓ {} {} in {seconds:.2}s", stage.name, status.as_str()));
                let key = entry.manifest.key.clone();
                self.record(i, &key, &entry.manifest.ingredients);
                shared.reports.lock().unwrap()[i] = Some(self.report(i, status, Some(key), seconds, reason, Some(entry.out())));
                shared.entries.lock().unwrap()[i] = Some(entry);
                sched.state[i] = State::Done;
            }
            Err(Error::Stopped) => {
                self.ui.line(&format!("■ {} stopped", stage.name));
                let why = interrupted_reason("stopped: the run was interrupted");
                shared.reports.lock().unwrap()[i] = Some(self.report(i, Status::Interrupted, None, seconds, why, None));
                sched.state[i] = State::Failed;
            }
            Err(e) => {
                shared.reports.lock().unwrap()[i] = Some(self.failure(i, " failed", &e, seconds));
                sched.state[i] = State::Failed;
            }
        }
    }

    /// An interrupted run's last act for stages that did not stop in time: waits for any publish in
    /// progress, removes their unfinished builds and returns every stage's report, those marked
    /// interrupted. Their threads are left running; the caller exits the process.
    fn abandon_running(&self, shared: &Shared, state: &[State], started: &[Option<Instant>]) -> Vec<StageReport> {
        let _settled = shared.settling.lock().unwrap_or_else(|e| e.into_inner());
        let builds = shared.builds.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut reports = shared.reports.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (i, st) in state.iter().enumerate() {
            if !matches!(st, State::Running) {
                continue;
            }
            for path in builds.get(&i).into_iter().flatten() {
                let _ = crate::cache::remove_tree(path);
            }
            let why = interrupted_reason(&format!(
                "did not stop within {} s; its partial build was removed",
                self.stop_grace().as_secs()
            ));
            let seconds = started[i].map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
            reports[i] = Some(self.report(i, Status::Interrupted, None, seconds, why, None));
        }
        reports.into_iter().flatten().collect()
    }

    /// Makes stage `i`'s result exist: waits for another run building it, verifies the entries it
    /// reads (recomputing corrupt ones), runs the kind and publishes. `distrust` says the entry under
    /// this key was found corrupt: a present entry is re-verified and discarded if still bad.
    fn ensure(
        &self,
        i: usize,
        shared: &Shared,
        distrust: Option<&Corruption>,
        reason: String,
        pool: Option<&rayon::ThreadPool>,
    ) -> Outcome {
        let stage = self.stage(i);
        let _span = tracing::info_span!("stage", name = %stage.name, kind = stage.kind.name()).entered();
        'again: loop {
            let ingredients = self.ingredients(i, &shared.entries.lock().unwrap())?;
            let key = ingredients.key();
            let lock = self
                .cache
                .lock(&key, || self.ui.line(&format!("… {}: another run is computing it; waiting", stage.name)))
                .map_err(|source| Error::Cache { what: "take the build lock", source })?;
            if crate::interrupt::requested() {
                return Err(Error::Stopped);
            }
            let found = match lock.lookup() {
                Ok(found) => found,
                // An unreadable manifest is a corrupt entry: moved away and recomputed.
                Err(e) if e.source.kind() == std::io::ErrorKind::InvalidData => {
                    lock.discard().map_err(|source| Error::Cache { what: "move a corrupt entry away", source })?;
                    None
                }
                Err(source) => return Err(Error::Cache { what: "read the cached entry", source }),
            };
            if let Some(entry) = found {
                match distrust {
                    None => return Ok((entry, Status::Cached, "computed meanwhile by another run".into(), 0.0)),
                    Some(_) if self.cache.verify(&entry).is_ok() => {
                        return Ok((entry, Status::Cached, "repaired meanwhile by another run".into(), 0.0))
                    }
                    Some(_) => lock.discard().map_err(|source| Error::Cache { what: "move a corrupt entry away", source })?,
                }
            }
            for (slot, &up) in &stage.inputs {
                let entry = shared.entries.lock().unwrap()[up].clone().ok_or_else(|| Error::NoInput(slot.clone()))?;
                if let Err(bad) = self.cache.verify(&entry) {
                    let up_name = &self.stage(up).name;
                    let why = format!("cached output was corrupt ({bad}); recomputed");
                    self.ui.line(&format!("! {up_name}: {why}"));
                    drop(lock);
                    let (fixed, status, _, secs) = self.ensure(up, shared, Some(&bad), why.clone(), pool)?;
                    shared.reports.lock().unwrap()[up] =
                        Some(self.report(up, status, Some(fixed.manifest.key.clone()), secs, why, Some(fixed.out())));
                    shared.entries.lock().unwrap()[up] = Some(fixed);
                    continue 'again;
                }
            }
            let resumes = stage.kind.resumes().then(|| ResumeNote {
                pipeline: self.pipeline.name.clone(),
                stage: stage.name.clone(),
                kind: stage.kind.name().to_string(),
            });
            let build = lock.begin(resumes.as_ref()).map_err(|source| Error::Cache { what: "start the build", source })?;
            shared.builds.lock().unwrap().insert(i, build.leftovers());
            tracing::info!(key = %key, build = %build.out.display(), "running: {reason}");
            let (result, seconds) = self.execute(i, &build, &key, &ingredients, shared, pool);
            let _settling = shared.settling.lock().unwrap_or_else(|e| e.into_inner());
            shared.builds.lock().unwrap().remove(&i);
            return match result {
                Ok(()) => {
                    let entry = lock
                        .publish(build, &ingredients, &stage.name, &self.pipeline.name, seconds)
                        .map_err(|source| Error::Cache { what: "publish", source })?;
                    tracing::info!(seconds, output_hash = %entry.manifest.output_hash, "published {}", entry.dir.display());
                    Ok((entry, Status::Ran, reason, seconds))
                }
                Err(e) => {
                    lock.abandon(build);
                    Err(e)
                }
            };
        }
    }

    /// Runs stage `i`'s kind into `build`, here or as a Slurm job: its result and how long it took.
    fn execute(
        &self,
        i: usize,
        build: &Build,
        key: &StageKey,
        ingredients: &Ingredients,
        shared: &Shared,
        pool: Option<&rayon::ThreadPool>,
    ) -> (Result<(), Error>, f64) {
        let stage = self.stage(i);
        let inputs: BTreeMap<String, PathBuf> = stage
            .inputs
            .iter()
            .map(|(slot, &up)| (slot.clone(), shared.entries.lock().unwrap()[up].as_ref().map(Entry::out).unwrap_or_default()))
            .collect();
        let params = stage.resolved_params(&self.pipeline.workdir);
        let bar = self.ui.stage_bar(&stage.name);
        let settings = self.pipeline.executor.settings(&stage.name);
        let threads = match self.pipeline.executor.kind {
            ExecutorKind::Local => self.jobs,
            ExecutorKind::Slurm => settings.cpus.unwrap_or(1),
        };
        let ctx = StageContext {
            stage: &stage.name,
            params: &params,
            inputs: &inputs,
            out: &build.out,
            scratch: &build.scratch,
            workdir: &self.pipeline.workdir,
            threads,
            progress: &bar,
        };
        let started = Instant::now();
        let result = match self.pipeline.executor.kind {
            ExecutorKind::Local => run_kind(stage.kind.as_ref(), &ctx, pool, None),
            ExecutorKind::Slurm => {
                self.spec(i, &ctx, key, ingredients, settings.shards).and_then(|spec| {
                    slurm::run(&spec, &self.cache.job_dir(key), settings, self.ui, &bar)?;
                    // Shards leave their work in the scratch directory; `run` assembles the output here.
                    match spec.shards {
                        1 => Ok(()),
                        _ => run_kind(stage.kind.as_ref(), &ctx, pool, None),
                    }
                })
            }
        };
        drop(bar);
        (result, started.elapsed().as_secs_f64())
    }

    /// The serialised form of stage `i`'s run in `ctx` (paths made absolute).
    fn spec(
        &self,
        i: usize,
        ctx: &StageContext,
        key: &StageKey,
        ingredients: &Ingredients,
        shards: usize,
    ) -> Result<StageSpec, Error> {
        let stage = self.stage(i);
        let abs = |p: &Path| std::path::absolute(p).map_err(path_err(p));
        let mut inputs = BTreeMap::new();
        for (slot, dir) in ctx.inputs {
            let hash = ingredients.inputs.get(slot).map(|s| s.hash.clone()).unwrap_or_default();
            inputs.insert(slot.clone(), SpecInput { dir: abs(dir)?, hash });
        }
        Ok(StageSpec {
            pipeline: self.pipeline.name.clone(),
            stage: stage.name.clone(),
            kind: stage.kind.name().to_string(),
            version: stage.kind.version(),
            key: key.clone(),
            params: ctx.params.clone(),
            inputs,
            out: abs(ctx.out)?,
            scratch: abs(ctx.scratch)?,
            workdir: abs(ctx.workdir)?,
            threads: ctx.threads,
            shards,
        })
    }

    /// What `run` would do, without running or writing anything.
    pub fn plan(&self, mask: &[bool]) -> Vec<StageReport> {
        let n = self.pipeline.stages.len();
        let mut entries: Vec<Option<Entry>> = vec![None; n];
        let mut status: Vec<Option<Status>> = vec![None; n];
        let mut out = Vec::new();
        for i in 0..n {
            if !mask[i] {
                continue;
            }
            let stage = self.stage(i);
            let last = self.cache.last_run(&self.pipeline.name, &stage.name);
            let waiting_on: Vec<&str> =
                stage.inputs.values().filter(|&&up| entries[up].is_none()).map(|&up| self.stage(up).name.as_str()).collect();
            let report = if !waiting_on.is_empty() {
                status[i] = Some(Status::Pending);
                let why = format!(
                    "after {} (cached unless its output changes)",
                    waiting_on.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                );
                self.report(i, Status::Pending, None, 0.0, why, None)
            } else {
                match self.ingredients(i, &entries) {
                    Err(e) => {
                        status[i] = Some(Status::Failed);
                        self.report(i, Status::Failed, None, 0.0, first_line(&chain(&e)), None)
                    }
                    Ok(ingredients) => {
                        let key = ingredients.key();
                        match self.cache.lookup(&key) {
                            Ok(Some(e)) => match self.cache.verify_fast(&e) {
                                Ok(()) => {
                                    let out = e.out();
                                    entries[i] = Some(e);
                                    self.report(i, Status::Cached, Some(key), 0.0, String::new(), Some(out))
                                }
                                Err(bad) => {
                                    let why = format!("cached output is corrupt ({bad})");
                                    self.report(i, Status::WouldRun, Some(key), 0.0, why, None)
                                }
                            },
                            Err(e) => {
                                let why = format!("cached entry is unreadable ({e})");
                                self.report(i, Status::WouldRun, Some(key), 0.0, why, None)
                            }
                            Ok(None) => {
                                let why = rerun_reason(last.as_ref().map(|r| &r.ingredients), &ingredients);
                                self.report(i, Status::WouldRun, Some(key), 0.0, why, None)
                            }
                        }
                    }
                }
            };
            out.push(report);
        }
        out
    }

    /// The cached result of stage `i`, if every stage it depends on is cached too.
    pub fn cached_entry(&self, i: usize) -> Result<(Entry, Ingredients), Error> {
        let name = &self.stage(i).name;
        let mask = self.pipeline.select(std::slice::from_ref(name)).map_err(|_| Error::NotInPipeline(name.clone()))?;
        let mut entries: Vec<Option<Entry>> = vec![None; self.pipeline.stages.len()];
        for j in 0..=i {
            if !mask[j] {
                continue;
            }
            let ingredients = self.ingredients(j, &entries)?;
            let found = self.cache.lookup(&ingredients.key());
            let entry = found.map_err(|source| Error::Cache { what: "read the cached entry", source })?.ok_or_else(|| {
                let last = self.cache.last_run(&self.pipeline.name, &self.stage(j).name);
                let why = rerun_reason(last.as_ref().map(|r| &r.ingredients), &ingredients);
                Error::NotCached { stage: self.stage(j).name.clone(), why }
            })?;
            if j == i {
                return Ok((entry, ingredients));
            }
            entries[j] = Some(entry);
        }
        Err(Error::NotInPipeline(name.clone()))
    }

    /// Recomputes stage `i` into a throw-away directory (removed when the [`Recomputed`] is dropped), to
    /// compare with the cached entry, which it returns too.
    pub fn recompute(&self, i: usize) -> Result<(Entry, Recomputed), Error> {
        let (entry, _) = self.cached_entry(i)?;
        let stage = self.stage(i);
        let mut inputs = BTreeMap::new();
        for (slot, &up) in &stage.inputs {
            let (e, _) = self.cached_entry(up)?;
            self.cache.verify(&e).map_err(|source| Error::CorruptInput { slot: slot.clone(), source })?;
            inputs.insert(slot.clone(), e.out());
        }
        let mut recomputed = Recomputed { dir: tempdir_in(self.cache.root())?, files: Vec::new() };
        let (out, scratch) = (recomputed.out(), recomputed.dir.join("scratch"));
        for d in [&out, &scratch] {
            std::fs::create_dir_all(d).map_err(path_err(d))?;
        }
        let params = stage.resolved_params(&self.pipeline.workdir);
        let bar = self.ui.stage_bar(&stage.name);
        let ctx = StageContext {
            stage: &stage.name,
            params: &params,
            inputs: &inputs,
            out: &out,
            scratch: &scratch,
            workdir: &self.pipeline.workdir,
            threads: self.jobs,
            progress: &bar,
        };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(self.jobs).build().map_err(Error::Pool)?;
        let result = run_kind(stage.kind.as_ref(), &ctx, Some(&pool), None);
        drop(bar);
        result?;
        recomputed.files = crate::digest::list_tree(&out)?;
        Ok((entry, recomputed))
    }
}

/// A stage's output recomputed by [`Runner::recompute`]: its files, and the directory they are in
/// (removed on drop).
pub struct Recomputed {
    dir: PathBuf,
    pub files: Vec<crate::digest::FileRecord>,
}

impl Recomputed {
    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
}

impl Drop for Recomputed {
    fn drop(&mut self) {
        let _ = crate::cache::remove_tree(&self.dir);
    }
}

fn tempdir_in(root: &Path) -> Result<PathBuf, PathError> {
    let dir = root.join("tmp").join(format!("verify.{}.{}", std::process::id(), now()));
    std::fs::create_dir_all(&dir).map_err(path_err(&dir))?;
    Ok(dir)
}
