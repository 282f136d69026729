//! Conditional generation of model weights (the thesis's Section 3.2.3–3.3): prompt → weight latent →
//! decoded weights → a runnable model, and the evaluation of what comes out.
//!
//! # Brief overview
//! - [`model`]: the results encoder (binned validation loss → learned embedding) and the shared
//!   encoder (MLP on `[dataset embedding; results embedding]` → `z_proj` in the weight latent space).
//! - [`crate::ntxent`]: the symmetric NT-Xent loss, checked against PyTorch (shared with the token transformer).
//! - [`AlignKind`] (`kind = "align"`, inputs `zoo`, `pca`, `autoencoder`, `embed`): trains both encoders
//!   against the autoencoder's fixed weight latents ([`align`]).
//! - [`GeneratorKind`] (`kind = "generator"`, inputs `zoo`, `tasks`, `data`, `embed`): a conditional
//!   generator whose head rows follow the prompt's class order and whose body is shared, distilled from
//!   the zoo's models ([`generator`]).
//! - [`FlowKind`] (`kind = "flow"`, inputs `pca`, `autoencoder`, `zoo`, `embed`): a conditional flow
//!   over whole networks in a token codec's latent space ([`flow`]).
//! - [`SampleKind`] (`kind = "sample"`): for every test-split task, a grid of target losses and
//!   `samples_per_prompt` draws, weights from the method of choice: `align` (`z_proj` → the
//!   autoencoder's decoder → inverse PCA) or `generator` ([`sample`]).
//! - [`EvaluateSamplesKind`] (`kind = "evaluate-samples"`): the samples on their tasks' real test images
//!   against trained, nearest-neighbour, noisy-neighbour and random-init baselines ([`evaluate`]).
//! - [`ReportKind`] (`kind = "report"`, all inputs optional): one self-contained HTML page ([`report`]),
//!   opening with the headline table ([`headline`]).

pub mod align;
pub mod bench;
pub mod evaluate;
pub mod flow;
pub mod generator;
pub mod headline;
pub mod model;
pub mod report;
pub mod sample;

#[cfg(test)]
mod tests;

pub use align::AlignKind;
pub use evaluate::EvaluateSamplesKind;
pub use flow::FlowKind;
pub use generator::GeneratorKind;
pub use report::ReportKind;
pub use sample::SampleKind;
