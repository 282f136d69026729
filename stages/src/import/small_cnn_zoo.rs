//! Reading a Small CNN Zoo (Unterthiner et al. 2020) dataset directory.
//!
//! ```text
//! PATH/weights.npy       rows × 4,970 float32, one row per (run, step), read row by row ([`super::npy`])
//! PATH/metrics.csv.gz    one row per weights row, same order: config.*, modeldir, step, test_accuracy, …
//! PATH/layout.csv        varname, start_idx, end_idx, shape: where each variable lies in a row
//! ```
//!
//! A model is a `modeldir` (in order of first appearance); its rows are its steps. `layout.csv`'s
//! variables are grouped by layer (the varname before its last `/`, in order), each a `bias` and a
//! `kernel`, onto `conv1`, `conv2`, `conv3`, `fc`. The documented reshapes: a conv kernel `[kh, kw,
//! in, out]` (HWIO) becomes `[out, in, kh, kw]`, a dense kernel `[in, out]` becomes `[out, in]`; the
//! values are moved, never changed.
//!
//! Faults of the whole zoo are errors naming the file: `layout.csv` inconsistent with the width of
//! `weights.npy`, a truncated `.npy`, a `metrics.csv.gz` with a different number of rows than the
//! weights. A model with an unknown `config.activation` or without the selected step is skipped.

use std::collections::BTreeMap;
use std::path::Path;

use wspace_stage_api::StageError;

use super::arch::{ImportArch, Nlin, Padding};
use super::npy::NpyRows;
use super::{Keep, Metrics, Selection, Skipped, SourceCheckpoint, SourceModel};
use crate::tensors::NamedTensors;
use crate::zoo::store::Checkpoint;

/// The `config.*` columns that have a `zoo.csv` column of their own.
const MAPPED: &[&str] = &["config.optimizer", "config.learning_rate", "config.w_init", "config.activation"];

/// One variable of `layout.csv`.
#[derive(Debug, Clone)]
struct Var {
    name: String,
    start: usize,
    end: usize,
    shape: Vec<usize>,
}

/// One row of `metrics.csv.gz`.
#[derive(Debug, Clone)]
struct MetricsRow {
    modeldir: String,
    step: usize,
    metrics: Metrics,
    /// The `config.*` columns; one shared map for consecutive rows that agree (a run's rows do), so
    /// that the table costs about 100 bytes a row.
    config: std::sync::Arc<BTreeMap<String, String>>,
}

pub fn read(root: &Path, sel: &Selection, padding: Padding, keep: Keep) -> Result<(Vec<SourceModel>, Vec<Skipped>), StageError> {
    if !root.is_dir() {
        return Err(StageError::param("path", format!("{}: not a directory (format = \"small-cnn-zoo\")", root.display())));
    }
    let mut weights = NpyRows::open(&root.join("weights.npy")).map_err(StageError::msg)?;
    let layout = read_layout(&root.join("layout.csv"), weights.cols)?;
    let rows = read_metrics(&root.join("metrics.csv.gz"))?;
    if rows.len() != weights.rows {
        return Err(StageError::msg(format!(
            "{}: has {} rows, {} has {} (one metrics row per weights row, in the same order)",
            root.join("metrics.csv.gz").display(),
            rows.len(),
            root.join("weights.npy").display(),
            weights.rows
        )));
    }
    let mut order: Vec<&str> = Vec::new();
    let mut by_model: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        let list = by_model.entry(r.modeldir.as_str()).or_default();
        if list.is_empty() {
            order.push(r.modeldir.as_str());
        }
        list.push(i);
    }
    let (mut models, mut skipped) = (Vec::new(), Vec::new());
    let metrics_file = root.join("metrics.csv.gz");
    for name in order {
        if sel.max_models > 0 && models.len() == sel.max_models {
            break;
        }
        wspace_stage_api::check_stop()?;
        let indices = &by_model[name];
        let first = &rows[indices[0]];
        let activation = first.config.get("config.activation").map(String::as_str).unwrap_or("");
        let Some(nlin) = Nlin::parse(activation) else {
            skipped.push(Skipped {
                model: name.into(),
                file: metrics_file.clone(),
                reason: format!(
                    "row {}: unknown `config.activation` \"{activation}\" (known: {})",
                    indices[0] + 1,
                    Nlin::KNOWN.join(", ")
                ),
            });
            continue;
        };
        let arch = ImportArch::SmallCnn { nlin, padding };
        let last = indices.iter().map(|&i| rows[i].step).max().unwrap_or(0);
        let mut wanted = vec![(Checkpoint::Final, sel.final_epoch.unwrap_or(last))];
        if let Some(e) = sel.early_epoch {
            wanted.insert(0, (Checkpoint::Early, e));
        }
        let mut checkpoints = Vec::new();
        let mut fault = None;
        for (which, step) in wanted {
            let Some(&i) = indices.iter().find(|&&i| rows[i].step == step) else {
                let steps: Vec<String> = indices.iter().map(|&i| rows[i].step.to_string()).collect();
                fault = Some(format!("has no row of step {step} (steps: {})", steps.join(", ")));
                break;
            };
            let row = weights.row(i).map_err(StageError::msg)?;
            let tensors = unflatten(&row, &layout, &arch);
            checkpoints.push((which, SourceCheckpoint { epoch: step, weights: tensors, metrics: rows[i].metrics }));
        }
        if let Some(reason) = fault {
            skipped.push(Skipped { model: name.into(), file: metrics_file.clone(), reason });
            continue;
        }
        let extra =
            first.config.iter().filter(|(k, _)| !MAPPED.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        let get = |k: &str| first.config.get(k).cloned().unwrap_or_default();
        models.push(keep(SourceModel {
            source: name.into(),
            arch,
            optimizer: get("config.optimizer").to_ascii_lowercase(),
            lr: get("config.learning_rate").parse().unwrap_or(f64::NAN),
            batch_size: 0,
            seed: 0,
            init: if get("config.w_init").is_empty() { "unknown".into() } else { get("config.w_init") },
            extra,
            checkpoints,
        })?);
    }
    Ok((models, skipped))
}

