//! Per-named-parameter PCA of a model zoo (the thesis's Algorithm 3.1) and the `pca` stage kind.
//!
//! # The maths
//! For each named parameter `p` (e.g. `conv1.weight`, `d_p` elements), stack that tensor of the `n`
//! *train-split* models into `X_p` (`n × d_p`) and let `T_p` be its total variance (the sum of the
//! per-element variances across models, `ddof = 1`). Then, in this order:
//! 1. `T_p < variance_threshold` → mode `constant`: store the mean `μ_p`; no coefficients; decoded as `μ_p`.
//! 2. `d_p ≤ dimension_limit` → mode `centre`: coefficients `c = w − μ_p` (`d_p` of them).
//! 3. otherwise mode `pca`: fit PCA ([`super::linalg`], equal to scikit-learn's `PCA` up to sign) with
//!    `k_p` components, coefficients `c = V_p (w − μ_p)`, decoded as `Ŵ = V_pᵀ c + μ_p`.
//!
//! `k_p` comes from the `components` parameter: an integer (every parameter), a fraction in (0, 1)
//! (the fewest components reaching that explained-variance ratio), or a table
//! `{ "fc1.weight" = 16, default = 8 }` whose values are either. `k_p` is capped at the rank bound
//! `min(n − 1, d_p)`; `pca.json` records both the request and the count used.
//!
//! Every model of the selected checkpoints (all splits, `status = ok`) gets its coefficient vector:
//! the parameters' coefficients concatenated in `state_dict` order. The autoencoder sees them
//! normalised per coordinate, `(c − m) / s`, with `m`, `s` the mean and standard deviation (`ddof = 1`,
//! floored at [`STD_FLOOR`] as the thesis does) over the *train-split* rows: the dataset-wide statistics
//! are fitted where the PCA is, so no test model informs the encoder. They are taken from the fit's own
//! `f64` coefficients of those rows (for `pca` mode, straight from the eigen-decomposition, see
//! [`super::linalg`]), not from the stored `f32` ones, which differ in the last bits.
//!
//! The thesis's code decides "constant" from the pooled within-tensor variance and fits scikit-learn's
//! `IncrementalPCA` on ≤ 256 models; we use the across-model total variance and an exact PCA (the
//! incremental one approximates it). Its `k = min(k, d − 1)` cap is our rank cap.
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `pca.safetensors` | `F32`: per parameter `<name>.mean` `[d]`; for `pca` mode also `<name>.components` `[k, d]`, `<name>.explained_variance` `[k]`, `<name>.explained_variance_ratio` `[k]`; `coefficients` `[N, D]` (raw, rows as in `pca.json`), `coefficient_mean` `[D]`, `coefficient_std` `[D]` |
//! | `pca.json` | [`PcaMeta`]: arch, checkpoints, per parameter `name`, `shape`, `mode`, `requested`, `components`, `offset` (into the coefficient vector), `total_variance`, `explained_variance_ratio` (sum); `coefficient_dim`; `rows` (`model_id`, `checkpoint`, `split`, `task_id` per coefficient row) |
//! | `metrics.json` | `explained_variance` (fraction of the train models' total weight variance kept), `coefficient_dim`, parameter counts per mode, `fit_models`, `models`, PCA-only weight-space MSE on the train / val / test rows |
//!
//! In Python: `safetensors.numpy.load_file("pca.safetensors")["conv2.weight.components"]`.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use wspace_stage_api::{params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind, Value};

use super::linalg::{self, ComponentRule};
use super::{select_rows, split_rows};
use crate::data::TaskSplit;
use crate::tensors::{self, TensorFile};
use crate::tensors::{NamedTensor, NamedTensors};
use crate::zoo::store::{Checkpoint, ParamShape, RowRef, Zoo};

/// The smallest standard deviation used to normalise a coefficient (the thesis's `clamp_min(1e-4)`).
pub const STD_FLOOR: f32 = 1e-4;

/// How a parameter is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Below the variance threshold: the mean only.
    Constant,
    /// At most `dimension_limit` elements: centred, every element a coefficient.
    Centre,
    /// Projected on `k` principal components.
    Pca,
}

/// The `components` parameter, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentSpec {
    default: Option<ComponentRule>,
    per_param: BTreeMap<String, ComponentRule>,
}

