//! The `export-zoo` stage kind: a wspace zoo of cnn-s models written in the Model Zoos layout, so
//! that SANE's and the Model Zoos loaders read it (`torch.load` + `load_state_dict`).
//!
//! ```text
//! model-zoos/m<id>/params.json                      model::type "CNN", model::o_dim, model::nlin, optim::*, seed,
//!                                                   training::batchsize, and wspace::classes, wspace::task_id, wspace::split
//! model-zoos/m<id>/result.json                      one JSON line per checkpoint: training_iteration = its epoch,
//!                                                   train_loss, test_loss, test_acc, val_loss, val_acc (null where unknown)
//! model-zoos/m<id>/progress.csv                     the same records
//! model-zoos/m<id>/checkpoint_<epoch>/checkpoints   torch.save zip state dict, module_list.{0,3,6,9,11}.weight|bias
//! metrics.json                                      models, checkpoints
//! ```
//!
//! The `module_list` indices are those of the Model Zoos CNN without dropout modules (conv 0, pool 1,
//! act 2, conv 3, pool 4, act 5, conv 6, act 7, flatten 8, linear 9, act 10, linear 11). The tensors
//! are the zoo's bytes: `zoo-import` of the export gives the same tensors (tested).

use serde_json::json;
use wspace_stage_api::{Inputs, ParamSpec, StageContext, StageError, StageKind};

use super::arch::ImportArch;
use super::torch_zip;
use crate::tensors::{self, NamedTensors};
use crate::zoo::store::Zoo;

pub struct ExportZooKind;

/// `module_list` index of each cnn-s layer.
const MODULE_INDEX: &[(&str, usize)] = &[("conv1", 0), ("conv2", 3), ("conv3", 6), ("fc1", 9), ("fc2", 11)];

impl StageKind for ExportZooKind {
    fn name(&self) -> &'static str {
        "export-zoo"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "writes a cnn-s zoo in the Model Zoos layout (ray-tune trial directories, torch.save checkpoints)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![("zoo", true, "a `zoo` or `zoo-import` stage of cnn-s models")])
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let zoo = Zoo::load(ctx.input("zoo")?)?;
        let root = ctx.out.join("model-zoos");
        let mut models: Vec<usize> = zoo.rows.iter().map(|r| r.model_id).collect();
        models.sort_unstable();
        models.dedup();
        ctx.progress.start(models.len() as u64, "models");
        for &id in &models {
            wspace_stage_api::check_stop()?;
            let mut rows: Vec<_> = zoo.rows.iter().filter(|r| r.model_id == id).collect();
            rows.sort_by_key(|r| r.epoch);
            let first = rows[0];
            let Some(arch @ ImportArch::CnnS { classes, nlin }) = ImportArch::from_name(&first.arch) else {
                return Err(StageError::input(
                    "zoo",
                    format!("model {id} has arch `{}`: the Model Zoos layout holds cnn-s models only", first.arch),
                ));
            };
            let dir = root.join(format!("m{id:05}"));
            std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
            let params = json!({
                "model::type": "CNN",
                "model::channels_in": 1,
                "model::o_dim": classes,
                "model::nlin": nlin.name(),
                "model::dropout": 0.0,
                "model::init_type": first.init,
                "optim::optimizer": first.optimizer,
                "optim::lr": first.lr,
                "seed": first.seed,
                "training::batchsize": first.batch_size,
                "wspace::model_id": id,
                "wspace::classes": first.classes(),
                "wspace::task_id": first.task_id,
                "wspace::split": first.split.as_str(),
            });
            tensors::write_json(&dir.join("params.json"), &params)?;
            let number = |x: f64| if x.is_finite() { json!(x) } else { serde_json::Value::Null };
            let mut lines = String::new();
            let mut csv_rows = Vec::new();
            for row in &rows {
                let record = json!({
                    "training_iteration": row.epoch,
                    "train_loss": number(row.train_loss),
                    "test_loss": number(row.test_loss),
                    "test_acc": number(row.test_acc),
                    "val_loss": number(row.val_loss),
                    "val_acc": number(row.val_acc),
                });
                lines.push_str(&record.to_string());
                lines.push('\n');
                let text = |x: f64| if x.is_finite() { x.to_string() } else { String::new() };
                csv_rows.push(vec![
                    row.epoch.to_string(),
                    text(row.train_loss),
                    text(row.test_loss),
                    text(row.test_acc),
                    text(row.val_loss),
                    text(row.val_acc),
                ]);
                let weights = zoo.weights(row)?;
                arch.check(&weights).map_err(|e| StageError::input("zoo", format!("model {id}: {e}")))?;
                let renamed: NamedTensors = weights
                    .iter()
                    .map(|t| {
                        let (layer, what) = t.name.split_once('.').unwrap_or((&t.name, ""));
                        let index = MODULE_INDEX.iter().find(|(l, _)| *l == layer).map_or(0, |(_, i)| *i);
                        crate::tensors::NamedTensor::new(format!("module_list.{index}.{what}"), t.shape.clone(), t.values.clone())
                    })
                    .collect();
                let ck = dir.join(format!("checkpoint_{}", row.epoch));
                std::fs::create_dir_all(&ck).map_err(|e| StageError::io(&ck, e))?;
                tensors::write(&ck.join("checkpoints"), &torch_zip::state_dict_bytes("checkpoints", &renamed))?;
            }
            tensors::write(&dir.join("result.json"), lines.as_bytes())?;
            let header = ["training_iteration", "train_loss", "test_loss", "test_acc", "val_loss", "val_acc"];
            tensors::write_csv(&dir.join("progress.csv"), &header, csv_rows)?;
            ctx.progress.inc(1);
        }
        tensors::write_json(&ctx.out.join("metrics.json"), &json!({"models": models.len(), "checkpoints": zoo.rows.len()}))
    }
}