/// `layout.csv`, checked against the architecture and against `width` (the weights' columns).
fn read_layout(path: &Path, width: usize) -> Result<Vec<(Var, Var)>, StageError> {
    let fail = |m: String| StageError::msg(format!("{}: {m}", path.display()));
    let mut r = csv::Reader::from_path(path).map_err(|e| fail(e.to_string()))?;
    let mut vars = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| fail(e.to_string()))?;
        let field = |k: usize| rec.get(k).unwrap_or("").trim();
        let num =
            |k: usize| field(k).parse::<usize>().map_err(|_| fail(format!("row {}: `{}` is not an index", i + 1, field(k))));
        let shape: Vec<usize> = field(3)
            .trim_matches(['(', ')', '[', ']'])
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| fail(format!("row {}: bad shape `{}`", i + 1, field(3)))))
            .collect::<Result<_, _>>()?;
        let var = Var { name: field(0).to_string(), start: num(1)?, end: num(2)?, shape };
        if var.end < var.start || var.end - var.start != var.shape.iter().product::<usize>() {
            return Err(fail(format!(
                "row {} (`{}`): start_idx {} to end_idx {} is not the size of shape {:?}",
                i + 1,
                var.name,
                var.start,
                var.end,
                var.shape
            )));
        }
        vars.push(var);
    }
    let end = vars.iter().map(|v| v.end).max().unwrap_or(0);
    if end != width {
        return Err(fail(format!("its variables end at index {end}, but weights.npy rows have {width} values")));
    }
    // Group by layer (the varname before its last '/'), in order.
    let mut layers: Vec<(String, Option<Var>, Option<Var>)> = Vec::new();
    for v in vars {
        let (layer, what) = v.name.rsplit_once('/').unwrap_or(("", v.name.as_str()));
        let layer = layer.to_string();
        let is_bias = what.starts_with("bias");
        if !is_bias && !what.starts_with("kernel") {
            return Err(fail(format!("variable `{}` is neither a bias nor a kernel", v.name)));
        }
        if layers.last().map(|l| &l.0) != Some(&layer) {
            layers.push((layer.clone(), None, None));
        }
        let slot = layers.last_mut().map(|l| if is_bias { &mut l.1 } else { &mut l.2 });
        if let Some(slot) = slot {
            *slot = Some(v);
        }
    }
    let arch = ImportArch::SmallCnn { nlin: Nlin::Relu, padding: Padding::Same };
    let want = arch.layers();
    if layers.len() != want.len() {
        return Err(fail(format!("has {} layers, the Small CNN Zoo network has {}", layers.len(), want.len())));
    }
    let mut out = Vec::new();
    for ((name, bias, kernel), l) in layers.into_iter().zip(&want) {
        let (Some(bias), Some(kernel)) = (bias, kernel) else {
            return Err(fail(format!("layer `{name}` lacks its bias or its kernel")));
        };
        let w = &l.weight_shape;
        let source_shape = if w.len() == 4 { vec![w[2], w[3], w[1], w[0]] } else { vec![w[1], w[0]] };
        if kernel.shape != source_shape || bias.shape != [w[0]] {
            return Err(fail(format!(
                "layer `{name}`: kernel {:?}, bias {:?}; `{}` needs kernel {source_shape:?} and bias [{}]",
                kernel.shape, bias.shape, l.name, w[0]
            )));
        }
        out.push((bias, kernel));
    }
    Ok(out)
}

