//! The `zoo-import` stage kind: a published model zoo read into the `zoo` kind's layout, so that
//! `pca`, the `autoencoder` (MLP or token transformer), `evaluate-reconstruction` (without a `tasks`
//! input: a model's task is every class of its dataset) and `report` read it as they read a trained
//! zoo, and `canonicalise` aligns it. The behavioural loss and the samplers run the project's `cnn-s` only.
//!
//! # Brief overview
//! - `format = "model-zoos"`: a Model Zoos ray-tune directory ([`model_zoos`]).
//! - `format = "small-cnn-zoo"`: a Small CNN Zoo dataset directory ([`small_cnn_zoo`]).
//!
//! Both become [`SourceModel`]s (architecture, hyperparameters, the selected checkpoints' weights under
//! the project's names, and the metrics the source recorded). Each model's weights are written as soon as it is read ([`Keep`]: one model in memory at a time), the tables by [`write_zoo`]:
//!
//! | file | content |
//! | --- | --- |
//! | `models/m<id>-<early|final>.safetensors` | the weights, bit-identical to the source's after the documented reshapes ([`arch`]) |
//! | `zoo.csv` | the `zoo` kind's columns ([`crate::zoo::store`]), then `classes`, `train_acc`, `source` (the trial directory / `modeldir`) and every source hyperparameter without a column, under the source's own name (`model::dropout`, `config.l2reg`, …; empty where a model lacks it) |
//! | `zoo.json` | as the `zoo` kind's: `arch` (the models' common architecture; `mixed:<names>` when they differ, see `zoo.csv`'s `arch`), `parameters`, `models`, `checkpoints`, `recipe` (the stage's parameters, `path` left out) |
//! | `skipped.csv` | `model, file, reason` of every malformed model that was skipped |
//! | `metrics.json` | `models`, `skipped`, mean / min / max of the recorded final (and early) test accuracy |
//!
//! Columns: `epoch` is the Model Zoos epoch or the Small CNN Zoo step; `val_loss`, `val_acc` are empty
//! (NaN: neither source records a validation split); `train_loss` is NaN for an untrained
//! checkpoint; `class_k = k` and `task_id = model_id` (a model's task is every class of its dataset, in
//! the dataset's order: output unit k ↔ class k); `split` deals the last `round(test_fraction × n)`
//! models (in source order) to `test`, the `round(val_fraction × n)` before them to `val`, the rest to
//! `train`.
//!
//! **Preprocessing** is a parameter, because it is the source's: its models see
//! `(pixel / 255 − input_mean) / input_std` (one value for every channel), recorded in `zoo.json`'s
//! `input` and applied by `evaluate-reconstruction`. The default (0, 1: pixels / 255, unnormalised)
//! is what the fixtures were trained on. For a real download, read the transform in its training code
//! (Model Zoos: the dataset's `torchvision` transform; Small CNN Zoo: the TensorFlow input pipeline)
//! and set it here before comparing the recorded accuracies with the project's forward pass.
//!
//! **Cache key**: `path` is a `Path` parameter, so the runner hashes the content of every file under
//! it into the key (as for a `dataset` stage's files): an edited zoo reruns, a moved one does not.
//!
//! **Malformed models** are skipped and reported: one line each on the progress handle, in
//! `skipped.csv` and in `metrics.json`'s `skipped`; a zoo with no model left is an error that lists
//! the reasons. Faults of the whole zoo (e.g. `layout.csv` against `weights.npy`) are errors.

