//! The tokenised weight encoder (SANE-style, Schürholt et al. 2024): a transformer autoencoder on a
//! model's weight tokens ([`super::tokens`]); `autoencoder.architecture = "transformer"`.
//!
//! # The network
//! ```text
//! x   [T, W]   normalised tokens (per entry: minus the train-split mean, over the layer's std)
//! e = x·E + P_enc                        token embedding [W → d] and a learned position (layer, unit) embedding
//! e → L × block → LayerNorm → ·Z         per-token latent [T, k]   (the codec's latent: T·k values)
//! h = z·D + P_dec → L × block → LayerNorm → ·O     [T, W]   (padding entries are never read)
//! block(x) = x + MHA(LN(x));  x + MLP(LN(x))       pre-norm; MHA: `heads` heads; MLP d → 2d → d, GELU
//! ```
//!
//! # The loss
//! Each batch of train models is augmented into two views. A view is the model itself, or with
//! `permute = true` a random permutation of its hidden units (cnn-s: conv1, conv2, conv3, fc1; every
//! hidden layer of the architecture; the function is unchanged, [`crate::zoo::matching::Alignment`]), SANE's augmentation for random-init zoos, with
//! Gaussian noise of std `noise` added to its normalised tokens at the input (the target is the clean
//! view). Then
//!
//! ```text
//! loss = β · MSE / MSE₀ + (1 − β) · distill / distill₀ + γ · NT-Xent(pool(z_a), pool(z_b))     (loss = "behaviour")
//! loss = MSE + γ · NT-Xent(pool(z_a), pool(z_b))                                              (loss = "mse")
//! ```
//!
//! MSE over the non-padding token entries of both views; `distill` the behavioural term of
//! [`super::behaviour`] on view a's decoded model (its teacher is the original: a permutation does
//! not change outputs); `pool` the mean over tokens of the latent; NT-Xent of [`crate::generate::ntxent`]
//! at temperature `tau`, `γ = contrastive_weight`; `MSE₀`, `distill₀` the first batch's values.
//! Validation (early stopping) scores the val models un-augmented on the reconstruction terms alone.
//!
//! Every weight is drawn from one seeded ChaCha8 stream (linear layers as PyTorch's default,
//! U(±1/√in); position embeddings N(0, 0.02²); LayerNorm 1, 0), and the augmentations from another,
//! so a run is deterministic on the CPU.
//!
//! # Output (the `autoencoder` stage's directory)
//! | file | content |
//! | --- | --- |
//! | `transformer.safetensors` | the network's weights (`encoder.embed.weight`, `encoder.blocks.0.attn.qkv.weight`, …), and the normaliser: `normaliser.mean` `[T, W]`, `normaliser.std` `[layers]` |
//! | `transformer.json` | [`TransformerConfig`] plus `best_epoch`, `epochs_run` |
//! | `codec.json` | `{"codec": "transformer"}`: how consumers load it ([`super::codec`]) |
//! | `latents.safetensors` | `latents` `[N, T·k]`: every row of the `pca` input (its `pca.json` order), so `align` and `sample` use it as they use the MLP's |
//! | `history.csv`, `loss.svg` | per epoch: train loss (the combined loss) and val loss |
//! | `metrics.json` | `architecture`, `best_epoch`, `epochs_run`, `train_loss`, `val_loss`, `val_mse`, `test_mse` (token MSE), `val_distillation`, `test_distillation` (with `loss = "behaviour"`), `tokens`, `token_width`, `latent_dim`, `parameters` |

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use wspace_stage_api::{Progress, StageError};

use super::behaviour::{self, BehaviourOptions, Probe, Scales, WeightMap};
use super::pca::Coefficients;
use super::tokens::TokenLayout;
use crate::data::{Dataset, TaskSplit, Tasks};
use crate::fit::{fit, loss_chart, write_history, FitOptions, FitParams, Fitted, Objective};
use crate::layers::{Init, Stack, StackShape};
use crate::ntxent;
use crate::plot;
use crate::sampling::{normal_f32, shuffle};
use crate::tensors::{self, candle_error, NamedTensors, TensorFile};
use crate::zoo::matching::{Alignment, Net};
use crate::zoo::store::Zoo;

