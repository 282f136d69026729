//! The `evaluate-samples` stage: every sample on its task's real test images (pixels/255, labels in the
//! task's output order), against baselines on the same images.
//!
//! # Per sample
//! - `sample`: the decoded model: test `loss`, `accuracy`.
//! - `trained_final`, `trained_early`: the zoo's own models of that task (mean over its `ok` rows of that
//!   checkpoint; empty when the task has none).
//! - `nn`: the nearest train-split pair of the align stage (`pairs.csv`) to the sample's prompt, by
//!   `‖d − d'‖² / dim + ((target − val_loss') / (loss_max − loss_min))²` with `d` the standardised task
//!   embeddings (the align stage's statistics): that zoo model's own weights (trained on other classes:
//!   test tasks' class triplets are held out). Retrieval, the baseline a generator must beat.
//! - `nn_noise`: the same weights plus Gaussian noise, `noise` × each tensor's standard deviation.
//! - `random`: PyTorch's default initialisation, `U(−1/√fan_in, 1/√fan_in)` for every tensor (a bias
//!   takes its layer's weight's fan-in), ChaCha8 seeded with `seed` and the sample index.
//! - `nn_decoded` (with the `pca` and `autoencoder` inputs): the neighbour's own weight latent through
//!   the decoder — retrieval in latent space, limited by the same decoder as the samples.
//! - `own_decoded` (same inputs): the task's own final zoo models' latents, decoded (mean over them; NaN
//!   when the task has none) — what a perfect alignment would sample, the decoder's ceiling.
//! - `row_selection` (with the `row_selection` input, a `multiclass` stage): each of its many-class
//!   models with the head rows of the sample's classes in the sample's order
//!   ([`crate::nn::CnnS::select_rows`]); mean over its models.
//! - diversity: the mean over prompts with ≥ 2 draws of the mean pairwise prediction disagreement
//!   (fraction of the images on which two draws' argmax differ) among the prompt's draws; NaN with one
//!   draw per prompt.
//! - `nn_agreement`: the fraction of images on which the sample and its nearest neighbour predict the
//!   same class (are the samples copies of training models?).
//! - `nn_noise_matched`: NN + noise at the samples' accuracy: the noise scale (bisection on `[0, 4]`,
//!   12 steps) at which the mean accuracy of the noisy neighbours equals the samples' mean accuracy
//!   (0 when the samples are as accurate as the neighbours), with its loss, diversity and
//!   `nn_agreement` measured as the samples' are (each sample's noise seeded by its index, so the draws
//!   of a prompt get different noise).
//! - class order: the sample's `accuracy` against `permuted_accuracy`, the mean accuracy over the 5
//!   non-identity permutations of the labels of the same images. A sample that uses its prompt's class
//!   order scores higher on the true order.
//! - target vs achieved: the sample's test loss against its target loss: `prompt_r2` is the coefficient
//!   of determination of "achieved = target" (1 − SS_res / SS_tot, can be negative), `prompt_pearson`
//!   the correlation; non-finite losses are left out.
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `evaluation.csv` | one row per sample: `sample,prompt,task_id,target_loss,loss,accuracy,permuted_accuracy,nn_agreement,trained_final_loss,trained_final_accuracy,trained_early_loss,trained_early_accuracy,row_selection_loss,row_selection_accuracy,nn_model_id,nn_checkpoint,nn_loss,nn_accuracy,nn_noise_loss,nn_noise_accuracy,random_loss,random_accuracy,nn_decoded_loss,nn_decoded_accuracy,own_decoded_loss,own_decoded_accuracy` |
//! | `target_vs_achieved.svg` | x = target loss, y = achieved test loss: samples (blue dots), identity (grey line); titled axes, legend |
//! | `accuracy.svg` | per-sample accuracy sorted (x = rank): sample blue, nn orange, nn_noise green, random grey, trained_final red; legend |
//! | `metrics.json` | per variant mean `loss` (finite ones), `accuracy` (`row_selection` only with its input); `diversity`, `nn_agreement`, `nn_noise_matched.{noise, loss, accuracy, diversity, nn_agreement}`, `prompt_r2`, `prompt_pearson`, `order.{accuracy, permuted_accuracy}`, `order_gap` (their difference), `sample_beats_nn` (fraction of samples more accurate than their neighbour), counts |

