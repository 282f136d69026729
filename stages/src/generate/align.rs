//! The `align` stage: trains the results encoder and the shared encoder ([`super::model`]) with NT-Xent
//! ([`crate::ntxent`]) against the autoencoder's (fixed) weight latents.
//!
//! # Pairs
//! One pair per row of the `pca` input (its `pca.json` `rows`, in order = the rows of the autoencoder's
//! `latents.safetensors`): prompt = (the row's task embedding from `dataset-embed`, the zoo's `val_loss`
//! of that model and checkpoint), target = the row's weight latent. The loss bins span the train split's
//! `val_loss` range; the dataset embeddings are standardised with the train rows' mean and standard
//! deviation (floored at 1e-3).
//!
//! # Training
//! AdamW on the train-split pairs, mini-batches from a ChaCha8 (`seed`) Fisher–Yates shuffle per epoch
//! (a last batch of one pair is skipped: NT-Xent needs negatives). After each epoch the val NT-Xent is
//! computed over all val pairs at once; training stops after `patience` epochs without improvement and
//! keeps the best val epoch's weights (all `epochs` and the last weights without val pairs).
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `align.safetensors`, `align.json` | the trained encoders ([`super::model::Aligner::save`]); `align.json` adds `best_epoch`, `epochs_run` |
//! | `pairs.csv` | `row,model_id,checkpoint,split,task_id,val_loss,bin` (the `pca` rows) |
//! | `projections.safetensors` | `projections` `[N, latent]`: `z_proj` of every pair (best weights) |
//! | `history.csv` | `epoch,train_loss,val_loss` (train = mean over the epoch's batches) |
//! | `loss.svg` | NT-Xent per epoch: train (blue), val (orange), val of the untrained model (grey), ln(N_val) (red); titled axes, legend |
//! | `heatmap.svg` | cosine between weight latents (rows) and projections (columns) of up to 12 val pairs (sorted by task, then checkpoint), left after epoch 1, right at the best epoch; viridis −1 (dark) … 1 (yellow), colour bar |
//! | `metrics.json` | `val_loss` (best), `train_loss`, `test_loss`, `val_loss_untrained`, `val_loss_shuffled` (trained model, latents of the val pairs cyclically shifted by one), `val_loss_chance` (ln N_val), `{val,test}_top1`, `{val,test}_top5`, `{val,test}_top1_chance`, `…_top5_chance` (retrieval of each pair's own latent among all latents of the split by cosine to its projection), `best_epoch`, `epochs_run`, pair counts, `parameters` |

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use serde_json::json;
use wspace_stage_api::{defaults, params, Inputs, Param, ParamSpec, Params, Progress, StageContext, StageError, StageKind};

use super::model::{AlignConfig, Aligner};
use crate::data::TaskSplit;
use crate::fit::{fit, loss_chart, write_history, EpochLoss, FitOptions, FitParams, Objective};
use crate::ntxent::{self, cosine_matrix};
use crate::plot::{self, Heatmap, Series};
use crate::tensors::{self, candle_error, csv_row, NamedTensor, TensorFile};
use crate::weights::pca::PcaMeta;
use crate::zoo::store::{Checkpoint, Zoo};

/// One (prompt, weight latent) pair.
#[derive(Debug, Clone)]
pub struct Pair {
    pub model_id: usize,
    pub checkpoint: Checkpoint,
    pub split: TaskSplit,
    pub task_id: usize,
    pub val_loss: f64,
}

/// Every pair with its raw dataset embedding and weight latent.
pub struct Pairs {
    pub pairs: Vec<Pair>,
    /// `[N, dataset_dim]`.
    pub embeddings: Vec<f32>,
    pub dataset_dim: usize,
    /// `[N, latent_dim]`.
    pub latents: Vec<f32>,
    pub latent_dim: usize,
}

/// `task_embeddings` `[T, 3d]` of a `dataset-embed` output: `(values, row width)`.
pub fn task_embeddings(embed_dir: &Path) -> Result<(Vec<f32>, usize), StageError> {
    embedding_matrix(embed_dir, "task_embeddings")
}

