//! The `canonicalise` stage kind: every model of a `cnn-s` zoo brought to a common hidden-unit order
//! (and tanh sign) without changing any model's function.
//!
//! # Brief overview
//! A network's hidden units can be reordered, and with tanh some can be negated, without changing what
//! it computes; two models trained from different seeds therefore differ by an arbitrary element of that
//! symmetry group on top of any real difference. This stage picks, for every model, the group element
//! that brings it closest to one reference (Git Re-Basin "weight matching", Ainsworth et al. 2023) and
//! writes the transformed zoo in the `zoo` stage's layout ([`super::store`]), so that `pca`,
//! `evaluate-reconstruction` and every other consumer of a zoo read it unchanged.
//!
//! # The symmetries of `cnn-s`
//! ```text
//! conv1(1→8,k5) → maxpool2 → tanh → conv2(8→6,k5) → maxpool2 → tanh → conv3(6→4,k2) → tanh
//!   → flatten (C,H,W: 4×3×3 = 36) → fc1(36→20) → tanh → fc2(20→3)
//! ```
//! | hidden layer | units | permutation acts on | sign flip |
//! |---|---|---|---|
//! | conv1 | 8  | rows of `conv1.weight`/`conv1.bias`, input channels of `conv2.weight` | no (max-pool before tanh) |
//! | conv2 | 6  | rows of `conv2.weight`/`conv2.bias`, input channels of `conv3.weight` | no (max-pool before tanh) |
//! | conv3 | 4  | rows of `conv3.weight`/`conv3.bias`, the 9 consecutive `fc1.weight` columns each channel owns | yes |
//! | fc1   | 20 | rows of `fc1.weight`/`fc1.bias`, columns of `fc2.weight` | yes |
//!
//! The output units are not permuted: unit `k` is class `class_k` of the task. A sign flip negates the
//! unit's incoming weights and bias (so its pre-activation, and, tanh being odd, its activation) and
//! its outgoing weights: exact where the unit's activation is `tanh` of its own pre-activation (conv3,
//! fc1); not for conv1/conv2, where `tanh(maxpool(−x)) = −tanh(minpool(x))`.
//!
//! # The maths
//! An alignment is, per hidden layer `l`, a permutation `π_l` and signs `s_l` (all `+1` where flips are
//! not exact, or with `signs = false`): aligned unit `i` of layer `l` is the model's unit `π_l(i)`
//! multiplied by `s_l(i)`. For layer `l`, a unit's *vector* is its incoming weights and bias followed by
//! its outgoing weights (one block per unit of the next layer), taken from the model with every *other*
//! layer already aligned. With `r_i` the reference's vector of unit `i` and `m_j` the model's of unit
//! `j`, `S_ij = ⟨r_i, m_j⟩` (f64, fixed summation order), and the layer's update is the linear assignment
//! `π_l = argmax_π Σ_i S_{i,π(i)}` — or, where signs are free, `argmax_π Σ_i |S_{i,π(i)}|` with
//! `s_l(i) = sign S_{i,π_l(i)}`. That is the exact maximiser, over layer `l`'s group element with the
//! others fixed, of `Σ_tensors ⟨W_ref, W_aligned⟩`, i.e. the minimiser of `‖W_ref − W_aligned‖²`
//! (the norm of `W_aligned` does not depend on the alignment). The assignment is solved exactly
//! ([`max_assignment`], Hungarian / shortest augmenting paths, `O(n³)`, `n ≤ 20`).
//!
//! Per model: one forward pass layer by layer (conv1 on its incoming weights only; conv2 given conv1's
//! permutation; …; fc1 with incoming and outgoing weights, fc2 being fixed), then coordinate-descent
//! sweeps over conv1…fc1 using incoming and outgoing weights, until a sweep changes nothing or
//! `max_sweeps` sweeps have run; a layer's new assignment replaces the current one only if its value is
//! strictly higher, so the objective rises at every change and a sweep cannot cycle on ties. Every step
//! sees only the model's weights up to the symmetry already removed, so the result is *equivariant*:
//! a permuted and sign-flipped copy of a model canonicalises to the same bits as the model (given the
//! same reference; barring exact ties in the assignment).
//!
//! **Reference** (`reference`): an integer is a `model_id`, whose `reference_checkpoint` row is the
//! reference as it is. `"mean"` (default): the train-split `status = ok` rows of `reference_checkpoint`
//! are aligned to the first of them, averaged, re-aligned to that mean, averaged again, …, `iterations`
//! rounds; every row is then aligned to the last mean. The mean is fitted on train-split models only, as
//! `pca` is. Every row of the zoo (both checkpoints, every split, diverged ones too) is canonicalised
//! independently; a row with non-finite weights is copied unchanged (`skipped_non_finite`).
//!
//! # Output (a directory, the layout of a `zoo` stage)
//! | file | content |
//! | --- | --- |
//! | `zoo.csv` | the input's, byte for byte (same rows, same `file` names) |
//! | `models/*.safetensors` | the canonicalised weights: same file names, tensor names, shapes and order |
//! | `zoo.json` | the input's, plus `canonicalisation`: `kind`, `version`, the resolved `params` |
//! | `reference.safetensors` | the reference the zoo was aligned to (the zoo's tensor names) |
//! | `alignment.csv` | per row: `model_id, checkpoint, file, sweeps, converged`, one column per hidden layer (cnn-s: `conv1, conv2, conv3, fc1`; each `π_l` as space-separated model unit indices), then `<layer>_flips` for each sign-symmetric layer (cnn-s: `conv3_flips, fc1_flips`; 0/1 per aligned unit) |
//! | `metrics.json` | the input zoo's metrics under `zoo`, and: `rows`, `fit_rows`, `distance_to_reference.{before,after}` (mean L2 over rows), `rms_pairwise_distance.{before,after}` (over the `reference_checkpoint` ok rows), `units_moved` (fraction of hidden units not at their own index), `units_moved_by_layer.{conv1,…}`, `signs_flipped` (fraction of sign-symmetric units negated), `sweeps.{mean,max}`, `not_converged`, `skipped_non_finite` |
//!
//! Supported: every architecture described in [`crate::import::arch`], read from there as data
//! ([`Net`], in [`super::matching`]): `cnn-s` (above), an imported Model Zoos CNN-s with any head
//! (`cnn-s-c<K>-<nlin>`: the same hidden layers, the head's `K` rows fixed), the Small CNN Zoo network
//! (`small-cnn-<nlin>`: conv1…conv3 permutable, each channel owning a 3×3 kernel of the next conv and
//! one column of the dense layer after the global average pool; with tanh every conv's sign is free),
//! and a `mixed:` zoo whose models share their tensors. Sign flips are used only where every model is
//! tanh (for relu, gelu, sigmoid or leaky relu they are not symmetries). Any other zoo (`resnet18`) is
//! refused before a weight is read.
//!
//! `method = "none"` writes the input zoo unchanged (models, `zoo.csv`; `zoo.json` with
//! `canonicalisation.method = "none"`; `metrics.json` = `{method, zoo}`), for any arch: a sweep over
//! `method` switches canonicalisation off without changing the pipeline's shape.

