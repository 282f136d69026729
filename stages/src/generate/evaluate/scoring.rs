//! The evaluation's inputs, read once ([`Sources`]); what each task's samples are compared with
//! ([`TaskRefs`]); and each sample scored against them ([`SampleEval`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::Device;
use rayon::prelude::*;
use wspace_stage_api::StageError;

use super::measures::{
    add_noise, agreement, error_iou, mean_score, permuted_accuracy, predictions, random_init, score, unscaled_loss, Score,
};
use crate::data::{Dataset, TaskSplit, Tasks};
use crate::generate::align::task_embeddings;
use crate::generate::model::Aligner;
use crate::generate::sample::{load_samples, SampleRow};
use crate::nn::CnnS;
use crate::tensors::{self, NamedTensors, TensorFile};
use crate::weights::{codec, Codec, Network};
use crate::zoo::multiclass;
use crate::zoo::store::{Checkpoint, Zoo, ZooRow};

/// The stage's input directories.
pub struct Dirs<'a> {
    pub samples: &'a Path,
    pub align: &'a Path,
    pub zoo: &'a Path,
    pub tasks: &'a Path,
    pub data: &'a Path,
    pub embed: &'a Path,
    /// Both or neither: the weight codec, for the decoded-latent references.
    pub codec: Option<(&'a Path, &'a Path)>,
    /// A `multiclass` stage: the row-selection baseline.
    pub row_selection: Option<&'a Path>,
    /// A `replicas` stage: the natural-diversity reference.
    pub replicas: Option<&'a Path>,
    /// A `sample` stage of the same method prompted with the zoo's own tasks: memorisation.
    pub memorisation: Option<&'a Path>,
}

/// A row of the align stage's `pairs.csv`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PairRow {
    pub row: usize,
    pub model_id: usize,
    pub checkpoint: Checkpoint,
    split: TaskSplit,
    task_id: usize,
    val_loss: f64,
}

/// One sample's evaluation.
#[derive(Debug, Clone)]
pub struct SampleEval {
    pub sample: Score,
    pub permuted_accuracy: f64,
    pub trained_final: Score,
    pub trained_early: Score,
    pub row_selection: Score,
    pub nn: Score,
    pub nn_row: (usize, Checkpoint),
    pub nn_noise: Score,
    pub random: Score,
    /// The neighbour's own weight latent, decoded (NaN without the codec inputs).
    pub nn_decoded: Score,
    /// The task's own final zoo models' weight latents, decoded: what a perfect alignment would sample.
    pub own_decoded: Score,
    /// The sample's argmax on each image.
    pub predictions: Vec<u8>,
    /// Agreement of `predictions` with the nearest neighbour's.
    pub nn_agreement: f64,
    /// The test loss before loss control scaled the head (the sample's loss without it).
    pub unscaled_loss: f64,
    /// The largest IoU of the sample's error set with that of one of its task's zoo checkpoints (NaN
    /// when the zoo has no model of the task).
    pub max_iou: f64,
    pub weights: NamedTensors,
}

/// A model of the reference set: its weights, predictions and score on its task's images.
pub struct Reference {
    pub weights: NamedTensors,
    pub predictions: Vec<u8>,
    pub score: Score,
}

impl Reference {
    fn new(arch: &str, weights: NamedTensors, images: &[u8], labels: &[u8]) -> Result<Reference, StageError> {
        let net = Network::build(arch, &weights)?;
        let ev = net.evaluate(images, labels)?;
        let predictions = predictions(&net.logits_u8(images)?);
        Ok(Reference { weights, predictions, score: Score { loss: ev.loss, accuracy: ev.accuracy } })
    }
}

/// The largest error-set IoU of `pred` with one of `models`' (NaN for none).
pub fn max_iou(pred: &[u8], models: &[Reference], labels: &[u8]) -> f64 {
    models.iter().map(|m| error_iou(pred, &m.predictions, labels)).fold(f64::NAN, f64::max)
}

/// What depends on the task alone (its images and its reference models), computed once per task.
pub struct TaskRefs {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    /// The task's `ok` zoo checkpoints (both kinds): what a copy would copy.
    pub checkpoints: Vec<Reference>,
    /// The task's replicas (final checkpoints): models trained independently on it.
    pub replicas: Vec<Reference>,
    trained_final: Score,
    trained_early: Score,
    row_selection: Score,
    own_decoded: Score,
}

