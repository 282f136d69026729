//! The `sample` stage: prompts → weights. For every task of the `prompts` split of the `tasks` input, every target
//! loss of a grid and `samples_per_prompt` draws, one model's weights, by the stage's `method`: a
//! [`Sampler`], one file per method, registered in [`METHODS`] with its inputs and parameters:
//! - `"align"` ([`align`], the thesis): the prompt projected into the weight latent space, decoded;
//! - `"generator"` ([`generator`]): the `generator` stage's model with a fresh noise per draw;
//! - `"kde"` ([`kde`], SANE's sampling, for either weight codec): a kernel density over the
//!   autoencoder's train-split latents, decoded;
//! - `"flow"` ([`flow`]): whole networks from the `flow` stage's conditional flow in a token codec's
//!   latent space, decoded.
//!
//! A new method is a file here with a [`Method`] (its name, inputs, parameters and how it loads) and
//! an implementation of [`Sampler`], and one line in [`METHODS`].
//!
//! Prompts: every task of the split `prompts` (default `test`: unseen triplets; `train`: the zoo's own
//! tasks). The grid: `targets` values evenly spaced over the method's loss range (the train split's `val_loss`
//! range, `loss_min` … `loss_max`; one value = the midpoint), or the losses listed in `target_losses`:
//! a listed loss outside the range is **refused** with an error naming it and the range (a model of
//! that loss was never seen). Draws are seeded by `seed`, the task and the draw index.
//!
//! Loss control (`loss_control = "scale"`, either method, `cnn-s`): each sample's head (`fc2.weight`
//! and `fc2.bias`, hence its logits) is multiplied by the factor [`head_scale`] at which its mean
//! cross-entropy on `calibration_images` *training* images of its task (evenly spaced, as the
//! behavioural probes; never the test images it is scored on) equals the target; a target below the
//! lowest loss scaling can reach gets that lowest loss. Scaling never changes a prediction, so it
//! moves the loss without touching the accuracy. Input `data`.
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `samples/t<task>-<k>-<draw>.safetensors` | `F32` weights with the zoo's parameter names and shapes (`state_dict` order) |
//! | `samples.csv` | `sample,prompt,draw,task_id,class_0,class_1,class_2,target_loss,head_scale,file` (`prompt`: task × target, shared by its draws; `head_scale` 1 without loss control) |
//! | `metrics.json` | `method`, `prompt_split`, `samples`, `prompts`, `tasks`, `targets`, `samples_per_prompt`, `loss_min`, `loss_max`, `arch`; with `kde`: `bandwidth`, `kde_own_task_prompts` (tasks whose kernels were their own models) |

pub mod align;
pub mod flow;
pub mod generator;
pub mod kde;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use wspace_stage_api::{choice_enum, params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use crate::data::{Dataset, Task, TaskSplit, Tasks};
use crate::device::{DeviceName, DEVICE};
use crate::nn::{self, CnnS};
use crate::tensors::{self, NamedTensors};
use crate::weights::behaviour::task_probe_images;

/// One row of `samples.csv`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleRow {
    pub sample: usize,
    /// Task × target: the draws of one prompt share it.
    pub prompt: usize,
    pub draw: usize,
    pub task_id: usize,
    pub class_0: usize,
    pub class_1: usize,
    pub class_2: usize,
    pub target_loss: f64,
    /// The factor the head was scaled by (`loss_control = "scale"`; 1 otherwise).
    pub head_scale: f64,
    pub file: String,
}

impl SampleRow {
    pub fn classes(&self) -> [usize; 3] {
        [self.class_0, self.class_1, self.class_2]
    }
}

/// Reads `samples.csv`.
pub fn load_samples(dir: &Path) -> Result<Vec<SampleRow>, StageError> {
    tensors::read_records(&dir.join("samples.csv"))
}

/// `n` targets evenly spaced over `[lo, hi]` (the midpoint for `n = 1`).
pub fn target_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![0.5 * (lo + hi)],
        _ => (0..n).map(|k| lo + (hi - lo) * k as f64 / (n - 1) as f64).collect(),
    }
}