use std::path::Path;

use rayon::prelude::*;
use wspace_stage_api::{choice_enum, params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind, Value};

use super::store::{Checkpoint, ParamShape, Zoo, ZooMeta, ZooRow};
use crate::data::TaskSplit;
use crate::import::arch::tensors_of;
use crate::tensors::{self, csv_row, NamedTensors};

pub use super::matching::{align, canonicalise, max_assignment, AlignOptions, Aligned, Alignment, Layer, Net};

/// The elementwise mean (f64 accumulation in the given order, rounded to f32).
fn mean_of(models: &[Vec<f32>]) -> Vec<f32> {
    let mut acc = vec![0.0f64; models.first().map_or(0, Vec::len)];
    for m in models {
        for (a, v) in acc.iter_mut().zip(m) {
            *a += *v as f64;
        }
    }
    let n = models.len().max(1) as f64;
    acc.into_iter().map(|a| (a / n) as f32).collect()
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt()
}

/// The root-mean-square distance over all pairs: `√(2n/(n−1) · mean_i ‖x_i − x̄‖²)`.
fn rms_pairwise(models: &[&Vec<f32>]) -> f64 {
    let n = models.len();
    if n < 2 {
        return 0.0;
    }
    let mut mean = vec![0.0f64; models[0].len()];
    for m in models {
        for (a, v) in mean.iter_mut().zip(m.iter()) {
            *a += *v as f64;
        }
    }
    mean.iter_mut().for_each(|a| *a /= n as f64);
    let spread: f64 =
        models.iter().map(|m| m.iter().zip(&mean).map(|(v, a)| (*v as f64 - a).powi(2)).sum::<f64>()).sum::<f64>() / n as f64;
    (2.0 * n as f64 / (n as f64 - 1.0) * spread).sqrt()
}