/// Everything the evaluation reads, loaded once.
pub struct Sources {
    pub samples: Vec<SampleRow>,
    pub samples_dir: PathBuf,
    /// The memorisation samples (prompts on the zoo's own tasks) and their directory.
    pub memorisation: Option<(Vec<SampleRow>, PathBuf)>,
    replicas: Option<Zoo>,
    pub zoo: Zoo,
    pub arch: String,
    al: Aligner,
    tasks: Tasks,
    data: Dataset,
    emb: Vec<f32>,
    dim: usize,
    all_pairs: Vec<PairRow>,
    /// Positions in `all_pairs` of the train-split pairs: the nearest-neighbour candidates.
    train: Vec<usize>,
    /// Their standardised task embeddings.
    train_emb: Vec<Vec<f32>>,
    /// The codec and the latent of every `pairs.csv` row.
    codec: Option<(Box<dyn Codec>, Vec<f32>)>,
    /// The row-selection baseline's many-class models.
    pub multi: Vec<CnnS>,
    shapes: Vec<(String, Vec<usize>)>,
}

impl Sources {
    pub fn load(dirs: &Dirs) -> Result<Sources, StageError> {
        let samples = load_samples(dirs.samples)?;
        let zoo = Zoo::load(dirs.zoo)?;
        let arch = zoo.meta.arch.clone();
        let al = Aligner::load(dirs.align, &Device::Cpu)?;
        let tasks = Tasks::load(dirs.tasks)?;
        let data = Dataset::load(dirs.data)?;
        let (emb, dim) = task_embeddings(dirs.embed)?;
        let path = dirs.align.join("pairs.csv");
        let all_pairs: Vec<PairRow> = tensors::read_records(&path)?;
        let train: Vec<usize> = (0..all_pairs.len()).filter(|&i| all_pairs[i].split == TaskSplit::Train).collect();
        let codec = match dirs.codec {
            Some((pca, ae)) => {
                let codec = codec::load(pca, ae, &Device::Cpu)?;
                let file = TensorFile::open(&ae.join("latents.safetensors"))?;
                let latents = file.f32_all()?.take("latents").map(|t| t.values).unwrap_or_default();
                if latents.len() != all_pairs.len() * codec.latent_dim() {
                    return Err(StageError::input(
                        "autoencoder",
                        format!(
                            "is not the align stage's: {} has {} latent values for {} pairs",
                            file.path(),
                            latents.len(),
                            all_pairs.len()
                        ),
                    ));
                }
                Some((codec, latents))
            }
            None => None,
        };
        if train.is_empty() {
            return Err(StageError::msg(format!("{}: no train-split pairs for the nearest-neighbour baseline", path.display())));
        }
        let multi: Vec<CnnS> = match dirs.row_selection {
            Some(d) => multiclass::load_models(d)?,
            None => Vec::new(),
        };
        let shapes = zoo.meta.parameters.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        let memorisation = match dirs.memorisation {
            Some(d) => Some((load_samples(d)?, d.to_path_buf())),
            None => None,
        };
        let replicas = dirs.replicas.map(Zoo::load).transpose()?;
        if let Some(r) = replicas.as_ref().filter(|r| r.meta.arch != arch) {
            return Err(StageError::input("replicas", format!("holds `{}` models, the `zoo` input `{arch}`", r.meta.arch)));
        }
        let mut s = Sources {
            samples,
            samples_dir: dirs.samples.to_path_buf(),
            memorisation,
            replicas,
            zoo,
            arch,
            al,
            tasks,
            data,
            emb,
            dim,
            all_pairs,
            train,
            train_emb: Vec::new(),
            codec,
            multi,
            shapes,
        };
        s.train_emb = s.train.iter().map(|&i| s.std_emb(s.all_pairs[i].task_id)).collect::<Result<_, _>>()?;
        Ok(s)
    }

    /// A task's embedding, standardised as the align stage's inputs.
    fn std_emb(&self, task: usize) -> Result<Vec<f32>, StageError> {
        let dim = self.dim;
        let e = self
            .emb
            .get(task * dim..(task + 1) * dim)
            .ok_or_else(|| StageError::input("embed", format!("has no embedding of task {task}")))?;
        Ok(self.al.standardise(e))
    }

