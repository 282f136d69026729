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
//! | `reference.safetensors` | the reference the zoo was aligned to (cnn-s tensor names) |
//! | `alignment.csv` | per row: `model_id, checkpoint, file, sweeps, converged, conv1, conv2, conv3, fc1` (each `π_l` as space-separated model unit indices), `conv3_flips, fc1_flips` (0/1 per aligned unit) |
//! | `metrics.json` | the input zoo's metrics under `zoo`, and: `rows`, `fit_rows`, `distance_to_reference.{before,after}` (mean L2 over rows), `rms_pairwise_distance.{before,after}` (over the `reference_checkpoint` ok rows), `units_moved` (fraction of hidden units not at their own index), `units_moved_by_layer.{conv1,…}`, `signs_flipped` (fraction of sign-symmetric units negated), `sweeps.{mean,max}`, `not_converged`, `skipped_non_finite` |
//!
//! Supported: `arch = "cnn-s"`, and an imported Model Zoos CNN-s (`cnn-s-c<K>-<nlin>`, or a `mixed:`
//! zoo of several activations) with a head the `cnn-s` kernel supports (3 or 10 classes): the same
//! hidden layers, the head's rows fixed. Sign flips are used only where every model is tanh (for relu,
//! gelu, sigmoid or leaky relu they are not symmetries). Any other zoo is refused before a weight is
//! read.
//!
//! `method = "none"` writes the input zoo unchanged (models, `zoo.csv`; `zoo.json` with
//! `canonicalisation.method = "none"`; `metrics.json` = `{method, zoo}`), for any arch: a sweep over
//! `method` switches canonicalisation off without changing the pipeline's shape.

use std::path::Path;

use rayon::prelude::*;
use wspace_stage_api::{choice_enum, params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind, Value};

use super::store::{Checkpoint, Zoo, ZooMeta, ZooRow};
use crate::data::TaskSplit;
use crate::import::arch::{ImportArch, Nlin};
use crate::nn::cnn_s::{classes_of_len, param_specs, B1, B2, B3, F1B, F1W, F2W, W1, W2, W3};
use crate::nn::CnnS;
use crate::tensors::{self, csv_row};

/// One hidden layer of `cnn-s` as the alignment sees it: its own tensor (rows = units), its bias, and
/// the next tensor, whose columns come in one block of `block` values per unit of this layer.
#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub name: &'static str,
    pub units: usize,
    /// Offset of the weight tensor (`units × row`).
    pub w: usize,
    /// Incoming values per unit.
    pub row: usize,
    /// Offset of the bias (`units`).
    pub b: usize,
    /// Offset of the next layer's weight tensor (`next_rows × units·block`).
    pub next: usize,
    /// Rows of the next tensor (fc1's: the head's classes, [`next_rows`]; 3 for `cnn-s`).
    pub next_rows: usize,
    /// Columns of the next tensor owned by one unit (conv kernels: k·k; conv3 → fc1: the 3×3 map).
    pub block: usize,
    /// Whether a sign flip of a unit is an exact symmetry (tanh straight after the layer).
    pub signs: bool,
}

/// The four hidden layers, input to output.
pub const LAYERS: [Layer; 4] = [
    Layer { name: "conv1", units: 8, w: W1, row: 25, b: B1, next: W2, next_rows: 6, block: 25, signs: false },
    Layer { name: "conv2", units: 6, w: W2, row: 200, b: B2, next: W3, next_rows: 4, block: 4, signs: false },
    Layer { name: "conv3", units: 4, w: W3, row: 24, b: B3, next: F1W, next_rows: 20, block: 9, signs: true },
    Layer { name: "fc1", units: 20, w: F1W, row: 36, b: F1B, next: F2W, next_rows: 3, block: 1, signs: true },
];

/// Hidden units in all (8 + 6 + 4 + 20).
pub const HIDDEN_UNITS: usize = 38;

/// The head's classes of flat weights `p` (3 or 10: the heads the `cnn-s` kernel supports).
fn head(p: &[f32]) -> usize {
    classes_of_len(p.len()).unwrap_or_else(|| panic!("{} values are not a cnn-s with a supported head", p.len()))
}

/// Rows of the tensor after layer `l` in flat weights `p`: the head's classes after fc1.
fn next_rows(p: &[f32], l: usize) -> usize {
    if LAYERS[l].next == F2W {
        head(p)
    } else {
        LAYERS[l].next_rows
    }
}

/// A group element: per hidden layer, aligned unit `i` = model unit `perm[l][i]`, negated if `flip[l][i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alignment {
    pub perm: [Vec<usize>; 4],
    pub flip: [Vec<bool>; 4],
}