/// An F32 matrix of a `dataset-embed` output's `embeddings.safetensors` (`task_embeddings`,
/// `class_embeddings`): `(values, row width)`.
pub fn embedding_matrix(embed_dir: &Path, name: &str) -> Result<(Vec<f32>, usize), StageError> {
    let path = embed_dir.join("embeddings.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| StageError::io(&path, e))?;
    let fail = |what: String| StageError::msg(format!("{}: {what}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| fail(format!("not a valid safetensors file ({e})")))?;
    let view = st.tensor(name).map_err(|_| fail(format!("has no tensor `{name}`")))?;
    if view.dtype() != safetensors::Dtype::F32 || view.shape().len() != 2 {
        return Err(fail(format!("`{name}` is {:?} {:?}, expected F32 of rank 2", view.dtype(), view.shape())));
    }
    Ok((tensors::f32_from_bytes(view.data()), view.shape()[1]))
}

impl Pairs {
    pub fn load(zoo_dir: &Path, pca_dir: &Path, ae_dir: &Path, embed_dir: &Path) -> Result<Pairs, StageError> {
        let zoo = Zoo::load(zoo_dir)?;
        let meta: PcaMeta = tensors::read_json(&pca_dir.join("pca.json"))?;
        let file = TensorFile::open(&ae_dir.join("latents.safetensors"))?;
        let NamedTensor { shape, values: latents, .. } = file.f32("latents")?;
        if shape.len() != 2 || shape[0] != meta.rows.len() {
            return Err(StageError::input(
                "autoencoder",
                format!(
                    "was trained on another `pca`: {} has `latents` {shape:?}, the `pca` input {} rows",
                    file.path(),
                    meta.rows.len()
                ),
            ));
        }
        let (emb, dataset_dim) = task_embeddings(embed_dir)?;
        let mut pairs = Vec::with_capacity(meta.rows.len());
        let mut embeddings = Vec::with_capacity(meta.rows.len() * dataset_dim);
        for r in &meta.rows {
            let row = zoo.rows.iter().find(|z| z.model_id == r.model_id && z.checkpoint == r.checkpoint).ok_or_else(|| {
                StageError::msg(format!(
                    "zoo has no model {} ({}): the `pca` input is of another zoo",
                    r.model_id,
                    r.checkpoint.as_str()
                ))
            })?;
            let e = emb.get(r.task_id * dataset_dim..(r.task_id + 1) * dataset_dim).ok_or_else(|| {
                StageError::input("embed", format!("has no embedding of task {}: it is of other tasks", r.task_id))
            })?;
            embeddings.extend_from_slice(e);
            pairs.push(Pair {
                model_id: r.model_id,
                checkpoint: r.checkpoint,
                split: r.split,
                task_id: r.task_id,
                val_loss: row.val_loss,
            });
        }
        Ok(Pairs { pairs, embeddings, dataset_dim, latents, latent_dim: shape[1] })
    }

    pub fn split(&self, s: TaskSplit) -> Vec<usize> {
        self.pairs.iter().enumerate().filter(|(_, p)| p.split == s).map(|(i, _)| i).collect()
    }

    fn gather(values: &[f32], width: usize, rows: &[usize]) -> Vec<f32> {
        rows.iter().flat_map(|&i| values[i * width..(i + 1) * width].iter().copied()).collect()
    }

    pub fn embeddings_of(&self, rows: &[usize]) -> Vec<f32> {
        Self::gather(&self.embeddings, self.dataset_dim, rows)
    }

    pub fn latents_of(&self, rows: &[usize]) -> Vec<f32> {
        Self::gather(&self.latents, self.latent_dim, rows)
    }

    pub fn losses_of(&self, rows: &[usize]) -> Vec<f64> {
        rows.iter().map(|&i| self.pairs[i].val_loss).collect()
    }
}

/// The `align` stage's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignOptions {
    pub bins: usize,
    pub results_dim: usize,
    pub hidden: Vec<usize>,
    pub tau: f64,
    /// Epochs, patience, AdamW, batch size (≥ 2: NT-Xent needs negatives), seed.
    pub fit: FitParams,
}

params! {
    BINS = "bins": Int = 10, "loss bins over the train split's val_loss range";
    RESULTS_DIM = "results_dim": Int = 512, "size of each bin's learned embedding (thesis: 512)";
    HIDDEN = "hidden": [Int] = [512], "hidden sizes of the shared MLP";
    TAU = "tau": Float = 0.1, "NT-Xent temperature";
}
/// The kind's own parameters (the training loop's follow them).
const PARAMS: &[Param] = &[BINS, RESULTS_DIM, HIDDEN, TAU];
const FIT_DEFAULTS: FitParams = FitParams {
    epochs: 200,
    patience: 30,
    lr: 1e-3,
    weight_decay: 1e-4,
    batch_size: 32,
    seed: 0,
    device: crate::device::DeviceName::Cpu,
};

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions::from_params(Params(&defaults(&AlignKind.params()))).expect("the defaults are valid")
    }
}

