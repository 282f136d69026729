//! Tests of the encoders against independent references, their errors, and the `dataset-embed` stage.
//!
//! Reference numbers come from committed fixtures only:
//! - `stages/tests/fixtures/efficientnet_lite0_pattern64.json`: a copy of
//!   `../shared/reference/efficientnet_lite0_pattern64.json` (EfficientNet-Lite0 features and top-5
//!   logits computed outside this project with NumPy and PyTorch `F.conv2d`, which agree to 1.4e-5).
//! - `stages/tests/fixtures/efficientnet_lite0_f64.json`: the same forward in float64 and the measured
//!   float32 spread of five PyTorch float32 evaluations around it, written by
//!   `scripts/reference/efficientnet_lite0_f64.py` (torch 2.15.0).
//! - `stages/tests/fixtures/clip/tiny/`: a randomly initialised tiny CLIP and the outputs of
//!   `transformers`' `CLIPModel.get_image_features` on it, written by
//!   `scripts/encoders/clip_tiny_fixture.py` (torch 2.15.0, transformers 5.24.0, seed 0);
//!   `reference_f64.json` there: the same outputs in float64 with the measured float32 spread, written
//!   by `scripts/reference/clip_tiny_f64.py` (torch 2.15.0).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use wspace_stage_api::{StageError, Value};

use super::*;
use crate::data::{DatasetKind, TasksKind};
use crate::test_util::run_stage;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The reference input: `x[0, c, h, w] = 1.5 · sin(0.013 · (h·W + w) · (c + 1) + phase)`.
fn pattern(h: usize, w: usize, phase: f64) -> Tensor {
    let mut v = Vec::with_capacity(3 * h * w);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                v.push((1.5 * (0.013 * ((y * w + x) * (c + 1)) as f64 + phase).sin()) as f32);
            }
        }
    }
    Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap()
}

/// Safety factor over a measured float32 spread: another correct float32 evaluation order (candle's
/// gemm and the depthwise op here) is another draw of the same size as PyTorch's; the five measured
/// PyTorch orders vary by ×1.15 (features) and ×1.5 (logits), so 4 leaves room for a far worse draw.
const K: f64 = 4.0;

