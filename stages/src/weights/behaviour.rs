//! What a model *does*, as a loss on decoded weights: the behavioural term of the weight autoencoder
//! (Meynent et al. 2025, "Structure is not enough") and latent refinement.
//!
//! # Probes
//! For every encoded model, `count` *training* images of its own task (never test images): the task's
//! sorted training indices taken at evenly spaced positions `⌊j·n/count⌋`, so every class of the task
//! is represented whatever the dataset's order; pixels/255. The teacher outputs are the original
//! model's logits on them ([`Probe`]).
//!
//! # The loss and its gradient
//! A decoded model's behavioural loss is the distillation loss of [`crate::nn::distill`] (KL between
//! the teacher's and the decoded model's softened outputs at temperature `T`, times `T²`). Its gradient
//! with respect to the decoder's output `y` flows back through the cnn-s backward pass (∂ℓ/∂w) and the
//! transpose of the linear map `y → w` ([`WeightMap`]: for the MLP autoencoder `y` is the normalised
//! PCA coefficients and the map is the inverse PCA; for the token transformer `y` is the normalised
//! tokens and the map de-normalises and detokenises); the autoencoder's candle graph takes it from
//! there as the upstream gradient of its output ([`surrogate`]). The cnn-s passes run where the
//! decoder runs ([`Engine`]): on the CPU in the project's kernel, on a GPU as the candle graph of
//! [`crate::nn::graph`].
//!
//! # Latent refinement ([`refine`])
//! At encode time the latent `h` of a model can be moved to match the model's outputs better:
//! `steps` Adam steps (β = 0.9, 0.999, ε = 1e-8, learning rate `lr`) on `h` alone, minimising the
//! behavioural loss of `decode(h)` on the model's probes; the decoder is frozen. It needs the original
//! model's outputs, so it is an encoder-side improvement (a better `encode`), reported apart from pure
//! decoding.

use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;
use wspace_stage_api::StageError;

use super::pca::WeightPca;
use crate::data::{Dataset, Task, Tasks};
use crate::nn::{self, CnnS, Workspace, IMAGE_PIXELS, NUM_CLASSES, NUM_PARAMS};
use crate::zoo::store::{RowRef, Zoo};

/// One model's probe images and its own outputs on them.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `n × 784`, pixels/255.
    pub images: Vec<f32>,
    /// The original model's logits, one per image.
    pub teacher: Vec<[f32; NUM_CLASSES]>,
    /// The images' task-local labels.
    pub labels: Vec<u8>,
}

/// The positions `⌊j·n/count⌋`, `j < min(count, n)`, of a list of `n` indices.
pub fn spread(n: usize, count: usize) -> impl Iterator<Item = usize> {
    let take = count.min(n);
    (0..take).map(move |j| j * n / take)
}

/// The architectures whose weights the behavioural term can run.
pub fn check_arch(arch: &str, what: &str) -> Result<(), StageError> {
    if arch == "cnn-s" {
        Ok(())
    } else {
        Err(StageError::msg(format!("{what} runs `cnn-s` models (the fast kernel's gradient); this zoo's arch is `{arch}`")))
    }
}

/// `count` training images of `task` at the evenly spaced positions of [`spread`] (pixels/255, `n × 784`)
/// and their task-local labels: the probes of the behavioural term, the generator and loss control.
pub fn task_probe_images(task: &Task, data: &Dataset, count: usize) -> Result<(Vec<f32>, Vec<u8>), StageError> {
    let mut images = Vec::with_capacity(count * IMAGE_PIXELS);
    let mut labels = Vec::with_capacity(count);
    for j in spread(task.train.len(), count) {
        let i = task.train[j];
        let label = data.train.labels.get(i).and_then(|&l| task.local_label(l));
        match label {
            Some(l) if data.train.image_len == IMAGE_PIXELS => {
                images.extend(data.train.image(i).iter().map(|&p| p as f32 / 255.0));
                labels.push(l as u8);
            }
            _ => {
                return Err(StageError::msg(format!(
                    "task {}: training image {i} is missing, not 28×28 grey or not of the task's classes",
                    task.id
                )))
            }
        }
    }
    Ok((images, labels))
}