/// A way to make weights for prompts (`method = "<name>"`).
pub trait Sampler {
    /// The loss range the targets are placed in: the train split's `val_loss` range the method knows.
    fn loss_range(&self) -> (f64, f64);
    /// The architecture of the models it makes.
    fn arch(&self) -> &str;
    /// One task's models, `grid.len() × draws` of them, target-major, drawn from `rng` (seeded by the
    /// stage's `seed` and the task).
    fn make(&self, task: &Task, grid: &[f64], draws: usize, rng: &mut ChaCha8Rng) -> Result<Vec<NamedTensors>, StageError>;
    /// Entries the method adds to `metrics.json`, given the prompted tasks.
    fn metrics(&self, prompted: &[&Task]) -> serde_json::Map<String, serde_json::Value> {
        let _ = prompted;
        serde_json::Map::new()
    }
}

/// A sampling method: its name, the input slots it reads, its own parameters, and how it is built.
pub struct Method {
    pub name: &'static str,
    /// `(slot, what it is for)`.
    pub inputs: &'static [(&'static str, &'static str)],
    pub params: &'static [Param],
    /// Checks its own parameters before anything runs.
    pub validate: fn(Params) -> Result<(), StageError>,
    pub load: LoadSampler,
}

/// How a [`Method`] builds its sampler from the stage's inputs and parameters.
pub type LoadSampler = fn(&MethodInputs, Params) -> Result<Box<dyn Sampler>, StageError>;

/// [`Method::validate`] for a method without parameters of its own.
fn nothing_to_check(_: Params) -> Result<(), StageError> {
    Ok(())
}

/// Every method, in the order `wspace kinds` lists them.
pub const METHODS: &[Method] = &[align::METHOD, generator::METHOD, kde::METHOD, flow::METHOD];

/// The methods' names: the choices of `method`.
const METHOD_NAMES: [&str; METHODS.len()] = {
    let mut names = [""; METHODS.len()];
    let mut i = 0;
    while i < METHODS.len() {
        names[i] = METHODS[i].name;
        i += 1;
    }
    names
};

/// The stage's connected inputs, as a method asks for them, and the device its networks load onto.
pub struct MethodInputs<'a> {
    method: &'static str,
    inputs: &'a BTreeMap<String, PathBuf>,
    pub device: Device,
}

impl MethodInputs<'_> {
    /// The input `slot`, which the method needs.
    pub fn need(&self, slot: &str) -> Result<&Path, StageError> {
        self.inputs
            .get(slot)
            .map(PathBuf::as_path)
            .ok_or_else(|| StageError::input(slot, format!("must be connected: method `{}` reads it", self.method)))
    }
}

choice_enum! {
    /// `loss_control`: whether each sample's head is scaled to its target loss.
    pub enum LossControl { None = "none", Scale = "scale" }
}

choice_enum! {
    /// `prompts`: whose tasks are prompted.
    pub enum Prompts { Test = "test", Train = "train" }
}

const METHOD: Param = Param::choice("method", &METHOD_NAMES, METHOD_NAMES[0], "how weights are made (see the stage doc)");
params! {
    TARGETS = "targets": Int = 5, "target losses per task, evenly spaced over the train split's val_loss range";
    TARGET_LOSSES = "target_losses": [Float] = [], "explicit target losses instead of the grid; each must lie in the zoo's range";
    SAMPLES_PER_PROMPT = "samples_per_prompt": Int = 1, "draws per task × target";
    LOSS_CONTROL = "loss_control": choice(LossControl) = "none", "\"scale\": scale each sample's head so that its loss on training images of its task is the target";
    CALIBRATION_IMAGES = "calibration_images": Int = 256, "loss_control = \"scale\": training images per task";
    SEED = "seed": Int = 0, "seeds the draws";
    PROMPTS = "prompts": choice(Prompts) = "test", "whose tasks are prompted: test (unseen triplets) or train (the zoo's own tasks)";
}
/// The kind's parameters before the methods' own.
const PARAMS: &[Param] =
    &[METHOD, TARGETS, TARGET_LOSSES, SAMPLES_PER_PROMPT, LOSS_CONTROL, CALIBRATION_IMAGES, SEED, PROMPTS, DEVICE];

