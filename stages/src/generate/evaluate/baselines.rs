//! Baselines at the samples' accuracy: for each, the noise (or spread) scale at which its mean accuracy
//! equals the samples', found by bisection ([`matched`]).
//! - NN + noise on the unseen prompts ([`matched_noise`]);
//! - on the zoo's own tasks (memorisation, [`memorisation_baselines`]), in the style of Zeng et al.
//!   2025: NN + noise, the average of the `k` nearest training models plus noise, and a per-coordinate
//!   Gaussian fitted to the `k` nearest training latents, decoded.

use std::collections::BTreeMap;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use wspace_stage_api::StageError;

use super::measures::{add_noise, agreement, finite_mean, predictions, Score};
use super::scoring::{max_iou, sample_seed, SampleEval, Sources, TaskRefs};
use crate::generate::sample::SampleRow;
use crate::sampling::normal_f32;
use crate::tensors::NamedTensors;
use crate::weights::Network;

/// A baseline's models at the matched scale: per sample its score, its agreement with the sample's
/// nearest neighbour, its predictions and its largest error IoU with its task's zoo checkpoints.
pub struct Matched {
    pub scale: f64,
    pub results: Vec<Outcome>,
}

/// One baseline model, scored.
pub struct Outcome {
    pub score: Score,
    pub nn_agreement: f64,
    pub predictions: Vec<u8>,
    pub max_iou: f64,
}

