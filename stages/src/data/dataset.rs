//! The `dataset` stage kind and the [`Dataset`] it writes and later stages read.
//!
//! # Parameters
//! | name | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `format` | `"embedded"`, `"idx"`, `"cifar10"`, `"folder"` | `"embedded"` | the source (see below) |
//! | `path` | path | `""` | the source directory; required unless `format = "embedded"`, which takes none |
//! | `train_per_class` | integer | `0` | keep the first N training images of each class, in file order (`0` = all) |
//! | `test_per_class` | integer | `0` | the same for the test split |
//! | `class_names` | array of strings | `[]` | names in label order; `[]` = the source's (below); otherwise one per class |
//! | `channels` | integer | `0` | `folder` only: `1` grey, `3` RGB, `0` auto; other formats accept `0` or their own count |
//!
//! Sources and their default class names:
//! - `embedded`: the Fashion-MNIST subset in `assets/fashion-mnist/` (1,000 train + 200 test
//!   images per class, 28 × 28 grey; see its README for licence and provenance), compiled into the
//!   binary. Names: [`FASHION_MNIST_CLASSES`].
//! - `idx`: a directory of MNIST-format IDX files, raw or gzip. Names `"0"`, `"1"`, … up to the
//!   largest label (so a full Fashion-MNIST directory wants `class_names` set for readable names).
//! - `cifar10`: CIFAR-10 binary batches; names from `batches.meta.txt`.
//! - `folder`: `train/<class>/*.png|jpg` and `test/<class>/*`; names = the sorted folder names.
//!
//! Output: `train.safetensors`, `test.safetensors`, `dataset.json`, `metrics.json` (see the
//! [module doc](super)). Images are `U8 [N, C, H, W]`, in source order after the class caps.

use std::path::{Path, PathBuf};

use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};
use wspace_stage_api::{
    choice_enum, params, Choice, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind, Value,
};

use super::files::{self, RawDataset};
use super::{cifar, folder, idx};
use crate::tensors::{self, TensorFile};

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

const EMBEDDED_TRAIN_IMAGES: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/fashion-mnist/train-images-idx3-ubyte.gz"));
const EMBEDDED_TRAIN_LABELS: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/fashion-mnist/train-labels-idx1-ubyte.gz"));
const EMBEDDED_TEST_IMAGES: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/fashion-mnist/t10k-images-idx3-ubyte.gz"));
const EMBEDDED_TEST_LABELS: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/fashion-mnist/t10k-labels-idx1-ubyte.gz"));

choice_enum! {
    /// Where a dataset comes from.
    pub enum Format { Embedded = "embedded", Idx = "idx", Cifar10 = "cifar10", Folder = "folder" }
}

params! {
    FORMAT = "format": choice(Format) = "embedded", "the source: embedded (Fashion-MNIST subset), idx, cifar10 or folder";
    PATH = "path": Path = "", "the source directory (required unless format = \"embedded\")";
    TRAIN_PER_CLASS = "train_per_class": Int = 0, "keep the first N training images of each class, in file order (0 = all)";
    TEST_PER_CLASS = "test_per_class": Int = 0, "keep the first N test images of each class, in file order (0 = all)";
    CLASS_NAMES = "class_names": [Str] = [], "class names in label order ([] = the source's names)";
    CHANNELS = "channels": Int = 0, "folder format: 1 = grey, 3 = RGB, 0 = auto (grey if every image is grey)";
}

/// The checked parameters of a `dataset` stage; [`DatasetOptions::build`] reads the source.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    pub format: Format,
    /// The source directory; `None` for `Format::Embedded`.
    pub path: Option<PathBuf>,
    /// First N images of each class, in file order; 0 = all.
    pub train_per_class: usize,
    pub test_per_class: usize,
    /// Empty = the source's names.
    pub class_names: Vec<String>,
    /// 0 = as the source (auto for folders), 1 = grey, 3 = RGB.
    pub channels: usize,
}

impl Default for DatasetOptions {
    /// The embedded Fashion-MNIST subset, whole.
    fn default() -> Self {
        DatasetOptions {
            format: Format::Embedded,
            path: None,
            train_per_class: 0,
            test_per_class: 0,
            class_names: Vec::new(),
            channels: 0,
        }
    }
}

