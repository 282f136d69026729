//! wspace stage kinds: the science. Each kind implements [`wspace_stage_api::StageKind`]; [`kinds`]
//! lists them for the runner's registry. Nothing here knows about the cache.
//!
//! What the kinds share has one home each: [`tensors`] (named tensors, safetensors, JSON and CSV
//! files), [`sampling`] (every seeded random draw), [`fit`] (the AdamW loop with early stopping of
//! the small candle networks), [`layers`] (their transformer layers), [`ntxent`] (the contrastive
//! loss of `align` and the token transformer), [`plot`] (charts).

mod bench_args;
pub mod data;
pub mod device;
pub mod encoders;
pub mod fit;
pub mod generate;
pub mod import;
pub mod layers;
pub mod matmul;
pub mod nn;
pub mod ntxent;
pub mod param_ops;
pub mod plot;
pub mod resnet;
pub mod sampling;
mod synthetic;
pub mod tensors;
pub mod weights;
pub mod zoo;

#[cfg(all(test, feature = "cuda"))]
mod gpu_tests;
#[cfg(test)]
mod test_util;

use wspace_stage_api::StageKind;

pub use wspace_stage_api::Bench;

/// Benchmarks offered as `wspace bench NAME`: `(name, function)`; see each function's doc.
pub fn benches() -> Vec<(&'static str, Bench)> {
    vec![
        ("zoo", zoo::bench::bench_zoo),
        ("pca", weights::bench::bench_pca),
        ("align", generate::bench::bench_align),
        ("autoencoder", weights::bench_codecs::bench_autoencoder),
        ("refine", weights::bench_codecs::bench_refine),
        ("generator", generate::bench::bench_generator),
        ("flow", generate::bench::bench_flow),
    ]
}

/// Every stage kind this crate provides.
pub fn kinds() -> Vec<Box<dyn StageKind>> {
    vec![
        Box::new(data::DatasetKind),
        Box::new(data::TasksKind),
        Box::new(zoo::ZooKind),
        Box::new(import::ZooImportKind),
        Box::new(import::export::ExportZooKind),
        Box::new(zoo::canonical::CanonicaliseKind),
        Box::new(zoo::multiclass::MulticlassKind),
        Box::new(zoo::replicas::ReplicasKind),
        Box::new(encoders::DatasetEmbedKind),
        Box::new(weights::PcaKind),
        Box::new(weights::AutoencoderKind),
        Box::new(weights::EvaluateReconstructionKind),
        Box::new(generate::AlignKind),
        Box::new(generate::GeneratorKind),
        Box::new(generate::FlowKind),
        Box::new(generate::SampleKind),
        Box::new(generate::EvaluateSamplesKind),
        Box::new(generate::ReportKind),
    ]
}