pub mod arch;
pub mod export;
pub mod model_zoos;
pub mod npy;
pub mod small_cnn_zoo;
pub mod torch_zip;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::json;
use wspace_stage_api::{choice_enum, params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use crate::data::TaskSplit;
use crate::resnet::InputTransform;
use crate::tensors::{self, NamedTensors};
use crate::zoo::store::{Checkpoint, ZooMeta, ZooRow};
use arch::Padding;

pub struct ZooImportKind;

choice_enum! {
    /// `format`: which published layout `path` holds.
    pub enum Format { ModelZoos = "model-zoos", SmallCnnZoo = "small-cnn-zoo" }
}

choice_enum! {
    /// `padding`: how the Small CNN Zoo's convolutions pad.
    pub enum PaddingName { Same = "same", Valid = "valid" }
}

params! {
    FORMAT = "format": choice(Format) = "model-zoos", "the source's layout: model-zoos (a ray-tune directory of trials) or small-cnn-zoo (weights.npy, metrics.csv.gz, layout.csv)";
    PATH = "path": Path = "", "the zoo's directory, required (its files' content joins the cache key)";
    FINAL_EPOCH = "final_epoch": Int = -1, "the epoch (model-zoos) or step (small-cnn-zoo) imported as each model's `final` checkpoint; -1 = each model's last";
    EARLY_EPOCH = "early_epoch": Int = -1, "the epoch or step imported as the `early` checkpoint; -1 = none";
    MAX_MODELS = "max_models": Int = 0, "import the first N well-formed models in source order; 0 = all";
    TEST_FRACTION = "test_fraction": Float = 0.2, "fraction of the models (the last, in source order) marked split = test";
    VAL_FRACTION = "val_fraction": Float = 0.0, "fraction marked split = val (those before the test models)";
    PADDING = "padding": choice(PaddingName) = "same", "small-cnn-zoo: the convolutions' padding (TensorFlow's same or valid)";
    INPUT_MEAN = "input_mean": Float = 0.0, "the source's preprocessing: its models see (pixel / 255 − input_mean) / input_std (recorded in zoo.json; evaluate-reconstruction applies it)";
    INPUT_STD = "input_std": Float = 1.0, "the source's preprocessing: see input_mean (> 0)";
}

const PARAMS: &[Param] =
    &[FORMAT, PATH, FINAL_EPOCH, EARLY_EPOCH, MAX_MODELS, TEST_FRACTION, VAL_FRACTION, PADDING, INPUT_MEAN, INPUT_STD];

/// Which checkpoints and models to import.
#[derive(Debug, Clone)]
pub struct Selection {
    /// `None`: each model's last.
    pub final_epoch: Option<usize>,
    pub early_epoch: Option<usize>,
    /// 0 = all.
    pub max_models: usize,
}

/// The stage's checked parameters.
#[derive(Debug, Clone)]
struct Options {
    format: Format,
    path: PathBuf,
    selection: Selection,
    test_fraction: f64,
    val_fraction: f64,
    padding: Padding,
    input: InputTransform,
}

impl Options {
    fn from_params(p: Params) -> Result<Options, StageError> {
        let epoch = |param: &Param| -> Result<Option<usize>, StageError> {
            match p.int(param)? {
                -1 => Ok(None),
                e if e >= 0 => Ok(Some(e as usize)),
                e => Err(StageError::param(param.name, format!("must be ≥ 0 or -1, got {e}"))),
            }
        };
        let selection =
            Selection { final_epoch: epoch(&FINAL_EPOCH)?, early_epoch: epoch(&EARLY_EPOCH)?, max_models: p.count(&MAX_MODELS)? };
        if selection.early_epoch.is_some() && selection.early_epoch == selection.final_epoch {
            return Err(StageError::param(EARLY_EPOCH.name, "must differ from `final_epoch`"));
        }
        let (test_fraction, val_fraction) = (p.fraction(&TEST_FRACTION, true)?, p.fraction(&VAL_FRACTION, true)?);
        if test_fraction + val_fraction >= 1.0 {
            return Err(StageError::param(VAL_FRACTION.name, "plus `test_fraction` must be < 1 (some models must be train)"));
        }
        let path = p.str(&PATH)?;
        if path.is_empty() {
            return Err(StageError::param(PATH.name, "is required (the zoo's directory)"));
        }
        let padding = match p.choice(&PADDING)? {
            PaddingName::Same => Padding::Same,
            PaddingName::Valid => Padding::Valid,
        };
        let (mean, std) = (p.float(&INPUT_MEAN)? as f32, p.positive_float(&INPUT_STD)? as f32);
        if !mean.is_finite() || !std.is_finite() {
            return Err(StageError::param(INPUT_MEAN.name, "and `input_std` must be finite"));
        }
        let input = InputTransform { mean: [mean; 3], std: [std; 3] };
        Ok(Options {
            format: p.choice(&FORMAT)?,
            path: PathBuf::from(path),
            selection,
            test_fraction,
            val_fraction,
            padding,
            input,
        })
    }
}

/// The metrics a source recorded for one checkpoint (NaN where it recorded none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub train_loss: f64,
    pub train_acc: f64,
    pub test_loss: f64,
    pub test_acc: f64,
}

/// One selected checkpoint of a source model.
#[derive(Debug, Clone)]
pub struct SourceCheckpoint {
    /// Epoch (Model Zoos) or step (Small CNN Zoo).
    pub epoch: usize,
    /// Under the project's names, in the architecture's order (empty once written, [`Keep`]).
    pub weights: NamedTensors,
    pub metrics: Metrics,
}