/// Which reference the zoo is aligned to.
#[derive(Debug, Clone, PartialEq)]
enum Reference {
    Mean { iterations: usize },
    Model(usize),
}

/// The checked parameters.
#[derive(Debug, Clone)]
struct Options {
    reference: Reference,
    checkpoint: Checkpoint,
    align: AlignOptions,
}

choice_enum! {
    /// `method`: how the zoo is canonicalised.
    pub enum Method { WeightMatching = "weight-matching", None = "none" }
}

params! {
    METHOD = "method": choice(Method) = "weight-matching", "weight-matching (below), or none: the zoo passes through unchanged (a sweep's off switch)";
    REFERENCE = "reference": Any(Str) = "mean", "\"mean\" (the iterated mean of the aligned train-split models) or a model_id (that model as it is)";
    REFERENCE_CHECKPOINT = "reference_checkpoint": choice(Checkpoint) = "final", "the checkpoint whose rows form the mean, or of the reference model";
    ITERATIONS = "iterations": Int = 3, "rounds of align-to-mean / recompute-mean (reference = \"mean\")";
    MAX_SWEEPS = "max_sweeps": Int = 20, "cap on coordinate-descent sweeps over the layers per model (after the forward pass)";
    SIGNS = "signs": Bool = true, "also fix the tanh sign symmetry of conv3 and fc1 units";
}

impl Options {
    /// `None` for `method = "none"`.
    fn from_params(p: Params) -> Result<Option<Options>, StageError> {
        if p.choice::<Method>(&METHOD)? == Method::None {
            return Ok(None);
        }
        let iterations = p.int(&ITERATIONS)?;
        let reference = match p.value(&REFERENCE)? {
            Value::Str(s) if s == "mean" => {
                if !(1..=1000).contains(&iterations) {
                    return Err(StageError::param(
                        "iterations",
                        format!("must be in 1..=1000 with reference = \"mean\", got {iterations}"),
                    ));
                }
                Reference::Mean { iterations: iterations as usize }
            }
            Value::Int(id) if *id >= 0 => Reference::Model(*id as usize),
            other => {
                return Err(StageError::param(
                    "reference",
                    format!("must be \"mean\" or a model_id (an integer ≥ 0), got {other}"),
                ))
            }
        };
        let max_sweeps = p.int(&MAX_SWEEPS)?;
        if !(0..=10_000).contains(&max_sweeps) {
            return Err(StageError::param("max_sweeps", format!("must be in 0..=10000, got {max_sweeps}")));
        }
        Ok(Some(Options {
            reference,
            checkpoint: p.choice(&REFERENCE_CHECKPOINT)?,
            align: AlignOptions { signs: p.bool(&SIGNS)?, max_sweeps: max_sweeps as usize },
        }))
    }
}

/// `method = "none"`: the zoo as it is (weights and tables copied, `zoo.json` saying so), so that a sweep
/// can switch canonicalisation off without changing the pipeline's shape.
fn pass_through(ctx: &StageContext, zoo_dir: &Path) -> Result<(), StageError> {
    let zoo = Zoo::load(zoo_dir)?;
    let out = ctx.out;
    for row in &zoo.rows {
        let (from, to) = (zoo_dir.join(&row.file), out.join(&row.file));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StageError::io(parent, e))?;
        }
        std::fs::copy(&from, &to).map_err(|e| StageError::io(&from, e))?;
    }
    let csv_in = zoo_dir.join("zoo.csv");
    std::fs::copy(&csv_in, out.join("zoo.csv")).map_err(|e| StageError::io(&csv_in, e))?;
    let mut meta: serde_json::Value = tensors::read_json(&zoo_dir.join("zoo.json"))?;
    if let Some(obj) = meta.as_object_mut() {
        obj.insert("canonicalisation".into(), serde_json::json!({ "kind": "canonicalise", "method": "none" }));
    }
    tensors::write_json(&out.join("zoo.json"), &meta)?;
    let zoo_metrics: serde_json::Value = tensors::read_json(&zoo_dir.join("metrics.json"))?;
    tensors::write_json(&out.join("metrics.json"), &serde_json::json!({ "method": "none", "zoo": zoo_metrics }))
}

