//! The checked layer: a [`raw::RawPipeline`] resolved against the [`Registry`] into a [`Pipeline`].
//!
//! Everything that can be wrong with a pipeline file is found here, before anything runs: a stage name
//! that is not letters, digits, `-` and `_`, unknown kind, unknown / ill-typed / missing parameter,
//! unknown input slot, input naming a missing stage, a cycle, a sweep key naming a missing stage or
//! parameter, a `Path` parameter (in the file or in a sweep) naming no file, and whatever each kind's
//! [`StageKind::validate`] refuses (ranges, relations between parameters), for every sweep variant.
//! Each error names `file:line:col` and quotes the offending text; all of them are reported at once.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wspace_stage_api::{Inputs, ParamSpec, ParamType, Params, StageError, StageKind, Value};

use super::executor::{self, Executor};
use super::graph;
use super::raw::{self, RawPipeline};
use crate::diag::{Diagnostic, Diagnostics, Source};
use crate::registry::Registry;

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

/// The most variants a sweep may have (each is checked, run and tabled).
pub const MAX_VARIANTS: usize = 10_000;

/// A stage name is a file name and a Slurm job name: letters, digits, `-` and `_`.
pub fn valid_stage_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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

/// `stage.param = value`, from `--set` or a sweep variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub stage: String,
    pub param: String,
    pub value: Value,
}

impl Override {
    pub fn address(&self) -> String {
        format!("{}.{}", self.stage, self.param)
    }
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

/// Reads and checks a pipeline file. I/O errors and every validation error come back as diagnostics.
pub fn load(path: &Path, registry: &Registry) -> Result<Pipeline, Diagnostics> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics::from(Diagnostic::new(format!("cannot read pipeline file {}: {e}", path.display()))))?;
    let source = Source { name: path.display().to_string(), text: text.into() };
    let raw = raw::parse(source)?;
    let workdir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let workdir = if workdir.as_os_str().is_empty() { PathBuf::from(".") } else { workdir };
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into());
    check(raw, registry, &workdir, &stem)
}

