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

mod baselines;
mod measures;
mod output;
mod scoring;

use std::path::Path;

use rayon::prelude::*;
use wspace_stage_api::{params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

pub use measures::{agreement, diversity, permuted_accuracy, r2_and_pearson, random_init, Score};
use scoring::Sources;
pub use scoring::{Dirs, SampleEval};

/// Runs the evaluation (see the module doc) and writes the stage output into `out`.
pub fn run_evaluate(dirs: &Dirs, noise: f64, seed: u64, out: &Path) -> Result<serde_json::Value, StageError> {
    let s = Sources::load(dirs)?;
    let refs = s.task_references()?;
    let evals: Vec<SampleEval> = s.samples.par_iter().map(|x| s.score_sample(x, &refs, noise, seed)).collect::<Result<_, _>>()?;
    let matched = baselines::matched_noise(&s, &refs, &evals, seed)?;
    output::write_csv(&out.join("evaluation.csv"), &s.samples, &evals)?;
    output::write_plots(out, &s.samples, &evals)?;
    let metrics = output::metrics(&s.samples, &evals, &matched, s.multi.len(), noise);
    crate::tensors::write_json(&out.join("metrics.json"), &metrics)?;
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
        let dirs = Dirs {
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