/// The checked parameters of a `sample` stage.
#[derive(Clone)]
pub struct SampleOptions {
    pub method: &'static Method,
    pub targets: usize,
    /// Explicit target losses (instead of the grid) when non-empty.
    pub target_losses: Vec<f64>,
    pub samples_per_prompt: usize,
    /// `Some(n)`: scale each sample's head to its target loss on `n` training images of its task.
    pub calibrate: Option<usize>,
    pub seed: u64,
    /// Whose tasks are prompted.
    pub prompts: TaskSplit,
    /// Where the method's networks run.
    pub device: DeviceName,
}

impl SampleOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        let name = p.str(&METHOD)?;
        let method = METHODS
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| StageError::param(METHOD.name, format!("is unknown: `{name}`")))?;
        (method.validate)(p)?;
        Ok(SampleOptions {
            method,
            targets: p.positive(&TARGETS)?,
            target_losses: p.float_list(&TARGET_LOSSES)?,
            samples_per_prompt: p.positive(&SAMPLES_PER_PROMPT)?,
            calibrate: match p.choice(&LOSS_CONTROL)? {
                LossControl::Scale => Some(p.positive(&CALIBRATION_IMAGES)?),
                LossControl::None => None,
            },
            seed: p.seed(&SEED)?,
            prompts: match p.choice(&PROMPTS)? {
                Prompts::Test => TaskSplit::Test,
                Prompts::Train => TaskSplit::Train,
            },
            device: crate::device::check(p)?,
        })
    }

    /// The target losses for a method whose train split spans `[lo, hi]`.
    pub fn grid(&self, lo: f64, hi: f64) -> Result<Vec<f64>, StageError> {
        if self.target_losses.is_empty() {
            return Ok(target_grid(lo, hi, self.targets));
        }
        match self.target_losses.iter().find(|&&t| !(lo..=hi).contains(&t)) {
            Some(t) => Err(StageError::param(
                "target_losses",
                format!("{t} is outside the zoo's loss range [{lo:.4}, {hi:.4}] (the train split's val_loss): refused"),
            )),
            None => Ok(self.target_losses.clone()),
        }
    }
}

/// Mean cross-entropy of logits `u` (rows of 3) scaled by `s`, with `labels`, in f64.
fn scaled_ce(u: &[[f32; 3]], labels: &[u8], s: f64) -> f64 {
    let mut sum = 0.0;
    for (z, &y) in u.iter().zip(labels) {
        let v = z.map(|x| s * x as f64);
        let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        sum += m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - v[y as usize];
    }
    sum / labels.len().max(1) as f64
}

