//! The `evaluate-reconstruction` stage: how much of each test-split model survives the weight encoder,
//! in weight space and in function (the thesis's Table 4.1).
//!
//! # What is compared
//! For every coefficient row of the `pca` input whose split is `split` (default `test`: models no fit
//! has seen), the original model (the zoo's weights) against its reconstructions:
//! - `pca`: inverse PCA of its own coefficients (the loss of the PCA alone);
//! - `pca_ae`: encoder → latent → decoder → inverse PCA (the whole weight encoder; present when the
//!   `autoencoder` input is connected), so the two losses can be told apart;
//! - `tokens_ae`, `tokens_ae_refined` in place of `pca_ae`, `pca_ae_refined` when the `autoencoder`
//!   input is a token transformer (`architecture = "transformer"`): tokens → transformer → latent →
//!   transformer decoder → detokenised weights (the PCA is then only the `pca` reference);
//! - `pca_ae_refined` (with `refine_steps` > 0): the `pca_ae` latent after latent refinement
//!   ([`super::behaviour::refine`]: Adam steps on the latent through the frozen decoder, matching the
//!   original's outputs on `probe_images` of its task's *training* images — never the test images
//!   scored here). It uses the original model's outputs, so it is reported apart from pure decoding;
//! - `mean`: the decoded mean train coefficient vector, ≈ the train models' mean weights — the
//!   reference a reconstruction must beat to carry any model-specific information.
//!
//! # Metrics, per model and reconstruction
//! - `weight_mse`: mean over all weights of `(w − ŵ)²`.
//! - on (a) `synthetic` inputs — `synthetic_images` images of i.i.d. U(0, 1) pixels (ChaCha8, `seed`),
//!   the same for every model, as the thesis's random images — and (b) `real` inputs — the model's own
//!   task test images (pixels/255): `agreement` (fraction of inputs where both argmaxes agree),
//!   `correlation` (Pearson correlation of the pre-softmax outputs across inputs, per output unit, averaged
//!   over the K units, `cov / (σσ' + 1e-8)` as the thesis computes it), `cosine` (cosine similarity of the
//!   two K-vectors per input, averaged), `output_mse`. K = 3 for the project's zoos.
//! - real inputs only: `accuracy` of the reconstruction; `original_accuracy` of the original.
//!
//! **Imported zoos** (`zoo-import`: e.g. `cnn-s-c10-tanh`, `small-cnn-relu`, run by their own forward
//! pass, [`crate::import::arch`]): leave the `tasks` input out, and a model's task is every class of
//! the `data` input, in label order (its real inputs: the whole test split), as the published zoos
//! were trained; the networks must then have one output per class of `data`, or the stage asks for
//! `tasks`. Latent refinement needs `tasks` (and `cnn-s`).
//!
//! Reconstructions of BatchNorm architectures (`resnet18`) have their running statistics refit on the
//! first 256 of the task's *training* images before they are compared (the `mean` reference is not
//! refit: it stands for "no information about the model"). Inputs are pixels/255 without per-channel
//! normalisation, except where the zoo records its source's preprocessing (an imported zoo's
//! `zoo.json` `input`: `(pixel/255 − mean) / std`).
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `decoded/m<id>-<checkpoint>-<variant>.safetensors` | every reconstruction's weights, with the zoo's tensor names and shapes (`decoded/mean.safetensors`: the `mean` reference) |
//! | `reconstruction.csv` | one row per (model, reconstruction): `model_id, checkpoint, task_id, variant, file (its weights, relative to the output), weight_mse, synthetic_agreement, synthetic_correlation, synthetic_cosine, synthetic_output_mse, real_agreement, real_correlation, real_cosine, real_output_mse, original_accuracy, accuracy` |
//! | `metrics.json` | `models`, `original_accuracy`, and per variant `weight_mse`, `synthetic.{agreement, correlation, cosine}`, `real.{agreement, correlation, cosine, accuracy}` (means); the per-model values as arrays under `distributions` (arrays are not sweep-table columns) |
//! | `agreement.svg` | real-data agreement per model, sorted (x = rank, y = agreement), one line per variant (`pca` blue, `pca_ae` orange, `pca_ae_refined` green, `tokens_ae` red, `tokens_ae_refined` purple, `mean` grey), legend |
//! | `correlation.svg` | the same for the real-data output correlation |