/// The network's shape and the token layout it reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    pub arch: String,
    pub tokens: usize,
    pub token_width: usize,
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    /// Latent values per token.
    pub token_latent: usize,
}

impl TransformerConfig {
    /// The codec's latent length: `tokens · token_latent`.
    pub fn latent_dim(&self) -> usize {
        self.tokens * self.token_latent
    }
}

/// `transformer.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TransformerFile {
    #[serde(flatten)]
    config: TransformerConfig,
    best_epoch: usize,
    epochs_run: usize,
}

/// Tokens ↔ normalised tokens: per entry minus the train-split mean, divided by the layer's std (over
/// the train split's entries of that layer); padding stays 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Normaliser {
    pub layout: TokenLayout,
    /// `[T · W]`.
    pub mean: Vec<f32>,
    /// Per layer.
    pub std: Vec<f32>,
    /// Per entry: the layer's std, 0 on padding.
    scale: Vec<f32>,
}

impl Normaliser {
    fn new(layout: TokenLayout, mean: Vec<f32>, std: Vec<f32>) -> Self {
        let (w, layer_of) = (layout.width, layout.token_layers());
        let scale = layout.mask().iter().enumerate().map(|(i, m)| m * std[layer_of[i / w]]).collect();
        Normaliser { layout, mean, std, scale }
    }

    /// Fits the mean and per-layer std on `rows` (flat weights).
    pub fn fit(layout: TokenLayout, rows: &[&[f32]]) -> Self {
        let (t, w) = (layout.tokens(), layout.width);
        let n = rows.len().max(1) as f64;
        let tokens: Vec<Vec<f32>> = rows.iter().map(|r| layout.tokenise(r)).collect();
        let mean: Vec<f32> = (0..t * w).map(|i| (tokens.iter().map(|x| x[i] as f64).sum::<f64>() / n) as f32).collect();
        let mask = layout.mask();
        let layer_of = layout.token_layers();
        let mut sums = vec![(0.0f64, 0usize); layout.layers.len()];
        for x in &tokens {
            for i in 0..t * w {
                if mask[i] > 0.0 {
                    let s = &mut sums[layer_of[i / w]];
                    s.0 += (x[i] as f64 - mean[i] as f64).powi(2);
                    s.1 += 1;
                }
            }
        }
        let std = sums.iter().map(|&(s, c)| ((s / c.max(1) as f64).sqrt() as f32).max(1e-6)).collect();
        Normaliser::new(layout, mean, std)
    }

    /// Flat weights → normalised tokens.
    pub fn normalise(&self, flat: &[f32]) -> Vec<f32> {
        let x = self.layout.tokenise(flat);
        x.iter().zip(&self.mean).zip(&self.scale).map(|((v, m), s)| if *s > 0.0 { (v - m) / s } else { 0.0 }).collect()
    }

    /// Normalised tokens → flat weights.
    pub fn denormalise(&self, y: &[f32]) -> Vec<f32> {
        let x: Vec<f32> = y.iter().zip(&self.mean).zip(&self.scale).map(|((v, m), s)| v * s + m).collect();
        self.layout.detokenise(&x)
    }
}

impl WeightMap for Normaliser {
    fn to_flat(&self, y: &[f32]) -> Vec<f32> {
        self.denormalise(y)
    }
    /// Detokenising is a bijection onto the non-padding entries, so its transpose is tokenising;
    /// de-normalising scales each entry by its layer's std.
    fn flat_gradient_to_output(&self, g: &[f32]) -> Vec<f32> {
        self.layout.tokenise(g).iter().zip(&self.scale).map(|(g, s)| g * s).collect()
    }
}