/// Refuses a zoo this stage cannot canonicalise, naming the stage and the zoo's `arch`; otherwise
/// its symmetries: every architecture of [`crate::import::arch`] (`mixed:` ones whose members share
/// their tensors), with the tensors that architecture has.
fn check_arch(zoo_dir: &Path) -> Result<Net, StageError> {
    let meta: ZooMeta = tensors::read_json(&zoo_dir.join("zoo.json"))?;
    let Some(net) = Net::from_arch(&meta.arch) else {
        return Err(StageError::input(
            "zoo",
            format!(
                "has arch = \"{}\" ({}); canonicalisation supports cnn-s and the imported architectures (cnn-s-c<K>-<nlin>, small-cnn-<nlin>)",
                meta.arch,
                zoo_dir.display()
            ),
        ));
    };
    if tensors_of(&meta.arch).ok().as_ref() != Some(&meta.parameters) {
        return Err(StageError::input(
            "zoo",
            format!(
                "is not the network its arch names: {} says arch = \"{}\" but its `parameters` are not that network's tensors in state_dict order",
                zoo_dir.join("zoo.json").display(),
                meta.arch
            ),
        ));
    }
    Ok(net)
}

pub struct CanonicaliseKind;

impl StageKind for CanonicaliseKind {
    fn name(&self) -> &'static str {
        "canonicalise"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "permutes (and tanh-sign-flips) every model's hidden units to a common reference, function unchanged; a zoo out"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(&[METHOD, REFERENCE, REFERENCE_CHECKPOINT, ITERATIONS, MAX_SWEEPS, SIGNS])
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![("zoo", true, "a `zoo` stage (cnn-s), or an imported zoo (cnn-s-c<K>-<nlin>, small-cnn-<nlin>)")])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        Options::from_params(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let zoo_dir = ctx.input("zoo")?;
        let Some(opts) = Options::from_params(ctx.view())? else { return pass_through(ctx, zoo_dir) };
        let net = check_arch(zoo_dir)?;
        let zoo = Zoo::load(zoo_dir)?;
        run_canonicalise(ctx, &net, &zoo, &opts)
    }
}

