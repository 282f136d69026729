//! Tests of `canonicalise`: the assignment solver against brute force, function preservation on real
//! Fashion-MNIST images, equivariance under random hidden permutations and sign flips, and the stage
//! end to end on a tiny zoo (output accepted by `pca`, distances reduced, bad input refused).

use std::path::{Path, PathBuf};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wspace_stage_api::Value;

use super::*;
use crate::data::{Dataset, DatasetOptions, TasksOptions};
use crate::nn::{self, CnnS, Optimizer, TrainConfig, PARAM_SPECS};
use crate::test_util::{run_stage, s};
use crate::weights::PcaKind;
use crate::zoo::ZooKind;

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u32() >> 8) as f64 / (1u32 << 24) as f64
}

fn shuffled(rng: &mut ChaCha8Rng, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u32() as usize) % (i + 1);
        v.swap(i, j);
    }
    v
}

/// The symmetries of the project's `cnn-s`.
fn net() -> Net {
    Net::cnn_s()
}

/// A random element of the symmetry group: every hidden layer permuted, conv3 / fc1 units flipped at
/// random (with `signs`).
fn random_alignment(seed: u64, signs: bool) -> Alignment {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut a = Alignment::identity(&net());
    for (l, layer) in net().hidden.iter().enumerate() {
        a.perm[l] = shuffled(&mut rng, layer.units);
        a.flip[l] = (0..layer.units).map(|_| signs && layer.signs && rng.next_u32() & 1 == 1).collect();
    }
    a
}

// ---------------------------------------------------------------------------------------------------
// Linear assignment.

fn all_permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in all_permutations(n - 1) {
        for pos in 0..n {
            let mut q = p.clone();
            q.insert(pos, n - 1);
            out.push(q);
        }
    }
    out
}

fn total(c: &[f64], n: usize, p: &[usize]) -> f64 {
    (0..n).map(|i| c[i * n + p[i]]).sum()
}

#[test]
fn linear_assignment_equals_brute_force_on_random_matrices() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for n in [1usize, 2, 3, 5, 6] {
        let perms = all_permutations(n);
        for case in 0..60 {
            // Mixed signs and scales; every other case has integer entries, so ties occur.
            let c: Vec<f64> = (0..n * n)
                .map(|_| if case % 2 == 0 { uniform(&mut rng) * 20.0 - 10.0 } else { (rng.next_u32() % 5) as f64 })
                .collect();
            let got = max_assignment(&c, n);
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "a permutation");
            let best = perms.iter().map(|p| total(&c, n, p)).fold(f64::NEG_INFINITY, f64::max);
            assert!(
                (total(&c, n, &got) - best).abs() < 1e-9,
                "n = {n}, case {case}: {} vs brute force {best}",
                total(&c, n, &got)
            );
            if case % 2 == 0 {
                // Continuous entries: the optimum is unique, so the assignment itself must match.
                let arg = perms.iter().find(|p| (total(&c, n, p) - best).abs() < 1e-12).unwrap();
                assert_eq!(&got, arg, "n = {n}, case {case}");
            }
        }
    }
    // Greedy (each row its largest entry) is wrong here; the optimum takes 9 + 8 rather than 10 + 1.
    assert_eq!(max_assignment(&[10.0, 9.0, 8.0, 1.0], 2), vec![1, 0]);
    assert_eq!(max_assignment(&[], 0), Vec::<usize>::new());
}

// ---------------------------------------------------------------------------------------------------
// Layout and group action.

#[test]
fn the_layer_table_matches_the_cnn_s_layout() {
    let spec = |name: &str| PARAM_SPECS.iter().find(|s| s.name == name).unwrap();
    let next = ["conv2.weight", "conv3.weight", "fc1.weight", "fc2.weight"];
    for (l, layer) in net().hidden.iter().enumerate() {
        let w = spec(&format!("{}.weight", layer.name));
        let b = spec(&format!("{}.bias", layer.name));
        assert_eq!((w.offset, w.shape[0], w.len() / w.shape[0]), (layer.w, layer.units, layer.row), "{}", layer.name);
        assert_eq!((b.offset, b.len()), (layer.b, layer.units));
        let n = spec(next[l]);
        assert_eq!((n.offset, n.shape[0], n.len() / n.shape[0]), (layer.next, layer.next_rows, layer.units * layer.block));
    }
    assert_eq!(net().hidden.iter().map(|l| l.units).sum::<usize>(), net().hidden_units());
    assert_eq!(net().hidden_units(), 8 + 6 + 4 + 20);
    // conv3 → tanh → fc1: each conv3 channel owns a 3×3 map, the 9 consecutive fc1 columns.
    assert_eq!(net().hidden[2].block, 9);
}

