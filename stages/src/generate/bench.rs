//! `wspace bench align`, `generator` and `flow`: the training loops of the stages that learn P(W | D, R),
//! on synthetic data of the quick pipeline's shapes; the figures to compare with the same loops in
//! PyTorch (`scripts/reference/bench_align_torch.py`, `bench_generator_torch.py`, `bench_flow_torch.py`).
//!
//! # align
//! ```text
//! wspace bench align [--pairs N] [--val V] [--epochs E] [--batch B] [--dataset-dim D] [--latent-dim K]
//!                    [--results-dim R] [--hidden H] [--repeats X] [--format text|json]
//! ```
//! `N` train pairs and `V` val pairs: standard-normal dataset embeddings (`D` values: the three class
//! embeddings of EfficientNet-Lite0, 3 × 1280) and weight latents (`K`), losses spread over 10 bins,
//! all from ChaCha8 seeded 0. Each run is [`super::align::train`] for `E` epochs (patience `E`: no
//! early stop) of AdamW (lr 1e-3, wd 1e-4) on batches of `B`, NT-Xent at τ = 0.1, the val loss after
//! every epoch, as the stage trains. Reported: the best and the median wall time over `X` runs, and
//! train pairs per second (`N · E / median`), in all and per thread. Threads: candle's CPU operations
//! size their own pool from `RAYON_NUM_THREADS` (or `CANDLE_NUM_THREADS`), default every core:
//! `RAYON_NUM_THREADS=1 wspace bench align` is the one-thread figure.
//!
//! # generator
//! ```text
//! wspace bench generator [--models N] [--val V] [--epochs E] [--batch B] [--probes P] [--label-weight λ]
//!                        [--repeats X] [--format text|json]
//! ```
//! [`super::generator`]'s loop on `N` train and `V` val examples of a synthetic zoo
//! ([`crate::synthetic`]): 10 classes with standard-normal 1280-value embeddings, hidden `[128]`, 8 noise
//! values per row (σ 1), the body of the first model; `(1 − λ)·distillation + λ·CE` at temperature 1 on
//! `P` probe images per example, AdamW (lr 1e-3) on batches of `B`, `E` epochs, the val loss after every
//! epoch. Reported: examples per second and the behavioural term's images per second (`N · E · P` over
//! the median), to set beside `wspace bench zoo --threads 1` (the same kernel, training).
//!
//! # flow
//! ```text
//! wspace bench flow [--models N] [--val V] [--orders O] [--epochs E] [--batch B] [--tokens T] [--width K]
//!                   [--repeats X] [--format text|json]
//! ```
//! [`super::flow`]'s loop on `N · O` train examples (each model under `O` class orders) and `V` val
//! models (4 fixed draws each): standard-normal latents of `T × K`, 10 classes with 9 coordinates,
//! `d_model` 64, 4 heads, 2 layers, velocity prediction, prompt dropout 0.1, AdamW (lr 1e-3) on batches
//! of `B`, `E` epochs. Reported: train examples per second.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wspace_stage_api::NoProgress;

use super::align::{train, AlignOptions, Pair, Pairs};
use super::flow::model::{Flow, FlowConfig, Predict, Prompt as FlowPrompt};
use super::flow::{self, FlowOptions};
use super::generator::{self, Example, Generator, GeneratorConfig, GeneratorOptions};
use crate::bench_args::{device, fit_params, fraction, open, parse, positive, report, time_runs, Format};
use crate::data::TaskSplit;
use crate::device::DeviceName;
use crate::nn::BODY_PARAMS;
use crate::sampling::normal_f32;
use crate::synthetic;
use crate::zoo::store::Checkpoint;