fn signed(v: f32, neg: bool) -> f32 {
    if neg {
        -v
    } else {
        v
    }
}

impl Alignment {
    pub fn identity() -> Self {
        Alignment { perm: LAYERS.map(|l| (0..l.units).collect()), flip: LAYERS.map(|l| vec![false; l.units]) }
    }

    /// The aligned weights: `p` (flat, [`PARAM_SPECS`] order) transformed. Only copies and negations,
    /// so the result is exact.
    pub fn apply(&self, p: &[f32]) -> Vec<f32> {
        self.apply_except(p, None)
    }

    /// [`Alignment::apply`] with layer `skip` left as it is in `p`.
    fn apply_except(&self, p: &[f32], skip: Option<usize>) -> Vec<f32> {
        let classes = head(p);
        let mut q = p.to_vec();
        let map = |l: usize, i: usize| -> (usize, bool) {
            if skip == Some(l) {
                (i, false)
            } else {
                (self.perm[l][i], self.flip[l][i])
            }
        };
        // Tensors conv1, conv2, conv3, fc1 (rows: layer t), fc2 (rows fixed); columns in blocks of the
        // previous layer's units (conv1: the image, fixed).
        for t in 0..5 {
            let (w, rows, row_len) = if t < 4 { (LAYERS[t].w, LAYERS[t].units, LAYERS[t].row) } else { (F2W, classes, 20) };
            let (blocks, blk) = if t > 0 { (LAYERS[t - 1].units, LAYERS[t - 1].block) } else { (1, row_len) };
            for i in 0..rows {
                let (si, fi) = if t < 4 { map(t, i) } else { (i, false) };
                for c in 0..blocks {
                    let (sc, fc) = if t > 0 { map(t - 1, c) } else { (c, false) };
                    let (from, to) = (w + si * row_len + sc * blk, w + i * row_len + c * blk);
                    for k in 0..blk {
                        q[to + k] = signed(p[from + k], fi ^ fc);
                    }
                }
                if t < 4 {
                    q[LAYERS[t].b + i] = signed(p[LAYERS[t].b + si], fi);
                }
            }
        }
        q
    }

    /// Number of hidden units not at their own index, per layer.
    pub fn moved(&self) -> [usize; 4] {
        [0, 1, 2, 3].map(|l| self.perm[l].iter().enumerate().filter(|(i, p)| i != *p).count())
    }

    /// Number of negated units (all layers).
    pub fn flipped(&self) -> usize {
        self.flip.iter().map(|f| f.iter().filter(|x| **x).count()).sum()
    }
}

/// Unit `j`'s vector of layer `l` in flat weights `q`: incoming row, bias, then (if `outgoing`) its
/// block of every row of the next tensor.
fn unit_vector(q: &[f32], l: usize, j: usize, outgoing: bool, out: &mut Vec<f32>) {
    let layer = LAYERS[l];
    out.clear();
    out.extend_from_slice(&q[layer.w + j * layer.row..layer.w + (j + 1) * layer.row]);
    out.push(q[layer.b + j]);
    if outgoing {
        let next_row = layer.units * layer.block;
        for r in 0..next_rows(q, l) {
            let s = layer.next + r * next_row + j * layer.block;
            out.extend_from_slice(&q[s..s + layer.block]);
        }
    }
}

