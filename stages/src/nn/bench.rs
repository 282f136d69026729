//! Training throughput of the `cnn-s` kernel on synthetic data (what `wspace bench zoo` reports).
//!
//! Each model is trained with Adam (lr 10⁻³) for `epochs` epochs on the same synthetic, learnable
//! 3-class set of [`BENCH_IMAGES`] 28×28 u8 images (noise plus a class-dependent bright square).
//! Models are spread round-robin over `threads` OS threads, each with its own trainer (so its own
//! workspace); one model never spans threads.

use std::time::Instant;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cnn_s::{CnnS, IMAGE_PIXELS, IMAGE_SIDE};
use super::optim::Optimizer;
use super::train::{TrainConfig, Trainer};

/// Images per synthetic training set.
pub const BENCH_IMAGES: usize = 2048;

/// Result of [`train_throughput`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Training images processed per second, all threads together.
    pub images_per_second: f64,
    /// `images_per_second / threads`.
    pub images_per_second_per_thread: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Training images processed (models × epochs × [`BENCH_IMAGES`]).
    pub images: usize,
    pub threads: usize,
    /// Mean final-epoch training loss over the models (a sanity check that they learn).
    pub mean_final_loss: f64,
}

/// A deterministic synthetic 3-class set: uniform noise in 0..128 plus, for class `c`, a bright 8×8
/// square at one of three positions. Returns (`n × 784` images, `n` labels).
pub fn synthetic_data(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0u8; n * IMAGE_PIXELS];
    let mut labels = vec![0u8; n];
    for i in 0..n {
        let c = (rng.next_u32() % 3) as usize;
        labels[i] = c as u8;
        let img = &mut images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS];
        for p in img.iter_mut() {
            *p = (rng.next_u32() >> 25) as u8;
        }
        let (y0, x0) = [(3, 3), (3, 17), (17, 10)][c];
        for y in y0..y0 + 8 {
            for x in x0..x0 + 8 {
                img[y * IMAGE_SIDE + x] = img[y * IMAGE_SIDE + x].saturating_add(120);
            }
        }
    }
    (images, labels)
}

/// Train `models` models for `epochs` epochs at batch size `batch` on `threads` threads (Adam) and
/// measure images per second.
pub fn train_throughput(models: usize, epochs: usize, batch: usize, threads: usize) -> Throughput {
    assert!(models > 0 && epochs > 0 && batch > 0 && threads > 0);
    let (images, labels) = synthetic_data(BENCH_IMAGES, 0xBE7C);
    let start = Instant::now();
    let losses: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (images, labels) = (&images, &labels);
                s.spawn(move || {
                    let mut out = Vec::new();
                    for m in (t..models).step_by(threads) {
                        let cfg = TrainConfig { optimizer: Optimizer::adam(1e-3), batch_size: batch, seed: m as u64 };
                        let mut tr = Trainer::new(CnnS::init(m as u64), &cfg);
                        let mut last = f64::NAN;
                        for _ in 0..epochs {
                            last = tr.train_epoch(images, labels).loss;
                        }
                        out.push(last);
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("bench thread panicked")).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let n = models * epochs * BENCH_IMAGES;
    let ips = n as f64 / seconds;
    Throughput {
        images_per_second: ips,
        images_per_second_per_thread: ips / threads as f64,
        seconds,
        images: n,
        threads,
        mean_final_loss: losses.iter().sum::<f64>() / losses.len() as f64,
    }
}