#[test]
fn the_group_action_is_a_bijection_and_identity_is_neutral() {
    let m = CnnS::init(5);
    assert_eq!(Alignment::identity(&net()).apply(&net(), m.flat()), m.flat());
    let a = random_alignment(1, true);
    let q = a.apply(&net(), m.flat());
    assert_ne!(q, m.flat());
    // Same multiset of absolute values, and the fc2 bias (output units) untouched.
    let mut x: Vec<u32> = m.flat().iter().map(|v| v.abs().to_bits()).collect();
    let mut y: Vec<u32> = q.iter().map(|v| v.abs().to_bits()).collect();
    x.sort_unstable();
    y.sort_unstable();
    assert_eq!(x, y);
    assert_eq!(&q[crate::nn::cnn_s::F2B..], &m.flat()[crate::nn::cnn_s::F2B..]);
}

// ---------------------------------------------------------------------------------------------------
// Function preservation and equivariance on real images.

/// Real Fashion-MNIST: 3-class images (classes `c`) from the embedded subset, train and test.
fn real_task(data: &Dataset, classes: [usize; 3]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let pick = |split: &crate::data::Split| {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..split.len() {
            if let Some(k) = classes.iter().position(|&c| c as i64 == split.labels[i]) {
                x.extend_from_slice(split.image(i));
                y.push(k as u8);
            }
        }
        (x, y)
    };
    let (tx, ty) = pick(&data.train);
    let (test_x, _) = pick(&data.test);
    (tx, ty, test_x)
}

/// Four quickly trained models (2 epochs on 3 × 80 real images), each from its own random init.
fn trained_models() -> (Vec<CnnS>, Vec<u8>) {
    let data = DatasetOptions { train_per_class: 80, test_per_class: 40, ..DatasetOptions::default() }.build().unwrap();
    let (x, y, test_x) = real_task(&data, [0, 1, 7]);
    let models = (0..4u64)
        .map(|seed| {
            let cfg = TrainConfig { optimizer: Optimizer::adam(3e-3), batch_size: 32, seed };
            nn::train(CnnS::init(100 + seed), &cfg, &x, &y, 2, |_, _, _| {}).model().clone()
        })
        .collect();
    (models, test_x)
}

fn max_logit_diff(a: &CnnS, b: &CnnS, images: &[u8]) -> f32 {
    let (la, lb) = (nn::logits_u8(a, images), nn::logits_u8(b, images));
    la.iter().zip(&lb).flat_map(|(p, q)| (0..3).map(move |k| (p[k] - q[k]).abs())).fold(0.0, f32::max)
}

/// The logits of a canonicalised model equal the original's to 1e-5 on real test images. Permuting
/// units and negating whole units is exact in the weights, but it reorders the sums over input
/// channels (conv2, conv3) and over fc1's 36 and fc2's 20 inputs, so f32 rounding differs by a few
/// ulp of each partial sum; with logits of order 1–10 (ulp ≈ 1e-7…1e-6) and reductions of ≤ 200
/// terms passing through tanh (slope ≤ 1), the observed difference stays in the 1e-7…1e-6 range and
/// 1e-5 bounds it with margin, while any real change of function (a wrongly moved block) shows up at
/// 1e-2 or more.
#[test]
fn canonicalising_keeps_every_models_logits_on_real_images() {
    let (models, test_x) = trained_models();
    assert!(test_x.len() >= 100 * nn::IMAGE_PIXELS);
    let reference = models[0].flat().to_vec();
    for (i, m) in models.iter().enumerate() {
        for (what, opts) in [("signs", AlignOptions::default()), ("no signs", AlignOptions { signs: false, max_sweeps: 20 })] {
            let aligned = align(&net(), m.flat(), &reference, opts);
            let c = CnnS::from_flat(aligned.alignment.apply(&net(), m.flat()));
            if i > 0 {
                assert!(aligned.alignment.moved().iter().sum::<usize>() > 0, "model {i}: nothing moved, the test would be empty");
            }
            let d = max_logit_diff(m, &c, &test_x);
            assert!(d <= 1e-5, "model {i} ({what}): logits differ by {d}");
        }
        // A random group element (the test's own, with flips) is a symmetry too.
        let g = CnnS::from_flat(random_alignment(i as u64, true).apply(&net(), m.flat()));
        assert!(max_logit_diff(m, &g, &test_x) <= 1e-5);
    }
    // And a broken "symmetry" is caught by the same measure: flipping a conv2 channel changes the function.
    let mut bad = Alignment::identity(&net());
    bad.flip[1][0] = true;
    let broken = CnnS::from_flat(bad.apply(&net(), models[1].flat()));
    assert!(max_logit_diff(&models[1], &broken, &test_x) > 1e-3);
}

