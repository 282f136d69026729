//! `zoo-import` on the committed fixtures (`stages/tests/fixtures/zoos/`, written by
//! `scripts/reference/zoo_fixtures.py` with PyTorch and NumPy): tensors bit-identical to the source's
//! (`expected.json`), recorded accuracies reproduced by the project's forward pass, downstream kinds
//! on the imported zoo, and every bad input of issue 24.

use std::path::{Path, PathBuf};

use wspace_stage_api::{StageKind, Value};

use super::arch::{ImportArch, Nlin, Padding};
use super::ZooImportKind;
use crate::data::DatasetOptions;
use crate::test_util::{run_stage, s};
use crate::zoo::store::{Checkpoint, Zoo};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoos")
}

fn import(format: &str, path: &Path, extra: &[(&str, Value)]) -> (tempfile::TempDir, Result<(), wspace_stage_api::StageError>) {
    let out = tempfile::tempdir().unwrap();
    let mut params = vec![("format", s(format)), ("path", s(path.to_str().unwrap()))];
    params.extend(extra.iter().cloned());
    let r = run_stage(&ZooImportKind, &params, &[], out.path());
    (out, r)
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

/// Every imported tensor against the source's: shape, float64 sum, five exact float32 samples.
fn assert_same_tensors(zoo: &Zoo, row: &crate::zoo::store::ZooRow, key: &str, expected: &serde_json::Value) {
    let want = expected.get(key).unwrap_or_else(|| panic!("expected.json has no {key}"));
    let weights = zoo.weights(row).unwrap();
    assert_eq!(weights.len(), want.as_object().unwrap().len(), "{key}");
    for t in &weights {
        let w = &want[&t.name];
        let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
        assert_eq!(t.shape, shape, "{key} {}", t.name);
        for pair in w["samples"].as_array().unwrap() {
            let (i, v) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32);
            assert_eq!(t.values[i].to_bits(), v.to_bits(), "{key} {}[{i}]", t.name);
        }
        let sum: f64 = t.values.iter().map(|&x| x as f64).sum();
        // The same float32 values summed in float64 in another order: equal to ~1e-12 of the sum of |x|.
        let scale: f64 = t.values.iter().map(|&x| (x as f64).abs()).sum::<f64>().max(1.0);
        assert!((sum - w["sum"].as_f64().unwrap()).abs() < 1e-9 * scale, "{key} {}: sum {sum} vs {}", t.name, w["sum"]);
    }
}

/// The first 200 test images of the embedded Fashion-MNIST and their labels (what the fixtures
/// recorded their accuracies on).
fn test_images() -> (Vec<u8>, Vec<i64>) {
    let data = DatasetOptions::default().build().unwrap();
    (data.test.images[..200 * 784].to_vec(), data.test.labels[..200].to_vec())
}