use std::collections::BTreeMap;
use std::path::Path;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::json;
use wspace_stage_api::{choice_enum, params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use super::behaviour;
use super::codec::{self, Codec, RefineOptions};
use super::network::Network;
use super::pca::{mse, Coefficients, WeightPca};
use crate::data::{Dataset, TaskSplit, Tasks};
use crate::device::{DeviceName, DEVICE};
use crate::nn::argmax;
use crate::plot::{self, Chart, Series};
use crate::resnet::InputTransform;
use crate::tensors::{self, csv_row, NamedTensors};
use crate::zoo::store::{Zoo, ZooRow};

/// The functional comparison of two models on one set of inputs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OutputAgreement {
    pub agreement: f64,
    pub correlation: f64,
    pub cosine: f64,
    pub output_mse: f64,
}

/// Compares the outputs `a` (original) and `b` (reconstruction) on the same inputs (see the module doc);
/// every row has the networks' `K` outputs.
pub fn compare_outputs<T: AsRef<[f32]>>(a: &[T], b: &[T]) -> OutputAgreement {
    let n = a.len().min(b.len());
    let k = a.first().map_or(0, |x| x.as_ref().len());
    if n == 0 || k == 0 {
        return OutputAgreement { agreement: f64::NAN, correlation: f64::NAN, cosine: f64::NAN, output_mse: f64::NAN };
    }
    let (a, b): (Vec<&[f32]>, Vec<&[f32]>) = (a.iter().map(AsRef::as_ref).collect(), b.iter().map(AsRef::as_ref).collect());
    let agree = a.iter().zip(&b).filter(|(x, y)| argmax(x) == argmax(y)).count();
    let mut correlation = 0.0;
    for u in 0..k {
        let ma = a.iter().map(|x| x[u] as f64).sum::<f64>() / n as f64;
        let mb = b.iter().map(|x| x[u] as f64).sum::<f64>() / n as f64;
        let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(&b) {
            let (p, q) = (x[u] as f64 - ma, y[u] as f64 - mb);
            cov += p * q;
            va += p * p;
            vb += q * q;
        }
        correlation += cov / ((va * vb).sqrt() + 1e-8) / k as f64;
    }
    let mut cosine = 0.0;
    let mut out_mse = 0.0;
    for (x, y) in a.iter().zip(&b) {
        let dot: f64 = (0..k).map(|u| x[u] as f64 * y[u] as f64).sum();
        let nx: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        cosine += dot / (nx * ny).max(1e-8) / n as f64;
        out_mse += (0..k).map(|u| (x[u] as f64 - y[u] as f64).powi(2)).sum::<f64>() / (k * n) as f64;
    }
    OutputAgreement { agreement: agree as f64 / n as f64, correlation, cosine, output_mse: out_mse }
}

/// One model × reconstruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub variant: &'static str,
    /// The decoded weights, relative to the stage output (`decoded/…`).
    pub file: String,
    pub weight_mse: f64,
    pub synthetic: OutputAgreement,
    pub real: OutputAgreement,
    pub original_accuracy: f64,
    pub accuracy: f64,
}

/// `n` synthetic images of i.i.d. U(0, 1) pixels, `len` values each.
pub fn synthetic_images(n: usize, len: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n * len).map(|_| crate::sampling::uniform_f32(&mut rng)).collect()
}

/// The evaluation's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluateOptions {
    pub synthetic_images: usize,
    pub seed: u64,
    /// Whose models are compared: `test` (held out from every fit; the default), or `train` / `val`
    /// (to measure how much of a gap is generalisation).
    pub split: TaskSplit,
    /// Latent refinement (the `pca_ae_refined` variant); `steps = 0` turns it off.
    pub refine: RefineOptions,
    /// Where the codec's networks run (encoding, decoding, refinement).
    pub device: DeviceName,
}

choice_enum! {
    /// `split`: whose models are compared.
    pub enum Split { Test = "test", Val = "val", Train = "train" }
}