/// The transformer autoencoder (its variables on `device`) with its normaliser (on the CPU).
pub struct TokenAutoencoder {
    pub config: TransformerConfig,
    pub normaliser: Normaliser,
    pub device: Device,
    encoder: Stack,
    decoder: Stack,
    /// Every variable with its name, in creation order (what is saved and restored).
    named: Vec<(String, Var)>,
}

impl TokenAutoencoder {
    /// Seeded initialisation (see the module doc).
    pub fn init(config: TransformerConfig, normaliser: Normaliser, seed: u64, device: &Device) -> Result<Self, StageError> {
        let mut init = Init::new(seed, device);
        let shape = StackShape { tokens: config.tokens, d_model: config.d_model, layers: config.layers, heads: config.heads };
        let encoder = init.stack("encoder", shape, config.token_width, config.token_latent)?;
        let decoder = init.stack("decoder", shape, config.token_latent, config.token_width)?;
        Ok(TokenAutoencoder { config, normaliser, device: device.clone(), encoder, decoder, named: init.named })
    }

    pub(crate) fn vars(&self) -> Vec<Var> {
        self.named.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.named.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Normalised tokens `[B, T, W]` → latents `[B, T, k]`.
    pub fn encode_tensor(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.encoder.forward(x)
    }

    /// Latents `[B, T, k]` → normalised tokens `[B, T, W]`.
    pub fn decode_tensor(&self, z: &Tensor) -> candle_core::Result<Tensor> {
        self.decoder.forward(z)
    }

    /// Flat latents `[n, T·k]` → flat normalised tokens `[n, T·W]` (what latent refinement steps through).
    pub fn decode_flat_tensor(&self, h: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let n = h.dim(0)?;
        self.decode_tensor(&h.reshape((n, c.tokens, c.token_latent))?)?.reshape((n, c.tokens * c.token_width))
    }

    /// Flat weights of `n` models (`n ×` the architecture's weights) → latents `n × T·k`.
    pub fn encode(&self, flat: &[&[f32]]) -> Result<Vec<f32>, StageError> {
        if flat.is_empty() {
            return Ok(Vec::new());
        }
        let c = &self.config;
        let e = candle_error("transformer");
        let x: Vec<f32> = flat.iter().flat_map(|w| self.normaliser.normalise(w)).collect();
        let x = Tensor::from_vec(x, (flat.len(), c.tokens, c.token_width), &self.device).map_err(&e)?;
        self.encode_tensor(&x).and_then(|z| z.flatten_all()?.to_vec1::<f32>()).map_err(&e)
    }

    /// Latents (`n × T·k`) → flat weights of `n` models.
    pub fn decode(&self, latents: &[f32]) -> Result<Vec<Vec<f32>>, StageError> {
        let (c, k) = (&self.config, self.config.latent_dim());
        if k == 0 || !latents.len().is_multiple_of(k) {
            return Err(StageError::msg(format!("{} latent values are not a multiple of latent_dim {k}", latents.len())));
        }
        let n = latents.len() / k;
        if n == 0 {
            return Ok(Vec::new());
        }
        let e = candle_error("transformer");
        let z = Tensor::from_slice(latents, (n, c.tokens, c.token_latent), &self.device).map_err(&e)?;
        let y: Vec<f32> = self.decode_tensor(&z).and_then(|y| y.flatten_all()?.to_vec1()).map_err(&e)?;
        Ok(y.chunks_exact(c.tokens * c.token_width).map(|y| self.normaliser.denormalise(y)).collect())
    }

    /// Latents → named tensors with the architecture's names and shapes.
    pub fn decode_weights(&self, latents: &[f32]) -> Result<Vec<NamedTensors>, StageError> {
        Ok(self.decode(latents)?.iter().map(|w| self.normaliser.layout.named(w)).collect())
    }

    /// The weights and the normaliser, as saved.
    fn tensors(&self) -> Result<NamedTensors, StageError> {
        let e = candle_error("transformer");
        let mut out = NamedTensors::new();
        for (name, v) in &self.named {
            out.push(name.clone(), v.dims().to_vec(), v.as_tensor().flatten_all().and_then(|t| t.to_vec1()).map_err(&e)?);
        }
        let n = &self.normaliser;
        out.push("normaliser.mean", vec![self.config.tokens, self.config.token_width], n.mean.clone());
        out.push("normaliser.std", vec![n.std.len()], n.std.clone());
        Ok(out)
    }

    /// Writes `transformer.safetensors` and `transformer.json`.
    fn save(&self, dir: &Path, best_epoch: usize, epochs_run: usize) -> Result<(), StageError> {
        self.tensors()?.write(&dir.join("transformer.safetensors"))?;
        tensors::write_json(
            &dir.join("transformer.json"),
            &TransformerFile { config: self.config.clone(), best_epoch, epochs_run },
        )
    }

    /// Reads an `autoencoder` stage's output written with `architecture = "transformer"`, onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<TokenAutoencoder, StageError> {
        let json = dir.join("transformer.json");
        let file: TransformerFile = tensors::read_json(&json)?;
        let c = file.config;
        let source = json.display().to_string();
        let layout = TokenLayout::new(&c.arch, Some(c.token_width))?;
        if layout.tokens() != c.tokens {
            return Err(StageError::msg(format!("{source}: {} tokens, `{}` has {}", c.tokens, c.arch, layout.tokens())));
        }
        let weights = TensorFile::open(&dir.join("transformer.safetensors"))?;
        let mean = weights.f32_shaped("normaliser.mean", &[c.tokens, c.token_width], &source)?;
        let std = weights.f32_shaped("normaliser.std", &[layout.layers.len()], &source)?;
        let model = TokenAutoencoder::init(c, Normaliser::new(layout, mean, std), 0, device)?;
        let e = candle_error("transformer");
        for (name, v) in &model.named {
            let values = weights.f32_shaped(name, v.dims(), &source)?;
            v.set(&Tensor::from_vec(values, v.dims(), device).map_err(&e)?).map_err(&e)?;
        }
        Ok(model)
    }
}

