//! The weight autoencoder (the thesis's stage 2): the `autoencoder` stage with `architecture = "mlp"`
//! (the default; the stage kind is [`super::autoencoder_kind`]). `architecture = "transformer"` trains
//! the tokenised encoder of [`super::transformer`] instead, with the same `loss`, `beta`,
//! `probe_images`, `temperature` and training parameters, and its own output files (that module's doc);
//! the `pca` input then only gives the rows and their splits.
//!
//! # The network
//! An MLP on the normalised PCA coefficient vector `z ∈ R^D` ([`super::pca`]):
//!
//! ```text
//! encoder: D → hidden[0] → … → hidden[last] → latent      (activation after every layer but the last)
//! decoder: latent → hidden[last] → … → hidden[0] → D      (the mirror image)
//! loss = mean squared error between z and decoder(encoder(z))
//! ```
//!
//! # The behavioural loss (`loss = "behaviour"`)
//! Weight MSE is not function. With `loss = "behaviour"` (inputs `zoo`, `tasks`, `data` connected) each
//! batch's loss is
//!
//! ```text
//! β · MSE(z, ẑ) / MSE₀  +  (1 − β) · mean over the batch's models of distill(decode(ẑ)) / distill₀
//! ```
//!
//! where `decode(ẑ)` is the cnn-s whose weights the PCA decodes from `ẑ`, `distill` the distillation loss
//! of its outputs against the original model's on `probe_images` training images of the model's own task
//! at temperature `temperature` ([`super::behaviour`], [`crate::nn::distill`]), and `MSE₀`, `distill₀`
//! the two terms' values on the first batch (Meynent et al. 2025 scale each term by its first value;
//! their best β is 0.1). The distillation gradient flows decoder → de-normalisation → inverse PCA → the
//! cnn-s backward pass. Early stopping watches the same combined loss on the val rows. `loss = "mse"`
//! is the thesis's configuration, byte for byte.
//!
//! Each `Linear(in → out)` computes `y = x Wᵀ + b` with `W` `[out, in]`, initialised as PyTorch does
//! (`W`, `b` ~ U(−1/√in, 1/√in)) from our own seeded ChaCha8 stream (candle's CPU RNG cannot be seeded):
//! layer by layer, `W` then `b`, element by element, `u = (next_u32 >> 8)·2⁻²⁴`. Optimiser: candle's
//! AdamW (decoupled weight decay; the thesis used Adam with coupled L2 and dropout 0.1 — we leave out
//! dropout so a run is deterministic). Mini-batches are drawn from a Fisher–Yates shuffle of the train
//! rows per epoch (ChaCha8 seeded with `seed`). After every epoch the val-split rows' loss is measured;
//! training stops after `patience` epochs without improvement and the weights of the best val epoch are
//! kept. With no val rows, training runs all `epochs` and keeps the last weights.
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `autoencoder.safetensors` | `F32` weights named as a PyTorch `nn.Sequential` pair: `encoder.0.weight` `[h0, D]`, `encoder.0.bias`, `encoder.2.weight`, …, `decoder.0.weight`, … (Linear layers at even indices, activations between) |
//! | `autoencoder.json` | [`AutoencoderConfig`] (`input_dim`, `hidden`, `latent_dim`, `activation`) plus `best_epoch`, `epochs_run` |
//! | `codec.json` | `{"codec": "mlp"}`: how consumers load it ([`super::codec`]) |
//! | `latents.safetensors` | `latents` `[N, latent]`: every coefficient row of the `pca` input (rows as in its `pca.json`) |
//! | `history.csv` | `epoch,train_loss,val_loss` (train loss = mean over the epoch's batches, before each update) |
//! | `loss.svg` | train and val loss per epoch (the combined loss with `loss = "behaviour"`), log y, titled axes and a legend |
//! | `metrics.json` | `best_epoch`, `epochs_run`, `train_loss`, `val_loss` (at the best epoch; the combined loss with `loss = "behaviour"`), `test_loss` (test rows, coefficient MSE), `input_dim`, `latent_dim`, `parameters`; with `loss = "behaviour"` also `loss`, `beta`, `val_mse`, `val_distillation`, `test_mse`, `test_distillation`, `first_batch_mse`, `first_batch_distillation` |

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use wspace_stage_api::{choice_enum, Progress, StageError};

