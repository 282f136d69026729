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
