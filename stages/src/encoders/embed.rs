//! The `dataset-embed` stage kind: class-mean image features per class, concatenated per task.
//!
//! For each class `k` of the dataset, the first `images_per_class` training images of `k` (file order)
//! are preprocessed ([`super::preprocess`]) and encoded; their mean feature is the class embedding
//! `e_k ∈ ℝ^d`. Each class is encoded once, however many tasks use it. A task with classes
//! `(a, b, c)` (output-unit order) gets `[e_a; e_b; e_c] ∈ ℝ^{3d}`.
//!
//! The probe ("does the encoder help?"): the first `eval_per_class` *test* images of every class are
//! classified by nearest class mean ([`super::probe`]), once with encoder features against the class
//! embeddings and once with raw pixels (`v/255` at the dataset's resolution) against pixel class means
//! of the same training images. Both use exactly the same images.

use std::path::Path;

use candle_core::Device;
use safetensors::tensor::Dtype;
use serde_json::json;
use wspace_stage_api::{params, Choice, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use super::encoder::{Encoder, EncoderName, ImageShape};
use super::probe;
use crate::data::{Dataset, Tasks};
use crate::device::{DeviceName, DEVICE};
use crate::plot::{self, Heatmap};
use crate::tensors::{self, csv_row, finite_json as num, write_json};

/// The checked parameters of a `dataset-embed` stage.
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub encoder: EncoderName,
    /// `None` = the embedded EfficientNet-Lite0 weights.
    pub weights: Option<std::path::PathBuf>,
    pub images_per_class: usize,
    /// `0` = the encoder's native size.
    pub image_size: usize,
    pub eval_per_class: usize,
    /// Where the encoder runs.
    pub device: DeviceName,
}

params! {
    ENCODER = "encoder": choice(EncoderName) = "efficientnet-lite0", "the image encoder: efficientnet-lite0 (embedded ImageNet weights) or clip-vit-b32 (needs `weights`)";
    WEIGHTS = "weights": Path = "", "encoder weights: a CLIP checkpoint directory (model.safetensors + config.json), or an \
     EfficientNet-Lite0 safetensors file; \"\" = the embedded EfficientNet-Lite0 weights";
    IMAGES_PER_CLASS = "images_per_class": Int = 100, "training images averaged per class (the first N of each class, in file order)";
    IMAGE_SIZE = "image_size": Int = 0, "side the images are resized to (bilinear) before encoding; 0 = the encoder's native size (224)";
    EVAL_PER_CLASS = "eval_per_class": Int = 100, "held-out test images per class for the nearest-class-mean probe (0 = no probe)";
}
/// The kind's parameters, in the order `wspace kinds` lists them.
const PARAMS: &[Param] = &[ENCODER, WEIGHTS, IMAGES_PER_CLASS, IMAGE_SIZE, EVAL_PER_CLASS, DEVICE];

impl EmbedOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        let weights = p.str(&WEIGHTS)?;
        Ok(EmbedOptions {
            encoder: p.choice(&ENCODER)?,
            weights: (!weights.is_empty()).then(|| weights.into()),
            images_per_class: p.positive(&IMAGES_PER_CLASS)?,
            image_size: p.count(&IMAGE_SIZE)?,
            eval_per_class: p.count(&EVAL_PER_CLASS)?,
            device: crate::device::check(p)?,
        })
    }
}

/// What [`embed`] computed, before it is written.
pub struct Embedding {
    pub dim: usize,
    pub image_size: usize,
    /// `[K][d]`.
    pub class_embeddings: Vec<Vec<f32>>,
    /// Training images averaged per class.
    pub class_counts: Vec<usize>,
    pub eval_images: usize,
    /// `(euclidean, cosine)` NCM accuracy on encoder features / raw pixels.
    pub ncm_encoder: (f64, f64),
    pub ncm_pixels: (f64, f64),
    pub cosine_encoder: Vec<Vec<f64>>,
    pub cosine_pixels: Vec<Vec<f64>>,
}

/// The first `n` images of each class in `split`: `(class labels, image indices)`, class by class.
fn first_per_class(split: &crate::data::Split, classes: usize, n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut labels = Vec::new();
    let mut idx = Vec::new();
    for k in 0..classes {
        for i in split.indices_of(k).into_iter().take(n) {
            labels.push(k);
            idx.push(i);
        }
    }
    (labels, idx)
}