#[test]
fn model_zoos_import_is_bit_identical_and_reproduces_the_recorded_accuracies() {
    let (images, labels) = test_images();
    let expected = expected();
    let mut compared = 0;
    for zoo_name in ["seed", "hyp"] {
        let src = fixtures().join("model-zoos").join(zoo_name);
        let started = std::time::Instant::now();
        let (out, r) = import("model-zoos", &src, &[("early_epoch", Value::Int(2))]);
        r.unwrap();
        eprintln!("imported model-zoos/{zoo_name} in {:?}", started.elapsed());
        let zoo = Zoo::load(out.path()).unwrap();
        let n = if zoo_name == "seed" { 3 } else { 4 };
        assert_eq!((zoo.meta.models, zoo.rows.len()), (n, 2 * n));
        let long = zoo_name == "seed";
        for row in &zoo.rows {
            let source = source_of(out.path(), row.model_id);
            let epoch = if row.checkpoint == Checkpoint::Early { 2 } else { 4 };
            assert_eq!(row.epoch, epoch);
            let ck = if long { format!("checkpoint_{epoch:06}") } else { format!("checkpoint_{epoch}") };
            assert_same_tensors(&zoo, row, &format!("model-zoos/{zoo_name}/{source}/{ck}"), &expected);
            let arch = ImportArch::from_name(&row.arch).unwrap();
            let acc = arch.accuracy(&zoo.weights(row).unwrap(), &images, &labels).unwrap();
            assert!(
                (acc - row.test_acc).abs() <= 0.005,
                "{source} epoch {epoch} ({}): {acc} vs recorded {}",
                row.arch,
                row.test_acc
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 14);
}

/// The `source` column of a model's rows.
fn source_of(zoo_dir: &Path, model_id: usize) -> String {
    let mut r = csv::Reader::from_path(zoo_dir.join("zoo.csv")).unwrap();
    let h = r.headers().unwrap().clone();
    let (id, src) = (h.iter().position(|c| c == "model_id").unwrap(), h.iter().position(|c| c == "source").unwrap());
    r.records().map(|r| r.unwrap()).find(|r| r[id] == model_id.to_string()).map(|r| r[src].to_string()).unwrap()
}

#[test]
fn model_zoos_columns_keep_the_sources_names_and_the_nlin_is_in_the_arch() {
    let (out, r) = import("model-zoos", &fixtures().join("model-zoos/hyp"), &[]);
    r.unwrap();
    let zoo = Zoo::load(out.path()).unwrap();
    let archs: Vec<&str> = zoo.rows.iter().map(|r| r.arch.as_str()).collect();
    assert_eq!(archs, ["cnn-s-c10-relu", "cnn-s-c10-gelu", "cnn-s-c10-sigmoid", "cnn-s-c10-leakyrelu"]);
    assert_eq!(zoo.meta.arch, "mixed:cnn-s-c10-gelu,cnn-s-c10-leakyrelu,cnn-s-c10-relu,cnn-s-c10-sigmoid");
    let text = std::fs::read_to_string(out.path().join("zoo.csv")).unwrap();
    let header = text.lines().next().unwrap();
    for col in ["model::dropout", "model::nlin", "training::epochs_train", "classes", "source", "train_acc"] {
        assert!(header.split(',').any(|c| c == col), "zoo.csv lacks `{col}`: {header}");
    }
    assert!(!header.contains("optim::lr"), "a mapped key keeps no column of its own: {header}");
    let first = &zoo.rows[0];
    assert_eq!((first.optimizer.as_str(), first.lr, first.batch_size, first.seed), ("adam", 3e-3, 20, 4));
    assert_eq!(zoo.rows.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(), ["train", "train", "train", "test"]);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap()).unwrap();
    assert_eq!((metrics["models"].as_u64(), metrics["skipped"].as_u64()), (Some(4), Some(0)));
}

#[test]
fn small_cnn_zoo_import_is_bit_identical_after_the_reshapes_and_reproduces_the_accuracies() {
    let (images, labels) = test_images();
    let expected = expected();
    let started = std::time::Instant::now();
    let (out, r) = import("small-cnn-zoo", &fixtures().join("small-cnn-zoo"), &[("early_epoch", Value::Int(60))]);
    r.unwrap();
    eprintln!("imported small-cnn-zoo in {:?}", started.elapsed());
    let zoo = Zoo::load(out.path()).unwrap();
    assert_eq!((zoo.meta.models, zoo.rows.len()), (3, 6));
    for row in &zoo.rows {
        // Run r's steps 0, 60, 120 are weights rows 3r, 3r + 1, 3r + 2.
        let index = 3 * row.model_id + if row.checkpoint == Checkpoint::Early { 1 } else { 2 };
        assert_same_tensors(&zoo, row, &format!("small-cnn-zoo/row{index}"), &expected);
        let arch = ImportArch::from_name(&row.arch).unwrap();
        assert_eq!(
            arch,
            ImportArch::SmallCnn { nlin: if row.model_id == 1 { Nlin::Tanh } else { Nlin::Relu }, padding: Padding::Same }
        );
        let acc = arch.accuracy(&zoo.weights(row).unwrap(), &images, &labels).unwrap();
        assert!(
            (acc - row.test_acc).abs() <= 0.005,
            "model {} step {}: {acc} vs recorded {}",
            row.model_id,
            row.epoch,
            row.test_acc
        );
    }
}

#[test]
fn arch_names_round_trip_and_describe_tokens_and_symmetries() {
    for arch in [
        ImportArch::CnnS { classes: 3, nlin: Nlin::Tanh },
        ImportArch::CnnS { classes: 10, nlin: Nlin::Gelu },
        ImportArch::SmallCnn { nlin: Nlin::Relu, padding: Padding::Valid },
        ImportArch::SmallCnn { nlin: Nlin::LeakyRelu, padding: Padding::Same },
    ] {
        assert_eq!(ImportArch::from_name(&arch.name()), Some(arch), "{}", arch.name());
    }
    let ours = ImportArch::CnnS { classes: 3, nlin: Nlin::Tanh };
    assert_eq!(ours.name(), "cnn-s");
    let names: Vec<(String, Vec<usize>)> = ours.tensors().into_iter().map(|p| (p.name, p.shape)).collect();
    let kernel: Vec<(String, Vec<usize>)> =
        crate::nn::PARAM_SPECS.iter().map(|p| (p.name.to_string(), p.shape.to_vec())).collect();
    assert_eq!(names, kernel, "the imported 3-class tanh cnn-s is the project's cnn-s, tensor for tensor");
    assert_eq!(ImportArch::CnnS { classes: 10, nlin: Nlin::Relu }.num_params(), 2464);
    assert_eq!(ImportArch::SmallCnn { nlin: Nlin::Relu, padding: Padding::Same }.num_params(), 4970);
    let tokens = ImportArch::SmallCnn { nlin: Nlin::Relu, padding: Padding::Same }.token_layers();
    assert_eq!(tokens, [("conv1", 16, 10), ("conv2", 16, 145), ("conv3", 16, 145), ("fc", 10, 17)]);
    let sym = ImportArch::CnnS { classes: 10, nlin: Nlin::Tanh }.symmetries();
    assert_eq!((sym.permutable, sym.sign_flips), (vec!["conv1", "conv2", "conv3", "fc1"], vec!["conv3", "fc1"]));
    assert!(ImportArch::CnnS { classes: 10, nlin: Nlin::Relu }.symmetries().sign_flips.is_empty());
}

#[test]
fn the_candle_forward_of_the_3_class_tanh_cnn_s_matches_the_fast_kernel() {
    let (images, _) = test_images();
    let model = crate::nn::CnnS::init(7);
    let weights: crate::tensors::NamedTensors = model.named_tensors().into();
    let candle = ImportArch::CnnS { classes: 3, nlin: Nlin::Tanh }.logits(&weights, &images[..20 * 784]).unwrap();
    let kernel = crate::nn::logits_u8(&model, &images[..20 * 784]);
    for (a, b) in candle.iter().zip(&kernel) {
        for k in 0..3 {
            // float32, different summation orders and the kernel's tanh approximation (≤ 5e-7): 1e-4 is
            // far above both and far below any change of a prediction.
            assert!((a[k] - b[k]).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn an_imported_zoo_feeds_pca_unchanged() {
    let (zoo, r) = import("model-zoos", &fixtures().join("model-zoos/seed"), &[("test_fraction", Value::Float(0.0))]);
    r.unwrap();
    let out = tempfile::tempdir().unwrap();
    run_stage(&crate::weights::PcaKind, &[("components", Value::Int(2))], &[("zoo", zoo.path())], out.path()).unwrap();
    let pca: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("pca.json")).unwrap()).unwrap();
    assert_eq!(pca["arch"], "cnn-s-c10-tanh");
    assert_eq!(pca["rows"].as_array().unwrap().len(), 3);
}

#[test]
fn an_imported_zoo_of_either_format_trains_the_token_transformer_and_is_evaluated_on_all_classes() {
    use crate::tensors::TensorFile;
    use crate::weights::tokens::TokenLayout;
    // (format, fixture, early checkpoint, architecture, tokens: one per output unit of every layer). The
    // Small CNN Zoo fixture mixes relu and tanh models (`mixed:small-cnn-relu,small-cnn-tanh`): one
    // token layout, each model run with its own activation.
    let cases = [
        ("model-zoos", fixtures().join("model-zoos/seed"), 2, "cnn-s-c10-tanh", 8 + 6 + 4 + 20 + 10),
        ("small-cnn-zoo", fixtures().join("small-cnn-zoo"), 60, "small-cnn-relu", 16 + 16 + 16 + 10),
    ];
    for (format, path, early, arch, tokens) in cases {
        let (zoo, r) = import(format, &path, &[("early_epoch", Value::Int(early))]);
        r.unwrap();
        let pca = tempfile::tempdir().unwrap();
        run_stage(&crate::weights::PcaKind, &[("components", Value::Int(2))], &[("zoo", zoo.path())], pca.path()).unwrap();
        let ae = tempfile::tempdir().unwrap();
        let params = [
            ("architecture", s("transformer")),
            ("epochs", Value::Int(2)),
            ("batch_size", Value::Int(2)),
            ("d_model", Value::Int(16)),
            ("heads", Value::Int(2)),
            ("layers", Value::Int(1)),
            ("token_latent", Value::Int(4)),
        ];
        run_stage(&crate::weights::AutoencoderKind, &params, &[("pca", pca.path()), ("zoo", zoo.path())], ae.path())
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(ae.path().join("metrics.json")).unwrap()).unwrap();
        assert_eq!(metrics["tokens"], tokens, "{format}");
        let latents = TensorFile::open(&ae.path().join("latents.safetensors")).unwrap().f32("latents").unwrap();
        assert_eq!(latents.shape, vec![3, tokens * 4], "{format}: the pca rows, each model's final checkpoint");

        // The decoder's output has the imported architecture's tensors, and the layout inverts exactly.
        let codec = crate::weights::codec::load(pca.path(), ae.path(), &candle_core::Device::Cpu).unwrap();
        let decoded = codec.decode(&latents.values[..tokens * 4]).unwrap();
        let source = Zoo::load(zoo.path()).unwrap();
        let original = source.weights(&source.rows[0]).unwrap();
        let names = |w: &crate::tensors::NamedTensors| w.iter().map(|t| (t.name.clone(), t.shape.clone())).collect::<Vec<_>>();
        assert_eq!(names(&decoded[0]), names(&original), "{format}");
        let layout = TokenLayout::new(arch, None).unwrap();
        let flat = layout.flat_of(&original).unwrap();
        assert_eq!(layout.detokenise(&layout.tokenise(&flat)), flat, "{format}");

        // evaluate-reconstruction without `tasks`: each model's task is all 10 classes of the dataset.
        let data = tempfile::tempdir().unwrap();
        run_stage(&crate::data::DatasetKind, &[("test_per_class", Value::Int(20))], &[], data.path()).unwrap();
        let eval = tempfile::tempdir().unwrap();
        let inputs = [("zoo", zoo.path()), ("pca", pca.path()), ("autoencoder", ae.path()), ("data", data.path())];
        run_stage(&crate::weights::EvaluateReconstructionKind, &[], &inputs, eval.path())
            .unwrap_or_else(|e| panic!("{format}: {e}"));
        let dataset = crate::data::Dataset::load(data.path()).unwrap();
        let mut csv = csv::Reader::from_path(eval.path().join("reconstruction.csv")).unwrap();
        let h = csv.headers().unwrap().clone();
        let col = |name: &str| h.iter().position(|c| c == name).unwrap();
        let mut variants = std::collections::BTreeSet::new();
        for rec in csv.records().map(Result::unwrap) {
            variants.insert(rec[col("variant")].to_string());
            let id: usize = rec[col("model_id")].parse().unwrap();
            let row = source.rows.iter().find(|r| r.model_id == id && r.checkpoint.as_str() == &rec[col("checkpoint")]).unwrap();
            // The stage's accuracy of the original is the import's own forward pass on the whole test split.
            let want = ImportArch::from_name(&row.arch)
                .unwrap()
                .accuracy(&source.weights(row).unwrap(), &dataset.test.images, &dataset.test.labels)
                .unwrap();
            let got: f64 = rec[col("original_accuracy")].parse().unwrap();
            assert!((got - want).abs() < 1e-12, "{format} model {id}: {got} vs {want}");
            let agreement: f64 = rec[col("real_agreement")].parse().unwrap();
            assert!((0.0..=1.0).contains(&agreement), "{format}: {agreement}");
        }
        let want: std::collections::BTreeSet<String> = ["mean", "pca", "tokens_ae"].map(String::from).into();
        assert_eq!(variants, want, "{format}");
    }
}

#[test]
fn the_sources_preprocessing_is_recorded_in_the_zoo_and_applied_by_evaluate_reconstruction() {
    use crate::resnet::InputTransform;
    let seed = fixtures().join("model-zoos/seed");
    let (zoo, r) = import("model-zoos", &seed, &[("input_mean", Value::Float(0.5)), ("input_std", Value::Float(0.25))]);
    r.unwrap();
    let source = Zoo::load(zoo.path()).unwrap();
    assert_eq!(source.meta.input, Some(InputTransform { mean: [0.5; 3], std: [0.25; 3] }));
    let root = tempfile::tempdir().unwrap();
    let (pca, data, eval) = (root.path().join("pca"), root.path().join("data"), root.path().join("eval"));
    run_stage(&crate::weights::PcaKind, &[("components", Value::Int(2))], &[("zoo", zoo.path())], &pca).unwrap();
    run_stage(&crate::data::DatasetKind, &[("test_per_class", Value::Int(20))], &[], &data).unwrap();
    let inputs = [("zoo", zoo.path()), ("pca", pca.as_path()), ("data", data.as_path())];
    run_stage(&crate::weights::EvaluateReconstructionKind, &[], &inputs, &eval).unwrap();
    // By hand: the import's forward pass on (pixel / 255 − 0.5) / 0.25.
    let dataset = crate::data::Dataset::load(&data).unwrap();
    let pixels: Vec<f32> = dataset.test.images.iter().map(|&p| (p as f32 / 255.0 - 0.5) / 0.25).collect();
    let mut csv = csv::Reader::from_path(eval.join("reconstruction.csv")).unwrap();
    let h = csv.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let mut checked = 0;
    for rec in csv.records().map(Result::unwrap).filter(|r| &r[col("variant")] == "pca") {
        let id: usize = rec[col("model_id")].parse().unwrap();
        let row = source.rows.iter().find(|r| r.model_id == id && r.checkpoint.as_str() == &rec[col("checkpoint")]).unwrap();
        let logits = ImportArch::from_name(&row.arch).unwrap().logits_f32(&source.weights(row).unwrap(), &pixels).unwrap();
        let correct = logits.iter().zip(&dataset.test.labels).filter(|(z, &y)| crate::nn::argmax(z) as i64 == y).count();
        let want = correct as f64 / dataset.test.labels.len() as f64;
        let got: f64 = rec[col("original_accuracy")].parse().unwrap();
        assert!((got - want).abs() < 1e-12, "model {id}: {got} vs {want}");
        checked += 1;
    }
    assert_eq!(checked, 1, "the seed zoo's one test model");
    let (_, r) = import("model-zoos", &seed, &[("input_std", Value::Float(0.0))]);
    assert!(r.unwrap_err().to_string().contains("input_std"));
}

#[test]
fn canonicalise_runs_on_imported_zoos_and_keeps_every_models_function() {
    let (images, _) = test_images();
    // seed: 10-class tanh (sign flips on); hyp: relu, gelu, sigmoid, leakyrelu (`mixed:`, flips off);
    // the Small CNN Zoo network, relu and tanh models (`mixed:`, flips off).
    for (format, name, flips) in [
        ("model-zoos", "model-zoos/seed", true),
        ("model-zoos", "model-zoos/hyp", false),
        ("small-cnn-zoo", "small-cnn-zoo", false),
    ] {
        let (zoo, r) = import(format, &fixtures().join(name), &[("test_fraction", Value::Float(0.0))]);
        r.unwrap();
        let out = tempfile::tempdir().unwrap();
        run_stage(&crate::zoo::canonical::CanonicaliseKind, &[], &[("zoo", zoo.path())], out.path())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (before, after) = (Zoo::load(zoo.path()).unwrap(), Zoo::load(out.path()).unwrap());
        assert_eq!(after.meta.arch, before.meta.arch);
        for (a, b) in before.rows.iter().zip(&after.rows) {
            let arch = ImportArch::from_name(&a.arch).unwrap();
            let (wa, wb) = (before.weights(a).unwrap(), after.weights(b).unwrap());
            let (za, zb) = (arch.logits(&wa, &images).unwrap(), arch.logits(&wb, &images).unwrap());
            for (x, y) in za.iter().zip(&zb) {
                for (p, q) in x.iter().zip(y) {
                    // Permuted units sum their products in another order: float32 rounding only.
                    assert!((p - q).abs() <= 1e-4 * (1.0 + p.abs()), "{name} model {}: {p} vs {q}", a.model_id);
                }
            }
        }
        let metrics: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("metrics.json")).unwrap()).unwrap();
        let d = &metrics["distance_to_reference"];
        assert!(d["after"].as_f64().unwrap() <= d["before"].as_f64().unwrap() + 1e-9, "{name}: {d}");
        assert_eq!(metrics["signs_flipped"].as_f64().unwrap() > 0.0, flips, "{name}: {metrics}");
    }
}

