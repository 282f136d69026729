//! A hand-written CPU training kernel for `cnn-s`, the Model-Zoos CNN (2,317 parameters), in pure Rust.
//!
//! ```text
//! x [1,28,28] (pixels/255)
//!  → conv1 Conv2d(1→8, k5)  → MaxPool2d(2) → tanh   [8,12,12]
//!  → conv2 Conv2d(8→6, k5)  → MaxPool2d(2) → tanh   [6,4,4]
//!  → conv3 Conv2d(6→4, k2)  → tanh                   [4,3,3] → flatten (C,H,W) [36]
//!  → fc1 Linear(36→20) → tanh → fc2 Linear(20→3) → logits; loss = mean cross-entropy
//! ```
//!
//! Why not candle: on networks this small, per-op allocation and dispatch dominate (≈ 960 img/s on two
//! threads, see DESIGN.md), and candle 0.11's max-pool backward is wrong. Here a batch is cut into blocks
//! of 16 images laid out lane-innermost ([`kernels`]), so every layer is a loop of 16-wide vector
//! multiply-adds with weights broadcast; the whole forward/backward of a block is compiled once per
//! instruction set (AVX-512, AVX2, baseline) and chosen at run time; all buffers live in a
//! [`Workspace`] allocated once per trainer. Results are bit-identical across runs and instruction sets.
//!
//! [`graph`] is the same network as a candle graph, for the behavioural term on a GPU.
//!
//! Parameter names, shapes and initialisation follow PyTorch ([`cnn_s`]); optimizers follow PyTorch's
//! Adam and SGD-with-momentum ([`optim`]); [`train`] has the training loop, evaluation and divergence
//! handling; [`synthetic`] makes learnable test data. `wspace bench zoo` measures throughput.
//!
//! Correctness evidence (the tests in this module): every layer's backward and the whole network's
//! gradient against central finite differences; logits, loss, gradients and one/two Adam and
//! SGD-momentum steps against PyTorch (`scripts/reference/cnn_s_reference.py` writes
//! `stages/tests/fixtures/cnn_s_reference.json`); max-pool tie-breaking against PyTorch; training on a
//! separable problem lowers the loss; divergence is flagged, not a panic.

pub mod cnn_s;
pub mod distill;
pub mod graph;
pub mod kernels;
pub mod net;
pub mod optim;
pub mod synthetic;
pub mod train;

#[cfg(test)]
mod tests;

pub use cnn_s::{
    classes_of_len, num_params, param_specs, CnnS, ParamError, ParamSpec, BODY_PARAMS, IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES,
    NUM_PARAMS, PARAM_SPECS, PARAM_SPECS_10, SUPPORTED_CLASSES,
};
pub use distill::{distill, distill_with_labels};
pub use net::{Isa, Workspace};
pub use optim::{Optimizer, OptimizerState};
pub use train::{
    evaluate, evaluate_and_logits, logits_f32, logits_n_u8, logits_u8, train, EpochStats, Evaluation, StepStats, TrainConfig,
    Trainer,
};

/// Mean cross-entropy of `logits` (any number of outputs) divided by `scale` (> 0) against `labels`,
/// in f64 (log-sum-exp after the largest value); NaN for no labels or a scale ≤ 0.
pub fn mean_cross_entropy<T: AsRef<[f32]>>(logits: &[T], labels: &[u8], scale: f64) -> f64 {
    if labels.is_empty() || scale <= 0.0 {
        return f64::NAN;
    }
    let mut sum = 0.0;
    for (z, &y) in logits.iter().zip(labels) {
        let v: Vec<f64> = z.as_ref().iter().map(|&x| x as f64 / scale).collect();
        let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        sum += m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - v[y as usize];
    }
    sum / labels.len() as f64
}

/// The predicted class of one image's logits: the first maximum (a later value wins only if strictly
/// greater), as the kernels count correct predictions and as `torch.argmax` does.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate().skip(1) {
        if v > logits[best] {
            best = i;
        }
    }
    best
}
