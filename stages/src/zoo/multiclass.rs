//! The `multiclass` stage kind: the model behind the row-selection baseline.
//!
//! `models` `cnn-s` networks with one output per class of the dataset (10 for Fashion-MNIST), each
//! trained on **all** of the dataset's training images (pixels/255, label = class index) by the zoo's
//! trainer with a recipe drawn from the zoo's own distributions (the `zoo` input's `zoo.json` recipe:
//! optimizer, learning rate, batch size, final epoch). Model `i` draws as zoo model `i` would from the
//! zoo's seed mixed with this stage's `seed`; with `init = "shared"` (or K groups) it starts from the
//! zoo's shared initialisation (the body is drawn before the head, so its body is the zoo's body at
//! init). It trains for the drawn final epoch; there is no early checkpoint.
//!
//! Row selection: a 3-class task `(a, b, c)` gets the 3-class network whose head rows are this model's
//! rows `a, b, c`, in that order ([`crate::nn::CnnS::select_rows`]). `evaluate-samples` scores it on each
//! sample's images; here `triplet_accuracy` is its mean test accuracy over every class triplet (the
//! test images of the three classes; the ordered triplets of one set score the same, so the 120 sets
//! stand for the 720 orders).
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `models/r<i>.safetensors` | `F32` weights with the zoo's names; `fc2.weight` `[classes, 20]`, `fc2.bias` `[classes]` |
//! | `multiclass.csv` | `model,optimizer,lr,batch_size,epochs,init_seed,train_loss,test_loss,test_acc,triplet_accuracy,status,file` (`test_*` over all classes) |
//! | `metrics.json` | `models`, `classes`, means of `test_acc`, `test_loss`, `triplet_accuracy` over the `ok` models, `diverged` |

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wspace_stage_api::{params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use super::sample::{InitScheme, Recipe};
use super::store::ZooMeta;
use crate::data::Dataset;
use crate::nn::{self, CnnS, Optimizer, TrainConfig, SUPPORTED_CLASSES};
use crate::tensors::{self, NamedTensors, TensorFile};

/// One row of `multiclass.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MulticlassRow {
    pub model: usize,
    pub optimizer: String,
    pub lr: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub init_seed: u64,
    pub train_loss: f64,
    pub test_loss: f64,
    pub test_acc: f64,
    pub triplet_accuracy: f64,
    pub status: String,
    pub file: String,
}