/// Maximum-weight perfect matching of the `n × n` matrix `c` (row-major): `assign[i]` is the column of
/// row `i`, maximising `Σ_i c[i][assign[i]]`. Exact (Hungarian method in its shortest-augmenting-path
/// form with row and column potentials, `O(n³)`). Non-finite entries count as 0. Ties go to the
/// lowest column index met first, deterministically.
pub fn max_assignment(c: &[f64], n: usize) -> Vec<usize> {
    assert_eq!(c.len(), n * n);
    // Minimise cost = −c. Indices are 1-based below; column 0 is a virtual start column.
    let cost = |i: usize, j: usize| {
        let v = c[(i - 1) * n + (j - 1)];
        if v.is_finite() {
            -v
        } else {
            0.0
        }
    };
    let mut row_pot = vec![0.0f64; n + 1];
    let mut col_pot = vec![0.0f64; n + 1];
    // owner[j]: the row matched to column j (0 = free); prev[j]: the column before j on the path.
    let mut owner = vec![0usize; n + 1];
    let mut prev = vec![0usize; n + 1];
    for row in 1..=n {
        owner[0] = row;
        let mut col = 0usize;
        let mut dist = vec![f64::INFINITY; n + 1];
        let mut done = vec![false; n + 1];
        // Grow a shortest-path tree from the new row until it reaches a free column.
        loop {
            done[col] = true;
            let r = owner[col];
            let mut step = f64::INFINITY;
            let mut next = 0usize;
            for j in 1..=n {
                if done[j] {
                    continue;
                }
                let reduced = cost(r, j) - row_pot[r] - col_pot[j];
                if reduced < dist[j] {
                    dist[j] = reduced;
                    prev[j] = col;
                }
                if dist[j] < step {
                    step = dist[j];
                    next = j;
                }
            }
            if next == 0 {
                break; // unreachable for finite costs: some column is always left
            }
            for j in 0..=n {
                if done[j] {
                    row_pot[owner[j]] += step;
                    col_pot[j] -= step;
                } else {
                    dist[j] -= step;
                }
            }
            col = next;
            if owner[col] == 0 {
                break;
            }
        }
        // Flip the matching along the path back to the virtual column.
        while col != 0 {
            let p = prev[col];
            owner[col] = owner[p];
            col = p;
        }
    }
    let mut assign = vec![0usize; n];
    for j in 1..=n {
        if owner[j] != 0 {
            assign[owner[j] - 1] = j - 1;
        }
    }
    assign
}

/// How one model is aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignOptions {
    /// Fix the tanh sign symmetry of conv3 and fc1.
    pub signs: bool,
    /// Cap on coordinate-descent sweeps after the forward pass.
    pub max_sweeps: usize,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions { signs: true, max_sweeps: 20 }
    }
}

/// The result of aligning one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Aligned {
    pub alignment: Alignment,
    pub sweeps: usize,
    /// False when `max_sweeps` ran out before a sweep changed nothing.
    pub converged: bool,
}

/// The best `(perm, flip, value)` for layer `l` given the other layers of `current`.
fn solve_layer(
    model: &[f32],
    reference: &[f32],
    current: &Alignment,
    l: usize,
    outgoing: bool,
    signs: bool,
) -> (Vec<usize>, Vec<bool>, f64) {
    let n = LAYERS[l].units;
    let q = current.apply_except(model, Some(l));
    let (mut rv, mut mv) = (Vec::new(), Vec::new());
    let mut sim = vec![0.0f64; n * n];
    let model_vectors: Vec<Vec<f32>> = (0..n)
        .map(|j| {
            unit_vector(&q, l, j, outgoing, &mut mv);
            mv.clone()
        })
        .collect();
    for i in 0..n {
        unit_vector(reference, l, i, outgoing, &mut rv);
        for (j, m) in model_vectors.iter().enumerate() {
            sim[i * n + j] = rv.iter().zip(m).map(|(a, b)| *a as f64 * *b as f64).sum();
        }
    }
    let free_signs = signs && LAYERS[l].signs;
    let score: Vec<f64> = if free_signs { sim.iter().map(|s| s.abs()).collect() } else { sim.clone() };
    let perm = max_assignment(&score, n);
    let flip: Vec<bool> = (0..n).map(|i| free_signs && sim[i * n + perm[i]] < 0.0).collect();
    let best = value(&score, n, &perm);
    (perm, flip, best)
}

/// `Σ_i score[i][perm[i]]`, summed in row order.
fn value(score: &[f64], n: usize, perm: &[usize]) -> f64 {
    (0..n).map(|i| score[i * n + perm[i]]).sum()
}

/// The alignment of `model` to `reference` (both flat, [`PARAM_SPECS`] order): forward pass, then
/// coordinate-descent sweeps (see the module docs).
pub fn align(model: &[f32], reference: &[f32], opts: AlignOptions) -> Aligned {
    assert_eq!(head(model), head(reference), "model and reference have different heads");
    let mut a = Alignment::identity();
    for l in 0..4 {
        let (perm, flip, _) = solve_layer(model, reference, &a, l, l == 3, opts.signs);
        a.perm[l] = perm;
        a.flip[l] = flip;
    }
    let mut sweeps = 0;
    let mut converged = false;
    while sweeps < opts.max_sweeps {
        sweeps += 1;
        let mut changed = false;
        for l in 0..4 {
            let (perm, flip, best) = solve_layer(model, reference, &a, l, true, opts.signs);
            if perm == a.perm[l] && flip == a.flip[l] {
                continue;
            }
            // The current assignment's value, on the same scores: replace only on a strict gain.
            let now = current_value(model, reference, &a, l, opts.signs);
            if best > now {
                a.perm[l] = perm;
                a.flip[l] = flip;
                changed = true;
            }
        }
        if !changed {
            converged = true;
            break;
        }
    }
    Aligned { alignment: a, sweeps, converged }
}