fn run_canonicalise(ctx: &StageContext, net: &Net, zoo: &Zoo, opts: &Options) -> Result<(), StageError> {
    let weights: Vec<Vec<f32>> = zoo.rows.par_iter().map(|r| zoo.flat(r)).collect::<Result<_, _>>()?;
    let expected = net.len;
    for (r, w) in zoo.rows.iter().zip(&weights) {
        if w.len() != expected {
            return Err(StageError::msg(format!(
                "{}: {} values, `{}` has {expected}",
                zoo.dir.join(&r.file).display(),
                w.len(),
                zoo.meta.arch
            )));
        }
    }
    let finite: Vec<bool> = weights.iter().map(|w| w.iter().all(|v| v.is_finite())).collect();
    let ckpt = opts.checkpoint.as_str();
    let (reference, fit_rows) = match &opts.reference {
        Reference::Model(id) => {
            let i = zoo.rows.iter().position(|r| r.model_id == *id && r.checkpoint == opts.checkpoint).ok_or_else(|| {
                StageError::param("reference", format!("= {id}: the zoo has no row with model_id {id} and checkpoint `{ckpt}`"))
            })?;
            if !finite[i] {
                return Err(StageError::param("reference", format!("= {id}: that model's `{ckpt}` weights are not finite")));
            }
            (weights[i].clone(), 0)
        }
        Reference::Mean { iterations } => {
            let fit: Vec<usize> = (0..zoo.rows.len())
                .filter(|&i| {
                    let r = &zoo.rows[i];
                    r.split == TaskSplit::Train && r.ok() && r.checkpoint == opts.checkpoint && finite[i]
                })
                .collect();
            let Some(&first) = fit.first() else {
                return Err(StageError::param(
                    "reference",
                    format!(
                        "= \"mean\" needs train-split rows with status ok at checkpoint `{ckpt}`; \
                     the zoo has none (set `reference` to a model_id, or `reference_checkpoint`)"
                    ),
                ));
            };
            ctx.progress.start((iterations * fit.len() + zoo.rows.len()) as u64, "models");
            let mut reference = weights[first].clone();
            for _ in 0..*iterations {
                let aligned: Vec<Vec<f32>> = fit
                    .par_iter()
                    .map(|&i| {
                        let w = canonicalise(net, &weights[i], &reference, opts.align);
                        ctx.progress.inc(1);
                        w
                    })
                    .collect();
                reference = mean_of(&aligned);
            }
            (reference, fit.len())
        }
    };
    if matches!(opts.reference, Reference::Model(_)) {
        ctx.progress.start(zoo.rows.len() as u64, "models");
    }
    let results: Vec<Option<Aligned>> = weights
        .par_iter()
        .zip(&finite)
        .map(|(w, ok)| {
            let a = ok.then(|| align(net, w, &reference, opts.align));
            ctx.progress.inc(1);
            a
        })
        .collect();
    let canonical: Vec<Vec<f32>> =
        weights.iter().zip(&results).map(|(w, a)| a.as_ref().map_or_else(|| w.clone(), |a| a.alignment.apply(net, w))).collect();

    write_output(ctx, (zoo, net), opts, &reference, fit_rows, &weights, &canonical, &results)
}

#[allow(clippy::too_many_arguments)]
fn write_output(
    ctx: &StageContext,
    (zoo, net): (&Zoo, &Net),
    opts: &Options,
    reference: &[f32],
    fit_rows: usize,
    before: &[Vec<f32>],
    after: &[Vec<f32>],
    results: &[Option<Aligned>],
) -> Result<(), StageError> {
    let out = ctx.out;
    let models_dir = out.join("models");
    std::fs::create_dir_all(&models_dir).map_err(|e| StageError::io(&models_dir, e))?;
    zoo.rows.par_iter().zip(after).try_for_each(|(row, w)| {
        let path = out.join(&row.file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StageError::io(parent, e))?;
        }
        named(&zoo.meta.parameters, w).write(&path)
    })?;
    named(&zoo.meta.parameters, reference).write(&out.join("reference.safetensors"))?;
    let csv_in = zoo.dir.join("zoo.csv");
    std::fs::copy(&csv_in, out.join("zoo.csv")).map_err(|e| StageError::io(&csv_in, e))?;

    let mut meta: serde_json::Value = tensors::read_json(&zoo.dir.join("zoo.json"))?;
    if let Some(obj) = meta.as_object_mut() {
        obj.insert(
            "canonicalisation".into(),
            serde_json::json!({
                "kind": "canonicalise",
                "version": CanonicaliseKind.version(),
                "params": ctx.params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>(),
            }),
        );
    }
    tensors::write_json(&out.join("zoo.json"), &meta)?;

    write_alignment_csv(&out.join("alignment.csv"), net, &zoo.rows, results)?;

    // Metrics.
    let done: Vec<usize> = (0..zoo.rows.len()).filter(|&i| results[i].is_some()).collect();
    let n = done.len().max(1) as f64;
    let dist = |set: &[Vec<f32>]| done.iter().map(|&i| l2(&set[i], reference)).sum::<f64>() / n;
    let pair_rows: Vec<usize> =
        done.iter().copied().filter(|&i| zoo.rows[i].ok() && zoo.rows[i].checkpoint == opts.checkpoint).collect();
    let pick = |set: &[Vec<f32>]| -> f64 { rms_pairwise(&pair_rows.iter().map(|&i| &set[i]).collect::<Vec<_>>()) };
    let aligned: Vec<&Aligned> = results.iter().flatten().collect();
    let mut moved = vec![0usize; net.hidden.len()];
    let mut flipped = 0usize;
    for a in &aligned {
        moved.iter_mut().zip(a.alignment.moved()).for_each(|(total, m)| *total += m);
        flipped += a.alignment.flipped();
    }
    let count = aligned.len().max(1) as f64;
    let sign_units: usize = net.hidden.iter().filter(|l| l.signs).map(|l| l.units).sum();
    let by_layer: serde_json::Map<String, serde_json::Value> = net
        .hidden
        .iter()
        .zip(&moved)
        .map(|(l, m)| (l.name.to_string(), serde_json::json!(*m as f64 / (count * l.units as f64))))
        .collect();
    let sweeps: Vec<usize> = aligned.iter().map(|a| a.sweeps).collect();
    let zoo_metrics: serde_json::Value = tensors::read_json(&zoo.dir.join("metrics.json")).unwrap_or(serde_json::Value::Null);
    let reference_name = match opts.reference {
        Reference::Mean { .. } => serde_json::json!("mean"),
        Reference::Model(id) => serde_json::json!(id),
    };
    let metrics = serde_json::json!({
        "zoo": zoo_metrics,
        "rows": zoo.rows.len(),
        "fit_rows": fit_rows,
        "reference": reference_name,
        "distance_to_reference": {"before": dist(before), "after": dist(after)},
        "rms_pairwise_distance": {"before": pick(before), "after": pick(after)},
        "units_moved": moved.iter().sum::<usize>() as f64 / (count * net.hidden_units() as f64),
        "units_moved_by_layer": by_layer,
        "signs_flipped": if opts.align.signs && sign_units > 0 { flipped as f64 / (count * sign_units as f64) } else { 0.0 },
        "sweeps": {
            "mean": sweeps.iter().sum::<usize>() as f64 / count,
            "max": sweeps.iter().copied().max().unwrap_or(0),
        },
        "not_converged": aligned.iter().filter(|a| !a.converged).count(),
        "skipped_non_finite": zoo.rows.len() - aligned.len(),
    });
    tensors::write_json(&out.join("metrics.json"), &metrics)
}

