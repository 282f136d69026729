//! The `sample` stage: prompts → weights. For every test-split task of the `tasks` input and every
//! target loss of a grid, `z_proj = align(task embedding, target)` is decoded by the weight codec
//! (autoencoder decoder → de-normalisation → inverse PCA) into named tensors and saved.
//!
//! The grid: `targets` values evenly spaced over the align stage's loss range (the train split's
//! `val_loss` range, `loss_min` … `loss_max`; one value = the midpoint).
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `samples/t<task>-<k>.safetensors` | `F32` weights with the zoo's parameter names and shapes (`state_dict` order) |
//! | `samples.csv` | `sample,task_id,class_0,class_1,class_2,target_loss,bin,file` |
//! | `samples.safetensors` | `latents` `[S, latent]`: the `z_proj` each sample was decoded from |
//! | `metrics.json` | `samples`, `tasks`, `targets`, `loss_min`, `loss_max`, `arch` |

use std::path::Path;

use serde_json::json;
use wspace_stage_api::{Inputs, ParamSpec, ParamType, Params, StageContext, StageError, StageKind, Value};

use super::align::task_embeddings;
use super::model::Aligner;
use crate::data::{TaskSplit, Tasks};
use crate::tensors;
use crate::weights::WeightCodec;

/// One row of `samples.csv`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleRow {
    pub sample: usize,
    pub task_id: usize,
    pub class_0: usize,
    pub class_1: usize,
    pub class_2: usize,
    pub target_loss: f64,
    pub bin: usize,
    pub file: String,
}

impl SampleRow {
    pub fn classes(&self) -> [usize; 3] {
        [self.class_0, self.class_1, self.class_2]
    }
}

/// Reads `samples.csv`.
pub fn load_samples(dir: &Path) -> Result<Vec<SampleRow>, StageError> {
    let path = dir.join("samples.csv");
    let mut r = csv::Reader::from_path(&path).map_err(|e| StageError::msg(format!("{}: {e}", path.display())))?;
    r.deserialize().collect::<Result<Vec<SampleRow>, _>>().map_err(|e| StageError::msg(format!("{}: {e}", path.display())))
}

/// `n` targets evenly spaced over `[lo, hi]` (the midpoint for `n = 1`).
pub fn target_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![0.5 * (lo + hi)],
        _ => (0..n).map(|k| lo + (hi - lo) * k as f64 / (n - 1) as f64).collect(),
    }
}

pub fn run_sample(
    align_dir: &Path,
    pca_dir: &Path,
    ae_dir: &Path,
    embed_dir: &Path,
    tasks: &Tasks,
    targets: usize,
    out: &Path,
) -> Result<serde_json::Value, StageError> {
    let al = Aligner::load(align_dir)?;
    let codec = WeightCodec::load(pca_dir, Some(ae_dir))?;
    if codec.latent_dim() != al.config.latent_dim {
        return Err(StageError::msg(format!(
            "the align stage projects to {} dimensions but the autoencoder's latent has {}",
            al.config.latent_dim,
            codec.latent_dim()
        )));
    }
    let (emb, dim) = task_embeddings(embed_dir)?;
    if dim != al.config.dataset_dim {
        return Err(StageError::msg(format!(
            "embeddings are {dim}-d, the align stage was trained on {}-d",
            al.config.dataset_dim
        )));
    }
    let grid = target_grid(al.config.loss_min, al.config.loss_max, targets);
    std::fs::create_dir_all(out.join("samples")).map_err(|e| StageError::io(out.join("samples"), e))?;
    let mut rows = Vec::new();
    let mut latents = Vec::new();
    let test: Vec<_> = tasks.split(TaskSplit::Test).collect();
    for task in &test {
        let e = emb
            .get(task.id * dim..(task.id + 1) * dim)
            .ok_or_else(|| StageError::msg(format!("task {} has no embedding: the `embed` input is of other tasks", task.id)))?;
        let raw: Vec<f32> = grid.iter().flat_map(|_| e.iter().copied()).collect();
        let z = al.project(&raw, &grid)?;
        let weights = codec.decode(&z)?;
        for (k, (w, &target)) in weights.into_iter().zip(&grid).enumerate() {
            let file = format!("samples/t{:04}-{k}.safetensors", task.id);
            w.write(&out.join(&file))?;
            rows.push(SampleRow {
                sample: rows.len(),
                task_id: task.id,
                class_0: task.classes[0],
                class_1: task.classes[1],
                class_2: task.classes[2],
                target_loss: target,
                bin: al.config.bin(target),
                file,
            });
        }
        latents.extend(z);
    }
    let path = out.join("samples.csv");
    let mut w = csv::Writer::from_path(&path).map_err(|e| StageError::msg(format!("{}: {e}", path.display())))?;
    for r in &rows {
        w.serialize(r).map_err(|e| StageError::msg(format!("{}: {e}", path.display())))?;
    }
    w.flush().map_err(|e| StageError::io(&path, e))?;
    tensors::write_f32(&out.join("samples.safetensors"), "latents", vec![rows.len(), al.config.latent_dim], latents)?;
    let metrics = json!({
        "samples": rows.len(),
        "tasks": test.len(),
        "targets": grid.len(),
        "loss_min": al.config.loss_min,
        "loss_max": al.config.loss_max,
        "arch": codec.arch(),
    });
    tensors::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// `kind = "sample"`: see the [module doc](self).
pub struct SampleKind;

impl StageKind for SampleKind {
    fn name(&self) -> &'static str {
        "sample"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "z_proj(test task, target loss) → decoder → weights, for every test task and a grid of target losses"
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec::optional(
            "targets",
            ParamType::Int,
            Value::Int(5),
            "target losses per task, evenly spaced over the train split's val_loss range",
        )]
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("align", true, "an `align` stage"),
            ("pca", true, "the `pca` stage the autoencoder was trained on"),
            ("autoencoder", true, "the `autoencoder` stage (its decoder)"),
            ("embed", true, "the `dataset-embed` stage the align stage used"),
            ("tasks", true, "the `tasks` stage (which tasks are test tasks)"),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        params.positive("targets").map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let targets = ctx.view().positive("targets")?;
        let tasks = Tasks::load(ctx.input("tasks")?)?;
        ctx.progress.message("decoding samples");
        run_sample(
            ctx.input("align")?,
            ctx.input("pca")?,
            ctx.input("autoencoder")?,
            ctx.input("embed")?,
            &tasks,
            targets,
            ctx.out,
        )?;
        Ok(())
    }
}
