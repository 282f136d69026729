//! A synthetic, learnable 3-class set of 28×28 u8 images for the kernel's tests (noise plus a
//! class-dependent bright square). Throughput on real data: `wspace bench zoo` (`crate::zoo::bench`).

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cnn_s::{IMAGE_PIXELS, IMAGE_SIDE};

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
