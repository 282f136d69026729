//! The `generator` stage: a conditional weight generator P(W | D, R) that treats the two parts of a
//! `cnn-s` differently.
//!
//! - The **head** follows the prompt's class order: output row `k` (`fc2.weight[k]`, `fc2.bias[k]`, 21
//!   values) is `MLP([ẽ_{c_k}; t; ξ_k])`, with `ẽ_c` class `c`'s embedding from `dataset-embed`
//!   (standardised per coordinate over the classes, std floored at 1e-3), `t = (r − loss_min) /
//!   (loss_max − loss_min)` the target loss on the train split's `val_loss` range, and `ξ_k ~ N(0, σ²)`
//!   (`noise_dim` values, σ = `noise`): the draw. ELU between layers.
//! - The **body** (`conv1` … `fc1`) does not follow class order: it is one learned vector shared by
//!   every prompt, initialised with the body of the train split's final model of lowest `val_loss`.
//!
//! # Training: behavioural, from the zoo
//! One example per `ok` train-split zoo row (both checkpoints, or `checkpoints = "final"`): prompt =
//! (the row's task's classes in output order, its `val_loss`), target behaviour = that model's logits
//! on `probe_images` training images of its task (evenly spaced, as [`crate::weights::behaviour`]).
//! The loss is `(1 − λ)·distillation + λ·cross-entropy` on those probes (`λ = label_weight`; the
//! distillation loss of [`crate::nn::distill`] at `temperature`, the cross-entropy with the images'
//! labels), averaged over a batch; its gradient flows through the cnn-s backward pass (the kernel on
//! the CPU, [`crate::nn::graph`] on a GPU: [`crate::weights::behaviour::Engine`]) into the
//! generated weights and from there through candle into the MLP and the body
//! ([`crate::weights::behaviour::surrogate`]). The loop is [`crate::fit`] (AdamW, `batch_size` rows
//! per step, early stopping on the val-split rows' loss with ξ = 0, the best epoch's weights kept),
//! with a fresh ξ per example from a ChaCha8 stream of `seed`. A model of a high-loss checkpoint
//! teaches the generator what a high target loss looks like: that is the loss prompt (the `sample`
//! stage can also meet it by scaling the head: `loss_control`).
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `generator.safetensors` | `body` `[2254]`, `mlp.<2i>.weight` / `.bias`, `class_embeddings` `[K, d]` (standardised) |
//! | `generator.json` | [`GeneratorConfig`] plus `best_epoch`, `epochs_run` |
//! | `history.csv` | `epoch,train_loss,val_loss` |
//! | `metrics.json` | `train_loss`, `val_loss` (best), `val_loss_untrained`, `best_epoch`, `epochs_run`, `parameters`, example counts |

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use wspace_stage_api::{choice_enum, params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use super::align::embedding_matrix;
use crate::data::{Dataset, TaskSplit, Tasks};
use crate::fit::{fit, write_history, EpochLoss, FitOptions, FitParams, Fitted, Objective};
use crate::nn::{CnnS, BODY_PARAMS, NUM_CLASSES};
use crate::sampling::{normal_f32, uniform_in};
use crate::tensors::{self, candle_error as cerr, NamedTensors, TensorFile};
use crate::weights::behaviour::{load_probes, surrogate, Engine, Probe};
use crate::zoo::store::{Checkpoint, RowRef, Zoo, ZooRow};

/// Values per head row: 20 weights and a bias.
const ROW: usize = 21;

/// The generator's shape and the prompt scales; `generator.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    pub classes: usize,
    pub dataset_dim: usize,
    pub hidden: Vec<usize>,
    pub noise_dim: usize,
    pub noise: f64,
    pub loss_min: f64,
    pub loss_max: f64,
}

