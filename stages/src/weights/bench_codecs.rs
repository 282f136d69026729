//! `wspace bench autoencoder` and `wspace bench refine`: the weight codecs' training loop with the
//! behavioural loss, and latent refinement, on a synthetic zoo ([`crate::synthetic`]) of the quick
//! pipeline's shapes: the figures to compare with `scripts/reference/bench_autoencoder_torch.py` and
//! `scripts/reference/bench_refine_torch.py`.
//!
//! ```text
//! wspace bench autoencoder [--architecture mlp|transformer] [--models N] [--val V] [--epochs E] [--batch B]
//!                          [--probes P] [--components K] [--repeats X] [--format text|json]
//! wspace bench refine [--codec mlp|transformer] [--models N] [--steps S] [--probes P] [--label-weight λ]
//!                     [--components K] [--repeats X] [--format text|json]
//! ```
//! - `autoencoder`: `N` train and `V` val models; a per-parameter PCA of `K` components fitted on the
//!   train models (not timed). `mlp`: [`super::autoencoder::train`], hidden `[256]`, latent 32, ELU;
//!   `transformer`: [`super::transformer`]'s loop, `d_model` 64, 4 heads, 2 layers, 32 latent values per
//!   token, input noise 0.05, contrastive weight 0.1 at τ 0.1. Both: the behavioural loss with β 0.1 at
//!   temperature 2 on `P` probe images per model, AdamW (lr 1e-3, weight decay 1e-5), batches of `B`,
//!   `E` epochs without early stopping, the val loss after every epoch (as the stage).
//! - `refine`: the latents of `N` models under an untrained codec (initialised from seed 0), each
//!   refined by `S` Adam steps (lr 0.01) on `P` probe images with `(1 − λ)·distillation + λ·CE` at
//!   temperature 2, models in parallel (as `evaluate-reconstruction` and `sample` run it).
//!
//! Reported: the best and the median wall time over `X` runs, models (rows) per second and the
//! behavioural term's images per second (forward and backward through `cnn-s`: `N · E · P` or
//! `N · S · P` over the median), in all and per thread. Threads: `RAYON_NUM_THREADS` (candle's pool
//! and the kernel's), default every core.

use rayon::prelude::*;
use wspace_stage_api::NoProgress;

use super::autoencoder::{self, Activation, Autoencoder, AutoencoderConfig, BehaviourData, MlpOptions};
use super::behaviour::{self, BehaviourOptions, RefineOptions};
use super::linalg::ComponentRule;
use super::pca::{ComponentSpec, PcaOptions, WeightPca};
use super::tokens::TokenLayout;
use super::transformer::{Normaliser, Rows, TokenAutoencoder, TransformerConfig, TransformerObjective, TransformerOptions};
use crate::bench_args::{device, fit_params, fraction, open, parse, positive, report, time_runs, Format};
use crate::device::DeviceName;
use crate::nn::PARAM_SPECS;
use crate::synthetic::{self, Model};
use crate::zoo::store::ParamShape;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq)]
enum Architecture {
    Mlp,
    Transformer,
}

