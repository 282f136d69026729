//! The flow's velocity network: a small transformer over the latent's tokens ([`crate::layers`]), and
//! its Euler integration with classifier-free guidance.
//!
//! ```text
//! input of token j = [ x_j (width) ; c_j (class_dim) ; τ(t) (16) ; r ; m (class_dim) ; δ ]
//!     x_j   token j of the standardised latent at time t
//!     c_j   for the head's token of class slot s: the class coordinates of the prompt's s-th class; else 0
//!     τ(t)  sin(2^i π t), cos(2^i π t), i < 8
//!     r     the target loss on the train split's val_loss range, (loss − loss_min) / (loss_max − loss_min)
//!     m     the mean of the prompt's three class coordinates: the task's dataset, in no class order
//!     δ     1 when the prompt is dropped (c, r, m = 0), else 0
//! out = stack(input)   [B, T, width]     (stack: input projection, position, blocks, norm, output)
//! ```
//!
//! `out` is the velocity `v` (`predict = "velocity"`) or the clean latent `x̂₁` (`predict = "latent"`),
//! whose velocity is `(x̂₁ − x_t) / (1 − t)`.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use wspace_stage_api::StageError;

use crate::layers::{Init, Stack, StackShape};
use crate::tensors::{self, candle_error, NamedTensors, TensorFile};

wspace_stage_api::choice_enum! {
    /// What the network predicts.
    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Predict { Velocity = "velocity", Latent = "latent" }
}

/// Frequencies of the time features (sine and cosine each).
const TIME_FREQUENCIES: usize = 8;

/// The network's shape, the prompt scales and the codec it was trained on; `flow.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowConfig {
    /// The weight codec whose latents it generates (`codec.json`'s name).
    pub codec: String,
    pub tokens: usize,
    /// Latent values per token.
    pub width: usize,
    /// The first of the head's tokens (one per class slot, in class order).
    pub class_token: usize,
    /// Classes of the dataset and the length of their coordinates.
    pub classes: usize,
    pub class_dim: usize,
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    pub predict: Predict,
    pub loss_min: f64,
    pub loss_max: f64,
}

impl FlowConfig {
    fn features(&self) -> usize {
        self.width + 2 * self.class_dim + 2 * TIME_FREQUENCIES + 2
    }
    pub fn latent_dim(&self) -> usize {
        self.tokens * self.width
    }
    /// The normalised target loss.
    pub fn r(&self, loss: f64) -> f32 {
        ((loss - self.loss_min) / (self.loss_max - self.loss_min).max(1e-12)) as f32
    }
}

/// A prompt: the task's classes in output order and the target loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prompt {
    pub classes: [usize; 3],
    pub loss: f64,
}

/// The velocity network with the latent standardisation and the class coordinates.
pub struct Flow {
    pub config: FlowConfig,
    /// Where the network's variables are.
    pub device: Device,
    stack: Stack,
    named: Vec<(String, Var)>,
    /// Per latent value: the train latents' mean and std (the flow runs on standardised latents).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// `[classes, class_dim]`.
    pub class_coords: Vec<f32>,
}

impl Flow {
    /// Seeded initialisation ([`crate::layers`]).
    pub fn init(
        config: FlowConfig,
        mean: Vec<f32>,
        std: Vec<f32>,
        class_coords: Vec<f32>,
        seed: u64,
        device: &Device,
    ) -> Result<Flow, StageError> {
        let (n, c) = (config.latent_dim(), config.classes * config.class_dim);
        if mean.len() != n || std.len() != n || class_coords.len() != c {
            return Err(StageError::msg(format!(
                "flow: {} / {} latent statistics (want {n}) and {} class coordinates (want {c})",
                mean.len(),
                std.len(),
                class_coords.len()
            )));
        }
        if config.class_token + 3 > config.tokens {
            return Err(StageError::msg(format!(
                "flow: head tokens {}.. beyond the {} tokens",
                config.class_token, config.tokens
            )));
        }
        let mut init = Init::new(seed, device);
        let shape = StackShape { tokens: config.tokens, d_model: config.d_model, layers: config.layers, heads: config.heads };
        let stack = init.stack("velocity", shape, config.features(), config.width)?;
        Ok(Flow { config, device: device.clone(), stack, named: init.named, mean, std, class_coords })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.named.iter().map(|(_, v)| v.clone()).collect()
    }