/// One weights row as the architecture's tensors (HWIO → OIHW, (in, out) → (out, in)).
fn unflatten(row: &[f32], layout: &[(Var, Var)], arch: &ImportArch) -> NamedTensors {
    let mut out = NamedTensors::new();
    for ((bias, kernel), l) in layout.iter().zip(arch.layers()) {
        let src = &row[kernel.start..kernel.end];
        let w = &l.weight_shape;
        let values: Vec<f32> = if w.len() == 4 {
            let (o_n, i_n, h_n, w_n) = (w[0], w[1], w[2], w[3]);
            let mut v = Vec::with_capacity(src.len());
            for o in 0..o_n {
                for i in 0..i_n {
                    for h in 0..h_n {
                        for x in 0..w_n {
                            v.push(src[((h * w_n + x) * i_n + i) * o_n + o]);
                        }
                    }
                }
            }
            v
        } else {
            let (o_n, i_n) = (w[0], w[1]);
            (0..o_n).flat_map(|o| (0..i_n).map(move |i| src[i * o_n + o])).collect()
        };
        out.push(format!("{}.weight", l.name), w.clone(), values);
        out.push(format!("{}.bias", l.name), vec![w[0]], row[bias.start..bias.end].to_vec());
    }
    out
}

/// `metrics.csv.gz`'s rows.
fn read_metrics(path: &Path) -> Result<Vec<MetricsRow>, StageError> {
    let fail = |m: String| StageError::msg(format!("{}: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| StageError::io(path, e))?;
    let mut r = csv::Reader::from_reader(std::io::BufReader::new(flate2::read::GzDecoder::new(file)));
    let unreadable = |e: csv::Error| match e.kind() {
        csv::ErrorKind::Io(io) => fail(format!("not a readable gzip file: {io}")),
        _ => fail(e.to_string()),
    };
    let header: Vec<String> = r.headers().map_err(unreadable)?.iter().map(String::from).collect();
    let col = |name: &str| header.iter().position(|h| h == name).ok_or_else(|| fail(format!("has no column `{name}`")));
    let (modeldir, step) = (col("modeldir")?, col("step")?);
    let (test_acc, test_loss, train_acc, train_loss) =
        (col("test_accuracy")?, col("test_loss")?, col("train_accuracy")?, col("train_loss")?);
    let mut out: Vec<MetricsRow> = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| match e.kind() {
            csv::ErrorKind::Io(_) => unreadable(e),
            _ => fail(format!("row {}: {e}", i + 1)),
        })?;
        let num = |k: usize| rec.get(k).and_then(|s| s.trim().parse::<f64>().ok()).unwrap_or(f64::NAN);
        let step_value = rec
            .get(step)
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| *s >= 0.0 && s.fract() == 0.0)
            .ok_or_else(|| fail(format!("row {}: `step` is not a non-negative integer", i + 1)))?;
        let config: BTreeMap<String, String> = header
            .iter()
            .enumerate()
            .filter(|(_, h)| h.starts_with("config."))
            .map(|(k, h)| (h.clone(), rec.get(k).unwrap_or("").to_string()))
            .collect();
        let config = match out.last() {
            Some(prev) if *prev.config == config => prev.config.clone(),
            _ => std::sync::Arc::new(config),
        };
        out.push(MetricsRow {
            modeldir: rec.get(modeldir).unwrap_or("").to_string(),
            step: step_value as usize,
            metrics: Metrics {
                train_loss: num(train_loss),
                train_acc: num(train_acc),
                test_loss: num(test_loss),
                test_acc: num(test_acc),
            },
            config,
        });
    }
    Ok(out)
}
