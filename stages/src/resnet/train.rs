//! Training and evaluation of one ResNet-18 on u8 images (`N × C × H × W`, C = 1 or 3).
//!
//! Input transform: `x = (pixel / 255 − mean[c]) / std[c]` ([`InputTransform`]; identity normalisation
//! by default, as `cnn-s`); a grey image (C = 1) is replicated to the 3 input channels torchvision's
//! ResNet-18 has, so that a zoo model loads into `torchvision.models.resnet18(num_classes=3)`.
//!
//! A [`Trainer`] follows `nn::Trainer`: an epoch visits the training set in a fresh random order
//! (Fisher–Yates driven by a ChaCha8 stream seeded from [`ResnetTrainConfig::seed`]), with a short last
//! batch as PyTorch's `DataLoader` gives by default, except that a last batch of a single image is
//! skipped (PyTorch's BatchNorm refuses one value per channel, which ResNet-18 meets at `layer4` for
//! inputs up to 32×32). A step is a training-mode forward (batch statistics), the mean cross-entropy,
//! its gradient, the optimizer update and the running-statistics update, in PyTorch's order.
//!
//! Divergence: a step whose loss or gradient is not finite, or whose update would make a weight
//! non-finite, leaves the weights as they were and marks the trainer [`Trainer::diverged`]; later steps
//! and epochs do nothing and say so.
//!
//! On the CPU everything is deterministic (bit-identical run to run); on CUDA it is not guaranteed.

use candle_core::{DType, Device, DeviceLocation, Result, Tensor};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::model::{BatchStats, ResNet18, IN_CHANNELS};
use super::ops::cross_entropy;
use super::optim::{InPlaceOptimizer, TensorOptimizer};
use crate::nn::train::EpochTally;
use crate::nn::{EpochStats, Evaluation, Optimizer, StepStats};

/// Where to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal; needs the `cuda` cargo feature (an error otherwise).
    Cuda(usize),
}

impl DeviceChoice {
    /// The candle device (fails without the `cuda` feature or without a GPU).
    pub fn device(self) -> Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(i) => Device::new_cuda(i),
        }
    }
}

/// `x = (pixel / 255 − mean[c]) / std[c]` per input channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputTransform {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for InputTransform {
    fn default() -> Self {
        InputTransform { mean: [0.0; 3], std: [1.0; 3] }
    }
}

/// A set of images with labels: `pixels` is `N × C × H × W` u8 with `shape = [C, H, W]`, C ∈ {1, 3};
/// `labels` are `N` values in 0..3.
#[derive(Debug, Clone, Copy)]
pub struct ImageSet<'a> {
    pub pixels: &'a [u8],
    pub labels: &'a [u8],
    pub shape: [usize; 3],
}

impl ImageSet<'_> {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    fn check(&self) -> Result<()> {
        let [c, h, w] = self.shape;
        if c != 1 && c != 3 {
            candle_core::bail!("resnet18: images must have 1 or 3 channels, got {c}")
        }
        if self.pixels.len() != self.labels.len() * c * h * w {
            candle_core::bail!(
                "resnet18: {} pixels for {} images of shape {:?}",
                self.pixels.len(),
                self.labels.len(),
                self.shape
            )
        }
        if let Some(&l) = self.labels.iter().find(|&&l| l >= 3) {
            candle_core::bail!("resnet18: label {l} outside 0..3")
        }
        Ok(())
    }

    /// The images `idx` as an `(n, 3, H, W)` f32 tensor on `device`, transformed.
    pub fn batch(&self, idx: &[u32], t: &InputTransform, device: &Device) -> Result<Tensor> {
        let [c, h, w] = self.shape;
        let hw = h * w;
        let mut buf = Vec::with_capacity(idx.len() * IN_CHANNELS * hw);
        for &i in idx {
            let img = &self.pixels[i as usize * c * hw..(i as usize + 1) * c * hw];
            for ch in 0..IN_CHANNELS {
                let src = if c == 1 { img } else { &img[ch * hw..(ch + 1) * hw] };
                let (m, s) = (t.mean[ch], t.std[ch]);
                buf.extend(src.iter().map(|&p| (p as f32 / 255.0 - m) / s));
            }
        }
        Tensor::from_vec(buf, (idx.len(), IN_CHANNELS, h, w), device)
    }

    /// The labels `idx` as a `U32` tensor on `device`.
    pub fn batch_labels(&self, idx: &[u32], device: &Device) -> Result<Tensor> {
        let v: Vec<u32> = idx.iter().map(|&i| self.labels[i as usize] as u32).collect();
        Tensor::from_vec(v, idx.len(), device)
    }
}