impl MulticlassRow {
    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

/// The trained many-class models of a `multiclass` output (`ok` rows only), in row order.
pub fn load_models(dir: &Path) -> Result<Vec<CnnS>, StageError> {
    let path = dir.join("multiclass.csv");
    let rows: Vec<MulticlassRow> = tensors::read_records(&path)?;
    rows.iter()
        .filter(|r| r.ok())
        .map(|r| {
            let file = TensorFile::open(&dir.join(&r.file))?;
            CnnS::from_named_tensors(file.f32_all()?.triples()).map_err(|e| StageError::msg(format!("{}: {e}", file.path())))
        })
        .collect()
}

/// Mean test accuracy of `model`'s selected rows over every 3-class subset of its classes, on the test
/// images of those classes (`logits`: the model's logits of every test image, `labels` their classes).
pub fn triplet_accuracy(logits: &[Vec<f32>], labels: &[i64], classes: usize) -> f64 {
    let (mut sum, mut count) = (0.0, 0usize);
    for a in 0..classes {
        for b in a + 1..classes {
            for c in b + 1..classes {
                let set = [a, b, c];
                let (mut right, mut n) = (0usize, 0usize);
                for (z, &y) in logits.iter().zip(labels) {
                    let Some(t) = set.iter().position(|&k| k as i64 == y) else { continue };
                    // First maximum on ties, as the kernel's accuracy counts it.
                    let mut best = 0;
                    for j in 1..3 {
                        if z[set[j]] > z[set[best]] {
                            best = j;
                        }
                    }
                    right += (best == t) as usize;
                    n += 1;
                }
                if n > 0 {
                    sum += right as f64 / n as f64;
                    count += 1;
                }
            }
        }
    }
    if count == 0 {
        f64::NAN
    } else {
        sum / count as f64
    }
}

fn run(ctx: &StageContext, models: usize, seed: u64) -> Result<(), StageError> {
    let data = Dataset::load(ctx.input("data")?)?;
    let zoo_json = ctx.input("zoo")?.join("zoo.json");
    let zoo_meta: ZooMeta = tensors::read_json(&zoo_json)?;
    if zoo_meta.arch != "cnn-s" {
        return Err(StageError::msg(format!(
            "stage `{}`: the zoo's arch is `{}`; the multiclass baseline trains `cnn-s` only",
            ctx.stage, zoo_meta.arch
        )));
    }
    let classes = data.num_classes();
    if !SUPPORTED_CLASSES.contains(&classes) || data.image_shape() != [1, 28, 28] {
        return Err(StageError::msg(format!(
            "stage `{}`: the dataset has {classes} classes of {:?} images; a cnn-s head is compiled for {SUPPORTED_CLASSES:?} classes of 1×28×28",
            ctx.stage,
            data.image_shape()
        )));
    }
    let recipe = Recipe::from_params(Params(&zoo_meta.recipe))
        .map_err(|e| StageError::msg(format!("{}: the zoo's recipe: {e}", zoo_json.display())))?;
    let draws = Recipe { seed: recipe.seed ^ seed.wrapping_add(1).wrapping_mul(0x6d75_6c74_6963_6c61), ..recipe.clone() };
    let labels_u8 = |labels: &[i64]| -> Vec<u8> { labels.iter().map(|&l| l as u8).collect() };
    let (train_y, test_y) = (labels_u8(&data.train.labels), labels_u8(&data.test.labels));
    std::fs::create_dir_all(ctx.out.join("models")).map_err(|e| StageError::io(ctx.out.join("models"), e))?;
    let plans: Vec<_> = (0..models).map(|i| draws.plan(i)).collect();
    ctx.progress.start(plans.iter().map(|p| p.final_epoch as u64).sum(), "epochs");
    let rows: Vec<MulticlassRow> = plans
        .par_iter()
        .enumerate()
        .map(|(i, plan)| -> Result<MulticlassRow, StageError> {
            let init_seed = match recipe.init {
                InitScheme::Random => plan.init_seed,
                _ => recipe.plan(i).init_seed,
            };
            let optimizer = if plan.adam {
                Optimizer::Adam { lr: plan.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: recipe.weight_decay }
            } else {
                Optimizer::Sgd { lr: plan.lr, momentum: recipe.momentum, weight_decay: recipe.weight_decay }
            };
            let model = CnnS::init_with_classes(init_seed, classes).map_err(|e| StageError::msg(e.to_string()))?;
            let cfg = TrainConfig { optimizer, batch_size: plan.batch_size, seed: plan.data_seed };
            let mut train_loss = f64::NAN;
            let trainer = nn::train(model, &cfg, &data.train.images, &train_y, plan.final_epoch, |_, s, _| {
                if !s.diverged {
                    train_loss = s.loss;
                }
                ctx.progress.inc(1);
            });
            wspace_stage_api::check_stop()?;
            let diverged = trainer.diverged() || !trainer.model().is_finite();
            let model = trainer.into_model();
            let test = nn::evaluate(&model, &data.test.images, &test_y);
            let logits = nn::logits_n_u8(&model, &data.test.images);
            let file = format!("models/r{i:03}.safetensors");
            NamedTensors::from(model.named_tensors()).write(&ctx.out.join(&file))?;
            Ok(MulticlassRow {
                model: i,
                optimizer: if plan.adam { "adam" } else { "sgd" }.into(),
                lr: plan.lr,
                batch_size: plan.batch_size,
                epochs: plan.final_epoch,
                init_seed,
                train_loss,
                test_loss: test.loss,
                test_acc: test.accuracy,
                triplet_accuracy: triplet_accuracy(&logits, &data.test.labels, classes),
                status: if diverged { "diverged" } else { "ok" }.into(),
                file,
            })
        })
        .collect::<Result<_, _>>()?;
    tensors::write_records(&ctx.out.join("multiclass.csv"), &rows)?;
    let ok: Vec<&MulticlassRow> = rows.iter().filter(|r| r.ok()).collect();
    let mean = |f: fn(&MulticlassRow) -> f64| {
        let v: Vec<f64> = ok.iter().map(|r| f(r)).filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            serde_json::Value::Null
        } else {
            json!(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    tensors::write_json(
        &ctx.out.join("metrics.json"),
        &json!({
            "models": rows.len(),
            "classes": classes,
            "diverged": rows.len() - ok.len(),
            "test_acc": mean(|r| r.test_acc),
            "test_loss": mean(|r| r.test_loss),
            "triplet_accuracy": mean(|r| r.triplet_accuracy),
        }),
    )?;
    if ok.is_empty() {
        return Err(StageError::msg(format!(
            "stage `{}`: every multiclass model diverged (see multiclass.csv); lower the zoo's learning rates",
            ctx.stage
        )));
    }
    Ok(())
}

params! {
    MODELS = "models": Int = 1, "how many models (each its own draw of the recipe)";
    SEED = "seed": Int = 0, "mixed into the zoo's seed for the recipe draws";
}

/// `(models, seed)`.
fn options(p: Params) -> Result<(usize, u64), StageError> {
    Ok((p.positive(&MODELS)?, p.seed(&SEED)?))
}

/// `kind = "multiclass"`: see the [module doc](self).
pub struct MulticlassKind;

impl StageKind for MulticlassKind {
    fn name(&self) -> &'static str {
        "multiclass"
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "cnn-s models with a head for every class, trained on all classes with the zoo's recipe: the row-selection baseline"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(&[MODELS, SEED])
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("data", true, "the zoo's `dataset` stage"),
            ("zoo", true, "a cnn-s `zoo` stage: its recipe (and shared initialisation) is used"),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        options(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let (models, seed) = options(ctx.view())?;
        run(ctx, models, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triplet_accuracy_scores_each_class_set_on_its_own_images() {
        // 4 classes, one test image each; the logits favour class 0 everywhere except image 3 (class 3).
        let logits = vec![vec![5.0, 1.0, 0.0, 0.0], vec![5.0, 1.0, 0.0, 0.0], vec![5.0, 0.0, 1.0, 0.0], vec![0.0, 0.0, 0.0, 5.0]];
        let labels = [0i64, 1, 2, 3];
        // Sets {0,1,2}: right on image 0 only → 1/3. {0,1,3}: images 0, 3 → 2/3. {0,2,3}: 2/3.
        // {1,2,3}: image 1 (1 > 0 among rows 1,2,3), image 2 (row 2 = 1 is the max), image 3 → 1.
        let want = (1.0 / 3.0 + 2.0 / 3.0 + 2.0 / 3.0 + 1.0) / 4.0;
        assert!((triplet_accuracy(&logits, &labels, 4) - want).abs() < 1e-12);
        assert!(triplet_accuracy(&logits, &labels, 2).is_nan(), "no triplet of 2 classes");
    }
}
