//! The checked layer: a [`raw::RawPipeline`] resolved against the [`Registry`] into a [`Pipeline`].
//!
//! Everything that can be wrong with a pipeline file is found here, before anything runs: a stage name
//! that is not letters, digits, `-` and `_`, unknown kind, unknown / ill-typed / missing parameter,
//! unknown input slot, input naming a missing stage, a cycle ([`super::graph`]), a sweep key naming a
//! missing stage or parameter ([`super::sweep`]), a `Path` parameter (in the file or in a sweep) naming
//! no file, and whatever each kind's [`StageKind::validate`] refuses (ranges, relations between
//! parameters), for every sweep variant. Each error names `file:line:col` and quotes the offending
//! text; all of them are reported at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wspace_stage_api::{Inputs, ParamType, StageKind, Value};

use super::executor;
use super::graph;
use super::model::{Pipeline, Spans, Stage};
use super::params::{conform, known_params, missing_path};
use super::raw::{self, RawPipeline, RawStage};
use super::sweep;
use crate::diag::{stages_help, Diagnostic, Diagnostics, Source};
use crate::registry::Registry;

/// A stage name is a file name and a Slurm job name: letters, digits, `-` and `_`.
pub fn valid_stage_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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
    let names: BTreeMap<&str, usize> = raw.stages.iter().enumerate().map(|(i, s)| (s.name.value.as_str(), i)).collect();
    let mut checker = Checker { raw: &raw, registry, workdir, names, errors: Vec::new() };
    checker.names();
    let stages: Vec<Option<Stage>> = raw.stages.iter().map(|rs| checker.stage(rs)).collect();
    let Checker { names, mut errors, .. } = checker;
    let sweep = sweep::check(&raw, &names, &stages, workdir, &mut errors);
    let kinds = raw.stages.iter().zip(&stages).map(|(rs, st)| (rs.name.value.as_str(), st.as_ref().map(|s| &*s.kind))).collect();
    let executor = executor::check(&raw, &kinds, &mut errors);

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
    let pipeline = Pipeline {
        source: raw.source.clone(),
        workdir: workdir.to_path_buf(),
        spans: Arc::new(spans(&raw)),
        name: raw.name.map(|n| n.value).unwrap_or_else(|| default_name.to_string()),
        description: raw.description.unwrap_or_default(),
        seed: raw.seed.map(|s| s.value),
        stages: sorted(stages, &order),
        sweep,
        executor,
    };
    pipeline.validate(&[])?;
    Ok(pipeline)
}

/// The stages (all checked) in `order`, their inputs renumbered to match.
fn sorted(mut stages: Vec<Option<Stage>>, order: &[usize]) -> Vec<Stage> {
    let position: BTreeMap<usize, usize> = order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
    let mut sorted: Vec<Stage> = order.iter().map(|&i| stages[i].take().expect("checked above")).collect();
    for st in &mut sorted {
        for up in st.inputs.values_mut() {
            *up = position[up];
        }
    }
    sorted
}

/// Where the file wrote each stage name, parameter and sweep value.
fn spans(raw: &RawPipeline) -> Spans {
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
    spans
}

/// What checking the stages of one file needs at hand, and the errors found so far.
struct Checker<'a> {
    raw: &'a RawPipeline,
    registry: &'a Registry,
    workdir: &'a Path,
    /// Stage name → its index in the file.
    names: BTreeMap<&'a str, usize>,
    errors: Vec<Diagnostic>,
}