/// The outcome of [`train`].
pub struct Trained {
    pub model: Aligner,
    pub history: Vec<EpochLoss>,
    pub best_epoch: usize,
    pub val_untrained: f64,
    /// Cosine matrices (latents × projections) of the heat-map pairs after epoch 1 and at the best epoch.
    pub heat_first: Vec<Vec<f64>>,
    pub heat_best: Vec<Vec<f64>>,
}

fn nt(al: &Aligner, pairs: &Pairs, rows: &[usize], latents: &[f32]) -> Result<f64, StageError> {
    if rows.len() < 2 {
        return Ok(f64::NAN);
    }
    let p = al.project(&pairs.embeddings_of(rows), &pairs.losses_of(rows))?;
    ntxent::ntxent_value(&p, latents, pairs.latent_dim, al.config.tau).map_err(candle_error("align"))
}

/// Cosine of every latent (rows) with every projection (columns) of `rows`.
pub fn cosines(al: &Aligner, pairs: &Pairs, rows: &[usize]) -> Result<Vec<Vec<f64>>, StageError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let e = candle_error("align");
    let k = pairs.latent_dim;
    let p = al.project(&pairs.embeddings_of(rows), &pairs.losses_of(rows))?;
    let p = Tensor::from_vec(p, (rows.len(), k), &Device::Cpu).map_err(&e)?;
    let h = Tensor::from_vec(pairs.latents_of(rows), (rows.len(), k), &Device::Cpu).map_err(&e)?;
    let m = cosine_matrix(&h, &p).and_then(|m| m.to_vec2::<f32>()).map_err(&e)?;
    Ok(m.into_iter().map(|r| r.into_iter().map(f64::from).collect()).collect())
}

/// Retrieval accuracy: the fraction of projections whose own latent ranks first / in the top 5 among all
/// latents of `rows` by cosine; `(top1, top5)`.
pub fn retrieval(al: &Aligner, pairs: &Pairs, rows: &[usize]) -> Result<(f64, f64), StageError> {
    if rows.is_empty() {
        return Ok((f64::NAN, f64::NAN));
    }
    let m = cosines(al, pairs, rows)?; // m[latent][projection]
    let n = rows.len();
    let (mut top1, mut top5) = (0, 0);
    for (j, own) in (0..n).map(|j| (j, m[j][j])) {
        let better = m.iter().enumerate().filter(|(i, row)| *i != j && row[j] > own).count();
        top1 += usize::from(better == 0);
        top5 += usize::from(better < 5);
    }
    Ok((top1 as f64 / n as f64, top5 as f64 / n as f64))
}

/// Trains on the train pairs, early-stopping on the val pairs (see the module doc).
pub fn train(pairs: &Pairs, opts: &AlignOptions, progress: &dyn Progress) -> Result<Trained, StageError> {
    let tr = pairs.split(TaskSplit::Train);
    let va = pairs.split(TaskSplit::Val);
    if tr.len() < 2 {
        return Err(StageError::msg(format!("align: {} train-split pairs; NT-Xent needs at least 2", tr.len())));
    }
    let losses = pairs.losses_of(&tr);
    let finite = losses.iter().copied().filter(|l| l.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(l), b.max(l)));
    let config = AlignConfig {
        dataset_dim: pairs.dataset_dim,
        results_dim: opts.results_dim,
        bins: opts.bins,
        loss_min: lo,
        loss_max: hi,
        hidden: opts.hidden.clone(),
        latent_dim: pairs.latent_dim,
        tau: opts.tau,
    };
    let mut al = Aligner::init(config, opts.fit.seed, &opts.fit.device()?)?;
    let d = pairs.dataset_dim;
    let raw = pairs.embeddings_of(&tr);
    let n = tr.len();
    for j in 0..d {
        let mean = (0..n).map(|i| raw[i * d + j] as f64).sum::<f64>() / n as f64;
        let var = (0..n).map(|i| (raw[i * d + j] as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        al.input_mean[j] = mean as f32;
        al.input_std[j] = var.sqrt().max(1e-3) as f32;
    }
    let x_all = al.standardise(&pairs.embeddings);
    let bins_all: Vec<usize> = pairs.pairs.iter().map(|p| al.config.bin(p.val_loss)).collect();
    let val_latents = pairs.latents_of(&va);
    let heat_rows: Vec<usize> = {
        let mut v = va.clone();
        v.sort_by_key(|&i| (pairs.pairs[i].task_id, pairs.pairs[i].checkpoint));
        v.truncate(12);
        v
    };
    let val_untrained = nt(&al, pairs, &va, &val_latents)?;
    let mut objective =
        AlignObjective { al: &al, pairs, x_all, bins_all, va: &va, val_latents, heat_rows: &heat_rows, heat_first: Vec::new() };
    let fitted = fit(
        &mut objective,
        &tr,
        &FitOptions { params: opts.fit, min_batch: 2, shuffle_salt: 0x0a11_9e00, what: "align", progress },
    )?;
    let heat_first = std::mem::take(&mut objective.heat_first);
    let heat_best = cosines(&al, pairs, &heat_rows)?;
    Ok(Trained { model: al, history: fitted.history, best_epoch: fitted.best_epoch, val_untrained, heat_first, heat_best })
}

/// The aligner as an [`Objective`] of the shared AdamW loop: NT-Xent of a batch's projections against
/// its weight latents; after epoch 1 it records the heat map's cosines.
struct AlignObjective<'a> {
    al: &'a Aligner,
    pairs: &'a Pairs,
    /// Standardised dataset embeddings of every pair, `[N, dataset_dim]`.
    x_all: Vec<f32>,
    bins_all: Vec<usize>,
    va: &'a [usize],
    val_latents: Vec<f32>,
    heat_rows: &'a [usize],
    heat_first: Vec<Vec<f64>>,
}

