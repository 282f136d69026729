//! The `zoo` stage kind: one model trained per task row, with two checkpoints each.
//!
//! # Brief overview
//! For task row `i` (input `tasks`), model `i` draws its recipe from [`sample::Recipe`] (optimizer
//! Adam or SGD with momentum, learning rate, batch size, the "early" and "final" checkpoint epochs),
//! initialises its weights (PyTorch's default init, our RNG) from its own seed, or with `init = "shared"`
//! from one seed common to every model, or with `init = K` from one of K seeds (model `i` takes seed
//! group `i mod K`; `zoo.csv`'s `init` column says which), trains on the task's
//! training images (input `data`; pixels/255, class `k` of the task ↔ output unit `k`), and at both
//! checkpoint epochs records the mean training loss of that epoch and the loss and accuracy on the
//! task's validation and test images. Models train in parallel, one thread each, inside the run's
//! thread budget. The output format is described in [`store`].
//!
//! **Divergence**: a model whose loss or gradient becomes non-finite keeps its last finite weights and
//! is recorded with `status = diverged`; the stage fails only when more than `max_diverged_fraction`
//! of the models diverged.
//!
//! **Resume**: each finished model is written at once into the stage's scratch directory (weights,
//! then a small record, each renamed into place). A killed or interrupted run's finished models are
//! found there by the next attempt of the same stage key and not retrained; a model part-way through
//! training when a run is interrupted is trained again from the start.
//!
//! **Shards** ([`StageKind::run_shard`]): shard `i` of `n` trains the task rows `i`, `i + n`, … into
//! the same scratch directory; `run` then finds every model trained and only assembles the output. A
//! model's bytes depend on its task row and the recipe alone, so the zoo is the same for any `n`.
//!
//! Architectures: `cnn-s` (the Model-Zoos CNN, 2,317 parameters, trained by the hand-written kernel in
//! [`crate::nn`]) and `resnet18` (torchvision's ResNet-18 with 3 outputs, in candle: [`crate::resnet`];
//! grey images are replicated to 3 channels; `device = "cuda"` with the `cuda` cargo feature). A
//! ResNet-18 checkpoint also holds the BatchNorm buffers, under torchvision's names.
//!
//! Related kinds in this module: [`canonical`] (`kind = "canonicalise"`: a zoo with hidden units
//! matched to a reference) and [`multiclass`] (`kind = "multiclass"`: one `cnn-s` with a head for every
//! class, trained with the zoo's recipe — the row-selection baseline) and [`replicas`] (`kind =
//! "replicas"`: models trained independently per task with the zoo's recipe — the natural-diversity
//! reference).

pub mod bench;
pub mod canonical;
pub mod matching;
pub mod multiclass;
pub mod replicas;
pub mod sample;
pub mod store;

use std::path::Path;

use rayon::prelude::*;
use wspace_stage_api::{choice_enum, params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use crate::data::{Dataset, Task, Tasks};
use crate::device::DeviceName;
use crate::nn::{self, CnnS, Optimizer, TrainConfig, Trainer};
use crate::resnet;
use crate::tensors::{self, candle_error};
use sample::{ModelPlan, Recipe};
use store::{Checkpoint, ParamShape, ZooMeta, ZooRow};

pub use store::Zoo;

pub struct ZooKind;

choice_enum! {
    /// `arch`: the architecture every model has.
    pub enum ArchName { CnnS = "cnn-s", Resnet18 = "resnet18" }
}

params! {
    ARCH = "arch": choice(ArchName) = "cnn-s", "architecture";
    DEVICE = "device": choice(DeviceName) = "cpu", "where resnet18 trains (cuda needs the `cuda` cargo feature); cnn-s always trains on the CPU kernel";
    MAX_DIVERGED_FRACTION = "max_diverged_fraction": Float = 0.1, "the stage fails if more models than this diverge";
}

impl StageKind for ZooKind {
    fn name(&self) -> &'static str {
        "zoo"
    }
    fn version(&self) -> u32 {
        4
    }
    fn summary(&self) -> &'static str {
        "trains one model per task row (early and final checkpoints), recording losses and accuracies"
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut specs = Param::specs(&[ARCH, DEVICE]);
        specs.extend(Param::specs(Recipe::PARAMS));
        specs.push(MAX_DIVERGED_FRACTION.spec());
        specs
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![("data", true, "a `dataset` stage"), ("tasks", true, "a `tasks` stage (one model per task row)")])
    }

    fn validate(&self, params: Params) -> Result<(), StageError> {
        Recipe::from_params(params)?;
        Arch::from_params(params)?;
        params.fraction(&MAX_DIVERGED_FRACTION, false).map(|_| ())
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let job = Job::prepare(ctx)?;
        job.train(ctx, |_| true)?;
        job.assemble(ctx)
    }

    fn shardable(&self) -> bool {
        true
    }
    /// Each finished model stays in the scratch directory (see the module doc's **Resume**).
    fn resumes(&self) -> bool {
        true
    }

    /// Trains the models of task rows `index`, `index + count`, … (those not already finished) into
    /// the scratch directory; `run` then assembles the output.
    fn run_shard(&self, ctx: &StageContext, index: usize, count: usize) -> Result<(), StageError> {
        Job::prepare(ctx)?.train(ctx, |row| row % count == index)
    }
}

