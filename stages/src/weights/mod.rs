//! The thesis's weight encoder (its Section 3.2.1), rebuilt as the baseline, and the evaluation that
//! exposed its failure (its Table 4.1).
//!
//! # Brief overview
//! - [`PcaKind`] (`kind = "pca"`, input `zoo`): per-named-parameter PCA, Algorithm 3.1 ([`pca`]), fitted
//!   on the train-split models, applied to all; the exact PCA itself is in [`linalg`].
//! - [`AutoencoderKind`] (`kind = "autoencoder"`, input `pca`): an MLP autoencoder (candle) on the
//!   normalised coefficient vectors, early-stopped on the val split ([`autoencoder`]).
//!   With `architecture = "transformer"` it is instead a SANE-style transformer autoencoder on weight
//!   tokens, one per neuron ([`tokens`], [`transformer`]); every consumer of the codec takes either.
//! - [`codec`]: a trained autoencoder as a [`Codec`] (weights ↔ latents), whichever architecture it
//!   has; [`network`]: named tensors → a runnable [`Network`]. What later stages (sampling) use.
//! - [`EvaluateReconstructionKind`] (`kind = "evaluate-reconstruction"`, inputs `zoo`, `pca`,
//!   `autoencoder`, `tasks`, `data`): weight-space MSE and functional agreement of the test-split
//!   models with their PCA-only and PCA + autoencoder (or token transformer) reconstructions ([`evaluate`]).
//!
//! Which models: the rows of the zoo whose checkpoint is in the `pca` stage's `checkpoints` and whose
//! `status` is `ok`, in `zoo.csv` order ([`select_rows`]). Fitting uses the train split only.

pub mod autoencoder;
pub mod autoencoder_kind;
pub mod behaviour;
pub mod bench;
pub mod bench_codecs;
pub mod codec;
pub mod evaluate;
pub mod linalg;
pub mod network;
pub mod pca;
pub mod tokens;
pub mod transformer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod transformer_tests;

pub use autoencoder::Autoencoder;
pub use autoencoder_kind::{AutoencoderKind, AutoencoderOptions};
pub use codec::Codec;
pub use evaluate::EvaluateReconstructionKind;
pub use network::Network;
pub use pca::{Coefficients, PcaKind, PcaOptions, WeightPca};

use crate::data::TaskSplit;
use crate::zoo::store::{Checkpoint, Zoo, ZooRow};

/// The rows encoded by a `pca` stage: `status = ok` and checkpoint in `checkpoints`, in file order.
pub fn select_rows<'a>(zoo: &'a Zoo, checkpoints: &[Checkpoint]) -> Vec<&'a ZooRow> {
    zoo.rows.iter().filter(|r| r.ok() && checkpoints.contains(&r.checkpoint)).collect()
}

/// Positions in `rows` of the rows of one split.
pub(crate) fn split_rows(rows: &[&ZooRow], split: TaskSplit) -> Vec<usize> {
    rows.iter().enumerate().filter(|(_, r)| r.split == split).map(|(i, _)| i).collect()
}