impl GeneratorConfig {
    fn layers(&self) -> Vec<(usize, usize)> {
        let mut dims = vec![self.dataset_dim + 1 + self.noise_dim];
        dims.extend(&self.hidden);
        dims.push(ROW);
        dims.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// The normalised target `t` of a loss (not clamped).
    pub fn t(&self, loss: f64) -> f32 {
        ((loss - self.loss_min) / (self.loss_max - self.loss_min).max(1e-12)) as f32
    }
}

/// One prompt: classes in output order, target loss, and the draw `ξ` (`3 × noise_dim`).
#[derive(Debug, Clone)]
pub struct Prompt {
    pub classes: [usize; 3],
    pub target_loss: f64,
    pub xi: Vec<f32>,
}

/// The trainable generator and its standardised class embeddings.
pub struct Generator {
    pub config: GeneratorConfig,
    /// Where the variables are.
    pub device: Device,
    body: Var,
    layers: Vec<(Var, Var)>,
    /// `[K, d]`, standardised.
    embeddings: Vec<f32>,
}

impl Generator {
    /// PyTorch-default `Linear` initialisation from a seeded ChaCha8 stream (layer by layer, `W` then
    /// `b`); the body as given.
    pub fn init(
        config: GeneratorConfig,
        body: &[f32],
        embeddings: Vec<f32>,
        seed: u64,
        device: &Device,
    ) -> Result<Self, StageError> {
        let e = cerr("generator init");
        if body.len() != BODY_PARAMS || embeddings.len() != config.classes * config.dataset_dim {
            return Err(StageError::msg(format!(
                "generator: a body of {} values (want {BODY_PARAMS}) and {} embedding values (want {} × {})",
                body.len(),
                embeddings.len(),
                config.classes,
                config.dataset_dim
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layers = Vec::new();
        for (i, o) in config.layers() {
            let bound = 1.0 / (i as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| uniform_in(&mut rng, bound)).collect() };
            let (w, b) = (draw(o * i), draw(o));
            layers.push((Var::from_slice(&w, (o, i), device).map_err(&e)?, Var::from_slice(&b, o, device).map_err(&e)?));
        }
        let body = Var::from_slice(body, BODY_PARAMS, device).map_err(&e)?;
        Ok(Generator { config, device: device.clone(), body, layers, embeddings })
    }

    pub fn vars(&self) -> Vec<Var> {
        let mut v = vec![self.body.clone()];
        v.extend(self.layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]));
        v
    }

    pub fn parameter_count(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    /// Checks that every class of `classes` has an embedding.
    pub fn check_classes(&self, classes: &[usize]) -> Result<(), StageError> {
        match classes.iter().find(|&&c| c >= self.config.classes) {
            Some(c) => Err(StageError::msg(format!(
                "class {c} is not a class of the data: the generator knows classes 0..{}",
                self.config.classes
            ))),
            None => Ok(()),
        }
    }

    /// Prompts → flat `cnn-s` weights `[P, 2317]` (body, then `fc2.weight` rows, then `fc2.bias`).
    pub fn forward(&self, prompts: &[Prompt]) -> Result<Tensor, StageError> {
        let e = cerr("generator");
        let (d, q) = (self.config.dataset_dim, self.config.noise_dim);
        let mut x = Vec::with_capacity(prompts.len() * 3 * (d + 1 + q));
        for p in prompts {
            self.check_classes(&p.classes)?;
            for (k, &c) in p.classes.iter().enumerate() {
                x.extend_from_slice(&self.embeddings[c * d..(c + 1) * d]);
                x.push(self.config.t(p.target_loss));
                x.extend_from_slice(&p.xi[k * q..(k + 1) * q]);
            }
        }
        let n = prompts.len();
        let run = || -> candle_core::Result<Tensor> {
            let mut h = Tensor::from_vec(x, (3 * n, d + 1 + q), &self.device)?;
            for (i, (w, b)) in self.layers.iter().enumerate() {
                h = crate::matmul::linear(&h, w.as_tensor(), b.as_tensor())?;
                if i + 1 < self.layers.len() {
                    h = h.elu(1.0)?;
                }
            }
            let rows = h.reshape((n, 3, ROW))?;
            let weights = rows.narrow(2, 0, ROW - 1)?.reshape((n, 3 * (ROW - 1)))?;
            let bias = rows.narrow(2, ROW - 1, 1)?.reshape((n, 3))?;
            let body = crate::param_ops::broadcast_left(self.body.as_tensor(), &(n, BODY_PARAMS).into())?;
            Tensor::cat(&[&body, &weights, &bias], 1)
        };
        run().map_err(e)
    }

    /// The generated networks of `prompts`.
    pub fn generate(&self, prompts: &[Prompt]) -> Result<Vec<CnnS>, StageError> {
        let w = self.forward(prompts)?.to_vec2::<f32>().map_err(cerr("generator"))?;
        Ok(w.into_iter().map(CnnS::from_flat).collect())
    }

    /// `ξ` for one prompt: `3 × noise_dim` normals of std `noise` from `rng`.
    pub fn draw(&self, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let s = self.config.noise as f32;
        (0..3 * self.config.noise_dim).map(|_| s * normal_f32(rng)).collect()
    }

    fn named_tensors(&self) -> Result<NamedTensors, StageError> {
        let e = cerr("generator");
        let values = |v: &Var| v.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(&e);
        let mut out = NamedTensors::new();
        out.push("body", vec![BODY_PARAMS], values(&self.body)?);
        for (i, (w, b)) in self.layers.iter().enumerate() {
            out.push(format!("mlp.{}.weight", 2 * i), w.dims().to_vec(), values(w)?);
            out.push(format!("mlp.{}.bias", 2 * i), b.dims().to_vec(), values(b)?);
        }
        out.push("class_embeddings", vec![self.config.classes, self.config.dataset_dim], self.embeddings.clone());
        Ok(out)
    }

    fn set_from(&self, snapshot: &[Tensor]) -> Result<(), StageError> {
        for (v, t) in self.vars().iter().zip(snapshot) {
            v.set(t).map_err(cerr("generator"))?;
        }
        Ok(())
    }

    /// Writes `generator.safetensors` and `generator.json` (the config plus `extra`).
    pub fn save(&self, dir: &Path, extra: serde_json::Value) -> Result<(), StageError> {
        self.named_tensors()?.write(&dir.join("generator.safetensors"))?;
        tensors::write_json_with(&dir.join("generator.json"), &self.config, extra)
    }

    /// Reads a `generator` stage's output onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Generator, StageError> {
        let config: GeneratorConfig = tensors::read_json(&dir.join("generator.json"))?;
        let file = TensorFile::open(&dir.join("generator.safetensors"))?;
        let stored = file.f32_all()?;
        let get = |name: &str| -> Result<&Vec<f32>, StageError> {
            stored.get(name).map(|t| &t.values).ok_or_else(|| StageError::msg(format!("{}: has no tensor `{name}`", file.path())))
        };
        let g = Generator::init(config, get("body")?, get("class_embeddings")?.clone(), 0, device)?;
        let mut snapshot = Vec::new();
        for t in g.named_tensors()?.iter().filter(|t| t.name != "class_embeddings") {
            let (name, shape) = (&t.name, &t.shape);
            let v = get(name)?;
            if v.len() != shape.iter().product::<usize>() {
                return Err(StageError::msg(format!(
                    "{}: `{name}` has {} values, generator.json implies {shape:?}",
                    file.path(),
                    v.len()
                )));
            }
            snapshot.push(Tensor::from_slice(v, shape.as_slice(), device).map_err(cerr("generator"))?);
        }
        g.set_from(&snapshot)?;
        Ok(g)
    }
}

/// `class_embeddings` `[K, d]` of a `dataset-embed` output, standardised per coordinate over the classes.
pub fn class_embeddings(embed_dir: &Path) -> Result<(Vec<f32>, usize, usize), StageError> {
    let (v, d) = embedding_matrix(embed_dir, "class_embeddings")?;
    let k = v.len() / d.max(1);
    let mut out = v.clone();
    for j in 0..d {
        let col: Vec<f64> = (0..k).map(|c| v[c * d + j] as f64).collect();
        let mean = col.iter().sum::<f64>() / k.max(1) as f64;
        let sd = (col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / k.max(1) as f64).sqrt().max(1e-3);
        for c in 0..k {
            out[c * d + j] = ((v[c * d + j] as f64 - mean) / sd) as f32;
        }
    }
    Ok((out, k, d))
}

/// The `generator` stage's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratorOptions {
    pub hidden: Vec<usize>,
    pub noise_dim: usize,
    pub noise: f64,
    /// Epochs, patience, batch size, AdamW, seed.
    pub fit: FitParams,
    pub probe_images: usize,
    pub temperature: f64,
    pub label_weight: f64,
    /// Learn from the final checkpoints only (else both).
    pub final_only: bool,
}

choice_enum! {
    /// Which zoo checkpoints the generator learns from.
    pub enum Checkpoints { Both = "both", Final = "final" }
}

params! {
    HIDDEN = "hidden": [Int] = [128], "the row MLP's hidden widths";
    NOISE_DIM = "noise_dim": Int = 8, "ξ values per head row (the draw)";
    NOISE = "noise": Float = 1.0, "σ of ξ in training and sampling";
    PROBE_IMAGES = "probe_images": Int = 64, "training images per zoo row whose outputs are matched";
    TEMPERATURE = "temperature": Float = 1.0, "distillation temperature";
    LABEL_WEIGHT = "label_weight": Float = 0.0, "λ: loss = (1 − λ)·distillation + λ·cross-entropy";
    CHECKPOINTS = "checkpoints": choice(Checkpoints) = "both", "zoo checkpoints to learn from";
}
/// The kind's own parameters (the training loop's follow them).
const PARAMS: &[Param] = &[HIDDEN, NOISE_DIM, NOISE, PROBE_IMAGES, TEMPERATURE, LABEL_WEIGHT, CHECKPOINTS];
const FIT_DEFAULTS: FitParams = FitParams {
    epochs: 300,
    patience: 30,
    lr: 1e-3,
    weight_decay: 0.0,
    batch_size: 16,
    seed: 0,
    device: crate::device::DeviceName::Cpu,
};

impl GeneratorOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        Ok(GeneratorOptions {
            hidden: p.positive_list(&HIDDEN)?,
            noise_dim: p.count(&NOISE_DIM)?,
            noise: p.non_negative(&NOISE)?,
            fit: FitParams::from_params(p)?,
            probe_images: p.positive(&PROBE_IMAGES)?,
            temperature: p.positive_float(&TEMPERATURE)?,
            label_weight: p.fraction(&LABEL_WEIGHT, false)?,
            final_only: p.choice::<Checkpoints>(&CHECKPOINTS)? == Checkpoints::Final,
        })
    }
}