/// One attempt at a zoo: the inputs, read once, and the scratch layout (`done/mNNNNN.json` records and
/// `models/*.safetensors`).
struct Job {
    recipe: Recipe,
    data: Dataset,
    tasks: Tasks,
    arch: Arch,
}

impl Job {
    fn prepare(ctx: &StageContext) -> Result<Job, StageError> {
        let recipe = Recipe::from_params(ctx.view())?;
        let data = Dataset::load(ctx.input("data")?)?;
        let tasks = Tasks::load(ctx.input("tasks")?)?;
        let arch = Arch::from_params(ctx.view())?;
        if arch == Arch::CnnS && data.image_shape() != [1, 28, 28] {
            return Err(StageError::msg(format!(
                "stage `{}`: arch `cnn-s` needs 1×28×28 grey images; the dataset has {:?} (C, H, W)",
                ctx.stage,
                data.image_shape()
            )));
        }
        for d in [ctx.scratch.join("done"), ctx.scratch.join("models")] {
            std::fs::create_dir_all(&d).map_err(|e| StageError::io(&d, e))?;
        }
        Ok(Job { recipe, data, tasks, arch })
    }

    fn record(ctx: &StageContext, task: &Task) -> std::path::PathBuf {
        ctx.scratch.join("done").join(format!("m{:05}.json", task.id))
    }

    /// Trains, in parallel, the models of the task rows `select` picks that have no record yet.
    fn train(&self, ctx: &StageContext, select: impl Fn(usize) -> bool) -> Result<(), StageError> {
        let mine: Vec<&Task> = self.tasks.tasks.iter().enumerate().filter(|(row, _)| select(*row)).map(|(_, t)| t).collect();
        let pending: Vec<&Task> = mine.iter().copied().filter(|t| !Self::record(ctx, t).exists()).collect();
        ctx.progress.start(mine.len() as u64, "models");
        let resumed = mine.len() - pending.len();
        if resumed > 0 {
            ctx.progress.message(&format!("resumed: {resumed} models already trained"));
            ctx.progress.inc(resumed as u64);
        }
        pending.par_iter().try_for_each(|task| -> Result<(), StageError> {
            let plan = self.recipe.plan(task.id);
            let rows = train_model(self.arch, task.id, &plan, task, &self.recipe, &self.data, ctx.scratch)?;
            let path = Self::record(ctx, task);
            tensors::write_atomic(&path, &tensors::json_bytes(&path, &rows)?)?;
            ctx.progress.inc(1);
            Ok(())
        })
    }

    /// Gathers every model's rows and moves the weights into the output.
    fn assemble(&self, ctx: &StageContext) -> Result<(), StageError> {
        let total = self.tasks.tasks.len();
        let mut rows: Vec<ZooRow> = Vec::with_capacity(2 * total);
        for task in &self.tasks.tasks {
            let record: Vec<ZooRow> = tensors::read_json(&Self::record(ctx, task))?;
            rows.extend(record);
        }
        let out_models = ctx.out.join("models");
        std::fs::create_dir_all(&out_models).map_err(|e| StageError::io(&out_models, e))?;
        for row in &rows {
            let from = ctx.scratch.join(&row.file);
            let to = ctx.out.join(&row.file);
            std::fs::rename(&from, &to)
                .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
                .map_err(|e| StageError::io(&from, e))?;
        }
        store::write_csv(&ctx.out.join("zoo.csv"), &rows)?;
        let meta = ZooMeta {
            arch: self.arch.name().into(),
            parameters: self.arch.tensor_shapes(),
            models: total,
            checkpoints: vec![Checkpoint::Early, Checkpoint::Final],
            recipe: ctx.params.clone(),
            input: None,
        };
        tensors::write_json(&ctx.out.join("zoo.json"), &meta)?;
        let diverged = rows.iter().filter(|r| r.checkpoint == Checkpoint::Final && !r.ok()).count();
        tensors::write_json(&ctx.out.join("metrics.json"), &metrics(&rows, total, diverged))?;
        let max_diverged = ctx.view().fraction(&MAX_DIVERGED_FRACTION, false)?;
        if total > 0 && diverged as f64 > max_diverged * total as f64 {
            return Err(StageError::msg(format!(
                "{diverged} of {total} models diverged, more than max_diverged_fraction = {max_diverged}; see zoo.csv rows with status=diverged \
                 (lower the learning rates, or raise max_diverged_fraction)"
            )));
        }
        Ok(())
    }
}

