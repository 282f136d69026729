//! Data: the `dataset` and `tasks` stage kinds, and the reading API later stages use.
//!
//! # Brief overview
//! - [`DatasetKind`] (`kind = "dataset"`) reads images and labels from one of four sources and
//!   writes them in one format: the embedded Fashion-MNIST subset (the default, compiled into the
//!   binary), IDX files (MNIST / Fashion-MNIST), CIFAR-10 binary batches, or an image folder.
//!   [`Dataset::load`] reads its output back.
//! - [`TasksKind`] (`kind = "tasks"`, input slot `data`) samples ordered 3-class tasks from a
//!   dataset, split into train / val / test at the level of unordered class triplets, with per-task
//!   image index lists. [`Tasks::load`] reads its output back.
//!
//! Both kinds are deterministic: the same parameters and input bytes give the same output bytes.
//! Every malformed input (truncated file, wrong magic number, count mismatch, label out of range,
//! missing file, mixed image sizes) is a [`StageError`](wspace_stage_api::StageError) that names the
//! file and says what was expected and what was found.
//!
//! # `dataset` output (a directory)
//! | file | content |
//! | --- | --- |
//! | `train.safetensors`, `test.safetensors` | `images`: `U8` `[N, C, H, W]`; `labels`: `I64` `[N]` (class index) |
//! | `dataset.json` | [`DatasetMeta`]: `classes`, `channels`, `height`, `width`, `train_count`, `test_count`, `format`, `train_class_counts`, `test_class_counts` |
//! | `metrics.json` | scalar counts: `classes`, `channels`, `height`, `width`, `train_count`, `test_count` |
//!
//! In Python: `safetensors.numpy.load_file("train.safetensors")["images"]`.
//!
//! # `tasks` output (a directory)
//! | file | content |
//! | --- | --- |
//! | `tasks.csv` | `task_id,class_0,class_1,class_2,split`: one row per task, class indices of the dataset |
//! | `tasks.json` | the class names (`classes`), the unordered triplets dealt to each split (`triplets`: `train`, `val`, `test`), and per task `id`, `classes`, `class_names`, `split`, `train_count`, `val_count`, `test_count` |
//! | `indices.safetensors` | the per-task image index lists, concatenated (CSR): `I64` tensors `train`, `val`, `test` index the dataset's train (`train`, `val`) and test (`test`) arrays; `train_offsets`, `val_offsets`, `test_offsets` (`[tasks + 1]`) delimit task `i` as `train[train_offsets[i]:train_offsets[i+1]]` |
//! | `metrics.json` | scalar counts: `tasks`, `train_tasks`, `val_tasks`, `test_tasks` (rows), `train_triplets`, `val_triplets`, `test_triplets`, `distinct_ordered_tasks`, `mean_train_images` |
//!
//! The index lists live in safetensors rather than JSON because they are large (3 classes × up to
//! 6,000 images per task for full Fashion-MNIST).

mod cifar;
pub mod dataset;
pub(crate) mod files;
mod folder;
mod idx;
pub mod tasks;

pub use dataset::{Dataset, DatasetKind, DatasetMeta, DatasetOptions, Format, Split, FASHION_MNIST_CLASSES};
pub use tasks::{Task, TaskSplit, Tasks, TasksKind, TasksOptions, TripletSplit};
