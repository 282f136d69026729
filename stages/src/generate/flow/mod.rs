//! The `flow` stage: a conditional generative model of whole networks, P(W | D, R), by flow matching in
//! a weight codec's latent space (`sample.method = "flow"` draws from it).
//!
//! # What it learns
//! The latents `x₁` (`[tokens, width]`, standardised per value over the training examples) of the
//! `pca` input's train-split models, encoded by the `autoencoder` input's codec, which must keep one
//! token per neuron ([`crate::weights::Codec::class_tokens`]: the `transformer` codec). Each latent's
//! prompt is its model's task and validation loss: the class coordinates of its classes in output
//! order, their mean (the task's dataset, in no order), and the loss normalised on the train split's
//! `val_loss` range ([`model`] has the network's input).
//!
//! Class coordinates: the `embed` input's class embeddings, standardised per coordinate over the
//! classes (as the generator's), projected onto their `classes − 1` principal axes (the project's PCA;
//! lossless: `classes` points span at most `classes − 1` dimensions), each axis scaled to unit std over
//! the classes.
//!
//! With `permute_classes = true` every train model also enters under the other five orders of its
//! classes: its head rows (the last weight and bias, one row per class) permuted, encoded again. The
//! permuted model is the same function with its outputs relabelled: the class-order symmetry, exact.
//!
//! # Flow matching (rectified flow)
//! For an example, `x₀ ~ N(0, I)`, `t ~ U(0, 1)`, `x_t = (1 − t)·x₀ + t·x₁`; the network's output at
//! `(x_t, t, prompt)` is trained by MSE against the velocity `x₁ − x₀` (`predict = "velocity"`) or
//! against `x₁` itself (`predict = "latent"`). With probability `cond_dropout` the prompt is dropped
//! (the unconditional velocity of classifier-free guidance). The loop is [`crate::fit`] (AdamW, early
//! stopping on the val-split models' loss at fixed `(x₀, t)`, four per model, with their prompts), the
//! draws from a ChaCha8 stream of `seed`.
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `flow.safetensors` | the network (`velocity.input.weight`, …), `latent_mean`, `latent_std` `[tokens·width]`, `class_coords` `[classes, classes − 1]` |
//! | `flow.json` | [`model::FlowConfig`] plus `best_epoch`, `epochs_run` |
//! | `history.csv`, `loss.svg` | per epoch: train and val flow-matching loss |
//! | `metrics.json` | `train_loss`, `val_loss` (best), `best_epoch`, `epochs_run`, `parameters`, `train_examples`, `val_examples`, `codec`, `loss_min`, `loss_max` |

pub mod model;

use candle_core::{Tensor, Var};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use wspace_stage_api::{params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use super::generator::class_embeddings;
use crate::data::TaskSplit;
use crate::fit::{fit, loss_chart, write_history, EpochLoss, FitOptions, FitParams, Objective};
use crate::plot;
use crate::sampling::{normal_f32, uniform_f32};
use crate::tensors::{self, candle_error, NamedTensors};
use crate::weights::{codec, linalg, Codec, Coefficients};
use crate::zoo::store::Zoo;
use model::{Flow, FlowConfig, Predict, Prompt};

/// The six orders of three class slots; the identity first.
pub const ORDERS: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];

/// Fixed `(x₀, t)` draws per val model.
const VAL_DRAWS: usize = 4;

params! {
    D_MODEL = "d_model": Int = 64, "the velocity transformer's width";
    HEADS = "heads": Int = 4, "attention heads (must divide d_model)";
    LAYERS = "layers": Int = 2, "transformer blocks";
    COND_DROPOUT = "cond_dropout": Float = 0.1, "probability that a training example's prompt is dropped (classifier-free guidance)";
    PREDICT = "predict": choice(Predict) = "velocity", "what the network predicts: the velocity x₁ − x₀, or the clean latent x₁";
    PERMUTE_CLASSES = "permute_classes": Bool = true, "every train model also under the other orders of its classes (head rows permuted)";
}
const PARAMS: &[Param] = &[D_MODEL, HEADS, LAYERS, PREDICT, COND_DROPOUT, PERMUTE_CLASSES];
const FIT_DEFAULTS: FitParams = FitParams {
    epochs: 400,
    patience: 60,
    lr: 1e-3,
    weight_decay: 0.0,
    batch_size: 32,
    seed: 0,
    device: crate::device::DeviceName::Cpu,
};

/// The `flow` stage's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowOptions {
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    pub predict: Predict,
    pub cond_dropout: f64,
    pub permute_classes: bool,
    pub fit: FitParams,
}

