//! A runnable network built from named tensors: what decoded, sampled and imported weights become to
//! be scored.
//!
//! Architectures:
//! - `cnn-s`: no normalisation layers, nothing to refit; the project's fast kernel ([`crate::nn`]).
//! - the imported architectures of [`crate::import::arch`] (`cnn-s-c<K>-<nlin>`, `small-cnn-<nlin>`):
//!   their own forward pass through candle, `K` outputs, 1 × 28 × 28 grey images, pixels/255 then the
//!   source's preprocessing ([`Network::with_input`]).
//! - `resnet18` ([`crate::resnet`]): BatchNorm buffers the decoded tensors lack (the PCA sees what the
//!   zoo's `zoo.json` lists; the thesis encoded `model.parameters()` only) start as PyTorch's (mean 0,
//!   var 1). [`Network::refit_normalisation`] then refits every BatchNorm's running statistics as SANE
//!   does: forward passes in train mode over the calibration images (batches of 64), and running
//!   mean / variance set to the cumulative average of the batch statistics (PyTorch's `momentum=None`;
//!   the variance unbiased). Images are `C × H × W` bytes ([`Network::with_input`]; default 1 × 28 × 28
//!   grey, pixels/255, no per-channel normalisation).

use wspace_stage_api::StageError;

use candle_core::{Device, Tensor};

use crate::import::arch::ImportArch;
use crate::nn::{self, CnnS, Evaluation};
use crate::resnet::{self, ImageSet, InputTransform, ResNet18, TensorKind};
use crate::tensors::{candle_error, NamedTensors};

/// A model that runs, built from named tensors.
#[derive(Debug, Clone)]
pub enum Network {
    CnnS(CnnS),
    ResNet18 {
        model: Box<ResNet18>,
        /// `[C, H, W]` of the input bytes (C = 1 is replicated to 3 channels).
        shape: [usize; 3],
        input: InputTransform,
    },
    /// An imported architecture ([`crate::import::arch`]), with its weights (checked at build) and the
    /// source's preprocessing (grey images: the first channel's mean and std).
    Imported {
        arch: ImportArch,
        weights: NamedTensors,
        input: InputTransform,
    },
}

/// Pre-softmax outputs, one row of the network's outputs per image.
pub type Logits = Vec<Vec<f32>>;

fn rows(logits: Vec<[f32; 3]>) -> Logits {
    logits.into_iter().map(|r| r.to_vec()).collect()
}

/// Images per forward pass of a ResNet-18 (refit and inference).
const RESNET_BATCH: usize = 64;

impl Network {
    /// Builds the zoo architecture `arch` from named tensors (shapes checked; for `resnet18` missing
    /// BatchNorm buffers start at mean 0, var 1 — see the module doc).
    pub fn build(arch: &str, weights: &NamedTensors) -> Result<Network, StageError> {
        match arch {
            "cnn-s" => CnnS::from_named_tensors(weights.triples()).map(Network::CnnS).map_err(|e| StageError::msg(e.to_string())),
            "resnet18" => {
                let mut all = weights.clone();
                for spec in resnet::tensor_specs() {
                    if all.get(&spec.name).is_some() {
                        continue;
                    }
                    let fill = match spec.kind {
                        TensorKind::RunningMean | TensorKind::NumBatchesTracked => 0.0,
                        TensorKind::RunningVar => 1.0,
                        _ => return Err(StageError::msg(format!("resnet18: decoded weights lack `{}`", spec.name))),
                    };
                    all.push(spec.name.clone(), spec.shape.clone(), vec![fill; spec.len().max(1)]);
                }
                let model = ResNet18::from_named_tensors(&all, &Device::Cpu).map_err(candle_error("resnet18"))?;
                Ok(Network::ResNet18 { model: Box::new(model), shape: [1, 28, 28], input: InputTransform::default() })
            }
            other => match ImportArch::from_name(other) {
                Some(arch) => {
                    arch.check(weights).map_err(|e| StageError::msg(format!("weights of `{other}`: {e}")))?;
                    Ok(Network::Imported { arch, weights: weights.clone(), input: InputTransform::default() })
                }
                None => Err(StageError::msg(format!(
                    "architecture `{other}`: decoded weights cannot be run (known: cnn-s, resnet18, cnn-s-c<K>-<nlin>, small-cnn-<nlin>)"
                ))),
            },
        }
    }