use super::behaviour::{self, BehaviourOptions, Probe, Scales};
use super::pca::{Coefficients, WeightPca};
use crate::data::{Dataset, TaskSplit, Tasks};
pub use crate::fit::EpochLoss;
use crate::fit::{fit, loss_chart, write_history, FitOptions, FitParams, Objective};
use crate::plot;
use crate::sampling::uniform_in;
use crate::tensors::{self, TensorFile};
use crate::tensors::{candle_error, NamedTensor, NamedTensors};
use crate::zoo::store::Zoo;

choice_enum! {
    /// The hidden-unit nonlinearity (`autoencoder.json` spells it as its choice name).
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Activation { Elu = "elu", Relu = "relu", Tanh = "tanh", Gelu = "gelu", Silu = "silu" }
}

impl Activation {
    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Elu => x.elu(1.0),
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Gelu => x.gelu_erf(),
            Activation::Silu => x.silu(),
        }
    }
}

/// `(in, out)` of one Linear layer.
type LayerShape = (usize, usize);

/// The shape of the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderConfig {
    pub input_dim: usize,
    pub hidden: Vec<usize>,
    pub latent_dim: usize,
    pub activation: Activation,
}

impl AutoencoderConfig {
    /// `(in, out)` of every Linear layer: the encoder's, then the decoder's.
    fn layers(&self) -> (Vec<LayerShape>, Vec<LayerShape>) {
        let mut dims = vec![self.input_dim];
        dims.extend(&self.hidden);
        dims.push(self.latent_dim);
        let enc: Vec<LayerShape> = dims.windows(2).map(|w| (w[0], w[1])).collect();
        let dec = enc.iter().rev().map(|&(a, b)| (b, a)).collect();
        (enc, dec)
    }
}

/// `autoencoder.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AutoencoderFile {
    #[serde(flatten)]
    config: AutoencoderConfig,
    best_epoch: usize,
    epochs_run: usize,
}

/// The autoencoder's weights (on `device`).
pub struct Autoencoder {
    pub config: AutoencoderConfig,
    pub device: Device,
    /// `(weight [out, in], bias [out])` per layer.
    encoder: Vec<(Var, Var)>,
    decoder: Vec<(Var, Var)>,
}