/// Encodes the class images and runs the probe; see the [module doc](self).
pub fn embed(
    dataset: &Dataset,
    encoder: &Encoder,
    opts: &EmbedOptions,
    device: &Device,
    progress: &dyn wspace_stage_api::Progress,
) -> Result<Embedding, StageError> {
    let classes = dataset.num_classes();
    let [channels, height, width] = dataset.image_shape();
    if channels != 1 && channels != 3 {
        return Err(StageError::msg(format!("dataset images have {channels} channels; the encoders take 1 (grey) or 3 (RGB)")));
    }
    if height == 0 || width == 0 {
        return Err(StageError::msg(format!("dataset images are {height}×{width}; nothing to encode")));
    }
    let size = encoder.input_size(opts.image_size)?;
    let (train_labels, train_idx) = first_per_class(&dataset.train, classes, opts.images_per_class);
    let mut class_counts = vec![0; classes];
    for &l in &train_labels {
        class_counts[l] += 1;
    }
    if let Some(k) = class_counts.iter().position(|&n| n == 0) {
        return Err(StageError::msg(format!(
            "class {k} (`{}`) has no training images to embed",
            dataset.meta.classes.get(k).map_or("?", String::as_str)
        )));
    }
    let (test_labels, test_idx) = first_per_class(&dataset.test, classes, opts.eval_per_class);

    let train_images: Vec<&[u8]> = train_idx.iter().map(|&i| dataset.train.image(i)).collect();
    let test_images: Vec<&[u8]> = test_idx.iter().map(|&i| dataset.test.image(i)).collect();
    progress.start((train_images.len() + test_images.len()) as u64, "images");
    let shape = ImageShape { channels, height, width };
    let train_feats = encoder.embed(&train_images, shape, size, device, progress)?;
    let test_feats = encoder.embed(&test_images, shape, size, device, progress)?;

    let class_embeddings = probe::class_means(&train_feats, &train_labels, classes);
    let pixels =
        |imgs: &[&[u8]]| -> Vec<Vec<f32>> { imgs.iter().map(|im| im.iter().map(|&v| v as f32 / 255.0).collect()).collect() };
    let pixel_means = probe::class_means(&pixels(&train_images), &train_labels, classes);
    let test_pixels = pixels(&test_images);
    Ok(Embedding {
        dim: encoder.dim(),
        image_size: size,
        ncm_encoder: probe::ncm_accuracy(&class_embeddings, &test_feats, &test_labels),
        ncm_pixels: probe::ncm_accuracy(&pixel_means, &test_pixels, &test_labels),
        cosine_encoder: probe::cosine_matrix(&class_embeddings),
        cosine_pixels: probe::cosine_matrix(&pixel_means),
        class_embeddings,
        class_counts,
        eval_images: test_images.len(),
    })
}