impl FlowOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        let (d_model, heads) = (p.positive(&D_MODEL)?, p.positive(&HEADS)?);
        if !d_model.is_multiple_of(heads) {
            return Err(StageError::param(HEADS.name, format!("{heads} does not divide d_model = {d_model}")));
        }
        Ok(FlowOptions {
            d_model,
            heads,
            layers: p.positive(&LAYERS)?,
            predict: p.choice(&PREDICT)?,
            cond_dropout: p.fraction(&COND_DROPOUT, true)?,
            permute_classes: p.bool(&PERMUTE_CLASSES)?,
            fit: FitParams::from_params(p)?,
        })
    }
}

/// One training example: a standardised latent and its prompt.
pub(crate) struct Example {
    pub x1: Vec<f32>,
    pub prompt: Prompt,
}

/// `weights` with its head rows (the last two tensors: weight `[classes, ·]`, bias `[classes]`) in the
/// order `order`: row `s` of the result is row `order[s]` of the input.
pub fn permute_head(weights: &NamedTensors, order: [usize; 3]) -> Result<NamedTensors, StageError> {
    let mut out = weights.clone();
    let n = out.len();
    for t in out.iter_mut().skip(n.saturating_sub(2)) {
        let rows = t.shape.first().copied().unwrap_or(0);
        if rows != 3 {
            return Err(StageError::msg(format!("`{}` has {rows} rows, a 3-class head has 3", t.name)));
        }
        let row = t.values.len() / 3;
        let old = t.values.clone();
        for (s, &from) in order.iter().enumerate() {
            t.values[s * row..(s + 1) * row].copy_from_slice(&old[from * row..(from + 1) * row]);
        }
    }
    Ok(out)
}

/// The class coordinates (see the module doc): `([classes, classes − 1], classes, classes − 1)`.
pub fn class_coordinates(embed: &std::path::Path) -> Result<(Vec<f32>, usize, usize), StageError> {
    let (emb, k, d) = class_embeddings(embed)?;
    let q = k.saturating_sub(1).min(d).max(1);
    let rows: Vec<f64> = emb.iter().map(|&v| v as f64).collect();
    let fit = linalg::Centred::new(rows.clone(), k, d).fit(linalg::ComponentRule::Count(q));
    let q = fit.k();
    let projected = linalg::project(&rows, k, &fit.mean, &fit.components, q);
    let mut coords = vec![0f32; k * q];
    for j in 0..q {
        let col: Vec<f64> = (0..k).map(|c| projected[c * q + j]).collect();
        let sd = (col.iter().map(|x| x * x).sum::<f64>() / k as f64).sqrt().max(1e-12);
        for c in 0..k {
            coords[c * q + j] = (col[c] / sd) as f32;
        }
    }
    Ok((coords, k, q))
}

/// The head's tokens of a codec the flow can read.
pub fn head_tokens(codec: &dyn Codec) -> Result<(usize, usize, usize), StageError> {
    let shape = codec.latent_shape();
    match (codec.class_tokens(), shape.as_slice()) {
        (Some(r), &[tokens, width]) if r.len() == 3 => Ok((r.start, tokens, width)),
        _ => Err(StageError::input(
            "autoencoder",
            format!(
                "holds a `{}` codec (latent {shape:?}); the flow generates per-neuron token latents with one token per class \
                 (architecture = \"transformer\")",
                codec.name()
            ),
        )),
    }
}