    /// The decoded weight latent of a `pairs.csv` row, scored.
    fn decoded(&self, row: usize, images: &[u8], labels: &[u8]) -> Result<Score, StageError> {
        let Some((codec, latents)) = &self.codec else { return Ok(Score::NONE) };
        let k = codec.latent_dim();
        let w = codec.decode(&latents[row * k..(row + 1) * k])?.pop().unwrap_or_default();
        score(&self.arch, &w, images, labels)
    }

    pub fn zoo_row(&self, id: usize, c: Checkpoint) -> Result<&ZooRow, StageError> {
        self.zoo
            .rows
            .iter()
            .find(|r| r.model_id == id && r.checkpoint == c)
            .ok_or_else(|| StageError::msg(format!("zoo has no model {id} ({})", c.as_str())))
    }

    /// A task's test images and their labels in the task's output order.
    fn task_images(&self, task_id: usize) -> Result<(Vec<u8>, Vec<u8>), StageError> {
        let data = &self.data;
        let task = self.tasks.tasks.get(task_id).ok_or_else(|| StageError::input("tasks", format!("has no task {task_id}")))?;
        let mut images = Vec::with_capacity(task.test.len() * data.test.image_len);
        let mut labels = Vec::with_capacity(task.test.len());
        for &i in &task.test {
            let label = data.test.labels.get(i).and_then(|&l| task.local_label(l)).ok_or_else(|| {
                StageError::msg(format!("task {}: test image {i} is missing or not of the task's classes", task.id))
            })?;
            images.extend_from_slice(data.test.image(i));
            labels.push(label as u8);
        }
        Ok((images, labels))
    }

    /// The references of every task the samples (and the memorisation samples) name.
    pub fn task_references(&self) -> Result<BTreeMap<usize, TaskRefs>, StageError> {
        let memorised = self.memorisation.iter().flat_map(|m| &m.0);
        let task_ids: BTreeSet<usize> = self.samples.iter().chain(memorised).map(|s| s.task_id).collect();
        task_ids.into_par_iter().map(|id| Ok((id, self.task_refs(id)?))).collect()
    }

