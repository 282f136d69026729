//! The `sample` stage: prompts → weights. For every task of the `prompts` split of the `tasks` input, every target
//! loss of a grid and `samples_per_prompt` draws, one model's weights, by the stage's `method`:
//! - `"align"` (the thesis): `z_proj = align(task embedding, target)` decoded by the weight codec
//!   (autoencoder decoder → de-normalisation → inverse PCA). Draw 0 is `z_proj` itself; draw `j ≥ 1`
//!   adds `N(0, (0.1·s_i)²)` to coordinate `i`, `s_i` the coordinate's std over the autoencoder's
//!   latents. Inputs `align`, `pca`, `autoencoder`, `embed`.
//! - `"generator"`: the `generator` stage's model ([`super::generator`]) with a fresh `ξ` per draw.
//!   Input `generator`.
//! - `"kde"` (SANE's sampling, for either weight codec): a draw is a train-split latent `h_c` of the
//!   `autoencoder` input's `latents.safetensors` chosen uniformly, plus `N(0, (bandwidth·s_i)²)` on
//!   coordinate `i` (`s_i` the coordinate's std over all train-split latents): a Gaussian kernel density
//!   estimate, decoded by the codec. The kernels are the train-split latents of the prompt's own task
//!   when the zoo has models of it (SANE's zero-shot sampling of a zoo's task: `prompts = "train"`), and
//!   all train-split latents otherwise (an unseen triplet: sampling that ignores the prompt). It ignores
//!   the target loss (loss control still applies). Inputs `pca`, `autoencoder`, `zoo` (the loss range).
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

use std::path::Path;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use wspace_stage_api::{Inputs, ParamSpec, ParamType, Params, StageContext, StageError, StageKind, Value};

use super::align::task_embeddings;
use super::generator::{Generator, Prompt};
use super::model::Aligner;
use crate::data::{Dataset, Task, TaskSplit, Tasks};
use crate::nn::{self, CnnS};
use crate::sampling::{below, normal_f32};
use crate::tensors::NamedTensors;
use crate::tensors::{self, TensorFile};
use crate::weights::behaviour::task_probe_images;
use crate::weights::{codec, Codec, Coefficients};
use crate::zoo::Zoo;

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

/// How the stage makes weights.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Align,
    Generator,
    Kde,
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Align => "align",
            Method::Generator => "generator",
            Method::Kde => "kde",
        }
    }
}

/// The checked parameters of a `sample` stage.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    pub method: Method,
    pub targets: usize,
    /// Explicit target losses (instead of the grid) when non-empty.
    pub target_losses: Vec<f64>,
    pub samples_per_prompt: usize,
    /// `Some(n)`: scale each sample's head to its target loss on `n` training images of its task.
    pub calibrate: Option<usize>,
    pub seed: u64,
    /// Whose tasks are prompted.
    pub prompts: TaskSplit,
    /// `kde`: kernel std as a fraction of each latent coordinate's std.
    pub bandwidth: f64,
}

