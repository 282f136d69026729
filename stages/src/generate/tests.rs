//! Tests of the generation stages on small synthetic pairs.

use super::align::{train, AlignOptions, Pair, Pairs};
use super::evaluate::{permuted_accuracy, r2_and_pearson, random_init};
use super::sample::target_grid;
use crate::data::TaskSplit;
use crate::zoo::store::Checkpoint;

/// 8 tasks × 2 checkpoints; the latent is a fixed function of (task, checkpoint), so alignment is learnable.
fn synthetic_pairs() -> Pairs {
    let (dim, k) = (6, 4);
    let mut pairs = Vec::new();
    let (mut embeddings, mut latents) = (Vec::new(), Vec::new());
    for task in 0..8usize {
        for (c, checkpoint) in [Checkpoint::Early, Checkpoint::Final].into_iter().enumerate() {
            let split = if task < 6 { TaskSplit::Train } else { TaskSplit::Val };
            let loss = if c == 0 { 1.0 } else { 0.3 } + 0.01 * task as f64;
            pairs.push(Pair { model_id: task, checkpoint, split, task_id: task, val_loss: loss });
            embeddings.extend((0..dim).map(|j| ((task * 7 + j * 3) % 5) as f32 - 2.0));
            latents.extend((0..k).map(|j| ((task * 3 + j + c * 2) % 4) as f32 - 1.5 + 0.1 * c as f32));
        }
    }
    Pairs { pairs, embeddings, dataset_dim: dim, latents, latent_dim: k }
}

#[test]
fn align_training_lowers_the_train_loss_and_is_deterministic() {
    let pairs = synthetic_pairs();
    let opts = AlignOptions {
        results_dim: 8,
        hidden: vec![16],
        bins: 4,
        fit: crate::fit::FitParams { epochs: 40, patience: 100, batch_size: 6, ..AlignOptions::default().fit },
        ..Default::default()
    };
    let a = train(&pairs, &opts, &wspace_stage_api::NoProgress).unwrap();
    let b = train(&pairs, &opts, &wspace_stage_api::NoProgress).unwrap();
    assert_eq!(a.history, b.history);
    let (first, last) = (a.history[0].train, a.history.last().unwrap().train);
    assert!(last < 0.5 * first, "train NT-Xent {first} → {last}");
    assert!(a.history.iter().all(|h| h.val.is_finite()));
    assert_eq!(a.heat_best.len(), 4);
}

