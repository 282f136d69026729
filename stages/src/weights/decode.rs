//! Decoding: latent → coefficients → de-normalised → inverse PCA → named tensors → a runnable network.
//!
//! ```text
//! h  (latent, [latent_dim])                       ← WeightCodec::encode(weights)
//!  → z = decoder(h)             normalised coefficients [D]   (identity when there is no autoencoder)
//!  → c = z ⊙ std + mean         raw coefficients, per coordinate (pca.safetensors `coefficient_*`)
//!  → Ŵ_p = V_pᵀ c_p + μ_p       per named parameter (centre mode: c_p + μ_p; constant mode: μ_p)
//!  → named tensors in `state_dict` order → Network::build(arch, …)
//! ```
//!
//! With a token transformer (`autoencoder.architecture = "transformer"`, [`super::transformer`]) the
//! latent is the per-token latent `[tokens · token_latent]` and decoding is transformer decoder →
//! de-normalised tokens → detokenised weights; the PCA is not on that path.
//!
//! [`WeightCodec`] does both directions for any architecture the `pca` stage saw; [`Network`] turns
//! named tensors into a model that runs. Architectures:
//! - `cnn-s`: no normalisation layers, nothing to refit.
//! - `resnet18` ([`crate::resnet`]): BatchNorm buffers the decoded tensors lack (the PCA sees what the
//!   zoo's `zoo.json` lists; the thesis encoded `model.parameters()` only) start as PyTorch's (mean 0,
//!   var 1). [`Network::refit_normalisation`] then refits every BatchNorm's running statistics as SANE
//!   does: forward passes in train mode over the calibration images (batches of 64), and running
//!   mean / variance set to the cumulative average of the batch statistics (PyTorch's `momentum=None`;
//!   the variance unbiased). Images are `C × H × W` bytes ([`Network::with_input`]; default 1 × 28 × 28
//!   grey, pixels/255, no per-channel normalisation).

use std::path::Path;

use wspace_stage_api::StageError;

use candle_core::{Device, Tensor};

use super::autoencoder::Autoencoder;
use super::pca::WeightPca;
use super::transformer::TokenAutoencoder;
use crate::nn::{self, CnnS, Evaluation};
use crate::resnet::{self, ImageSet, InputTransform, ResNet18, TensorKind};
use crate::tensors::{candle_error, NamedTensors};

/// The weight encoder: the fitted PCA and, optionally, the autoencoder on top of it — the MLP on the
/// coefficients, or the token transformer (at most one of the two).
pub struct WeightCodec {
    pub pca: WeightPca,
    pub autoencoder: Option<Autoencoder>,
    pub tokens: Option<TokenAutoencoder>,
}

impl WeightCodec {
    /// Reads a `pca` stage's output and, when given, an `autoencoder` stage's output (trained on it).
    pub fn load(pca_dir: &Path, autoencoder_dir: Option<&Path>) -> Result<WeightCodec, StageError> {
        let pca = WeightPca::load(pca_dir)?;
        if let Some(dir) = autoencoder_dir.filter(|d| TokenAutoencoder::is_in(d)) {
            let tokens = TokenAutoencoder::load(dir)?;
            if tokens.config.arch != pca.arch {
                return Err(StageError::msg(format!(
                    "the transformer encodes `{}` weights but the PCA's zoo is `{}`: it was trained on another zoo",
                    tokens.config.arch, pca.arch
                )));
            }
            return Ok(WeightCodec { pca, autoencoder: None, tokens: Some(tokens) });
        }
        let autoencoder = autoencoder_dir.map(Autoencoder::load).transpose()?;
        if let Some(ae) = &autoencoder {
            if ae.config.input_dim != pca.coefficient_dim() {
                return Err(StageError::msg(format!(
                    "the autoencoder takes {} coefficients but the PCA gives {}: it was trained on another `pca` output",
                    ae.config.input_dim,
                    pca.coefficient_dim()
                )));
            }
        }
        Ok(WeightCodec { pca, autoencoder, tokens: None })
    }

    /// The architecture the codec's weights belong to (the zoo's `arch`).
    pub fn arch(&self) -> &str {
        &self.pca.arch
    }

    /// Length of a latent vector: the autoencoder's latent size, or the coefficient dimension without one.
    pub fn latent_dim(&self) -> usize {
        if let Some(t) = &self.tokens {
            return t.config.latent_dim();
        }
        self.autoencoder.as_ref().map_or(self.pca.coefficient_dim(), |ae| ae.config.latent_dim)
    }

    /// One model's weights → its latent vector.
    pub fn encode(&self, weights: &NamedTensors) -> Result<Vec<f32>, StageError> {
        if let Some(t) = &self.tokens {
            return t.encode(&[&t.normaliser.layout.flat_of(weights)?]);
        }
        let z = self.pca.normalise(&self.pca.encode(weights)?);
        match &self.autoencoder {
            Some(ae) => ae.encode(&z),
            None => Ok(z),
        }
    }