/// Trains a flow (see the module doc); returns it, the fit and the example counts.
pub fn train(
    codec: &dyn Codec,
    pca: &std::path::Path,
    zoo: &Zoo,
    embed: &std::path::Path,
    opts: &FlowOptions,
    progress: &dyn wspace_stage_api::Progress,
) -> Result<(Flow, crate::fit::Fitted, usize, usize), StageError> {
    let (class_token, tokens, width) = head_tokens(codec)?;
    let rows = Coefficients::load(pca)?.meta.rows;
    let (coords, classes, class_dim) = class_coordinates(embed)?;
    let orders: &[[usize; 3]] = if opts.permute_classes { &ORDERS } else { &ORDERS[..1] };
    let mut raw: Vec<(TaskSplit, Vec<f32>, Prompt)> = Vec::new();
    for r in rows.iter().filter(|r| r.split != TaskSplit::Test) {
        let z = zoo.row_of(r)?;
        if !z.ok() || !z.val_loss.is_finite() {
            continue;
        }
        let weights = zoo.weights(z)?;
        let own = if r.split == TaskSplit::Train { orders } else { &ORDERS[..1] };
        let views: Vec<NamedTensors> = own.iter().map(|&o| permute_head(&weights, o)).collect::<Result<_, _>>()?;
        let latents = codec.encode(&views.iter().collect::<Vec<_>>())?;
        for (o, x) in own.iter().zip(latents.chunks_exact(tokens * width)) {
            let classes = o.map(|s| z.classes()[s]);
            raw.push((r.split, x.to_vec(), Prompt { classes, loss: z.val_loss }));
        }
    }
    let train_raw: Vec<&(TaskSplit, Vec<f32>, Prompt)> = raw.iter().filter(|x| x.0 == TaskSplit::Train).collect();
    if train_raw.is_empty() {
        return Err(StageError::input("pca", "has no `ok` train-split models to learn from"));
    }
    let n = tokens * width;
    let m = train_raw.len() as f64;
    let mean: Vec<f32> = (0..n).map(|i| (train_raw.iter().map(|x| x.1[i] as f64).sum::<f64>() / m) as f32).collect();
    let std: Vec<f32> = (0..n)
        .map(|i| {
            let var = train_raw.iter().map(|x| (x.1[i] as f64 - mean[i] as f64).powi(2)).sum::<f64>() / m;
            var.sqrt().max(1e-4) as f32
        })
        .collect();
    let standardise = |x: &[f32]| -> Vec<f32> { x.iter().enumerate().map(|(i, v)| (v - mean[i]) / std[i]).collect() };
    let losses: Vec<f64> = train_raw.iter().map(|x| x.2.loss).collect();
    let config = FlowConfig {
        codec: codec.name().to_string(),
        tokens,
        width,
        class_token,
        classes,
        class_dim,
        d_model: opts.d_model,
        heads: opts.heads,
        layers: opts.layers,
        predict: opts.predict,
        loss_min: losses.iter().copied().fold(f64::INFINITY, f64::min),
        loss_max: losses.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    let flow = Flow::init(config, mean.clone(), std.clone(), coords, opts.fit.seed, &opts.fit.device()?)?;
    let split = |s: TaskSplit| -> Result<Vec<Example>, StageError> {
        raw.iter()
            .filter(|x| x.0 == s)
            .map(|x| {
                flow.check(&x.2)?;
                Ok(Example { x1: standardise(&x.1), prompt: x.2 })
            })
            .collect()
    };
    let (train_ex, val_ex) = (split(TaskSplit::Train)?, split(TaskSplit::Val)?);
    let fitted = fit_examples(&flow, (&train_ex, &val_ex), opts, progress)?;
    Ok((flow, fitted, train_ex.len(), val_ex.len()))
}

/// Trains `flow` on the train examples, early-stopping on fixed draws of the val ones.
pub(crate) fn fit_examples(
    flow: &Flow,
    (train_ex, val_ex): (&[Example], &[Example]),
    opts: &FlowOptions,
    progress: &dyn wspace_stage_api::Progress,
) -> Result<crate::fit::Fitted, StageError> {
    let mut val_rng = ChaCha8Rng::seed_from_u64(opts.fit.seed ^ 0x666c_6f77_7661_6c00);
    let predict = opts.predict;
    let val: Vec<Draw> = val_ex
        .iter()
        .flat_map(|x| (0..VAL_DRAWS).map(|_| Draw::new(x, predict, &mut val_rng, false)).collect::<Vec<_>>())
        .collect();
    let mut objective = FlowObjective {
        flow,
        train: train_ex,
        val,
        rng: ChaCha8Rng::seed_from_u64(opts.fit.seed ^ 0x666c_6f77),
        dropout: opts.cond_dropout,
    };
    let indices: Vec<usize> = (0..train_ex.len()).collect();
    fit(
        &mut objective,
        &indices,
        &FitOptions { params: opts.fit, min_batch: 1, shuffle_salt: 0x666c_6f00, what: "flow", progress },
    )
}

/// One flow-matching draw of an example: the input `x_t`, its time, its prompt (or none), the target.
struct Draw {
    xt: Vec<f32>,
    t: f32,
    prompt: Option<Prompt>,
    target: Vec<f32>,
}

impl Draw {
    fn new(x: &Example, predict: Predict, rng: &mut ChaCha8Rng, drop: bool) -> Draw {
        let x0: Vec<f32> = x.x1.iter().map(|_| normal_f32(rng)).collect();
        let t = uniform_f32(rng);
        let xt = x0.iter().zip(&x.x1).map(|(a, b)| (1.0 - t) * a + t * b).collect();
        let target = match predict {
            Predict::Velocity => x0.iter().zip(&x.x1).map(|(a, b)| b - a).collect(),
            Predict::Latent => x.x1.clone(),
        };
        Draw { xt, t, prompt: (!drop).then_some(x.prompt), target }
    }
}

/// The flow's [`Objective`]: fresh draws per batch; fixed draws for validation.
struct FlowObjective<'a> {
    flow: &'a Flow,
    train: &'a [Example],
    val: Vec<Draw>,
    rng: ChaCha8Rng,
    dropout: f64,
}