impl Autoencoder {
    /// PyTorch-default initialisation from a seeded ChaCha8 stream (see the module doc).
    pub fn init(config: AutoencoderConfig, seed: u64, device: &Device) -> Result<Self, StageError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut make = |(i, o): (usize, usize)| -> Result<(Var, Var), StageError> {
            let bound = 1.0 / (i as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| uniform_in(&mut rng, bound)).collect() };
            let w = draw(o * i);
            let b = draw(o);
            let e = candle_error("autoencoder init");
            Ok((Var::from_slice(&w, (o, i), device).map_err(&e)?, Var::from_slice(&b, o, device).map_err(&e)?))
        };
        let (enc, dec) = config.layers();
        let encoder = enc.into_iter().map(&mut make).collect::<Result<_, _>>()?;
        let decoder = dec.into_iter().map(&mut make).collect::<Result<_, _>>()?;
        Ok(Autoencoder { config, device: device.clone(), encoder, decoder })
    }

    pub(crate) fn vars(&self) -> Vec<Var> {
        self.encoder.iter().chain(&self.decoder).flat_map(|(w, b)| [w.clone(), b.clone()]).collect()
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    fn mlp(&self, layers: &[(Var, Var)], x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, (w, b)) in layers.iter().enumerate() {
            x = crate::matmul::linear(&x, w.as_tensor(), b.as_tensor())?;
            if i + 1 < layers.len() {
                x = self.config.activation.apply(&x)?;
            }
        }
        Ok(x)
    }

    /// `[B, D]` → `[B, latent]`.
    pub fn encode_tensor(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.mlp(&self.encoder, x)
    }

    /// `[B, latent]` → `[B, D]`.
    pub fn decode_tensor(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        self.mlp(&self.decoder, z)
    }

    /// Encodes `rows` (`n × input_dim`, row-major, normalised coefficients) to `n × latent_dim`.
    pub fn encode(&self, rows: &[f32]) -> Result<Vec<f32>, StageError> {
        self.apply(rows, self.config.input_dim, |x| self.encode_tensor(x))
    }

    /// Decodes `latents` (`n × latent_dim`) to normalised coefficients (`n × input_dim`).
    pub fn decode(&self, latents: &[f32]) -> Result<Vec<f32>, StageError> {
        self.apply(latents, self.config.latent_dim, |z| self.decode_tensor(z))
    }

    fn apply(
        &self,
        rows: &[f32],
        width: usize,
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<Vec<f32>, StageError> {
        if width == 0 || !rows.len().is_multiple_of(width) {
            return Err(StageError::msg(format!("autoencoder: input of {} values is not a multiple of {width}", rows.len())));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let e = candle_error("autoencoder");
        let x = Tensor::from_slice(rows, (rows.len() / width, width), &self.device).map_err(&e)?;
        f(&x).and_then(|y| y.flatten_all()?.to_vec1::<f32>()).map_err(&e)
    }

    /// Named tensors in the PyTorch `nn.Sequential` naming of the module doc.
    pub fn named_tensors(&self) -> Result<NamedTensors, StageError> {
        let e = candle_error("autoencoder");
        let mut out = NamedTensors::new();
        for (prefix, layers) in [("encoder", &self.encoder), ("decoder", &self.decoder)] {
            for (i, (w, b)) in layers.iter().enumerate() {
                for (suffix, v) in [("weight", w), ("bias", b)] {
                    let values = v.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(&e)?;
                    out.push(format!("{prefix}.{}.{suffix}", 2 * i), v.dims().to_vec(), values);
                }
            }
        }
        Ok(out)
    }

    fn set_from(&self, snapshot: &[Tensor]) -> Result<(), StageError> {
        for (v, t) in self.vars().iter().zip(snapshot) {
            v.set(t).map_err(candle_error("autoencoder"))?;
        }
        Ok(())
    }

    /// Reads an `autoencoder` stage's output onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Autoencoder, StageError> {
        let json_path = dir.join("autoencoder.json");
        let file: AutoencoderFile = tensors::read_json(&json_path)?;
        let ae = Autoencoder::init(file.config, 0, device)?;
        let tensors = TensorFile::open(&dir.join("autoencoder.safetensors"))?;
        let want = ae.named_tensors()?;
        let mut snapshot = Vec::with_capacity(want.len());
        for NamedTensor { name, shape, .. } in &want {
            let v = tensors.f32_shaped(name, shape, &json_path.display().to_string())?;
            snapshot.push(Tensor::from_slice(&v, shape.as_slice(), device).map_err(candle_error("autoencoder"))?);
        }
        ae.set_from(&snapshot)?;
        Ok(ae)
    }
}

/// The MLP's shape (`architecture = "mlp"`).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpOptions {
    pub hidden: Vec<usize>,
    pub latent_dim: usize,
    pub activation: Activation,
}

/// The outcome of [`train`].
pub struct Trained {
    pub model: Autoencoder,
    pub history: Vec<EpochLoss>,
    /// 1-based; the epoch whose weights were kept.
    pub best_epoch: usize,
    /// With the behavioural loss: the first batch's MSE and distillation loss (the terms' scales).
    pub behaviour_scales: Option<Scales>,
}