/// One training example: prompt without ξ, and the zoo model's behaviour.
pub(super) struct Example {
    pub classes: [usize; 3],
    pub loss: f64,
    pub probe: Probe,
}

/// Mean loss `(1 − λ)·distillation + λ·cross-entropy` of the generated models on the examples' probes,
/// with (when `grad`) each model's gradient scaled by `1 / examples`, flattened `[P × 2317]`; the cnn-s
/// passes run on `engine`.
fn batch_loss(
    engine: &Engine,
    models: &[Vec<f32>],
    examples: &[&Example],
    (temperature, lambda): (f32, f64),
    grad: bool,
) -> Result<(f64, Option<Vec<f32>>), StageError> {
    let n = examples.len().max(1) as f32;
    let probes: Vec<&Probe> = examples.iter().map(|x| &x.probe).collect();
    let per = engine.losses(models, &probes, temperature, lambda, grad)?;
    let loss = per.iter().map(|p| p.0).sum::<f64>() / n as f64;
    Ok((loss, grad.then(|| per.into_iter().flat_map(|p| p.1).map(|v| v / n).collect())))
}

/// What [`train`] returns.
pub struct Trained {
    pub generator: Generator,
    pub fitted: Fitted,
    pub val_untrained: f64,
    pub train_examples: usize,
    pub val_examples: usize,
}

