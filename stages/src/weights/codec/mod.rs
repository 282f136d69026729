//! Weight codecs: a zoo model's weights ↔ a latent vector, as an `autoencoder` stage learned them.
//!
//! # Brief overview
//! [`Codec`] is how every stage that takes an `autoencoder` input sees it (evaluate-reconstruction,
//! sample, evaluate-samples; align reads the latents it saved). [`load`] reads the output's
//! `codec.json` (`{"codec": "<name>"}`, written by the training stage with [`write_name`]), finds that
//! name in [`CODECS`] and loads the codec. The codecs:
//! - `mlp` ([`mlp`]): the thesis's encoder, per-parameter PCA then an MLP autoencoder on the normalised
//!   coefficients. Latent `[latent_dim]`.
//!
//!   ```text
//!   encode: w → c = PCA(w) → z = (c − mean) / std → h = encoder(z)
//!   decode: h → z = decoder(h) → c = z ⊙ std + mean → Ŵ_p = V_pᵀ c_p + μ_p per parameter
//!   ```
//! - `transformer` ([`tokens`]): SANE's token transformer, one token per neuron
//!   ([`super::transformer`]). Latent `[tokens, token_latent]`.
//!
//! A new codec is a file here that implements [`Codec`] and a `load` function, one line in [`CODECS`],
//! and a training stage that writes its name with [`write_name`].

pub mod mlp;
pub mod tokens;

use std::path::Path;

use candle_core::Device;
use wspace_stage_api::StageError;

use super::behaviour::Probe;
pub use super::behaviour::RefineOptions;
use crate::tensors::{self, NamedTensors};

/// A trained weight codec.
pub trait Codec: Send + Sync {
    /// Its name in `codec.json`.
    fn name(&self) -> &'static str;
    /// The zoo architecture whose weights it encodes (`cnn-s`).
    fn arch(&self) -> &str;
    /// The shape of one model's latent.
    fn latent_shape(&self) -> Vec<usize>;
    /// The length of one model's latent.
    fn latent_dim(&self) -> usize {
        self.latent_shape().iter().product()
    }
    /// The latent tokens (rows of [`Codec::latent_shape`]) that follow the class order, one per output
    /// class in class order, when the latent keeps one token per neuron; `None` when every latent value
    /// mixes every neuron.
    fn class_tokens(&self) -> Option<std::ops::Range<usize>> {
        None
    }
    /// The names `evaluate-reconstruction` gives its reconstructions: by pure decoding, and after latent
    /// refinement.
    fn variants(&self) -> [&'static str; 2];
    /// Models' weights → their latents (`n × latent_dim`, row-major), in one batch.
    fn encode(&self, weights: &[&NamedTensors]) -> Result<Vec<f32>, StageError>;
    /// Latents (`n × latent_dim`) → the weights of `n` models, in one batch.
    fn decode(&self, latents: &[f32]) -> Result<Vec<NamedTensors>, StageError>;
    /// One latent moved by latent refinement to match `probe`'s outputs better, through the frozen
    /// decoder ([`super::behaviour::refine`]).
    fn refine(&self, latent: &[f32], probe: &Probe, opts: &RefineOptions) -> Result<Vec<f32>, StageError>;
}

/// A codec's name and how it is read from an `autoencoder` output (`dir`) and the `pca` output it was
/// trained on.
pub struct Registered {
    pub name: &'static str,
    pub load: LoadCodec,
}

/// How a codec is read: from the `pca` output and the `autoencoder` output trained on it.
/// Its networks go onto `device`.
pub type LoadCodec = fn(pca: &Path, dir: &Path, device: &Device) -> Result<Box<dyn Codec>, StageError>;

/// Every codec, by name.
pub const CODECS: &[Registered] =
    &[Registered { name: mlp::NAME, load: mlp::load }, Registered { name: tokens::NAME, load: tokens::load }];

/// `codec.json`: which codec an output holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct CodecFile {
    codec: String,
}

/// Writes `codec.json` naming the codec an `autoencoder` output holds.
pub fn write_name(out: &Path, name: &str) -> Result<(), StageError> {
    tensors::write_json(&out.join("codec.json"), &CodecFile { codec: name.to_string() })
}

/// Loads the codec in the `autoencoder` output `dir`, trained on the `pca` output `pca`, onto `device`.
pub fn load(pca: &Path, dir: &Path, device: &Device) -> Result<Box<dyn Codec>, StageError> {
    let path = dir.join("codec.json");
    if !path.is_file() {
        return Err(StageError::msg(format!(
            "{}: missing: {} is not an `autoencoder` stage's output",
            path.display(),
            dir.display()
        )));
    }
    let file: CodecFile = tensors::read_json(&path)?;
    let known = || CODECS.iter().map(|c| c.name).collect::<Vec<_>>().join(", ");
    let entry = CODECS
        .iter()
        .find(|c| c.name == file.codec)
        .ok_or_else(|| StageError::msg(format!("{}: unknown codec `{}` (known: {})", path.display(), file.codec, known())))?;
    (entry.load)(pca, dir, device)
}
