//! NN + noise at the samples' accuracy (see the module doc): the noise scale at which the noisy nearest
//! neighbours are as accurate as the samples, found by bisection.

use std::collections::BTreeMap;

use rayon::prelude::*;
use wspace_stage_api::StageError;

use super::measures::{add_noise, agreement, finite_mean, predictions, Score};
use super::scoring::{sample_seed, SampleEval, Sources, TaskRefs};
use crate::tensors::NamedTensors;
use crate::weights::Network;

/// The noisy neighbours at the matched scale: per sample its score, its agreement with the
/// neighbour, and its predictions.
pub struct Matched {
    pub scale: f64,
    pub results: Vec<(Score, f64, Vec<u8>)>,
}

/// Bisection on `[0, 4]` (12 steps) for the noise scale whose mean accuracy equals the samples'; 0 when
/// the samples are as accurate as the neighbours. The neighbours' weights, images and predictions are
/// read once; each scale then costs one evaluation per sample.
pub fn matched_noise(
    s: &Sources,
    refs: &BTreeMap<usize, TaskRefs>,
    evals: &[SampleEval],
    seed: u64,
) -> Result<Matched, StageError> {
    let arch = &s.arch;
    let neighbours: Vec<(NamedTensors, usize, Vec<u8>)> = s
        .samples
        .par_iter()
        .zip(evals)
        .map(|(x, e)| {
            let w = s.zoo.weights(s.zoo_row(e.nn_row.0, e.nn_row.1)?)?;
            let nn_pred = predictions(&Network::build(arch, &w)?.logits_u8(&refs[&x.task_id].images)?);
            Ok((w, x.task_id, nn_pred))
        })
        .collect::<Result<_, StageError>>()?;
    let noisy_nn = |scale: f64| -> Result<Vec<(Score, f64, Vec<u8>)>, StageError> {
        s.samples
            .par_iter()
            .zip(&neighbours)
            .map(|(x, (w, task, nn_pred))| {
                let (images, labels) = (&refs[task].images, &refs[task].labels);
                let net = Network::build(arch, &add_noise(w, scale, sample_seed(seed, x) ^ 0x4e01))?;
                let logits = net.logits_u8(images)?;
                let pred = predictions(&logits);
                let ev = net.evaluate(images, labels)?;
                Ok((Score { loss: ev.loss, accuracy: ev.accuracy }, agreement(&pred, nn_pred), pred))
            })
            .collect()
    };
    let accuracy_at = |scale: f64| -> Result<f64, StageError> { Ok(finite_mean(noisy_nn(scale)?.iter().map(|r| r.0.accuracy))) };
    let sample_accuracy = finite_mean(evals.iter().map(|e| e.sample.accuracy));
    let mut scale = 0.0;
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
        scale = 0.5 * (lo + hi);
    }
    Ok(Matched { scale, results: noisy_nn(scale)? })
}
