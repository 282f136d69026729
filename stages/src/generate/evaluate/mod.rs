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
//!   the correlation; non-finite losses are left out. `prompt_r2_unscaled` / `prompt_pearson_unscaled`:
//!   the same with `unscaled_loss`, the sample's test loss before `loss_control = "scale"` multiplied
//!   its head (the logits divided by the sample's `head_scale`; equal to `loss` without scaling), so
//!   that both figures are reported whatever the sample stage did.
//! - `max_iou`: the largest IoU of the sample's error set (the test images it gets wrong) with that of
//!   any of its task's zoo checkpoints (early and final); 1 = the same mistakes as a training model.
//!
//! # Novelty and diversity
//! - natural reference (with the `replicas` input, a `replicas` stage): its models of the samples'
//!   tasks, trained independently with the zoo's recipe. `replicas.{loss, accuracy}` their mean score,
//!   `natural_diversity` the mean over tasks of their mean pairwise prediction disagreement (measured as
//!   the draws' `diversity` is: the target a sampler's draws should reach).
//! - `weight_distance.{tensor}.{draws, replicas}` (and `.body`: every tensor but the head's weight and
//!   bias): the relative distance `‖a − b‖ / ((‖a‖ + ‖b‖) / 2)` between two draws of one prompt and
//!   between two replicas of one task, averaged over pairs, prompts and tasks. A sampler whose draws
//!   share one body has `body.draws` = 0.
//! - `memorisation` (with the `memorisation` input: the same method's `sample` stage with `prompts =
//!   "train"`, i.e. on the zoo's own tasks, which the sampler was fitted on; with `replicas` covering
//!   the train split): the samples' mean `max_iou` against `natural_max_iou`, the same figure for the
//!   replicas (models trained anew on the task: what not-a-copy looks like) and `replica_iou` (the error
//!   IoU between two replicas); and three memorisation baselines at the samples' mean accuracy (the
//!   scale found by bisection, as `nn_noise_matched`): `nn_noise` (the nearest training model plus
//!   Gaussian noise × each tensor's std), `knn_average` (the elementwise mean of the `neighbours`
//!   nearest training models, plus noise) and `latent_gaussian` (with the codec inputs: a draw from the
//!   per-coordinate Gaussian of those models' latents, its std × the scale, decoded). Each baseline's
//!   `scale`, `accuracy`, `max_iou` and `diversity`, and `beats.{baseline}`: the samples' `max_iou` is
//!   below the baseline's (less of a copy at the same accuracy).
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `evaluation.csv` | one row per sample: `sample,prompt,task_id,target_loss,loss,accuracy,unscaled_loss,permuted_accuracy,nn_agreement,max_iou,trained_final_loss,trained_final_accuracy,trained_early_loss,trained_early_accuracy,row_selection_loss,row_selection_accuracy,nn_model_id,nn_checkpoint,nn_loss,nn_accuracy,nn_noise_loss,nn_noise_accuracy,random_loss,random_accuracy,nn_decoded_loss,nn_decoded_accuracy,own_decoded_loss,own_decoded_accuracy` |
//! | `target_vs_achieved.svg` | x = target loss, y = achieved test loss: samples (blue dots), identity (grey line); titled axes, legend |
//! | `accuracy.svg` | per-sample accuracy sorted (x = rank): sample blue, nn orange, nn_noise green, random grey, trained_final red; legend |
//! | `metrics.json` | per variant mean `loss` (finite ones), `accuracy` (`row_selection` only with its input); `diversity`, `nn_agreement`, `nn_noise_matched.{noise, loss, accuracy, diversity, nn_agreement}`, `prompt_r2`, `prompt_pearson`, `prompt_r2_unscaled`, `prompt_pearson_unscaled`, `max_iou`, `order.{accuracy, permuted_accuracy}`, `order_gap` (their difference), `sample_beats_nn` (fraction of samples more accurate than their neighbour), counts; `replicas`, `natural_diversity`, `weight_distance`, `memorisation` (above) |
//! | `memorisation.csv` | (with the `memorisation` input) `evaluation.csv`'s columns for the train-task samples |

mod baselines;
mod measures;
mod novelty;
mod output;
mod scoring;

