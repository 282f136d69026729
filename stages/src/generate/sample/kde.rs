//! `method = "kde"`, SANE's sampling, for either weight codec: a draw is a train-split latent `h_c` of
//! the `autoencoder` input's `latents.safetensors` chosen uniformly, plus `N(0, (bandwidth·s_i)²)` on
//! coordinate `i` (`s_i` the coordinate's std over all train-split latents): a Gaussian kernel density
//! estimate, decoded by the codec. The kernels are the train-split latents of the prompt's own task when
//! the zoo has models of it (SANE's zero-shot sampling of a zoo's task: `prompts = "train"`), and all
//! train-split latents otherwise (an unseen triplet: sampling that ignores the prompt). It ignores the
//! target loss (loss control still applies).

use rand_chacha::ChaCha8Rng;
use serde_json::json;
use wspace_stage_api::{params, Params, StageError};

use super::{coordinate_std, Method, MethodInputs, Sampler};
use crate::data::{Task, TaskSplit};
use crate::sampling::{below, normal_f32};
use crate::tensors::{NamedTensors, TensorFile};
use crate::weights::{codec, Codec, Coefficients};
use crate::zoo::Zoo;

pub const METHOD: Method = Method {
    name: "kde",
    inputs: &[
        ("pca", "methods align, kde, flow: the `pca` stage the autoencoder was trained on"),
        ("autoencoder", "methods align, kde, flow: the `autoencoder` stage (its codec; kde: its latents)"),
        ("zoo", "method kde: the zoo (the train split's loss range)"),
    ],
    params: &[BANDWIDTH],
    validate: |p| bandwidth(p).map(|_| ()),
    load,
};

params! {
    BANDWIDTH = "bandwidth": Float = 0.1, "method kde: kernel std, as a fraction of each latent coordinate's std over the train split";
}

struct Kde {
    codec: Box<dyn Codec>,
    /// Train-split latents, `n × k`.
    latents: Vec<f32>,
    /// Their task ids.
    tasks: Vec<usize>,
    /// Per-coordinate std over them.
    std: Vec<f32>,
    bandwidth: f64,
    /// The train split's `val_loss` range.
    range: (f64, f64),
}

fn bandwidth(p: Params) -> Result<f64, StageError> {
    p.positive_float(&BANDWIDTH)
}

fn load(inputs: &MethodInputs, p: Params) -> Result<Box<dyn Sampler>, StageError> {
    let bandwidth = bandwidth(p)?;
    let (pca, ae) = (inputs.need("pca")?, inputs.need("autoencoder")?);
    let codec = codec::load(pca, ae, &inputs.device)?;
    let k = codec.latent_dim();
    let rows = Coefficients::load(pca)?.meta.rows;
    let file = TensorFile::open(&ae.join("latents.safetensors"))?;
    let all = file.f32("latents")?;
    if all.shape != [rows.len(), k] {
        return Err(StageError::input(
            "autoencoder",
            format!(
                "was trained on another `pca`: {} has `latents` {:?}, the `pca` input {} rows of latent {k}",
                file.path(),
                all.shape,
                rows.len()
            ),
        ));
    }
    let zoo = Zoo::load(inputs.need("zoo")?)?;
    let (mut latents, mut tasks, mut losses) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.split == TaskSplit::Train) {
        latents.extend_from_slice(&all.values[i * k..(i + 1) * k]);
        tasks.push(r.task_id);
        losses.push(zoo.row_of(r)?.val_loss);
    }
    if tasks.is_empty() {
        return Err(StageError::input("pca", "has no train-split rows for method `kde` to place kernels on"));
    }
    let std = coordinate_std(&latents, k);
    let range = losses.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &l| (lo.min(l), hi.max(l)));
    Ok(Box::new(Kde { codec, latents, tasks, std, bandwidth, range }))
}

impl Kde {
    /// The kernels of a task: its own train-split latents, or all of them when it has none.
    fn kernels(&self, task: usize) -> Vec<usize> {
        let own: Vec<usize> = (0..self.tasks.len()).filter(|&i| self.tasks[i] == task).collect();
        if own.is_empty() {
            (0..self.tasks.len()).collect()
        } else {
            own
        }
    }
}

impl Sampler for Kde {
    fn loss_range(&self) -> (f64, f64) {
        self.range
    }
    fn arch(&self) -> &str {
        self.codec.arch()
    }
    fn make(&self, task: &Task, grid: &[f64], draws: usize, rng: &mut ChaCha8Rng) -> Result<Vec<NamedTensors>, StageError> {
        let k = self.codec.latent_dim();
        let kernels = self.kernels(task.id);
        let bandwidth = self.bandwidth as f32;
        let mut all = Vec::with_capacity(grid.len() * draws * k);
        for _ in 0..grid.len() * draws {
            let c = kernels[below(rng, kernels.len() as u64) as usize];
            let centre = &self.latents[c * k..(c + 1) * k];
            all.extend(centre.iter().zip(&self.std).map(|(v, s)| v + bandwidth * s * normal_f32(rng)));
        }
        self.codec.decode(&all)
    }
    fn metrics(&self, prompted: &[&Task]) -> serde_json::Map<String, serde_json::Value> {
        let own = prompted.iter().filter(|t| self.tasks.contains(&t.id)).count();
        let mut m = serde_json::Map::new();
        m.insert("bandwidth".into(), json!(self.bandwidth));
        m.insert("kde_own_task_prompts".into(), json!(own));
        m
    }
}