fn batch_loss(ae: &Autoencoder, x: &Tensor) -> candle_core::Result<Tensor> {
    let y = ae.decode_tensor(&ae.encode_tensor(x)?)?;
    candle_nn::loss::mse(&y, x)
}

fn full_loss(ae: &Autoencoder, rows: &[f32], d: usize) -> Result<f64, StageError> {
    if rows.is_empty() {
        return Ok(f64::NAN);
    }
    let e = candle_error("autoencoder");
    let x = Tensor::from_slice(rows, (rows.len() / d, d), &ae.device).map_err(&e)?;
    batch_loss(ae, &x).and_then(|l| l.to_dtype(DType::F64)?.to_scalar::<f64>()).map_err(&e)
}

/// The behavioural term's data: the PCA that decodes coefficients into weights, and one probe set per
/// train and val row (in the order of the rows given to [`train`]).
pub struct BehaviourData<'a> {
    pub pca: &'a WeightPca,
    pub train: &'a [Probe],
    pub val: &'a [Probe],
    pub options: BehaviourOptions,
}

impl BehaviourData<'_> {
    /// Per row of `y` (`rows × d`, decoded normalised coefficients): the mean behavioural loss, and
    /// when `grad` the gradient of that mean with respect to `y` (`rows × d`); on `ae`'s device.
    fn evaluate(
        &self,
        ae: &Autoencoder,
        (y, d): (&[f32], usize),
        probes: &[&Probe],
        grad: bool,
    ) -> Result<(f64, Option<Vec<f32>>), StageError> {
        let engine = behaviour::Engine::on(&ae.device);
        behaviour::batch_loss_and_gradient(&engine, self.pca, (y, d), probes, self.options.temperature, grad)
    }

    /// `(combined loss, MSE, distillation)` of `rows` (`n × d`, normalised) with their `probes`
    /// (NaN without rows).
    fn loss_on(
        &self,
        ae: &Autoencoder,
        rows: &[f32],
        probes: &[Probe],
        d: usize,
        scales: &Scales,
    ) -> Result<(f64, f64, f64), StageError> {
        if rows.is_empty() {
            return Ok((f64::NAN, f64::NAN, f64::NAN));
        }
        let e = candle_error("autoencoder");
        let x = Tensor::from_slice(rows, (rows.len() / d, d), &ae.device).map_err(&e)?;
        let y = ae.decode_tensor(&ae.encode_tensor(&x).map_err(&e)?).map_err(&e)?;
        let mse = candle_nn::loss::mse(&y, &x).and_then(|l| l.to_dtype(DType::F64)?.to_scalar::<f64>()).map_err(&e)?;
        let yv: Vec<f32> = y.flatten_all().and_then(|t| t.to_vec1()).map_err(&e)?;
        let probes: Vec<&Probe> = probes.iter().collect();
        let (kl, _) = self.evaluate(ae, (&yv, d), &probes, false)?;
        Ok((scales.combined(self.options.beta, mse, kl), mse, kl))
    }
}

/// The autoencoder as an [`Objective`] of the shared AdamW loop: coefficient MSE, or with `behaviour`
/// the combined loss whose term scales are fixed on the first batch.
struct AutoencoderObjective<'a> {
    ae: &'a Autoencoder,
    train: &'a [f32],
    val: &'a [f32],
    d: usize,
    behaviour: Option<&'a BehaviourData<'a>>,
    scales: Option<Scales>,
    batch: Vec<f32>,
}