/// Checks a parsed pipeline. `workdir` resolves `Path` parameters (which must exist).
pub fn check(raw: RawPipeline, registry: &Registry, workdir: &Path, default_name: &str) -> Result<Pipeline, Diagnostics> {
    let src = &raw.source;
    let mut errors = Vec::new();
    let names: BTreeMap<&str, usize> = raw.stages.iter().enumerate().map(|(i, s)| (s.name.value.as_str(), i)).collect();
    if let Some(name) = &raw.name {
        let v = &name.value;
        if !v.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            errors.push(
                Diagnostic::at(format!("pipeline name `{v}` is not usable as a file name"), src, name.span.clone())
                    .with_help("use letters, digits, `-`, `_` and `.`, starting with a letter or digit"),
            );
        }
    }
    for rs in &raw.stages {
        if !valid_stage_name(&rs.name.value) {
            errors.push(
                Diagnostic::at(
                    format!("stage name `{}` is not allowed", rs.name.value.escape_debug()),
                    src,
                    rs.name.span.clone(),
                )
                .with_help("stage names are letters, digits, `-` and `_` (they name files and Slurm jobs)"),
            );
        }
    }

    // Kinds, parameters, inputs.
    let mut stages: Vec<Option<Stage>> = Vec::new();
    for rs in &raw.stages {
        stages.push(check_stage(rs, &raw, registry, &names, workdir, &mut errors));
    }

    // Sweep keys and their values.
    let mut sweep = Vec::new();
    for (key, values) in &raw.sweep {
        let Some((stage_name, param)) = key.value.split_once('.') else {
            errors.push(
                Diagnostic::at(format!("sweep key `{}` must be `stage.param`", key.value), src, key.span.clone())
                    .with_help("write \"stage.param\" = [value, value, ...]"),
            );
            continue;
        };
        let Some(&si) = names.get(stage_name) else {
            errors.push(
                Diagnostic::at(format!("sweep key `{}` names no stage `{stage_name}`", key.value), src, key.span.clone())
                    .with_help(format!(
                        "stages: {}",
                        raw.stages.iter().map(|s| s.name.value.as_str()).collect::<Vec<_>>().join(", ")
                    )),
            );
            continue;
        };
        let Some(stage) = &stages[si] else { continue };
        let mut ok = Vec::new();
        for v in values {
            match override_param(stage, param, v.value.clone()) {
                Ok(params) => {
                    if let Some(e) = stage.spec(param).and_then(|spec| missing_path(&spec.ty, &params[param], workdir)) {
                        errors.push(Diagnostic::at(format!("sweep `{}`: {e}", key.value), src, v.span.clone()));
                    }
                    ok.push(v.value.clone())
                }
                Err(OverrideError::NoSuchParam(help)) => {
                    errors.push(
                        Diagnostic::at(
                            format!(
                                "sweep key `{}`: stage `{stage_name}` (kind `{}`) has no parameter `{param}`",
                                key.value,
                                stage.kind.name()
                            ),
                            src,
                            key.span.clone(),
                        )
                        .with_help(help),
                    );
                    break;
                }
                Err(OverrideError::Type(msg)) => {
                    errors.push(Diagnostic::at(format!("sweep `{}`: {msg}", key.value), src, v.span.clone()))
                }
            }
        }
        sweep.push(SweepAxis { address: key.value.clone(), values: ok });
    }

    let variants = sweep.iter().fold(1usize, |n, axis| n.saturating_mul(axis.values.len()));
    if variants > MAX_VARIANTS {
        if let Some((key, _)) = raw.sweep.first() {
            errors.push(
                Diagnostic::at(format!("the sweep has {variants} variants, more than {MAX_VARIANTS}"), src, key.span.clone())
                    .with_help("split it into several pipeline files, or sweep fewer values"),
            );
        }
    }

    let by_name = raw.stages.iter().zip(&stages).map(|(rs, st)| (rs.name.value.as_str(), st.as_ref())).collect();
    let executor = executor::check(&raw, &by_name, &mut errors);

    // The graph must be acyclic; stages are then stored in topological order.
    let order = match graph::order(&graph::build(stages.iter().map(|st| ((), st.as_ref().map(|s| &s.inputs))))) {
        Ok(order) => Some(order),
        Err(cycle) => {
            errors.push(graph::cycle_error(&raw, &cycle));
            None
        }
    };
    let (Some(order), true) = (order, errors.is_empty()) else {
        return Err(Diagnostics(errors));
    };
    let position: BTreeMap<usize, usize> = order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
    let mut sorted: Vec<Stage> = order.iter().map(|&i| stages[i].clone().expect("checked above")).collect();
    for st in &mut sorted {
        for up in st.inputs.values_mut() {
            *up = position[up];
        }
    }
    let mut spans = Spans::default();
    for rs in &raw.stages {
        spans.stages.insert(rs.name.value.clone(), rs.name.span.clone());
        for (k, v) in &rs.params {
            spans.params.insert((rs.name.value.clone(), k.value.clone()), v.span.clone());
        }
    }
    for (key, values) in &raw.sweep {
        for (i, v) in values.iter().enumerate() {
            spans.sweep.insert((key.value.clone(), i), v.span.clone());
        }
    }
    let pipeline = Pipeline {
        source: raw.source.clone(),
        workdir: workdir.to_path_buf(),
        name: raw.name.map(|n| n.value).unwrap_or_else(|| default_name.to_string()),
        description: raw.description.unwrap_or_default(),
        seed: raw.seed.map(|s| s.value),
        stages: sorted,
        sweep,
        executor,
        spans: Arc::new(spans),
    };
    pipeline.validate(&[])?;
    Ok(pipeline)
}

