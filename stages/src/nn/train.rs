//! Training and evaluation of one `cnn-s` model on u8 images (`N × 784`, pixels/255) with labels 0..3.
//!
//! A [`Trainer`] owns the model, the optimizer state, one gradient buffer and one [`Workspace`]; after
//! construction nothing is allocated per step. A step splits its batch into blocks of [`L`] = 16 images
//! (the last one padded), accumulates the gradient of the *mean* loss over the batch, then updates.
//! An epoch visits the training set in a fresh random order (Fisher–Yates driven by a ChaCha8 stream
//! seeded from [`TrainConfig::seed`]), with a short last batch as PyTorch's `DataLoader` gives by
//! default. Everything is deterministic given (initial weights, data, config).
//!
//! Divergence: a step whose loss or gradient is not finite, or whose update would make a weight
//! non-finite, leaves the weights as they were (the last finite ones) and marks the trainer
//! [`Trainer::diverged`]; later steps and epochs do nothing and say so.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::cnn_s::{CnnS, IMAGE_PIXELS};
use super::kernels::L;
use super::net::{eval_block, train_block, Isa, Workspace};
use super::optim::{Optimizer, OptimizerState};

/// How to train.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    pub batch_size: usize,
    /// Seeds the data order (weights come from [`CnnS::init`]).
    pub seed: u64,
}

/// One step's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy over the batch (before the update).
    pub loss: f32,
    /// Correct argmax predictions in the batch (before the update).
    pub correct: u32,
    /// Images in the batch.
    pub n: usize,
    /// True when the loss or gradient was not finite (no update was made).
    pub diverged: bool,
}

/// One epoch's outcome (statistics over the steps it ran, measured before each update).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    pub loss: f64,
    pub accuracy: f64,
    pub steps: usize,
    pub diverged: bool,
}

impl EpochStats {
    /// An epoch that diverged after `steps` steps.
    pub fn diverged(steps: usize) -> EpochStats {
        EpochStats { loss: f64::NAN, accuracy: 0.0, steps, diverged: true }
    }
}

/// Running sums over an epoch's steps (both trainers, cnn-s and ResNet-18).
#[derive(Debug, Default)]
pub(crate) struct EpochTally {
    loss: f64,
    correct: u64,
    seen: usize,
    steps: usize,
}

impl EpochTally {
    /// Adds a step's statistics; `Err(the diverged epoch's)` when the step diverged.
    pub(crate) fn add(&mut self, s: &StepStats) -> Result<(), EpochStats> {
        if s.diverged {
            return Err(EpochStats::diverged(self.steps));
        }
        self.loss += s.loss as f64 * s.n as f64;
        self.correct += s.correct as u64;
        self.seen += s.n;
        self.steps += 1;
        Ok(())
    }

    /// Sample-weighted mean loss and accuracy over the steps added.
    pub(crate) fn finish(&self) -> EpochStats {
        let denom = self.seen.max(1) as f64;
        EpochStats { loss: self.loss / denom, accuracy: self.correct as f64 / denom, steps: self.steps, diverged: false }
    }
}

/// Loss and accuracy of a model on a data set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    /// Mean cross-entropy (NaN or ∞ if the model produces non-finite logits).
    pub loss: f64,
    /// Fraction of argmax predictions (first maximum on ties) equal to the label.
    pub accuracy: f64,
    pub n: usize,
}

/// Trains one model; see the module docs.
#[derive(Clone)]
pub struct Trainer {
    model: CnnS,
    opt: OptimizerState,
    grads: Vec<f32>,
    backup: Vec<f32>,
    ws: Workspace,
    isa: Isa,
    batch_size: usize,
    rng: ChaCha8Rng,
    order: Vec<u32>,
    epochs: usize,
    diverged: bool,
}

impl Trainer {
    /// A trainer for `model`; picks the widest SIMD variant of the kernels this CPU has.
    pub fn new(model: CnnS, cfg: &TrainConfig) -> Self {
        assert!(cfg.batch_size > 0, "batch size must be positive");
        Trainer {
            opt: OptimizerState::new(cfg.optimizer, model.flat().len()),
            grads: vec![0.0; model.flat().len()],
            backup: vec![0.0; model.flat().len()],
            ws: Workspace::new(),
            isa: Isa::detect(),
            batch_size: cfg.batch_size,
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            order: Vec::new(),
            epochs: 0,
            diverged: false,
            model,
        }
    }

    /// Force a kernel variant (for tests and benchmarks). Panics if this CPU lacks it.
    pub fn with_isa(mut self, isa: Isa) -> Self {
        assert!(isa.supported(), "{isa:?} is not supported on this CPU");
        self.isa = isa;
        self
    }

    /// The current weights.
    pub fn model(&self) -> &CnnS {
        &self.model
    }

    /// The weights, consuming the trainer.
    pub fn into_model(self) -> CnnS {
        self.model
    }

    /// Whether a non-finite loss or gradient was met.
    pub fn diverged(&self) -> bool {
        self.diverged
    }

