//! `[executor]`: where the stages that must run do run. Nothing here joins a stage key: the runner
//! decides *what* runs from the cache alone, and the executor only *where*.
//!
//! ```toml
//! [executor]
//! kind = "slurm"                 # or "local" (the default); `wspace run --executor` overrides it
//! partition = "cpu"              # every setting is optional; unset ones are left to the cluster
//! time = "02:00:00"
//! cpus = 4                       # --cpus-per-task; the stage's thread budget in its job
//! memory = "8G"
//! sbatch_args = ["--qos=normal"]
//!
//! [executor.stages.zoo]          # per stage: any of the settings above, replacing the defaults,
//! gres = "gpu:1"                 # plus `gres` and, for kinds that can split their work, `shards`
//! shards = 8                     # one Slurm array job of 8 tasks
//! ```

use std::collections::BTreeMap;

use wspace_stage_api::{StageKind, Value};

use super::raw::{RawPipeline, Sp};
use crate::diag::{stages_help, Diagnostic, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ExecutorKind {
    /// In this process, on this machine.
    #[default]
    Local,
    /// One Slurm job (or array job) per stage that must run.
    Slurm,
}

/// The `sbatch` settings of one stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSettings {
    pub partition: Option<String>,
    pub time: Option<String>,
    pub cpus: Option<usize>,
    pub memory: Option<String>,
    pub gres: Option<String>,
    pub sbatch_args: Vec<String>,
    /// How many array tasks the stage's work is split into (shardable kinds only).
    pub shards: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Executor {
    pub kind: ExecutorKind,
    pub defaults: JobSettings,
    /// Per stage name: the defaults with that stage's settings applied.
    pub stages: BTreeMap<String, JobSettings>,
}

impl Executor {
    pub fn settings(&self, stage: &str) -> &JobSettings {
        self.stages.get(stage).unwrap_or(&self.defaults)
    }
}

const SETTINGS: &str = "kind, partition, time, cpus, memory, gres, sbatch_args and [executor.stages.NAME] tables";
const STAGE_SETTINGS: &str = "partition, time, cpus, memory, gres, sbatch_args and shards";

/// Checks `[executor]` against the stages' kinds (by stage name; `None`: a stage that failed its own
/// checks).
pub fn check(raw: &RawPipeline, stages: &BTreeMap<&str, Option<&dyn StageKind>>, errors: &mut Vec<Diagnostic>) -> Executor {
    let src = &raw.source;
    let mut ex = Executor { defaults: JobSettings { shards: 1, ..Default::default() }, ..Default::default() };
    for (key, value) in &raw.executor.settings {
        if key.value == "kind" {
            match value.value.as_str() {
                Some("local") => ex.kind = ExecutorKind::Local,
                Some("slurm") => ex.kind = ExecutorKind::Slurm,
                _ => errors.push(Diagnostic::at(
                    format!("`executor.kind` must be \"local\" or \"slurm\", found {}", value.value),
                    src,
                    value.span.clone(),
                )),
            }
        } else if key.value == "shards" {
            errors.push(
                Diagnostic::at("`shards` is set per stage", src, key.span.clone())
                    .with_help("write it in [executor.stages.NAME], e.g. [executor.stages.zoo] shards = 4"),
            );
        } else {
            apply(src, key, value, &mut ex.defaults, SETTINGS, errors);
        }
    }
    for (name, settings) in &raw.executor.stages {
        let Some(stage) = stages.get(name.value.as_str()) else {
            errors.push(
                Diagnostic::at(format!("[executor.stages.{}] names no stage", name.value), src, name.span.clone())
                    .with_help(stages_help(stages.keys().copied())),
            );
            continue;
        };
        let mut job = ex.defaults.clone();
        for (key, value) in settings {
            apply(src, key, value, &mut job, STAGE_SETTINGS, errors);
            if key.value == "shards" && job.shards > 1 {
                if let Some(kind) = stage.filter(|k| !k.shardable()) {
                    errors.push(Diagnostic::at(
                        format!("stage `{}` (kind `{}`) cannot be split into shards", name.value, kind.name()),
                        src,
                        key.span.clone(),
                    ));
                }
            }
        }
        ex.stages.insert(name.value.clone(), job);
    }
    ex
}

fn apply(src: &Source, key: &Sp<String>, value: &Sp<Value>, job: &mut JobSettings, known: &str, errors: &mut Vec<Diagnostic>) {
    let v = &value.value;
    let wrong = |what: &str| Diagnostic::at(format!("`{}` must be {what}, found {v}", key.value), src, value.span.clone());
    let text = |slot: &mut Option<String>, errors: &mut Vec<Diagnostic>| match v.as_str() {
        Some(s) if !s.is_empty() => *slot = Some(s.to_string()),
        _ => errors.push(wrong("a non-empty string")),
    };
    let positive = |errors: &mut Vec<Diagnostic>| match v.as_i64() {
        Some(n) if n >= 1 => Some(n as usize),
        _ => {
            errors.push(wrong("a positive integer"));
            None
        }
    };
    match key.value.as_str() {
        "partition" => text(&mut job.partition, errors),
        "time" => text(&mut job.time, errors),
        "memory" => text(&mut job.memory, errors),
        "gres" => text(&mut job.gres, errors),
        "cpus" => job.cpus = positive(errors).or(job.cpus),
        "shards" => job.shards = positive(errors).unwrap_or(1),
        "sbatch_args" => {
            match v.as_list().map(|l| l.iter().map(|x| x.as_str().map(str::to_string)).collect::<Option<Vec<_>>>()) {
                Some(Some(args)) => job.sbatch_args = args,
                _ => errors.push(wrong("an array of strings")),
            }
        }
        other => errors.push(
            Diagnostic::at(format!("unknown executor setting `{other}`"), src, key.span.clone())
                .with_help(format!("known: {known}")),
        ),
    }
}