// ---- bad input ----

/// A copy of the seed zoo in a temp dir, to break.
fn seed_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("model-zoos/seed"), dir.path());
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn trials(root: &Path) -> Vec<PathBuf> {
    let mut t: Vec<PathBuf> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    t.sort();
    t
}

fn skipped(out: &Path) -> String {
    std::fs::read_to_string(out.join("skipped.csv")).unwrap()
}

#[test]
fn malformed_models_are_skipped_and_reported_with_file_and_directory() {
    let zoo = seed_copy();
    let t = trials(zoo.path());
    // trial 0: truncated checkpoint; trial 1: legacy pickle; trial 2: stays good.
    let ck0 = t[0].join("checkpoint_000004/checkpoints");
    let bytes = std::fs::read(&ck0).unwrap();
    std::fs::write(&ck0, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::copy(fixtures().join("model-zoos/legacy.pt"), t[1].join("checkpoint_000004/checkpoints")).unwrap();
    let (out, r) = import("model-zoos", zoo.path(), &[]);
    r.unwrap();
    let report = skipped(out.path());
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 3, "{report}");
    let name = |i: usize| t[i].file_name().unwrap().to_string_lossy().into_owned();
    assert!(lines[1].starts_with(&format!("{},{}/checkpoint_000004/checkpoints,", name(0), name(0))), "{report}");
    assert!(lines[1].contains("truncated or unreadable torch zip file"), "{report}");
    assert!(lines[2].starts_with(&format!("{},{}/checkpoint_000004/checkpoints,", name(1), name(1))), "{report}");
    assert!(lines[2].contains("legacy (non-zip) torch pickle") && lines[2].contains("torch.save(torch.load"), "{report}");
    let zoo_out = Zoo::load(out.path()).unwrap();
    assert_eq!(zoo_out.meta.models, 1);
    let metrics = std::fs::read_to_string(out.path().join("metrics.json")).unwrap();
    assert!(metrics.contains("\"skipped\": 2"), "{metrics}");
}