/// The transformer's parameters (`autoencoder` stage, `architecture = "transformer"`).
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerOptions {
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    pub token_latent: usize,
    /// `None`: the widest layer's `fan_in + 1`.
    pub token_width: Option<usize>,
    pub permute: bool,
    pub noise: f64,
    pub contrastive_weight: f64,
    pub tau: f64,
}

/// The models of one split: their flat weights and (with the behavioural loss) their probes.
pub(crate) struct Rows {
    pub flat: Vec<Vec<f32>>,
    pub probes: Vec<Probe>,
}

/// The transformer's training: the model (initialised from `fit_params.seed`, its normaliser fitted on
/// `train`) and its loss, for [`TransformerObjective::fit`].
pub(crate) struct TransformerObjective<'a> {
    model: TokenAutoencoder,
    opts: &'a TransformerOptions,
    behaviour: Option<BehaviourOptions>,
    train: &'a Rows,
    val: &'a Rows,
    mask: Tensor,
    mask_sum: f64,
    rng: ChaCha8Rng,
    scales: Option<Scales>,
    /// The architecture's symmetries (the permutation augmentation).
    net: Net,
    /// The loop's parameters (the initial weights and the augmentation draws come from its seed).
    params: FitParams,
}

/// A random permutation of a network's hidden units (no sign flips).
pub(super) fn random_permutation(net: &Net, rng: &mut ChaCha8Rng) -> Alignment {
    let mut a = Alignment::identity(net);
    for p in a.perm.iter_mut() {
        shuffle(p, rng);
    }
    a
}

