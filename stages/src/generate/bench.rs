//! `wspace bench align`: the alignment's training loop on synthetic pairs of the quick pipeline's
//! shapes, the figure to compare with the same loop in PyTorch (`scripts/reference/bench_align_torch.py`).
//!
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

use std::time::Instant;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wspace_stage_api::NoProgress;

use super::align::{train, AlignOptions, Pair, Pairs};
use crate::bench_args::{parse, positive, Format};
use crate::data::TaskSplit;
use crate::fit::FitParams;
use crate::sampling::normal_f32;
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
        fit: FitParams { epochs: a.epochs, patience: a.epochs, lr: 1e-3, weight_decay: 1e-4, batch_size: a.batch, seed: 0 },
    };
    let threads = candle_core::utils::get_num_threads();
    let mut times = Vec::with_capacity(a.repeats);
    for _ in 0..a.repeats {
        let start = Instant::now();
        train(&pairs, &opts, &NoProgress).map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[times.len() / 2]);
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