    pub fn parameter_count(&self) -> usize {
        self.named.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Checks that every class of a prompt has coordinates.
    pub fn check(&self, p: &Prompt) -> Result<(), StageError> {
        match p.classes.iter().find(|&&c| c >= self.config.classes) {
            Some(c) => {
                Err(StageError::msg(format!("class {c} is not a class of the data: the flow knows 0..{}", self.config.classes)))
            }
            None => Ok(()),
        }
    }

    /// The network's input `[B, T, F]` for standardised latents `x` (`B × T·width`) at times `t`, with
    /// each row's prompt or `None` (dropped).
    fn input(&self, x: &[f32], t: &[f32], prompts: &[Option<Prompt>]) -> Result<Tensor, StageError> {
        let c = &self.config;
        let (b, q, f) = (t.len(), c.class_dim, c.features());
        let mut out = Vec::with_capacity(b * c.tokens * f);
        for (i, (&ti, p)) in t.iter().zip(prompts).enumerate() {
            let coords = |class: usize| &self.class_coords[class * q..(class + 1) * q];
            let mut global = Vec::with_capacity(f - c.width - q);
            for k in 0..TIME_FREQUENCIES {
                let a = std::f32::consts::PI * (1u32 << k) as f32 * ti;
                global.extend([a.sin(), a.cos()]);
            }
            match p {
                Some(p) => {
                    global.push(c.r(p.loss));
                    global.extend((0..q).map(|j| p.classes.iter().map(|&k| coords(k)[j]).sum::<f32>() / 3.0));
                    global.push(0.0);
                }
                None => {
                    global.extend(std::iter::repeat_n(0.0, q + 1));
                    global.push(1.0);
                }
            }
            for j in 0..c.tokens {
                out.extend_from_slice(&x[(i * c.tokens + j) * c.width..(i * c.tokens + j + 1) * c.width]);
                match (p, j.checked_sub(c.class_token).filter(|&s| s < 3)) {
                    (Some(p), Some(slot)) => out.extend_from_slice(coords(p.classes[slot])),
                    _ => out.extend(std::iter::repeat_n(0.0, q)),
                }
                out.extend_from_slice(&global);
            }
        }
        Tensor::from_vec(out, (b, c.tokens, f), &self.device).map_err(candle_error("flow"))
    }

    /// The network's output `[B, T, width]` (velocity or clean latent, [`Predict`]) at standardised
    /// latents `x` and times `t`.
    pub fn forward(&self, x: &[f32], t: &[f32], prompts: &[Option<Prompt>]) -> Result<Tensor, StageError> {
        let input = self.input(x, t, prompts)?;
        self.stack.forward(&input).map_err(candle_error("flow"))
    }

    /// Latents (de-standardised, `B × T·width`) from the noise `x0` (`B × T·width`, standard normal) by
    /// `steps` Euler steps from t = 0 to 1, the network's output guided as `out(∅) + guidance ·
    /// (out(prompt) − out(∅))` (with `predict = "latent"`, the velocity `(x̂₁ − x) / (1 − t)`: the last
    /// step lands on `x̂₁`).
    pub fn sample(&self, prompts: &[Prompt], mut x: Vec<f32>, steps: usize, guidance: f64) -> Result<Vec<f32>, StageError> {
        let b = prompts.len();
        let cond: Vec<Option<Prompt>> = prompts.iter().map(|&p| Some(p)).collect();
        let dropped = vec![None; b];
        let e = candle_error("flow");
        let dt = 1.0 / steps as f32;
        for i in 0..steps {
            let t = vec![i as f32 * dt; b];
            let oc: Vec<f32> = self.forward(&x, &t, &cond)?.flatten_all().and_then(|v| v.to_vec1()).map_err(&e)?;
            let out: Vec<f32> = if guidance == 1.0 {
                oc
            } else {
                let ou: Vec<f32> = self.forward(&x, &t, &dropped)?.flatten_all().and_then(|v| v.to_vec1()).map_err(&e)?;
                ou.iter().zip(&oc).map(|(u, c)| u + guidance as f32 * (c - u)).collect()
            };
            let remaining = 1.0 - i as f32 * dt;
            for (xi, o) in x.iter_mut().zip(&out) {
                let v = match self.config.predict {
                    Predict::Velocity => *o,
                    Predict::Latent => (o - *xi) / remaining,
                };
                *xi += dt * v;
            }
        }
        let n = self.config.latent_dim();
        Ok(x.iter().enumerate().map(|(i, &v)| v * self.std[i % n] + self.mean[i % n]).collect())
    }

    fn tensors(&self) -> Result<NamedTensors, StageError> {
        let e = candle_error("flow");
        let mut out = NamedTensors::new();
        for (name, v) in &self.named {
            out.push(name.clone(), v.dims().to_vec(), v.as_tensor().flatten_all().and_then(|t| t.to_vec1()).map_err(&e)?);
        }
        let n = self.config.latent_dim();
        out.push("latent_mean", vec![n], self.mean.clone());
        out.push("latent_std", vec![n], self.std.clone());
        out.push("class_coords", vec![self.config.classes, self.config.class_dim], self.class_coords.clone());
        Ok(out)
    }

    /// Writes `flow.safetensors` and `flow.json` (the config plus `extra`).
    pub fn save(&self, dir: &Path, extra: serde_json::Value) -> Result<(), StageError> {
        self.tensors()?.write(&dir.join("flow.safetensors"))?;
        tensors::write_json_with(&dir.join("flow.json"), &self.config, extra)
    }

    /// Reads a `flow` stage's output onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Flow, StageError> {
        let json = dir.join("flow.json");
        let config: FlowConfig = tensors::read_json(&json)?;
        let source = json.display().to_string();
        let file = TensorFile::open(&dir.join("flow.safetensors"))?;
        let n = config.latent_dim();
        let mean = file.f32_shaped("latent_mean", &[n], &source)?;
        let std = file.f32_shaped("latent_std", &[n], &source)?;
        let coords = file.f32_shaped("class_coords", &[config.classes, config.class_dim], &source)?;
        let flow = Flow::init(config, mean, std, coords, 0, device)?;
        let e = candle_error("flow");
        for (name, v) in &flow.named {
            let values = file.f32_shaped(name, v.dims(), &source)?;
            v.set(&Tensor::from_vec(values, v.dims(), device).map_err(&e)?).map_err(&e)?;
        }
        Ok(flow)
    }
}