/// The value of layer `l`'s current assignment with its current signs, summed as [`solve_layer`] sums
/// (a stale sign, after a neighbouring layer changed, counts against it).
fn current_value(model: &[f32], reference: &[f32], a: &Alignment, l: usize, signs: bool) -> f64 {
    let n = LAYERS[l].units;
    let q = a.apply_except(model, Some(l));
    let (mut rv, mut mv) = (Vec::new(), Vec::new());
    let free_signs = signs && LAYERS[l].signs;
    let mut total = 0.0f64;
    for i in 0..n {
        unit_vector(reference, l, i, true, &mut rv);
        unit_vector(&q, l, a.perm[l][i], true, &mut mv);
        let s: f64 = rv.iter().zip(&mv).map(|(a, b)| *a as f64 * *b as f64).sum();
        total += if free_signs && a.flip[l][i] { -s } else { s };
    }
    total
}

/// `model` canonicalised against `reference`: [`align`] then [`Alignment::apply`].
pub fn canonicalise(model: &[f32], reference: &[f32], opts: AlignOptions) -> Vec<f32> {
    align(model, reference, opts).alignment.apply(model)
}

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
/// says whether every model is tanh (so that sign flips are symmetries).
///
/// Canonicalised: `cnn-s`, and the Model Zoos CNN-s of an imported zoo (`cnn-s-c<K>-<nlin>`, also
/// `mixed:` ones of one head) with a head the `cnn-s` kernel supports (3 or 10 classes): the same
/// hidden layers. Sign flips only where every model is tanh.
fn check_arch(zoo_dir: &Path) -> Result<bool, StageError> {
    let meta: ZooMeta = tensors::read_json(&zoo_dir.join("zoo.json"))?;
    let refuse = || {
        StageError::input(
            "zoo",
            format!(
                "has arch = \"{}\" ({}); canonicalisation supports cnn-s and the Model Zoos CNN-s with a 3- or 10-class head (cnn-s-c<K>-<nlin>)",
                meta.arch,
                zoo_dir.display()
            ),
        )
    };
    let names: Vec<&str> = meta.arch.strip_prefix("mixed:").map_or_else(|| vec![meta.arch.as_str()], |m| m.split(',').collect());
    let mut family = Vec::with_capacity(names.len());
    for name in names {
        match ImportArch::from_name(name) {
            Some(ImportArch::CnnS { classes, nlin }) if param_specs(classes).is_some() => family.push((classes, nlin)),
            _ => return Err(refuse()),
        }
    }
    let classes = family[0].0;
    if family.iter().any(|(c, _)| *c != classes) {
        return Err(refuse());
    }
    let specs = param_specs(classes).ok_or_else(refuse)?;
    let expected: Vec<(&str, &[usize])> = specs.iter().map(|s| (s.name, s.shape)).collect();
    let got: Vec<(&str, &[usize])> = meta.parameters.iter().map(|p| (p.name.as_str(), p.shape.as_slice())).collect();
    if got != expected {
        return Err(StageError::input(
            "zoo",
            format!(
                "is not a cnn-s zoo: {} says arch = \"{}\" but its `parameters` are not that network's ten tensors in state_dict order",
                zoo_dir.join("zoo.json").display(),
                meta.arch
            ),
        ));
    }
    Ok(family.iter().all(|(_, nlin)| *nlin == Nlin::Tanh))
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
        "permutes (and tanh-sign-flips) every cnn-s model's hidden units to a common reference, function unchanged; a zoo out"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(&[METHOD, REFERENCE, REFERENCE_CHECKPOINT, ITERATIONS, MAX_SWEEPS, SIGNS])
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![(
            "zoo",
            true,
            "a `zoo` stage (arch = \"cnn-s\"), or an imported Model Zoos CNN-s (`cnn-s-c<K>-<nlin>`)",
        )])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        Options::from_params(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let zoo_dir = ctx.input("zoo")?;
        let Some(mut opts) = Options::from_params(ctx.view())? else { return pass_through(ctx, zoo_dir) };
        opts.align.signs &= check_arch(zoo_dir)?;
        let zoo = Zoo::load(zoo_dir)?;
        run_canonicalise(ctx, &zoo, &opts)
    }
}

