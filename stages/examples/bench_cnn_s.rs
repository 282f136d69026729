//! Training throughput of the hand-written `cnn-s` kernel (Adam, synthetic data).
//!
//! `cargo run --release -p wspace-stages --example bench_cnn_s -- [models] [epochs] [batch] [threads]`
//! (defaults 4 3 64 1). `WSPACE_NN_ISA=portable|avx2` forces a narrower kernel variant.

use wspace_stages::nn::{bench, Isa};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numeric arguments")).collect();
    let get = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (models, epochs, batch, threads) = (get(0, 4), get(1, 3), get(2, 64), get(3, 1));
    let t = bench::train_throughput(models, epochs, batch, threads);
    println!(
        "cnn-s {:?}: {} models × {} epochs × {} images, batch {}, {} thread(s): {:.0} img/s ({:.0} per thread), {:.2} s, final loss {:.4}",
        Isa::detect(),
        models,
        epochs,
        bench::BENCH_IMAGES,
        batch,
        threads,
        t.images_per_second,
        t.images_per_second_per_thread,
        t.seconds,
        t.mean_final_loss
    );
}