use std::path::Path;

use rayon::prelude::*;
use serde_json::json;
use wspace_stage_api::{params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

pub use measures::{
    agreement, diversity, error_iou, mean_within_groups, permuted_accuracy, r2_and_pearson, random_init, unscaled_loss, Score,
};
use scoring::Sources;
pub use scoring::{Dirs, SampleEval};

/// The stage's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvaluateOptions {
    pub noise: f64,
    pub seed: u64,
    /// `k` of the memorisation baselines built from the nearest training models.
    pub neighbours: usize,
}

/// Runs the evaluation (see the module doc) and writes the stage output into `out`.
pub fn run_evaluate(dirs: &Dirs, o: &EvaluateOptions, out: &Path) -> Result<serde_json::Value, StageError> {
    let s = Sources::load(dirs)?;
    let refs = s.task_references()?;
    let score_all = |rows: &[crate::generate::sample::SampleRow], dir: &Path| -> Result<Vec<SampleEval>, StageError> {
        rows.par_iter().map(|x| s.score_sample(x, dir, &refs, o.noise, o.seed)).collect()
    };
    let evals = score_all(&s.samples, &s.samples_dir)?;
    let matched = baselines::matched_noise(&s, &refs, &s.samples, &evals, o.seed)?;
    output::write_csv(&out.join("evaluation.csv"), &s.samples, &evals)?;
    output::write_plots(out, &s.samples, &evals)?;
    let mut metrics = output::metrics(&s.samples, &evals, &matched, s.multi.len(), o.noise);
    let (replicas, natural) = novelty::natural(&refs, &novelty::tasks_of(&s.samples));
    let head: Vec<String> = s.zoo.meta.parameters.iter().rev().take(2).map(|p| p.name.clone()).collect();
    metrics["replicas"] = json!({ "loss": novelty::num(replicas.loss), "accuracy": novelty::num(replicas.accuracy) });
    metrics["natural_diversity"] = novelty::num(natural);
    metrics["weight_distance"] = novelty::weight_distances(&s.samples, &evals, &refs, &head);
    if let Some((rows, dir)) = &s.memorisation {
        let mem = score_all(rows, dir)?;
        output::write_csv(&out.join("memorisation.csv"), rows, &mem)?;
        let base = baselines::memorisation_baselines(&s, &refs, rows, &mem, o.neighbours, o.seed)?;
        metrics["memorisation"] = novelty::memorisation(rows, &mem, &refs, &base);
    }
    crate::tensors::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

params! {
    NOISE = "noise": Float = 0.1, "nn_noise: Gaussian noise × each tensor's std";
    SEED = "seed": Int = 0, "seeds the noise and the random initialisations";
    NEIGHBOURS = "neighbours": Int = 5, "memorisation: the k nearest training models the averaged and the Gaussian baselines are built from";
}

fn options(p: Params) -> Result<EvaluateOptions, StageError> {
    Ok(EvaluateOptions { noise: p.non_negative(&NOISE)?, seed: p.seed(&SEED)?, neighbours: p.positive(&NEIGHBOURS)? })
}

/// `kind = "evaluate-samples"`: see the [module doc](self).
pub struct EvaluateSamplesKind;

impl StageKind for EvaluateSamplesKind {
    fn name(&self) -> &'static str {
        "evaluate-samples"
    }
    fn version(&self) -> u32 {
        5
    }
    fn summary(&self) -> &'static str {
        "sampled models on their tasks' test images vs trained, nearest-neighbour, noisy-neighbour and random baselines"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(&[NOISE, SEED, NEIGHBOURS])
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
            ("replicas", false, "a `replicas` stage of the zoo: the natural-diversity reference"),
            (
                "memorisation",
                false,
                "a `sample` stage of the same method with prompts = \"train\": memorisation on the zoo's own tasks",
            ),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        options(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let o = options(ctx.view())?;
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
            replicas: ctx.inputs.get("replicas").map(|p| p.as_path()),
            memorisation: ctx.inputs.get("memorisation").map(|p| p.as_path()),
        };
        ctx.progress.message("evaluating samples and baselines");
        run_evaluate(&dirs, &o, ctx.out)?;
        Ok(())
    }
}