params! {
    SYNTHETIC_IMAGES = "synthetic_images": Int = 256, "random U(0,1) images for the synthetic comparison";
    SEED = "seed": Int = 0, "seeds the synthetic images";
    SPLIT = "split": choice(Split) = "test", "whose models are compared: test (held out from every fit), or val / train (the fit's own, to measure the generalisation gap)";
    REFINE_STEPS = "refine_steps": Int = 0, "latent refinement: Adam steps on each test model's latent to match its outputs on probe images (0: off; adds the `pca_ae_refined` variant)";
    REFINE_LR = "refine_lr": Float = 0.05, "latent refinement: Adam learning rate";
    PROBE_IMAGES = "probe_images": Int = 128, "latent refinement: training images of each model's own task whose outputs are matched";
    TEMPERATURE = "temperature": Float = 2.0, "latent refinement: distillation temperature";
}
/// The kind's parameters, in the order `wspace kinds` lists them.
const PARAMS: &[Param] = &[SYNTHETIC_IMAGES, SEED, SPLIT, REFINE_STEPS, REFINE_LR, PROBE_IMAGES, TEMPERATURE, DEVICE];

impl EvaluateOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        let refine = RefineOptions {
            steps: p.count(&REFINE_STEPS)?,
            lr: p.positive_float(&REFINE_LR)?,
            probe_images: p.positive(&PROBE_IMAGES)?,
            temperature: p.positive_float(&TEMPERATURE)? as f32,
            label_weight: 0.0,
        };
        let split = match p.choice(&SPLIT)? {
            Split::Train => TaskSplit::Train,
            Split::Val => TaskSplit::Val,
            Split::Test => TaskSplit::Test,
        };
        Ok(EvaluateOptions {
            synthetic_images: p.positive(&SYNTHETIC_IMAGES)?,
            seed: p.seed(&SEED)?,
            split,
            refine,
            device: crate::device::check(p)?,
        })
    }
}

/// A task's test images (u8) with labels in the model's output order. Without `tasks` (an imported
/// zoo), a model's task is every class of `data`, in label order.
fn task_test_images(row: &ZooRow, tasks: Option<&Tasks>, data: &Dataset) -> Result<(Vec<u8>, Vec<u8>), StageError> {
    let Some(tasks) = tasks else {
        let labels = data.test.labels.iter().map(|&l| l as u8).collect();
        return Ok((data.test.images.clone(), labels));
    };
    let task = tasks
        .tasks
        .get(row.task_id)
        .ok_or_else(|| StageError::input("tasks", format!("has no task {} (of zoo model {})", row.task_id, row.model_id)))?;
    if task.classes != row.classes() {
        return Err(StageError::input(
            "tasks",
            format!(
                "is not the one the zoo was trained on: zoo model {} has classes {:?}, task {} has {:?}",
                row.model_id,
                row.classes(),
                task.id,
                task.classes
            ),
        ));
    }
    let mut images = Vec::with_capacity(task.test.len() * data.test.image_len);
    let mut labels = Vec::with_capacity(task.test.len());
    for &i in &task.test {
        let Some(label) = data.test.labels.get(i).and_then(|&l| task.local_label(l)) else {
            return Err(StageError::msg(format!("task {}: test image {i} is missing or not of the task's classes", task.id)));
        };
        images.extend_from_slice(data.test.image(i));
        labels.push(label as u8);
    }
    Ok((images, labels))
}

/// Calibration images for normalisation refits: the first [`CALIBRATION_IMAGES`] of the task's
/// training images (without `tasks`: of the dataset's), never its test images.
const CALIBRATION_IMAGES: usize = 256;

fn calibration_images(row: &ZooRow, tasks: Option<&Tasks>, data: &Dataset) -> Vec<u8> {
    let indices: Vec<usize> = match tasks {
        Some(tasks) => {
            tasks.tasks.get(row.task_id).map(|t| t.train.iter().copied().take(CALIBRATION_IMAGES).collect()).unwrap_or_default()
        }
        None => (0..data.train.len().min(CALIBRATION_IMAGES)).collect(),
    };
    indices.into_iter().filter(|&i| i < data.train.len()).flat_map(|i| data.train.image(i).to_vec()).collect()
}