#[test]
fn canonicalising_a_permuted_and_flipped_copy_gives_the_same_bits() {
    let (models, _) = trained_models();
    let mut fresh: Vec<CnnS> = (0..3).map(|s| CnnS::init(900 + s)).collect();
    fresh.extend(models.iter().cloned());
    let references = [models[0].flat().to_vec(), super::mean_of(&models.iter().map(|m| m.flat().to_vec()).collect::<Vec<_>>())];
    for (r, reference) in references.iter().enumerate() {
        for (i, m) in fresh.iter().enumerate() {
            for signs in [true, false] {
                let opts = AlignOptions { signs, max_sweeps: 50 };
                let base = canonicalise(&net(), m.flat(), reference, opts);
                for seed in 0..3 {
                    let g = random_alignment(1000 * i as u64 + seed, signs).apply(&net(), m.flat());
                    assert_ne!(g, m.flat());
                    let again = canonicalise(&net(), &g, reference, opts);
                    let same = base.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "reference {r}, model {i}, signs {signs}, seed {seed}: canonical forms differ");
                }
            }
        }
    }
}

#[test]
fn a_model_aligned_to_itself_stays_put_and_alignment_never_moves_away_from_the_reference() {
    let (models, _) = trained_models();
    let reference = models[0].flat();
    let own = align(&net(), reference, reference, AlignOptions::default());
    assert_eq!(own.alignment, Alignment::identity(&net()));
    assert!(own.converged && own.sweeps == 1);
    // A permuted copy of the reference comes back to the reference exactly.
    let g = random_alignment(3, true).apply(&net(), reference);
    assert_eq!(canonicalise(&net(), &g, reference, AlignOptions::default()), reference);
    for m in &models[1..] {
        let before = super::l2(m.flat(), reference);
        let after = super::l2(&canonicalise(&net(), m.flat(), reference, AlignOptions::default()), reference);
        assert!(after < before, "{after} ≥ {before}");
        // signs = false never flips.
        assert_eq!(align(&net(), m.flat(), reference, AlignOptions { signs: false, max_sweeps: 20 }).alignment.flipped(), 0);
    }
}

// ---------------------------------------------------------------------------------------------------
// The stage.

/// A dataset, 12 tasks (train, val and test splits) and a zoo of 3-epoch `cnn-s` models in `root`.
fn tiny_zoo(root: &Path) -> (PathBuf, PathBuf) {
    let (data_dir, tasks_dir, zoo_dir) = (root.join("data"), root.join("tasks"), root.join("zoo"));
    let data = DatasetOptions { train_per_class: 40, test_per_class: 12, ..DatasetOptions::default() }.build().unwrap();
    std::fs::create_dir_all(&data_dir).unwrap();
    data.write(&data_dir).unwrap();
    let tasks = TasksOptions { count: 12, val_tasks: 0.2, test_tasks: 0.2, ..TasksOptions::default() }.sample(&data).unwrap();
    std::fs::create_dir_all(&tasks_dir).unwrap();
    tasks.write(&tasks_dir).unwrap();
    let ints = |a: i64, b: i64| Value::List(vec![Value::Int(a), Value::Int(b)]);
    let params = [
        ("early_epoch", ints(1, 1)),
        ("final_epoch", Value::List(vec![Value::Float(3.0), Value::Float(0.0)])),
        ("final_epoch_range", ints(3, 3)),
    ];
    run_stage(&ZooKind, &params, &[("data", &data_dir), ("tasks", &tasks_dir)], &zoo_dir).unwrap();
    (data_dir, zoo_dir)
}

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

fn mean_pairwise_l2(models: &[Vec<f32>]) -> f64 {
    let mut sum = 0.0;
    let mut pairs = 0;
    for i in 0..models.len() {
        for j in i + 1..models.len() {
            sum += super::l2(&models[i], &models[j]);
            pairs += 1;
        }
    }
    sum / pairs as f64
}