/// The probes of every row (in order): `count` training images of the row's task, and the original
/// model's outputs on them. Fails when a task has fewer than `count` training images.
pub fn load_probes(rows: &[RowRef], zoo: &Zoo, tasks: &Tasks, data: &Dataset, count: usize) -> Result<Vec<Probe>, StageError> {
    check_arch(&zoo.meta.arch, "the behavioural term")?;
    rows.par_iter()
        .map(|r| {
            let row = zoo.row_of(r)?;
            let task = tasks.tasks.get(row.task_id).ok_or_else(|| {
                StageError::input("tasks", format!("has no task {} (of zoo model {})", row.task_id, row.model_id))
            })?;
            if task.train.len() < count {
                return Err(StageError::param(
                    "probe_images",
                    format!("= {count} is more than task {}'s {} training images", task.id, task.train.len()),
                ));
            }
            let (images, labels) = task_probe_images(task, data, count)?;
            let weights = CnnS::from_flat(zoo.flat(row)?);
            let teacher = nn::logits_f32(&weights, &images);
            Ok(Probe { images, teacher, labels })
        })
        .collect()
}

/// A decoder's output space as the behavioural term sees it: the linear map from one model's output
/// row to its flat cnn-s weights, and that map's transpose (which carries a weight gradient back).
pub trait WeightMap: Sync {
    /// One model's decoder output → flat weights ([`NUM_PARAMS`], `state_dict` order).
    fn to_flat(&self, y: &[f32]) -> Vec<f32>;
    /// ∂ℓ/∂w → ∂ℓ/∂y.
    fn flat_gradient_to_output(&self, g: &[f32]) -> Vec<f32>;
}

impl WeightMap for WeightPca {
    fn to_flat(&self, z: &[f32]) -> Vec<f32> {
        self.normalised_to_flat(z)
    }
    fn flat_gradient_to_output(&self, g: &[f32]) -> Vec<f32> {
        self.flat_gradient_to_normalised(g)
    }
}

/// Where the behavioural term's cnn-s forward and backward passes run: the project's kernel on the
/// CPU (the same bits on every machine), or the candle graph of [`nn::graph`] on any other device.
#[derive(Debug, Clone)]
pub enum Engine {
    Kernel,
    Graph(Device),
}

impl Engine {
    /// The kernel for the CPU, the graph on `device` otherwise.
    pub fn on(device: &Device) -> Engine {
        if device.is_cpu() {
            Engine::Kernel
        } else {
            Engine::Graph(device.clone())
        }
    }

    /// Per model `i`: the loss `(1 − λ)·distillation + λ·CE` ([`nn::distill_with_labels`], `λ =
    /// label_weight`) of the flat cnn-s weights `weights[i]` on `probes[i]` and, when `grad`, its
    /// gradient with respect to those weights (empty otherwise).
    pub fn losses(
        &self,
        weights: &[Vec<f32>],
        probes: &[&Probe],
        temperature: f32,
        label_weight: f64,
        grad: bool,
    ) -> Result<Vec<(f64, Vec<f32>)>, StageError> {
        match self {
            Engine::Kernel => {
                Ok(weights.par_iter().zip(probes).map(|(w, p)| kernel_loss(w, p, temperature, label_weight, grad)).collect())
            }
            Engine::Graph(device) => graph_losses(device, weights, probes, (temperature, label_weight), grad)
                .map_err(|e| StageError::msg(format!("the behavioural term on {device:?}: {e}"))),
        }
    }
}

fn kernel_loss(w: &[f32], probe: &Probe, temperature: f32, label_weight: f64, grad: bool) -> (f64, Vec<f32>) {
    thread_local! {
        // One kernel workspace (≈ 0.5 MB) per worker thread, not one per call.
        static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::new());
    }
    debug_assert_eq!(w.len(), NUM_PARAMS);
    WORKSPACE.with_borrow_mut(|ws| {
        let (images, teacher, labels) = (&probe.images, &probe.teacher, &probe.labels);
        let mut g = if grad { vec![0.0f32; NUM_PARAMS] } else { Vec::new() };
        let loss = nn::distill_with_labels(w, images, teacher, labels, temperature, label_weight, grad.then_some(&mut g[..]), ws);
        (loss, g)
    })
}

