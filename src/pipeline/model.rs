//! The checked pipeline: what [`super::check`] makes of a file. A [`Pipeline`] holds its [`Stage`]s in
//! topological order (each with every parameter typed and defaulted, and its inputs as indices),
//! its sweep axes, its executor and where the file wrote each item ([`Spans`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wspace_stage_api::{ParamSpec, ParamType, StageKind, Value};

use super::executor::Executor;
use crate::diag::Source;

/// A checked stage. `params` holds every declared parameter (defaults filled in).
#[derive(Clone)]
pub struct Stage {
    pub name: String,
    pub kind: Arc<dyn StageKind>,
    pub params: BTreeMap<String, Value>,
    /// slot → index of the upstream stage in [`Pipeline::stages`].
    pub inputs: BTreeMap<String, usize>,
}

impl Stage {
    pub fn spec(&self, param: &str) -> Option<ParamSpec> {
        self.kind.params().into_iter().find(|p| p.name == param)
    }

    /// The parameters as the kind sees them: `Path` values resolved against `workdir`, absolute.
    pub fn resolved_params(&self, workdir: &Path) -> BTreeMap<String, Value> {
        let abs = |v: &Value| match v {
            Value::Str(p) if !p.is_empty() => {
                let path = workdir.join(p);
                Value::Str(std::path::absolute(&path).unwrap_or(path).to_string_lossy().into_owned())
            }
            other => other.clone(),
        };
        let specs = self.kind.params();
        self.params
            .iter()
            .map(|(name, v)| {
                let v = match (specs.iter().find(|s| s.name == name).map(|s| &s.ty), v) {
                    (Some(ParamType::Path), v) => abs(v),
                    (Some(ParamType::List(t)), Value::List(items)) if **t == ParamType::Path => {
                        Value::List(items.iter().map(abs).collect())
                    }
                    (_, v) => v.clone(),
                };
                (name.clone(), v)
            })
            .collect()
    }
}

/// A stage shows as its name (as in [`Pipeline::graph`]'s nodes).
impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// Where the file wrote what the checker resolved, so that later checks can point at it.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    /// stage → its name in `[stages.NAME]`.
    pub stages: BTreeMap<String, Range<usize>>,
    /// (stage, param) → the value.
    pub params: BTreeMap<(String, String), Range<usize>>,
    /// (sweep address, value index) → the value.
    pub sweep: BTreeMap<(String, usize), Range<usize>>,
}

/// One `[sweep]` key: the parameter it addresses and its values (already type-checked).
#[derive(Debug, Clone)]
pub struct SweepAxis {
    pub address: String,
    pub values: Vec<Value>,
}

#[derive(Clone)]
pub struct Pipeline {
    pub source: Source,
    /// The directory of the pipeline file: relative paths and commands resolve against it.
    pub workdir: PathBuf,
    pub name: String,
    pub description: String,
    pub seed: Option<i64>,
    /// In topological order: every stage comes after its inputs.
    pub stages: Vec<Stage>,
    pub sweep: Vec<SweepAxis>,
    pub executor: Executor,
    pub spans: Arc<Spans>,
}

impl Pipeline {
    pub fn index(&self, stage: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == stage)
    }
}