#[test]
fn the_stage_writes_a_zoo_that_pca_accepts_with_the_same_functions_and_smaller_distances() {
    let tmp = tempfile::tempdir().unwrap();
    let (data_dir, zoo_dir) = tiny_zoo(tmp.path());
    let (a, b) = (tmp.path().join("canon"), tmp.path().join("canon2"));
    run_stage(&CanonicaliseKind, &[], &[("zoo", &zoo_dir)], &a).unwrap();
    run_stage(&CanonicaliseKind, &[], &[("zoo", &zoo_dir)], &b).unwrap();

    let zoo = Zoo::load(&zoo_dir).unwrap();
    let canon = Zoo::load(&a).unwrap();
    assert_eq!(std::fs::read(zoo_dir.join("zoo.csv")).unwrap(), std::fs::read(a.join("zoo.csv")).unwrap());
    assert_eq!(canon.rows, zoo.rows);
    assert_eq!(canon.meta.arch, "cnn-s");
    assert_eq!(canon.meta.parameters, zoo.meta.parameters);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("zoo.json")).unwrap()).unwrap();
    assert_eq!(json["canonicalisation"]["kind"], "canonicalise");
    assert_eq!(json["canonicalisation"]["params"]["reference"], "mean");

    // Deterministic bytes.
    let mut names = vec!["zoo.csv".to_string(), "zoo.json".into(), "metrics.json".into(), "alignment.csv".into()];
    names.extend(zoo.rows.iter().map(|r| r.file.clone()));
    for name in &names {
        assert!(std::fs::read(a.join(name)).unwrap() == std::fs::read(b.join(name)).unwrap(), "{name} differs between runs");
    }

    // Same tensors, names and order; the same function on real test images.
    let data = Dataset::load(&data_dir).unwrap();
    let images = &data.test.images; // 12 real test images per class
    assert!(images.len() >= 100 * nn::IMAGE_PIXELS);
    let mut moved = 0;
    for row in &zoo.rows {
        let (w0, w1) = (zoo.weights(row).unwrap(), canon.weights(row).unwrap());
        let names0: Vec<_> = w0.iter().map(|t| (t.name.clone(), t.shape.clone())).collect();
        let names1: Vec<_> = w1.iter().map(|t| (t.name.clone(), t.shape.clone())).collect();
        assert_eq!(names0, names1);
        let (m0, m1) = (CnnS::from_flat(zoo.flat(row).unwrap()), CnnS::from_flat(canon.flat(row).unwrap()));
        moved += (m0 != m1) as usize;
        let d = max_logit_diff(&m0, &m1, images);
        assert!(d <= 1e-5, "{}: logits differ by {d}", row.file);
    }
    assert!(moved > zoo.rows.len() / 2, "only {moved} models changed");

    // Measured effect: the final checkpoints are closer to each other after canonicalisation.
    let finals = |z: &Zoo| -> Vec<Vec<f32>> { z.checkpoint(Checkpoint::Final).map(|r| z.flat(r).unwrap()).collect() };
    let (before, after) = (mean_pairwise_l2(&finals(&zoo)), mean_pairwise_l2(&finals(&canon)));
    assert!(after < 0.95 * before, "mean pairwise L2 {before} → {after}");
    let m = metrics(&a);
    for key in ["distance_to_reference", "rms_pairwise_distance"] {
        let (b, a) = (m[key]["before"].as_f64().unwrap(), m[key]["after"].as_f64().unwrap());
        assert!(a < b, "{key}: {b} → {a}");
    }
    assert_eq!(m["rows"], zoo.rows.len());
    assert!(m["units_moved"].as_f64().unwrap() > 0.3);
    assert!(m["signs_flipped"].as_f64().unwrap() > 0.0);
    assert_eq!(m["skipped_non_finite"], 0);
    assert!(m["zoo"]["final_test_acc"]["mean"].is_number(), "the zoo's own metrics are kept");
    let alignment = std::fs::read_to_string(a.join("alignment.csv")).unwrap();
    assert_eq!(alignment.lines().count(), zoo.rows.len() + 1);

    // `pca` accepts the canonicalised zoo, and the train models' variance is more concentrated.
    let (pca_raw, pca_canon) = (tmp.path().join("pca_raw"), tmp.path().join("pca_canon"));
    let comps = [("components", Value::Int(2))];
    run_stage(&PcaKind, &comps, &[("zoo", &zoo_dir)], &pca_raw).unwrap();
    run_stage(&PcaKind, &comps, &[("zoo", &a)], &pca_canon).unwrap();
    let ev = |d: &Path| metrics(d)["explained_variance"].as_f64().unwrap();
    assert!(a.join("reference.safetensors").exists());
    assert!(pca_canon.join("pca.json").exists() && ev(&pca_canon).is_finite());
    assert!(ev(&pca_canon) > ev(&pca_raw), "explained variance {} → {}", ev(&pca_raw), ev(&pca_canon));
}