impl<'a> TransformerObjective<'a> {
    /// The model of `arch` in `layout` and its objective on `train` (early stopping on `val`).
    pub(crate) fn new(
        (arch, layout): (&str, TokenLayout),
        (train, val): (&'a Rows, &'a Rows),
        (opts, fit_params, behaviour): (&'a TransformerOptions, &FitParams, Option<BehaviourOptions>),
    ) -> Result<Self, StageError> {
        let train_refs: Vec<&[f32]> = train.flat.iter().map(Vec::as_slice).collect();
        let normaliser = Normaliser::fit(layout.clone(), &train_refs);
        let config = TransformerConfig {
            arch: arch.to_string(),
            tokens: layout.tokens(),
            token_width: layout.width,
            d_model: opts.d_model,
            heads: opts.heads,
            layers: opts.layers,
            token_latent: opts.token_latent,
        };
        let device = fit_params.device()?;
        let model = TokenAutoencoder::init(config, normaliser, fit_params.seed, &device)?;
        let mask_values = layout.mask();
        let mask_sum = mask_values.iter().map(|&m| m as f64).sum();
        let mask =
            Tensor::from_vec(mask_values, (layout.tokens(), layout.width), &device).map_err(candle_error("transformer"))?;
        let net = Net::from_arch(arch)
            .ok_or_else(|| StageError::msg(format!("`{arch}` has no permutation symmetries the augmentation knows")))?;
        Ok(TransformerObjective {
            model,
            opts,
            behaviour,
            train,
            val,
            mask,
            mask_sum,
            rng: ChaCha8Rng::seed_from_u64(fit_params.seed ^ 0x0a06_7e27),
            scales: None,
            net,
            params: *fit_params,
        })
    }

    /// Trains on every train row ([`crate::fit`]).
    pub(crate) fn fit(&mut self, progress: &dyn Progress) -> Result<Fitted, StageError> {
        let order: Vec<usize> = (0..self.train.flat.len()).collect();
        let min_batch = if self.opts.contrastive_weight > 0.0 { 2 } else { 1 };
        fit(
            self,
            &order,
            &FitOptions { params: self.params, min_batch, shuffle_salt: 0x005e_edae, what: "transformer", progress },
        )
    }

    fn shape(&self) -> (usize, usize) {
        (self.model.config.tokens, self.model.config.token_width)
    }

    /// Masked MSE of `y` against `x` (`[n, T, W]`), per non-padding entry.
    fn mse(&self, y: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let n = x.dim(0)?;
        (y - x)?.sqr()?.broadcast_mul(&self.mask)?.sum_all()? / (self.mask_sum * n as f64)
    }

    /// Mean behavioural loss of the decoded rows `y` (`n × T·W`, flat) against `probes`, and its
    /// gradient with respect to `y` (when `grad`).
    fn distill(
        &self,
        b: BehaviourOptions,
        y: &[f32],
        probes: &[&Probe],
        grad: bool,
    ) -> Result<(f64, Option<Vec<f32>>), StageError> {
        let (t, w) = self.shape();
        let engine = behaviour::Engine::on(&self.model.device);
        behaviour::batch_loss_and_gradient(&engine, &self.model.normaliser, (y, t * w), probes, b.temperature, grad)
    }

    fn tensor(&self, rows: Vec<f32>, n: usize) -> candle_core::Result<Tensor> {
        let (t, w) = self.shape();
        Tensor::from_vec(rows, (n, t, w), &self.model.device)
    }

    /// `(combined, mse, distillation)` of the un-augmented `rows` (NaN without rows).
    fn clean_loss(&self, rows: &Rows) -> Result<(f64, f64, f64), StageError> {
        let n = rows.flat.len();
        if n == 0 {
            return Ok((f64::NAN, f64::NAN, f64::NAN));
        }
        let e = candle_error("transformer");
        let x: Vec<f32> = rows.flat.iter().flat_map(|w| self.model.normaliser.normalise(w)).collect();
        let x = self.tensor(x, n).map_err(&e)?;
        let y = self.model.decode_tensor(&self.model.encode_tensor(&x).map_err(&e)?).map_err(&e)?;
        let mse = self.mse(&y, &x).and_then(|l| l.to_dtype(DType::F64)?.to_scalar::<f64>()).map_err(&e)?;
        let (Some(b), Some(sc)) = (self.behaviour, self.scales) else { return Ok((mse, mse, f64::NAN)) };
        let yv: Vec<f32> = y.flatten_all().and_then(|t| t.to_vec1()).map_err(&e)?;
        let probes: Vec<&Probe> = rows.probes.iter().collect();
        let (kl, _) = self.distill(b, &yv, &probes, false)?;
        Ok((sc.combined(b.beta, mse, kl), mse, kl))
    }
}

impl Objective for TransformerObjective<'_> {
    fn vars(&self) -> Vec<Var> {
        self.model.vars()
    }

