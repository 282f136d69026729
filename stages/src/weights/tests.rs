//! Tests of the weight encoder: the PCA against scikit-learn (fixture written by
//! `scripts/weights/pca_reference.py`), and the three stage kinds end to end on a tiny real zoo
//! (embedded Fashion-MNIST subset, 2-epoch `cnn-s` models).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use wspace_stage_api::Value;

use super::linalg::{self, ComponentRule};
use super::pca::{Coefficients, ComponentSpec, Mode, PcaMeta};
use super::*;
use crate::data::{DatasetOptions, TasksOptions};
use crate::tensors::{self, NamedTensors};
use crate::test_util::run_stage;
use crate::zoo::ZooKind;

#[derive(serde::Deserialize)]
struct Case {
    n: usize,
    d: usize,
    k: usize,
    x: Vec<f64>,
    mean: Vec<f64>,
    components: Vec<f64>,
    explained_variance: Vec<f64>,
    explained_variance_ratio: Vec<f64>,
}

/// Mean, explained variances and ratios, and components (up to sign) equal scikit-learn's `PCA`
/// (float64, LAPACK SVD) within an a-priori float64 error budget. Expected numbers:
/// `scripts/weights/pca_reference.py` → `stages/tests/fixtures/pca/reference.json`.
///
/// Budget (u = 2⁻⁵³; both implementations are backward stable, so each is the exact PCA of a matrix
/// within `E` of the true one, and K = 4 covers the two sides plus the eigensolver's small constant):
/// * ‖E‖₂ ≤ ε = (n·d + L + M + 2(n+1)·‖X‖_F/‖Xc‖_F) · u · T, in variance units: forming the n×n
///   (n ≤ d) or d×d matrix sums L = max(n, d) products per entry (|ΔG| ≤ L·u·|Xc||Xc|ᵀ, so
///   ‖ΔG‖₂ ≤ L·u·‖Xc‖²_F = L·u·(n−1)·T), the eigensolver adds ~M·u·‖G‖ (M = min(n, d)), centring
///   perturbs Xc by (n+1)·u·‖X‖_F, and the total variance T itself sums n·d squares;
/// * mean: n·u·max|x| (one sum of n values);
/// * explained variance λᵢ: ε (Weyl); ratio λᵢ/T: 2ε/T;
/// * component i: √2·ε/gapᵢ (Davis–Kahan, gapᵢ to the nearest other eigenvalue of the full spectrum),
///   plus L·u·√(T/λᵢ) for the Gram route's `Xcᵀ u / √λ`.
///
/// Here ε ≈ 1e-12 (tall) and 1.3e-11 (wide), component bounds ≈ 6e-10–8e-10, measured errors ≤ 6e-14
/// (the old flat 1e-4 relative was six orders looser than any rounding).
#[test]
fn pca_matches_scikit_learn() {
    const K: f64 = 4.0;
    const U: f64 = f64::EPSILON / 2.0;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pca/reference.json");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let cases: BTreeMap<String, Case> = serde_json::from_value(doc["cases"].clone()).unwrap();
    assert_eq!(cases.len(), 2);
    for (name, c) in &cases {
        let (n, d) = (c.n as f64, c.d as f64);
        let centred = linalg::Centred::new(c.x.clone(), c.n, c.d);
        let (t, xc_norm) = (centred.total_variance, centred.rows.iter().map(|v| v * v).sum::<f64>().sqrt());
        let x_norm = c.x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let (l, m) = (n.max(d), n.min(d));
        let eps = (n * d + l + m + 2.0 * (n + 1.0) * x_norm / xc_norm) * U * t;
        // The full spectrum (for the gaps), then the fit under test.
        let spectrum = centred.clone().fit(ComponentRule::Count(c.n.min(c.d))).explained_variance;
        let fit = centred.fit(ComponentRule::Count(c.k));
        assert_eq!(fit.k(), c.k, "{name}");
        let max_x = c.x.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        for (a, b) in fit.mean.iter().zip(&c.mean) {
            assert!((a - b).abs() <= K * n * U * max_x, "{name} mean {a} vs {b}");
        }
        for (i, (a, b)) in fit.explained_variance.iter().zip(&c.explained_variance).enumerate() {
            assert!((a - b).abs() <= K * eps, "{name} explained_variance[{i}] {a} vs {b} (bound {:.2e})", K * eps);
        }
        for (i, (a, b)) in fit.explained_variance_ratio().iter().zip(&c.explained_variance_ratio).enumerate() {
            assert!((a - b).abs() <= K * 2.0 * eps / t, "{name} ratio[{i}] {a} vs {b}");
        }
        let mut worst = (0.0f64, 0.0f64);
        for p in 0..c.k {
            let lam = spectrum[p];
            let gap = spectrum.iter().enumerate().filter(|&(q, _)| q != p).map(|(_, v)| (lam - v).abs()).fold(lam, f64::min);
            let bound = K * (2f64.sqrt() * eps / gap + l * U * (t / lam).sqrt());
            let ours = &fit.components[p * c.d..(p + 1) * c.d];
            let theirs = &c.components[p * c.d..(p + 1) * c.d];
            let dot: f64 = ours.iter().zip(theirs).map(|(a, b)| a * b).sum();
            let sign = dot.signum();
            for (j, (a, b)) in ours.iter().zip(theirs).enumerate() {
                assert!((sign * a - b).abs() <= bound, "{name} component {p}[{j}]: {a} vs {b} (bound {bound:.2e})");
                if (sign * a - b).abs() > worst.0 {
                    worst = ((sign * a - b).abs(), bound);
                }
            }
        }
        eprintln!("{name}: ε = {eps:.2e}; worst component error {:.2e} (its bound {:.2e})", worst.0, worst.1);
    }
}