impl Objective for AutoencoderObjective<'_> {
    fn vars(&self) -> Vec<Var> {
        self.ae.vars()
    }

    fn batch_loss(&mut self, rows: &[usize]) -> Result<(Tensor, f64), StageError> {
        let (ae, d) = (self.ae, self.d);
        let e = candle_error("autoencoder training");
        self.batch.clear();
        rows.iter().for_each(|&r| self.batch.extend_from_slice(&self.train[r * d..(r + 1) * d]));
        let x = Tensor::from_slice(&self.batch, (rows.len(), d), &ae.device).map_err(&e)?;
        let Some(b) = self.behaviour else {
            let loss = batch_loss(ae, &x).map_err(&e)?;
            let value = loss.to_scalar::<f32>().map_err(&e)? as f64;
            return Ok((loss, value));
        };
        let y = ae.decode_tensor(&ae.encode_tensor(&x).map_err(&e)?).map_err(&e)?;
        let mse = candle_nn::loss::mse(&y, &x).map_err(&e)?;
        let mse_value = mse.to_scalar::<f32>().map_err(&e)? as f64;
        let yv: Vec<f32> = y.flatten_all().and_then(|t| t.to_vec1()).map_err(&e)?;
        let probes: Vec<&Probe> = rows.iter().map(|&r| &b.train[r]).collect();
        let (kl, g) = b.evaluate(ae, (&yv, d), &probes, true)?;
        let sc = *self.scales.get_or_insert(Scales::first(mse_value, kl));
        let beta = b.options.beta;
        let loss = sc.loss(beta, mse, &y, &g.unwrap_or_default()).map_err(&e)?;
        Ok((loss, sc.combined(beta, mse_value, kl)))
    }

    fn val_loss(&mut self) -> Result<Option<f64>, StageError> {
        if self.val.is_empty() {
            return Ok(None);
        }
        Ok(Some(match (self.behaviour, &self.scales) {
            (Some(b), Some(sc)) => b.loss_on(self.ae, self.val, b.val, self.d, sc)?.0,
            _ => full_loss(self.ae, self.val, self.d)?,
        }))
    }
}

/// Trains on `train` (`n × d`, normalised), early-stopping on `val` (see the module doc); with
/// `behaviour`, on the behavioural loss.
pub fn train(
    train: &[f32],
    val: &[f32],
    d: usize,
    (mlp, params): (&MlpOptions, &FitParams),
    behaviour: Option<&BehaviourData>,
    progress: &dyn Progress,
) -> Result<Trained, StageError> {
    let n = train.len() / d.max(1);
    if n == 0 || d == 0 {
        return Err(StageError::msg(format!("autoencoder: no train-split coefficient rows to train on ({n} rows of {d})")));
    }
    let config =
        AutoencoderConfig { input_dim: d, hidden: mlp.hidden.clone(), latent_dim: mlp.latent_dim, activation: mlp.activation };
    let ae = Autoencoder::init(config, params.seed, &params.device()?)?;
    let mut objective = AutoencoderObjective {
        ae: &ae,
        train,
        val,
        d,
        behaviour,
        scales: None,
        batch: Vec::with_capacity(params.batch_size * d),
    };
    let rows: Vec<usize> = (0..n).collect();
    let fitted = fit(
        &mut objective,
        &rows,
        &FitOptions { params: *params, min_batch: 1, shuffle_salt: 0x005e_edae, what: "autoencoder", progress },
    )?;
    let behaviour_scales = objective.scales;
    Ok(Trained { model: ae, history: fitted.history, best_epoch: fitted.best_epoch, behaviour_scales })
}

/// The zoo a `pca` output was fitted on, with its tasks and data: where the behavioural loss finds each
/// model's probes.
pub type ZooSources<'a> = (&'a Zoo, &'a Tasks, &'a Dataset);