impl DatasetOptions {
    /// Reads and checks the stage's parameters.
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        let format: Format = p.choice(&FORMAT)?;
        let path = p.str(&PATH)?;
        let path = match (format, path.is_empty()) {
            (Format::Embedded, true) => None,
            (Format::Embedded, false) => {
                return Err(StageError::param(
                    PATH.name,
                    format!("(\"{path}\") is not used with format = \"embedded\"; remove it or set `format`"),
                ))
            }
            (_, true) => {
                return Err(StageError::param(
                    PATH.name,
                    format!("is required with format = \"{}\" (the directory to read)", format.name()),
                ))
            }
            (_, false) => Some(PathBuf::from(path)),
        };
        let class_names = match p.value(&CLASS_NAMES)? {
            Value::List(items) => items
                .iter()
                .map(|v| {
                    v.as_str().map(String::from).ok_or_else(|| StageError::param(CLASS_NAMES.name, "must be an array of strings"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            other => {
                return Err(StageError::param(
                    CLASS_NAMES.name,
                    format!("must be an array of strings, got {}", other.type_name()),
                ))
            }
        };
        let channels = p.count(&CHANNELS)?;
        if ![0, 1, 3].contains(&channels) {
            return Err(StageError::param(CHANNELS.name, format!("must be 0 (auto), 1 or 3, got {channels}")));
        }
        Ok(DatasetOptions {
            format,
            path,
            train_per_class: p.count(&TRAIN_PER_CLASS)?,
            test_per_class: p.count(&TEST_PER_CLASS)?,
            class_names,
            channels,
        })
    }

    fn source(&self) -> Result<&Path, StageError> {
        let path = self
            .path
            .as_deref()
            .ok_or_else(|| StageError::param("path", format!("is required with format = \"{}\"", self.format.name())))?;
        if !path.is_dir() {
            return Err(StageError::msg(format!(
                "{}: not a directory (parameter `path`, format = \"{}\")",
                path.display(),
                self.format.name()
            )));
        }
        Ok(path)
    }

    /// Reads the source, applies names and caps.
    pub fn build(&self) -> Result<Dataset, StageError> {
        let given = (!self.class_names.is_empty()).then_some(self.class_names.len());
        let raw = match self.format {
            Format::Embedded => read_embedded()?,
            Format::Idx => idx::read_dir(self.source()?, given)?,
            Format::Cifar10 => cifar::read_dir(self.source()?)?,
            Format::Folder => folder::read_dir(self.source()?, self.channels)?,
        };
        if raw.train.labels.is_empty() {
            let source = self.path.as_ref().map_or("the embedded data".into(), |p| p.display().to_string());
            return Err(StageError::msg(format!("{source}: no training images")));
        }
        if self.channels != 0 && self.channels != raw.channels {
            return Err(StageError::param(
                "channels",
                format!(
                    "= {} but format \"{}\" has {} channel(s); conversion is only done for \"folder\"",
                    self.channels,
                    self.format.name(),
                    raw.channels
                ),
            ));
        }
        let source_names: Vec<String> = match self.format {
            Format::Embedded => FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect(),
            Format::Idx => {
                let max = raw.train.labels.iter().chain(&raw.test.labels).max().copied();
                (0..max.map_or(0, |m| m + 1)).map(|i| i.to_string()).collect()
            }
            Format::Cifar10 | Format::Folder => raw.classes.clone(),
        };
        let classes = if self.class_names.is_empty() {
            source_names
        } else if self.format == Format::Idx || self.class_names.len() == source_names.len() {
            self.class_names.clone()
        } else {
            return Err(StageError::param(
                "class_names",
                format!(
                    "has {} names, but the {} dataset has {} classes ({})",
                    self.class_names.len(),
                    self.format.name(),
                    source_names.len(),
                    source_names.join(", ")
                ),
            ));
        };
        Ok(Dataset::from_raw(raw, classes, self))
    }
}

fn read_embedded() -> Result<RawDataset, StageError> {
    let what = |name: &str| format!("embedded assets/fashion-mnist/{name}");
    let split = |images: &[u8], labels: &[u8], stem: &str| {
        let (iw, lw) = (what(&format!("{stem}-images-idx3-ubyte.gz")), what(&format!("{stem}-labels-idx1-ubyte.gz")));
        idx::parse_split(
            &iw,
            files::gunzip_if_gzip(&iw, images.to_vec())?,
            &lw,
            files::gunzip_if_gzip(&lw, labels.to_vec())?,
            Some(FASHION_MNIST_CLASSES.len()),
        )
    };
    idx::from_splits(
        split(EMBEDDED_TRAIN_IMAGES, EMBEDDED_TRAIN_LABELS, "train")?,
        split(EMBEDDED_TEST_IMAGES, EMBEDDED_TEST_LABELS, "t10k")?,
        &what("t10k-images-idx3-ubyte.gz"),
    )
}

/// What `dataset.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetMeta {
    /// Class names in label order.
    pub classes: Vec<String>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub train_count: usize,
    pub test_count: usize,
    /// The source format (`"embedded"`, `"idx"`, `"cifar10"`, `"folder"`).
    pub format: String,
    /// Images per class in each split.
    pub train_class_counts: Vec<usize>,
    pub test_class_counts: Vec<usize>,
}

/// One split: `images` holds `len()` images of `image_len` bytes each (`C, H, W` order);
/// `labels[i]` is the class index of image `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
    /// `C × H × W`.
    pub image_len: usize,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The bytes of image `i` (`C × H × W`). Panics when `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.image_len..(i + 1) * self.image_len]
    }

    /// The indices of the images of `class`, in file order.
    pub fn indices_of(&self, class: usize) -> Vec<usize> {
        self.labels.iter().enumerate().filter(|(_, &l)| l == class as i64).map(|(i, _)| i).collect()
    }

    fn class_counts(&self, classes: usize) -> Vec<usize> {
        let mut counts = vec![0; classes];
        for &l in &self.labels {
            if let Some(c) = usize::try_from(l).ok().and_then(|l| counts.get_mut(l)) {
                *c += 1;
            }
        }
        counts
    }
}

/// A dataset stage's output, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub meta: DatasetMeta,
    pub train: Split,
    pub test: Split,
}

impl Dataset {
    fn from_raw(raw: RawDataset, classes: Vec<String>, opts: &DatasetOptions) -> Dataset {
        let image_len = raw.channels * raw.height * raw.width;
        let split = |s, cap| {
            let s = files::cap_per_class(s, image_len, cap);
            Split { images: s.images, labels: s.labels.into_iter().map(i64::from).collect(), image_len }
        };
        let train = split(raw.train, opts.train_per_class);
        let test = split(raw.test, opts.test_per_class);
        let meta = DatasetMeta {
            train_class_counts: train.class_counts(classes.len()),
            test_class_counts: test.class_counts(classes.len()),
            classes,
            channels: raw.channels,
            height: raw.height,
            width: raw.width,
            train_count: train.len(),
            test_count: test.len(),
            format: opts.format.name().to_string(),
        };
        Dataset { meta, train, test }
    }

    pub fn num_classes(&self) -> usize {
        self.meta.classes.len()
    }

    /// `[C, H, W]`.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.meta.channels, self.meta.height, self.meta.width]
    }

    /// Writes `train.safetensors`, `test.safetensors` and `dataset.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), StageError> {
        for (name, split) in [("train", &self.train), ("test", &self.test)] {
            let [c, h, w] = self.image_shape();
            let labels = tensors::i64_bytes(split.labels.iter().copied());
            tensors::write_safetensors(
                &dir.join(format!("{name}.safetensors")),
                &[
                    ("images", Dtype::U8, vec![split.len(), c, h, w], &split.images),
                    ("labels", Dtype::I64, vec![split.len()], &labels),
                ],
            )?;
        }
        tensors::write_json(&dir.join("dataset.json"), &self.meta)
    }