#[test]
fn a_missing_checkpoint_a_wrong_shape_and_an_unknown_nlin_are_each_named() {
    let zoo = seed_copy();
    let t = trials(zoo.path());
    std::fs::remove_file(t[0].join("checkpoint_000004/checkpoints")).unwrap();
    let params = |i: usize| t[i].join("params.json");
    let edit = |i: usize, from: &str, to: &str| {
        let text = std::fs::read_to_string(params(i)).unwrap();
        assert!(text.contains(from));
        std::fs::write(params(i), text.replace(from, to)).unwrap();
    };
    edit(1, "\"model::o_dim\": 10", "\"model::o_dim\": 3");
    edit(2, "\"model::nlin\": \"tanh\"", "\"model::nlin\": \"swish\"");
    let (_, r) = import("model-zoos", zoo.path(), &[]);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("no well-formed model to import (3 skipped)"), "{e}");
    let name = |i: usize| t[i].file_name().unwrap().to_string_lossy().into_owned();
    assert!(e.contains(&format!("{}: {}/checkpoint_000004/checkpoints: missing checkpoint", name(0), name(0))), "{e}");
    assert!(e.contains("tensor `module_list.11.weight` has shape [10, 20]; `fc2.weight` of `cnn-s` is [3, 20]"), "{e}");
    assert!(
        e.contains(&format!(
            "{}/params.json: unknown `model::nlin` \"swish\" (known: tanh, relu, gelu, sigmoid, leakyrelu)",
            name(2)
        )),
        "{e}"
    );
}

