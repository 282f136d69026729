//! Reading a Model Zoos (Schürholt et al. 2022) zoo: a ray-tune experiment directory.
//!
//! ```text
//! PATH/<trial>/params.json              {"model::nlin": "tanh", "model::o_dim": 10, "optim::lr": …, "seed": …}
//! PATH/<trial>/result.json              JSON lines: train_loss, train_acc, test_loss, test_acc, training_iteration
//! PATH/<trial>/checkpoint_<N>/checkpoints   torch.save zip: module_list.{i}.weight|bias
//! ```
//!
//! Trials are the subdirectories that hold a `params.json`, in name order. `checkpoint_50` and
//! `checkpoint_000050` are both epoch 50; the record of `result.json` with `training_iteration` N
//! gives that checkpoint's metrics (`−999`, the untrained record's training values, becomes empty).
//! The state dict's `module_list.{i}` tensors are mapped **by order** onto the architecture's layers
//! (dropout, pooling and activation modules have no tensors but shift the indices), each
//! `weight`/`bias` pair onto `conv1`, `conv2`, `conv3`, `fc1`, `fc2`; shapes must match exactly and the
//! values are copied bit for bit. A state dict nested under `state_dict`, `model_state_dict` or
//! `model` is found too.
//!
//! Every fault of one trial (unreadable `params.json`, unknown `nlin`, missing or truncated
//! checkpoint, legacy pickle, wrong shape, no metrics record) skips that trial with a reason naming
//! the file; the caller reports them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::DType;
use wspace_stage_api::StageError;

use super::arch::{ImportArch, Nlin};
use super::{Keep, Selection, Skipped, SourceCheckpoint, SourceModel};
use crate::tensors::NamedTensors;

/// The columns `params.json` keys map to; every other key is kept under its own name.
const MAPPED: &[&str] = &["optim::optimizer", "optim::lr", "training::batchsize", "seed", "model::init_type"];

/// Reads the trials under `root` that `sel` selects; each well-formed model goes through `keep` as it
/// is read (which writes its weights and returns what is left to keep).
pub fn read(root: &Path, sel: &Selection, keep: Keep) -> Result<(Vec<SourceModel>, Vec<Skipped>), StageError> {
    if !root.is_dir() {
        return Err(StageError::param("path", format!("{}: not a directory (format = \"model-zoos\")", root.display())));
    }
    let mut trials: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| StageError::io(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("params.json").is_file())
        .collect();
    trials.sort();
    if trials.is_empty() {
        return Err(StageError::param(
            "path",
            format!("{}: no model directory (a subdirectory with params.json) in it (format = \"model-zoos\")", root.display()),
        ));
    }
    let (mut models, mut skipped) = (Vec::new(), Vec::new());
    for dir in trials {
        if sel.max_models > 0 && models.len() == sel.max_models {
            break;
        }
        wspace_stage_api::check_stop()?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match read_trial(&dir, &name, sel) {
            Ok(m) => models.push(keep(m)?),
            Err((file, reason)) => skipped.push(Skipped { model: name, file, reason }),
        }
    }
    Ok((models, skipped))
}

type Fault = (PathBuf, String);

fn read_trial(dir: &Path, name: &str, sel: &Selection) -> Result<SourceModel, Fault> {
    let params_path = dir.join("params.json");
    let text = std::fs::read_to_string(&params_path).map_err(|e| (params_path.clone(), e.to_string()))?;
    let params: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| (params_path.clone(), format!("not a JSON object: {e}")))?;
    let fault = |m: String| (params_path.clone(), m);
    let nlin_text = params.get("model::nlin").and_then(|v| v.as_str()).unwrap_or("tanh");
    let nlin = Nlin::parse(nlin_text)
        .ok_or_else(|| fault(format!("unknown `model::nlin` \"{nlin_text}\" (known: {})", Nlin::KNOWN.join(", "))))?;
    let classes = match params.get("model::o_dim") {
        None => 10,
        Some(v) => {
            v.as_u64().filter(|&k| k >= 1).ok_or_else(|| fault(format!("`model::o_dim` must be an integer ≥ 1, got {v}")))?
                as usize
        }
    };
    if let Some(c) = params.get("model::channels_in").and_then(|v| v.as_u64()).filter(|&c| c != 1) {
        return Err(fault(format!("`model::channels_in` is {c}: the CNN-s takes 1 × 28 × 28 grey images")));
    }
    let arch = ImportArch::CnnS { classes, nlin };
    let records = read_results(&dir.join("result.json"))?;

    let epochs = checkpoint_dirs(dir)?;
    let Some(&(last, _)) = epochs.last() else {
        return Err((dir.to_path_buf(), "has no checkpoint_<N> directory".into()));
    };
    let final_epoch = sel.final_epoch.unwrap_or(last);
    let mut wanted = vec![(crate::zoo::store::Checkpoint::Final, final_epoch)];
    if let Some(e) = sel.early_epoch {
        wanted.insert(0, (crate::zoo::store::Checkpoint::Early, e));
    }
    let mut checkpoints = Vec::new();
    for (which, epoch) in wanted {
        let Some((_, ck_dir)) = epochs.iter().find(|(e, _)| *e == epoch) else {
            let found: Vec<String> = epochs.iter().map(|(e, _)| e.to_string()).collect();
            return Err((dir.to_path_buf(), format!("has no checkpoint of epoch {epoch} (found: {})", found.join(", "))));
        };
        let file = ck_dir.join("checkpoints");
        let weights = read_state_dict(&file, &arch).map_err(|m| (file.clone(), m))?;
        let record = records.get(&epoch).ok_or_else(|| {
            (
                dir.join("result.json"),
                format!("has no record with training_iteration {epoch} (the metrics of {})", file.display()),
            )
        })?;
        checkpoints.push((which, SourceCheckpoint { epoch, weights, metrics: *record }));
    }
    let text_of = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let extra: BTreeMap<String, String> =
        params.iter().filter(|(k, _)| !MAPPED.contains(&k.as_str())).map(|(k, v)| (k.clone(), text_of(v))).collect();
    Ok(SourceModel {
        source: name.to_string(),
        arch,
        optimizer: params.get("optim::optimizer").map(text_of).unwrap_or_default().to_ascii_lowercase(),
        lr: params.get("optim::lr").and_then(|v| v.as_f64()).unwrap_or(f64::NAN),
        batch_size: params.get("training::batchsize").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
        seed: params.get("seed").and_then(|v| v.as_u64()).unwrap_or(0),
        init: params.get("model::init_type").map(text_of).unwrap_or_else(|| "unknown".into()),
        extra,
        checkpoints,
    })
}