#[test]
fn grid_permutations_r2_and_init() {
    assert_eq!(target_grid(0.0, 1.0, 3), vec![0.0, 0.5, 1.0]);
    assert_eq!(target_grid(0.0, 1.0, 1), vec![0.5]);
    // Always right on the true order; under a relabelling, right only where the permutation fixes the label.
    let logits = vec![[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let p = permuted_accuracy(&logits, &[0, 1, 2]);
    assert!((p - 3.0 / 15.0).abs() < 1e-12, "{p}");
    let (r2, r) = r2_and_pearson(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
    assert_eq!((r2, (r * 1e9).round() / 1e9), (1.0, 1.0));
    let w = random_init(&[("fc.weight".into(), vec![3, 4]), ("fc.bias".into(), vec![3])], 1);
    assert!(w.iter().all(|t| t.values.iter().all(|x| x.abs() <= 0.5)));
    assert_eq!(w, random_init(&[("fc.weight".into(), vec![3, 4]), ("fc.bias".into(), vec![3])], 1));
}

#[test]
fn diversity_and_agreement_count_disagreeing_predictions() {
    use super::evaluate::{agreement, diversity};
    assert_eq!(agreement(&[0, 1, 2, 2], &[0, 1, 1, 0]), 0.5);
    // Prompt 0: three draws; pairwise disagreements 1/4, 2/4, 1/4 → mean 1/3. Prompt 1: identical → 0.
    // Prompt 2: one draw → left out. Mean over prompts (1/3 + 0) / 2.
    let p: [&[u8]; 6] = [&[0, 0, 0, 0], &[0, 0, 0, 1], &[1, 0, 0, 1], &[2, 2, 1, 0], &[2, 2, 1, 0], &[1, 1, 1, 1]];
    let d = diversity(&[0, 0, 0, 1, 1, 2], &p);
    assert!((d - 1.0 / 6.0).abs() < 1e-12, "{d}");
    assert!(diversity(&[0, 1], &p[..2]).is_nan(), "one draw per prompt: no diversity");
}

#[test]
fn error_iou_compares_the_images_two_models_get_wrong() {
    use super::evaluate::error_iou;
    let labels = [0, 1, 2, 0, 1];
    // Errors of a: images 1, 2; of b: 2, 3. Intersection {2}, union {1, 2, 3}.
    assert_eq!(error_iou(&[0, 0, 0, 0, 1], &[0, 1, 1, 1, 1], &labels), 1.0 / 3.0);
    assert_eq!(error_iou(&[0, 0, 0, 0, 1], &[0, 0, 0, 0, 1], &labels), 1.0, "same errors");
    assert_eq!(error_iou(&[0, 0, 2, 0, 1], &[0, 1, 1, 0, 1], &labels), 0.0, "disjoint errors");
    assert_eq!(error_iou(&labels, &labels, &labels), 1.0, "no errors at all: identical");
}

#[test]
fn unscaled_loss_is_the_cross_entropy_of_the_logits_before_the_head_scale() {
    use super::evaluate::unscaled_loss;
    // Expected values by hand (Python's math): logits [2, 0, 0] / 2 = [1, 0, 0], label 0:
    // ln(e + 2) − 1 = 0.5514447139320509; logits [0, 3, 0] / 2 = [0, 1.5, 0], label 2:
    // ln(2 + e^1.5) = 1.8689811354013153. Mean 1.210212924666683.
    let l = unscaled_loss(&[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]], &[0, 2], 2.0);
    assert!((l - 1.210212924666683).abs() < 1e-12, "{l}");
    assert!((unscaled_loss(&[[0.0; 3]], &[1], 1.0) - 3f64.ln()).abs() < 1e-12);
    assert!(unscaled_loss(&[[0.0; 3]], &[1], 0.0).is_nan() && unscaled_loss::<[f32; 3]>(&[], &[], 1.0).is_nan());
}

#[test]
fn mean_within_groups_averages_pairs_per_group_then_groups() {
    use super::evaluate::mean_within_groups;
    let v = [1.0f64, 2.0, 4.0, 10.0, 20.0, 7.0];
    // Group 0: |1−2|, |1−4|, |2−4| → 2; group 1: |10−20| → 10; group 2 has one item. (2 + 10) / 2.
    let m = mean_within_groups(&[0, 0, 0, 1, 1, 2], |i, j| (v[i] - v[j]).abs());
    assert_eq!(m, 6.0);
    assert!(mean_within_groups(&[0, 1], |_, _| 1.0).is_nan());
}

#[test]
fn head_scale_meets_the_target_loss_or_the_nearest_reachable_one() {
    use super::sample::head_scale;
    // Cross-entropy of s·u in f64, written out independently of the stage's helper.
    let ce = |u: &[[f32; 3]], y: &[u8], s: f64| -> f64 {
        u.iter()
            .zip(y)
            .map(|(z, &t)| {
                let e: f64 = z.iter().map(|&x| (s * x as f64).exp()).sum();
                e.ln() - s * z[t as usize] as f64
            })
            .sum::<f64>()
            / y.len() as f64
    };
    // One of four images is misclassified: the loss has an interior minimum (0.5565 at s = 1.734).
    let u = [[2.0f32, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, -0.5, 1.0], [1.0, 0.2, 0.0]];
    let y = [0u8, 1, 2, 1];
    let min = (0..=20000).map(|i| ce(&u, &y, i as f64 * 1e-3)).fold(f64::INFINITY, f64::min);
    for target in [0.6, 0.8, 1.05] {
        assert!(target > min);
        let s = head_scale(&u, &y, target);
        assert!((ce(&u, &y, s) - target).abs() < 1e-9, "target {target}: ce({s}) = {}", ce(&u, &y, s));
    }
    // Below the minimum: the scale of the minimum; above ln 3: 0 (uniform outputs).
    let s = head_scale(&u, &y, 0.01);
    assert!((ce(&u, &y, s) - min).abs() < 1e-6, "{} vs {min}", ce(&u, &y, s));
    assert_eq!(head_scale(&u, &y, 2.0), 0.0);
}

#[test]
fn generated_head_rows_follow_the_prompt_order_and_the_body_is_shared() {
    use super::generator::{Generator, GeneratorConfig, Prompt};
    use crate::nn::BODY_PARAMS;
    let (k, d, q) = (5, 4, 2);
    let config =
        GeneratorConfig { classes: k, dataset_dim: d, hidden: vec![8], noise_dim: q, noise: 1.0, loss_min: 0.1, loss_max: 1.1 };
    let body: Vec<f32> = (0..BODY_PARAMS).map(|i| (i as f32 * 0.37).sin()).collect();
    let emb: Vec<f32> = (0..k * d).map(|i| (i as f32 * 1.3).cos()).collect();
    let g = Generator::init(config, &body, emb, 3, &candle_core::Device::Cpu).unwrap();
    let xi: Vec<f32> = vec![0.3, -0.2, 0.0, 0.0, 0.0, 0.0];
    let swapped: Vec<f32> = vec![0.0, 0.0, 0.3, -0.2, 0.0, 0.0];
    let a = g.generate(&[Prompt { classes: [0, 3, 4], target_loss: 0.5, xi }]).unwrap().remove(0);
    let b = g.generate(&[Prompt { classes: [3, 0, 4], target_loss: 0.5, xi: swapped }]).unwrap().remove(0);
    assert_eq!(&a.flat()[..BODY_PARAMS], &body[..]);
    assert_eq!(&b.flat()[..BODY_PARAMS], &body[..]);
    // Swapping classes 0 and 3 (with their ξ) swaps head rows 0 and 1 and their biases.
    let (wa, wb) = (a.tensor("fc2.weight").unwrap(), b.tensor("fc2.weight").unwrap());
    assert_eq!((&wa[..20], &wa[20..40], &wa[40..]), (&wb[20..40], &wb[..20], &wb[40..]));
    let (ba, bb) = (a.tensor("fc2.bias").unwrap(), b.tensor("fc2.bias").unwrap());
    assert_eq!((ba[0], ba[1], ba[2]), (bb[1], bb[0], bb[2]));
    // The target loss and ξ change the rows; an unknown class is named.
    let c = g.generate(&[Prompt { classes: [0, 3, 4], target_loss: 1.0, xi: vec![0.0; 6] }]).unwrap().remove(0);
    assert_ne!(c.tensor("fc2.weight"), a.tensor("fc2.weight"));
    let e = g.generate(&[Prompt { classes: [0, 5, 1], target_loss: 0.5, xi: vec![0.0; 6] }]).err().unwrap().to_string();
    assert!(e.contains("class 5 is not a class of the data"), "{e}");
    // Save and load give the same generator.
    let dir = tempfile::tempdir().unwrap();
    g.save(dir.path(), serde_json::json!({})).unwrap();
    let back = Generator::load(dir.path(), &candle_core::Device::Cpu).unwrap();
    let p = Prompt { classes: [2, 1, 0], target_loss: 0.7, xi: vec![0.1; 6] };
    assert_eq!(back.generate(std::slice::from_ref(&p)).unwrap(), g.generate(&[p]).unwrap());
}

#[test]
fn sample_options_refuse_bad_counts_and_out_of_range_targets() {
    use super::sample::{SampleKind, SampleOptions};
    use std::collections::BTreeMap;
    use wspace_stage_api::{Params, StageKind, Value};
    let defaults: BTreeMap<String, Value> =
        SampleKind.params().into_iter().filter_map(|p| p.default.clone().map(|d| (p.name.to_string(), d))).collect();
    assert!(SampleKind.validate(Params(&defaults)).is_ok());
    let mut zero = defaults.clone();
    zero.insert("samples_per_prompt".into(), Value::Int(0));
    let e = SampleKind.validate(Params(&zero)).unwrap_err().to_string();
    assert!(e.contains("samples_per_prompt"), "{e}");
    let mut listed = defaults.clone();
    listed.insert("target_losses".into(), Value::List(vec![Value::Float(0.3), Value::Float(1.5)]));
    let opts = SampleOptions::from_params(Params(&listed)).unwrap();
    let e = opts.grid(0.1, 1.2).unwrap_err().to_string();
    assert!(e.contains("target_losses") && e.contains("1.5") && e.contains("refused"), "{e}");
    assert_eq!(opts.grid(0.1, 1.6).unwrap(), vec![0.3, 1.5]);
    assert_eq!(SampleOptions::from_params(Params(&defaults)).unwrap().grid(0.0, 1.0).unwrap().len(), 5);
}