#[test]
fn an_epoch_no_model_has_is_named_with_the_epochs_found() {
    let (_, r) = import("model-zoos", &fixtures().join("model-zoos/seed"), &[("final_epoch", Value::Int(3))]);
    let e = r.unwrap_err().to_string();
    assert!(e.contains("has no checkpoint of epoch 3 (found: 0, 2, 4)"), "{e}");
    let (_, r) = import("model-zoos", &fixtures().join("small-cnn-zoo"), &[]);
    assert!(r.unwrap_err().to_string().contains("no model directory (a subdirectory with params.json)"));
}

fn small_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixtures().join("small-cnn-zoo"), dir.path());
    dir
}

#[test]
fn small_cnn_zoo_faults_of_the_whole_zoo_are_errors_naming_the_file() {
    // layout.csv inconsistent with the width of weights.npy
    let zoo = small_copy();
    let layout = zoo.path().join("layout.csv");
    let text = std::fs::read_to_string(&layout).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    std::fs::write(&layout, lines.join("\n") + "\n").unwrap();
    let e = import("small-cnn-zoo", zoo.path(), &[]).1.unwrap_err().to_string();
    assert!(e.contains("layout.csv: its variables end at index 4810, but weights.npy rows have 4970 values"), "{e}");

    // a truncated .npy
    let zoo = small_copy();
    let npy = zoo.path().join("weights.npy");
    let bytes = std::fs::read(&npy).unwrap();
    std::fs::write(&npy, &bytes[..bytes.len() - 100]).unwrap();
    let e = import("small-cnn-zoo", zoo.path(), &[]).1.unwrap_err().to_string();
    assert!(e.contains("weights.npy: truncated .npy: the header says 9 × 4970 float32"), "{e}");

    // metrics.csv.gz with fewer rows than the weights
    let zoo = small_copy();
    let gz = zoo.path().join("metrics.csv.gz");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()), &mut text).unwrap();
    let kept: Vec<&str> = text.lines().take(8).collect();
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, (kept.join("\n") + "\n").as_bytes()).unwrap();
    enc.finish().unwrap();
    let e = import("small-cnn-zoo", zoo.path(), &[]).1.unwrap_err().to_string();
    assert!(e.contains("metrics.csv.gz: has 7 rows") && e.contains("weights.npy has 9"), "{e}");
}

