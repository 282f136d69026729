//! `wspace bench pca`: the per-parameter PCA fit time on a zoo (the figure to compare with
//! scikit-learn's `IncrementalPCA`, the thesis's tool, run on the same matrices by
//! `scripts/weights/bench_pca.py`).
//!
//! ```text
//! wspace bench pca --zoo ZOO_DIR [--components K] [--checkpoints final|early|both] [--repeats R] [--format text|json]
//! ```
//! Loads the zoo's train-split models of the checkpoints (as the `pca` stage does), then times
//! [`WeightPca::fit`] (Algorithm 3.1 with `K` components, defaults otherwise: every parameter's PCA,
//! plus the coefficient normalisation) `R` times and reports the best and the median wall time. Loading
//! is not timed (the Python script does not time it either).

use std::path::PathBuf;
use std::time::Instant;

use super::linalg::ComponentRule;
use super::pca::{ComponentSpec, PcaOptions, WeightPca};
use super::{select_rows, split_rows};
use crate::data::TaskSplit;
use crate::zoo::store::{Checkpoint, Zoo};

const USAGE: &str =
    "usage: wspace bench pca --zoo ZOO_DIR [--components K] [--checkpoints final|early|both] [--repeats R] [--format text|json]";

struct Args {
    zoo: PathBuf,
    components: usize,
    checkpoints: Vec<Checkpoint>,
    repeats: usize,
    json: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args { zoo: PathBuf::new(), components: 8, checkpoints: vec![Checkpoint::Final], repeats: 5, json: false };
    for (flag, value) in crate::bench_args::pairs(args, USAGE)? {
        let number = || crate::bench_args::positive(flag, value);
        match flag {
            "--zoo" => a.zoo = PathBuf::from(value),
            "--components" => a.components = number()?,
            "--repeats" => a.repeats = number()?,
            "--checkpoints" => {
                a.checkpoints = match value {
                    "final" => vec![Checkpoint::Final],
                    "early" => vec![Checkpoint::Early],
                    "both" => vec![Checkpoint::Early, Checkpoint::Final],
                    _ => return Err(format!("error: --checkpoints {value}: expected final, early or both")),
                }
            }
            "--format" => a.json = value == "json",
            _ => return Err(format!("error: unknown argument {flag}\n{USAGE}")),
        }
    }
    if a.zoo.as_os_str().is_empty() {
        return Err(format!("error: --zoo is required\n{USAGE}"));
    }
    Ok(a)
}

pub fn bench_pca(args: &[String]) -> Result<String, String> {
    let a = parse(args)?;
    let zoo = Zoo::load(&a.zoo).map_err(|e| e.to_string())?;
    let rows = select_rows(&zoo, &a.checkpoints);
    let train: Vec<Vec<f32>> = split_rows(&rows, TaskSplit::Train)
        .into_iter()
        .map(|i| zoo.flat(rows[i]))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let opts = PcaOptions {
        components: ComponentSpec::all(ComponentRule::Count(a.components)),
        checkpoints: a.checkpoints.clone(),
        ..PcaOptions::default()
    };
    let mut times = Vec::with_capacity(a.repeats);
    let mut dim = 0;
    for _ in 0..a.repeats {
        let start = Instant::now();
        let (pca, _) = WeightPca::fit(&zoo.meta.arch, &zoo.meta.parameters, &train, &opts).map_err(|e| e.to_string())?;
        times.push(start.elapsed().as_secs_f64());
        dim = pca.coefficient_dim();
    }
    times.sort_by(f64::total_cmp);
    let (best, median) = (times[0], times[times.len() / 2]);
    Ok(if a.json {
        serde_json::json!({
            "bench": "pca", "models": train.len(), "parameters": zoo.meta.parameters.len(), "weights": zoo.num_params(),
            "components": a.components, "coefficient_dim": dim, "repeats": a.repeats, "best_s": best, "median_s": median,
        })
        .to_string()
    } else {
        format!(
            "pca fit: {} train models × {} weights ({} tensors), {} components → {} coefficients: best {:.4} s, median {:.4} s over {} runs",
            train.len(),
            zoo.num_params(),
            zoo.meta.parameters.len(),
            a.components,
            dim,
            best,
            median,
            a.repeats
        )
    })
}
