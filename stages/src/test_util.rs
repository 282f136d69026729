//! Test helpers: run a stage kind on a parameter table in temp directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wspace_stage_api::{NoProgress, StageContext, StageError, StageKind, Value};

/// Runs `kind` with its declared defaults overridden by `params`, writing into `out`.
pub(crate) fn run_stage(
    kind: &dyn StageKind,
    params: &[(&str, Value)],
    inputs: &[(&str, &Path)],
    out: &Path,
) -> Result<(), StageError> {
    let scratch = tempfile::tempdir().unwrap();
    run_stage_in(kind, params, inputs, out, scratch.path())
}

/// [`run_stage`] with a given scratch directory (to test resuming).
pub(crate) fn run_stage_in(
    kind: &dyn StageKind,
    params: &[(&str, Value)],
    inputs: &[(&str, &Path)],
    out: &Path,
    scratch: &Path,
) -> Result<(), StageError> {
    with_context(kind, params, inputs, out, scratch, |ctx| kind.run(ctx))
}

/// Shard `index` of `count` of `kind` ([`StageKind::run_shard`]), with a given scratch directory.
pub(crate) fn run_shard_in(
    kind: &dyn StageKind,
    params: &[(&str, Value)],
    inputs: &[(&str, &Path)],
    (out, scratch): (&Path, &Path),
    (index, count): (usize, usize),
) -> Result<(), StageError> {
    with_context(kind, params, inputs, out, scratch, |ctx| kind.run_shard(ctx, index, count))
}

fn with_context(
    kind: &dyn StageKind,
    params: &[(&str, Value)],
    inputs: &[(&str, &Path)],
    out: &Path,
    scratch: &Path,
    call: impl FnOnce(&StageContext) -> Result<(), StageError>,
) -> Result<(), StageError> {
    let mut resolved: BTreeMap<String, Value> =
        kind.params().into_iter().filter_map(|p| Some((p.name.to_string(), p.default?))).collect();
    for (name, value) in params {
        assert!(resolved.contains_key(*name), "test sets undeclared parameter {name}");
        resolved.insert(name.to_string(), value.clone());
    }
    let inputs: BTreeMap<String, PathBuf> = inputs.iter().map(|(k, v)| (k.to_string(), v.to_path_buf())).collect();
    std::fs::create_dir_all(out).unwrap();
    let ctx = StageContext {
        stage: "test",
        params: &resolved,
        inputs: &inputs,
        out,
        scratch,
        workdir: out,
        threads: 1,
        progress: &NoProgress,
    };
    call(&ctx)
}

pub(crate) fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}