#[test]
fn components_parameter_forms_and_errors() {
    let spec = ComponentSpec::parse(&Value::Int(8)).unwrap();
    assert_eq!(spec, ComponentSpec::all(ComponentRule::Count(8)));
    assert_eq!(ComponentSpec::parse(&Value::Float(0.9)).unwrap(), ComponentSpec::all(ComponentRule::Fraction(0.9)));
    for bad in [Value::Int(0), Value::Float(1.5), Value::Str("x".into())] {
        let e = ComponentSpec::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("`components`"), "{e}");
    }
    let table = Value::Table([("fc1.weight".to_string(), Value::Int(3))].into_iter().collect());
    let spec = ComponentSpec::parse(&table).unwrap();
    let zoo_params = [crate::zoo::store::ParamShape { name: "conv1.weight".into(), shape: vec![2, 5] }];
    let train = vec![vec![0.0f32; 10], (0..10).map(|v| v as f32).collect(), (0..10).map(|v| (v * v) as f32).collect()];
    let e = WeightPca::fit("cnn-s", &zoo_params, &train, &PcaOptions { components: spec, ..PcaOptions::default() })
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv1.weight") && e.contains("default"), "{e}");
}

#[test]
fn output_comparison_of_equal_and_opposite_outputs() {
    let a: Vec<[f32; 3]> = (0..20).map(|i| [i as f32, (i * i % 7) as f32, -(i as f32) * 0.5 + 3.0]).collect();
    let same = evaluate::compare_outputs(&a, &a);
    assert_eq!(same.agreement, 1.0);
    // f64 statistics of f32 outputs: 1 up to a few ulps of the 20-term sums (≈ 1e-15); 1e-6 would also hold
    // for an f32 implementation (20 terms × u₃₂ ≈ 1.2e-6), so it pins the formula, not the precision.
    assert!((same.correlation - 1.0).abs() < 1e-6 && (same.cosine - 1.0).abs() < 1e-6 && same.output_mse == 0.0);
    let neg: Vec<[f32; 3]> = a.iter().map(|v| [-v[0], -v[1], -v[2]]).collect();
    let opposite = evaluate::compare_outputs(&a, &neg);
    assert!((opposite.correlation + 1.0).abs() < 1e-6 && (opposite.cosine + 1.0).abs() < 1e-6);
}

