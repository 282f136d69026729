//! A synthetic `cnn-s` zoo: the input of the learned stages' benchmarks (`wspace bench autoencoder`,
//! `refine`, `generator`, `flow`), so that each times its stage's training loop on the quick pipeline's
//! shapes without a cache.
//!
//! Model `m` is the `cnn-s` initialisation of seed 0 plus `N(0, 0.05²)` per weight (ChaCha8 seeded
//! `m + 1`); its probe is `probes` uniform-random images (seeded `1000 + m`), the network's own logits
//! on them as the teacher, and labels `i mod 3`; its task is the classes `(m, m + 1, m + 2) mod 10` and
//! its validation loss `0.1 + (m mod 10)·0.1`. The values are not a trained zoo's; the work per step
//! (shapes, probes, kernels) is the stage's.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::nn::{self, CnnS, IMAGE_PIXELS};
use crate::sampling::normal_f32;
use crate::weights::behaviour::Probe;
use crate::weights::evaluate::synthetic_images;

/// One synthetic model: flat `cnn-s` weights, its probe, its task's classes and its validation loss.
pub(crate) struct Model {
    pub flat: Vec<f32>,
    pub probe: Probe,
    pub classes: [usize; 3],
    pub val_loss: f64,
}

/// `count` synthetic models with `probes` probe images each (see the module doc).
pub(crate) fn zoo(count: usize, probes: usize) -> Vec<Model> {
    let init = CnnS::init(0).flat().to_vec();
    (0..count)
        .into_par_iter()
        .map(|m| {
            let mut rng = ChaCha8Rng::seed_from_u64(m as u64 + 1);
            let flat: Vec<f32> = init.iter().map(|w| w + 0.05 * normal_f32(&mut rng)).collect();
            let images = synthetic_images(probes, IMAGE_PIXELS, 1000 + m as u64);
            let teacher = nn::logits_f32(&CnnS::from_flat(flat.clone()), &images);
            let labels = (0..probes).map(|i| (i % 3) as u8).collect();
            let classes = [m % 10, (m + 1) % 10, (m + 2) % 10];
            Model { flat, probe: Probe { images, teacher, labels }, classes, val_loss: 0.1 + (m % 10) as f64 * 0.1 }
        })
        .collect()
}

/// `n × dim` standard normals (ChaCha8 seeded `seed`): synthetic embeddings and latents.
pub(crate) fn normals(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * dim).map(|_| normal_f32(&mut rng)).collect()
}