/// A decoded network for `data`'s images (preprocessed by `input`), its normalisation statistics refit on `calibration`
/// (BatchNorm architectures; see [`super::decode`]).
fn decoded(
    arch: &str,
    weights: &NamedTensors,
    (data, input): (&Dataset, InputTransform),
    calibration: &[u8],
) -> Result<Network, StageError> {
    let mut net = Network::build(arch, weights)?.with_input(data.image_shape(), input);
    if let Network::ResNet18 { .. } = net {
        net.refit_normalisation(calibration)?;
    }
    Ok(net)
}

/// Compares one original network with one reconstruction.
fn compare(
    variant: &'static str,
    file: String,
    original: (&[f32], &Network),
    reconstruction: (&[f32], &Network),
    synthetic: &[f32],
    real: (&[u8], &[u8]),
) -> Result<Comparison, StageError> {
    let (w, net) = original;
    let (w_hat, rec) = reconstruction;
    let real_a = net.logits_u8(real.0)?;
    let real_b = rec.logits_u8(real.0)?;
    Ok(Comparison {
        variant,
        file,
        weight_mse: mse(w, w_hat),
        synthetic: compare_outputs(&net.logits_f32(synthetic)?, &rec.logits_f32(synthetic)?),
        real: compare_outputs(&real_a, &real_b),
        original_accuracy: accuracy(&real_a, real.1),
        accuracy: accuracy(&real_b, real.1),
    })
}

fn accuracy(logits: &[Vec<f32>], labels: &[u8]) -> f64 {
    logits.iter().zip(labels).filter(|(l, y)| argmax(l) == **y as usize).count() as f64 / labels.len().max(1) as f64
}

/// What every model is compared with besides its own reconstructions: the `mean` reference (the
/// decoded mean train coefficients, as a network of each architecture the zoo holds: an imported zoo
/// of several activations, `mixed:a,b`, runs each model as its own `arch`) and the synthetic images.
struct References {
    mean_weights: Vec<f32>,
    mean_nets: BTreeMap<String, Network>,
    synthetic: Vec<f32>,
}

impl References {
    /// Also writes `decoded/mean.safetensors`.
    /// `with_tasks`: whether the `tasks` input is connected (without it, the networks must have one
    /// output per class of `data`).
    fn new(
        pca: &WeightPca,
        (data, input): (&Dataset, InputTransform),
        with_tasks: bool,
        opts: &EvaluateOptions,
        out: &Path,
    ) -> Result<References, StageError> {
        let decoded_dir = out.join("decoded");
        std::fs::create_dir_all(&decoded_dir).map_err(|e| StageError::io(&decoded_dir, e))?;
        let mean = pca.decode(&pca.coefficient_mean)?;
        mean.write(&decoded_dir.join("mean.safetensors"))?;
        let mean_nets: BTreeMap<String, Network> = crate::import::arch::members(&pca.arch)
            .into_iter()
            .map(|arch| Ok((arch.to_string(), Network::build(arch, &mean)?.with_input(data.image_shape(), input))))
            .collect::<Result<_, StageError>>()?;
        // The members share their tensors, inputs and outputs: the checks read the first.
        let (arch, mean_net) = mean_nets.iter().next().expect("an architecture has at least one member");
        let image_len = mean_net.image_len();
        if data.test.image_len != image_len {
            return Err(StageError::input(
                "data",
                format!("has images of {} values, `{}` takes {image_len}", data.test.image_len, pca.arch),
            ));
        }
        let synthetic = synthetic_images(opts.synthetic_images, image_len, opts.seed);
        if !with_tasks {
            // Each model's task is every class of `data`: one output per class.
            let outputs = mean_net.logits_f32(&synthetic[..image_len])?.first().map_or(0, Vec::len);
            let classes = data.meta.classes.len();
            if outputs != classes {
                return Err(StageError::input(
                    "tasks",
                    format!("must be connected: `{arch}` has {outputs} outputs and `data` {classes} classes, so a model's task cannot be all of its dataset"),
                ));
            }
        }
        Ok(References { mean_weights: mean.flat(), mean_nets, synthetic })
    }
}