/// A dataset, 20 tasks and a zoo of 2-epoch `cnn-s` models in `root`.
pub(super) fn tiny_zoo(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (data_dir, tasks_dir, zoo_dir) = (root.join("data"), root.join("tasks"), root.join("zoo"));
    let data = DatasetOptions { train_per_class: 30, test_per_class: 12, ..DatasetOptions::default() }.build().unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    data.write(&data_dir).unwrap();
    let tasks = TasksOptions { count: 20, val_tasks: 0.2, test_tasks: 0.2, ..TasksOptions::default() }.sample(&data).unwrap();
    std::fs::create_dir_all(&tasks_dir).unwrap();
    tasks.write(&tasks_dir).unwrap();
    let ints = |a: i64, b: i64| Value::List(vec![Value::Int(a), Value::Int(b)]);
    let params = [
        ("early_epoch", ints(1, 1)),
        ("final_epoch", Value::List(vec![Value::Float(2.0), Value::Float(0.0)])),
        ("final_epoch_range", ints(2, 2)),
    ];
    run_stage(&ZooKind, &params, &[("data", &data_dir), ("tasks", &tasks_dir)], &zoo_dir).unwrap();
    (data_dir, tasks_dir, zoo_dir)
}

pub(super) fn read_metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn pca_autoencoder_and_evaluation_on_a_tiny_zoo() {
    let tmp = tempfile::tempdir().unwrap();
    let (data_dir, tasks_dir, zoo_dir) = tiny_zoo(tmp.path());
    let zoo = crate::zoo::Zoo::load(&zoo_dir).unwrap();

    // --- pca: 4 components; the layout, modes and coefficients are consistent.
    let pca_dir = tmp.path().join("pca");
    run_stage(&PcaKind, &[("components", Value::Int(4))], &[("zoo", &zoo_dir)], &pca_dir).unwrap();
    let meta: PcaMeta = tensors::read_json(&pca_dir.join("pca.json")).unwrap();
    let rows = select_rows(&zoo, &[crate::zoo::store::Checkpoint::Final]);
    assert_eq!(meta.rows.len(), rows.len());
    let mode = |n: &str| meta.parameters.iter().find(|p| p.name == n).unwrap().mode;
    assert_eq!(mode("conv2.weight"), Mode::Pca);
    assert_eq!(mode("fc2.bias"), Mode::Centre, "3 elements ≤ dimension_limit 4");
    assert_eq!(mode("conv3.bias"), Mode::Centre);
    // 8 projected parameters × 4 components + 4 + 3 centred elements.
    assert_eq!(meta.coefficient_dim, 8 * 4 + 4 + 3);
    let metrics = read_metrics(&pca_dir);
    let explained = metrics["explained_variance"].as_f64().unwrap();
    assert!(explained > 0.0 && explained < 1.0, "{explained}");

    let pca = WeightPca::load(&pca_dir).unwrap();
    let coefficients = Coefficients::load(&pca_dir).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let c = pca.encode(&zoo.weights(row).unwrap()).unwrap();
        // The same f32 projection, one model at a time vs in parallel blocks (other summation order): both
        // within γ_d·Σ|w·v| of exact, d ≤ 1200 elements per tensor of O(0.1) weights on unit components
        // (√d-scale random-walk ≈ 35·u₃₂·|c| ≈ 2e-6·|c|); 1e-5·(1 + |c|) is 5× that.
        for (a, b) in c.iter().zip(coefficients.row(i)) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "row {i}: {a} vs {b}");
        }
    }
    // The train rows' normalised coefficients have mean 0.
    let train = coefficients.split(crate::data::TaskSplit::Train);
    for j in 0..meta.coefficient_dim {
        let m: f32 = train.iter().map(|&i| pca.normalise(coefficients.row(i))[j]).sum::<f32>() / train.len() as f32;
        // Normalised coordinates are O(1): their f32 mean over the train rows is 0 up to the f32 rounding of
        // the stored mean and std and of the sum (≤ 12 rows × u₃₂ × |z| ≤ 3 ≈ 2e-6); 1e-3 also admits the
        // f32 rounding of a mean that is large against the spread (|μ/σ| up to ~1e3 for near-constant elements).
        assert!(m.abs() < 1e-3, "coordinate {j}: {m}");
    }

    // --- every component (k ≥ n − 1): the train models come back exactly; a constant tensor is detected.
    let full_dir = tmp.path().join("pca-full");
    run_stage(
        &PcaKind,
        &[("components", Value::Int(64)), ("variance_threshold", Value::Float(1e-30))],
        &[("zoo", &zoo_dir)],
        &full_dir,
    )
    .unwrap();
    let full = read_metrics(&full_dir);
    // All components: the train models come back up to the f32 round trip of weights |w| ≲ 1 (squared
    // error ≲ (few·u₃₂)² ≈ 1e-14): 1e-10 is a wide margin that one missing component (MSE of the order of
    // its variance, ≫ 1e-10) cannot meet. The explained fraction Σλ/T is 1 up to f64 rounding of the
    // two sums (~n·d·u₆₄ ≈ 1e-12); 1e-6 fails only if a component is dropped.
    assert!(full["weight_mse_train"].as_f64().unwrap() < 1e-10, "{full}");
    assert!((full["explained_variance"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    let full_meta: PcaMeta = tensors::read_json(&full_dir.join("pca.json")).unwrap();
    let conv2 = full_meta.parameters.iter().find(|p| p.name == "conv2.weight").unwrap();
    assert_eq!((conv2.requested, conv2.components), (64, full_meta.fit_models - 1), "capped at the rank bound");
    let huge = tmp.path().join("pca-constant");
    run_stage(&PcaKind, &[("variance_threshold", Value::Float(1e9))], &[("zoo", &zoo_dir)], &huge).unwrap();
    let hm: PcaMeta = tensors::read_json(&huge.join("pca.json")).unwrap();
    assert!(hm.parameters.iter().all(|p| p.mode == Mode::Constant) && hm.coefficient_dim == 0);

    // --- autoencoder: trains, early-stops on val, is deterministic, and round-trips through its files.
    let ae_params = [
        ("hidden", Value::List(vec![Value::Int(16)])),
        ("latent_dim", Value::Int(6)),
        ("epochs", Value::Int(15)),
        ("batch_size", Value::Int(4)),
        ("patience", Value::Int(5)),
    ];
    let ae_dir = tmp.path().join("ae");
    run_stage(&AutoencoderKind, &ae_params, &[("pca", &pca_dir)], &ae_dir).unwrap();
    let again = tmp.path().join("ae-again");
    run_stage(&AutoencoderKind, &ae_params, &[("pca", &pca_dir)], &again).unwrap();
    for f in ["autoencoder.safetensors", "latents.safetensors", "history.csv", "metrics.json", "loss.svg"] {
        assert_eq!(std::fs::read(ae_dir.join(f)).unwrap(), std::fs::read(again.join(f)).unwrap(), "{f} differs between runs");
    }
    let history = std::fs::read_to_string(ae_dir.join("history.csv")).unwrap();
    let am = read_metrics(&ae_dir);
    assert_eq!(history.lines().count() - 1, am["epochs_run"].as_u64().unwrap() as usize);
    let losses: Vec<f64> = history.lines().skip(1).map(|l| l.split(',').nth(1).unwrap().parse().unwrap()).collect();
    assert!(losses.last().unwrap() < &losses[0], "train loss falls: {losses:?}");

    // Decoding: a stored latent decodes to a runnable network equal to the codec's own encode → decode.
    let codec = codec::load(&pca_dir, &ae_dir, &candle_core::Device::Cpu).unwrap();
    assert_eq!((codec.name(), codec.latent_shape(), codec.variants()), ("mlp", vec![6], ["pca_ae", "pca_ae_refined"]));
    let latents = crate::tensors::TensorFile::open(&ae_dir.join("latents.safetensors")).unwrap().f32_all().unwrap();
    let first = &latents[0].values[..6];
    let own = codec.encode(&[&zoo.weights(rows[0]).unwrap()]).unwrap();
    // The codec's encode (the PCA stage's projection of one row → normalisation → encoder MLP) vs the
    // stored latent computed in a batch of all rows (another f32 summation order in the 16-unit layer):
    // latents are O(1) with a few hundred f32 products behind each; 1e-4 ≈ 100 ulps.
    for (a, b) in own.iter().zip(first) {
        assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let net = Network::build(codec.arch(), &codec.decode(first).unwrap().remove(0)).unwrap();
    assert_eq!(net.logits_f32(&[0.5; 784]).unwrap().len(), 1);
    let wrong = codec::load(&full_dir, &ae_dir, &candle_core::Device::Cpu).err().unwrap().to_string();
    assert!(wrong.contains("another `pca` output"), "{wrong}");

    // --- evaluate-reconstruction: metrics for the three reconstructions, sensible relations.
    let ev_dir = tmp.path().join("eval");
    let inputs =
        [("zoo", zoo_dir.as_path()), ("pca", &pca_dir), ("autoencoder", &ae_dir), ("tasks", &tasks_dir), ("data", &data_dir)];
    run_stage(&EvaluateReconstructionKind, &[("synthetic_images", Value::Int(32))], &inputs, &ev_dir).unwrap();
    let em = read_metrics(&ev_dir);
    assert_eq!(em["models"].as_u64().unwrap() as usize, coefficients.split(crate::data::TaskSplit::Test).len());
    for v in ["pca", "pca_ae", "mean"] {
        for k in ["agreement", "correlation", "cosine", "accuracy"] {
            let x = em[v]["real"][k].as_f64().unwrap_or_else(|| panic!("{v}.real.{k} in {em}"));
            assert!((-1.0..=1.0).contains(&x), "{v}.real.{k} = {x}");
        }
        assert!(em[v]["synthetic"]["agreement"].as_f64().is_some());
    }
    let pca_mse = em["pca"]["weight_mse"].as_f64().unwrap();
    // A projection can only be closer than the mean; 1e-4 relative absorbs the f32 rounding of both MSEs.
    assert!(pca_mse <= em["mean"]["weight_mse"].as_f64().unwrap() * (1.0 + 1e-4), "a projection is closer than the mean");
    let csv = std::fs::read_to_string(ev_dir.join("reconstruction.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 3 * em["models"].as_u64().unwrap() as usize);
    assert!(ev_dir.join("agreement.svg").exists() && ev_dir.join("correlation.svg").exists());

    // PCA-only evaluation (no autoencoder input) has no `pca_ae` block; full PCA is closer than 4 components.
    let ev_full = tmp.path().join("eval-full");
    let inputs = [("zoo", zoo_dir.as_path()), ("pca", &full_dir), ("tasks", &tasks_dir), ("data", &data_dir)];
    run_stage(&EvaluateReconstructionKind, &[("synthetic_images", Value::Int(32))], &inputs, &ev_full).unwrap();
    let fm = read_metrics(&ev_full);
    assert!(fm.get("pca_ae").is_none());
    // As above: 1e-4 relative absorbs the f32 rounding of both MSEs.
    assert!(fm["pca"]["weight_mse"].as_f64().unwrap() <= pca_mse * (1.0 + 1e-4));
}

/// A ResNet-18 decoded from its parameters alone (no BatchNorm buffers, as a PCA of
/// `model.parameters()` gives) runs, and after the SANE-style refit its eval-mode outputs on the
/// calibration images match its train-mode outputs (up to the unbiased-variance factor).
#[test]
fn resnet18_decodes_without_buffers_and_refits_batch_norm() {
    use crate::resnet::{ImageSet, InputTransform, ResNet18};
    let device = candle_core::Device::Cpu;
    let model = ResNet18::init(3, &device).unwrap();
    let params: crate::tensors::NamedTensors = model
        .named_tensors()
        .unwrap()
        .into_iter()
        .filter(|t| {
            !t.name.ends_with("running_mean") && !t.name.ends_with("running_var") && !t.name.ends_with("num_batches_tracked")
        })
        .collect();
    assert_eq!(params.len(), 62);
    let mut net = Network::build("resnet18", &params).unwrap();
    let images: Vec<u8> = (0..16 * 784).map(|i| ((i * 7919 + i / 784 * 31) % 251) as u8).collect();
    let before = net.logits_u8(&images).unwrap();
    net.refit_normalisation(&images).unwrap();
    let after = net.logits_u8(&images).unwrap();
    assert_ne!(before, after, "the refit changes the running statistics");
    let Network::ResNet18 { model, shape, input } = &net else { panic!("not a resnet") };
    assert_eq!((*shape, *input), ([1, 28, 28], InputTransform::default()));
    let labels = vec![0u8; 16];
    let idx: Vec<u32> = (0..16).collect();
    let x = ImageSet { pixels: &images, labels: &labels, shape: *shape }.batch(&idx, input, &device).unwrap();
    let (train, stats) = model.forward_train(&x).unwrap();
    // Every BatchNorm's running statistics are its batch statistics (one batch of 16), variance unbiased.
    let tensors = model.named_tensors().unwrap();
    let get = |name: &str| tensors.get(name).unwrap().values.clone();
    let bns: Vec<String> = crate::resnet::tensor_specs()
        .into_iter()
        .filter(|s| s.kind == crate::resnet::TensorKind::RunningMean)
        .map(|s| s.name.trim_end_matches(".running_mean").to_string())
        .collect();
    assert_eq!(bns.len(), stats.0.len());
    for (bn, s) in bns.iter().zip(&stats.0) {
        let unbias = s.count as f32 / (s.count - 1) as f32;
        let (mean, var) = (s.mean.to_vec1::<f32>().unwrap(), s.var.to_vec1::<f32>().unwrap());
        // The refit's statistics are the train forward's, recomputed in f32 over the same 16 images in
        // another order: means of ≤ 16·28·28 = 12544 values, √n-scale rounding ≈ 112·u₃₂ ≈ 7e-6 relative,
        // inside 1e-5·(1 + |μ|); variances carry twice that error and the unbias factor: 1e-4.
        for (a, b) in get(&format!("{bn}.running_mean")).iter().zip(&mean) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{bn} mean {a} vs {b}");
        }
        for (a, b) in get(&format!("{bn}.running_var")).iter().zip(&var) {
            assert!((a - b * unbias).abs() <= 1e-4 * (1.0 + b.abs()), "{bn} var {a} vs {b}");
        }
        assert_eq!(get(&format!("{bn}.num_batches_tracked")), vec![1.0]);
    }
    // So eval-mode outputs on the calibration batch follow the train-mode ones.
    let train = train.to_vec2::<f32>().unwrap();
    let (a, b): (Vec<f32>, Vec<f32>) = after.iter().flatten().zip(train.iter().flatten()).map(|(a, b)| (*a, *b)).unzip();
    let (ma, mb) = (a.iter().sum::<f32>() / a.len() as f32, b.iter().sum::<f32>() / b.len() as f32);
    let cov: f32 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let corr = cov / (a.iter().map(|x| (x - ma).powi(2)).sum::<f32>() * b.iter().map(|y| (y - mb).powi(2)).sum::<f32>()).sqrt();
    // Behaviour, not precision: eval mode with refitted statistics must track train mode (the only
    // difference is the unbiased variance, a factor 16/15 inside the square root).
    assert!(corr > 0.95, "eval/train output correlation {corr}");
    assert!(Network::build("vgg", &params).unwrap_err().to_string().contains("vgg"));
}

/// `flat_gradient_to_normalised` is the transpose of the linear part of `normalised_to_flat`:
/// ⟨g, A z⟩ = ⟨Aᵀ g, z⟩ with `A z = normalised_to_flat(z) − normalised_to_flat(0)`.
#[test]
fn pca_gradient_pullback_is_the_transpose_of_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, zoo_dir) = tiny_zoo(tmp.path());
    let pca_dir = tmp.path().join("pca");
    run_stage(&PcaKind, &[("components", Value::Int(3))], &[("zoo", &zoo_dir)], &pca_dir).unwrap();
    let pca = WeightPca::load(&pca_dir).unwrap();
    let (d, n) = (pca.coefficient_dim(), pca.weight_count());
    let z: Vec<f32> = (0..d).map(|j| (0.7 * j as f32 + 0.3).sin()).collect();
    let g: Vec<f32> = (0..n).map(|i| (1.3 * i as f32 + 0.1).cos()).collect();
    let (wz, w0) = (pca.normalised_to_flat(&z), pca.normalised_to_flat(&vec![0.0; d]));
    let lhs: f64 = g.iter().zip(wz.iter().zip(&w0)).map(|(g, (a, b))| *g as f64 * (*a as f64 - *b as f64)).sum();
    let rhs: f64 = pca.flat_gradient_to_normalised(&g).iter().zip(&z).map(|(a, b)| *a as f64 * *b as f64).sum();
    // Both sides are sums of ~2,300 f32 products of O(0.1) terms: 1e-4 relative covers their rounding.
    assert!((lhs - rhs).abs() <= 1e-4 * lhs.abs().max(1.0), "⟨g, Az⟩ = {lhs}, ⟨Aᵀg, z⟩ = {rhs}");
}

#[test]
fn behavioural_autoencoder_refinement_and_decoded_weights_on_a_tiny_zoo() {
    use super::behaviour;
    let tmp = tempfile::tempdir().unwrap();
    let (data_dir, tasks_dir, zoo_dir) = tiny_zoo(tmp.path());
    let zoo = crate::zoo::Zoo::load(&zoo_dir).unwrap();
    let pca_dir = tmp.path().join("pca");
    run_stage(&PcaKind, &[("components", Value::Int(4))], &[("zoo", &zoo_dir)], &pca_dir).unwrap();
    let sources: [(&str, &Path); 4] = [("pca", &pca_dir), ("zoo", &zoo_dir), ("tasks", &tasks_dir), ("data", &data_dir)];
    let base = |loss: &str| {
        vec![
            ("hidden", Value::List(vec![Value::Int(16)])),
            ("latent_dim", Value::Int(6)),
            ("epochs", Value::Int(12)),
            ("batch_size", Value::Int(4)),
            ("patience", Value::Int(12)),
            ("loss", Value::Str(loss.into())),
            ("probe_images", Value::Int(16)),
        ]
    };

    // Bad input: the behavioural loss without the zoo, β outside [0, 1], more probes than images.
    let e = run_stage(&AutoencoderKind, &base("behaviour"), &sources[..1], &tmp.path().join("x1")).unwrap_err().to_string();
    assert!(e.contains("`zoo`") && e.contains("`loss`"), "{e}");
    let mut bad = base("behaviour");
    bad.push(("beta", Value::Float(1.5)));
    let e = run_stage(&AutoencoderKind, &bad, &sources, &tmp.path().join("x2")).unwrap_err().to_string();
    assert!(e.contains("`beta`"), "{e}");
    let mut bad = base("behaviour");
    bad[6].1 = Value::Int(10_000);
    let e = run_stage(&AutoencoderKind, &bad, &sources, &tmp.path().join("x3")).unwrap_err().to_string();
    assert!(e.contains("`probe_images`"), "{e}");

    // The behavioural autoencoder decodes the train models into networks closer in *function* to the
    // originals (distillation loss on their probes) than the MSE autoencoder does: that is its objective.
    let (mse_dir, beh_dir) = (tmp.path().join("ae-mse"), tmp.path().join("ae-behaviour"));
    run_stage(&AutoencoderKind, &base("mse"), &sources, &mse_dir).unwrap();
    run_stage(&AutoencoderKind, &base("behaviour"), &sources, &beh_dir).unwrap();
    let bm = read_metrics(&beh_dir);
    assert_eq!(bm["loss"], "behaviour");
    assert!(bm["val_distillation"].as_f64().unwrap().is_finite() && bm["first_batch_distillation"].as_f64().unwrap() > 0.0);
    let coefficients = Coefficients::load(&pca_dir).unwrap();
    let train = coefficients.split(crate::data::TaskSplit::Train);
    let rows: Vec<_> = train.iter().map(|&i| coefficients.meta.rows[i].clone()).collect();
    let tasks = crate::data::Tasks::load(&tasks_dir).unwrap();
    let data = crate::data::Dataset::load(&data_dir).unwrap();
    let probes = behaviour::load_probes(&rows, &zoo, &tasks, &data, 16).unwrap();
    let distill_after = |ae_dir: &Path| -> f64 {
        let (pca, ae) = (WeightPca::load(&pca_dir).unwrap(), Autoencoder::load(ae_dir, &candle_core::Device::Cpu).unwrap());
        let z: Vec<f32> = train.iter().flat_map(|&i| pca.normalise(coefficients.row(i))).collect();
        let back = ae.decode(&ae.encode(&z).unwrap()).unwrap();
        let refs: Vec<&behaviour::Probe> = probes.iter().collect();
        let engine = behaviour::Engine::Kernel;
        behaviour::batch_loss_and_gradient(&engine, &pca, (&back, pca.coefficient_dim()), &refs, 2.0, false).unwrap().0
    };
    let (with_mse, with_behaviour) = (distill_after(&mse_dir), distill_after(&beh_dir));
    assert!(with_behaviour < with_mse, "train distillation: behaviour {with_behaviour} vs mse {with_mse}");

    // Refinement lowers the behavioural loss of the latent it starts from (it keeps the best step).
    let (pca, ae) = (WeightPca::load(&pca_dir).unwrap(), Autoencoder::load(&mse_dir, &candle_core::Device::Cpu).unwrap());
    let latent = ae.encode(&pca.normalise(coefficients.row(train[0]))).unwrap();
    let opts = behaviour::RefineOptions { steps: 10, lr: 0.05, probe_images: 8, temperature: 2.0, label_weight: 0.0 };
    let r = behaviour::refine(&|h| ae.decode_tensor(h), &pca, &latent, &probes[0], &opts, &candle_core::Device::Cpu).unwrap();
    assert!(r.loss_after < r.loss_before, "{} → {}", r.loss_before, r.loss_after);

    // evaluate-reconstruction with refinement: a fourth variant, and every reconstruction's weights on
    // disk under the zoo's names, as `reconstruction.csv`'s `file` column says.
    let ev_dir = tmp.path().join("eval");
    let inputs =
        [("zoo", zoo_dir.as_path()), ("pca", &pca_dir), ("autoencoder", &mse_dir), ("tasks", &tasks_dir), ("data", &data_dir)];
    let params = [("synthetic_images", Value::Int(16)), ("refine_steps", Value::Int(5)), ("probe_images", Value::Int(16))];
    run_stage(&EvaluateReconstructionKind, &params, &inputs, &ev_dir).unwrap();
    let em = read_metrics(&ev_dir);
    assert!(em["pca_ae_refined"]["real"]["agreement"].as_f64().is_some(), "{em}");
    let mut reader = csv::Reader::from_path(ev_dir.join("reconstruction.csv")).unwrap();
    let header = reader.headers().unwrap().clone();
    let (vcol, fcol) = (header.iter().position(|h| h == "variant").unwrap(), header.iter().position(|h| h == "file").unwrap());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 4 * em["models"].as_u64().unwrap() as usize);
    for rec in &records {
        let tensors = NamedTensors::read(&ev_dir.join(&rec[fcol])).unwrap();
        crate::nn::CnnS::from_named_tensors(tensors.triples()).unwrap();
    }
    // The `pca` file holds exactly the PCA decoding of the model's coefficients.
    let first_pca = records.iter().find(|r| &r[vcol] == "pca").unwrap();
    let stored = NamedTensors::read(&ev_dir.join(&first_pca[fcol])).unwrap();
    let test = coefficients.split(crate::data::TaskSplit::Test);
    let decoded = pca.decode(coefficients.row(test[0])).unwrap();
    let mut want: Vec<_> = decoded.iter().cloned().collect();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    let want = NamedTensors::from(want);
    assert!(stored == want, "the stored `pca` reconstruction is not the PCA decoding of the model's coefficients");
    let e = run_stage(
        &EvaluateReconstructionKind,
        &[("refine_steps", Value::Int(3))],
        &[("zoo", zoo_dir.as_path()), ("pca", &pca_dir), ("tasks", &tasks_dir), ("data", &data_dir)],
        &tmp.path().join("eval-bad"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`refine_steps`") && e.contains("`autoencoder`"), "{e}");
}