/// Trains a generator on a zoo (see the module doc).
pub fn train(
    zoo: &Zoo,
    tasks: &Tasks,
    data: &Dataset,
    embed_dir: &Path,
    opts: &GeneratorOptions,
    progress: &dyn wspace_stage_api::Progress,
) -> Result<Trained, StageError> {
    if zoo.meta.arch != "cnn-s" || zoo.meta.parameters.last().map(|p| p.shape.clone()) != Some(vec![NUM_CLASSES]) {
        return Err(StageError::msg(format!(
            "the generator writes 3-class `cnn-s` models; this zoo's arch is `{}`",
            zoo.meta.arch
        )));
    }
    let (embeddings, classes, dim) = class_embeddings(embed_dir)?;
    let rows: Vec<RowRef> = zoo
        .rows
        .iter()
        .filter(|r| r.ok() && r.split != TaskSplit::Test && (!opts.final_only || r.checkpoint == Checkpoint::Final))
        .map(ZooRow::reference)
        .collect();
    let probes = load_probes(&rows, zoo, tasks, data, opts.probe_images)?;
    let mut examples = Vec::with_capacity(rows.len());
    for (r, probe) in rows.iter().zip(probes) {
        let z = zoo.row_of(r)?;
        examples.push((r.split, Example { classes: [z.class_0, z.class_1, z.class_2], loss: z.val_loss, probe }));
    }
    let train_ex: Vec<&Example> = examples.iter().filter(|x| x.0 == TaskSplit::Train).map(|x| &x.1).collect();
    let val_ex: Vec<&Example> = examples.iter().filter(|x| x.0 == TaskSplit::Val).map(|x| &x.1).collect();
    if train_ex.is_empty() {
        return Err(StageError::input("zoo", "has no `ok` train-split models to learn from"));
    }
    let losses: Vec<f64> = train_ex.iter().map(|x| x.loss).filter(|l| l.is_finite()).collect();
    let loss_min = losses.iter().copied().fold(f64::INFINITY, f64::min);
    let loss_max = losses.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // The body to start from: the train split's final model of lowest validation loss.
    let best_row = zoo
        .rows
        .iter()
        .filter(|r| r.ok() && r.split == TaskSplit::Train && r.checkpoint == Checkpoint::Final && r.val_loss.is_finite())
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
        .ok_or_else(|| StageError::msg("the zoo has no finite train-split final model"))?;
    let body = zoo.flat(best_row)?[..BODY_PARAMS].to_vec();
    let config = GeneratorConfig {
        classes,
        dataset_dim: dim,
        hidden: opts.hidden.clone(),
        noise_dim: opts.noise_dim,
        noise: opts.noise,
        loss_min,
        loss_max,
    };
    let gen = Generator::init(config, &body, embeddings, opts.fit.seed, &opts.fit.device()?)?;
    let (fitted, val_untrained) = fit_examples(&gen, (&train_ex, &val_ex), opts, progress)?;
    Ok(Trained { generator: gen, fitted, val_untrained, train_examples: train_ex.len(), val_examples: val_ex.len() })
}