fn write_alignment_csv(path: &Path, net: &Net, rows: &[ZooRow], results: &[Option<Aligned>]) -> Result<(), StageError> {
    let join = |v: &mut dyn Iterator<Item = usize>| v.map(|x| x.to_string()).collect::<Vec<_>>().join(" ");
    let signed: Vec<usize> = (0..net.hidden.len()).filter(|&l| net.hidden[l].signs).collect();
    let mut records = Vec::with_capacity(rows.len());
    for (row, a) in rows.iter().zip(results) {
        let (a, sweeps, converged) = match a {
            Some(r) => (r.alignment.clone(), r.sweeps.to_string(), r.converged.to_string()),
            None => (Alignment::identity(net), String::new(), String::new()),
        };
        let perms: Vec<String> = a.perm.iter().map(|p| join(&mut p.iter().copied())).collect();
        let flips: Vec<String> = signed.iter().map(|&l| join(&mut a.flip[l].iter().map(|&f| f as usize))).collect();
        let mut record = csv_row![row.model_id, row.checkpoint.as_str(), row.file, sweeps, converged];
        record.extend(perms.into_iter().chain(flips));
        records.push(record);
    }
    let mut header: Vec<String> = ["model_id", "checkpoint", "file", "sweeps", "converged"].map(String::from).to_vec();
    header.extend(net.hidden.iter().map(|l| l.name.to_string()));
    header.extend(signed.iter().map(|&l| format!("{}_flips", net.hidden[l].name)));
    tensors::write_csv(path, &header.iter().map(String::as_str).collect::<Vec<_>>(), records)
}

/// Flat weights as the zoo's tensors (names and shapes of `zoo.json`, in order).
fn named(parameters: &[ParamShape], flat: &[f32]) -> NamedTensors {
    NamedTensors::unflatten(flat, parameters.iter().map(|p| (p.name.as_str(), p.shape.as_slice())))
}

#[cfg(test)]
#[path = "canonical_tests.rs"]
mod tests;