fn check_stage(
    rs: &raw::RawStage,
    raw: &RawPipeline,
    registry: &Registry,
    names: &BTreeMap<&str, usize>,
    workdir: &Path,
    errors: &mut Vec<Diagnostic>,
) -> Option<Stage> {
    let src = &raw.source;
    let name = &rs.name.value;
    let Some(kind_name) = &rs.kind else {
        errors.push(
            Diagnostic::at(format!("stage `{name}` has no `kind`"), src, rs.name.span.clone())
                .with_help(format!("known kinds: {}", registry.names().collect::<Vec<_>>().join(", "))),
        );
        return None;
    };
    let Some(kind) = registry.get(&kind_name.value) else {
        errors.push(
            Diagnostic::at(format!("unknown kind `{}` for stage `{name}`", kind_name.value), src, kind_name.span.clone())
                .with_help(format!("known kinds: {}", registry.names().collect::<Vec<_>>().join(", "))),
        );
        return None;
    };
    let specs = kind.params();
    let mut params = BTreeMap::new();
    let mut ok = true;
    for (key, value) in &rs.params {
        let Some(spec) = specs.iter().find(|p| p.name == key.value) else {
            errors.push(
                Diagnostic::at(
                    format!("unknown parameter `{}` for stage `{name}` (kind `{}`)", key.value, kind.name()),
                    src,
                    key.span.clone(),
                )
                .with_help(known_params(&specs)),
            );
            ok = false;
            continue;
        };
        match conform(&spec.ty, value.value.clone()) {
            Ok(v) => {
                if let Some(e) = missing_path(&spec.ty, &v, workdir) {
                    errors.push(Diagnostic::at(
                        format!("parameter `{}` of stage `{name}`: {e}", key.value),
                        src,
                        value.span.clone(),
                    ));
                    ok = false;
                }
                params.insert(key.value.clone(), v);
            }
            Err(msg) => {
                errors.push(Diagnostic::at(
                    format!("parameter `{}` of stage `{name}`: {msg}", key.value),
                    src,
                    value.span.clone(),
                ));
                // Present but wrong: not reported as missing too.
                params.insert(key.value.clone(), value.value.clone());
                ok = false;
            }
        }
    }
    for spec in &specs {
        if params.contains_key(spec.name) {
            continue;
        }
        match (&spec.default, spec.name, raw.seed.as_ref()) {
            // The pipeline-wide seed is the default of every `seed` parameter.
            (_, "seed", Some(seed)) if spec.ty == ParamType::Int => {
                params.insert("seed".into(), Value::Int(seed.value));
            }
            (Some(d), _, _) => {
                params.insert(spec.name.to_string(), d.clone());
            }
            (None, _, _) => {
                errors.push(
                    Diagnostic::at(
                        format!("stage `{name}` (kind `{}`) needs parameter `{}`", kind.name(), spec.name),
                        src,
                        rs.name.span.clone(),
                    )
                    .with_help(format!("`{}`: {}", spec.name, spec.doc)),
                );
                ok = false;
            }
        }
    }

    let mut inputs = BTreeMap::new();
    let slots = kind.inputs();
    for (slot, up) in &rs.inputs {
        if let Inputs::Slots(known) = &slots {
            if !known.iter().any(|(s, _, _)| *s == slot.value) {
                errors.push(
                    Diagnostic::at(
                        format!("unknown input slot `{}` for stage `{name}` (kind `{}`)", slot.value, kind.name()),
                        src,
                        slot.span.clone(),
                    )
                    .with_help(format!("slots: {}", known.iter().map(|(s, _, _)| *s).collect::<Vec<_>>().join(", "))),
                );
                ok = false;
                continue;
            }
        }
        if !slot.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            errors.push(Diagnostic::at(
                format!("input slot `{}` must be letters, digits and `_`", slot.value),
                src,
                slot.span.clone(),
            ));
            ok = false;
            continue;
        }
        match names.get(up.value.as_str()) {
            Some(&i) => {
                inputs.insert(slot.value.clone(), i);
            }
            None => {
                errors.push(
                    Diagnostic::at(
                        format!("input `{}` of stage `{name}` names no stage `{}`", slot.value, up.value),
                        src,
                        up.span.clone(),
                    )
                    .with_help(format!(
                        "stages: {}",
                        raw.stages.iter().map(|s| s.name.value.as_str()).collect::<Vec<_>>().join(", ")
                    )),
                );
                ok = false;
            }
        }
    }
    if let Inputs::Slots(known) = &slots {
        for (slot, required, doc) in known {
            if *required && !rs.inputs.iter().any(|(s, _)| s.value == *slot) {
                errors.push(
                    Diagnostic::at(
                        format!("stage `{name}` (kind `{}`) needs input `{slot}`", kind.name()),
                        src,
                        rs.name.span.clone(),
                    )
                    .with_help(format!("`{slot}`: {doc}; write inputs = {{ {slot} = \"stage\" }}")),
                );
                ok = false;
            }
        }
    }
    ok.then(|| Stage { name: name.clone(), kind: kind.clone(), params, inputs })
}