/// Trains on a `pca` output and writes the stage output into `out`.
pub fn run_autoencoder(
    pca_dir: &Path,
    sources: Option<ZooSources>,
    (mlp, fit_params, behaviour): (&MlpOptions, &FitParams, Option<BehaviourOptions>),
    out: &Path,
    progress: &dyn Progress,
) -> Result<serde_json::Value, StageError> {
    let pca = WeightPca::load(pca_dir)?;
    let coefficients = Coefficients::load(pca_dir)?;
    let d = pca.coefficient_dim();
    let gather = |split: TaskSplit| -> Vec<f32> {
        coefficients.split(split).into_iter().flat_map(|i| pca.normalise(coefficients.row(i))).collect()
    };
    let (tr, va, te) = (gather(TaskSplit::Train), gather(TaskSplit::Val), gather(TaskSplit::Test));
    let probes = |split: TaskSplit| -> Result<Vec<Probe>, StageError> {
        let (Some(b), Some((zoo, tasks, data))) = (behaviour, sources) else { return Ok(Vec::new()) };
        let rows: Vec<_> = coefficients.split(split).into_iter().map(|i| coefficients.meta.rows[i].clone()).collect();
        behaviour::load_probes(&rows, zoo, tasks, data, b.probe_images)
    };
    let (p_train, p_val, p_test) = (probes(TaskSplit::Train)?, probes(TaskSplit::Val)?, probes(TaskSplit::Test)?);
    let behaviour_data = match (behaviour, sources) {
        (Some(options), Some(_)) => Some(BehaviourData { pca: &pca, train: &p_train, val: &p_val, options }),
        (Some(_), None) => {
            return Err(StageError::input(
                "zoo",
                "must be connected, with `tasks` and `data`: `loss` = \"behaviour\" reads the models' probe images",
            ))
        }
        (None, _) => None,
    };
    let trained = train(&tr, &va, d, (mlp, fit_params), behaviour_data.as_ref(), progress)?;
    let ae = &trained.model;

    ae.named_tensors()?.write(&out.join("autoencoder.safetensors"))?;
    let file = AutoencoderFile { config: ae.config.clone(), best_epoch: trained.best_epoch, epochs_run: trained.history.len() };
    tensors::write_json(&out.join("autoencoder.json"), &file)?;
    let all: Vec<f32> = (0..coefficients.meta.rows.len()).flat_map(|i| pca.normalise(coefficients.row(i))).collect();
    let latents = ae.encode(&all)?;
    tensors::write_f32(
        &out.join("latents.safetensors"),
        "latents",
        vec![coefficients.meta.rows.len(), ae.config.latent_dim],
        latents,
    )?;

    write_history(&out.join("history.csv"), &trained.history)?;
    let y_label = if behaviour_data.is_some() {
        "β·MSE/MSE₀ + (1−β)·distillation/distillation₀ (log scale)"
    } else {
        "MSE (normalised PCA coefficients, log scale)"
    };
    plot::write_chart(&out.join("loss.svg"), &loss_chart("Autoencoder loss per epoch", y_label, &trained.history).y_log())?;

    let at_best = trained.history.get(trained.best_epoch.saturating_sub(1)).copied();
    let num = |v: f64| if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null };
    let metrics = serde_json::json!({
        "best_epoch": trained.best_epoch,
        "epochs_run": trained.history.len(),
        "train_loss": num(at_best.map_or(f64::NAN, |h| h.train)),
        "val_loss": num(at_best.map_or(f64::NAN, |h| h.val)),
        "test_loss": num(full_loss(ae, &te, d)?),
        "input_dim": d,
        "latent_dim": ae.config.latent_dim,
        "parameters": ae.parameter_count(),
    });
    let mut metrics = metrics;
    if let (Some(b), Some(sc)) = (&behaviour_data, trained.behaviour_scales) {
        // The two terms apart, on the val and test rows (distillation at the training temperature).
        let (_, val_mse, val_kl) = b.loss_on(ae, &va, &p_val, d, &sc)?;
        let (_, test_mse, test_kl) = b.loss_on(ae, &te, &p_test, d, &sc)?;
        let extra = serde_json::json!({
            "loss": "behaviour",
            "beta": b.options.beta,
            "val_mse": num(val_mse),
            "val_distillation": num(val_kl),
            "test_mse": num(test_mse),
            "test_distillation": num(test_kl),
            "first_batch_mse": sc.mse,
            "first_batch_distillation": sc.behaviour,
        });
        if let (Some(m), Some(x)) = (metrics.as_object_mut(), extra.as_object()) {
            m.extend(x.clone());
        }
    }
    tensors::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}