impl Checker<'_> {
    /// The pipeline's name and the stages' names must be usable as file names.
    fn names(&mut self) {
        let (raw, src) = (self.raw, &self.raw.source);
        if let Some(name) = &raw.name {
            let v = &name.value;
            if !v.starts_with(|c: char| c.is_ascii_alphanumeric())
                || !v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                self.errors.push(
                    Diagnostic::at(format!("pipeline name `{v}` is not usable as a file name"), src, name.span.clone())
                        .with_help("use letters, digits, `-`, `_` and `.`, starting with a letter or digit"),
                );
            }
        }
        for rs in &raw.stages {
            if !valid_stage_name(&rs.name.value) {
                self.errors.push(
                    Diagnostic::at(
                        format!("stage name `{}` is not allowed", rs.name.value.escape_debug()),
                        src,
                        rs.name.span.clone(),
                    )
                    .with_help("stage names are letters, digits, `-` and `_` (they name files and Slurm jobs)"),
                );
            }
        }
    }

    /// A stage's kind, parameters and inputs; `None` if anything about it is wrong (then reported).
    fn stage(&mut self, rs: &RawStage) -> Option<Stage> {
        let kind = self.kind(rs)?;
        let before = self.errors.len();
        let params = self.params(rs, &*kind);
        let inputs = self.inputs(rs, &*kind);
        (self.errors.len() == before).then(|| Stage { name: rs.name.value.clone(), kind, params, inputs })
    }

    fn kind(&mut self, rs: &RawStage) -> Option<Arc<dyn StageKind>> {
        let (src, name) = (&self.raw.source, &rs.name.value);
        let known = format!("known kinds: {}", self.registry.names().collect::<Vec<_>>().join(", "));
        let Some(kind_name) = &rs.kind else {
            self.errors.push(Diagnostic::at(format!("stage `{name}` has no `kind`"), src, rs.name.span.clone()).with_help(known));
            return None;
        };
        let Some(kind) = self.registry.get(&kind_name.value) else {
            self.errors.push(
                Diagnostic::at(format!("unknown kind `{}` for stage `{name}`", kind_name.value), src, kind_name.span.clone())
                    .with_help(known),
            );
            return None;
        };
        Some(kind.clone())
    }

    /// Every declared parameter: the file's value, typed, or else its default (the pipeline's `seed`
    /// for a `seed` parameter).
    fn params(&mut self, rs: &RawStage, kind: &dyn StageKind) -> BTreeMap<String, Value> {
        let (src, name) = (&self.raw.source, &rs.name.value);
        let specs = kind.params();
        let mut params = BTreeMap::new();
        for (key, value) in &rs.params {
            let Some(spec) = specs.iter().find(|p| p.name == key.value) else {
                self.errors.push(
                    Diagnostic::at(
                        format!("unknown parameter `{}` for stage `{name}` (kind `{}`)", key.value, kind.name()),
                        src,
                        key.span.clone(),
                    )
                    .with_help(known_params(&specs)),
                );
                continue;
            };
            match conform(&spec.ty, value.value.clone()) {
                Ok(v) => {
                    if let Some(e) = missing_path(&spec.ty, &v, self.workdir) {
                        self.errors.push(Diagnostic::at(
                            format!("parameter `{}` of stage `{name}`: {e}", key.value),
                            src,
                            value.span.clone(),
                        ));
                    }
                    params.insert(key.value.clone(), v);
                }
                Err(msg) => {
                    self.errors.push(Diagnostic::at(
                        format!("parameter `{}` of stage `{name}`: {msg}", key.value),
                        src,
                        value.span.clone(),
                    ));
                    // Present but wrong: not reported as missing too.
                    params.insert(key.value.clone(), value.value.clone());
                }
            }
        }
        for spec in &specs {
            if params.contains_key(spec.name) {
                continue;
            }
            match (&spec.default, spec.name, self.raw.seed.as_ref()) {
                // The pipeline-wide seed is the default of every `seed` parameter.
                (_, "seed", Some(seed)) if spec.ty == ParamType::Int => {
                    params.insert("seed".into(), Value::Int(seed.value));
                }
                (Some(d), _, _) => {
                    params.insert(spec.name.to_string(), d.clone());
                }
                (None, _, _) => {
                    self.errors.push(
                        Diagnostic::at(
                            format!("stage `{name}` (kind `{}`) needs parameter `{}`", kind.name(), spec.name),
                            src,
                            rs.name.span.clone(),
                        )
                        .with_help(format!("`{}`: {}", spec.name, spec.doc)),
                    );
                }
            }
        }
        params
    }

    /// slot → index (in the file) of the stage it names; every slot the kind requires must be there.
    fn inputs(&mut self, rs: &RawStage, kind: &dyn StageKind) -> BTreeMap<String, usize> {
        let (raw, src, name) = (self.raw, &self.raw.source, &rs.name.value);
        let mut inputs = BTreeMap::new();
        let slots = kind.inputs();
        for (slot, up) in &rs.inputs {
            if let Inputs::Slots(known) = &slots {
                if !slots.accepts(&slot.value) {
                    self.errors.push(
                        Diagnostic::at(
                            format!("unknown input slot `{}` for stage `{name}` (kind `{}`)", slot.value, kind.name()),
                            src,
                            slot.span.clone(),
                        )
                        .with_help(format!("slots: {}", known.iter().map(|(s, _, _)| *s).collect::<Vec<_>>().join(", "))),
                    );
                    continue;
                }
            }
            if !slot.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.errors.push(Diagnostic::at(
                    format!("input slot `{}` must be letters, digits and `_`", slot.value),
                    src,
                    slot.span.clone(),
                ));
                continue;
            }
            match self.names.get(up.value.as_str()) {
                Some(&i) => {
                    inputs.insert(slot.value.clone(), i);
                }
                None => {
                    self.errors.push(
                        Diagnostic::at(
                            format!("input `{}` of stage `{name}` names no stage `{}`", slot.value, up.value),
                            src,
                            up.span.clone(),
                        )
                        .with_help(stages_help(raw.stages.iter().map(|s| s.name.value.as_str()))),
                    );
                }
            }
        }
        if let Inputs::Slots(known) = &slots {
            for (slot, required, doc) in known {
                if *required && !slot.ends_with('*') && !rs.inputs.iter().any(|(s, _)| s.value == *slot) {
                    self.errors.push(
                        Diagnostic::at(
                            format!("stage `{name}` (kind `{}`) needs input `{slot}`", kind.name()),
                            src,
                            rs.name.span.clone(),
                        )
                        .with_help(format!("`{slot}`: {doc}; write inputs = {{ {slot} = \"stage\" }}")),
                    );
                }
            }
        }
        inputs
    }
}