/// Bisection on `[0, hi]` (12 steps) for the scale whose mean accuracy (of `models(scale)`) equals
/// `target`; 0 when the baseline is no more accurate than `target` at scale 0. Accuracy is assumed to
/// fall as the scale grows.
fn matched(models: impl Fn(f64) -> Result<Vec<Outcome>, StageError>, target: f64, hi: f64) -> Result<Matched, StageError> {
    let accuracy_at =
        |scale: f64| -> Result<f64, StageError> { Ok(finite_mean(models(scale)?.iter().map(|r| r.score.accuracy))) };
    let mut scale = 0.0;
    if accuracy_at(0.0)? > target {
        let (mut lo, mut hi) = (0.0f64, hi);
        for _ in 0..12 {
            let mid = 0.5 * (lo + hi);
            if accuracy_at(mid)? > target {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        scale = 0.5 * (lo + hi);
    }
    Ok(Matched { scale, results: models(scale)? })
}

/// Scores `weights` on sample `x`'s task images against the nearest neighbour's predictions.
fn outcome(s: &Sources, t: &TaskRefs, weights: &NamedTensors, nn_pred: &[u8]) -> Result<Outcome, StageError> {
    let net = Network::build(&s.arch, weights)?;
    let (ev, logits) = net.evaluate_and_logits(&t.images, &t.labels)?;
    let pred = predictions(&logits);
    Ok(Outcome {
        score: Score { loss: ev.loss, accuracy: ev.accuracy },
        nn_agreement: agreement(&pred, nn_pred),
        max_iou: max_iou(&pred, &t.checkpoints, &t.labels),
        predictions: pred,
    })
}

/// What a baseline starts from for one sample: its weights (or latent centre and spread), the
/// sample's task and the nearest neighbour's predictions on its images.
struct Start {
    task: usize,
    nn_pred: Vec<u8>,
    base: Base,
}

enum Base {
    /// Weights to add noise to.
    Weights(NamedTensors),
    /// A latent centre and per-coordinate std.
    Latent(Vec<f32>, Vec<f32>),
}

/// The baseline models of `samples` at `scale`: noise of `scale` × each tensor's std on the weights,
/// or the latent centre plus `scale` × its std × N(0, 1), decoded.
fn at_scale(
    s: &Sources,
    refs: &BTreeMap<usize, TaskRefs>,
    samples: &[SampleRow],
    starts: &[Start],
    seed: u64,
    scale: f64,
) -> Result<Vec<Outcome>, StageError> {
    samples
        .par_iter()
        .zip(starts)
        .map(|(x, st)| {
            let t = &refs[&st.task];
            let weights = match &st.base {
                Base::Weights(w) => add_noise(w, scale, sample_seed(seed, x) ^ 0x4e01),
                Base::Latent(centre, std) => {
                    let mut rng = ChaCha8Rng::seed_from_u64(sample_seed(seed, x) ^ 0x4c47);
                    let z: Vec<f32> = centre.iter().zip(std).map(|(c, d)| c + scale as f32 * d * normal_f32(&mut rng)).collect();
                    let codec = s.codec().ok_or_else(|| StageError::msg("the latent Gaussian needs the codec inputs"))?;
                    codec.decode(&z)?.pop().unwrap_or_default()
                }
            };
            outcome(s, t, &weights, &st.nn_pred)
        })
        .collect()
}

/// The nearest neighbour's predictions of each sample, read once.
fn neighbour_predictions(
    s: &Sources,
    refs: &BTreeMap<usize, TaskRefs>,
    samples: &[SampleRow],
    evals: &[SampleEval],
) -> Result<Vec<(NamedTensors, Vec<u8>)>, StageError> {
    samples
        .par_iter()
        .zip(evals)
        .map(|(x, e)| {
            let w = s.zoo.weights(s.zoo_row(e.nn_row.0, e.nn_row.1)?)?;
            let nn_pred = predictions(&Network::build(&s.arch, &w)?.logits_u8(&refs[&x.task_id].images)?);
            Ok((w, nn_pred))
        })
        .collect()
}

/// NN + noise at the samples' accuracy: bisection on `[0, 4]`.
pub fn matched_noise(
    s: &Sources,
    refs: &BTreeMap<usize, TaskRefs>,
    samples: &[SampleRow],
    evals: &[SampleEval],
    seed: u64,
) -> Result<Matched, StageError> {
    let starts: Vec<Start> = neighbour_predictions(s, refs, samples, evals)?
        .into_iter()
        .zip(samples)
        .map(|((w, nn_pred), x)| Start { task: x.task_id, nn_pred, base: Base::Weights(w) })
        .collect();
    let target = finite_mean(evals.iter().map(|e| e.sample.accuracy));
    matched(|scale| at_scale(s, refs, samples, &starts, seed, scale), target, 4.0)
}

/// The memorisation baselines at the samples' accuracy: `(name, matched)` for NN + noise, the
/// average of the `k` nearest training models plus noise, and (with the codec inputs) the
/// per-coordinate Gaussian of the `k` nearest training latents with its std scaled.
pub fn memorisation_baselines(
    s: &Sources,
    refs: &BTreeMap<usize, TaskRefs>,
    samples: &[SampleRow],
    evals: &[SampleEval],
    k: usize,
    seed: u64,
) -> Result<Vec<(&'static str, Matched)>, StageError> {
    let target = finite_mean(evals.iter().map(|e| e.sample.accuracy));
    let neighbours = neighbour_predictions(s, refs, samples, evals)?;
    let mut out = vec![("nn_noise", matched_noise(s, refs, samples, evals, seed)?)];
    let mut average = Vec::with_capacity(samples.len());
    let mut gaussian = Vec::with_capacity(samples.len());
    for (x, (_, nn_pred)) in samples.iter().zip(&neighbours) {
        let near = s.nearest(x, k)?;
        let models: Vec<NamedTensors> = near.iter().map(|p| s.pair_weights(p)).collect::<Result<_, _>>()?;
        average.push(Start { task: x.task_id, nn_pred: nn_pred.clone(), base: Base::Weights(mean_weights(&models)) });
        let latents: Option<Vec<&[f32]>> = near.iter().map(|p| s.pair_latent(p)).collect();
        if let Some(latents) = latents {
            let (centre, std) = coordinate_gaussian(&latents);
            gaussian.push(Start { task: x.task_id, nn_pred: nn_pred.clone(), base: Base::Latent(centre, std) });
        }
    }
    out.push(("knn_average", matched(|scale| at_scale(s, refs, samples, &average, seed, scale), target, 4.0)?));
    if gaussian.len() == samples.len() {
        out.push(("latent_gaussian", matched(|scale| at_scale(s, refs, samples, &gaussian, seed, scale), target, 4.0)?));
    }
    Ok(out)
}

/// The elementwise mean of models with the same tensors.
fn mean_weights(models: &[NamedTensors]) -> NamedTensors {
    let tensors: Vec<Vec<&crate::tensors::NamedTensor>> = models.iter().map(|m| m.iter().collect()).collect();
    let n = models.len() as f64;
    let mut out = models[0].clone();
    for (i, t) in out.iter_mut().enumerate() {
        for (j, v) in t.values.iter_mut().enumerate() {
            *v = (tensors.iter().map(|m| m[i].values[j] as f64).sum::<f64>() / n) as f32;
        }
    }
    out
}

/// Per coordinate, the mean and the population std of the latents.
fn coordinate_gaussian(latents: &[&[f32]]) -> (Vec<f32>, Vec<f32>) {
    let n = latents.len().max(1) as f64;
    let dim = latents.first().map_or(0, |l| l.len());
    (0..dim)
        .map(|i| {
            let mean = latents.iter().map(|l| l[i] as f64).sum::<f64>() / n;
            let var = latents.iter().map(|l| (l[i] as f64 - mean).powi(2)).sum::<f64>() / n;
            (mean as f32, var.sqrt() as f32)
        })
        .unzip()
}