fn rule_of(v: &Value, what: &str) -> Result<ComponentRule, StageError> {
    match v {
        Value::Int(k) if *k >= 1 => Ok(ComponentRule::Count(*k as usize)),
        Value::Float(f) if *f > 0.0 && *f < 1.0 => Ok(ComponentRule::Fraction(*f)),
        Value::Float(f) if *f >= 1.0 && f.fract() == 0.0 => Ok(ComponentRule::Count(*f as usize)),
        other => Err(StageError::param(
            "components",
            format!("{what}expected a count ≥ 1 or a variance fraction in (0, 1), found {other}"),
        )),
    }
}

impl ComponentSpec {
    /// One rule for every parameter.
    pub fn all(rule: ComponentRule) -> Self {
        ComponentSpec { default: Some(rule), per_param: BTreeMap::new() }
    }

    /// From the stage parameter: `8`, `0.9`, or `{ "fc1.weight" = 16, default = 8 }`.
    pub fn parse(v: &Value) -> Result<Self, StageError> {
        match v {
            Value::Table(t) => {
                let mut spec = ComponentSpec { default: None, per_param: BTreeMap::new() };
                for (name, v) in t {
                    let rule = rule_of(v, &format!("(`{name}`): "))?;
                    if name == "default" {
                        spec.default = Some(rule);
                    } else {
                        spec.per_param.insert(name.clone(), rule);
                    }
                }
                Ok(spec)
            }
            v => Ok(Self::all(rule_of(v, "")?)),
        }
    }

    fn rule(&self, name: &str) -> Result<ComponentRule, StageError> {
        self.per_param
            .get(name)
            .copied()
            .or(self.default)
            .ok_or_else(|| StageError::param("components", format!("gives no count for `{name}` (add it, or a `default` entry)")))
    }

    /// Requested count as recorded in `pca.json` (a fraction is recorded as 0).
    fn requested(&self, name: &str) -> Result<(usize, Option<f64>), StageError> {
        Ok(match self.rule(name)? {
            ComponentRule::Count(k) => (k, None),
            ComponentRule::Fraction(f) => (0, Some(f)),
        })
    }
}

/// Algorithm 3.1's knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct PcaOptions {
    pub components: ComponentSpec,
    pub variance_threshold: f64,
    pub dimension_limit: usize,
    pub checkpoints: Vec<Checkpoint>,
}

impl Default for PcaOptions {
    fn default() -> Self {
        PcaOptions {
            components: ComponentSpec::all(ComponentRule::Count(8)),
            variance_threshold: 1e-8,
            dimension_limit: 4,
            checkpoints: vec![Checkpoint::Final],
        }
    }
}

/// One named parameter's encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamPca {
    pub name: String,
    pub shape: Vec<usize>,
    pub mode: Mode,
    /// `d` (as f32, the stored precision).
    pub mean: Vec<f32>,
    /// `k × d`, row-major (empty unless `Pca`).
    pub components: Vec<f32>,
    pub explained_variance: Vec<f32>,
    pub explained_variance_ratio: Vec<f32>,
    /// Offset of this parameter's coefficients in the concatenated vector.
    pub offset: usize,
}

impl ParamPca {
    pub fn len(&self) -> usize {
        self.mean.len()
    }
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }
    /// Number of coefficients this parameter contributes.
    pub fn coefficient_count(&self) -> usize {
        match self.mode {
            Mode::Constant => 0,
            Mode::Centre => self.len(),
            Mode::Pca => self.explained_variance.len(),
        }
    }

    /// Writes this parameter's coefficients of `w` into `out` (length [`Self::coefficient_count`]).
    fn encode(&self, w: &[f32], out: &mut [f32]) {
        match self.mode {
            Mode::Constant => {}
            Mode::Centre => out.iter_mut().zip(w.iter().zip(&self.mean)).for_each(|(o, (w, m))| *o = w - m),
            Mode::Pca => {
                let d = self.len();
                for (o, v) in out.iter_mut().zip(self.components.chunks_exact(d)) {
                    *o = v
                        .iter()
                        .zip(w.iter().zip(&self.mean))
                        .map(|(v, (w, m))| *v as f64 * (*w as f64 - *m as f64))
                        .sum::<f64>() as f32;
                }
            }
        }
    }

    /// `Ŵ` from this parameter's coefficients.
    fn decode(&self, c: &[f32]) -> Vec<f32> {
        match self.mode {
            Mode::Constant => self.mean.clone(),
            Mode::Centre => c.iter().zip(&self.mean).map(|(c, m)| c + m).collect(),
            Mode::Pca => {
                let d = self.len();
                let mut w: Vec<f64> = self.mean.iter().map(|&m| m as f64).collect();
                for (ci, v) in c.iter().zip(self.components.chunks_exact(d)) {
                    w.iter_mut().zip(v).for_each(|(w, v)| *w += *ci as f64 * *v as f64);
                }
                w.into_iter().map(|w| w as f32).collect()
            }
        }
    }
}