/// What a reader does with each well-formed model as soon as it is read: writes its weights (and
/// drops them) and returns what is left to keep, so that a reader holds one model's weights at a time.
pub type Keep<'a> = &'a mut dyn FnMut(SourceModel) -> Result<SourceModel, StageError>;

/// The file of model `id`'s checkpoint, relative to the stage output.
fn model_file(id: usize, which: Checkpoint) -> String {
    format!("models/m{id:05}-{}.safetensors", which.as_str())
}

/// One model of a source zoo.
#[derive(Debug, Clone)]
pub struct SourceModel {
    /// The trial directory's name or the `modeldir`.
    pub source: String,
    pub arch: arch::ImportArch,
    pub optimizer: String,
    pub lr: f64,
    pub batch_size: usize,
    pub seed: u64,
    pub init: String,
    /// Source hyperparameters with no column of their own, under their own names.
    pub extra: BTreeMap<String, String>,
    pub checkpoints: Vec<(Checkpoint, SourceCheckpoint)>,
}

/// A malformed model, skipped.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub model: String,
    pub file: PathBuf,
    pub reason: String,
}

impl StageKind for ZooImportKind {
    fn name(&self) -> &'static str {
        "zoo-import"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "imports a published zoo (Model Zoos, Small CNN Zoo) into the zoo layout"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(PARAMS)
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        Options::from_params(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = Options::from_params(ctx.view())?;
        let models_dir = ctx.out.join("models");
        std::fs::create_dir_all(&models_dir).map_err(|e| StageError::io(&models_dir, e))?;
        let mut kept = 0;
        let mut keep = |mut m: SourceModel| -> Result<SourceModel, StageError> {
            for (which, ck) in &mut m.checkpoints {
                std::mem::take(&mut ck.weights).write(&ctx.out.join(model_file(kept, *which)))?;
            }
            kept += 1;
            Ok(m)
        };
        let (models, skipped) = match opts.format {
            Format::ModelZoos => model_zoos::read(&opts.path, &opts.selection, &mut keep)?,
            Format::SmallCnnZoo => small_cnn_zoo::read(&opts.path, &opts.selection, opts.padding, &mut keep)?,
        };
        let skipped: Vec<Skipped> = skipped
            .into_iter()
            .map(|s| Skipped { file: s.file.strip_prefix(&opts.path).map(Path::to_path_buf).unwrap_or(s.file), ..s })
            .collect();
        for s in &skipped {
            ctx.progress.message(&format!("skipped model {}: {}: {}", s.model, s.file.display(), s.reason));
        }
        if models.is_empty() {
            let reasons: Vec<String> =
                skipped.iter().take(5).map(|s| format!("{}: {}: {}", s.model, s.file.display(), s.reason)).collect();
            return Err(StageError::msg(format!(
                "{}: no well-formed model to import ({} skipped){}{}",
                opts.path.display(),
                skipped.len(),
                if reasons.is_empty() { "" } else { ": " },
                reasons.join("; ")
            )));
        }
        let mut recipe = ctx.params.clone();
        recipe.remove(PATH.name);
        write_zoo(ctx.out, &models, &skipped, (opts.test_fraction, opts.val_fraction), opts.input, recipe)
    }
}

/// The split of model `i` of `n` (see the module doc).
fn split_of(i: usize, n: usize, (test_fraction, val_fraction): (f64, f64)) -> TaskSplit {
    let test = (test_fraction * n as f64).round() as usize;
    let val = (val_fraction * n as f64).round() as usize;
    if i + test >= n {
        TaskSplit::Test
    } else if i + test + val >= n {
        TaskSplit::Val
    } else {
        TaskSplit::Train
    }
}

/// The `zoo` kind's columns of one row, as its `zoo.csv` writes them.
const ZOO_COLUMNS: &[&str] = &[
    "model_id",
    "checkpoint",
    "epoch",
    "arch",
    "class_0",
    "class_1",
    "class_2",
    "split",
    "optimizer",
    "lr",
    "batch_size",
    "seed",
    "init",
    "train_loss",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "status",
    "file",
    "task_id",
];