    /// Latent vectors (`n × latent_dim`, row-major) → normalised coefficients (`n × D`).
    pub fn latents_to_normalised(&self, latents: &[f32]) -> Result<Vec<f32>, StageError> {
        if !latents.len().is_multiple_of(self.latent_dim().max(1)) {
            return Err(StageError::msg(format!(
                "{} latent values are not a multiple of latent_dim {}",
                latents.len(),
                self.latent_dim()
            )));
        }
        match &self.autoencoder {
            Some(ae) => ae.decode(latents),
            None => Ok(latents.to_vec()),
        }
    }

    /// Normalised coefficients of one model → its named tensors.
    pub fn normalised_to_weights(&self, z: &[f32]) -> Result<NamedTensors, StageError> {
        self.pca.decode(&self.pca.denormalise(z))
    }

    /// Latent vectors (`n × latent_dim`) → named tensors of `n` models.
    pub fn decode(&self, latents: &[f32]) -> Result<Vec<NamedTensors>, StageError> {
        if let Some(t) = &self.tokens {
            return t.decode_weights(latents);
        }
        let d = self.pca.coefficient_dim();
        let z = self.latents_to_normalised(latents)?;
        if d == 0 {
            let n = latents.len() / self.latent_dim().max(1);
            return (0..n).map(|_| self.pca.decode(&[])).collect();
        }
        z.chunks_exact(d).map(|z| self.normalised_to_weights(z)).collect()
    }

    /// One latent vector → a runnable network; `calibration` images (`N × C·H·W` bytes of the task) refit
    /// normalisation statistics where the architecture has them.
    pub fn decode_network(&self, latent: &[f32], calibration: Option<&[u8]>) -> Result<Network, StageError> {
        let weights = self.decode(latent)?.pop().ok_or_else(|| StageError::msg("decode: empty latent vector"))?;
        let mut net = Network::build(self.arch(), &weights)?;
        if let Some(images) = calibration {
            net.refit_normalisation(images)?;
        }
        Ok(net)
    }
}

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
            other => {
                Err(StageError::msg(format!("architecture `{other}`: decoded weights cannot be run (known: cnn-s, resnet18)")))
            }
        }
    }

    /// Sets the input image shape and transform (ResNet-18; `cnn-s` takes 1 × 28 × 28 only).
    pub fn with_input(mut self, image_shape: [usize; 3], transform: InputTransform) -> Self {
        if let Network::ResNet18 { shape, input, .. } = &mut self {
            *shape = image_shape;
            *input = transform;
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
            Network::CnnS(_) => nn::IMAGE_PIXELS,
            Network::ResNet18 { shape, .. } => shape.iter().product(),
        }
    }

    /// Pre-softmax outputs for u8 images (`N × C·H·W`, pixels/255, then the input transform).
    pub fn logits_u8(&self, images: &[u8]) -> Result<Vec<[f32; 3]>, StageError> {
        match self {
            Network::CnnS(m) => Ok(nn::logits_u8(m, images)),
            Network::ResNet18 { model, shape, input } => {
                let labels = vec![0u8; images.len() / self.image_len_of_shape()];
                resnet::logits(model, &ImageSet { pixels: images, labels: &labels, shape: *shape }, input, RESNET_BATCH)
                    .map_err(candle_error("resnet18"))
            }
        }
    }

    /// Pre-softmax outputs for f32 images in `[0, 1]` (the input transform is applied after).
    pub fn logits_f32(&self, images: &[f32]) -> Result<Vec<[f32; 3]>, StageError> {
        match self {
            Network::CnnS(m) => Ok(nn::logits_f32(m, images)),
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
                let z = model.forward_eval(&x).and_then(|z| z.to_vec2::<f32>()).map_err(candle_error("resnet18"))?;
                Ok(z.into_iter().map(|r| [r[0], r[1], r[2]]).collect())
            }
        }
    }

    /// Loss and accuracy on u8 images with labels `0..3`.
    pub fn evaluate(&self, images: &[u8], labels: &[u8]) -> Result<Evaluation, StageError> {
        match self {
            Network::CnnS(m) => Ok(nn::evaluate(m, images, labels)),
            Network::ResNet18 { model, shape, input } => {
                resnet::evaluate(model, &ImageSet { pixels: images, labels, shape: *shape }, input, RESNET_BATCH)
                    .map_err(candle_error("resnet18"))
            }
        }
    }

    /// Bytes of one input image.
    pub fn image_len(&self) -> usize {
        self.image_len_of_shape()
    }
}