#[test]
fn small_cnn_zoo_unknown_activation_skips_that_model_only() {
    let zoo = small_copy();
    let gz = zoo.path().join("metrics.csv.gz");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()), &mut text).unwrap();
    let text = text.replacen("tanh", "swish", 3);
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
    enc.finish().unwrap();
    let (out, r) = import("small-cnn-zoo", zoo.path(), &[("max_models", Value::Int(5))]);
    r.unwrap();
    let report = skipped(out.path());
    assert!(
        report.contains("fmnist/run001,metrics.csv.gz,") && report.contains("row 4: unknown `config.activation`"),
        "{report}"
    );
    assert!(report.contains("swish"), "{report}");
    assert_eq!(Zoo::load(out.path()).unwrap().meta.models, 2);
}

#[test]
fn parameters_are_checked_before_anything_runs() {
    let kind = ZooImportKind;
    let mut p = wspace_stage_api::defaults(&kind.params());
    p.insert("path".into(), s("x"));
    assert!(kind.validate(wspace_stage_api::Params(&p)).is_ok());
    p.insert("early_epoch".into(), Value::Int(4));
    p.insert("final_epoch".into(), Value::Int(4));
    let e = kind.validate(wspace_stage_api::Params(&p)).unwrap_err().to_string();
    assert_eq!(e, "parameter `early_epoch` must differ from `final_epoch`");
    p.insert("early_epoch".into(), Value::Int(-2));
    let e = kind.validate(wspace_stage_api::Params(&p)).unwrap_err().to_string();
    assert_eq!(e, "parameter `early_epoch` must be ≥ 0 or -1, got -2");
}