    /// Reads a `dataset` stage's output directory, checking shapes, counts and label ranges.
    pub fn load(dir: &Path) -> Result<Dataset, StageError> {
        let meta: DatasetMeta = tensors::read_json(&dir.join("dataset.json"))?;
        let shape = [meta.channels, meta.height, meta.width];
        let load_split = |name: &str, count: usize| -> Result<Split, StageError> {
            let file = TensorFile::open(&dir.join(format!("{name}.safetensors")))?;
            let (dims, images) = file.u8("images", 4)?;
            let labels = file.i64_vec("labels")?;
            if dims[1..] != shape || dims[0] != count || labels.len() != count {
                return Err(StageError::msg(format!(
                    "{}: images {dims:?} and {} labels, but dataset.json says {count} images of {shape:?}",
                    file.path(),
                    labels.len()
                )));
            }
            if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l as usize >= meta.classes.len()) {
                return Err(StageError::msg(format!(
                    "{}: label {l} at index {i} is out of range for {} classes",
                    file.path(),
                    meta.classes.len()
                )));
            }
            Ok(Split { images, labels, image_len: shape.iter().product() })
        };
        let train = load_split("train", meta.train_count)?;
        let test = load_split("test", meta.test_count)?;
        Ok(Dataset { meta, train, test })
    }
}

/// `kind = "dataset"`: see the [module doc](self).
pub struct DatasetKind;

impl StageKind for DatasetKind {
    fn name(&self) -> &'static str {
        "dataset"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "images and labels from the embedded Fashion-MNIST subset, IDX, CIFAR-10 or an image folder"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(&[FORMAT, PATH, TRAIN_PER_CLASS, TEST_PER_CLASS, CLASS_NAMES, CHANNELS])
    }

    fn inputs(&self) -> Inputs {
        Inputs::Slots(Vec::new())
    }

    fn validate(&self, params: Params) -> Result<(), StageError> {
        DatasetOptions::from_params(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = DatasetOptions::from_params(ctx.view())?;
        ctx.progress.message(&format!("reading {} data", opts.format.name()));
        let dataset = opts.build()?;
        dataset.write(ctx.out)?;
        let m = &dataset.meta;
        tensors::write_json(
            &ctx.out.join("metrics.json"),
            &serde_json::json!({
                "classes": m.classes.len(),
                "channels": m.channels,
                "height": m.height,
                "width": m.width,
                "train_count": m.train_count,
                "test_count": m.test_count,
            }),
        )
    }
}

#[cfg(test)]
#[path = "dataset_tests.rs"]
mod tests;