fn known_params(specs: &[ParamSpec]) -> String {
    if specs.is_empty() {
        "this kind takes no parameters".into()
    } else {
        format!("known parameters: {}", specs.iter().map(|p| p.name).collect::<Vec<_>>().join(", "))
    }
}

/// Checks `v` against `ty`; integers become floats where a float is wanted.
pub fn conform(ty: &ParamType, v: Value) -> Result<Value, String> {
    let found = v.type_name();
    match (ty, v) {
        (ParamType::Any, v) => Ok(v),
        (ParamType::Bool, v @ Value::Bool(_)) => Ok(v),
        (ParamType::Int, v @ Value::Int(_)) => Ok(v),
        (ParamType::Float, Value::Int(i)) => Ok(Value::Float(i as f64)),
        (ParamType::Float, v @ Value::Float(_)) => Ok(v),
        (ParamType::Str | ParamType::Path, v @ Value::Str(_)) => Ok(v),
        (ParamType::Choice(choices), Value::Str(s)) => {
            if choices.contains(&s.as_str()) {
                Ok(Value::Str(s))
            } else {
                Err(format!("expected {}, found \"{s}\"", ty.describe()))
            }
        }
        (ParamType::List(item), Value::List(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, x) in items.into_iter().enumerate() {
                out.push(conform(item, x).map_err(|e| format!("item {i}: {e}"))?);
            }
            Ok(Value::List(out))
        }
        (ParamType::Table, v @ Value::Table(_)) => Ok(v),
        _ => Err(format!("expected {}, found {found}", ty.describe())),
    }
}

/// A `Path` parameter (or list of them) must name an existing file or directory. An empty string means
/// "none".
fn missing_path(ty: &ParamType, v: &Value, workdir: &Path) -> Option<String> {
    match (ty, v) {
        (ParamType::Path, Value::Str(p)) if !p.is_empty() && !workdir.join(p).exists() => {
            Some(format!("no file or directory {}", workdir.join(p).display()))
        }
        (ParamType::List(item), Value::List(items)) => items.iter().find_map(|x| missing_path(item, x, workdir)),
        _ => None,
    }
}

enum OverrideError {
    NoSuchParam(String),
    Type(String),
}

/// The stage's parameters with `param` set to `value`: a declared parameter, or else a key of the kind's
/// open table (`params` of a `command` stage).
fn override_param(stage: &Stage, param: &str, value: Value) -> Result<BTreeMap<String, Value>, OverrideError> {
    let specs = stage.kind.params();
    let mut params = stage.params.clone();
    if let Some(spec) = specs.iter().find(|p| p.name == param) {
        let v = conform(&spec.ty, value).map_err(OverrideError::Type)?;
        params.insert(param.to_string(), v);
        return Ok(params);
    }
    if let Some(table) = stage.kind.open_table() {
        let entry = params.entry(table.to_string()).or_insert_with(|| Value::Table(BTreeMap::new()));
        if let Value::Table(t) = entry {
            t.insert(param.to_string(), value);
            return Ok(params);
        }
    }
    Err(OverrideError::NoSuchParam(known_params(&specs)))
}