// ---- export-zoo ----

/// `export-zoo` of `zoo_dir`, then `zoo-import` of the export: (export dir, re-imported dir).
fn export_then_import(zoo_dir: &Path, extra: &[(&str, Value)]) -> (tempfile::TempDir, tempfile::TempDir) {
    let exported = tempfile::tempdir().unwrap();
    run_stage(&super::export::ExportZooKind, &[], &[("zoo", zoo_dir)], exported.path()).unwrap();
    let (back, r) = import("model-zoos", &exported.path().join("model-zoos"), extra);
    r.unwrap();
    (exported, back)
}

fn assert_same_weights(a: &Zoo, b: &Zoo) {
    assert_eq!(a.rows.len(), b.rows.len());
    for (ra, rb) in a.rows.iter().zip(&b.rows) {
        assert_eq!((ra.model_id, ra.checkpoint, ra.epoch), (rb.model_id, rb.checkpoint, rb.epoch));
        let (wa, wb) = (a.weights(ra).unwrap(), b.weights(rb).unwrap());
        for (x, y) in wa.iter().zip(&wb) {
            assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
            assert!(x.values.iter().zip(&y.values).all(|(p, q)| p.to_bits() == q.to_bits()), "{}", x.name);
        }
        assert!((ra.test_acc - rb.test_acc).abs() < 1e-12, "{} vs {}", ra.test_acc, rb.test_acc);
    }
}