    fn task_refs(&self, id: usize) -> Result<TaskRefs, StageError> {
        let arch = &self.arch;
        let task = self
            .tasks
            .tasks
            .get(id)
            .ok_or_else(|| StageError::input("tasks", format!("has no task {id}, which the samples name")))?;
        let (images, labels) = self.task_images(id)?;
        let rows = self
            .multi
            .iter()
            .map(|m| {
                let three = m.select_rows(task.classes).map_err(|e| StageError::msg(format!("task {id}: row selection: {e}")))?;
                score(arch, &NamedTensors::from(three.named_tensors()), &images, &labels)
            })
            .collect::<Result<Vec<Score>, _>>()?;
        let mut own = BTreeMap::<Checkpoint, Vec<Score>>::new();
        let mut checkpoints = Vec::new();
        for r in self.zoo.rows.iter().filter(|r| r.task_id == id && r.ok()) {
            let model = Reference::new(arch, self.zoo.weights(r)?, &images, &labels)?;
            own.entry(r.checkpoint).or_default().push(model.score);
            checkpoints.push(model);
        }
        let replicas = match &self.replicas {
            Some(z) => z
                .rows
                .iter()
                .filter(|r| r.task_id == id && r.ok() && r.checkpoint == Checkpoint::Final)
                .map(|r| Reference::new(arch, z.weights(r)?, &images, &labels))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let own_decoded: Vec<Score> = self
            .all_pairs
            .iter()
            .filter(|p| p.task_id == id && p.checkpoint == Checkpoint::Final)
            .map(|p| self.decoded(p.row, &images, &labels))
            .collect::<Result<_, _>>()?;
        Ok(TaskRefs {
            trained_final: mean_score(own.get(&Checkpoint::Final).map_or(&[][..], |v| v)),
            trained_early: mean_score(own.get(&Checkpoint::Early).map_or(&[][..], |v| v)),
            row_selection: mean_score(&rows),
            own_decoded: mean_score(&own_decoded),
            images,
            labels,
            checkpoints,
            replicas,
        })
    }

    /// The `k` train-split pairs nearest to sample `s`'s prompt (see the module doc), nearest first
    /// (ties in `pairs.csv` order): their `pairs.csv` rows.
    pub fn nearest(&self, s: &SampleRow, k: usize) -> Result<Vec<&PairRow>, StageError> {
        let d = self.std_emb(s.task_id)?;
        let span = (self.al.config.loss_max - self.al.config.loss_min).max(1e-12);
        let dist: Vec<f64> = (0..self.train.len())
            .map(|j| {
                let de: f64 =
                    d.iter().zip(&self.train_emb[j]).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / self.dim.max(1) as f64;
                de + ((s.target_loss - self.all_pairs[self.train[j]].val_loss) / span).powi(2)
            })
            .collect();
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.sort_by(|&a, &b| dist[a].total_cmp(&dist[b]));
        Ok(order.into_iter().take(k).map(|j| &self.all_pairs[self.train[j]]).collect())
    }

    /// The zoo weights of a `pairs.csv` row.
    pub fn pair_weights(&self, p: &PairRow) -> Result<NamedTensors, StageError> {
        self.zoo.weights(self.zoo_row(p.model_id, p.checkpoint)?)
    }

    /// The weight codec (`None` without the codec inputs).
    pub fn codec(&self) -> Option<&dyn Codec> {
        self.codec.as_ref().map(|c| c.0.as_ref())
    }

    /// The weight latent of a `pairs.csv` row (`None` without the codec inputs).
    pub fn pair_latent(&self, p: &PairRow) -> Option<&[f32]> {
        let (codec, latents) = self.codec.as_ref()?;
        let k = codec.latent_dim();
        Some(&latents[p.row * k..(p.row + 1) * k])
    }

    /// Sample `s` (its file under `dir`) scored on its task's images, beside its task's references and
    /// its own baselines.
    pub fn score_sample(
        &self,
        s: &SampleRow,
        dir: &Path,
        refs: &BTreeMap<usize, TaskRefs>,
        noise: f64,
        seed: u64,
    ) -> Result<SampleEval, StageError> {
        wspace_stage_api::check_stop()?;
        let arch = &self.arch;
        let task =
            self.tasks.tasks.get(s.task_id).ok_or_else(|| {
                StageError::input("tasks", format!("has no task {}, which sample {} names", s.task_id, s.sample))
            })?;
        if task.classes != s.classes() {
            return Err(StageError::input(
                "tasks",
                format!("is not the one the samples were made for: sample {}'s classes differ from task {}'s", s.sample, task.id),
            ));
        }
        let t = &refs[&s.task_id];
        let (images, labels) = (&t.images, &t.labels);
        let weights = TensorFile::open(&dir.join(&s.file))?.f32_all()?;
        let net = Network::build(arch, &weights)?;
        let (ev, logits) = net.evaluate_and_logits(images, labels)?;
        let permuted = permuted_accuracy(&logits, labels);
        let nn = self.nearest(s, 1)?.into_iter().next().ok_or_else(|| StageError::msg("no train-split pairs"))?;
        let nn_weights = self.pair_weights(nn)?;
        let nn_predictions = predictions(&Network::build(arch, &nn_weights)?.logits_u8(images)?);
        let predictions = predictions(&logits);
        let sample_seed = sample_seed(seed, s);
        let unscaled = if s.head_scale == 1.0 { ev.loss } else { unscaled_loss(&logits, labels, s.head_scale) };
        Ok(SampleEval {
            sample: Score { loss: ev.loss, accuracy: ev.accuracy },
            permuted_accuracy: permuted,
            trained_final: t.trained_final,
            trained_early: t.trained_early,
            row_selection: t.row_selection,
            nn: score(arch, &nn_weights, images, labels)?,
            nn_row: (nn.model_id, nn.checkpoint),
            nn_noise: score(arch, &add_noise(&nn_weights, noise, sample_seed ^ 0x4e01), images, labels)?,
            random: score(arch, &random_init(&self.shapes, sample_seed ^ 0x4a4d), images, labels)?,
            nn_decoded: self.decoded(nn.row, images, labels)?,
            own_decoded: t.own_decoded,
            nn_agreement: agreement(&predictions, &nn_predictions),
            unscaled_loss: unscaled,
            max_iou: max_iou(&predictions, &t.checkpoints, labels),
            predictions,
            weights,
        })
    }
}

/// The seed of sample `s`'s noise and random initialisation.
pub fn sample_seed(seed: u64, s: &SampleRow) -> u64 {
    seed.wrapping_mul(1_000_003).wrapping_add(s.sample as u64)
}