fn zoo_fields(r: &ZooRow) -> Vec<String> {
    vec![
        r.model_id.to_string(),
        r.checkpoint.as_str().into(),
        r.epoch.to_string(),
        r.arch.clone(),
        r.class_0.to_string(),
        r.class_1.to_string(),
        r.class_2.to_string(),
        r.split.as_str().into(),
        r.optimizer.clone(),
        r.lr.to_string(),
        r.batch_size.to_string(),
        r.seed.to_string(),
        r.init.clone(),
        r.train_loss.to_string(),
        r.val_loss.to_string(),
        r.val_acc.to_string(),
        r.test_loss.to_string(),
        r.test_acc.to_string(),
        r.status.clone(),
        r.file.clone(),
        r.task_id.to_string(),
    ]
}

/// Writes the tables of `models` (their weights are written as they are read, [`Keep`]) in the `zoo`
/// kind's layout into `out` (see the module doc).
pub fn write_zoo(
    out: &Path,
    models: &[SourceModel],
    skipped: &[Skipped],
    fractions: (f64, f64),
    input: InputTransform,
    recipe: BTreeMap<String, wspace_stage_api::Value>,
) -> Result<(), StageError> {
    let extra_keys: BTreeSet<&str> = models.iter().flat_map(|m| m.extra.keys().map(String::as_str)).collect();
    let mut header: Vec<&str> = ZOO_COLUMNS.to_vec();
    header.extend(["classes", "train_acc", "source"]);
    header.extend(extra_keys.iter().copied().filter(|k| !header.contains(k)).collect::<Vec<_>>());
    let mut lines = Vec::new();
    let mut checkpoints = BTreeSet::new();
    for (id, m) in models.iter().enumerate() {
        for (which, ck) in &m.checkpoints {
            checkpoints.insert(*which);
            let file = model_file(id, *which);
            let row = ZooRow {
                model_id: id,
                checkpoint: *which,
                epoch: ck.epoch,
                arch: m.arch.name(),
                class_0: 0,
                class_1: 1,
                class_2: 2,
                split: split_of(id, models.len(), fractions),
                optimizer: m.optimizer.clone(),
                lr: m.lr,
                batch_size: m.batch_size,
                seed: m.seed,
                init: m.init.clone(),
                train_loss: ck.metrics.train_loss,
                val_loss: f64::NAN,
                val_acc: f64::NAN,
                test_loss: ck.metrics.test_loss,
                test_acc: ck.metrics.test_acc,
                status: "ok".into(),
                file,
                task_id: id,
            };
            let mut fields = zoo_fields(&row);
            fields.extend([m.arch.classes().to_string(), ck.metrics.train_acc.to_string(), m.source.clone()]);
            for k in &header[ZOO_COLUMNS.len() + 3..] {
                fields.push(m.extra.get(*k).cloned().unwrap_or_default());
            }
            lines.push(fields);
        }
    }
    tensors::write_csv(&out.join("zoo.csv"), &header, lines)?;
    let archs: BTreeSet<String> = models.iter().map(|m| m.arch.name()).collect();
    let arch_name = if archs.len() == 1 {
        archs.into_iter().next().unwrap_or_default()
    } else {
        format!("mixed:{}", archs.into_iter().collect::<Vec<_>>().join(","))
    };
    let parameters = models[0].arch.tensors();
    let checkpoints = checkpoints.into_iter().collect();
    let meta = ZooMeta { arch: arch_name, parameters, models: models.len(), checkpoints, recipe, input: Some(input) };
    tensors::write_json(&out.join("zoo.json"), &meta)?;
    let skipped_rows = skipped.iter().map(|s| vec![s.model.clone(), s.file.display().to_string(), s.reason.clone()]);
    tensors::write_csv(&out.join("skipped.csv"), &["model", "file", "reason"], skipped_rows)?;
    let stat = |c: Checkpoint| {
        let v: Vec<f64> = models
            .iter()
            .flat_map(|m| m.checkpoints.iter().filter(|(w, _)| *w == c).map(|(_, ck)| ck.metrics.test_acc))
            .filter(|x| x.is_finite())
            .collect();
        let n = v.len().max(1) as f64;
        json!({
            "mean": v.iter().sum::<f64>() / n,
            "min": v.iter().copied().fold(f64::INFINITY, f64::min),
            "max": v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    };
    let metrics = json!({
        "models": models.len(),
        "skipped": skipped.len(),
        "final_test_acc": stat(Checkpoint::Final),
        "early_test_acc": stat(Checkpoint::Early),
    });
    tensors::write_json(&out.join("metrics.json"), &metrics)
}

#[cfg(test)]
mod tests;