/// Images (`N × C·H·W` u8) and task-local labels of the given indices.
fn gather(split: &crate::data::Split, indices: &[usize], task: &Task) -> Result<(Vec<u8>, Vec<u8>), StageError> {
    let mut images = Vec::with_capacity(indices.len() * split.image_len);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        if i >= split.len() {
            return Err(StageError::msg(format!("task {}: image index {i} is out of range ({} images)", task.id, split.len())));
        }
        images.extend_from_slice(split.image(i));
        let label = task.local_label(split.labels[i]).ok_or_else(|| {
            StageError::msg(format!("task {}: image {i} has class {} outside the task", task.id, split.labels[i]))
        })?;
        labels.push(label as u8);
    }
    Ok((images, labels))
}

/// The architectures the zoo trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arch {
    CnnS,
    Resnet18(resnet::DeviceChoice),
}

impl Arch {
    fn from_params(p: Params) -> Result<Arch, StageError> {
        Ok(match (p.choice(&ARCH)?, crate::device::built(p.choice(&DEVICE)?)?) {
            (ArchName::Resnet18, DeviceName::Cuda) => Arch::Resnet18(resnet::DeviceChoice::Cuda(0)),
            (ArchName::Resnet18, DeviceName::Cpu) => Arch::Resnet18(resnet::DeviceChoice::Cpu),
            (ArchName::CnnS, _) => Arch::CnnS,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Arch::CnnS => "cnn-s",
            Arch::Resnet18(_) => "resnet18",
        }
    }
    /// Every saved tensor (parameters, and for resnet18 the BatchNorm buffers), in `state_dict` order.
    fn tensor_shapes(self) -> Vec<ParamShape> {
        match self {
            Arch::CnnS => {
                nn::PARAM_SPECS.iter().map(|p| ParamShape { name: p.name.to_string(), shape: p.shape.to_vec() }).collect()
            }
            Arch::Resnet18(_) => {
                resnet::tensor_specs().into_iter().map(|t| ParamShape { name: t.name, shape: t.shape }).collect()
            }
        }
    }
}

/// What the training loop needs of a model being trained, whatever its architecture.
trait ModelTrainer {
    fn train_epoch(&mut self, x: &[u8], y: &[u8]) -> Result<nn::EpochStats, StageError>;
    fn evaluate(&self, x: &[u8], y: &[u8]) -> Result<nn::Evaluation, StageError>;
    fn named_tensors(&self) -> Result<crate::tensors::NamedTensors, StageError>;
    fn diverged(&self) -> bool;
}

impl ModelTrainer for Trainer {
    fn train_epoch(&mut self, x: &[u8], y: &[u8]) -> Result<nn::EpochStats, StageError> {
        Ok(Trainer::train_epoch(self, x, y))
    }
    fn evaluate(&self, x: &[u8], y: &[u8]) -> Result<nn::Evaluation, StageError> {
        Ok(nn::evaluate(self.model(), x, y))
    }
    fn named_tensors(&self) -> Result<crate::tensors::NamedTensors, StageError> {
        Ok(self.model().named_tensors().into())
    }
    fn diverged(&self) -> bool {
        Trainer::diverged(self) || !self.model().is_finite()
    }
}

struct ResnetTrainer {
    inner: resnet::Trainer,
    shape: [usize; 3],
}

impl ModelTrainer for ResnetTrainer {
    fn train_epoch(&mut self, x: &[u8], y: &[u8]) -> Result<nn::EpochStats, StageError> {
        let epoch = self.inner.train_epoch(&resnet::ImageSet { pixels: x, labels: y, shape: self.shape });
        wspace_stage_api::check_stop()?;
        epoch.map_err(candle_error("resnet18"))
    }
    fn evaluate(&self, x: &[u8], y: &[u8]) -> Result<nn::Evaluation, StageError> {
        self.inner.evaluate(&resnet::ImageSet { pixels: x, labels: y, shape: self.shape }).map_err(candle_error("resnet18"))
    }
    fn named_tensors(&self) -> Result<crate::tensors::NamedTensors, StageError> {
        self.inner.model().named_tensors().map_err(candle_error("resnet18"))
    }
    fn diverged(&self) -> bool {
        self.inner.diverged()
    }
}

/// Trains model `model_id` of `task` by `plan`; writes its checkpoints into `scratch/models/`; returns
/// its two rows.
fn train_model(
    arch: Arch,
    model_id: usize,
    plan: &ModelPlan,
    task: &Task,
    recipe: &Recipe,
    data: &Dataset,
    scratch: &Path,
) -> Result<Vec<ZooRow>, StageError> {
    let (train_x, train_y) = gather(&data.train, &task.train, task)?;
    let (val_x, val_y) = gather(&data.train, &task.val, task)?;
    let (test_x, test_y) = gather(&data.test, &task.test, task)?;
    if train_y.is_empty() {
        return Err(StageError::msg(format!("task {} has no training images", task.id)));
    }
    let optimizer = if plan.adam {
        Optimizer::Adam { lr: plan.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: recipe.weight_decay }
    } else {
        Optimizer::Sgd { lr: plan.lr, momentum: recipe.momentum, weight_decay: recipe.weight_decay }
    };
    let mut trainer: Box<dyn ModelTrainer> = match arch {
        Arch::CnnS => {
            let cfg = TrainConfig { optimizer, batch_size: plan.batch_size, seed: plan.data_seed };
            Box::new(Trainer::new(CnnS::init(plan.init_seed), &cfg))
        }
        Arch::Resnet18(device) => {
            let cfg = resnet::ResnetTrainConfig {
                device,
                ..resnet::ResnetTrainConfig::new(optimizer, plan.batch_size, plan.data_seed)
            };
            let dev = device.device().map_err(candle_error("resnet18"))?;
            let model = resnet::ResNet18::init(plan.init_seed, &dev).map_err(candle_error("resnet18"))?;
            Box::new(ResnetTrainer {
                inner: resnet::Trainer::new(model, &cfg).map_err(candle_error("resnet18"))?,
                shape: data.image_shape(),
            })
        }
    };
    let mut rows = Vec::with_capacity(2);
    let mut train_loss = f64::NAN;
    for epoch in 1..=plan.final_epoch {
        wspace_stage_api::check_stop()?;
        let stats = trainer.train_epoch(&train_x, &train_y)?;
        if !stats.diverged {
            train_loss = stats.loss;
        }
        let checkpoint = if epoch == plan.early_epoch {
            Checkpoint::Early
        } else if epoch == plan.final_epoch {
            Checkpoint::Final
        } else {
            continue;
        };
        let val = trainer.evaluate(&val_x, &val_y)?;
        let test = trainer.evaluate(&test_x, &test_y)?;
        let file = format!("models/m{model_id:05}-{}.safetensors", checkpoint.as_str());
        let path = scratch.join(&file);
        tensors::write_atomic(&path, &trainer.named_tensors()?.to_safetensors(&path)?)?;
        let diverged = trainer.diverged();
        rows.push(ZooRow {
            model_id,
            checkpoint,
            epoch,
            arch: arch.name().into(),
            class_0: task.classes[0],
            class_1: task.classes[1],
            class_2: task.classes[2],
            split: task.split,
            optimizer: if plan.adam { "adam" } else { "sgd" }.into(),
            lr: plan.lr,
            batch_size: plan.batch_size,
            seed: plan.init_seed,
            init: plan.init.clone(),
            train_loss: if diverged { f64::NAN } else { train_loss },
            val_loss: val.loss,
            val_acc: val.accuracy,
            test_loss: test.loss,
            test_acc: test.accuracy,
            status: if diverged { "diverged" } else { "ok" }.into(),
            file,
            task_id: task.id,
        });
    }
    Ok(rows)
}

fn metrics(rows: &[ZooRow], models: usize, diverged: usize) -> serde_json::Value {
    let stat = |c: Checkpoint, f: fn(&ZooRow) -> f64| {
        let v: Vec<f64> = rows.iter().filter(|r| r.checkpoint == c && r.ok()).map(f).filter(|x| x.is_finite()).collect();
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        serde_json::json!({"mean": mean, "min": min, "max": max})
    };
    serde_json::json!({
        "models": models,
        "diverged": diverged,
        "final_test_acc": stat(Checkpoint::Final, |r| r.test_acc),
        "final_test_loss": stat(Checkpoint::Final, |r| r.test_loss),
        "final_val_loss": stat(Checkpoint::Final, |r| r.val_loss),
        "early_test_acc": stat(Checkpoint::Early, |r| r.test_acc),
        "early_test_loss": stat(Checkpoint::Early, |r| r.test_loss),
    })
}

#[cfg(test)]
mod tests;