    /// Epochs completed by [`Trainer::train_epoch`].
    pub fn epochs_done(&self) -> usize {
        self.epochs
    }

    /// The optimizer state.
    pub fn optimizer(&self) -> &OptimizerState {
        &self.opt
    }

    /// One epoch over `images` (`N × 784` u8) / `labels` (`N`, each below the model's class count) in a
    /// fresh random order.
    pub fn train_epoch(&mut self, images: &[u8], labels: &[u8]) -> EpochStats {
        let n = labels.len();
        assert_eq!(images.len(), n * IMAGE_PIXELS, "images must be N × 784");
        if self.diverged {
            return EpochStats::diverged(0);
        }
        let mut order = std::mem::take(&mut self.order);
        shuffled_order(&mut self.rng, n, &mut order);
        let mut tally = EpochTally::default();
        for batch in order.chunks(self.batch_size) {
            let s = self.step_indexed(images, labels, batch);
            if let Err(diverged) = tally.add(&s) {
                self.order = order;
                return diverged;
            }
        }
        self.order = order;
        self.epochs += 1;
        tally.finish()
    }

    /// One optimizer step on the images `batch` (indices into `images` / `labels`).
    pub fn step_indexed(&mut self, images: &[u8], labels: &[u8], batch: &[u32]) -> StepStats {
        let (loss, correct) = self.accumulate(batch.len(), |ws, start, len| {
            let idx = &batch[start..start + len];
            ws.load_u8(images, idx);
            for (l, &i) in idx.iter().enumerate() {
                ws.labels[l] = labels[i as usize];
            }
        });
        self.finish_step(loss, correct, batch.len())
    }

    /// One optimizer step on f32 images (`n × 784`, already scaled) with `labels` (`n`).
    pub fn step_f32(&mut self, images: &[f32], labels: &[u8]) -> StepStats {
        let (loss, correct) = self.gradients_inner(images, labels);
        self.finish_step(loss, correct, labels.len())
    }

    /// Mean loss and its gradient (flat, [`super::PARAM_SPECS`] order) on f32 images; no update.
    pub fn loss_and_gradient_f32(&mut self, images: &[f32], labels: &[u8]) -> (f32, &[f32]) {
        let (loss, _) = self.gradients_inner(images, labels);
        ((loss / labels.len() as f64) as f32, &self.grads)
    }

    fn gradients_inner(&mut self, images: &[f32], labels: &[u8]) -> (f64, u32) {
        assert_eq!(images.len(), labels.len() * IMAGE_PIXELS);
        self.accumulate(labels.len(), |ws, start, len| {
            ws.load_f32(&images[start * IMAGE_PIXELS..(start + len) * IMAGE_PIXELS]);
            ws.labels[..len].copy_from_slice(&labels[start..start + len]);
        })
    }

    /// Zero the gradient, then run every block of an `n`-image batch through forward/backward.
    fn accumulate(&mut self, n: usize, mut load: impl FnMut(&mut Workspace, usize, usize)) -> (f64, u32) {
        assert!(n > 0, "empty batch");
        self.grads.fill(0.0);
        let scale = 1.0 / n as f32;
        let (mut loss, mut correct) = (0.0f64, 0u32);
        let mut start = 0;
        while start < n {
            let len = L.min(n - start);
            load(&mut self.ws, start, len);
            let (l, c) = train_block(self.isa, self.model.flat(), &mut self.grads, &mut self.ws, len, scale);
            loss += l;
            correct += c;
            start += len;
        }
        (loss, correct)
    }

    fn finish_step(&mut self, loss_sum: f64, correct: u32, n: usize) -> StepStats {
        let loss = (loss_sum / n as f64) as f32;
        if self.diverged || !loss.is_finite() || !self.grads.iter().all(|g| g.is_finite()) {
            self.diverged = true;
            return StepStats { loss, correct, n, diverged: true };
        }
        self.backup.copy_from_slice(self.model.flat());
        self.opt.step(self.model.flat_mut(), &self.grads);
        if !self.model.is_finite() {
            // The update itself overflowed: keep the last finite weights.
            self.model.flat_mut().copy_from_slice(&self.backup);
            self.diverged = true;
            return StepStats { loss, correct, n, diverged: true };
        }
        StepStats { loss, correct, n, diverged: false }
    }

    /// Loss and accuracy of the current weights on a data set (reuses this trainer's workspace).
    pub fn evaluate(&mut self, images: &[u8], labels: &[u8]) -> Evaluation {
        evaluate_with(self.isa, &self.model, &mut self.ws, images, labels, None)
    }
}

/// `order` := a uniformly random permutation of `0..n` (Fisher–Yates on a ChaCha8 stream); the
/// epoch order of every trainer (cnn-s here, ResNet-18 in `crate::resnet`).
pub(crate) fn shuffled_order(rng: &mut ChaCha8Rng, n: usize, order: &mut Vec<u32>) {
    order.clear();
    order.extend(0..n as u32);
    crate::sampling::shuffle_u32(order, rng);
}