/// Features and the top-5 logits against PyTorch in float64 (same float32 weights and input), within
/// K × the float32 spread measured by `scripts/reference/efficientnet_lite0_f64.py` (largest
/// |float32 − float64| of five PyTorch float32 evaluations: oneDNN or im2col + BLAS, NCHW or
/// channels-last, 1 or 4 threads, BatchNorm folded in float32 as here; 1.2e-5 for the features,
/// 2e-6 relative to their largest value, 6). The top-5 classes and their order must be the float64 ones
/// (their logits are ≥ 0.25 apart, far above the bound). The external float32 reference must be within
/// the same bound of the float64 run, so both fixtures describe one network.
#[test]
fn efficientnet_lite0_matches_the_reference_features_and_top5() {
    let text = std::fs::read_to_string(fixtures().join("efficientnet_lite0_f64.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let text = std::fs::read_to_string(fixtures().join("efficientnet_lite0_pattern64.json")).unwrap();
    let external: serde_json::Value = serde_json::from_str(&text).unwrap();
    let inp = &r["input"];
    let (h, w, phase) =
        (inp["height"].as_u64().unwrap() as usize, inp["width"].as_u64().unwrap() as usize, inp["phase"].as_f64().unwrap());
    assert_eq!((h, w, phase), (64, 64, external["pattern64"]["phase"].as_f64().unwrap()));
    let f64s = |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
    let want = f64s(&r["features"]);
    let spread = &r["f32_spread"]["max"];
    let feature_bound = K * spread["features"].as_f64().unwrap();
    let logit_bound = K * spread["logits_top5"].as_f64().unwrap();

    let model = EfficientNetLite0::embedded(&Device::Cpu).unwrap();
    let feats = model.features(&pattern(h, w, phase)).unwrap();
    assert_eq!(feats.dims(), [1, 1280]);
    let got = feats.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let err = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
    eprintln!("EfficientNet-Lite0 max |features − float64| = {err:.3e} (bound {feature_bound:.3e})");
    assert!(err <= feature_bound, "max |features − float64 reference| = {err:.3e} > {feature_bound:.3e}");
    let ext = f64s(&external["pattern64"]["features"]);
    let ext_err = ext.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(ext_err <= feature_bound, "the external reference is {ext_err:.3e} from the float64 run");

    let logits = model.logits(&feats).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let ext_top5: Vec<u64> =
        external["pattern64"]["logits_top5"].as_array().unwrap().iter().map(|p| p[0].as_u64().unwrap()).collect();
    for (rank, pair) in r["logits_top5"].as_array().unwrap().iter().enumerate() {
        let (class, logit) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap());
        assert_eq!(order[rank], class, "top-5 rank {rank}: got class {}, float64 reference {class}", order[rank]);
        assert_eq!(ext_top5[rank], class as u64, "the external reference's rank {rank}");
        let e = (logits[class] as f64 - logit).abs();
        assert!(e <= logit_bound, "logit of class {class}: {} vs {logit} (error {e:.3e} > {logit_bound:.3e})", logits[class]);
    }
}

/// Batching does not change an image's features (the stage encodes batches of 8), and any input side
/// works (global pooling).
#[test]
fn efficientnet_lite0_batches_consistently_at_other_sizes() {
    let model = EfficientNetLite0::embedded(&Device::Cpu).unwrap();
    let a = pattern(33, 33, 0.0);
    let b = pattern(33, 33, 1.0);
    let both = Tensor::cat(&[&a, &b], 0).unwrap();
    let fb = model.features(&both).unwrap().to_vec2::<f32>().unwrap();
    let fa = model.features(&a).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(fb.len(), 2);
    // Batching can change only the order of float32 reductions (the matrix products' row count), so
    // the budget is that of another float32 order: K × the measured spread of the float64 fixture.
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("efficientnet_lite0_f64.json")).unwrap()).unwrap();
    let bound = (K * r["f32_spread"]["max"]["features"].as_f64().unwrap()) as f32;
    let diff = max_abs_diff(&fa[0], &fb[0]);
    eprintln!("batched vs single features: max difference {diff:.3e} (bound {bound:.3e})");
    assert!(diff <= bound, "batching changed the features by {diff}");
}

fn clip_reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("clip/tiny/reference.json")).unwrap()).unwrap()
}

/// The reference input of `clip_tiny_fixture.py`: `sin(0.05 · (h·W + w) · (c + 1) + 0.7 · b)`.
fn clip_input(b: usize, h: usize, w: usize) -> Tensor {
    let mut v = Vec::new();
    for bi in 0..b {
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    v.push((0.05 * ((y * w + x) * (c + 1)) as f64 + 0.7 * bi as f64).sin() as f32);
                }
            }
        }
    }
    Tensor::from_vec(v, (b, 3, h, w), &Device::Cpu).unwrap()
}

