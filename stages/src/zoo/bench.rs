//! `wspace bench zoo`: zoo training throughput on the embedded Fashion-MNIST data.
//!
//! ```text
//! wspace bench zoo [--arch cnn-s] [--models M] [--epochs E] [--batch B] [--threads T] [--format text|json]
//! ```
//! Trains `M` `cnn-s` models with Adam (lr 1e-3) for `E` epochs on the 3,000 training images of the
//! classes (0, 1, 2), `T` models at a time (one thread each), and reports training images per second
//! (images seen by the optimizer, over the wall time of training, data preparation excluded).

use std::time::Instant;

use rayon::prelude::*;

use crate::bench_args::{parse, positive, Format};
use crate::data::DatasetOptions;
use crate::nn::{CnnS, Optimizer, TrainConfig, Trainer};

/// Zoo training throughput on the embedded Fashion-MNIST data (classes 0, 1, 2).
#[derive(clap::Parser, Debug)]
struct Args {
    /// The architecture (only `cnn-s` can be benchmarked)
    #[arg(long, value_parser = ["cnn-s"], default_value = "cnn-s")]
    arch: String,
    /// Models to train
    #[arg(long, value_parser = positive, default_value_t = 8)]
    models: usize,
    /// Epochs per model
    #[arg(long, value_parser = positive, default_value_t = 2)]
    epochs: usize,
    /// Mini-batch size
    #[arg(long, value_parser = positive, default_value_t = 64)]
    batch: usize,
    /// Models trained at a time (one thread each)
    #[arg(long, value_parser = positive, default_value_t = 1)]
    threads: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn bench_zoo(args: &[String]) -> Result<String, String> {
    let a: Args = match parse("zoo", args) {
        Ok(a) => a,
        Err(help_or_error) => return help_or_error,
    };
    let data = DatasetOptions::default().build().map_err(|e| e.to_string())?;
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..data.train.len() {
        let l = data.train.labels[i];
        if (0..3).contains(&l) {
            images.extend_from_slice(data.train.image(i));
            labels.push(l as u8);
        }
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(a.threads).build().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let losses: Vec<f64> = pool.install(|| {
        (0..a.models)
            .into_par_iter()
            .map(|m| {
                let cfg = TrainConfig { optimizer: Optimizer::adam(1e-3), batch_size: a.batch, seed: m as u64 };
                let mut t = Trainer::new(CnnS::init(1000 + m as u64), &cfg);
                let mut loss = f64::NAN;
                for _ in 0..a.epochs {
                    loss = t.train_epoch(&images, &labels).loss;
                }
                loss
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let seen = (a.models * a.epochs * labels.len()) as f64;
    let ips = seen / seconds;
    let mean_loss = losses.iter().sum::<f64>() / losses.len() as f64;
    let v = serde_json::json!({
        "arch": "cnn-s", "models": a.models, "epochs": a.epochs, "batch": a.batch, "threads": a.threads,
        "images": seen, "seconds": seconds, "images_per_second": ips,
        "images_per_second_per_thread": ips / a.threads as f64, "mean_last_epoch_loss": mean_loss,
    });
    Ok(if a.format == Format::Json {
        v.to_string()
    } else {
        format!(
            "cnn-s: {} models × {} epochs × {} images, batch {}, {} threads: {:.0} images/s ({:.0} per thread) in {:.2} s; mean last-epoch loss {:.4}",
            a.models,
            a.epochs,
            labels.len(),
            a.batch,
            a.threads,
            ips,
            ips / a.threads as f64,
            seconds,
            mean_loss
        )
    })
}
