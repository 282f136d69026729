//! ResNet-18 (torchvision's structure, names and initialisation; `fc` → 3 outputs) in candle, for
//! zoos of ResNet-18s; CPU by default, CUDA with the `cuda` cargo feature ([`DeviceChoice::Cuda`]).
//!
//! ```text
//! x [3,H,W] (grey replicated to 3; pixels/255, optionally normalised per channel)
//!  → conv1 7×7/2 pad 3 → bn1 → relu → maxpool 3×3/2 pad 1
//!  → layer1 (64) → layer2 (128, /2) → layer3 (256, /2) → layer4 (512, /2)   (2 BasicBlocks each)
//!  → global average pool → fc Linear(512→3) → logits; loss = mean cross-entropy
//! ```
//! Feature-map sides: 28×28 input (Fashion-MNIST) → 14 → 7 → 7 → 4 → 2 → 1; 32×32 → 16 → 8 → 8 → 4 → 2 → 1;
//! 224×224 → 112 → 56 → 56 → 28 → 14 → 7.
//!
//! CPU threads: candle's CPU ops use candle's own pool (`CANDLE_NUM_THREADS`, default the core count),
//! whose workers spin while waiting; on a loaded machine or with several models training in parallel
//! threads, set `CANDLE_NUM_THREADS=1` (measured here, 2 cores under load: 0.9–1.4 s per batch-32 step
//! at 28×28 with one thread, 1.8–4.8 s with two).
//!
//! * [`model`]: the network, [`tensor_specs`] (the 122 `state_dict` entries: names, shapes, kinds),
//!   [`ResNet18::init`] (torchvision's `ResNet.__init__`: conv `kaiming_normal_(fan_out, relu)`, BN
//!   weight 1 / bias 0, `fc` PyTorch's `Linear` default; drawn from our seeded ChaCha8 stream),
//!   training- and eval-mode forward, [`ResNet18::named_tensors`] / [`ResNet18::from_named_tensors`]
//!   (buffers included: `running_mean`, `running_var`, `num_batches_tracked`).
//! * [`ops`]: max-pool 3×3/2 pad 1 with PyTorch's gradient (candle's `max_pool2d` backward is wrong and
//!   refuses kernel ≠ stride), ReLU with PyTorch's gradient at 0, batch norm (train/eval),
//!   cross-entropy.
//! * [`optim`]: PyTorch's Adam and SGD-with-momentum ([`crate::nn::Optimizer`]) on tensors.
//! * [`train`]: [`Trainer`], [`train_model`], [`evaluate`], [`ImageSet`], [`ResnetTrainConfig`].
//!
//! Evidence (tests in this module): forward logits (train and eval mode), loss, every parameter's
//! gradient (sum, norm, sampled entries), running statistics, two SGD-momentum and two Adam steps
//! against PyTorch + torchvision in float64, in f32 within a budget derived from PyTorch's own float32
//! spread and in f64 (`scripts/reference/resnet18_reference.py` writes
//! `stages/tests/fixtures/resnet18_reference.json`); the max-pool's forward and input gradient (with
//! ties) against PyTorch and against central finite differences; the whole network's gradient against
//! finite differences in f64; names and shapes against torchvision's `state_dict`; bit-identical
//! initialisation and training on the CPU. `scripts/gpu-check.sh` compares a CUDA step with the CPU.

pub mod model;
pub mod ops;
pub mod optim;
pub mod train;

#[cfg(test)]
mod tests;

pub use model::{
    num_parameters, tensor_specs, BatchStats, NamedTensors, ResNet18, TensorKind, TensorSpec, IN_CHANNELS, NUM_CLASSES,
};
pub use optim::TensorOptimizer;
pub use train::{
    evaluate, logits, loss_and_gradients, train_model, DeviceChoice, Gradients, ImageSet, InputTransform, ResnetTrainConfig,
    Trainer,
};
