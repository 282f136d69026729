//! Sweeps and overrides: the `[sweep]` table checked against the stages, its variants (the cartesian
//! product of its axes), a variant's or `--set`'s values applied to a copy of the pipeline and
//! checked like file values, and every variant's parameters validated by their kinds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use wspace_stage_api::{Params, StageError, Value};

use super::model::{Pipeline, Stage, SweepAxis};
use super::params::{conform, known_params, missing_path};
use super::raw::{self, RawPipeline};
use crate::diag::{stages_help, Diagnostic, Diagnostics};

/// The most variants a sweep may have (each is checked, run and tabled).
pub const MAX_VARIANTS: usize = 10_000;

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

/// Checks the `[sweep]` table against the stages (`names`: stage name → index in the file; `stages`: in
/// file order, `None` for one that failed its own checks): each key must be `stage.param` naming a
/// parameter, each value must fit it (and a `Path` name a file), and there may be at most
/// [`MAX_VARIANTS`] variants. Returns the axes, each with the values that fit; a key that names no
/// stage's parameter (or a stage that failed its own checks) has none.
pub fn check(
    raw: &RawPipeline,
    names: &BTreeMap<&str, usize>,
    stages: &[Option<Stage>],
    workdir: &Path,
    errors: &mut Vec<Diagnostic>,
) -> Vec<SweepAxis> {
    let src = &raw.source;
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
                    .with_help(stages_help(raw.stages.iter().map(|s| s.name.value.as_str()))),
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
    sweep
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

    /// Asks each stage's kind to [`StageKind::validate`](wspace_stage_api::StageKind::validate) its
    /// parameters, for every sweep variant with `overrides` (from `--set`) on top. Errors point at the
    /// value at fault: the `--set`, the sweep value, the parameter in the file, or else the stage; each
    /// distinct error is reported once.
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
        // The parameter at fault, as the kind names it; any other error points at the stage.
        let param = match e {
            StageError::Param { name, .. } => Some(name.clone()),
            _ => None,
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