#[test]
fn a_zoo_with_one_model_permuted_canonicalises_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, zoo_dir) = tiny_zoo(tmp.path());
    let zoo = Zoo::load(&zoo_dir).unwrap();
    // A copy of the zoo in which every model but the mean's starting point is replaced by a random
    // symmetric copy of itself.
    let copy = tmp.path().join("zoo_permuted");
    std::fs::create_dir_all(copy.join("models")).unwrap();
    for f in ["zoo.csv", "zoo.json", "metrics.json"] {
        std::fs::copy(zoo_dir.join(f), copy.join(f)).unwrap();
    }
    let first = zoo.rows.iter().position(|r| r.split == TaskSplit::Train && r.checkpoint == Checkpoint::Final).unwrap();
    for (i, row) in zoo.rows.iter().enumerate() {
        let w = zoo.flat(row).unwrap();
        let w = if i == first { w } else { random_alignment(i as u64, true).apply(&net(), &w) };
        tensors::NamedTensors::from(CnnS::from_flat(w).named_tensors()).write(&copy.join(&row.file)).unwrap();
    }
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run_stage(&CanonicaliseKind, &[], &[("zoo", &zoo_dir)], &a).unwrap();
    run_stage(&CanonicaliseKind, &[], &[("zoo", &copy)], &b).unwrap();
    for row in &zoo.rows {
        assert!(std::fs::read(a.join(&row.file)).unwrap() == std::fs::read(b.join(&row.file)).unwrap(), "{}", row.file);
    }
    assert!(std::fs::read(a.join("reference.safetensors")).unwrap() == std::fs::read(b.join("reference.safetensors")).unwrap());

    // A model_id reference: that model is left exactly as it is.
    let c = tmp.path().join("c");
    let id = zoo.rows[3].model_id;
    run_stage(&CanonicaliseKind, &[("reference", Value::Int(id as i64))], &[("zoo", &zoo_dir)], &c).unwrap();
    let row = zoo.rows.iter().find(|r| r.model_id == id && r.checkpoint == Checkpoint::Final).unwrap();
    assert_eq!(std::fs::read(c.join(&row.file)).unwrap(), std::fs::read(zoo_dir.join(&row.file)).unwrap());
    assert_eq!(metrics(&c)["reference"], id);
}

#[test]
fn an_unsupported_architecture_or_a_bad_parameter_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // A resnet18 zoo (its zoo.json is all the stage reads before refusing).
    let resnet = tmp.path().join("resnet");
    std::fs::create_dir_all(&resnet).unwrap();
    let meta = ZooMeta {
        arch: "resnet18".into(),
        parameters: vec![super::super::store::ParamShape { name: "conv1.weight".into(), shape: vec![64, 3, 7, 7] }],
        models: 0,
        checkpoints: vec![Checkpoint::Final],
        recipe: Default::default(),
        input: None,
    };
    tensors::write_json(&resnet.join("zoo.json"), &meta).unwrap();
    let e = run_stage(&CanonicaliseKind, &[], &[("zoo", &resnet)], &tmp.path().join("o1")).unwrap_err().to_string();
    assert!(e.contains("input `zoo`") && e.contains("arch") && e.contains("resnet18") && e.contains("cnn-s"), "{e}");

    let (_, zoo_dir) = tiny_zoo(tmp.path());
    let cases: [(&str, Value, &str); 5] = [
        ("reference", s("median"), "`reference`"),
        ("reference", Value::Int(-1), "`reference`"),
        ("reference", Value::Int(999), "model_id 999"),
        ("iterations", Value::Int(0), "`iterations`"),
        ("max_sweeps", Value::Int(-2), "`max_sweeps`"),
    ];
    for (i, (name, value, expect)) in cases.into_iter().enumerate() {
        let out = tmp.path().join(format!("bad{i}"));
        let e = run_stage(&CanonicaliseKind, &[(name, value)], &[("zoo", &zoo_dir)], &out).unwrap_err().to_string();
        // Parameter errors name the parameter (the runner adds the stage, the file and the line), also
        // the reference model's absence, which is found in the data.
        assert!(e.contains(expect) && e.contains(&format!("parameter `{name}`")), "{name}: {e}");
    }
    // `method = "none"` hands the zoo through byte for byte, for any arch.
    let none = tmp.path().join("none");
    run_stage(&CanonicaliseKind, &[("method", s("none"))], &[("zoo", &zoo_dir)], &none).unwrap();
    let zoo = crate::zoo::Zoo::load(&none).unwrap();
    for row in &zoo.rows {
        assert_eq!(std::fs::read(none.join(&row.file)).unwrap(), std::fs::read(zoo_dir.join(&row.file)).unwrap(), "{}", row.file);
    }
    assert_eq!(std::fs::read(none.join("zoo.csv")).unwrap(), std::fs::read(zoo_dir.join("zoo.csv")).unwrap());
}