/// A fitted per-parameter PCA plus the coefficient normalisation: everything needed to encode and
/// decode weights of the zoo's architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightPca {
    pub arch: String,
    pub params: Vec<ParamPca>,
    /// Per-coordinate normalisation `(c − mean) / std`, fitted on the train rows.
    pub coefficient_mean: Vec<f32>,
    pub coefficient_std: Vec<f32>,
}

impl WeightPca {
    /// Length of the concatenated coefficient vector.
    pub fn coefficient_dim(&self) -> usize {
        self.params.iter().map(ParamPca::coefficient_count).sum()
    }

    /// Raw (unnormalised) coefficients of one model's named tensors (matched by name, shapes checked).
    pub fn encode(&self, weights: &NamedTensors) -> Result<Vec<f32>, StageError> {
        let mut out = vec![0.0; self.coefficient_dim()];
        for p in &self.params {
            let t = weights.get(&p.name).ok_or_else(|| StageError::msg(format!("weights have no tensor `{}`", p.name)))?;
            if t.shape != p.shape || t.values.len() != p.len() {
                return Err(StageError::msg(format!(
                    "tensor `{}` has shape {:?}, the PCA expects {:?}",
                    p.name, t.shape, p.shape
                )));
            }
            p.encode(&t.values, &mut out[p.offset..p.offset + p.coefficient_count()]);
        }
        Ok(out)
    }

    /// Named tensors (`state_dict` order) from raw coefficients.
    pub fn decode(&self, coefficients: &[f32]) -> Result<NamedTensors, StageError> {
        if coefficients.len() != self.coefficient_dim() {
            return Err(StageError::msg(format!(
                "coefficient vector has {} values, the PCA has {}",
                coefficients.len(),
                self.coefficient_dim()
            )));
        }
        Ok(self
            .params
            .iter()
            .map(|p| {
                NamedTensor::new(
                    p.name.clone(),
                    p.shape.clone(),
                    p.decode(&coefficients[p.offset..p.offset + p.coefficient_count()]),
                )
            })
            .collect())
    }

    /// `(c − mean) / std` per coordinate.
    pub fn normalise(&self, c: &[f32]) -> Vec<f32> {
        c.iter().zip(self.coefficient_mean.iter().zip(&self.coefficient_std)).map(|(c, (m, s))| (c - m) / s).collect()
    }

    /// Inverse of [`Self::normalise`].
    pub fn denormalise(&self, z: &[f32]) -> Vec<f32> {
        z.iter().zip(self.coefficient_mean.iter().zip(&self.coefficient_std)).map(|(z, (m, s))| z * s + m).collect()
    }

    /// The flat weights (parameters concatenated in `params` order) decoded from normalised
    /// coefficients `z`: the linear map `z → w` of [`Self::denormalise`] then [`Self::decode`].
    pub fn normalised_to_flat(&self, z: &[f32]) -> Vec<f32> {
        let c = self.denormalise(z);
        self.params.iter().flat_map(|p| p.decode(&c[p.offset..p.offset + p.coefficient_count()])).collect()
    }

