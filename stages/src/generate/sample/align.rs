//! `method = "align"`, the thesis's sampler: `z_proj = align(task embedding, target)` decoded by the
//! weight codec. Draw 0 is `z_proj` itself; draw `j ≥ 1` adds `N(0, (0.1·s_i)²)` to coordinate `i`,
//! `s_i` the coordinate's std over the autoencoder's latents.

use rand_chacha::ChaCha8Rng;
use wspace_stage_api::{Params, StageError};

use super::{coordinate_std, Method, MethodInputs, Sampler};
use crate::data::Task;
use crate::generate::align::task_embeddings;
use crate::generate::model::Aligner;
use crate::sampling::normal_f32;
use crate::tensors::{NamedTensors, TensorFile};
use crate::weights::{codec, Codec};

pub const METHOD: Method = Method {
    name: "align",
    inputs: &[
        ("align", "method align: an `align` stage"),
        ("pca", "methods align, kde, flow: the `pca` stage the autoencoder was trained on"),
        ("autoencoder", "methods align, kde, flow: the `autoencoder` stage (its codec; kde: its latents)"),
        ("embed", "method align: the `dataset-embed` stage the align stage used"),
    ],
    params: &[],
    validate: super::nothing_to_check,
    load,
};

struct Align {
    al: Aligner,
    codec: Box<dyn Codec>,
    emb: Vec<f32>,
    dim: usize,
    /// Per-coordinate std of the autoencoder's latents.
    latent_std: Vec<f32>,
}

fn load(inputs: &MethodInputs, _: Params) -> Result<Box<dyn Sampler>, StageError> {
    let (ae, embed) = (inputs.need("autoencoder")?, inputs.need("embed")?);
    let al = Aligner::load(inputs.need("align")?, &inputs.device)?;
    let codec = codec::load(inputs.need("pca")?, ae, &inputs.device)?;
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
    Ok(Box::new(Align { al, codec, emb, dim, latent_std }))
}

impl Sampler for Align {
    fn loss_range(&self) -> (f64, f64) {
        (self.al.config.loss_min, self.al.config.loss_max)
    }
    fn arch(&self) -> &str {
        self.codec.arch()
    }
    fn make(&self, task: &Task, grid: &[f64], draws: usize, rng: &mut ChaCha8Rng) -> Result<Vec<NamedTensors>, StageError> {
        let (dim, k) = (self.dim, self.codec.latent_dim());
        let e = self
            .emb
            .get(task.id * dim..(task.id + 1) * dim)
            .ok_or_else(|| StageError::input("embed", format!("has no embedding of task {}: it is of other tasks", task.id)))?;
        let raw: Vec<f32> = grid.iter().flat_map(|_| e.iter().copied()).collect();
        let z = self.al.project(&raw, grid)?;
        let mut all = Vec::with_capacity(grid.len() * draws * k);
        for zt in z.chunks(k) {
            for j in 0..draws {
                all.extend(zt.iter().zip(&self.latent_std).map(|(v, s)| if j == 0 { *v } else { v + 0.1 * s * normal_f32(rng) }));
            }
        }
        self.codec.decode(&all)
    }
}