/// Everything one model's comparisons read.
struct Sources<'a> {
    zoo: &'a Zoo,
    tasks: Option<&'a Tasks>,
    data: &'a Dataset,
    pca: &'a WeightPca,
    coefficients: &'a Coefficients,
    codec: Option<&'a dyn Codec>,
    references: &'a References,
    opts: &'a EvaluateOptions,
    out: &'a Path,
}

/// One test model (coefficient row `i`) against each of its reconstructions; `coded`: its latent and
/// its codec's decoding of it.
fn compare_model<'a>(
    x: &Sources<'a>,
    i: usize,
    coded: Option<(&[f32], &NamedTensors)>,
) -> Result<(&'a ZooRow, Vec<Comparison>), StageError> {
    wspace_stage_api::check_stop()?;
    let data = x.data;
    let r = &x.coefficients.meta.rows[i];
    let row = x.zoo.row_of(r)?;
    let arch = &row.arch;
    let weights = x.zoo.weights(row)?;
    let w: Vec<f32> = weights.flat();
    let input = x.zoo.meta.input.unwrap_or_default();
    let net = Network::build(arch, &weights)?.with_input(data.image_shape(), input);
    let real = task_test_images(row, x.tasks, data)?;
    let calibration = calibration_images(row, x.tasks, data);
    let real = (real.0.as_slice(), real.1.as_slice());
    let synthetic = &x.references.synthetic;
    let mut comparisons = Vec::new();
    let mut push = |variant: &'static str, weights: &NamedTensors| -> Result<(), StageError> {
        let file = format!("decoded/m{:05}-{}-{variant}.safetensors", row.model_id, row.checkpoint.as_str());
        weights.write(&x.out.join(&file))?;
        let rec = decoded(arch, weights, (data, input), &calibration)?;
        comparisons.push(compare(variant, file, (&w, &net), (&weights.flat(), &rec), synthetic, real)?);
        Ok(())
    };
    push("pca", &x.pca.decode(x.coefficients.row(i))?)?;
    if let (Some(codec), Some((latent, back))) = (x.codec, coded) {
        let [pure, refined] = codec.variants();
        push(pure, back)?;
        let o = x.opts.refine;
        if o.steps > 0 {
            let tasks = x
                .tasks
                .ok_or_else(|| StageError::input("tasks", "must be connected for latent refinement (`refine_steps` > 0)"))?;
            let probe = behaviour::load_probes(std::slice::from_ref(r), x.zoo, tasks, data, o.probe_images)?.remove(0);
            let better = codec.refine(latent, &probe, &o)?;
            push(refined, &codec.decode(&better)?.remove(0))?;
        }
    }
    let mean_net = x.references.mean_nets.get(arch.as_str()).ok_or_else(|| {
        StageError::input(
            "zoo",
            format!("model {} is `{arch}`, which its `zoo.json` arch `{}` does not name", row.model_id, x.pca.arch),
        )
    })?;
    let mean = (x.references.mean_weights.as_slice(), mean_net);
    comparisons.push(compare("mean", "decoded/mean.safetensors".into(), (&w, &net), mean, synthetic, real)?);
    Ok((row, comparisons))
}

