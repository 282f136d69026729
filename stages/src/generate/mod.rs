//! Conditional generation of model weights (the thesis's Section 3.2.3–3.3): prompt → weight latent →
//! decoded weights → a runnable model, and the evaluation of what comes out.
//!
//! # Brief overview
//! - [`model`]: the results encoder (binned validation loss → learned embedding) and the shared
//!   encoder (MLP on `[dataset embedding; results embedding]` → `z_proj` in the weight latent space).
//! - [`ntxent`]: the symmetric NT-Xent loss, checked against PyTorch.
//! - [`AlignKind`] (`kind = "align"`, inputs `zoo`, `pca`, `autoencoder`, `embed`): trains both encoders
//!   against the autoencoder's fixed weight latents ([`align`]).
//! - [`SampleKind`] (`kind = "sample"`): for every test-split task and a grid of target losses,
//!   `z_proj` → the autoencoder's decoder → inverse PCA → weights ([`sample`]).
//! - [`EvaluateSamplesKind`] (`kind = "evaluate-samples"`): the samples on their tasks' real test images
//!   against trained, nearest-neighbour, noisy-neighbour and random-init baselines ([`evaluate`]).
//! - [`ReportKind`] (`kind = "report"`, all inputs optional): one self-contained HTML page ([`report`]),
//!   opening with the headline table ([`headline`]).

pub mod align;
pub mod evaluate;
pub mod headline;
pub mod model;
pub mod ntxent;
pub mod report;
pub mod sample;

#[cfg(test)]
mod tests;

pub use align::AlignKind;
pub use evaluate::EvaluateSamplesKind;
pub use report::ReportKind;
pub use sample::SampleKind;