impl FlowObjective<'_> {
    /// The mean squared error of the network's output on `draws`.
    fn loss(&self, draws: &[&Draw]) -> Result<Tensor, StageError> {
        let e = candle_error("flow");
        let xt: Vec<f32> = draws.iter().flat_map(|d| d.xt.iter().copied()).collect();
        let t: Vec<f32> = draws.iter().map(|d| d.t).collect();
        let prompts: Vec<Option<Prompt>> = draws.iter().map(|d| d.prompt).collect();
        let v = self.flow.forward(&xt, &t, &prompts)?;
        let target: Vec<f32> = draws.iter().flat_map(|d| d.target.iter().copied()).collect();
        let target = Tensor::from_vec(target, v.shape(), v.device()).map_err(&e)?;
        (v - target).and_then(|d| d.sqr()?.mean_all()).map_err(e)
    }
}

impl Objective for FlowObjective<'_> {
    fn vars(&self) -> Vec<Var> {
        self.flow.vars()
    }

    fn batch_loss(&mut self, rows: &[usize]) -> Result<(Tensor, f64), StageError> {
        let draws: Vec<Draw> = rows
            .iter()
            .map(|&i| {
                let drop = (crate::sampling::uniform(&mut self.rng)) < self.dropout;
                Draw::new(&self.train[i], self.flow.config.predict, &mut self.rng, drop)
            })
            .collect();
        let loss = self.loss(&draws.iter().collect::<Vec<_>>())?;
        let value = loss.to_scalar::<f32>().map_err(candle_error("flow"))? as f64;
        Ok((loss, value))
    }

    fn val_loss(&mut self) -> Result<Option<f64>, StageError> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let mut sum = 0.0;
        for chunk in self.val.chunks(64) {
            let loss = self.loss(&chunk.iter().collect::<Vec<_>>())?;
            sum += loss.to_scalar::<f32>().map_err(candle_error("flow"))? as f64 * chunk.len() as f64;
        }
        Ok(Some(sum / self.val.len() as f64))
    }
}

/// `kind = "flow"`: see the [module doc](self).
pub struct FlowKind;

impl StageKind for FlowKind {
    fn name(&self) -> &'static str {
        "flow"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "P(W | D, R) over whole networks: conditional flow matching on a token codec's latents (classes in prompt order, dataset, target loss)"
    }
    fn params(&self) -> Vec<ParamSpec> {
        FitParams::specs_after(PARAMS, &FIT_DEFAULTS, "training latents per step")
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("pca", true, "the `pca` stage the autoencoder was trained on (which models are train-split)"),
            ("autoencoder", true, "an `autoencoder` stage with architecture = \"transformer\": the latent space"),
            ("zoo", true, "the zoo the `pca` stage read (weights, classes, losses)"),
            ("embed", true, "a `dataset-embed` stage: the class embeddings"),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        FlowOptions::from_params(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = FlowOptions::from_params(ctx.view())?;
        let (pca, ae) = (ctx.input("pca")?, ctx.input("autoencoder")?);
        let codec = codec::load(pca, ae, &opts.fit.device()?)?;
        head_tokens(codec.as_ref())?;
        let zoo = Zoo::load(ctx.input("zoo")?)?;
        ctx.progress.message("encoding the train models");
        let (flow, fitted, train_examples, val_examples) =
            train(codec.as_ref(), pca, &zoo, ctx.input("embed")?, &opts, ctx.progress)?;
        let (best_epoch, epochs_run) = (fitted.best_epoch, fitted.history.len());
        flow.save(ctx.out, json!({ "best_epoch": best_epoch, "epochs_run": epochs_run }))?;
        write_history(&ctx.out.join("history.csv"), &fitted.history)?;
        plot::write_chart(
            &ctx.out.join("loss.svg"),
            &loss_chart("Flow-matching loss per epoch", "MSE of the prediction", &fitted.history),
        )?;
        let best = fitted.at_best().unwrap_or(EpochLoss { epoch: 0, train: f64::NAN, val: f64::NAN });
        let num = |v: f64| if v.is_finite() { json!(v) } else { serde_json::Value::Null };
        tensors::write_json(
            &ctx.out.join("metrics.json"),
            &json!({
                "train_loss": num(best.train),
                "val_loss": num(best.val),
                "best_epoch": best_epoch,
                "epochs_run": epochs_run,
                "parameters": flow.parameter_count(),
                "train_examples": train_examples,
                "val_examples": val_examples,
                "codec": flow.config.codec,
                "loss_min": flow.config.loss_min,
                "loss_max": flow.config.loss_max,
            }),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests;