use std::collections::BTreeMap;
use std::path::Path;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::json;
use wspace_stage_api::{params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use super::align::task_embeddings;
use super::model::Aligner;
use super::sample::{load_samples, SampleRow};
use crate::data::{Dataset, TaskSplit, Tasks};
use crate::nn::CnnS;
use crate::plot::{self, Chart, Series};
use crate::sampling::{normal_f32, uniform_in};
use crate::tensors::{self, csv_row, NamedTensor, NamedTensors, TensorFile};
use crate::weights::{codec, Network};
use crate::zoo::multiclass;
use crate::zoo::store::{Checkpoint, Zoo, ZooRow};

/// Loss and accuracy; NaN when absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub loss: f64,
    pub accuracy: f64,
}

impl Score {
    const NONE: Score = Score { loss: f64::NAN, accuracy: f64::NAN };
}

/// One sample's evaluation.
#[derive(Debug, Clone)]
pub struct SampleEval {
    pub sample: Score,
    pub permuted_accuracy: f64,
    pub trained_final: Score,
    pub trained_early: Score,
    pub row_selection: Score,
    pub nn: Score,
    pub nn_row: (usize, Checkpoint),
    pub nn_noise: Score,
    pub random: Score,
    /// The neighbour's own weight latent, decoded (NaN without the codec inputs).
    pub nn_decoded: Score,
    /// The task's own final zoo models' weight latents, decoded: what a perfect alignment would sample.
    pub own_decoded: Score,
    /// The sample's argmax on each image.
    pub predictions: Vec<u8>,
    /// Agreement of `predictions` with the nearest neighbour's.
    pub nn_agreement: f64,
}