    /// Pulls a gradient with respect to the flat weights back to the normalised coefficients: the
    /// transpose of [`Self::normalised_to_flat`]'s linear part, `∂ℓ/∂z_j = s_j · (V_p ∂ℓ/∂w_p)_j`
    /// (`pca` mode), `s_j · ∂ℓ/∂w_j` (`centre`), nothing (`constant`).
    pub fn flat_gradient_to_normalised(&self, grad: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; self.coefficient_dim()];
        let mut at = 0;
        for p in &self.params {
            let g = &grad[at..at + p.len()];
            at += p.len();
            let o = &mut out[p.offset..p.offset + p.coefficient_count()];
            match p.mode {
                Mode::Constant => {}
                Mode::Centre => o.copy_from_slice(g),
                Mode::Pca => {
                    for (o, v) in o.iter_mut().zip(p.components.chunks_exact(p.len())) {
                        *o = v.iter().zip(g).map(|(v, g)| *v as f64 * *g as f64).sum::<f64>() as f32;
                    }
                }
            }
        }
        out.iter_mut().zip(&self.coefficient_std).for_each(|(o, s)| *o *= s);
        out
    }

    /// Total element count of the weights (all parameters).
    pub fn weight_count(&self) -> usize {
        self.params.iter().map(ParamPca::len).sum()
    }

    /// Fits Algorithm 3.1 on the rows of `train` (each a model's weights, flat, in `parameters` order)
    /// and the normalisation on their coefficients.
    pub fn fit(
        arch: &str,
        parameters: &[ParamShape],
        train: &[Vec<f32>],
        opts: &PcaOptions,
    ) -> Result<(WeightPca, FitReport), StageError> {
        let n = train.len();
        if n < 2 {
            return Err(StageError::msg(format!("pca: needs at least 2 train-split models to fit, found {n}")));
        }
        // The per-parameter fits are independent: compute them in parallel, then assemble in order.
        let starts: Vec<usize> = parameters.iter().scan(0, |o, s| Some(std::mem::replace(o, *o + s.len()))).collect();
        let fits = parameters
            .par_iter()
            .zip(starts)
            .map(|(shape, start)| -> Result<_, StageError> {
                wspace_stage_api::check_stop()?;
                let d = shape.len();
                let mut x = Vec::with_capacity(n * d);
                train.iter().for_each(|w| x.extend(w[start..start + d].iter().map(|&v| v as f64)));
                let centred = linalg::Centred::new(x, n, d);
                let total = centred.total_variance;
                let mut p = ParamPca {
                    name: shape.name.clone(),
                    shape: shape.shape.clone(),
                    mode: Mode::Centre,
                    mean: centred.mean.iter().map(|&m| m as f32).collect(),
                    components: Vec::new(),
                    explained_variance: Vec::new(),
                    explained_variance_ratio: Vec::new(),
                    offset: 0,
                };
                // The variance kept, and the train rows' coefficients (`n × coefficient_count`, row-major).
                let (kept, coefficients) = if total < opts.variance_threshold {
                    p.mode = Mode::Constant;
                    (0.0, Vec::new())
                } else if d <= opts.dimension_limit {
                    (total, centred.rows)
                } else {
                    let fit = centred.fit(opts.components.rule(&shape.name)?);
                    p.mode = Mode::Pca;
                    p.components = fit.components.iter().map(|&v| v as f32).collect();
                    p.explained_variance = fit.explained_variance.iter().map(|&v| v as f32).collect();
                    p.explained_variance_ratio = fit.explained_variance_ratio().iter().map(|&v| v as f32).collect();
                    (fit.explained_variance.iter().sum(), fit.coefficients)
                };
                let (mean, std) = normalisation(&coefficients, p.coefficient_count());
                Ok((p, total, kept, mean, std))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut pca =
            WeightPca { arch: arch.to_string(), params: Vec::new(), coefficient_mean: Vec::new(), coefficient_std: Vec::new() };
        let mut report = FitReport::default();
        for (mut p, total, kept, mean, std) in fits {
            p.offset = pca.coefficient_dim();
            let (requested, fraction) = opts.components.requested(&p.name)?;
            report.total_variance += total;
            report.kept_variance += kept;
            report.params.push(ParamReport {
                name: p.name.clone(),
                shape: p.shape.clone(),
                mode: p.mode,
                requested,
                fraction,
                components: p.coefficient_count(),
                offset: p.offset,
                total_variance: total,
                explained_variance_ratio: if total > 0.0 { kept / total } else { 1.0 },
            });
            pca.coefficient_mean.extend(mean);
            pca.coefficient_std.extend(std);
            pca.params.push(p);
        }
        Ok((pca, report))
    }

    /// Raw coefficients of many flat weight vectors (`rows.len() × coefficient_dim`, row-major); the
    /// projections are one matrix product per parameter.
    pub fn encode_rows(&self, rows: &[Vec<f32>]) -> Vec<f32> {
        let (m, dim) = (rows.len(), self.coefficient_dim());
        let starts: Vec<usize> = self.params.iter().scan(0, |o, p| Some(std::mem::replace(o, *o + p.len()))).collect();
        // Each parameter's `m × k` block, computed in parallel, then placed in its columns.
        let blocks: Vec<Vec<f32>> = self
            .params
            .par_iter()
            .zip(starts)
            .map(|(p, at)| {
                let (d, k) = (p.len(), p.coefficient_count());
                match p.mode {
                    Mode::Constant => Vec::new(),
                    Mode::Centre => {
                        let mut block = vec![0.0f32; m * k];
                        for (w, o) in rows.iter().zip(block.chunks_exact_mut(k.max(1))) {
                            p.encode(&w[at..at + d], o);
                        }
                        block
                    }
                    Mode::Pca => {
                        let x: Vec<f64> = rows.iter().flat_map(|w| w[at..at + d].iter().map(|&v| v as f64)).collect();
                        let mean: Vec<f64> = p.mean.iter().map(|&v| v as f64).collect();
                        let v: Vec<f64> = p.components.iter().map(|&v| v as f64).collect();
                        linalg::project(&x, m, &mean, &v, k).into_iter().map(|c| c as f32).collect()
                    }
                }
            })
            .collect();
        let mut out = vec![0.0f32; m * dim];
        for (p, block) in self.params.iter().zip(&blocks) {
            let k = p.coefficient_count();
            if k == 0 {
                continue;
            }
            for (r, src) in block.chunks_exact(k).enumerate() {
                out[r * dim + p.offset..r * dim + p.offset + k].copy_from_slice(src);
            }
        }
        out
    }

    /// Reads a `pca` stage's output (parameters and normalisation; not the per-model coefficients).
    pub fn load(dir: &Path) -> Result<WeightPca, StageError> {
        let meta: PcaMeta = tensors::read_json(&dir.join("pca.json"))?;
        let file = TensorFile::open(&dir.join("pca.safetensors"))?;
        let take = |name: &str, want: &[usize]| file.f32_shaped(name, want, "pca.json");
        let mut params = Vec::with_capacity(meta.parameters.len());
        for p in &meta.parameters {
            let d: usize = p.shape.iter().product();
            let mean = take(&format!("{}.mean", p.name), &[d])?;
            let (components, explained_variance, explained_variance_ratio) = if p.mode == Mode::Pca {
                (
                    take(&format!("{}.components", p.name), &[p.components, d])?,
                    take(&format!("{}.explained_variance", p.name), &[p.components])?,
                    take(&format!("{}.explained_variance_ratio", p.name), &[p.components])?,
                )
            } else {
                Default::default()
            };
            params.push(ParamPca {
                name: p.name.clone(),
                shape: p.shape.clone(),
                mode: p.mode,
                mean,
                components,
                explained_variance,
                explained_variance_ratio,
                offset: p.offset,
            });
        }
        let dim = meta.coefficient_dim;
        let pca = WeightPca {
            arch: meta.arch.clone(),
            params,
            coefficient_mean: take("coefficient_mean", &[dim])?,
            coefficient_std: take("coefficient_std", &[dim])?,
        };
        let mut at = 0;
        for p in &pca.params {
            if p.offset != at {
                return Err(StageError::msg(format!(
                    "{}: `{}` has offset {}, expected {at}",
                    dir.join("pca.json").display(),
                    p.name,
                    p.offset
                )));
            }
            at += p.coefficient_count();
        }
        if at != dim {
            return Err(StageError::msg(format!(
                "{}: coefficient_dim {dim} but parameters give {at}",
                dir.join("pca.json").display()
            )));
        }
        Ok(pca)
    }
}

/// The normalisation of `k` coefficients from their values on the train rows (`n × k`, row-major, `n ≥ 2`):
/// per column the mean and the standard deviation (`ddof = 1`, floored at [`STD_FLOOR`]).
fn normalisation(coefficients: &[f64], k: usize) -> (Vec<f32>, Vec<f32>) {
    if k == 0 {
        return (Vec::new(), Vec::new());
    }
    let n = (coefficients.len() / k) as f64;
    let mut mean = vec![0.0f64; k];
    coefficients.chunks_exact(k).for_each(|c| mean.iter_mut().zip(c).for_each(|(m, c)| *m += c / n));
    let mut var = vec![0.0f64; k];
    coefficients
        .chunks_exact(k)
        .for_each(|c| var.iter_mut().zip(c.iter().zip(&mean)).for_each(|(v, (c, m))| *v += (c - m).powi(2)));
    (mean.iter().map(|&m| m as f32).collect(), var.iter().map(|v| ((v / (n - 1.0)).sqrt() as f32).max(STD_FLOOR)).collect())
}

/// What a fit kept, per parameter (the `parameters` list of `pca.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    pub params: Vec<ParamReport>,
    pub total_variance: f64,
    pub kept_variance: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamReport {
    pub name: String,
    pub shape: Vec<usize>,
    pub mode: Mode,
    /// The requested count (0 when a fraction was requested).
    pub requested: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Coefficients used (`k` for `pca`, `d` for `centre`, 0 for `constant`).
    pub components: usize,
    pub offset: usize,
    pub total_variance: f64,
    /// Kept fraction of this parameter's variance.
    pub explained_variance_ratio: f64,
}

/// `pca.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaMeta {
    pub arch: String,
    pub checkpoints: Vec<Checkpoint>,
    pub variance_threshold: f64,
    pub dimension_limit: usize,
    pub fit_models: usize,
    pub coefficient_dim: usize,
    pub total_variance: f64,
    pub explained_variance: f64,
    pub parameters: Vec<ParamReport>,
    pub rows: Vec<RowRef>,
}