    /// Sets the input image shape and transform (ResNet-18: both; an imported architecture: the
    /// transform; `cnn-s` takes 1 × 28 × 28 pixels/255 only).
    pub fn with_input(mut self, image_shape: [usize; 3], transform: InputTransform) -> Self {
        match &mut self {
            Network::ResNet18 { shape, input, .. } => {
                *shape = image_shape;
                *input = transform;
            }
            Network::Imported { input, .. } => *input = transform,
            Network::CnnS(_) => {}
        }
        self
    }

    /// Refits normalisation statistics on `images` (`N × C·H·W` bytes); a no-op for `cnn-s`.
    pub fn refit_normalisation(&mut self, images: &[u8]) -> Result<(), StageError> {
        let Network::ResNet18 { model, shape, input } = self else { return Ok(()) };
        let n = images.len() / shape.iter().product::<usize>().max(1);
        if n == 0 {
            return Err(StageError::msg("resnet18: no calibration images to refit BatchNorm statistics"));
        }
        let labels = vec![0u8; n];
        let set = ImageSet { pixels: images, labels: &labels, shape: *shape };
        let idx: Vec<u32> = (0..n as u32).collect();
        // Cumulative sums of count-weighted batch means and unbiased variances, per BatchNorm.
        let mut sums: Vec<(Tensor, Tensor, usize)> = Vec::new();
        for chunk in idx.chunks(RESNET_BATCH) {
            let x = set.batch(chunk, input, &Device::Cpu).map_err(candle_error("resnet18"))?;
            let (_, stats) = model.forward_train(&x).map_err(candle_error("resnet18"))?;
            for (i, s) in stats.0.iter().enumerate() {
                let unbias = s.count as f64 / (s.count.max(2) - 1) as f64;
                let (m, v) = (
                    s.mean.affine(s.count as f64, 0.0).map_err(candle_error("resnet18"))?,
                    s.var.affine(unbias * s.count as f64, 0.0).map_err(candle_error("resnet18"))?,
                );
                match sums.get_mut(i) {
                    Some(acc) => {
                        *acc = (
                            (&acc.0 + m).map_err(candle_error("resnet18"))?,
                            (&acc.1 + v).map_err(candle_error("resnet18"))?,
                            acc.2 + s.count,
                        )
                    }
                    None => sums.push((m, v, s.count)),
                }
            }
        }
        let mut tensors = model.named_tensors().map_err(candle_error("resnet18"))?;
        let names: Vec<String> =
            resnet::tensor_specs().into_iter().filter(|s| s.kind == TensorKind::RunningMean).map(|s| s.name).collect();
        for (prefix, (m, v, count)) in names.iter().map(|n| n.trim_end_matches(".running_mean").to_string()).zip(&sums) {
            let scale = 1.0 / *count as f64;
            let mean = m.affine(scale, 0.0).and_then(|t| t.to_vec1::<f32>()).map_err(candle_error("resnet18"))?;
            let var = v.affine(scale, 0.0).and_then(|t| t.to_vec1::<f32>()).map_err(candle_error("resnet18"))?;
            for t in tensors.iter_mut() {
                if t.name == format!("{prefix}.running_mean") {
                    t.values = mean.clone();
                } else if t.name == format!("{prefix}.running_var") {
                    t.values = var.clone();
                } else if t.name == format!("{prefix}.num_batches_tracked") {
                    t.values = vec![idx.chunks(RESNET_BATCH).len() as f32];
                }
            }
        }
        **model = ResNet18::from_named_tensors(&tensors, &Device::Cpu).map_err(candle_error("resnet18"))?;
        Ok(())
    }

    fn image_len_of_shape(&self) -> usize {
        match self {
            Network::CnnS(_) | Network::Imported { .. } => nn::IMAGE_PIXELS,
            Network::ResNet18 { shape, .. } => shape.iter().product(),
        }
    }