/// Trains `gen` on the train examples, early-stopping on the val ones: the loop's outcome and the val
/// loss before training.
pub(super) fn fit_examples(
    gen: &Generator,
    (train, val): (&[&Example], &[&Example]),
    opts: &GeneratorOptions,
    progress: &dyn wspace_stage_api::Progress,
) -> Result<(Fitted, f64), StageError> {
    for ex in train.iter().chain(val) {
        gen.check_classes(&ex.classes)?;
    }
    let mut objective = GeneratorObjective {
        rng: ChaCha8Rng::seed_from_u64(opts.fit.seed ^ 0x6765_6e65),
        gen,
        train,
        val,
        temperature: opts.temperature as f32,
        lambda: opts.label_weight,
    };
    let val_untrained = objective.val_loss()?.unwrap_or(f64::NAN);
    let rows: Vec<usize> = (0..train.len()).collect();
    let fitted = fit(
        &mut objective,
        &rows,
        &FitOptions { params: opts.fit, min_batch: 1, shuffle_salt: 0x6765_6e00, what: "generator", progress },
    )?;
    Ok((fitted, val_untrained))
}

/// The generator's [`Objective`]: a batch of zoo rows, fresh ξ per row.
struct GeneratorObjective<'a> {
    rng: ChaCha8Rng,
    gen: &'a Generator,
    train: &'a [&'a Example],
    val: &'a [&'a Example],
    temperature: f32,
    lambda: f64,
}