/// The head scale `s ≥ 0` at which logits `u` have mean cross-entropy `target` on `labels`.
///
/// `ce(s)` is convex with `ce(0) = ln 3`; it falls to its minimum at `s*` (found by ternary search on
/// `[0, 1000]`) and is monotone on `[0, s*]`, where bisection finds the target. A target above ln 3 gives
/// 0 (uniform outputs), one below `ce(s*)` gives `s*` (the nearest reachable loss).
pub fn head_scale(u: &[[f32; 3]], labels: &[u8], target: f64) -> f64 {
    let ce = |s: f64| scaled_ce(u, labels, s);
    let (mut lo, mut hi) = (0.0f64, 1000.0f64);
    for _ in 0..200 {
        let (a, b) = (lo + (hi - lo) / 3.0, hi - (hi - lo) / 3.0);
        if ce(a) <= ce(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    let best = 0.5 * (lo + hi);
    if target <= ce(best) {
        return best;
    }
    if target >= ce(0.0) {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, best);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if ce(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Scales a cnn-s's head (`fc2.weight`, `fc2.bias`: the logits) by `s`.
fn scale_head(w: &mut NamedTensors, s: f64) {
    for t in w.iter_mut().filter(|t| t.name == "fc2.weight" || t.name == "fc2.bias") {
        t.values.iter_mut().for_each(|x| *x = (*x as f64 * s) as f32);
    }
}

/// The per-draw RNG of a task.
fn draw_rng(seed: u64, task: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The population std of each coordinate of `rows` (`n × k`, row-major).
pub(crate) fn coordinate_std(rows: &[f32], k: usize) -> Vec<f32> {
    let n = (rows.len() / k.max(1)).max(1) as f64;
    (0..k)
        .map(|i| {
            let col = rows.iter().skip(i).step_by(k);
            let mean = col.clone().map(|&v| v as f64).sum::<f64>() / n;
            (col.map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32
        })
        .collect()
}

pub fn run_sample(ctx: &StageContext, opts: &SampleOptions) -> Result<serde_json::Value, StageError> {
    let tasks = Tasks::load(ctx.input("tasks")?)?;
    let draws = opts.samples_per_prompt;
    let inputs = MethodInputs { method: opts.method.name, inputs: ctx.inputs, device: crate::device::open_name(opts.device)? };
    let sampler = (opts.method.load)(&inputs, ctx.view())?;
    let ((lo, hi), arch) = (sampler.loss_range(), sampler.arch().to_string());
    let grid = opts.grid(lo, hi)?;
    let data =
        match opts.calibrate {
            Some(_) if arch != "cnn-s" => {
                return Err(StageError::param("loss_control", format!("\"scale\" runs cnn-s models; the samples are `{arch}`")))
            }
            Some(_) => Some(Dataset::load(ctx.inputs.get("data").ok_or_else(|| {
                StageError::input("data", "must be connected: `loss_control` = \"scale\" reads training images")
            })?)?),
            None => None,
        };
    let out = ctx.out;
    std::fs::create_dir_all(out.join("samples")).map_err(|e| StageError::io(out.join("samples"), e))?;
    let mut rows = Vec::new();
    let prompted: Vec<_> = tasks.split(opts.prompts).collect();
    if prompted.is_empty() {
        return Err(StageError::param(
            "prompts",
            format!("the `tasks` input has no {}-split tasks to prompt", opts.prompts.as_str()),
        ));
    }
    ctx.progress.start(prompted.len() as u64, "tasks");
    for task in &prompted {
        wspace_stage_api::check_stop()?;
        let mut weights = sampler.make(task, &grid, draws, &mut draw_rng(opts.seed, task.id))?;
        let calibration = match (opts.calibrate, &data) {
            (Some(n), Some(data)) => Some(task_probe_images(task, data, n)?),
            _ => None,
        };
        for (i, w) in weights.iter_mut().enumerate() {
            let (k, draw) = (i / draws, i % draws);
            let mut scale = 1.0;
            if let Some((images, labels)) = &calibration {
                let net = CnnS::from_named_tensors(w.triples()).map_err(|e| StageError::msg(e.to_string()))?;
                scale = head_scale(&nn::logits_f32(&net, images), labels, grid[k]);
                scale_head(w, scale);
            }
            let file = format!("samples/t{:04}-{k}-{draw}.safetensors", task.id);
            w.write(&out.join(&file))?;
            rows.push(SampleRow {
                sample: rows.len(),
                prompt: rows.len() / draws,
                draw,
                task_id: task.id,
                class_0: task.classes[0],
                class_1: task.classes[1],
                class_2: task.classes[2],
                target_loss: grid[k],
                head_scale: scale,
                file,
            });
        }
        ctx.progress.inc(1);
    }
    tensors::write_records(&out.join("samples.csv"), &rows)?;
    let mut metrics = json!({
        "method": opts.method.name,
        "prompt_split": opts.prompts.as_str(),
        "samples": rows.len(),
        "prompts": rows.len() / draws,
        "tasks": prompted.len(),
        "targets": grid.len(),
        "samples_per_prompt": draws,
        "loss_min": lo,
        "loss_max": hi,
        "arch": arch,
    });
    for (key, value) in sampler.metrics(&prompted) {
        metrics[key] = value;
    }
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
        3
    }
    fn summary(&self) -> &'static str {
        "P(W | D, R): weights for every test task × target loss × draw, by the align method, a generator, or SANE's KDE"
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut specs = Param::specs(PARAMS);
        specs.extend(METHODS.iter().flat_map(|m| Param::specs(m.params)));
        specs
    }
    fn inputs(&self) -> Inputs {
        let mut slots = vec![("tasks", true, "the `tasks` stage (which tasks are test tasks)")];
        for &(slot, doc) in METHODS.iter().flat_map(|m| m.inputs) {
            if !slots.iter().any(|s| s.0 == slot) {
                slots.push((slot, false, doc));
            }
        }
        slots.push(("data", false, "loss_control = \"scale\": the zoo's `dataset` stage (training images)"));
        Inputs::Slots(slots)
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        SampleOptions::from_params(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = SampleOptions::from_params(ctx.view())?;
        ctx.progress.message("sampling");
        run_sample(ctx, &opts)?;
        Ok(())
    }
}