/// The per-model coefficients written by a `pca` stage, with their rows.
#[derive(Debug, Clone)]
pub struct Coefficients {
    pub meta: PcaMeta,
    /// `rows × coefficient_dim`, raw.
    pub values: Vec<f32>,
}

impl Coefficients {
    pub fn load(dir: &Path) -> Result<Coefficients, StageError> {
        let meta: PcaMeta = tensors::read_json(&dir.join("pca.json"))?;
        let file = TensorFile::open(&dir.join("pca.safetensors"))?;
        let values = file.f32_shaped("coefficients", &[meta.rows.len(), meta.coefficient_dim], "pca.json")?;
        Ok(Coefficients { meta, values })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.meta.coefficient_dim;
        &self.values[i * d..(i + 1) * d]
    }

    /// Indices of the rows of one split.
    pub fn split(&self, split: TaskSplit) -> Vec<usize> {
        self.meta.rows.iter().enumerate().filter(|(_, r)| r.split == split).map(|(i, _)| i).collect()
    }
}

/// Mean squared error between two equally long vectors (NaN for empty input).
pub(crate) fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>() / a.len() as f64
}

/// Fits on `zoo` and writes the stage output into `out`; returns the metrics written.
pub fn run_pca(zoo: &Zoo, opts: &PcaOptions, out: &Path) -> Result<serde_json::Value, StageError> {
    let rows = select_rows(zoo, &opts.checkpoints);
    let weights: Vec<Vec<f32>> = rows.iter().map(|r| zoo.flat(r)).collect::<Result<_, _>>()?;
    let train: Vec<Vec<f32>> = split_rows(&rows, TaskSplit::Train).into_iter().map(|i| weights[i].clone()).collect();
    let (pca, report) = WeightPca::fit(&zoo.meta.arch, &zoo.meta.parameters, &train, opts)?;
    let dim = pca.coefficient_dim();
    let coefficients: Vec<f32> = pca.encode_rows(&weights);

    // Tensors.
    let mut tensors = NamedTensors::new();
    for p in &pca.params {
        tensors.push(format!("{}.mean", p.name), vec![p.len()], p.mean.clone());
        if p.mode == Mode::Pca {
            let k = p.explained_variance.len();
            tensors.push(format!("{}.components", p.name), vec![k, p.len()], p.components.clone());
            tensors.push(format!("{}.explained_variance", p.name), vec![k], p.explained_variance.clone());
            tensors.push(format!("{}.explained_variance_ratio", p.name), vec![k], p.explained_variance_ratio.clone());
        }
    }
    tensors.push("coefficients", vec![rows.len(), dim], coefficients.clone());
    tensors.push("coefficient_mean", vec![dim], pca.coefficient_mean.clone());
    tensors.push("coefficient_std", vec![dim], pca.coefficient_std.clone());
    tensors.write(&out.join("pca.safetensors"))?;

    let explained = if report.total_variance > 0.0 { report.kept_variance / report.total_variance } else { 1.0 };
    let meta = PcaMeta {
        arch: zoo.meta.arch.clone(),
        checkpoints: opts.checkpoints.clone(),
        variance_threshold: opts.variance_threshold,
        dimension_limit: opts.dimension_limit,
        fit_models: train.len(),
        coefficient_dim: dim,
        total_variance: report.total_variance,
        explained_variance: explained,
        parameters: report.params.clone(),
        rows: rows.iter().map(|r| r.reference()).collect(),
    };
    tensors::write_json(&out.join("pca.json"), &meta)?;

    // PCA-only reconstruction error in weight space, per split.
    let mut split_mse = serde_json::Map::new();
    for split in TaskSplit::ALL {
        let idx = split_rows(&rows, split);
        let mut total = 0.0;
        for &i in &idx {
            let back: Vec<f32> = pca.decode(&coefficients[i * dim..(i + 1) * dim])?.flat();
            total += mse(&weights[i], &back);
        }
        let v = if idx.is_empty() { serde_json::Value::Null } else { serde_json::json!(total / idx.len() as f64) };
        split_mse.insert(format!("weight_mse_{}", split.as_str()), v);
    }
    let count = |m: Mode| report.params.iter().filter(|p| p.mode == m).count();
    let mut metrics = serde_json::json!({
        "explained_variance": explained,
        "coefficient_dim": dim,
        "pca_parameters": count(Mode::Pca),
        "centre_parameters": count(Mode::Centre),
        "constant_parameters": count(Mode::Constant),
        "fit_models": train.len(),
        "models": rows.len(),
    });
    if let serde_json::Value::Object(m) = &mut metrics {
        m.extend(split_mse);
    }
    tensors::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

params! {
    COMPONENTS = "components": Any(Int) = 8, "components per parameter: a count, a variance fraction in (0, 1), or a table { name = k, default = k }";
    VARIANCE_THRESHOLD = "variance_threshold": Float = 1e-8, "total variance below this → store the mean only";
    DIMENSION_LIMIT = "dimension_limit": Int = 4, "parameters with at most this many elements are centred, not projected";
    CHECKPOINTS = "checkpoints": [choice(Checkpoint)] = ["final"], "which checkpoints are encoded (and fitted, train split)";
}

/// `kind = "pca"`: see the [module doc](self).
pub struct PcaKind;

impl PcaOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        let mut checkpoints = p.choice_list::<Checkpoint>(&CHECKPOINTS)?;
        if checkpoints.is_empty() {
            return Err(StageError::param(CHECKPOINTS.name, "must name at least one of \"early\", \"final\""));
        }
        checkpoints.sort();
        Ok(PcaOptions {
            components: ComponentSpec::parse(p.value(&COMPONENTS)?)?,
            variance_threshold: p.non_negative(&VARIANCE_THRESHOLD)?,
            dimension_limit: p.count(&DIMENSION_LIMIT)?,
            checkpoints,
        })
    }
}

impl StageKind for PcaKind {
    fn name(&self) -> &'static str {
        "pca"
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "per-named-parameter PCA of the zoo's weights (Algorithm 3.1), fitted on the train split"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(&[COMPONENTS, VARIANCE_THRESHOLD, DIMENSION_LIMIT, CHECKPOINTS])
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![("zoo", true, "a `zoo` stage")])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        PcaOptions::from_params(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = PcaOptions::from_params(ctx.view())?;
        let zoo = Zoo::load(ctx.input("zoo")?)?;
        ctx.progress.message("fitting per-parameter PCA");
        run_pca(&zoo, &opts, ctx.out)?;
        Ok(())
    }
}