/// Runs the evaluation and writes the stage output into `out`.
pub fn run_evaluation(
    zoo: &Zoo,
    pca_dir: &Path,
    autoencoder_dir: Option<&Path>,
    tasks: Option<&Tasks>,
    data: &Dataset,
    opts: &EvaluateOptions,
    out: &Path,
) -> Result<serde_json::Value, StageError> {
    let pca = WeightPca::load(pca_dir)?;
    let device = crate::device::open_name(opts.device)?;
    let codec = autoencoder_dir.map(|d| codec::load(pca_dir, d, &device)).transpose()?;
    let coefficients = Coefficients::load(pca_dir)?;
    let test = coefficients.split(opts.split);
    if test.is_empty() {
        return Err(StageError::input("pca", format!("has no {}-split models", opts.split.as_str())));
    }
    if opts.refine.steps > 0 {
        if codec.is_none() {
            return Err(StageError::param("refine_steps", "> 0 needs the `autoencoder` input (it refines latents)"));
        }
        behaviour::check_arch(&pca.arch, "latent refinement")?;
    }
    let references = References::new(&pca, (data, zoo.meta.input.unwrap_or_default()), tasks.is_some(), opts, out)?;
    // Every test model through the codec at once: its latent, and their decoding.
    let (latents, back) = match &codec {
        Some(c) => {
            let weights: Vec<NamedTensors> =
                test.iter().map(|&i| zoo.weights(zoo.row_of(&coefficients.meta.rows[i])?)).collect::<Result<_, _>>()?;
            let latents = c.encode(&weights.iter().collect::<Vec<_>>())?;
            let back = c.decode(&latents)?;
            (latents, back)
        }
        None => (Vec::new(), Vec::new()),
    };
    let k = codec.as_ref().map_or(0, |c| c.latent_dim());
    let x = Sources {
        zoo,
        tasks,
        data,
        pca: &pca,
        coefficients: &coefficients,
        codec: codec.as_deref(),
        references: &references,
        opts,
        out,
    };
    let results: Vec<(&ZooRow, Vec<Comparison>)> = test
        .par_iter()
        .enumerate()
        .map(|(t, &i)| compare_model(&x, i, back.get(t).map(|b| (&latents[t * k..(t + 1) * k], b))))
        .collect::<Result<_, _>>()?;
    write_comparisons(&out.join("reconstruction.csv"), &results)?;
    let (metrics, per_variant) = summarise(&results);
    tensors::write_json(&out.join("metrics.json"), &metrics)?;
    write_plots(out, &per_variant)?;
    Ok(metrics)
}

/// `reconstruction.csv`: one row per model and reconstruction.
fn write_comparisons(path: &Path, results: &[(&ZooRow, Vec<Comparison>)]) -> Result<(), StageError> {
    let mut csv_rows = Vec::new();
    for (row, cs) in results {
        for c in cs {
            let (s, r) = (c.synthetic, c.real);
            csv_rows.push(csv_row![
                row.model_id,
                row.checkpoint.as_str(),
                row.task_id,
                c.variant,
                c.file,
                c.weight_mse,
                s.agreement,
                s.correlation,
                s.cosine,
                s.output_mse,
                r.agreement,
                r.correlation,
                r.cosine,
                r.output_mse,
                c.original_accuracy,
                c.accuracy
            ]);
        }
    }
    tensors::write_csv(
        path,
        &[
            "model_id",
            "checkpoint",
            "task_id",
            "variant",
            "file",
            "weight_mse",
            "synthetic_agreement",
            "synthetic_correlation",
            "synthetic_cosine",
            "synthetic_output_mse",
            "real_agreement",
            "real_correlation",
            "real_cosine",
            "real_output_mse",
            "original_accuracy",
            "accuracy",
        ],
        csv_rows,
    )
}

/// Per-model values of each metric, per variant.
type PerVariant = BTreeMap<&'static str, BTreeMap<&'static str, Vec<f64>>>;

