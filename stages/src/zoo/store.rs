//! The `zoo` stage's output format, and [`Zoo::load`] to read it back.
//!
//! | file | content |
//! | --- | --- |
//! | `zoo.csv` | one row per (model, checkpoint): `model_id, checkpoint (early|final), epoch, arch, class_0, class_1, class_2, split (train|val|test), optimizer, lr, batch_size, seed, init, train_loss, val_loss, val_acc, test_loss, test_acc, status (ok|diverged), file, task_id` |
//! | `models/m<id>-<checkpoint>.safetensors` | the weights, `F32`, PyTorch names and shapes (`conv1.weight` `[8,1,5,5]`, …): `model.load_state_dict(safetensors.torch.load_file(f))` |
//! | `zoo.json` | `arch`, `parameters` (`name`, `shape`, in PyTorch `state_dict` order), `models`, `checkpoints`, `recipe` (the stage's resolved parameters) |
//! | `metrics.json` | mean / min / max test accuracy and loss of the final and early checkpoints, diverged count |
//!
//! `class_k` is the dataset class whose images carry label `k` (output unit `k`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wspace_stage_api::{choice_enum, Choice, StageError};

use crate::data::TaskSplit;
use crate::tensors::{self, NamedTensors, TensorFile};

choice_enum! {
    /// Which checkpoint of a model a row describes.
    #[derive(Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Checkpoint { Early = "early", Final = "final" }
}

impl Checkpoint {
    pub fn as_str(self) -> &'static str {
        self.name()
    }
}

/// One row of `zoo.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooRow {
    pub model_id: usize,
    pub checkpoint: Checkpoint,
    pub epoch: usize,
    pub arch: String,
    pub class_0: usize,
    pub class_1: usize,
    pub class_2: usize,
    pub split: TaskSplit,
    pub optimizer: String,
    pub lr: f64,
    pub batch_size: usize,
    /// The weights' initialisation seed.
    pub seed: u64,
    /// `random` (the model's own init), `shared`, or the index of its init group (`zoo.init = K`).
    #[serde(default = "own_init")]
    pub init: String,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    /// `ok` or `diverged`.
    pub status: String,
    /// Relative to the zoo directory.
    pub file: String,
    pub task_id: usize,
}

fn own_init() -> String {
    "random".into()
}

/// One checkpoint of a zoo's model, as the stages built on a zoo list it (a `pca` output's rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowRef {
    pub model_id: usize,
    pub checkpoint: Checkpoint,
    pub split: TaskSplit,
    pub task_id: usize,
}

impl ZooRow {
    pub fn classes(&self) -> [usize; 3] {
        [self.class_0, self.class_1, self.class_2]
    }

    /// This row as a [`RowRef`].
    pub fn reference(&self) -> RowRef {
        RowRef { model_id: self.model_id, checkpoint: self.checkpoint, split: self.split, task_id: self.task_id }
    }
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

/// A parameter tensor's name and shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamShape {
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamShape {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `zoo.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZooMeta {
    pub arch: String,
    pub parameters: Vec<ParamShape>,
    pub models: usize,
    pub checkpoints: Vec<Checkpoint>,
    /// The stage's resolved parameters (the recipe's distributions), for reports.
    #[serde(default)]
    pub recipe: std::collections::BTreeMap<String, wspace_stage_api::Value>,
    /// How the models' inputs were preprocessed, where the zoo says (an imported zoo, `zoo-import`'s
    /// `input_mean`, `input_std`); absent: pixels / 255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<crate::resnet::InputTransform>,
}

/// A zoo stage's output, read back.
#[derive(Debug, Clone)]
pub struct Zoo {
    pub dir: PathBuf,
    pub meta: ZooMeta,
    pub rows: Vec<ZooRow>,
}

impl Zoo {
    pub fn load(dir: &Path) -> Result<Zoo, StageError> {
        let meta: ZooMeta = tensors::read_json(&dir.join("zoo.json"))?;
        let rows = tensors::read_records(&dir.join("zoo.csv"))?;
        Ok(Zoo { dir: dir.to_path_buf(), meta, rows })
    }

    /// Total parameter count of one model.
    pub fn num_params(&self) -> usize {
        self.meta.parameters.iter().map(ParamShape::len).sum()
    }

    /// One row's weights, in `state_dict` order.
    pub fn weights(&self, row: &ZooRow) -> Result<NamedTensors, StageError> {
        let path = self.dir.join(&row.file);
        let mut all = TensorFile::open(&path)?.f32_all()?;
        let mut out = NamedTensors::new();
        for p in &self.meta.parameters {
            let t =
                all.take(&p.name).ok_or_else(|| StageError::msg(format!("{}: has no tensor `{}`", path.display(), p.name)))?;
            if t.shape != p.shape {
                return Err(StageError::msg(format!(
                    "{}: `{}` has shape {:?}, zoo.json says {:?}",
                    path.display(),
                    t.name,
                    t.shape,
                    p.shape
                )));
            }
            out.push(t.name, t.shape, t.values);
        }
        Ok(out)
    }

    /// One row's weights as one vector (parameters concatenated in `state_dict` order).
    pub fn flat(&self, row: &ZooRow) -> Result<Vec<f32>, StageError> {
        Ok(self.weights(row)?.flat())
    }

    /// The row of a `pca` coefficient row's model (the same `model_id` and checkpoint).
    pub fn row_of(&self, r: &RowRef) -> Result<&ZooRow, StageError> {
        self.rows.iter().find(|z| z.model_id == r.model_id && z.checkpoint == r.checkpoint).ok_or_else(|| {
            StageError::input(
                "zoo",
                format!("has no model {} ({}), which the `pca` input lists", r.model_id, r.checkpoint.as_str()),
            )
        })
    }

    /// The rows of one checkpoint kind, in model order.
    pub fn checkpoint(&self, c: Checkpoint) -> impl Iterator<Item = &ZooRow> {
        self.rows.iter().filter(move |r| r.checkpoint == c)
    }
}

/// Writes `zoo.csv`.
pub fn write_csv(path: &Path, rows: &[ZooRow]) -> Result<(), StageError> {
    tensors::write_records(path, rows)
}