impl Objective for GeneratorObjective<'_> {
    fn vars(&self) -> Vec<Var> {
        self.gen.vars()
    }

    fn batch_loss(&mut self, rows: &[usize]) -> Result<(Tensor, f64), StageError> {
        let exs: Vec<&Example> = rows.iter().map(|&i| self.train[i]).collect();
        let prompts: Vec<Prompt> =
            exs.iter().map(|x| Prompt { classes: x.classes, target_loss: x.loss, xi: self.gen.draw(&mut self.rng) }).collect();
        let w = self.gen.forward(&prompts)?;
        let values = w.to_vec2::<f32>().map_err(cerr("generator"))?;
        let engine = Engine::on(&self.gen.device);
        let (loss, g) = batch_loss(&engine, &values, &exs, (self.temperature, self.lambda), true)?;
        Ok((surrogate(&w, &g.unwrap_or_default()).map_err(cerr("generator"))?, loss))
    }

    fn val_loss(&mut self) -> Result<Option<f64>, StageError> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let zero = vec![0.0f32; 3 * self.gen.config.noise_dim];
        let prompts: Vec<Prompt> =
            self.val.iter().map(|x| Prompt { classes: x.classes, target_loss: x.loss, xi: zero.clone() }).collect();
        let w = self.gen.forward(&prompts)?.to_vec2::<f32>().map_err(cerr("generator"))?;
        Ok(Some(batch_loss(&Engine::on(&self.gen.device), &w, self.val, (self.temperature, self.lambda), false)?.0))
    }
}

/// `kind = "generator"`: see the [module doc](self).
pub struct GeneratorKind;

impl StageKind for GeneratorKind {
    fn name(&self) -> &'static str {
        "generator"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "P(W | D, R): head rows from class embeddings in prompt order and the target loss, one learned body; distilled from the zoo"
    }
    fn params(&self) -> Vec<ParamSpec> {
        FitParams::specs_after(PARAMS, &FIT_DEFAULTS, "zoo rows per step")
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("zoo", true, "a cnn-s `zoo` (or `canonicalise`) stage: the models to learn from"),
            ("tasks", true, "the zoo's `tasks` stage"),
            ("data", true, "the zoo's `dataset` stage (probe images)"),
            ("embed", true, "a `dataset-embed` stage: the class embeddings"),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        GeneratorOptions::from_params(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = GeneratorOptions::from_params(ctx.view())?;
        let zoo = Zoo::load(ctx.input("zoo")?)?;
        let tasks = Tasks::load(ctx.input("tasks")?)?;
        let data = Dataset::load(ctx.input("data")?)?;
        ctx.progress.message("loading probes");
        let t = train(&zoo, &tasks, &data, ctx.input("embed")?, &opts, ctx.progress)?;
        let (best_epoch, epochs_run) = (t.fitted.best_epoch, t.fitted.history.len());
        t.generator.save(ctx.out, json!({ "best_epoch": best_epoch, "epochs_run": epochs_run }))?;
        write_history(&ctx.out.join("history.csv"), &t.fitted.history)?;
        let best = t.fitted.at_best().unwrap_or(EpochLoss { epoch: 0, train: f64::NAN, val: f64::NAN });
        let num = |v: f64| if v.is_finite() { json!(v) } else { serde_json::Value::Null };
        tensors::write_json(
            &ctx.out.join("metrics.json"),
            &json!({
                "train_loss": num(best.train),
                "val_loss": num(best.val),
                "val_loss_untrained": num(t.val_untrained),
                "best_epoch": best_epoch,
                "epochs_run": epochs_run,
                "parameters": t.generator.parameter_count(),
                "train_examples": t.train_examples,
                "val_examples": t.val_examples,
                "loss_min": t.generator.config.loss_min,
                "loss_max": t.generator.config.loss_max,
            }),
        )
    }
}