/// Against a float64 forward of the same tiny CLIP (`scripts/reference/clip_tiny_f64.py`, which first
/// reproduces `transformers`' float32 `get_image_features` / `pooler_output` of `reference.json` to
/// 4e-7), within K × max(spread, u × max|value|): the spread is the largest |float32 − float64| of eight
/// float32 evaluations (1 or 4 threads, explicit softmax or fused attention, `F.linear` or `x @ Wᵀ`),
/// 4.7e-7; u = 2⁻²⁴. `transformers`' own float32 outputs must be within the same bound.
#[test]
fn clip_vision_matches_transformers_on_a_tiny_random_model() {
    let r = clip_reference();
    let r64: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("clip/tiny/reference_f64.json")).unwrap()).unwrap();
    let model = ClipVision::load(&fixtures().join("clip/tiny"), &Device::Cpu).unwrap();
    assert_eq!(model.dim(), 16);
    assert_eq!(model.config.hidden_act, clip::Activation::QuickGelu);
    let x = clip_input(
        r["batch"].as_u64().unwrap() as usize,
        r["height"].as_u64().unwrap() as usize,
        r["width"].as_u64().unwrap() as usize,
    );
    let rows = |v: &serde_json::Value| -> Vec<Vec<f64>> {
        v.as_array().unwrap().iter().map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()).collect()
    };
    for (key, got) in [("image_features", model.features(&x).unwrap()), ("pooled", model.pooled(&x).unwrap())] {
        let got = got.to_vec2::<f32>().unwrap();
        let want = rows(&r64[key]);
        let transformers = rows(&r[key]);
        let scale = want.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
        let bound = K * r64["f32_spread"]["max"][key].as_f64().unwrap().max(f32::EPSILON as f64 / 2.0 * scale);
        assert_eq!(got.len(), want.len());
        for ((g, w), t) in got.iter().zip(&want).zip(&transformers) {
            assert_eq!(g.len(), w.len());
            let err = g.iter().zip(w).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            let t_err = t.iter().zip(w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            eprintln!("tiny CLIP {key}: max error {err:.3e} (transformers float32: {t_err:.3e}; bound {bound:.3e})");
            assert!(err <= bound, "{key}: max error {err:.3e} vs float64 > {bound:.3e}");
            assert!(t_err <= bound, "{key}: transformers' reference is {t_err:.3e} from the float64 run");
        }
    }
    // The model file alone (config.json found beside it) loads the same model.
    let again = ClipVision::load(&fixtures().join("clip/tiny/model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(again.config, model.config);
}

fn err_text(r: Result<impl Sized, StageError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_or_wrong_weight_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let tiny = fixtures().join("clip/tiny");

    let e = err_text(ClipVision::load(&tmp.path().join("nope"), &dev));
    assert!(e.contains("nope") && e.contains("CLIP checkpoint not found"), "{e}");

    let e = err_text(ClipVision::load(tmp.path(), &dev));
    assert!(e.contains("model.safetensors") && e.contains("not found"), "{e}");

    std::fs::copy(tiny.join("model.safetensors"), tmp.path().join("model.safetensors")).unwrap();
    let e = err_text(ClipVision::load(tmp.path(), &dev));
    assert!(e.contains("config.json") && e.contains("not found"), "{e}");

    // A config whose patch grid does not fit the weights: the tensor and both shapes are named.
    let config = std::fs::read_to_string(tiny.join("config.json")).unwrap().replace("\"patch_size\": 8", "\"patch_size\": 16");
    std::fs::write(tmp.path().join("config.json"), config).unwrap();
    let e = err_text(ClipVision::load(tmp.path(), &dev));
    assert!(
        e.contains("model.safetensors") && e.contains("vision_model.embeddings.patch_embedding.weight") && e.contains("shape"),
        "{e}"
    );

    // A file that is not safetensors.
    std::fs::write(tmp.path().join("garbage.safetensors"), b"not a safetensors file").unwrap();
    let e = err_text(EfficientNetLite0::from_file(&tmp.path().join("garbage.safetensors"), &dev));
    assert!(e.contains("garbage.safetensors") && e.contains("not a valid safetensors file"), "{e}");

    // The CLIP file given as EfficientNet weights: the first missing tensor is named.
    let e = err_text(EfficientNetLite0::from_file(&tiny.join("model.safetensors"), &dev));
    assert!(e.contains("model.safetensors") && e.contains("`_conv_stem.weight` missing"), "{e}");

    let e = err_text(EfficientNetLite0::from_file(&tmp.path().join("absent.safetensors"), &dev));
    assert!(e.contains("absent.safetensors"), "{e}");

    let e = err_text(ClipVisionConfig::parse("cfg.json", "{\"model_type\": \"clip\"}"));
    assert!(e.contains("cfg.json") && e.contains("vision_config"), "{e}");
    let e = err_text(Encoder::load(EncoderName::ClipVitB32, None, &dev));
    assert!(e.contains("`weights` is required") && e.contains("clip-vit-b32"), "{e}");
}

fn read_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (t.shape().to_vec(), t.data().to_vec())
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// The stage on the embedded Fashion-MNIST subset with the tiny CLIP (fast) and with EfficientNet-Lite0
/// at 32×32: shapes, task rows = concatenated class rows, metrics, byte-identical reruns.
#[test]
fn dataset_embed_stage_writes_class_and_task_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let (data, tasks) = (p.join("data"), p.join("tasks"));
    run_stage(&DatasetKind, &[("train_per_class", Value::Int(6)), ("test_per_class", Value::Int(4))], &[], &data).unwrap();
    run_stage(&TasksKind, &[("count", Value::Int(12)), ("train_per_class", Value::Int(4))], &[("data", &data)], &tasks).unwrap();
    let inputs = [("data", data.as_path()), ("tasks", tasks.as_path())];
    let tiny = fixtures().join("clip/tiny");
    let clip_params = [
        ("encoder", Value::Str("clip-vit-b32".into())),
        ("weights", Value::Str(tiny.to_string_lossy().into_owned())),
        ("images_per_class", Value::Int(5)),
        ("eval_per_class", Value::Int(3)),
    ];
    let (a, b) = (p.join("a"), p.join("b"));
    run_stage(&DatasetEmbedKind, &clip_params, &inputs, &a).unwrap();
    run_stage(&DatasetEmbedKind, &clip_params, &inputs, &b).unwrap();
    for f in ["embeddings.safetensors", "embeddings.json", "class_cosine.csv", "class_cosine.svg", "metrics.json"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs between runs");
    }
    let st = a.join("embeddings.safetensors");
    let (cshape, cdata) = read_tensor(&st, "class_embeddings");
    let (tshape, tdata) = read_tensor(&st, "task_embeddings");
    let (_, classes) = read_tensor(&st, "task_classes");
    assert_eq!(cshape, [10, 16]);
    assert_eq!(tshape, [12, 48]);
    let (cv, tv) = (f32s(&cdata), f32s(&tdata));
    let classes: Vec<i64> = classes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let loaded = crate::data::Tasks::load(&tasks).unwrap();
    for (t, task) in loaded.tasks.iter().enumerate() {
        for (slot, &c) in task.classes.iter().enumerate() {
            assert_eq!(classes[t * 3 + slot], c as i64);
            assert_eq!(&tv[t * 48 + slot * 16..][..16], &cv[c * 16..][..16], "task {t} slot {slot}");
        }
    }
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["eval_images"], 30);
    assert_eq!(m["embedded_images"], 50);
    assert_eq!(m["image_size"], 32);
    for key in ["ncm_accuracy_encoder", "ncm_accuracy_pixels", "ncm_accuracy_encoder_cosine", "mean_class_cosine_encoder"] {
        assert!(m[key].as_f64().is_some_and(f64::is_finite), "{key}: {}", m[key]);
    }
    let csv = std::fs::read_to_string(a.join("class_cosine.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 100);
    assert!(csv.lines().nth(1).unwrap().starts_with("T-shirt/top,T-shirt/top,1.000000,1.000000"));

    // EfficientNet-Lite0 (embedded weights) at a small size: 1280-d classes, 3840-d tasks.
    let c = p.join("c");
    let eff = [("image_size", Value::Int(32)), ("images_per_class", Value::Int(2)), ("eval_per_class", Value::Int(1))];
    run_stage(&DatasetEmbedKind, &eff, &inputs, &c).unwrap();
    let (cshape, _) = read_tensor(&c.join("embeddings.safetensors"), "class_embeddings");
    let (tshape, _) = read_tensor(&c.join("embeddings.safetensors"), "task_embeddings");
    assert_eq!((cshape, tshape), (vec![10, 1280], vec![12, 3840]));

    // User errors are messages, not panics.
    let e = err_text(run_stage(&DatasetEmbedKind, &[("encoder", Value::Str("clip-vit-b32".into()))], &inputs, &p.join("d")));
    assert!(e.contains("`weights` is required") && e.contains("clip-vit-b32"), "{e}");
    let bad_size = [clip_params[0].clone(), clip_params[1].clone(), ("image_size", Value::Int(64))];
    let e = err_text(run_stage(&DatasetEmbedKind, &bad_size, &inputs, &p.join("e")));
    assert!(e.contains("exactly 32×32"), "{e}");
    let e = err_text(run_stage(&DatasetEmbedKind, &[("images_per_class", Value::Int(0))], &inputs, &p.join("f")));
    assert!(e.contains("images_per_class"), "{e}");
}
