//! The `mlp` codec: the per-parameter PCA and the MLP autoencoder on its normalised coefficients
//! ([`crate::weights::pca`], [`crate::weights::autoencoder`]).

use std::path::Path;

use candle_core::Device;
use wspace_stage_api::StageError;

use super::{Codec, RefineOptions};
use crate::tensors::NamedTensors;
use crate::weights::autoencoder::Autoencoder;
use crate::weights::behaviour::{self, Probe};
use crate::weights::pca::WeightPca;

pub const NAME: &str = "mlp";

struct Mlp {
    pca: WeightPca,
    ae: Autoencoder,
}

pub fn load(pca: &Path, dir: &Path, device: &Device) -> Result<Box<dyn Codec>, StageError> {
    let (pca, ae) = (WeightPca::load(pca)?, Autoencoder::load(dir, device)?);
    if ae.config.input_dim != pca.coefficient_dim() {
        return Err(StageError::msg(format!(
            "the autoencoder takes {} coefficients but the PCA gives {}: it was trained on another `pca` output",
            ae.config.input_dim,
            pca.coefficient_dim()
        )));
    }
    Ok(Box::new(Mlp { pca, ae }))
}

impl Codec for Mlp {
    fn name(&self) -> &'static str {
        NAME
    }
    fn arch(&self) -> &str {
        &self.pca.arch
    }
    fn latent_shape(&self) -> Vec<usize> {
        vec![self.ae.config.latent_dim]
    }
    fn variants(&self) -> [&'static str; 2] {
        ["pca_ae", "pca_ae_refined"]
    }
    /// The coefficients as the `pca` stage computed its rows ([`WeightPca::encode_rows`]), normalised,
    /// through the encoder.
    fn encode(&self, weights: &[&NamedTensors]) -> Result<Vec<f32>, StageError> {
        let flat: Vec<Vec<f32>> = weights.iter().map(|w| w.flat()).collect();
        let z: Vec<f32> =
            self.pca.encode_rows(&flat).chunks(self.pca.coefficient_dim().max(1)).flat_map(|c| self.pca.normalise(c)).collect();
        self.ae.encode(&z)
    }
    fn decode(&self, latents: &[f32]) -> Result<Vec<NamedTensors>, StageError> {
        let (k, d) = (self.ae.config.latent_dim, self.pca.coefficient_dim());
        if !latents.len().is_multiple_of(k.max(1)) {
            return Err(StageError::msg(format!("{} latent values are not a multiple of latent_dim {k}", latents.len())));
        }
        let z = self.ae.decode(latents)?;
        if d == 0 {
            return (0..latents.len() / k.max(1)).map(|_| self.pca.decode(&[])).collect();
        }
        z.chunks_exact(d).map(|z| self.pca.decode(&self.pca.denormalise(z))).collect()
    }
    fn refine(&self, latent: &[f32], probe: &Probe, o: &RefineOptions) -> Result<Vec<f32>, StageError> {
        let decoder = |h: &candle_core::Tensor| self.ae.decode_tensor(h);
        Ok(behaviour::refine(&decoder, &self.pca, latent, probe, o, &self.ae.device)?.latent)
    }
}