fn run_canonicalise(ctx: &StageContext, zoo: &Zoo, opts: &Options) -> Result<(), StageError> {
    let weights: Vec<Vec<f32>> = zoo.rows.par_iter().map(|r| zoo.flat(r)).collect::<Result<_, _>>()?;
    let expected: usize = zoo.meta.parameters.iter().map(|p| p.len()).sum();
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
                        let w = canonicalise(&weights[i], &reference, opts.align);
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
            let a = ok.then(|| align(w, &reference, opts.align));
            ctx.progress.inc(1);
            a
        })
        .collect();
    let canonical: Vec<Vec<f32>> =
        weights.iter().zip(&results).map(|(w, a)| a.as_ref().map_or_else(|| w.clone(), |a| a.alignment.apply(w))).collect();

    write_output(ctx, zoo, opts, &reference, fit_rows, &weights, &canonical, &results)
}

#[allow(clippy::too_many_arguments)]
fn write_output(
    ctx: &StageContext,
    zoo: &Zoo,
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
        crate::tensors::NamedTensors::from(CnnS::from_flat(w.clone()).named_tensors()).write(&path)
    })?;
    crate::tensors::NamedTensors::from(CnnS::from_flat(reference.to_vec()).named_tensors())
        .write(&out.join("reference.safetensors"))?;
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

    write_alignment_csv(&out.join("alignment.csv"), &zoo.rows, results)?;

    // Metrics.
    let done: Vec<usize> = (0..zoo.rows.len()).filter(|&i| results[i].is_some()).collect();
    let n = done.len().max(1) as f64;
    let dist = |set: &[Vec<f32>]| done.iter().map(|&i| l2(&set[i], reference)).sum::<f64>() / n;
    let pair_rows: Vec<usize> =
        done.iter().copied().filter(|&i| zoo.rows[i].ok() && zoo.rows[i].checkpoint == opts.checkpoint).collect();
    let pick = |set: &[Vec<f32>]| -> f64 { rms_pairwise(&pair_rows.iter().map(|&i| &set[i]).collect::<Vec<_>>()) };
    let aligned: Vec<&Aligned> = results.iter().flatten().collect();
    let mut moved = [0usize; 4];
    let mut flipped = 0usize;
    for a in &aligned {
        let m = a.alignment.moved();
        (0..4).for_each(|l| moved[l] += m[l]);
        flipped += a.alignment.flipped();
    }
    let count = aligned.len().max(1) as f64;
    let sign_units: usize = LAYERS.iter().filter(|l| l.signs).map(|l| l.units).sum();
    let by_layer: serde_json::Map<String, serde_json::Value> = LAYERS
        .iter()
        .zip(moved)
        .map(|(l, m)| (l.name.to_string(), serde_json::json!(m as f64 / (count * l.units as f64))))
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
        "units_moved": moved.iter().sum::<usize>() as f64 / (count * HIDDEN_UNITS as f64),
        "units_moved_by_layer": by_layer,
        "signs_flipped": if opts.align.signs { flipped as f64 / (count * sign_units as f64) } else { 0.0 },
        "sweeps": {
            "mean": sweeps.iter().sum::<usize>() as f64 / count,
            "max": sweeps.iter().copied().max().unwrap_or(0),
        },
        "not_converged": aligned.iter().filter(|a| !a.converged).count(),
        "skipped_non_finite": zoo.rows.len() - aligned.len(),
    });
    tensors::write_json(&out.join("metrics.json"), &metrics)
}

fn write_alignment_csv(path: &Path, rows: &[ZooRow], results: &[Option<Aligned>]) -> Result<(), StageError> {
    let join = |v: &mut dyn Iterator<Item = usize>| v.map(|x| x.to_string()).collect::<Vec<_>>().join(" ");
    let mut records = Vec::with_capacity(rows.len());
    for (row, a) in rows.iter().zip(results) {
        let (a, sweeps, converged) = match a {
            Some(r) => (r.alignment.clone(), r.sweeps.to_string(), r.converged.to_string()),
            None => (Alignment::identity(), String::new(), String::new()),
        };
        let perms: Vec<String> = a.perm.iter().map(|p| join(&mut p.iter().copied())).collect();
        let flips: Vec<String> = [2, 3].iter().map(|&l| join(&mut a.flip[l].iter().map(|&f| f as usize))).collect();
        let mut record = csv_row![row.model_id, row.checkpoint.as_str(), row.file, sweeps, converged];
        record.extend(perms.into_iter().chain(flips));
        records.push(record);
    }
    let header =
        ["model_id", "checkpoint", "file", "sweeps", "converged", "conv1", "conv2", "conv3", "fc1", "conv3_flips", "fc1_flips"];
    tensors::write_csv(path, &header, records)
}

#[cfg(test)]
#[path = "canonical_tests.rs"]
mod tests;
