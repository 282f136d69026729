//! [`Encoder`]: the image encoders behind one interface, and [`Encoder::embed`], which turns dataset
//! images into feature vectors in parallel.

use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use wspace_stage_api::{choice_enum, Progress, StageError};

use super::clip::ClipVision;
use super::efficientnet::{self, EfficientNetLite0};
use super::preprocess::{preprocess_into, Normalisation};

choice_enum! {
    /// The `encoder = "..."` choices.
    pub enum EncoderName { EfficientNetLite0 = "efficientnet-lite0", ClipVitB32 = "clip-vit-b32" }
}

/// Images per forward pass. Fixed (not a parameter) so that results never depend on it.
pub const BATCH: usize = 8;

/// The largest accepted `image_size` (a 1024² EfficientNet batch of 8 needs about 3 GB).
pub const MAX_SIZE: usize = 1024;

/// A loaded image encoder.
pub enum Encoder {
    EfficientNetLite0(EfficientNetLite0),
    Clip(Box<ClipVision>),
}

/// The geometry of the images handed to [`Encoder::embed`].
#[derive(Debug, Clone, Copy)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Encoder {
    /// Loads `name`. `weights`: `None` = the embedded EfficientNet-Lite0 weights; for `clip-vit-b32` a
    /// checkpoint directory is required.
    pub fn load(name: EncoderName, weights: Option<&Path>, device: &Device) -> Result<Encoder, StageError> {
        match (name, weights) {
            (EncoderName::EfficientNetLite0, None) => Ok(Encoder::EfficientNetLite0(EfficientNetLite0::embedded(device)?)),
            (EncoderName::EfficientNetLite0, Some(p)) => Ok(Encoder::EfficientNetLite0(EfficientNetLite0::from_file(p, device)?)),
            (EncoderName::ClipVitB32, Some(p)) => Ok(Encoder::Clip(Box::new(ClipVision::load(p, device)?))),
            (EncoderName::ClipVitB32, None) => Err(StageError::param(
                "weights",
                "is required with encoder \"clip-vit-b32\": a directory with the Hugging Face files model.safetensors \
                 and config.json of openai/clip-vit-base-patch32 (no CLIP weights are embedded)",
            )),
        }
    }

    /// Feature dimension `d`.
    pub fn dim(&self) -> usize {
        match self {
            Encoder::EfficientNetLite0(_) => efficientnet::FEATURES,
            Encoder::Clip(c) => c.dim(),
        }
    }

    /// The input side used when `image_size = 0`.
    pub fn native_size(&self) -> usize {
        match self {
            Encoder::EfficientNetLite0(_) => efficientnet::NATIVE_SIZE,
            Encoder::Clip(c) => c.config.image_size,
        }
    }

    /// Checks a requested input side (`0` = native) and returns the side to use.
    pub fn input_size(&self, requested: usize) -> Result<usize, StageError> {
        match self {
            _ if requested == 0 => Ok(self.native_size()),
            Encoder::Clip(c) if requested != c.config.image_size => Err(StageError::param(
                "image_size",
                format!(
                    "this CLIP checkpoint takes exactly {0}×{0} images (its position embeddings are \
                 fixed); set image_size = {0} or 0",
                    c.config.image_size
                ),
            )),
            _ if !(16..=MAX_SIZE).contains(&requested) => {
                Err(StageError::param("image_size", format!("must be 0 or between 16 and {MAX_SIZE}, got {requested}")))
            }
            _ => Ok(requested),
        }
    }

    pub fn normalisation(&self) -> Normalisation {
        match self {
            Encoder::EfficientNetLite0(_) => Normalisation::Lite,
            Encoder::Clip(_) => Normalisation::Clip,
        }
    }

    /// Features of a normalised batch `[B, 3, S, S]` → `[B, d]`.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Encoder::EfficientNetLite0(m) => m.features(x),
            Encoder::Clip(m) => m.features(x),
        }
    }

    /// Features of `images` (each `C × H × W` bytes), preprocessed as [`super::preprocess`] describes
    /// at side `size`: one `d`-vector per image, in order. Batches of [`BATCH`] run in parallel on the
    /// current rayon pool; each finished image advances `progress` by one.
    pub fn embed(
        &self,
        images: &[&[u8]],
        shape: ImageShape,
        size: usize,
        device: &Device,
        progress: &dyn Progress,
    ) -> Result<Vec<Vec<f32>>, StageError> {
        let norm = self.normalisation();
        let batches: Vec<Vec<Vec<f32>>> = images
            .par_chunks(BATCH)
            .map(|chunk| {
                wspace_stage_api::check_stop()?;
                let mut buf = Vec::with_capacity(chunk.len() * 3 * size * size);
                for img in chunk {
                    preprocess_into(img, shape.channels, shape.height, shape.width, size, norm, &mut buf);
                }
                let feats = Tensor::from_vec(buf, (chunk.len(), 3, size, size), device)
                    .and_then(|x| self.features(&x))
                    .and_then(|f| f.to_vec2::<f32>())
                    .map_err(|e| StageError::msg(format!("encoder forward pass failed: {e}")))?;
                progress.inc(chunk.len() as u64);
                Ok(feats)
            })
            .collect::<Result<_, StageError>>()?;
        Ok(batches.into_iter().flatten().collect())
    }
}