impl Pipeline {
    pub fn index(&self, stage: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name == stage)
    }

    /// A copy with `overrides` applied (from `--set` or a sweep variant), each checked like a file value.
    pub fn with_overrides(&self, overrides: &[Override]) -> Result<Pipeline, Diagnostic> {
        let mut p = self.clone();
        for o in overrides {
            let Some(i) = p.index(&o.stage) else {
                return Err(Diagnostic::new(format!("`{}`: no stage `{}` in {}", o.address(), o.stage, p.source.name)));
            };
            let stage = &p.stages[i];
            match override_param(stage, &o.param, o.value.clone()) {
                Ok(params) => {
                    if let Some(spec) = stage.spec(&o.param) {
                        if let Some(e) = missing_path(&spec.ty, &params[&o.param], &p.workdir) {
                            return Err(Diagnostic::new(format!("`{}`: {e}", o.address())));
                        }
                    }
                    p.stages[i].params = params;
                }
                Err(OverrideError::NoSuchParam(help)) => {
                    return Err(Diagnostic::new(format!(
                        "`{}`: stage `{}` (kind `{}`) has no parameter `{}`",
                        o.address(),
                        o.stage,
                        stage.kind.name(),
                        o.param
                    ))
                    .with_help(help))
                }
                Err(OverrideError::Type(msg)) => return Err(Diagnostic::new(format!("`{} = {}`: {msg}", o.address(), o.value))),
            }
        }
        Ok(p)
    }

    /// Asks each stage's kind to [`StageKind::validate`] its parameters, for every sweep variant with
    /// `overrides` (from `--set`) on top. Errors point at the value at fault: the `--set`, the sweep
    /// value, the parameter in the file, or else the stage; each distinct error is reported once.
    pub fn validate(&self, overrides: &[Override]) -> Result<(), Diagnostics> {
        let mut seen = BTreeSet::new();
        let mut errors = Vec::new();
        for variant in self.variants() {
            let all: Vec<Override> = variant.iter().chain(overrides).cloned().collect();
            let vp = match self.with_overrides(&all) {
                Ok(vp) => vp,
                Err(d) => {
                    if seen.insert(d.to_string()) {
                        errors.push(d);
                    }
                    continue;
                }
            };
            for stage in &vp.stages {
                let params = stage.resolved_params(&self.workdir);
                let Err(e) = stage.kind.validate(Params(&params)) else { continue };
                let d = self.locate(stage, &e, &variant, overrides);
                if seen.insert(d.to_string()) {
                    errors.push(d);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Diagnostics(errors))
        }
    }

    /// A diagnostic for `stage`'s refusal `e`, at the value the error names.
    fn locate(&self, stage: &Stage, e: &StageError, variant: &[Override], overrides: &[Override]) -> Diagnostic {
        let param = match e {
            StageError::Param { name, .. } => Some(name.clone()),
            other => {
                let text = other.to_string();
                stage.params.keys().find(|p| text.contains(&format!("`{p}`"))).cloned()
            }
        };
        let message = format!("stage `{}` (kind `{}`): {e}", stage.name, stage.kind.name());
        let is = |o: &&Override| o.stage == stage.name && Some(&o.param) == param.as_ref();
        if let Some(o) = overrides.iter().rev().find(is) {
            return Diagnostic::new(format!("{message}\n  (from `--set {}={}`)", o.address(), o.value));
        }
        let (src, spans) = (&self.source, &self.spans);
        if let Some(o) = variant.iter().find(is) {
            let axis = self.sweep.iter().find(|a| a.address == o.address());
            let i = axis.and_then(|a| a.values.iter().position(|v| *v == o.value)).unwrap_or(0);
            if let Some(span) = spans.sweep.get(&(o.address(), i)) {
                return Diagnostic::at(format!("{message} (sweep `{} = {}`)", o.address(), o.value), src, span.clone());
            }
        }
        let at = param.and_then(|p| spans.params.get(&(stage.name.clone(), p))).or_else(|| spans.stages.get(&stage.name));
        match at {
            Some(span) => Diagnostic::at(message, src, span.clone()),
            None => Diagnostic::new(message),
        }
    }

    /// Every combination of the sweep's values (their cartesian product, in file order); one empty
    /// variant when there is no sweep.
    pub fn variants(&self) -> Vec<Vec<Override>> {
        let mut out: Vec<Vec<Override>> = vec![vec![]];
        for axis in &self.sweep {
            let (stage, param) = axis.address.split_once('.').unwrap_or((&axis.address, ""));
            out = out
                .into_iter()
                .flat_map(|prefix| {
                    axis.values.iter().map(move |v| {
                        let mut o = prefix.clone();
                        o.push(Override { stage: stage.to_string(), param: param.to_string(), value: v.clone() });
                        o
                    })
                })
                .collect();
        }
        out
    }

    /// `targets` and all their ancestors (all stages when `targets` is empty), as a mask over `stages`.
    pub fn select(&self, targets: &[String]) -> Result<Vec<bool>, Diagnostic> {
        if targets.is_empty() {
            return Ok(vec![true; self.stages.len()]);
        }
        let mut keep = vec![false; self.stages.len()];
        for t in targets {
            let i = self.index(t).ok_or_else(|| {
                Diagnostic::new(format!("no stage `{t}` in {}", self.source.name))
                    .with_help(format!("stages: {}", self.stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")))
            })?;
            keep[i] = true;
        }
        // Stages are topologically ordered: one backward pass closes over ancestors.
        for i in (0..self.stages.len()).rev() {
            if keep[i] {
                for &up in self.stages[i].inputs.values() {
                    keep[up] = true;
                }
            }
        }
        Ok(keep)
    }

    /// The stage graph ([`graph::build`]): node `i` is `stages[i]`, each edge an input, labelled by its slot.
    pub fn graph(&self) -> petgraph::graph::DiGraph<&Stage, &str> {
        graph::build(self.stages.iter().map(|s| (s, Some(&s.inputs))))
    }

    /// Names of the stages a stage's inputs come from, by slot.
    pub fn upstream_names(&self, i: usize) -> BTreeMap<String, String> {
        self.stages[i].inputs.iter().map(|(slot, &up)| (slot.clone(), self.stages[up].name.clone())).collect()
    }
}

/// Parses the value of `--set stage.param=value`: TOML syntax (`2`, `0.5`, `"x"`, `[1, 2]`), or else the
/// bare text as a string.
pub fn parse_set(arg: &str) -> Result<Override, String> {
    let (addr, text) = arg.split_once('=').ok_or_else(|| format!("--set {arg}: expected stage.param=value"))?;
    let (stage, param) = addr.trim().split_once('.').ok_or_else(|| format!("--set {arg}: expected stage.param=value"))?;
    let text = text.trim();
    let value = match toml::de::DeValue::parse(text) {
        Ok(v) => raw::to_value(v.get_ref(), v.span()).map_err(|(m, _)| format!("--set {arg}: {m}"))?,
        Err(_) => Value::Str(text.to_string()),
    };
    Ok(Override { stage: stage.to_string(), param: param.to_string(), value })
}

/// A sweep variant's overrides as `{"stage.param": value}`.
pub fn overrides_json(overrides: &[Override]) -> serde_json::Map<String, serde_json::Value> {
    overrides.iter().map(|o| (o.address(), o.value.to_json())).collect()
}