impl Objective for AlignObjective<'_> {
    fn vars(&self) -> Vec<Var> {
        self.al.vars()
    }

    fn batch_loss(&mut self, rows: &[usize]) -> Result<(Tensor, f64), StageError> {
        let e = candle_error("align training");
        let (d, k) = (self.pairs.dataset_dim, self.pairs.latent_dim);
        let xb: Vec<f32> = rows.iter().flat_map(|&r| self.x_all[r * d..(r + 1) * d].iter().copied()).collect();
        let bins: Vec<usize> = rows.iter().map(|&r| self.bins_all[r]).collect();
        let dev = &self.al.device;
        let x = Tensor::from_vec(xb, (rows.len(), d), dev).map_err(&e)?;
        let h = Tensor::from_vec(self.pairs.latents_of(rows), (rows.len(), k), dev).map_err(&e)?;
        let loss = self.al.forward(&x, &bins).and_then(|p| ntxent::ntxent(&p, &h, self.al.config.tau)).map_err(&e)?;
        let value = loss.to_scalar::<f32>().map_err(&e)? as f64;
        Ok((loss, value))
    }

    fn val_loss(&mut self) -> Result<Option<f64>, StageError> {
        let v = nt(self.al, self.pairs, self.va, &self.val_latents)?;
        Ok((self.va.len() >= 2).then_some(v))
    }

    fn after_epoch(&mut self, loss: &EpochLoss) -> Result<(), StageError> {
        if loss.epoch == 1 {
            self.heat_first = cosines(self.al, self.pairs, self.heat_rows)?;
        }
        Ok(())
    }
}

