//! What the evaluation measures, as plain functions of logits, predictions and weights: scores, the
//! class-order check, prompt fit, agreement and diversity, and the baselines' weights (random
//! initialisation, noise).

use std::collections::BTreeMap;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wspace_stage_api::StageError;

use crate::sampling::{normal_f32, uniform_in};
use crate::tensors::{NamedTensor, NamedTensors};
use crate::weights::Network;

/// Loss and accuracy; NaN when absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub loss: f64,
    pub accuracy: f64,
}

impl Score {
    pub const NONE: Score = Score { loss: f64::NAN, accuracy: f64::NAN };
}

/// The 5 non-identity permutations of 3 labels.
const PERMUTATIONS: [[u8; 3]; 5] = [[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

/// Mean accuracy of `logits` over the non-identity relabellings `label → π[label]`.
pub fn permuted_accuracy<T: AsRef<[f32]>>(logits: &[T], labels: &[u8]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    let pred = predictions(logits);
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
    mean_within_groups(groups, |i, j| 1.0 - agreement(predictions[i], predictions[j]))
}

/// Argmax (first maximum) per row of 3 logits.
pub fn predictions<T: AsRef<[f32]>>(logits: &[T]) -> Vec<u8> {
    logits.iter().map(|l| crate::nn::argmax(l.as_ref()) as u8).collect()
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

/// A model's test loss and accuracy.
pub fn score(arch: &str, weights: &NamedTensors, images: &[u8], labels: &[u8]) -> Result<Score, StageError> {
    let e = Network::build(arch, weights)?.evaluate(images, labels)?;
    Ok(Score { loss: e.loss, accuracy: e.accuracy })
}

/// The mean of scores ([`Score::NONE`] for none).
pub fn mean_score(scores: &[Score]) -> Score {
    if scores.is_empty() {
        return Score::NONE;
    }
    let n = scores.len() as f64;
    Score { loss: scores.iter().map(|s| s.loss).sum::<f64>() / n, accuracy: scores.iter().map(|s| s.accuracy).sum::<f64>() / n }
}

/// The mean of the finite values; NaN when there are none.
pub fn finite_mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// IoU of two models' error sets on the same images (p-diff's similarity): `|E_a ∩ E_b| / |E_a ∪ E_b|`,
/// `E` the images a model gets wrong; 1 when neither gets any wrong.
pub fn error_iou(a: &[u8], b: &[u8], labels: &[u8]) -> f64 {
    let (mut both, mut either) = (0usize, 0usize);
    for ((x, y), l) in a.iter().zip(b).zip(labels) {
        let (ea, eb) = (x != l, y != l);
        both += (ea && eb) as usize;
        either += (ea || eb) as usize;
    }
    if either == 0 {
        1.0
    } else {
        both as f64 / either as f64
    }
}

/// Mean cross-entropy of `logits` divided by `s` (`s > 0`), in f64: the loss of a model whose head was
/// multiplied by `s`, before it was (the head's product is linear in the head).
pub fn unscaled_loss<T: AsRef<[f32]>>(logits: &[T], labels: &[u8], s: f64) -> f64 {
    crate::nn::mean_cross_entropy(logits, labels, s)
}

/// The mean over groups (a group id per item) of the mean of `pair(i, j)` over the pairs `i < j` of
/// the group's items; groups with one item are left out; NaN when none has two.
pub fn mean_within_groups(groups: &[usize], pair: impl Fn(usize, usize) -> f64) -> f64 {
    let mut by: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        by.entry(*g).or_default().push(i);
    }
    let per: Vec<f64> = by
        .values()
        .filter(|m| m.len() >= 2)
        .map(|m| {
            let pairs: Vec<f64> =
                (0..m.len()).flat_map(|i| (i + 1..m.len()).map(move |j| (i, j))).map(|(i, j)| pair(m[i], m[j])).collect();
            pairs.iter().sum::<f64>() / pairs.len() as f64
        })
        .collect();
    if per.is_empty() {
        f64::NAN
    } else {
        per.iter().sum::<f64>() / per.len() as f64
    }
}
