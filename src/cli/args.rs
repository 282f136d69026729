//! The arguments several commands share ([`PipelineArgs`], [`CacheArg`], [`Format`]), and from them
//! to a checked pipeline: `--set` overrides parsed and validated, and the one stage that `explain`,
//! `show` and `verify` work on.

use std::path::PathBuf;

use clap::ValueEnum;

use crate::cache::Cache;
use crate::exec::Runner;
use crate::pipeline::{self, sweep::parse_set, Override, Pipeline};
use crate::progress::Ui;
use crate::registry::Registry;

use super::fail::Fail;

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

pub(super) fn load(p: &PipelineArgs, registry: &Registry) -> Result<(Pipeline, Vec<Override>), Fail> {
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

pub(super) fn stage_index(p: &Pipeline, name: &str) -> Result<usize, Fail> {
    p.select(&[name.to_string()]).map_err(|d| Fail(d.to_string(), 2))?;
    Ok(p.index(name).unwrap_or(0))
}

/// One stage of a pipeline file with its `--set` overrides applied, and the cache it is looked up in:
/// what `explain`, `show` and `verify` start from.
pub(super) struct OneStage {
    pub pipeline: Pipeline,
    pub cache: Cache,
    /// The stage's index in `pipeline.stages`.
    pub index: usize,
}

impl OneStage {
    pub fn open(p: &PipelineArgs, registry: &Registry, stage: &str) -> Result<OneStage, Fail> {
        let (pipeline, overrides) = load(p, registry)?;
        let pipeline = pipeline.with_overrides(&overrides).map_err(|d| Fail(d.to_string(), 2))?;
        let index = stage_index(&pipeline, stage)?;
        Ok(OneStage { pipeline, cache: Cache::new(&p.cache.cache), index })
    }

    pub fn runner<'a>(&'a self, ui: &'a Ui, jobs: usize) -> Runner<'a> {
        Runner { pipeline: &self.pipeline, cache: &self.cache, ui, jobs, on_abandon: None }
    }
}