/// Writes the stage output (see the table in [`super`]'s doc) into `out`.
pub fn write_output(
    out: &Path,
    e: &Embedding,
    tasks: &Tasks,
    class_names: &[String],
    opts: &EmbedOptions,
) -> Result<(), StageError> {
    let k = e.class_embeddings.len();
    let d = e.dim;
    let mut task_emb = Vec::with_capacity(tasks.tasks.len() * 3 * d);
    let mut task_classes = Vec::with_capacity(tasks.tasks.len() * 3);
    for t in &tasks.tasks {
        for &c in &t.classes {
            let emb = e
                .class_embeddings
                .get(c)
                .ok_or_else(|| StageError::msg(format!("task {} uses class {c}, but the dataset has only {k} classes", t.id)))?;
            task_emb.extend_from_slice(emb);
            task_classes.extend((c as i64).to_le_bytes());
        }
    }
    let class_bytes = tensors::f32_bytes(&e.class_embeddings.concat());
    let task_bytes = tensors::f32_bytes(&task_emb);
    let n = tasks.tasks.len();
    let path = out.join("embeddings.safetensors");
    tensors::write_safetensors(
        &path,
        &[
            ("class_embeddings", Dtype::F32, vec![k, d], &class_bytes),
            ("task_classes", Dtype::I64, vec![n, 3], &task_classes),
            ("task_embeddings", Dtype::F32, vec![n, 3 * d], &task_bytes),
        ],
    )?;

    let weights = match &opts.weights {
        None => "embedded".to_string(),
        Some(p) => p.file_name().map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into_owned()),
    };
    write_json(
        &out.join("embeddings.json"),
        &json!({
            "encoder": opts.encoder.name(),
            "weights": weights,
            "dim": d,
            "task_dim": 3 * d,
            "image_size": e.image_size,
            "preprocessing": "grey replicated to RGB; bilinear resize (half-pixel centres, no antialias) to image_size²; \
                              efficientnet-lite0: (v − 127)/128; clip-vit-b32: (v/255 − mean)/std per channel",
            "classes": class_names,
            "images_per_class": e.class_counts,
            "tasks": n,
        }),
    )?;

    let mut csv_rows = Vec::new();
    for i in 0..k {
        for j in 0..k {
            csv_rows.push(csv_row![
                class_names[i],
                class_names[j],
                format!("{:.6}", e.cosine_encoder[i][j]),
                format!("{:.6}", e.cosine_pixels[i][j])
            ]);
        }
    }
    tensors::write_csv(&out.join("class_cosine.csv"), &["class_a", "class_b", "cosine_encoder", "cosine_pixels"], csv_rows)?;
    let off = |m: &[Vec<f64>]| {
        (0..k).flat_map(move |i| (0..k).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| m[i][j]).collect::<Vec<_>>()
    };
    let lo = off(&e.cosine_encoder).into_iter().chain(off(&e.cosine_pixels)).fold(1.0f64, f64::min);
    plot::write_heatmap(
        &out.join("class_cosine.svg"),
        &Heatmap {
            title: "Cosine between class-mean embeddings".into(),
            panels: vec![("encoder features".into(), e.cosine_encoder.clone()), ("raw pixels".into(), e.cosine_pixels.clone())],
            x_title: "class (index, as in the rows)".into(),
            y_title: "class".into(),
            row_labels: Some(class_names.to_vec()),
            col_labels: None,
            lo,
            hi: 1.0,
            value_title: "cosine similarity".into(),
        },
    )?;

    let (enc_euc, enc_cos) = e.ncm_encoder;
    let (pix_euc, pix_cos) = e.ncm_pixels;
    write_json(
        &out.join("metrics.json"),
        &json!({
            "dim": d,
            "task_dim": 3 * d,
            "classes": k,
            "tasks": n,
            "image_size": e.image_size,
            "embedded_images": e.class_counts.iter().sum::<usize>(),
            "eval_images": e.eval_images,
            "ncm_accuracy_encoder": num(enc_euc),
            "ncm_accuracy_pixels": num(pix_euc),
            "ncm_accuracy_encoder_cosine": num(enc_cos),
            "ncm_accuracy_pixels_cosine": num(pix_cos),
            "ncm_encoder_minus_pixels": num(enc_euc - pix_euc),
            "ncm_chance": 1.0 / k as f64,
            "mean_class_cosine_encoder": num(probe::mean_off_diagonal(&e.cosine_encoder)),
            "mean_class_cosine_pixels": num(probe::mean_off_diagonal(&e.cosine_pixels)),
            "heatmap_cosine_min": lo,
        }),
    )
}

/// `kind = "dataset-embed"`: see the [module doc](self).
pub struct DatasetEmbedKind;

impl StageKind for DatasetEmbedKind {
    fn name(&self) -> &'static str {
        "dataset-embed"
    }

    fn version(&self) -> u32 {
        2
    }

    fn summary(&self) -> &'static str {
        "per-task dataset embeddings: pretrained image features (EfficientNet-Lite0 or CLIP) averaged per class"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(PARAMS)
    }

    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![("data", true, "a `dataset` stage"), ("tasks", true, "a `tasks` stage sampled from that dataset")])
    }

    fn validate(&self, params: Params) -> Result<(), StageError> {
        EmbedOptions::from_params(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = EmbedOptions::from_params(ctx.view())?;
        let dataset = Dataset::load(ctx.input("data")?)?;
        let tasks = Tasks::load(ctx.input("tasks")?)?;
        if tasks.class_names != dataset.meta.classes {
            return Err(StageError::input(
                "tasks",
                format!(
                    "was sampled from a dataset with classes {:?}, but the `data` input has {:?}",
                    tasks.class_names, dataset.meta.classes
                ),
            ));
        }
        ctx.progress.message(&format!("loading {}", opts.encoder.name()));
        let device = crate::device::open_name(opts.device)?;
        let encoder = Encoder::load(opts.encoder, opts.weights.as_deref(), &device)?;
        let e = embed(&dataset, &encoder, &opts, &device, ctx.progress)?;
        write_output(ctx.out, &e, &tasks, &dataset.meta.classes, &opts)
    }
}