/// `checkpoint_<N>` subdirectories as `(N, path)`, by epoch.
fn checkpoint_dirs(dir: &Path) -> Result<Vec<(usize, PathBuf)>, Fault> {
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e.to_string()))?;
    let mut out: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter_map(|p| {
            let n = p.file_name()?.to_str()?.strip_prefix("checkpoint_")?.parse::<usize>().ok()?;
            Some((n, p))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `result.json`'s records by `training_iteration`; `−999` (not measured) becomes NaN.
fn read_results(path: &Path) -> Result<BTreeMap<usize, super::Metrics>, Fault> {
    let text = std::fs::read_to_string(path).map_err(|e| (path.to_path_buf(), e.to_string()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| (path.to_path_buf(), format!("line {}: not JSON: {e}", i + 1)))?;
        let num = |k: &str| v.get(k).and_then(|x| x.as_f64()).filter(|&x| x != -999.0).unwrap_or(f64::NAN);
        let Some(iteration) = v.get("training_iteration").and_then(|x| x.as_u64()) else {
            return Err((path.to_path_buf(), format!("line {}: no integer `training_iteration`", i + 1)));
        };
        out.insert(
            iteration as usize,
            super::Metrics {
                train_loss: num("train_loss"),
                train_acc: num("train_acc"),
                test_loss: num("test_loss"),
                test_acc: num("test_acc"),
            },
        );
    }
    Ok(out)
}

/// A `torch.save` zip file's `module_list` tensors as `arch`'s tensors (see the module doc).
pub fn read_state_dict(file: &Path, arch: &ImportArch) -> Result<NamedTensors, String> {
    let mut head = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(file).map_err(|e| format!("missing checkpoint: {e}"))?;
        let n = f.read(&mut head).map_err(|e| e.to_string())?;
        if n < 4 {
            return Err(format!("truncated checkpoint ({n} bytes)"));
        }
    }
    if head[0] == 0x80 {
        return Err("a legacy (non-zip) torch pickle; re-save it in the zip format (torch ≥ 1.6): \
                    python -c \"import torch,sys; torch.save(torch.load(sys.argv[1]), sys.argv[1])\" FILE"
            .into());
    }
    if &head != b"PK\x03\x04" {
        return Err("not a torch.save zip file".into());
    }
    let mut tensors = Vec::new();
    for key in [None, Some("state_dict"), Some("model_state_dict"), Some("model")] {
        tensors = candle_core::pickle::read_all_with_key(file, key)
            .map_err(|e| format!("truncated or unreadable torch zip file: {e}"))?;
        if !tensors.is_empty() {
            break;
        }
    }
    let mut indexed = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let parsed = name.strip_prefix("module_list.").and_then(|r| r.split_once('.')).and_then(|(i, what)| {
            let rank = match what {
                "weight" => 0,
                "bias" => 1,
                _ => return None,
            };
            Some((i.parse::<usize>().ok()?, rank))
        });
        let Some(order) = parsed else {
            return Err(format!("tensor `{name}` is not a module_list.<i>.weight|bias parameter"));
        };
        indexed.push((order, name, t));
    }
    indexed.sort_by_key(|(order, _, _)| *order);
    let want = arch.tensors();
    if indexed.len() != want.len() {
        let names: Vec<&str> = indexed.iter().map(|(_, n, _)| n.as_str()).collect();
        return Err(format!(
            "has {} parameter tensors ({}), `{}` has {}",
            indexed.len(),
            names.join(", "),
            arch.name(),
            want.len()
        ));
    }
    let mut out = NamedTensors::new();
    for ((_, source, t), p) in indexed.into_iter().zip(&want) {
        if t.dims() != p.shape.as_slice() {
            return Err(format!(
                "tensor `{source}` has shape {:?}; `{}` of `{}` is {:?}",
                t.dims(),
                p.name,
                arch.name(),
                p.shape
            ));
        }
        if t.dtype() != DType::F32 {
            return Err(format!("tensor `{source}` is {:?}; only float32 imports bit for bit", t.dtype()));
        }
        let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| format!("tensor `{source}`: {e}"))?;
        out.push(p.name.clone(), p.shape.clone(), values);
    }
    Ok(out)
}