/// [`Engine::losses`] through [`nn::graph`]: every model's loss in one graph, one backward pass.
fn graph_losses(
    device: &Device,
    weights: &[Vec<f32>],
    probes: &[&Probe],
    (temperature, label_weight): (f32, f64),
    grad: bool,
) -> candle_core::Result<Vec<(f64, Vec<f32>)>> {
    let (b, len) = (weights.len(), weights.first().map_or(0, Vec::len));
    if b == 0 {
        return Ok(Vec::new());
    }
    let w = Var::from_vec(weights.concat(), (b, len), device)?;
    let mut losses = Vec::with_capacity(b);
    for (i, p) in probes.iter().enumerate() {
        let n = p.teacher.len();
        if n == 0 {
            losses.push(Tensor::zeros((), DType::F32, device)?);
            continue;
        }
        let images = Tensor::from_slice(&p.images, (n, IMAGE_PIXELS), device)?;
        let teacher = Tensor::from_iter(p.teacher.iter().flatten().copied(), device)?.reshape((n, NUM_CLASSES))?;
        let labels = Tensor::from_iter(p.labels.iter().map(|&l| l as u32), device)?;
        let z = nn::graph::logits(&w.get(i)?, &images)?;
        losses.push(nn::graph::distill_loss(&z, &teacher, &labels, temperature as f64, label_weight)?);
    }
    let all = Tensor::stack(&losses, 0)?;
    let values = all.to_vec1::<f32>()?;
    let grads = if !grad {
        vec![Vec::new(); b]
    } else {
        match all.sum_all()?.backward()?.get(&w) {
            Some(g) => g.to_vec2::<f32>()?,
            None => vec![vec![0.0; len]; b],
        }
    };
    Ok(values.into_iter().map(f64::from).zip(grads).collect())
}

/// The mean behavioural loss of a batch: rows `y` (`probes.len() × row`, one decoder output per model)
/// against each model's probes and, when `grad`, the gradient of that mean with respect to `y`.
pub fn batch_loss_and_gradient(
    engine: &Engine,
    map: &dyn WeightMap,
    (y, row): (&[f32], usize),
    probes: &[&Probe],
    temperature: f32,
    grad: bool,
) -> Result<(f64, Option<Vec<f32>>), StageError> {
    let n = probes.len();
    let weights: Vec<Vec<f32>> = (0..n).into_par_iter().map(|i| map.to_flat(&y[i * row..(i + 1) * row])).collect();
    let per_row = engine.losses(&weights, probes, temperature, 0.0, grad)?;
    let loss = per_row.iter().map(|(l, _)| l).sum::<f64>() / n.max(1) as f64;
    let g = grad.then(|| {
        let rows: Vec<Vec<f32>> = per_row.par_iter().map(|(_, g)| map.flat_gradient_to_output(g)).collect();
        rows.into_iter().flatten().map(|v| v / n as f32).collect()
    });
    Ok((loss, g))
}

/// `loss = "behaviour"` for either autoencoder: `beta · MSE / MSE₀ + (1 − beta) · distillation /
/// distillation₀` ([`Scales`]) on `probe_images` probes per model at `temperature`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BehaviourOptions {
    pub beta: f64,
    pub probe_images: usize,
    pub temperature: f32,
}

/// The combined loss `β · MSE / MSE₀ + (1 − β) · distill / distill₀` of the autoencoders' behavioural
/// training: the two terms' values on the first batch (`MSE₀`, `distill₀`, floored at 1e-12), which
/// scale them for the rest of training.
#[derive(Debug, Clone, Copy)]
pub struct Scales {
    pub mse: f64,
    pub behaviour: f64,
}

impl Scales {
    /// The scales fixed by the first batch's values.
    pub fn first(mse: f64, distill: f64) -> Scales {
        Scales { mse: mse.max(1e-12), behaviour: distill.max(1e-12) }
    }

    /// The combined loss's value.
    pub fn combined(&self, beta: f64, mse: f64, distill: f64) -> f64 {
        beta * mse / self.mse + (1.0 - beta) * distill / self.behaviour
    }

