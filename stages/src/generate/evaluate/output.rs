//! What the evaluation writes: `evaluation.csv`, the two plots and `metrics.json` (see the module doc).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;
use wspace_stage_api::StageError;

use super::baselines::Matched;
use super::measures::{diversity, finite_mean, r2_and_pearson, Score};
use super::novelty::num;
use super::scoring::SampleEval;
use crate::generate::sample::SampleRow;
use crate::plot::{self, Chart, Series};
use crate::tensors::{self, csv_row};

/// One row per sample.
pub fn write_csv(path: &Path, samples: &[SampleRow], evals: &[SampleEval]) -> Result<(), StageError> {
    let pair = |x: &Score| [x.loss.to_string(), x.accuracy.to_string()];
    let csv_rows = samples.iter().zip(evals).map(|(s, e)| {
        let mut rec = csv_row![s.sample, s.prompt, s.task_id, s.target_loss];
        rec.extend(pair(&e.sample));
        rec.extend(csv_row![e.unscaled_loss, e.permuted_accuracy, e.nn_agreement, e.max_iou]);
        [e.trained_final, e.trained_early, e.row_selection].iter().for_each(|x| rec.extend(pair(x)));
        rec.extend(csv_row![e.nn_row.0, e.nn_row.1.as_str()]);
        [e.nn, e.nn_noise, e.random, e.nn_decoded, e.own_decoded].iter().for_each(|x| rec.extend(pair(x)));
        rec
    });
    tensors::write_csv(
        path,
        &[
            "sample",
            "prompt",
            "task_id",
            "target_loss",
            "loss",
            "accuracy",
            "unscaled_loss",
            "permuted_accuracy",
            "nn_agreement",
            "max_iou",
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
    )
}

/// `target_vs_achieved.svg` and `accuracy.svg`.
pub fn write_plots(out: &Path, samples: &[SampleRow], evals: &[SampleEval]) -> Result<(), StageError> {
    let targets: Vec<f64> = samples.iter().map(|s| s.target_loss).collect();
    let achieved: Vec<f64> = evals.iter().map(|e| e.sample.loss).collect();
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
    Ok(())
}

/// `metrics.json`'s content, before the natural reference and memorisation (added by the caller).
/// `row_selection_models`: how many models the row-selection baseline has (0: no baseline).
pub fn metrics(
    samples: &[SampleRow],
    evals: &[SampleEval],
    matched: &Matched,
    row_selection_models: usize,
    noise: f64,
) -> serde_json::Value {
    let (targets, achieved): (Vec<f64>, Vec<f64>) =
        samples.iter().zip(evals).map(|(s, e)| (s.target_loss, e.sample.loss)).unzip();
    let (r2, pearson) = r2_and_pearson(&targets, &achieved);
    let unscaled: Vec<f64> = evals.iter().map(|e| e.unscaled_loss).collect();
    let (r2_unscaled, pearson_unscaled) = r2_and_pearson(&targets, &unscaled);
    let prompts: Vec<usize> = samples.iter().map(|s| s.prompt).collect();
    let m = &matched.results;
    let mean = |f: &dyn Fn(&SampleEval) -> f64| -> f64 { finite_mean(evals.iter().map(f)) };
    let variant = |f: &dyn Fn(&SampleEval) -> Score| json!({ "loss": num(mean(&|e| f(e).loss)), "accuracy": num(mean(&|e| f(e).accuracy)) });
    let beats = evals.iter().filter(|e| e.sample.accuracy > e.nn.accuracy).count() as f64 / evals.len().max(1) as f64;
    let tasks_n = samples.iter().map(|s| s.task_id).collect::<BTreeSet<_>>().len();
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
            "noise": matched.scale,
            "loss": num(finite_mean(m.iter().map(|r| r.score.loss))),
            "accuracy": num(finite_mean(m.iter().map(|r| r.score.accuracy))),
            "diversity": num(diversity(&prompts, &m.iter().map(|r| r.predictions.as_slice()).collect::<Vec<_>>())),
            "nn_agreement": num(finite_mean(m.iter().map(|r| r.nn_agreement))),
        },
        "chance_accuracy": 1.0 / 3.0,
        "prompt_r2": num(r2),
        "prompt_pearson": num(pearson),
        "prompt_r2_unscaled": num(r2_unscaled),
        "prompt_pearson_unscaled": num(pearson_unscaled),
        "order": { "accuracy": num(mean(&|e| e.sample.accuracy)), "permuted_accuracy": num(mean(&|e| e.permuted_accuracy)) },
        "order_gap": num(mean(&|e| e.sample.accuracy) - mean(&|e| e.permuted_accuracy)),
        "sample_beats_nn": beats,
        "non_finite_sample_losses": achieved.iter().filter(|x| !x.is_finite()).count(),
        "noise": noise,
    });
    if row_selection_models > 0 {
        metrics["row_selection"] = variant(&|e| e.row_selection);
        metrics["row_selection_models"] = json!(row_selection_models);
    }
    metrics
}