    fn batch_loss(&mut self, rows: &[usize]) -> Result<(Tensor, f64), StageError> {
        let e = candle_error("transformer training");
        let b = rows.len();
        let norm = &self.model.normaliser;
        // Two views per model: [a_0 … a_{b−1}, b_0 … b_{b−1}], targets clean, inputs noisy.
        let mut target = Vec::new();
        let mut input = Vec::new();
        for _view in 0..2 {
            for &r in rows {
                let w = &self.train.flat[r];
                let x = if self.opts.permute {
                    norm.normalise(&random_permutation(&self.net, &mut self.rng).apply(&self.net, w))
                } else {
                    norm.normalise(w)
                };
                input.extend(x.iter().zip(&norm.scale).map(|(v, s)| {
                    if *s > 0.0 && self.opts.noise > 0.0 {
                        v + self.opts.noise as f32 * normal_f32(&mut self.rng)
                    } else {
                        *v
                    }
                }));
                target.extend(x);
            }
        }
        let x_in = self.tensor(input, 2 * b).map_err(&e)?;
        let x = self.tensor(target, 2 * b).map_err(&e)?;
        let z = self.model.encode_tensor(&x_in).map_err(&e)?;
        let y = self.model.decode_tensor(&z).map_err(&e)?;
        let mse = self.mse(&y, &x).map_err(&e)?;
        let mse_value = mse.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>()).map_err(&e)?;
        let gamma = self.opts.contrastive_weight;
        let (contrastive, nt_value) = if gamma > 0.0 && b >= 2 {
            let pooled = z.mean(1).map_err(&e)?;
            let nt = ntxent::ntxent(&pooled.narrow(0, 0, b).map_err(&e)?, &pooled.narrow(0, b, b).map_err(&e)?, self.opts.tau)
                .map_err(&e)?;
            let v = nt.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>()).map_err(&e)?;
            (Some((nt * gamma).map_err(&e)?), gamma * v)
        } else {
            (None, 0.0)
        };
        let (mut loss, mut value) = match self.behaviour {
            None => (mse, mse_value),
            Some(bo) => {
                let ya = y.narrow(0, 0, b).map_err(&e)?;
                let yv: Vec<f32> = ya.flatten_all().and_then(|t| t.to_vec1()).map_err(&e)?;
                let probes: Vec<&Probe> = rows.iter().map(|&r| &self.train.probes[r]).collect();
                let (kl, g) = self.distill(bo, &yv, &probes, true)?;
                let sc = *self.scales.get_or_insert(Scales::first(mse_value, kl));
                (sc.loss(bo.beta, mse, &ya, &g.unwrap_or_default()).map_err(&e)?, sc.combined(bo.beta, mse_value, kl))
            }
        };
        if let Some(c) = contrastive {
            loss = (loss + c).map_err(&e)?;
            value += nt_value;
        }
        Ok((loss, value))
    }

    fn val_loss(&mut self) -> Result<Option<f64>, StageError> {
        if self.val.flat.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.clean_loss(self.val)?.0))
    }
}

