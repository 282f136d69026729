//! The `transformer` codec: SANE's token transformer ([`crate::weights::transformer`]) on the tokens
//! of [`crate::weights::tokens`].

use std::path::Path;

use candle_core::Device;
use wspace_stage_api::StageError;

use super::{Codec, RefineOptions};
use crate::tensors::NamedTensors;
use crate::weights::behaviour::{self, Probe};
use crate::weights::pca::WeightPca;
use crate::weights::transformer::TokenAutoencoder;

pub const NAME: &str = "transformer";

struct Tokens(TokenAutoencoder);

pub fn load(pca: &Path, dir: &Path, device: &Device) -> Result<Box<dyn Codec>, StageError> {
    let (pca, t) = (WeightPca::load(pca)?, TokenAutoencoder::load(dir, device)?);
    if t.config.arch != pca.arch {
        return Err(StageError::msg(format!(
            "the transformer encodes `{}` weights but the PCA's zoo is `{}`: it was trained on another zoo",
            t.config.arch, pca.arch
        )));
    }
    Ok(Box::new(Tokens(t)))
}

impl Codec for Tokens {
    fn name(&self) -> &'static str {
        NAME
    }
    fn arch(&self) -> &str {
        &self.0.config.arch
    }
    fn latent_shape(&self) -> Vec<usize> {
        vec![self.0.config.tokens, self.0.config.token_latent]
    }
    /// The head's tokens: the last layer's units, the logits in class order.
    fn class_tokens(&self) -> Option<std::ops::Range<usize>> {
        let layout = &self.0.normaliser.layout;
        let units = layout.layers.last().map_or(0, |l| l.units);
        Some(layout.tokens() - units..layout.tokens())
    }
    fn variants(&self) -> [&'static str; 2] {
        ["tokens_ae", "tokens_ae_refined"]
    }
    fn encode(&self, weights: &[&NamedTensors]) -> Result<Vec<f32>, StageError> {
        let flat: Vec<Vec<f32>> = weights.iter().map(|w| self.0.normaliser.layout.flat_of(w)).collect::<Result<_, _>>()?;
        self.0.encode(&flat.iter().map(Vec::as_slice).collect::<Vec<_>>())
    }
    fn decode(&self, latents: &[f32]) -> Result<Vec<NamedTensors>, StageError> {
        self.0.decode_weights(latents)
    }
    fn refine(&self, latent: &[f32], probe: &Probe, o: &RefineOptions) -> Result<Vec<f32>, StageError> {
        let decoder = |h: &candle_core::Tensor| self.0.decode_flat_tensor(h);
        Ok(behaviour::refine(&decoder, &self.0.normaliser, latent, probe, o, &self.0.device)?.latent)
    }
}