/// How to train one ResNet-18.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResnetTrainConfig {
    pub optimizer: Optimizer,
    pub batch_size: usize,
    /// Seeds the data order (the weights come from [`ResNet18::init`]).
    pub seed: u64,
    pub device: DeviceChoice,
    pub input: InputTransform,
    /// Images per forward in evaluation (eval mode; does not change the results beyond float rounding).
    pub eval_batch_size: usize,
}

impl ResnetTrainConfig {
    /// CPU, identity input transform, evaluation in batches of 256.
    pub fn new(optimizer: Optimizer, batch_size: usize, seed: u64) -> Self {
        ResnetTrainConfig {
            optimizer,
            batch_size,
            seed,
            device: DeviceChoice::Cpu,
            input: InputTransform::default(),
            eval_batch_size: 256,
        }
    }
}

/// Loss, logits and gradients of one training-mode forward/backward (no update).
pub struct Gradients {
    pub loss: f32,
    pub logits: Tensor,
    /// One per [`ResNet18::parameters`], same order.
    pub grads: Vec<Tensor>,
    pub stats: BatchStats,
}

/// Mean cross-entropy of a training-mode forward of `x` (N, 3, H, W) with `labels` (N, `U32`), and the
/// gradient of every parameter.
pub fn loss_and_gradients(model: &ResNet18, x: &Tensor, labels: &Tensor) -> Result<Gradients> {
    let (logits, stats) = model.forward_train(x)?;
    let loss = cross_entropy(&logits, labels)?;
    let mut store = loss.backward()?;
    let grads = model
        .parameters()
        .into_iter()
        // Detached: candle leaves a variable's gradient attached to the forward graph, and the tensor
        // optimizer's moments, built from it, would then keep every step's activations alive.
        .map(|p| match store.remove(p.as_tensor()) {
            Some(g) => Ok(g.detach()),
            None => p.zeros_like(),
        })
        .collect::<Result<Vec<_>>>()?;
    let loss = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    Ok(Gradients { loss, logits, grads, stats })
}

/// Number of rows of `logits` (N, 3) whose first maximum is at `labels`.
fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<u32> {
    let pred = logits.argmax(1)?.to_dtype(DType::U32)?;
    pred.eq(labels)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()
}

/// Whether every value is finite (via Σ of each tensor: non-finite iff some value is, barring overflow).
fn all_finite(ts: &[Tensor]) -> Result<bool> {
    let sums = ts.iter().map(|t| t.sum_all()?.to_dtype(DType::F64)).collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&sums, 0)?.sum_all()?.to_scalar::<f64>()?.is_finite())
}

/// The optimizer: in place on the CPU, tensor ops elsewhere.
enum Opt {
    InPlace(InPlaceOptimizer),
    Tensors(TensorOptimizer),
}

/// Trains one model; see the module docs.
pub struct Trainer {
    model: ResNet18,
    opt: Opt,
    cfg: ResnetTrainConfig,
    device: Device,
    rng: ChaCha8Rng,
    order: Vec<u32>,
    epochs: usize,
    diverged: bool,
}