/// The alignment's training loop on synthetic pairs.
#[derive(clap::Parser, Debug)]
struct Args {
    /// Train pairs
    #[arg(long, value_parser = positive, default_value_t = 280)]
    pairs: usize,
    /// Val pairs (the val loss after every epoch)
    #[arg(long, value_parser = positive, default_value_t = 40)]
    val: usize,
    #[arg(long, value_parser = positive, default_value_t = 20)]
    epochs: usize,
    #[arg(long, value_parser = positive, default_value_t = 32)]
    batch: usize,
    #[arg(long, value_parser = positive, default_value_t = 3 * 1280)]
    dataset_dim: usize,
    #[arg(long, value_parser = positive, default_value_t = 32)]
    latent_dim: usize,
    #[arg(long, value_parser = positive, default_value_t = 512)]
    results_dim: usize,
    #[arg(long, value_parser = positive, default_value_t = 512)]
    hidden: usize,
    /// Timed runs (the best and the median are reported)
    #[arg(long, value_parser = positive, default_value_t = 3)]
    repeats: usize,
    /// Where the loop runs: cpu, or cuda (GPU 0; a build with the `cuda` feature)
    #[arg(long, value_parser = device, default_value = "cpu")]
    device: DeviceName,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// `n` train then `v` val pairs of synthetic embeddings and latents (see the module doc).
fn synthetic_pairs(a: &Args) -> Pairs {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let total = a.pairs + a.val;
    let pairs = (0..total)
        .map(|i| Pair {
            model_id: i,
            checkpoint: Checkpoint::Final,
            split: if i < a.pairs { TaskSplit::Train } else { TaskSplit::Val },
            task_id: i,
            val_loss: 0.1 + (i % 10) as f64 * 0.1,
        })
        .collect();
    let embeddings = (0..total * a.dataset_dim).map(|_| normal_f32(&mut rng)).collect();
    let latents = (0..total * a.latent_dim).map(|_| normal_f32(&mut rng)).collect();
    Pairs { pairs, embeddings, dataset_dim: a.dataset_dim, latents, latent_dim: a.latent_dim }
}

pub fn bench_align(args: &[String]) -> Result<String, String> {
    let a: Args = match parse("align", args) {
        Ok(a) => a,
        Err(help_or_error) => return help_or_error,
    };
    let pairs = synthetic_pairs(&a);
    let opts = AlignOptions {
        bins: 10,
        results_dim: a.results_dim,
        hidden: vec![a.hidden],
        tau: 0.1,
        fit: fit_params(a.epochs, a.batch, 1e-4, a.device),
    };
    let threads = candle_core::utils::get_num_threads();
    let (best, median) = time_runs(a.repeats, || train(&pairs, &opts, &NoProgress).map(|_| ()).map_err(|e| e.to_string()))?;
    let per_second = (a.pairs * a.epochs) as f64 / median;
    Ok(if a.format == Format::Json {
        serde_json::json!({
            "bench": "align", "pairs": a.pairs, "val": a.val, "epochs": a.epochs, "batch": a.batch,
            "dataset_dim": a.dataset_dim, "latent_dim": a.latent_dim, "results_dim": a.results_dim, "hidden": a.hidden,
            "threads": threads, "repeats": a.repeats, "best_s": best, "median_s": median, "pairs_per_s": per_second,
            "pairs_per_s_per_thread": per_second / threads as f64,
        })
        .to_string()
    } else {
        format!(
            "align training: {} train + {} val pairs, {} epochs, batch {}, [{} + {}] → {} → {}, {} threads: best {:.3} s, median {:.3} s over {} runs ({:.0} train pairs/s)",
            a.pairs, a.val, a.epochs, a.batch, a.dataset_dim, a.results_dim, a.hidden, a.latent_dim, threads, best, median, a.repeats, per_second
        )
    })
}

/// The generator's training loop on a synthetic zoo.
#[derive(clap::Parser, Debug)]
struct GeneratorArgs {
    /// Train examples (the quick pipeline: 70 models × 2 checkpoints)
    #[arg(long, value_parser = positive, default_value_t = 140)]
    models: usize,
    #[arg(long, value_parser = positive, default_value_t = 20)]
    val: usize,
    #[arg(long, value_parser = positive, default_value_t = 5)]
    epochs: usize,
    #[arg(long, value_parser = positive, default_value_t = 16)]
    batch: usize,
    #[arg(long, value_parser = positive, default_value_t = 256)]
    probes: usize,
    /// λ: the weight of the cross-entropy
    #[arg(long, default_value_t = 0.5, value_parser = fraction)]
    label_weight: f64,
    #[arg(long, value_parser = positive, default_value_t = 3)]
    repeats: usize,
    /// Where the loop runs: cpu, or cuda (GPU 0; a build with the `cuda` feature)
    #[arg(long, value_parser = device, default_value = "cpu")]
    device: DeviceName,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Classes of the synthetic embeddings and their length (Fashion-MNIST, EfficientNet-Lite0).
const CLASSES: (usize, usize) = (10, 1280);

pub fn bench_generator(args: &[String]) -> Result<String, String> {
    let a: GeneratorArgs = match parse("generator", args) {
        Ok(a) => a,
        Err(help_or_error) => return help_or_error,
    };
    let dev = open(a.device)?;
    let models = synthetic::zoo(a.models + a.val, a.probes);
    let examples: Vec<Example> =
        models.iter().map(|m| Example { classes: m.classes, loss: m.val_loss, probe: m.probe.clone() }).collect();
    let (train, val): (Vec<&Example>, Vec<&Example>) =
        (examples[..a.models].iter().collect(), examples[a.models..].iter().collect());
    let opts = GeneratorOptions {
        hidden: vec![128],
        noise_dim: 8,
        noise: 1.0,
        fit: fit_params(a.epochs, a.batch, 0.0, a.device),
        probe_images: a.probes,
        temperature: 1.0,
        label_weight: a.label_weight,
        final_only: false,
    };
    let config = GeneratorConfig {
        classes: CLASSES.0,
        dataset_dim: CLASSES.1,
        hidden: opts.hidden.clone(),
        noise_dim: opts.noise_dim,
        noise: opts.noise,
        loss_min: 0.1,
        loss_max: 1.0,
    };
    let embeddings = synthetic::normals(CLASSES.0, CLASSES.1, 7);
    let times = time_runs(a.repeats, || {
        let gen = Generator::init(config.clone(), &models[0].flat[..BODY_PARAMS], embeddings.clone(), 0, &dev)
            .map_err(|e| e.to_string())?;
        generator::fit_examples(&gen, (&train, &val), &opts, &NoProgress).map(|_| ()).map_err(|e| e.to_string())
    })?;
    let what = format!(
        "generator training: {} train + {} val examples, {} epochs, batch {}, {} probes, λ {}",
        a.models, a.val, a.epochs, a.batch, a.probes, a.label_weight
    );
    let extra = serde_json::json!({
        "models": a.models, "val": a.val, "epochs": a.epochs, "batch": a.batch, "probes": a.probes,
        "label_weight": a.label_weight, "repeats": a.repeats,
    });
    Ok(report("generator", what, times, (a.models * a.epochs, a.models * a.epochs * a.probes), extra, a.format))
}

/// The flow's training loop on synthetic latents.
#[derive(clap::Parser, Debug)]
struct FlowArgs {
    /// Train models (the quick pipeline: 70 models × 2 checkpoints)
    #[arg(long, value_parser = positive, default_value_t = 140)]
    models: usize,
    #[arg(long, value_parser = positive, default_value_t = 20)]
    val: usize,
    /// Class orders per train model (`permute_classes`: 6)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=6), default_value_t = 6)]
    orders: u64,
    #[arg(long, value_parser = positive, default_value_t = 5)]
    epochs: usize,
    #[arg(long, value_parser = positive, default_value_t = 32)]
    batch: usize,
    /// Latent tokens (the token transformer on cnn-s: 41)
    #[arg(long, value_parser = clap::value_parser!(u64).range(3..=4096), default_value_t = 41)]
    tokens: u64,
    /// Latent values per token
    #[arg(long, value_parser = positive, default_value_t = 32)]
    width: usize,
    #[arg(long, value_parser = positive, default_value_t = 3)]
    repeats: usize,
    /// Where the loop runs: cpu, or cuda (GPU 0; a build with the `cuda` feature)
    #[arg(long, value_parser = device, default_value = "cpu")]
    device: DeviceName,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn bench_flow(args: &[String]) -> Result<String, String> {
    let a: FlowArgs = match parse("flow", args) {
        Ok(a) => a,
        Err(help_or_error) => return help_or_error,
    };
    let dev = open(a.device)?;
    let (tokens, orders) = (a.tokens as usize, a.orders as usize);
    let n = tokens * a.width;
    let class_dim = CLASSES.0 - 1;
    let example = |i: usize, x1: &[f32]| flow::Example {
        x1: x1.to_vec(),
        prompt: FlowPrompt { classes: [i % 10, (i + 1) % 10, (i + 2) % 10], loss: 0.1 + (i % 10) as f64 * 0.1 },
    };
    let latents = synthetic::normals(a.models * orders + a.val, n, 0);
    let all: Vec<flow::Example> = latents.chunks_exact(n).enumerate().map(|(i, x)| example(i, x)).collect();
    let (train, val) = all.split_at(a.models * orders);
    let opts = FlowOptions {
        d_model: 64,
        heads: 4,
        layers: 2,
        predict: Predict::Velocity,
        cond_dropout: 0.1,
        permute_classes: orders > 1,
        fit: fit_params(a.epochs, a.batch, 0.0, a.device),
    };
    let config = FlowConfig {
        codec: "transformer".into(),
        tokens,
        width: a.width,
        class_token: tokens - 3,
        classes: CLASSES.0,
        class_dim,
        d_model: opts.d_model,
        heads: opts.heads,
        layers: opts.layers,
        predict: opts.predict,
        loss_min: 0.1,
        loss_max: 1.0,
    };
    let coords = synthetic::normals(CLASSES.0, class_dim, 7);
    let times = time_runs(a.repeats, || {
        let f = Flow::init(config.clone(), vec![0.0; n], vec![1.0; n], coords.clone(), 0, &dev).map_err(|e| e.to_string())?;
        flow::fit_examples(&f, (train, val), &opts, &NoProgress).map(|_| ()).map_err(|e| e.to_string())
    })?;
    let what = format!(
        "flow training: {} train examples ({} models × {} orders) + {} val models, {} epochs, batch {}, latent {} × {}",
        train.len(),
        a.models,
        orders,
        a.val,
        a.epochs,
        a.batch,
        tokens,
        a.width
    );
    let extra = serde_json::json!({
        "models": a.models, "orders": orders, "examples": train.len(), "val": a.val, "epochs": a.epochs, "batch": a.batch,
        "tokens": tokens, "width": a.width, "repeats": a.repeats,
    });
    Ok(report("flow", what, times, (train.len() * a.epochs, 0), extra, a.format))
}