    /// Pre-softmax outputs for u8 images (`N × C·H·W`, pixels/255, then the input transform).
    pub fn logits_u8(&self, images: &[u8]) -> Result<Logits, StageError> {
        match self {
            Network::CnnS(m) => Ok(rows(nn::logits_u8(m, images))),
            Network::ResNet18 { model, shape, input } => {
                let labels = vec![0u8; images.len() / self.image_len_of_shape()];
                resnet::logits(model, &ImageSet { pixels: images, labels: &labels, shape: *shape }, input, RESNET_BATCH)
                    .map(rows)
                    .map_err(candle_error("resnet18"))
            }
            Network::Imported { arch, weights, input } => {
                let (mean, std) = (input.mean[0], input.std[0]);
                arch.logits_f32(weights, &images.iter().map(|&p| (p as f32 / 255.0 - mean) / std).collect::<Vec<_>>())
            }
        }
    }

    /// Pre-softmax outputs for f32 images in `[0, 1]` (the input transform is applied after).
    pub fn logits_f32(&self, images: &[f32]) -> Result<Logits, StageError> {
        match self {
            Network::CnnS(m) => Ok(rows(nn::logits_f32(m, images))),
            Network::Imported { arch, weights, input } => {
                let (mean, std) = (input.mean[0], input.std[0]);
                arch.logits_f32(weights, &images.iter().map(|&p| (p - mean) / std).collect::<Vec<_>>())
            }
            Network::ResNet18 { model, shape, input } => {
                let [c, h, w] = *shape;
                let n = images.len() / (c * h * w);
                let mut buf = Vec::with_capacity(n * 3 * h * w);
                for img in images.chunks_exact(c * h * w) {
                    for ch in 0..3 {
                        let src = if c == 1 { img } else { &img[ch * h * w..(ch + 1) * h * w] };
                        buf.extend(src.iter().map(|&p| (p - input.mean[ch]) / input.std[ch]));
                    }
                }
                let x = Tensor::from_vec(buf, (n, 3, h, w), &Device::Cpu).map_err(candle_error("resnet18"))?;
                model.forward_eval(&x).and_then(|z| z.to_vec2::<f32>()).map_err(candle_error("resnet18"))
            }
        }
    }

    /// [`Network::evaluate`] and [`Network::logits_u8`], in one forward pass for `cnn-s`.
    pub fn evaluate_and_logits(&self, images: &[u8], labels: &[u8]) -> Result<(Evaluation, Logits), StageError> {
        match self {
            Network::CnnS(m) => {
                let (ev, logits) = nn::evaluate_and_logits(m, images, labels);
                Ok((ev, rows(logits)))
            }
            _ => Ok((self.evaluate(images, labels)?, self.logits_u8(images)?)),
        }
    }

    /// Loss and accuracy on u8 images with labels in the network's output order.
    pub fn evaluate(&self, images: &[u8], labels: &[u8]) -> Result<Evaluation, StageError> {
        match self {
            Network::CnnS(m) => Ok(nn::evaluate(m, images, labels)),
            Network::ResNet18 { model, shape, input } => {
                resnet::evaluate(model, &ImageSet { pixels: images, labels, shape: *shape }, input, RESNET_BATCH)
                    .map_err(candle_error("resnet18"))
            }
            Network::Imported { .. } => Ok(evaluation(&self.logits_u8(images)?, labels)),
        }
    }

    /// Bytes of one input image.
    pub fn image_len(&self) -> usize {
        self.image_len_of_shape()
    }
}

/// Mean cross-entropy and accuracy (first maximum) of `logits` against `labels`.
fn evaluation(logits: &[Vec<f32>], labels: &[u8]) -> Evaluation {
    let n = labels.len();
    let correct = logits.iter().zip(labels).filter(|(z, &y)| nn::argmax(z) == y as usize).count();
    Evaluation { loss: nn::mean_cross_entropy(logits, labels, 1.0), accuracy: correct as f64 / n.max(1) as f64, n }
}