/// Loss and accuracy in one forward pass per block; with `logits`, each image's logits are appended
/// (the values [`logits_u8`] gives: the same pixels, and the lanes of a block do not mix).
pub(crate) fn evaluate_with(
    isa: Isa,
    model: &CnnS,
    ws: &mut Workspace,
    images: &[u8],
    labels: &[u8],
    mut logits: Option<&mut Vec<[f32; 3]>>,
) -> Evaluation {
    let n = labels.len();
    assert_eq!(images.len(), n * IMAGE_PIXELS, "images must be N × 784");
    let (mut loss, mut correct) = (0.0f64, 0u64);
    let mut idx = [0u32; L];
    let mut start = 0;
    while start < n {
        let len = L.min(n - start);
        for (l, slot) in idx[..len].iter_mut().enumerate() {
            *slot = (start + l) as u32;
        }
        ws.load_u8(images, &idx[..len]);
        ws.labels[..len].copy_from_slice(&labels[start..start + len]);
        let (l, c) = eval_block(isa, model.flat(), ws, len);
        if let Some(out) = logits.as_deref_mut() {
            out.extend((0..len).map(|l| ws.logits(l)));
        }
        loss += l;
        correct += c as u64;
        start += len;
    }
    let d = n.max(1) as f64;
    Evaluation { loss: loss / d, accuracy: correct as f64 / d, n }
}

/// Loss and accuracy of `model` on `images` (`N × 784` u8) / `labels` (`N`, 0..3).
pub fn evaluate(model: &CnnS, images: &[u8], labels: &[u8]) -> Evaluation {
    evaluate_with(Isa::detect(), model, &mut Workspace::new(), images, labels, None)
}

/// [`evaluate`] and [`logits_u8`] in one pass over the images.
pub fn evaluate_and_logits(model: &CnnS, images: &[u8], labels: &[u8]) -> (Evaluation, Vec<[f32; 3]>) {
    assert_eq!(model.classes(), 3, "evaluate_and_logits is for 3-class models");
    let mut logits = Vec::with_capacity(labels.len());
    let ev = evaluate_with(Isa::detect(), model, &mut Workspace::new(), images, labels, Some(&mut logits));
    (ev, logits)
}

/// Logits of a 3-class `model` for f32 images (`n × 784`, already scaled), one `[f32; 3]` per image.
pub fn logits_f32(model: &CnnS, images: &[f32]) -> Vec<[f32; 3]> {
    logits_f32_with(Isa::detect(), model, images)
}

/// [`logits_f32`] with a given kernel variant.
pub fn logits_f32_with(isa: Isa, model: &CnnS, images: &[f32]) -> Vec<[f32; 3]> {
    assert_eq!(model.classes(), 3, "logits_f32 is for 3-class models; see logits_n_u8");
    let n = images.len() / IMAGE_PIXELS;
    assert_eq!(images.len(), n * IMAGE_PIXELS);
    let mut ws = Workspace::new();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(L) {
        let len = L.min(n - start);
        ws.load_f32(&images[start * IMAGE_PIXELS..(start + len) * IMAGE_PIXELS]);
        ws.labels = [0; L];
        eval_block(isa, model.flat(), &mut ws, len);
        out.extend((0..len).map(|l| ws.logits(l)));
    }
    out
}

/// Logits of a `model` with any head for u8 images (`N × 784`, pixels/255), one row of
/// [`CnnS::classes`] values per image.
pub fn logits_n_u8(model: &CnnS, images: &[u8]) -> Vec<Vec<f32>> {
    let n = images.len() / IMAGE_PIXELS;
    let mut ws = Workspace::new();
    let isa = Isa::detect();
    let mut out = Vec::with_capacity(n);
    let mut idx = [0u32; L];
    for start in (0..n).step_by(L) {
        let len = L.min(n - start);
        for (l, slot) in idx[..len].iter_mut().enumerate() {
            *slot = (start + l) as u32;
        }
        ws.load_u8(images, &idx[..len]);
        ws.labels = [0; L];
        eval_block(isa, model.flat(), &mut ws, len);
        out.extend((0..len).map(|l| ws.logits_n(l, model.classes())));
    }
    out
}

/// Logits of a 3-class `model` for u8 images (`N × 784`, pixels/255).
pub fn logits_u8(model: &CnnS, images: &[u8]) -> Vec<[f32; 3]> {
    let f: Vec<f32> = images.iter().map(|&p| p as f32 / 255.0).collect();
    logits_f32(model, &f)
}

/// Train a fresh trainer for `epochs` epochs, calling `on_epoch(epoch (1-based), stats, weights)`
/// after each (e.g. to keep checkpoints). Stops early on divergence; returns the final trainer.
pub fn train(
    model: CnnS,
    cfg: &TrainConfig,
    images: &[u8],
    labels: &[u8],
    epochs: usize,
    mut on_epoch: impl FnMut(usize, &EpochStats, &CnnS),
) -> Trainer {
    let mut t = Trainer::new(model, cfg);
    for e in 1..=epochs {
        let s = t.train_epoch(images, labels);
        on_epoch(e, &s, t.model());
        if s.diverged {
            break;
        }
    }
    t
}