impl Trainer {
    /// A trainer for `model` on the configured device (the model is moved there unless it already is;
    /// batches given to [`Trainer::step`] must live on [`Trainer::device`]).
    pub fn new(model: ResNet18, cfg: &ResnetTrainConfig) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.eval_batch_size == 0 {
            candle_core::bail!("resnet18: batch sizes must be positive")
        }
        // Keep the model's own device when it is the configured one (a second `Device::new_cuda(0)` would
        // be a different device to candle).
        let device = match (cfg.device, model.device()) {
            (DeviceChoice::Cpu, d @ Device::Cpu) => d,
            (DeviceChoice::Cuda(i), d) if d.location() == DeviceLocation::Cuda { gpu_id: i } => d,
            (choice, _) => choice.device()?,
        };
        let model = if model.device().same_device(&device) { model } else { model.to(&device, DType::F32)? };
        let sizes: Vec<usize> = model.parameters().iter().map(|p| p.elem_count()).collect();
        let opt = if device.is_cpu() {
            Opt::InPlace(InPlaceOptimizer::new(cfg.optimizer, &sizes))
        } else {
            Opt::Tensors(TensorOptimizer::new(cfg.optimizer, sizes.len()))
        };
        Ok(Trainer {
            model,
            opt,
            cfg: *cfg,
            device,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            order: Vec::new(),
            epochs: 0,
            diverged: false,
        })
    }

    /// Use the device-generic tensor optimizer even on the CPU (for tests; call before the first step).
    pub fn with_tensor_optimizer(mut self) -> Self {
        self.opt = Opt::Tensors(TensorOptimizer::new(self.cfg.optimizer, self.model.parameters().len()));
        self
    }

    /// The current weights.
    pub fn model(&self) -> &ResNet18 {
        &self.model
    }

    /// The weights, consuming the trainer.
    pub fn into_model(self) -> ResNet18 {
        self.model
    }

    /// The compute device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether a non-finite loss, gradient or update was met.
    pub fn diverged(&self) -> bool {
        self.diverged
    }

    /// Epochs completed by [`Trainer::train_epoch`].
    pub fn epochs_done(&self) -> usize {
        self.epochs
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        match &self.opt {
            Opt::InPlace(o) => o.steps(),
            Opt::Tensors(o) => o.steps(),
        }
    }

    /// One epoch over `data` in a fresh random order.
    pub fn train_epoch(&mut self, data: &ImageSet) -> Result<EpochStats> {
        data.check()?;
        if self.diverged {
            return Ok(EpochStats::diverged(0));
        }
        let n = data.len();
        let mut order = std::mem::take(&mut self.order);
        crate::nn::train::shuffled_order(&mut self.rng, n, &mut order);
        let mut tally = EpochTally::default();
        for batch in order.chunks(self.cfg.batch_size) {
            if batch.len() < 2 {
                continue;
            }
            if wspace_stage_api::stop_requested() {
                candle_core::bail!("stopped: the run was interrupted");
            }
            let s = self.step_indexed(data, batch)?;
            if let Err(diverged) = tally.add(&s) {
                self.order = order;
                return Ok(diverged);
            }
        }
        self.order = order;
        self.epochs += 1;
        Ok(tally.finish())
    }

    /// One optimizer step on the images `batch` (indices into `data`).
    pub fn step_indexed(&mut self, data: &ImageSet, batch: &[u32]) -> Result<StepStats> {
        let x = data.batch(batch, &self.cfg.input, &self.device)?;
        let y = data.batch_labels(batch, &self.device)?;
        self.step(&x, &y)
    }

    /// One optimizer step on a prepared batch: `x` (n, 3, H, W) f32, `labels` (n) `U32`.
    pub fn step(&mut self, x: &Tensor, labels: &Tensor) -> Result<StepStats> {
        let n = x.dim(0)?;
        if self.diverged {
            return Ok(StepStats { loss: f32::NAN, correct: 0, n, diverged: true });
        }
        let g = loss_and_gradients(&self.model, x, labels)?;
        let correct = count_correct(&g.logits, labels)?;
        let Gradients { loss, logits, grads, stats } = g;
        drop(logits);
        if !loss.is_finite() || !all_finite(&grads)? {
            self.diverged = true;
            return Ok(StepStats { loss, correct, n, diverged: true });
        }
        let ok = match &mut self.opt {
            Opt::InPlace(o) => {
                let params: Vec<&Tensor> = self.model.parameters().into_iter().map(|p| p.as_tensor()).collect();
                o.step(&params, &grads)?
            }
            Opt::Tensors(o) => {
                let params: Vec<Tensor> = self.model.parameters().iter().map(|p| p.as_tensor().detach()).collect();
                let updated = o.step(&params, &grads)?;
                let ok = all_finite(&updated)?;
                if ok {
                    self.model.set_parameters(&updated)?;
                }
                ok
            }
        };
        if !ok {
            self.diverged = true;
            return Ok(StepStats { loss, correct, n, diverged: true });
        }
        self.model.update_running_stats(&stats)?;
        Ok(StepStats { loss, correct, n, diverged: false })
    }

    /// Loss and accuracy of the current weights (eval mode) on `data`.
    pub fn evaluate(&self, data: &ImageSet) -> Result<Evaluation> {
        evaluate(&self.model, data, &self.cfg.input, self.cfg.eval_batch_size)
    }
}