impl SampleOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        let target_losses = p
            .param("target_losses")?
            .as_list()
            .unwrap_or(&[])
            .iter()
            .map(|v| v.as_f64().filter(|x| x.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| StageError::param("target_losses", "must be a list of finite numbers"))?;
        Ok(SampleOptions {
            method: match p.str("method")? {
                "generator" => Method::Generator,
                "kde" => Method::Kde,
                _ => Method::Align,
            },
            targets: p.positive("targets")?,
            target_losses,
            samples_per_prompt: p.positive("samples_per_prompt")?,
            calibrate: match p.str("loss_control")? {
                "scale" => Some(p.positive("calibration_images")?),
                _ => None,
            },
            seed: p.int("seed")? as u64,
            prompts: if p.str("prompts")? == "train" { TaskSplit::Train } else { TaskSplit::Test },
            bandwidth: p.positive_float("bandwidth")?,
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

/// Makes the weights of one task's prompts: `targets` × `draws`, target-major.
type Maker<'a> = Box<dyn Fn(&Task, &[f64], usize) -> Result<Vec<NamedTensors>, StageError> + 'a>;

/// The per-draw RNG of a task.
fn draw_rng(seed: u64, task: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The population std of each coordinate of `rows` (`n × k`, row-major).
fn coordinate_std(rows: &[f32], k: usize) -> Vec<f32> {
    let n = (rows.len() / k.max(1)).max(1) as f64;
    (0..k)
        .map(|i| {
            let col = rows.iter().skip(i).step_by(k);
            let mean = col.clone().map(|&v| v as f64).sum::<f64>() / n;
            (col.map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt() as f32
        })
        .collect()
}

/// The `align` method (see the module doc).
struct AlignMethod {
    al: Aligner,
    codec: Box<dyn Codec>,
    emb: Vec<f32>,
    dim: usize,
    /// Per-coordinate std of the autoencoder's latents.
    latent_std: Vec<f32>,
}

impl AlignMethod {
    fn load(align: &Path, pca: &Path, ae: &Path, embed: &Path) -> Result<Self, StageError> {
        let al = Aligner::load(align)?;
        let codec = codec::load(pca, ae)?;
        let k = codec.latent_dim();
        if k != al.config.latent_dim {
            return Err(StageError::msg(format!(
                "the align stage projects to {} dimensions but the autoencoder's latent has {k}",
                al.config.latent_dim
            )));
        }
        let (emb, dim) = task_embeddings(embed)?;
        if dim != al.config.dataset_dim {
            return Err(StageError::msg(format!(
                "embeddings are {dim}-d, the align stage was trained on {}-d",
                al.config.dataset_dim
            )));
        }
        let file = TensorFile::open(&ae.join("latents.safetensors"))?;
        let latents = file.f32_all()?.into_iter().find(|t| t.name == "latents").map(|t| t.values).unwrap_or_default();
        let latent_std = coordinate_std(&latents, k);
        Ok(AlignMethod { al, codec, emb, dim, latent_std })
    }

    fn make(&self, task: &Task, grid: &[f64], draws: usize, seed: u64) -> Result<Vec<NamedTensors>, StageError> {
        let (dim, k) = (self.dim, self.codec.latent_dim());
        let e = self
            .emb
            .get(task.id * dim..(task.id + 1) * dim)
            .ok_or_else(|| StageError::msg(format!("task {} has no embedding: the `embed` input is of other tasks", task.id)))?;
        let raw: Vec<f32> = grid.iter().flat_map(|_| e.iter().copied()).collect();
        let z = self.al.project(&raw, grid)?;
        let mut rng = draw_rng(seed, task.id);
        let mut all = Vec::with_capacity(grid.len() * draws * k);
        for zt in z.chunks(k) {
            for j in 0..draws {
                all.extend(
                    zt.iter().zip(&self.latent_std).map(|(v, s)| if j == 0 { *v } else { v + 0.1 * s * normal_f32(&mut rng) }),
                );
            }
        }
        self.codec.decode(&all)
    }
}

/// The `kde` method (see the module doc).
struct KdeMethod {
    codec: Box<dyn Codec>,
    /// Train-split latents, `n × k`.
    latents: Vec<f32>,
    /// Their task ids.
    tasks: Vec<usize>,
    /// Per-coordinate std over them.
    std: Vec<f32>,
    bandwidth: f32,
    /// The train split's `val_loss` range.
    range: (f64, f64),
}

impl KdeMethod {
    fn load(pca: &Path, ae: &Path, zoo: &Path, bandwidth: f64) -> Result<Self, StageError> {
        let codec = codec::load(pca, ae)?;
        let k = codec.latent_dim();
        let rows = Coefficients::load(pca)?.meta.rows;
        let file = TensorFile::open(&ae.join("latents.safetensors"))?;
        let all = file.f32("latents")?;
        if all.shape != [rows.len(), k] {
            return Err(StageError::msg(format!(
                "{}: `latents` is {:?} but the `pca` input has {} rows of latent {k}: the autoencoder was trained on another `pca`",
                file.path(),
                all.shape,
                rows.len()
            )));
        }
        let zoo = Zoo::load(zoo)?;
        let (mut latents, mut tasks, mut losses) = (Vec::new(), Vec::new(), Vec::new());
        for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.split == TaskSplit::Train) {
            latents.extend_from_slice(&all.values[i * k..(i + 1) * k]);
            tasks.push(r.task_id);
            losses.push(zoo.row_of(r)?.val_loss);
        }
        if tasks.is_empty() {
            return Err(StageError::msg("method `kde`: the `pca` input has no train-split rows to place kernels on"));
        }
        let std = coordinate_std(&latents, k);
        let range = losses.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &l| (lo.min(l), hi.max(l)));
        Ok(KdeMethod { codec, latents, tasks, std, bandwidth: bandwidth as f32, range })
    }

    /// The kernels of a task: its own train-split latents, or all of them when it has none.
    fn kernels(&self, task: usize) -> Vec<usize> {
        let own: Vec<usize> = (0..self.tasks.len()).filter(|&i| self.tasks[i] == task).collect();
        if own.is_empty() {
            (0..self.tasks.len()).collect()
        } else {
            own
        }
    }

    fn make(&self, task: &Task, grid: &[f64], draws: usize, seed: u64) -> Result<Vec<NamedTensors>, StageError> {
        let k = self.codec.latent_dim();
        let kernels = self.kernels(task.id);
        let mut rng = draw_rng(seed, task.id);
        let mut all = Vec::with_capacity(grid.len() * draws * k);
        for _ in 0..grid.len() * draws {
            let c = kernels[below(&mut rng, kernels.len() as u64) as usize];
            let centre = &self.latents[c * k..(c + 1) * k];
            all.extend(centre.iter().zip(&self.std).map(|(v, s)| v + self.bandwidth * s * normal_f32(&mut rng)));
        }
        self.codec.decode(&all)
    }
}

pub fn run_sample(ctx: &StageContext, opts: &SampleOptions) -> Result<serde_json::Value, StageError> {
    let tasks = Tasks::load(ctx.input("tasks")?)?;
    let need = |slot: &str| {
        ctx.inputs.get(slot).map(|p| p.as_path()).ok_or_else(|| {
            StageError::msg(format!("stage `{}`: method `{}` needs the `{slot}` input", ctx.stage, opts.method.name()))
        })
    };
    let draws = opts.samples_per_prompt;
    let seed = opts.seed;
    let mut own_task_prompts = 0;
    let (maker, (lo, hi), arch): (Maker, (f64, f64), String) = match opts.method {
        Method::Align => {
            let m = AlignMethod::load(need("align")?, need("pca")?, need("autoencoder")?, need("embed")?)?;
            let range = (m.al.config.loss_min, m.al.config.loss_max);
            let arch = m.codec.arch().to_string();
            (Box::new(move |t, g, d| m.make(t, g, d, seed)), range, arch)
        }
        Method::Generator => {
            let g = Generator::load(need("generator")?)?;
            let range = (g.config.loss_min, g.config.loss_max);
            let make = move |task: &Task, grid: &[f64], d: usize| -> Result<Vec<NamedTensors>, StageError> {
                let mut rng = draw_rng(seed, task.id);
                let prompts: Vec<Prompt> = grid
                    .iter()
                    .flat_map(|&t| (0..d).map(move |_| t))
                    .map(|t| Prompt { classes: task.classes, target_loss: t, xi: g.draw(&mut rng) })
                    .collect();
                Ok(g.generate(&prompts)?.iter().map(|m| m.named_tensors().into()).collect())
            };
            (Box::new(make), range, "cnn-s".to_string())
        }
        Method::Kde => {
            let m = KdeMethod::load(need("pca")?, need("autoencoder")?, need("zoo")?, opts.bandwidth)?;
            let (range, arch) = (m.range, m.codec.arch().to_string());
            own_task_prompts = tasks.split(opts.prompts).filter(|t| m.tasks.contains(&t.id)).count();
            (Box::new(move |t, g, d| m.make(t, g, d, seed)), range, arch)
        }
    };
    let grid = opts.grid(lo, hi)?;
    let data = match opts.calibrate {
        Some(_) if arch != "cnn-s" => {
            return Err(StageError::param("loss_control", format!("\"scale\" runs cnn-s models; the samples are `{arch}`")))
        }
        Some(_) => Some(Dataset::load(need("data")?)?),
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
        let mut weights = maker(task, &grid, draws)?;
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
    let path = out.join("samples.csv");
    let mut w = csv::Writer::from_path(&path).map_err(|e| StageError::msg(format!("{}: {e}", path.display())))?;
    for r in &rows {
        w.serialize(r).map_err(|e| StageError::msg(format!("{}: {e}", path.display())))?;
    }
    w.flush().map_err(|e| StageError::io(&path, e))?;
    let mut metrics = json!({
        "method": opts.method.name(),
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
    if opts.method == Method::Kde {
        metrics["bandwidth"] = json!(opts.bandwidth);
        metrics["kde_own_task_prompts"] = json!(own_task_prompts);
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
        use ParamType::*;
        vec![
            ParamSpec::optional(
                "method",
                Choice(&["align", "generator", "kde"]),
                Value::Str("align".into()),
                "how weights are made (see the stage doc)",
            ),
            ParamSpec::optional(
                "targets",
                Int,
                Value::Int(5),
                "target losses per task, evenly spaced over the train split's val_loss range",
            ),
            ParamSpec::optional(
                "target_losses",
                List(Box::new(Float)),
                Value::List(Vec::new()),
                "explicit target losses instead of the grid; each must lie in the zoo's range",
            ),
            ParamSpec::optional("samples_per_prompt", Int, Value::Int(1), "draws per task × target"),
            ParamSpec::optional(
                "loss_control",
                Choice(&["none", "scale"]),
                Value::Str("none".into()),
                "\"scale\": scale each sample's head so that its loss on training images of its task is the target",
            ),
            ParamSpec::optional("calibration_images", Int, Value::Int(256), "loss_control = \"scale\": training images per task"),
            ParamSpec::optional("seed", Int, Value::Int(0), "seeds the draws"),
            ParamSpec::optional(
                "prompts",
                Choice(&["test", "train"]),
                Value::Str("test".into()),
                "whose tasks are prompted: test (unseen triplets) or train (the zoo's own tasks)",
            ),
            ParamSpec::optional(
                "bandwidth",
                Float,
                Value::Float(0.1),
                "method kde: kernel std, as a fraction of each latent coordinate's std over the train split",
            ),
        ]
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("tasks", true, "the `tasks` stage (which tasks are test tasks)"),
            ("align", false, "method align: an `align` stage"),
            ("pca", false, "methods align, kde: the `pca` stage the autoencoder was trained on"),
            ("autoencoder", false, "methods align, kde: the `autoencoder` stage (its decoder; kde: its latents)"),
            ("zoo", false, "method kde: the zoo (the train split's loss range)"),
            ("embed", false, "method align: the `dataset-embed` stage the align stage used"),
            ("generator", false, "method generator: a `generator` stage"),
            ("data", false, "loss_control = \"scale\": the zoo's `dataset` stage (training images)"),
        ])
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