/// The 5 non-identity permutations of 3 labels.
const PERMUTATIONS: [[u8; 3]; 5] = [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

fn argmax(v: &[f32; 3]) -> u8 {
    let mut best = 0;
    for k in 1..3 {
        if v[k] > v[best] {
            best = k;
        }
    }
    best as u8
}

/// Mean accuracy of `logits` over the non-identity relabellings `label → π[label]`.
pub fn permuted_accuracy(logits: &[[f32; 3]], labels: &[u8]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    let pred: Vec<u8> = logits.iter().map(argmax).collect();
    let per = |p: &[u8; 3]| pred.iter().zip(labels).filter(|(a, &l)| **a == p[l as usize]).count() as f64 / labels.len() as f64;
    PERMUTATIONS.iter().map(per).sum::<f64>() / PERMUTATIONS.len() as f64
}

/// PyTorch-default initialisation of named tensors of these shapes (see the module doc).
pub fn random_init(shapes: &[(String, Vec<usize>)], seed: u64) -> NamedTensors {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fan_in = 1;
    shapes
        .iter()
        .map(|(name, shape)| {
            if shape.len() >= 2 {
                fan_in = shape[1..].iter().product::<usize>().max(1);
            }
            let bound = 1.0 / (fan_in as f32).sqrt();
            let n: usize = shape.iter().product();
            NamedTensor::new(name.clone(), shape.clone(), (0..n).map(|_| uniform_in(&mut rng, bound)).collect())
        })
        .collect()
}

/// `weights` plus Gaussian noise of `scale` × each tensor's standard deviation.
pub fn add_noise(weights: &NamedTensors, scale: f64, seed: u64) -> NamedTensors {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    weights
        .iter()
        .map(|t| {
            let v = &t.values;
            let n = v.len().max(1) as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let sd = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            let s = (scale * sd) as f32;
            NamedTensor::new(t.name.clone(), t.shape.clone(), v.iter().map(|&x| x + s * normal_f32(&mut rng)).collect())
        })
        .collect()
}

/// Fraction of positions where `a` and `b` agree.
pub fn agreement(a: &[u8], b: &[u8]) -> f64 {
    if a.is_empty() {
        return f64::NAN;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// Mean over the groups with ≥ 2 members of the mean pairwise disagreement of their predictions
/// (`groups`: a group id per prediction vector); NaN when no group has two members.
pub fn diversity(groups: &[usize], predictions: &[&[u8]]) -> f64 {
    let mut by: BTreeMap<usize, Vec<&[u8]>> = BTreeMap::new();
    for (g, p) in groups.iter().zip(predictions) {
        by.entry(*g).or_default().push(p);
    }
    let per: Vec<f64> = by
        .values()
        .filter(|m| m.len() >= 2)
        .map(|m| {
            let mut sum = 0.0;
            let mut pairs = 0usize;
            for i in 0..m.len() {
                for j in i + 1..m.len() {
                    sum += 1.0 - agreement(m[i], m[j]);
                    pairs += 1;
                }
            }
            sum / pairs as f64
        })
        .collect();
    if per.is_empty() {
        f64::NAN
    } else {
        per.iter().sum::<f64>() / per.len() as f64
    }
}

/// Argmax (first maximum) per row of 3 logits.
fn predictions(logits: &[[f32; 3]]) -> Vec<u8> {
    logits.iter().map(argmax).collect()
}

/// `(achieved = target)`'s coefficient of determination and the Pearson correlation, finite pairs only.
pub fn r2_and_pearson(target: &[f64], achieved: &[f64]) -> (f64, f64) {
    let pts: Vec<(f64, f64)> =
        target.iter().zip(achieved).filter(|(a, b)| a.is_finite() && b.is_finite()).map(|(a, b)| (*a, *b)).collect();
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let (mx, my) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
    let ss_tot: f64 = pts.iter().map(|p| (p.1 - my).powi(2)).sum();
    let ss_res: f64 = pts.iter().map(|p| (p.1 - p.0).powi(2)).sum();
    let cov: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>().sqrt();
    let r2 = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { f64::NAN };
    (r2, cov / (sx * ss_tot.sqrt()).max(1e-300))
}

fn score(arch: &str, weights: &NamedTensors, images: &[u8], labels: &[u8]) -> Result<Score, StageError> {
    let e = Network::build(arch, weights)?.evaluate(images, labels)?;
    Ok(Score { loss: e.loss, accuracy: e.accuracy })
}

fn mean_score(scores: &[Score]) -> Score {
    if scores.is_empty() {
        return Score::NONE;
    }
    let n = scores.len() as f64;
    Score { loss: scores.iter().map(|s| s.loss).sum::<f64>() / n, accuracy: scores.iter().map(|s| s.accuracy).sum::<f64>() / n }
}

/// A train-split row of the align stage's `pairs.csv`.
#[derive(Debug, Clone, serde::Deserialize)]
struct PairRow {
    row: usize,
    model_id: usize,
    checkpoint: Checkpoint,
    split: TaskSplit,
    task_id: usize,
    val_loss: f64,
}

pub struct Inputs6<'a> {
    pub samples: &'a Path,
    pub align: &'a Path,
    pub zoo: &'a Path,
    pub tasks: &'a Path,
    pub data: &'a Path,
    pub embed: &'a Path,
    /// Both or neither: the weight codec, for the decoded-latent references.
    pub codec: Option<(&'a Path, &'a Path)>,
    /// A `multiclass` stage: the row-selection baseline.
    pub row_selection: Option<&'a Path>,
}

pub fn run_evaluate(dirs: &Inputs6, noise: f64, seed: u64, out: &Path) -> Result<serde_json::Value, StageError> {
    let samples = load_samples(dirs.samples)?;
    let zoo = Zoo::load(dirs.zoo)?;
    let arch = zoo.meta.arch.clone();
    let al = Aligner::load(dirs.align)?;
    let tasks = Tasks::load(dirs.tasks)?;
    let data = Dataset::load(dirs.data)?;
    let (emb, dim) = task_embeddings(dirs.embed)?;
    let path = dirs.align.join("pairs.csv");
    let mut reader = csv::Reader::from_path(&path).map_err(|e| StageError::msg(format!("{}: {e}", path.display())))?;
    let all_pairs: Vec<PairRow> = reader
        .deserialize()
        .collect::<Result<Vec<PairRow>, _>>()
        .map_err(|e| StageError::msg(format!("{}: {e}", path.display())))?;
    let pairs: Vec<&PairRow> = all_pairs.iter().filter(|p| p.split == TaskSplit::Train).collect();
    let codec = match dirs.codec {
        Some((pca, ae)) => {
            let codec = codec::load(pca, ae)?;
            let file = TensorFile::open(&ae.join("latents.safetensors"))?;
            let latents = file.f32_all()?.take("latents").map(|t| t.values).unwrap_or_default();
            if latents.len() != all_pairs.len() * codec.latent_dim() {
                return Err(StageError::input(
                    "autoencoder",
                    format!(
                        "is not the align stage's: {} has {} latent values for {} pairs",
                        file.path(),
                        latents.len(),
                        all_pairs.len()
                    ),
                ));
            }
            Some((codec, latents))
        }
        None => None,
    };
    // The decoded weight latent of a pairs.csv row, scored.
    let decoded = |row: usize, images: &[u8], labels: &[u8]| -> Result<Score, StageError> {
        let Some((codec, latents)) = &codec else { return Ok(Score::NONE) };
        let k = codec.latent_dim();
        let w = codec.decode(&latents[row * k..(row + 1) * k])?.pop().unwrap_or_default();
        score(&arch, &w, images, labels)
    };
    if pairs.is_empty() {
        return Err(StageError::msg(format!("{}: no train-split pairs for the nearest-neighbour baseline", path.display())));
    }
    let multi: Vec<CnnS> = match dirs.row_selection {
        Some(d) => multiclass::load_models(d)?,
        None => Vec::new(),
    };
    let shapes: Vec<(String, Vec<usize>)> = zoo.meta.parameters.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    let std_emb = |task: usize| -> Result<Vec<f32>, StageError> {
        let e = emb
            .get(task * dim..(task + 1) * dim)
            .ok_or_else(|| StageError::input("embed", format!("has no embedding of task {task}")))?;
        Ok(al.standardise(e))
    };
    let pair_emb: Vec<Vec<f32>> = pairs.iter().map(|p| std_emb(p.task_id)).collect::<Result<_, _>>()?;
    let span = (al.config.loss_max - al.config.loss_min).max(1e-12);
    let zoo_row = |id: usize, c: Checkpoint| -> Result<&ZooRow, StageError> {
        zoo.rows
            .iter()
            .find(|r| r.model_id == id && r.checkpoint == c)
            .ok_or_else(|| StageError::msg(format!("zoo has no model {id} ({})", c.as_str())))
    };
    let task_images = |task_id: usize| -> Result<(Vec<u8>, Vec<u8>), StageError> {
        let task = tasks.tasks.get(task_id).ok_or_else(|| StageError::input("tasks", format!("has no task {task_id}")))?;
        let mut images = Vec::with_capacity(task.test.len() * data.test.image_len);
        let mut labels = Vec::with_capacity(task.test.len());
        for &i in &task.test {
            let label = data.test.labels.get(i).and_then(|&l| task.local_label(l)).ok_or_else(|| {
                StageError::msg(format!("task {}: test image {i} is missing or not of the task's classes", task.id))
            })?;
            images.extend_from_slice(data.test.image(i));
            labels.push(label as u8);
        }
        Ok((images, labels))
    };

    // What depends on the task alone (its images and its reference models), once per task.
    struct TaskRefs {
        images: Vec<u8>,
        labels: Vec<u8>,
        trained_final: Score,
        trained_early: Score,
        row_selection: Score,
        own_decoded: Score,
    }
    let task_ids: std::collections::BTreeSet<usize> = samples.iter().map(|s| s.task_id).collect();
    let refs: BTreeMap<usize, TaskRefs> = task_ids
        .into_par_iter()
        .map(|id| -> Result<(usize, TaskRefs), StageError> {
            let task = tasks
                .tasks
                .get(id)
                .ok_or_else(|| StageError::input("tasks", format!("has no task {id}, which the samples name")))?;
            let (images, labels) = task_images(id)?;
            let rows = multi
                .iter()
                .map(|m| {
                    let three =
                        m.select_rows(task.classes).map_err(|e| StageError::msg(format!("task {id}: row selection: {e}")))?;
                    score(&arch, &NamedTensors::from(three.named_tensors()), &images, &labels)
                })
                .collect::<Result<Vec<Score>, _>>()?;
            let mut own = BTreeMap::<Checkpoint, Vec<Score>>::new();
            for r in zoo.rows.iter().filter(|r| r.task_id == id && r.ok()) {
                own.entry(r.checkpoint).or_default().push(score(&arch, &zoo.weights(r)?, &images, &labels)?);
            }
            let own_decoded: Vec<Score> = all_pairs
                .iter()
                .filter(|p| p.task_id == id && p.checkpoint == Checkpoint::Final)
                .map(|p| decoded(p.row, &images, &labels))
                .collect::<Result<_, _>>()?;
            let refs = TaskRefs {
                trained_final: mean_score(own.get(&Checkpoint::Final).map_or(&[][..], |v| v)),
                trained_early: mean_score(own.get(&Checkpoint::Early).map_or(&[][..], |v| v)),
                row_selection: mean_score(&rows),
                own_decoded: mean_score(&own_decoded),
                images,
                labels,
            };
            Ok((id, refs))
        })
        .collect::<Result<_, _>>()?;

    let eval_one = |s: &SampleRow| -> Result<SampleEval, StageError> {
        wspace_stage_api::check_stop()?;
        let task = tasks
            .tasks
            .get(s.task_id)
            .ok_or_else(|| StageError::input("tasks", format!("has no task {}, which sample {} names", s.task_id, s.sample)))?;
        if task.classes != s.classes() {
            return Err(StageError::input(
                "tasks",
                format!("is not the one the samples were made for: sample {}'s classes differ from task {}'s", s.sample, task.id),
            ));
        }
        let t = &refs[&s.task_id];
        let (images, labels) = (&t.images, &t.labels);
        let weights = TensorFile::open(&dirs.samples.join(&s.file))?.f32_all()?;
        let net = Network::build(&arch, &weights)?;
        let ev = net.evaluate(images, labels)?;
        let logits = net.logits_u8(images)?;
        let permuted = permuted_accuracy(&logits, labels);
        let d = std_emb(s.task_id)?;
        let dist = |j: usize| -> f64 {
            let de: f64 = d.iter().zip(&pair_emb[j]).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / dim.max(1) as f64;
            de + ((s.target_loss - pairs[j].val_loss) / span).powi(2)
        };
        let nn = (0..pairs.len()).min_by(|&a, &b| dist(a).total_cmp(&dist(b))).unwrap_or(0);
        let nn_weights = zoo.weights(zoo_row(pairs[nn].model_id, pairs[nn].checkpoint)?)?;
        let nn_predictions = predictions(&Network::build(&arch, &nn_weights)?.logits_u8(images)?);
        let predictions = predictions(&logits);
        let sample_seed = seed.wrapping_mul(1_000_003).wrapping_add(s.sample as u64);
        Ok(SampleEval {
            sample: Score { loss: ev.loss, accuracy: ev.accuracy },
            permuted_accuracy: permuted,
            trained_final: t.trained_final,
            trained_early: t.trained_early,
            row_selection: t.row_selection,
            nn: score(&arch, &nn_weights, images, labels)?,
            nn_row: (pairs[nn].model_id, pairs[nn].checkpoint),
            nn_noise: score(&arch, &add_noise(&nn_weights, noise, sample_seed ^ 0x4e01), images, labels)?,
            random: score(&arch, &random_init(&shapes, sample_seed ^ 0x4a4d), images, labels)?,
            nn_decoded: decoded(pairs[nn].row, images, labels)?,
            own_decoded: t.own_decoded,
            nn_agreement: agreement(&predictions, &nn_predictions),
            predictions,
        })
    };
    let evals: Vec<SampleEval> = samples.par_iter().map(eval_one).collect::<Result<_, _>>()?;

    // NN + noise at the samples' accuracy (see the module doc). The neighbours' weights, images and
    // predictions are read once; each noise scale then costs one evaluation per sample.
    let neighbours: Vec<(NamedTensors, usize, Vec<u8>)> = samples
        .par_iter()
        .zip(&evals)
        .map(|(s, e)| {
            let w = zoo.weights(zoo_row(e.nn_row.0, e.nn_row.1)?)?;
            let nn_pred = predictions(&Network::build(&arch, &w)?.logits_u8(&refs[&s.task_id].images)?);
            Ok((w, s.task_id, nn_pred))
        })
        .collect::<Result<_, StageError>>()?;
    let noisy_nn = |scale: f64| -> Result<Vec<(Score, f64, Vec<u8>)>, StageError> {
        samples
            .par_iter()
            .zip(&neighbours)
            .map(|(s, (w, task, nn_pred))| {
                let (images, labels) = (&refs[task].images, &refs[task].labels);
                let sample_seed = seed.wrapping_mul(1_000_003).wrapping_add(s.sample as u64);
                let net = Network::build(&arch, &add_noise(w, scale, sample_seed ^ 0x4e01))?;
                let logits = net.logits_u8(images)?;
                let pred = predictions(&logits);
                let ev = net.evaluate(images, labels)?;
                Ok((Score { loss: ev.loss, accuracy: ev.accuracy }, agreement(&pred, nn_pred), pred))
            })
            .collect()
    };
    let mean_of = |v: &[f64]| -> f64 {
        let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if f.is_empty() {
            f64::NAN
        } else {
            f.iter().sum::<f64>() / f.len() as f64
        }
    };
    let accuracy_at = |scale: f64| -> Result<f64, StageError> {
        Ok(mean_of(&noisy_nn(scale)?.iter().map(|r| r.0.accuracy).collect::<Vec<_>>()))
    };
    let sample_accuracy = mean_of(&evals.iter().map(|e| e.sample.accuracy).collect::<Vec<_>>());
    let mut matched_scale = 0.0;
    if accuracy_at(0.0)? > sample_accuracy {
        let (mut lo, mut hi) = (0.0f64, 4.0f64);
        for _ in 0..12 {
            let mid = 0.5 * (lo + hi);
            if accuracy_at(mid)? > sample_accuracy {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        matched_scale = 0.5 * (lo + hi);
    }
    let matched = noisy_nn(matched_scale)?;
    let prompts: Vec<usize> = samples.iter().map(|s| s.prompt).collect();

    let pair = |x: &Score| [x.loss.to_string(), x.accuracy.to_string()];
    let csv_rows = samples.iter().zip(&evals).map(|(s, e)| {
        let mut rec = csv_row![s.sample, s.prompt, s.task_id, s.target_loss];
        rec.extend(pair(&e.sample));
        rec.extend(csv_row![e.permuted_accuracy, e.nn_agreement]);
        [e.trained_final, e.trained_early, e.row_selection].iter().for_each(|x| rec.extend(pair(x)));
        rec.extend(csv_row![e.nn_row.0, e.nn_row.1.as_str()]);
        [e.nn, e.nn_noise, e.random, e.nn_decoded, e.own_decoded].iter().for_each(|x| rec.extend(pair(x)));
        rec
    });
    tensors::write_csv(
        &out.join("evaluation.csv"),
        &[
            "sample",
            "prompt",
            "task_id",
            "target_loss",
            "loss",
            "accuracy",
            "permuted_accuracy",
            "nn_agreement",
            "trained_final_loss",
            "trained_final_accuracy",
            "trained_early_loss",
            "trained_early_accuracy",
            "row_selection_loss",
            "row_selection_accuracy",
            "nn_model_id",
            "nn_checkpoint",
            "nn_loss",
            "nn_accuracy",
            "nn_noise_loss",
            "nn_noise_accuracy",
            "random_loss",
            "random_accuracy",
            "nn_decoded_loss",
            "nn_decoded_accuracy",
            "own_decoded_loss",
            "own_decoded_accuracy",
        ],
        csv_rows,
    )?;

    let targets: Vec<f64> = samples.iter().map(|s| s.target_loss).collect();
    let achieved: Vec<f64> = evals.iter().map(|e| e.sample.loss).collect();
    let (r2, pearson) = r2_and_pearson(&targets, &achieved);
    let lo = targets.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = targets.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    plot::write_chart(
        &out.join("target_vs_achieved.svg"),
        &Chart::new(
            "Prompted (target) vs achieved test loss of each sample",
            "target loss (cross-entropy, nats)",
            "achieved test loss (cross-entropy, nats)",
        )
        .series(Series::line("achieved = target", plot::GREY, vec![(lo, lo), (hi, hi)]))
        .series(Series::points("sample", plot::BLUE, targets.iter().copied().zip(achieved.iter().copied()).collect())),
    )?;
    let sorted = |name: &str, f: fn(&SampleEval) -> f64, colour| {
        let mut v: Vec<f64> = evals.iter().map(f).filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        Series::line(name, colour, v.into_iter().enumerate().map(|(i, y)| (i as f64 + 1.0, y)).collect())
    };
    plot::write_chart(
        &out.join("accuracy.svg"),
        &Chart::new("Test accuracy per sample and per baseline, sorted", "rank (sorted by accuracy)", "test accuracy (fraction)")
            .series(sorted("trained (final)", |e| e.trained_final.accuracy, plot::RED))
            .series(sorted("random init", |e| e.random.accuracy, plot::GREY))
            .series(sorted("NN + noise", |e| e.nn_noise.accuracy, plot::GREEN))
            .series(sorted("nearest neighbour", |e| e.nn.accuracy, plot::ORANGE))
            .series(sorted("sample", |e| e.sample.accuracy, plot::BLUE)),
    )?;

    let num = |v: f64| if v.is_finite() { json!(v) } else { serde_json::Value::Null };
    let mean = |f: &dyn Fn(&SampleEval) -> f64| -> f64 {
        let v: Vec<f64> = evals.iter().map(f).filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let variant = |f: &dyn Fn(&SampleEval) -> Score| json!({ "loss": num(mean(&|e| f(e).loss)), "accuracy": num(mean(&|e| f(e).accuracy)) });
    let beats = evals.iter().filter(|e| e.sample.accuracy > e.nn.accuracy).count() as f64 / evals.len().max(1) as f64;
    let tasks_n = samples.iter().map(|s| s.task_id).collect::<std::collections::BTreeSet<_>>().len();
    let mut metrics = json!({
        "samples": samples.len(),
        "tasks": tasks_n,
        "sample": variant(&|e| e.sample),
        "trained_final": variant(&|e| e.trained_final),
        "trained_early": variant(&|e| e.trained_early),
        "nn": variant(&|e| e.nn),
        "nn_noise": variant(&|e| e.nn_noise),
        "random": variant(&|e| e.random),
        "nn_decoded": variant(&|e| e.nn_decoded),
        "own_decoded": variant(&|e| e.own_decoded),
        "diversity": num(diversity(&prompts, &evals.iter().map(|e| e.predictions.as_slice()).collect::<Vec<_>>())),
        "nn_agreement": num(mean(&|e| e.nn_agreement)),
        "nn_noise_matched": {
            "noise": matched_scale,
            "loss": num(mean_of(&matched.iter().map(|r| r.0.loss).collect::<Vec<_>>())),
            "accuracy": num(mean_of(&matched.iter().map(|r| r.0.accuracy).collect::<Vec<_>>())),
            "diversity": num(diversity(&prompts, &matched.iter().map(|r| r.2.as_slice()).collect::<Vec<_>>())),
            "nn_agreement": num(mean_of(&matched.iter().map(|r| r.1).collect::<Vec<_>>())),
        },
        "chance_accuracy": 1.0 / 3.0,
        "prompt_r2": num(r2),
        "prompt_pearson": num(pearson),
        "order": { "accuracy": num(mean(&|e| e.sample.accuracy)), "permuted_accuracy": num(mean(&|e| e.permuted_accuracy)) },
        "order_gap": num(mean(&|e| e.sample.accuracy) - mean(&|e| e.permuted_accuracy)),
        "sample_beats_nn": beats,
        "non_finite_sample_losses": achieved.iter().filter(|x| !x.is_finite()).count(),
        "noise": noise,
    });
    if !multi.is_empty() {
        metrics["row_selection"] = variant(&|e| e.row_selection);
        metrics["row_selection_models"] = json!(multi.len());
    }
    tensors::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

params! {
    NOISE = "noise": Float = 0.1, "nn_noise: Gaussian noise × each tensor's std";
    SEED = "seed": Int = 0, "seeds the noise and the random initialisations";
}

/// `(noise, seed)`.
fn options(p: Params) -> Result<(f64, u64), StageError> {
    Ok((p.non_negative(&NOISE)?, p.seed(&SEED)?))
}

/// `kind = "evaluate-samples"`: see the [module doc](self).
pub struct EvaluateSamplesKind;

impl StageKind for EvaluateSamplesKind {
    fn name(&self) -> &'static str {
        "evaluate-samples"
    }
    fn version(&self) -> u32 {
        4
    }
    fn summary(&self) -> &'static str {
        "sampled models on their tasks' test images vs trained, nearest-neighbour, noisy-neighbour and random baselines"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(&[NOISE, SEED])
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("samples", true, "a `sample` stage"),
            ("align", true, "the `align` stage the samples came from (pairs, standardisation)"),
            ("zoo", true, "the `zoo` stage"),
            ("tasks", true, "the zoo's `tasks` stage"),
            ("data", true, "the zoo's `dataset` stage"),
            ("embed", true, "the `dataset-embed` stage"),
            ("pca", false, "the `pca` stage (with `autoencoder`: the decoded-latent references)"),
            ("autoencoder", false, "the `autoencoder` stage the align stage used"),
            ("row_selection", false, "a `multiclass` stage: the row-selection baseline"),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        options(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let (noise, seed) = options(ctx.view())?;
        let dirs = Inputs6 {
            samples: ctx.input("samples")?,
            align: ctx.input("align")?,
            zoo: ctx.input("zoo")?,
            tasks: ctx.input("tasks")?,
            data: ctx.input("data")?,
            embed: ctx.input("embed")?,
            codec: match (ctx.inputs.get("pca"), ctx.inputs.get("autoencoder")) {
                (Some(p), Some(a)) => Some((p.as_path(), a.as_path())),
                (None, None) => None,
                (None, Some(_)) => return Err(StageError::input("pca", "must be connected with `autoencoder` (or neither)")),
                (Some(_), None) => return Err(StageError::input("autoencoder", "must be connected with `pca` (or neither)")),
            },
            row_selection: ctx.inputs.get("row_selection").map(|p| p.as_path()),
        };
        ctx.progress.message("evaluating samples and baselines");
        run_evaluate(&dirs, noise, seed, ctx.out)?;
        Ok(())
    }
}