    /// The combined loss as a tensor to differentiate: `mse` (a candle scalar of the decoder output
    /// `y`) scaled, plus the distillation term entering through [`surrogate`] with its gradient `grad`
    /// (with respect to `y`, unscaled).
    pub fn loss(&self, beta: f64, mse: Tensor, y: &Tensor, grad: &[f32]) -> candle_core::Result<Tensor> {
        let g: Vec<f32> = grad.iter().map(|v| (*v as f64 * (1.0 - beta) / self.behaviour) as f32).collect();
        (mse * (beta / self.mse))? + surrogate(y, &g)?
    }
}

/// `Σ y ⊙ G` with `G` a constant: its gradient with respect to `y` is `G`, which is how a gradient
/// computed outside candle (here: through the cnn-s kernel) enters candle's backward pass.
pub fn surrogate(y: &Tensor, upstream: &[f32]) -> candle_core::Result<Tensor> {
    let g = Tensor::from_slice(upstream, y.shape(), y.device())?;
    (y * g)?.sum_all()
}

/// The result of [`refine`].
#[derive(Debug, Clone)]
pub struct Refined {
    pub latent: Vec<f32>,
    /// The behavioural loss before the first and after the last step.
    pub loss_before: f64,
    pub loss_after: f64,
}

/// A frozen decoder: latents `[n, latent]` → outputs `[n, …]` (the space of a [`WeightMap`]).
pub type Decoder<'a> = dyn Fn(&Tensor) -> candle_core::Result<Tensor> + 'a;

/// Latent refinement's settings ([`refine`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefineOptions {
    pub steps: usize,
    pub lr: f64,
    pub probe_images: usize,
    pub temperature: f32,
    /// λ: the loss is `(1 − λ)·distillation + λ·cross-entropy` with the probe's labels (0: the
    /// behavioural loss alone).
    pub label_weight: f64,
}

/// Latent refinement (see the module doc): `o.steps` Adam steps on `latent` through the frozen decoder,
/// whose variables are on `device`. Keeps the best latent seen (the loss is measured before each step
/// and after the last).
pub fn refine(
    decoder: &Decoder,
    map: &dyn WeightMap,
    latent: &[f32],
    probe: &Probe,
    o: &RefineOptions,
    device: &Device,
) -> Result<Refined, StageError> {
    let (steps, lr) = (o.steps, o.lr);
    let e = |e: candle_core::Error| StageError::msg(format!("latent refinement: {e}"));
    let dim = latent.len();
    let h = Var::from_slice(latent, (1, dim), device).map_err(e)?;
    let engine = Engine::on(device);
    let (mut m, mut v) = (vec![0.0f64; dim], vec![0.0f64; dim]);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let mut best: Option<(f64, Vec<f32>)> = None;
    let mut first = f64::NAN;
    for step in 0..=steps {
        let z_t = decoder(h.as_tensor()).map_err(e)?;
        let z: Vec<f32> = z_t.flatten_all().and_then(|t| t.to_vec1()).map_err(e)?;
        let grad = step < steps;
        let (loss, g) = engine.losses(&[map.to_flat(&z)], &[probe], o.temperature, o.label_weight, grad)?.remove(0);
        let g = grad.then(|| map.flat_gradient_to_output(&g));
        let current: Vec<f32> = h.as_tensor().flatten_all().and_then(|t| t.to_vec1()).map_err(e)?;
        if step == 0 {
            first = loss;
        }
        if best.as_ref().is_none_or(|(b, _)| loss < *b) {
            best = Some((loss, current.clone()));
        }
        let Some(g) = g else { break };
        let grads = surrogate(&z_t, &g).and_then(|s| s.backward()).map_err(e)?;
        let gh: Vec<f32> = grads
            .get(&h)
            .ok_or_else(|| StageError::msg("latent refinement: no gradient"))?
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(e)?;
        let t = (step + 1) as i32;
        let next: Vec<f32> = (0..dim)
            .map(|i| {
                let gi = gh[i] as f64;
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                let (mh, vh) = (m[i] / (1.0 - b1.powi(t)), v[i] / (1.0 - b2.powi(t)));
                (current[i] as f64 - lr * mh / (vh.sqrt() + eps)) as f32
            })
            .collect();
        h.set(&Tensor::from_slice(&next, (1, dim), device).map_err(e)?).map_err(e)?;
    }
    let (loss_after, latent) = best.expect("at least one evaluation");
    Ok(Refined { latent, loss_before: first, loss_after })
}