#[test]
fn import_of_export_of_a_trained_cnn_s_zoo_gives_the_same_tensors() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    run_stage(
        &crate::data::DatasetKind,
        &[("train_per_class", Value::Int(20)), ("test_per_class", Value::Int(10))],
        &[],
        &r.join("data"),
    )
    .unwrap();
    let tasks = [("count", Value::Int(2)), ("val_tasks", Value::Float(0.0)), ("test_tasks", Value::Float(0.3))];
    run_stage(&crate::data::TasksKind, &tasks, &[("data", &r.join("data"))], &r.join("tasks")).unwrap();
    let list = |v: &[f64]| Value::List(v.iter().map(|&x| Value::Float(x)).collect());
    let zoo_params = [
        ("early_epoch", Value::List(vec![Value::Int(1), Value::Int(1)])),
        ("final_epoch", list(&[2.0, 0.0])),
        ("final_epoch_range", Value::List(vec![Value::Int(2), Value::Int(2)])),
    ];
    run_stage(&crate::zoo::ZooKind, &zoo_params, &[("data", &r.join("data")), ("tasks", &r.join("tasks"))], &r.join("zoo"))
        .unwrap();
    let (exported, back) = export_then_import(&r.join("zoo"), &[("early_epoch", Value::Int(1))]);
    let (ours, again) = (Zoo::load(&r.join("zoo")).unwrap(), Zoo::load(back.path()).unwrap());
    assert_eq!(again.meta.arch, "cnn-s", "a 3-class tanh CNN-s comes back as the project's cnn-s");
    assert_same_weights(&ours, &again);
    let params: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exported.path().join("model-zoos/m00000/params.json")).unwrap()).unwrap();
    assert_eq!(params["wspace::classes"], serde_json::json!(ours.rows[0].classes()));
    assert_eq!(params["model::o_dim"], 3);
}

#[test]
fn import_of_export_of_an_imported_model_zoo_gives_the_same_tensors() {
    let (first, r) = import("model-zoos", &fixtures().join("model-zoos/hyp"), &[("early_epoch", Value::Int(2))]);
    r.unwrap();
    let (_, back) = export_then_import(first.path(), &[("early_epoch", Value::Int(2))]);
    assert_same_weights(&Zoo::load(first.path()).unwrap(), &Zoo::load(back.path()).unwrap());
}

#[test]
fn export_refuses_a_zoo_that_is_not_cnn_s() {
    let (first, r) = import("small-cnn-zoo", &fixtures().join("small-cnn-zoo"), &[]);
    r.unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = run_stage(&super::export::ExportZooKind, &[], &[("zoo", first.path())], out.path()).unwrap_err().to_string();
    assert_eq!(e, "input `zoo` model 0 has arch `small-cnn-relu`: the Model Zoos layout holds cnn-s models only");
}
