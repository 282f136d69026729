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
use crate::bench_args::{parse, positive, Format};
use crate::data::TaskSplit;
use crate::zoo::store::{Checkpoint, Zoo};

/// Which checkpoints' models the PCA is fitted on.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum Checkpoints {
    Final,
    Early,
    Both,
}

/// The per-parameter PCA fit time on a zoo.
#[derive(clap::Parser, Debug)]
struct Args {
    /// A `zoo` stage's output directory
    #[arg(long)]
    zoo: PathBuf,
    /// PCA components per parameter
    #[arg(long, value_parser = positive, default_value_t = 8)]
    components: usize,
    #[arg(long, value_enum, default_value_t = Checkpoints::Final)]
    checkpoints: Checkpoints,
    /// Timed fits (the best and the median are reported)
    #[arg(long, value_parser = positive, default_value_t = 5)]
    repeats: usize,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn bench_pca(args: &[String]) -> Result<String, String> {
    let a: Args = match parse("pca", args) {
        Ok(a) => a,
        Err(help_or_error) => return help_or_error,
    };
    let checkpoints = match a.checkpoints {
        Checkpoints::Final => vec![Checkpoint::Final],
        Checkpoints::Early => vec![Checkpoint::Early],
        Checkpoints::Both => vec![Checkpoint::Early, Checkpoint::Final],
    };
    let zoo = Zoo::load(&a.zoo).map_err(|e| e.to_string())?;
    let rows = select_rows(&zoo, &checkpoints);
    let train: Vec<Vec<f32>> = split_rows(&rows, TaskSplit::Train)
        .into_iter()
        .map(|i| zoo.flat(rows[i]))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let opts =
        PcaOptions { components: ComponentSpec::all(ComponentRule::Count(a.components)), checkpoints, ..PcaOptions::default() };
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
    Ok(if a.format == Format::Json {
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