/// The weight autoencoder's training loop with the behavioural loss.
#[derive(clap::Parser, Debug)]
struct AutoencoderArgs {
    #[arg(long, value_enum, default_value_t = Architecture::Mlp)]
    architecture: Architecture,
    /// Train models (the quick pipeline: 70 models × 2 checkpoints)
    #[arg(long, value_parser = positive, default_value_t = 140)]
    models: usize,
    /// Val models (the val loss after every epoch)
    #[arg(long, value_parser = positive, default_value_t = 20)]
    val: usize,
    #[arg(long, value_parser = positive, default_value_t = 10)]
    epochs: usize,
    #[arg(long, value_parser = positive, default_value_t = 16)]
    batch: usize,
    /// Probe images per model (the behavioural term)
    #[arg(long, value_parser = positive, default_value_t = 64)]
    probes: usize,
    /// PCA components per parameter (`mlp`)
    #[arg(long, value_parser = positive, default_value_t = 32)]
    components: usize,
    /// Timed runs (the best and the median are reported)
    #[arg(long, value_parser = positive, default_value_t = 3)]
    repeats: usize,
    /// Where the loop runs: cpu, or cuda (GPU 0; a build with the `cuda` feature)
    #[arg(long, value_parser = device, default_value = "cpu")]
    device: DeviceName,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Latent refinement: Adam on each model's latent through the frozen decoder.
#[derive(clap::Parser, Debug)]
struct RefineArgs {
    #[arg(long, value_enum, default_value_t = Architecture::Transformer)]
    codec: Architecture,
    #[arg(long, value_parser = positive, default_value_t = 32)]
    models: usize,
    #[arg(long, value_parser = positive, default_value_t = 50)]
    steps: usize,
    #[arg(long, value_parser = positive, default_value_t = 64)]
    probes: usize,
    /// λ: the weight of the cross-entropy (`sample.method = "flow"` refines with 1)
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    label_weight: f64,
    #[arg(long, value_parser = positive, default_value_t = 32)]
    components: usize,
    #[arg(long, value_parser = positive, default_value_t = 3)]
    repeats: usize,
    /// Where the loop runs: cpu, or cuda (GPU 0; a build with the `cuda` feature)
    #[arg(long, value_parser = device, default_value = "cpu")]
    device: DeviceName,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

const MLP: (usize, usize) = (256, 32);
const BEHAVIOUR: BehaviourOptions = BehaviourOptions { beta: 0.1, probe_images: 0, temperature: 2.0 };

fn transformer_options() -> TransformerOptions {
    TransformerOptions {
        d_model: 64,
        heads: 4,
        layers: 2,
        token_latent: 32,
        token_width: None,
        permute: false,
        noise: 0.05,
        contrastive_weight: 0.1,
        tau: 0.1,
    }
}

/// The PCA of `K` components fitted on `models`.
fn fit_pca(models: &[Model], components: usize) -> Result<WeightPca, String> {
    let shapes: Vec<ParamShape> =
        PARAM_SPECS.iter().map(|p| ParamShape { name: p.name.to_string(), shape: p.shape.to_vec() }).collect();
    let flat: Vec<Vec<f32>> = models.iter().map(|m| m.flat.clone()).collect();
    let opts = PcaOptions { components: ComponentSpec::all(ComponentRule::Count(components)), ..PcaOptions::default() };
    Ok(WeightPca::fit("cnn-s", &shapes, &flat, &opts).map_err(|e| e.to_string())?.0)
}

/// The models' normalised coefficients, row after row.
fn coefficients(pca: &WeightPca, models: &[Model]) -> Vec<f32> {
    let flat: Vec<Vec<f32>> = models.iter().map(|m| m.flat.clone()).collect();
    pca.encode_rows(&flat).chunks(pca.coefficient_dim().max(1)).flat_map(|c| pca.normalise(c)).collect()
}

fn rows(models: &[Model]) -> Rows {
    Rows { flat: models.iter().map(|m| m.flat.clone()).collect(), probes: models.iter().map(|m| m.probe.clone()).collect() }
}

pub fn bench_autoencoder(args: &[String]) -> Result<String, String> {
    let a: AutoencoderArgs = match parse("autoencoder", args) {
        Ok(a) => a,
        Err(help_or_error) => return help_or_error,
    };
    let models = synthetic::zoo(a.models + a.val, a.probes);
    let (train, val) = models.split_at(a.models);
    let fit = fit_params(a.epochs, a.batch, 1e-5, a.device);
    let behaviour = BehaviourOptions { probe_images: a.probes, ..BEHAVIOUR };
    let times = match a.architecture {
        Architecture::Mlp => {
            let pca = fit_pca(train, a.components)?;
            let (tr, va) = (coefficients(&pca, train), coefficients(&pca, val));
            let (p_train, p_val): (Vec<_>, Vec<_>) =
                (train.iter().map(|m| m.probe.clone()).collect(), val.iter().map(|m| m.probe.clone()).collect());
            let data = BehaviourData { pca: &pca, train: &p_train, val: &p_val, options: behaviour };
            let mlp = MlpOptions { hidden: vec![MLP.0], latent_dim: MLP.1, activation: Activation::Elu };
            let d = pca.coefficient_dim();
            time_runs(a.repeats, || {
                autoencoder::train(&tr, &va, d, (&mlp, &fit), Some(&data), &NoProgress).map(|_| ()).map_err(|e| e.to_string())
            })?
        }
        Architecture::Transformer => {
            let (tr, va) = (rows(train), rows(val));
            let opts = transformer_options();
            let layout = TokenLayout::new("cnn-s", None).map_err(|e| e.to_string())?;
            time_runs(a.repeats, || {
                let arch = ("cnn-s", layout.clone());
                let mut objective =
                    TransformerObjective::new(arch, (&tr, &va), (&opts, &fit, Some(behaviour))).map_err(|e| e.to_string())?;
                objective.fit(&NoProgress).map(|_| ()).map_err(|e| e.to_string())
            })?
        }
    };
    let what = format!(
        "{:?} autoencoder, behavioural loss: {} train + {} val models, {} epochs, batch {}, {} probes",
        a.architecture, a.models, a.val, a.epochs, a.batch, a.probes
    );
    let extra = serde_json::json!({
        "architecture": format!("{:?}", a.architecture).to_lowercase(), "models": a.models, "val": a.val,
        "epochs": a.epochs, "batch": a.batch, "probes": a.probes, "repeats": a.repeats,
    });
    let per_run = (a.models * a.epochs, a.models * a.epochs * a.probes);
    Ok(report("autoencoder", what, times, per_run, extra, a.format))
}

pub fn bench_refine(args: &[String]) -> Result<String, String> {
    let a: RefineArgs = match parse("refine", args) {
        Ok(a) => a,
        Err(help_or_error) => return help_or_error,
    };
    let dev = open(a.device)?;
    let models = synthetic::zoo(a.models, a.probes);
    let o = RefineOptions { steps: a.steps, lr: 0.01, probe_images: a.probes, temperature: 2.0, label_weight: a.label_weight };
    let e = |e: wspace_stage_api::StageError| e.to_string();
    let times = match a.codec {
        Architecture::Mlp => {
            let pca = fit_pca(&models, a.components)?;
            let config = AutoencoderConfig {
                input_dim: pca.coefficient_dim(),
                hidden: vec![MLP.0],
                latent_dim: MLP.1,
                activation: Activation::Elu,
            };
            let ae = Autoencoder::init(config, 0, &dev).map_err(e)?;
            let latents = ae.encode(&coefficients(&pca, &models)).map_err(e)?;
            let decoder = |h: &candle_core::Tensor| ae.decode_tensor(h);
            time_runs(a.repeats, || {
                latents
                    .par_chunks(MLP.1)
                    .zip(&models)
                    .try_for_each(|(h, m)| behaviour::refine(&decoder, &pca, h, &m.probe, &o, &dev).map(|_| ()).map_err(e))
            })?
        }
        Architecture::Transformer => {
            let layout = TokenLayout::new("cnn-s", None).map_err(e)?;
            let t = transformer_options();
            let config = TransformerConfig {
                arch: "cnn-s".into(),
                tokens: layout.tokens(),
                token_width: layout.width,
                d_model: t.d_model,
                heads: t.heads,
                layers: t.layers,
                token_latent: t.token_latent,
            };
            let flat: Vec<&[f32]> = models.iter().map(|m| m.flat.as_slice()).collect();
            let model = TokenAutoencoder::init(config, Normaliser::fit(layout, &flat), 0, &dev).map_err(e)?;
            let latents = model.encode(&flat).map_err(e)?;
            let k = model.config.latent_dim();
            let decoder = |h: &candle_core::Tensor| model.decode_flat_tensor(h);
            time_runs(a.repeats, || {
                latents.par_chunks(k).zip(&models).try_for_each(|(h, m)| {
                    behaviour::refine(&decoder, &model.normaliser, h, &m.probe, &o, &dev).map(|_| ()).map_err(e)
                })
            })?
        }
    };
    let what = format!(
        "latent refinement, {:?} codec: {} models × {} steps, {} probes, λ {}",
        a.codec, a.models, a.steps, a.probes, a.label_weight
    );
    let extra = serde_json::json!({
        "codec": format!("{:?}", a.codec).to_lowercase(), "models": a.models, "steps": a.steps, "probes": a.probes,
        "label_weight": a.label_weight, "repeats": a.repeats,
    });
    Ok(report("refine", what, times, (a.models, a.models * a.steps * a.probes), extra, a.format))
}