/// Trains the transformer on the `pca` input's rows (their zoo weights) and writes the stage output
/// (see the module doc). `sources`: the zoo, and with the behavioural loss its tasks and data.
pub fn run_transformer(
    pca_dir: &Path,
    (zoo, probes_from): (&Zoo, Option<(&Tasks, &Dataset)>),
    (opts, fit_params, behaviour): (&TransformerOptions, &FitParams, Option<BehaviourOptions>),
    out: &Path,
    progress: &dyn Progress,
) -> Result<serde_json::Value, StageError> {
    let layout = TokenLayout::new(&zoo.meta.arch, opts.token_width)?;
    let coefficients = Coefficients::load(pca_dir)?;
    let meta_rows = &coefficients.meta.rows;
    let flat: Vec<Vec<f32>> = meta_rows
        .par_iter()
        .map(|r| {
            let w = zoo.flat(zoo.row_of(r)?)?;
            if w.len() != layout.weights() {
                return Err(StageError::msg(format!(
                    "zoo model {}: {} weights, `{}` has {}",
                    r.model_id,
                    w.len(),
                    layout.arch,
                    layout.weights()
                )));
            }
            Ok(w)
        })
        .collect::<Result<_, StageError>>()?;
    let split_rows = |split: TaskSplit| -> Result<Rows, StageError> {
        let idx = coefficients.split(split);
        let probes = match (behaviour, probes_from) {
            (Some(b), Some((tasks, data))) => {
                let refs: Vec<_> = idx.iter().map(|&i| meta_rows[i].clone()).collect();
                behaviour::load_probes(&refs, zoo, tasks, data, b.probe_images)?
            }
            _ => Vec::new(),
        };
        Ok(Rows { flat: idx.iter().map(|&i| flat[i].clone()).collect(), probes })
    };
    let (train, val, test) = (split_rows(TaskSplit::Train)?, split_rows(TaskSplit::Val)?, split_rows(TaskSplit::Test)?);
    if train.flat.is_empty() {
        return Err(StageError::input("pca", "has no train-split rows for the transformer to train on"));
    }
    let mut objective = TransformerObjective::new((&zoo.meta.arch, layout), (&train, &val), (opts, fit_params, behaviour))?;
    let fitted = objective.fit(progress)?;
    let (_, val_mse, val_kl) = objective.clean_loss(&val)?;
    let (_, test_mse, test_kl) = objective.clean_loss(&test)?;
    let model = &objective.model;

    model.save(out, fitted.best_epoch, fitted.history.len())?;
    let all: Vec<&[f32]> = flat.iter().map(Vec::as_slice).collect();
    let latents = model.encode(&all)?;
    tensors::write_f32(&out.join("latents.safetensors"), "latents", vec![flat.len(), model.config.latent_dim()], latents)?;
    write_history(&out.join("history.csv"), &fitted.history)?;
    let y_label = "train: combined loss with augmentation; val: reconstruction terms (log scale)";
    plot::write_chart(&out.join("loss.svg"), &loss_chart("Token transformer loss per epoch", y_label, &fitted.history).y_log())?;
    let at_best = fitted.at_best();
    let num = |v: f64| if v.is_finite() { serde_json::json!(v) } else { serde_json::Value::Null };
    let metrics = serde_json::json!({
        "architecture": "transformer",
        "loss": if behaviour.is_some() { "behaviour" } else { "mse" },
        "best_epoch": fitted.best_epoch,
        "epochs_run": fitted.history.len(),
        "train_loss": num(at_best.map_or(f64::NAN, |h| h.train)),
        "val_loss": num(at_best.map_or(f64::NAN, |h| h.val)),
        "val_mse": num(val_mse),
        "test_mse": num(test_mse),
        "val_distillation": num(val_kl),
        "test_distillation": num(test_kl),
        "tokens": model.config.tokens,
        "token_width": model.config.token_width,
        "latent_dim": model.config.latent_dim(),
        "parameters": model.parameter_count(),
    });
    tensors::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}