/// `metrics.json` (means per variant, and the per-model values under `distributions`), and the
/// per-model values the plots draw.
fn summarise(results: &[(&ZooRow, Vec<Comparison>)]) -> (serde_json::Value, PerVariant) {
    let num = |v: f64| if v.is_finite() { json!(v) } else { serde_json::Value::Null };
    let variants: Vec<&'static str> = results[0].1.iter().map(|c| c.variant).collect();
    let mut metrics = serde_json::Map::new();
    let mut distributions = serde_json::Map::new();
    metrics.insert("models".into(), json!(results.len()));
    let original: Vec<f64> = results.iter().map(|(_, cs)| cs[0].original_accuracy).collect();
    metrics.insert("original_accuracy".into(), num(mean(&original)));
    distributions.insert("original_accuracy".into(), json!(original));
    let mut per_variant = PerVariant::new();
    for (vi, v) in variants.iter().enumerate() {
        let get = |f: &dyn Fn(&Comparison) -> f64| results.iter().map(|(_, cs)| f(&cs[vi])).collect::<Vec<f64>>();
        let cols: BTreeMap<&'static str, Vec<f64>> = [
            ("weight_mse", get(&|c| c.weight_mse)),
            ("synthetic.agreement", get(&|c| c.synthetic.agreement)),
            ("synthetic.correlation", get(&|c| c.synthetic.correlation)),
            ("synthetic.cosine", get(&|c| c.synthetic.cosine)),
            ("real.agreement", get(&|c| c.real.agreement)),
            ("real.correlation", get(&|c| c.real.correlation)),
            ("real.cosine", get(&|c| c.real.cosine)),
            ("real.accuracy", get(&|c| c.accuracy)),
        ]
        .into_iter()
        .collect();
        let mut m = serde_json::Map::new();
        let mut d = serde_json::Map::new();
        for (name, values) in &cols {
            match name.split_once('.') {
                Some((group, metric)) => {
                    let g = m.entry(group.to_string()).or_insert_with(|| json!({}));
                    g[metric] = num(mean(values));
                    let g = d.entry(group.to_string()).or_insert_with(|| json!({}));
                    g[metric] = json!(values);
                }
                None => {
                    m.insert(name.to_string(), num(mean(values)));
                    d.insert(name.to_string(), json!(values));
                }
            }
        }
        metrics.insert(v.to_string(), serde_json::Value::Object(m));
        distributions.insert(v.to_string(), serde_json::Value::Object(d));
        per_variant.insert(v, cols);
    }
    metrics.insert("distributions".into(), serde_json::Value::Object(distributions));
    (serde_json::Value::Object(metrics), per_variant)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// `agreement.svg` and `correlation.svg`: sorted per-model values, one line per variant.
fn write_plots(out: &Path, per_variant: &PerVariant) -> Result<(), StageError> {
    let colour = |v: &str| match v {
        "pca" => plot::BLUE,
        "pca_ae" => plot::ORANGE,
        "pca_ae_refined" => plot::GREEN,
        "tokens_ae" => plot::RED,
        "tokens_ae_refined" => plot::PURPLE,
        _ => plot::GREY,
    };
    for (file, key, title, y) in [
        (
            "agreement.svg",
            "real.agreement",
            "Real-data agreement with the original, per model",
            "agreement (fraction of test images)",
        ),
        (
            "correlation.svg",
            "real.correlation",
            "Real-data output correlation with the original, per model",
            "output correlation (Pearson r)",
        ),
    ] {
        let series = per_variant.iter().map(|(v, cols)| {
            let mut vals = cols[key].clone();
            vals.sort_by(f64::total_cmp);
            Series::line(*v, colour(v), vals.into_iter().enumerate().map(|(i, y)| (i as f64 + 1.0, y)).collect())
        });
        plot::write_chart(&out.join(file), &Chart::new(title, "model rank (sorted by value)", y).with_series(series))?;
    }
    Ok(())
}

/// `kind = "evaluate-reconstruction"`: see the [module doc](self).
pub struct EvaluateReconstructionKind;

impl StageKind for EvaluateReconstructionKind {
    fn name(&self) -> &'static str {
        "evaluate-reconstruction"
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "weight-space and functional agreement of test-split models with their PCA / PCA+AE reconstructions"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(PARAMS)
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("zoo", true, "the `zoo` stage the PCA was fitted on"),
            ("pca", true, "a `pca` stage"),
            ("autoencoder", false, "an `autoencoder` stage trained on `pca` (omit for PCA-only)"),
            ("tasks", false, "the zoo's `tasks` stage (omit for an imported zoo: each model's task is every class of `data`)"),
            ("data", true, "the zoo's `dataset` stage (an imported zoo: its source dataset, e.g. `format = \"idx\"`)"),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        EvaluateOptions::from_params(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = EvaluateOptions::from_params(ctx.view())?;
        let zoo = Zoo::load(ctx.input("zoo")?)?;
        let tasks = ctx.inputs.get("tasks").map(|t| Tasks::load(t)).transpose()?;
        let data = Dataset::load(ctx.input("data")?)?;
        let ae = ctx.inputs.get("autoencoder").map(|p| p.as_path());
        ctx.progress.message("comparing originals with reconstructions");
        run_evaluation(&zoo, ctx.input("pca")?, ae, tasks.as_ref(), &data, &opts, ctx.out)?;
        Ok(())
    }
}