/// Eval-mode logits of `data` (in batches of `batch_size`), as `[f32; 3]` rows.
pub fn logits(model: &ResNet18, data: &ImageSet, input: &InputTransform, batch_size: usize) -> Result<Vec<[f32; 3]>> {
    data.check()?;
    let device = model.device();
    let idx: Vec<u32> = (0..data.len() as u32).collect();
    let mut out = Vec::with_capacity(data.len());
    for chunk in idx.chunks(batch_size.max(1)) {
        let z = model.forward_eval(&data.batch(chunk, input, &device)?)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        out.extend(z.into_iter().map(|r| [r[0], r[1], r[2]]));
    }
    Ok(out)
}

/// Mean cross-entropy and accuracy (first maximum on ties) of `model` in eval mode on `data`.
pub fn evaluate(model: &ResNet18, data: &ImageSet, input: &InputTransform, batch_size: usize) -> Result<Evaluation> {
    let z = logits(model, data, input, batch_size)?;
    let (mut loss, mut correct) = (0.0f64, 0u64);
    for (row, &l) in z.iter().zip(data.labels) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        loss += lse - row[l as usize] as f64;
        let mut best = 0;
        for k in 1..3 {
            if row[k] > row[best] {
                best = k;
            }
        }
        correct += (best == l as usize) as u64;
    }
    let d = data.len().max(1) as f64;
    Ok(Evaluation { loss: loss / d, accuracy: correct as f64 / d, n: data.len() })
}

/// Initialises a model from `init_seed` ([`ResNet18::init`]) on the configured device, trains it for
/// `epochs` epochs on `train`, calling `on_epoch(epoch (1-based), stats, trainer)` after each (e.g. to
/// evaluate and keep checkpoints: `trainer.model().named_tensors()`, `trainer.evaluate(&val)`). Stops
/// early on divergence; returns the trainer.
pub fn train_model(
    init_seed: u64,
    cfg: &ResnetTrainConfig,
    train: &ImageSet,
    epochs: usize,
    mut on_epoch: impl FnMut(usize, &EpochStats, &Trainer) -> Result<()>,
) -> Result<Trainer> {
    let device = cfg.device.device()?;
    let mut t = Trainer::new(ResNet18::init(init_seed, &device)?, cfg)?;
    for e in 1..=epochs {
        let s = t.train_epoch(train)?;
        on_epoch(e, &s, &t)?;
        if s.diverged {
            break;
        }
    }
    Ok(t)
}