/// Trains and writes the stage output into `out`.
pub fn run_align(
    pairs: &Pairs,
    opts: &AlignOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<serde_json::Value, StageError> {
    let t = train(pairs, opts, progress)?;
    let al = &t.model;
    al.save(out, json!({ "best_epoch": t.best_epoch, "epochs_run": t.history.len() }))?;
    let mut csv_rows = Vec::new();
    for (i, p) in pairs.pairs.iter().enumerate() {
        csv_rows.push(csv_row![
            i,
            p.model_id,
            p.checkpoint.as_str(),
            p.split.as_str(),
            p.task_id,
            p.val_loss,
            al.config.bin(p.val_loss)
        ]);
    }
    tensors::write_csv(
        &out.join("pairs.csv"),
        &["row", "model_id", "checkpoint", "split", "task_id", "val_loss", "bin"],
        csv_rows,
    )?;
    let all: Vec<f64> = pairs.pairs.iter().map(|p| p.val_loss).collect();
    let proj = al.project(&pairs.embeddings, &all)?;
    tensors::write_f32(&out.join("projections.safetensors"), "projections", vec![pairs.pairs.len(), pairs.latent_dim], proj)?;
    write_history(&out.join("history.csv"), &t.history)?;

    let (tr, va, te) = (pairs.split(TaskSplit::Train), pairs.split(TaskSplit::Val), pairs.split(TaskSplit::Test));
    let chance = |n: usize| if n >= 2 { (n as f64).ln() } else { f64::NAN };
    let last = t.history.len() as f64;
    let flat = |y: f64| vec![(1.0, y), (last.max(2.0), y)];
    plot::write_chart(
        &out.join("loss.svg"),
        &loss_chart("Alignment loss per epoch", "NT-Xent loss (nats)", &t.history)
            .series(Series::line("val, untrained model", plot::GREY, flat(t.val_untrained)))
            .series(Series::line("chance, ln N_val", plot::RED, flat(chance(va.len())))),
    )?;
    if !t.heat_best.is_empty() {
        plot::write_heatmap(
            &out.join("heatmap.svg"),
            &Heatmap {
                title: "Cosine of weight latents and projections (val pairs)".into(),
                panels: vec![("after epoch 1".into(), t.heat_first.clone()), ("best epoch".into(), t.heat_best.clone())],
                x_title: "projection z_proj (val pair)".into(),
                y_title: "weight latent (val pair)".into(),
                row_labels: None,
                col_labels: None,
                lo: -1.0,
                hi: 1.0,
                value_title: "cosine similarity".into(),
            },
        )?;
    }
    let shifted: Vec<usize> = (0..va.len()).map(|i| va[(i + 1) % va.len()]).collect();
    let val_shuffled = nt(al, pairs, &va, &pairs.latents_of(&shifted))?;
    let (v1, v5) = retrieval(al, pairs, &va)?;
    let (t1, t5) = retrieval(al, pairs, &te)?;
    let c = |k: usize, n: usize| if n == 0 { f64::NAN } else { k.min(n) as f64 / n as f64 };
    let num = |v: f64| if v.is_finite() { json!(v) } else { serde_json::Value::Null };
    let best = t.history.get(t.best_epoch.saturating_sub(1)).copied();
    let (best_train, best_val) = best.map_or((f64::NAN, f64::NAN), |h| (h.train, h.val));
    let metrics = json!({
        "train_loss": num(best_train),
        "val_loss": num(best_val),
        "test_loss": num(nt(al, pairs, &te, &pairs.latents_of(&te))?),
        "val_loss_untrained": num(t.val_untrained),
        "val_loss_shuffled": num(val_shuffled),
        "val_loss_chance": num(chance(va.len())),
        "test_loss_chance": num(chance(te.len())),
        "val_top1": num(v1), "val_top5": num(v5),
        "val_top1_chance": num(c(1, va.len())), "val_top5_chance": num(c(5, va.len())),
        "test_top1": num(t1), "test_top5": num(t5),
        "test_top1_chance": num(c(1, te.len())), "test_top5_chance": num(c(5, te.len())),
        "best_epoch": t.best_epoch,
        "epochs_run": t.history.len(),
        "train_pairs": tr.len(), "val_pairs": va.len(), "test_pairs": te.len(),
        "bins": al.config.bins,
        "loss_min": al.config.loss_min, "loss_max": al.config.loss_max,
        "parameters": al.parameter_count(),
    });
    tensors::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// `kind = "align"`: see the [module doc](self).
pub struct AlignKind;

impl AlignOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        let fit = FitParams::from_params(p)?;
        if fit.batch_size < 2 {
            return Err(StageError::param("batch_size", "must be ≥ 2 (NT-Xent needs negatives)"));
        }
        Ok(AlignOptions {
            bins: p.positive(&BINS)?,
            results_dim: p.positive(&RESULTS_DIM)?,
            hidden: p.positive_list(&HIDDEN)?,
            tau: p.positive_float(&TAU)?,
            fit,
        })
    }
}

impl StageKind for AlignKind {
    fn name(&self) -> &'static str {
        "align"
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "results encoder + shared encoder: (dataset, loss) → weight latent, trained with NT-Xent"
    }
    fn params(&self) -> Vec<ParamSpec> {
        FitParams::specs_after(PARAMS, &FIT_DEFAULTS, "pairs per batch (the negatives), at least 2")
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("zoo", true, "the `zoo` stage (val_loss of every model)"),
            ("pca", true, "the `pca` stage (which models, in which order)"),
            ("autoencoder", true, "the `autoencoder` stage trained on `pca` (the weight latents)"),
            ("embed", true, "a `dataset-embed` stage of the zoo's tasks"),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        AlignOptions::from_params(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = AlignOptions::from_params(ctx.view())?;
        let pairs = Pairs::load(ctx.input("zoo")?, ctx.input("pca")?, ctx.input("autoencoder")?, ctx.input("embed")?)?;
        ctx.progress.message("training the shared encoder (NT-Xent)");
        run_align(&pairs, &opts, ctx.out, ctx.progress)?;
        Ok(())
    }
}
