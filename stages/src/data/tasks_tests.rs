//! Tests of the `tasks` kind: determinism, the held-out triplet property, class order, index lists.

use std::collections::HashSet;

use wspace_stage_api::Value;

use super::*;
use crate::data::dataset::{DatasetKind, DatasetMeta, Split};
use crate::test_util::run_stage;

/// `k` classes, `per_class` train images and `test_per_class` test images each, interleaved by
/// class (label of image i = i mod k), one byte per image.
fn dataset(k: usize, per_class: usize, test_per_class: usize) -> Dataset {
    let split = |n: usize| Split { images: vec![0; n * k], labels: (0..n * k).map(|i| (i % k) as i64).collect(), image_len: 1 };
    Dataset {
        meta: DatasetMeta {
            classes: (0..k).map(|c| format!("c{c}")).collect(),
            channels: 1,
            height: 1,
            width: 1,
            train_count: per_class * k,
            test_count: test_per_class * k,
            format: "test".into(),
            train_class_counts: vec![per_class; k],
            test_class_counts: vec![test_per_class; k],
        },
        train: split(per_class),
        test: split(test_per_class),
    }
}

fn sample(opts: &TasksOptions, d: &Dataset) -> Tasks {
    opts.sample(d).unwrap()
}

#[test]
fn sampling_is_deterministic_for_a_seed_and_differs_across_seeds() {
    let d = dataset(10, 20, 5);
    let opts = TasksOptions { count: 50, ..Default::default() };
    let a = sample(&opts, &d);
    assert_eq!(a, sample(&opts, &d));
    let b = sample(&TasksOptions { seed: 1, ..opts.clone() }, &d);
    assert_ne!(a.triplets, b.triplets);
    assert_ne!(a.tasks.iter().map(|t| t.classes).collect::<Vec<_>>(), b.tasks.iter().map(|t| t.classes).collect::<Vec<_>>());
}

#[test]
fn held_out_triplets_never_occur_in_training_tasks_in_any_order() {
    let d = dataset(10, 10, 2);
    for seed in 0..5 {
        let t = sample(&TasksOptions { count: 300, seed, ..Default::default() }, &d);
        let (tr, va, te) = (&t.triplets.train, &t.triplets.val, &t.triplets.test);
        assert_eq!((tr.len(), va.len(), te.len()), (84, 12, 24), "120 triplets: 10 % val, 20 % test");
        let train_set: HashSet<[usize; 3]> = tr.iter().copied().collect();
        assert!(va.iter().chain(te).all(|x| !train_set.contains(x)));
        assert!(va.iter().all(|x| !te.contains(x)));
        for task in &t.tasks {
            assert!(t.triplets.get(task.split).contains(&task.triplet()), "task {} uses a triplet of another split", task.id);
            if task.split != TaskSplit::Train {
                assert!(!train_set.contains(&task.triplet()));
            }
        }
        let rows: Vec<usize> = TaskSplit::ALL.iter().map(|&s| t.split(s).count()).collect();
        assert_eq!(rows, vec![210, 30, 60]);
        assert!(t.tasks.iter().enumerate().all(|(i, task)| task.id == i));
    }
}

#[test]
fn ordered_rows_cover_every_order_before_repeating() {
    let d = dataset(5, 4, 1);
    // 10 triplets; all for training gives 60 ordered tasks.
    let opts = TasksOptions { count: 60, val_tasks: 0.0, test_tasks: 0.0, ..Default::default() };
    let t = sample(&opts, &d);
    let distinct: HashSet<[usize; 3]> = t.tasks.iter().map(|x| x.classes).collect();
    assert_eq!(distinct.len(), 60, "each ordered task exactly once");
    assert!(t.tasks.iter().any(|x| x.classes[0] > x.classes[1]), "orders are not just sorted");
}

#[test]
fn index_lists_follow_classes_caps_and_fractions() {
    let d = dataset(6, 50, 8);
    let opts = TasksOptions { count: 12, train_per_class: 20, test_per_class: 3, val_fraction: 0.25, ..Default::default() };
    let t = sample(&opts, &d);
    for task in &t.tasks {
        assert_eq!((task.train.len(), task.val.len(), task.test.len()), (45, 15, 9));
        assert!(task.train.iter().all(|i| !task.val.contains(i)), "train and val are disjoint");
        for &i in task.train.iter().chain(&task.val) {
            assert!(task.local_label(d.train.labels[i]).is_some());
        }
        for (k, &c) in task.classes.iter().enumerate() {
            let first: Vec<usize> = d.test.indices_of(c).into_iter().take(3).collect();
            assert!(first.iter().all(|i| task.test.contains(i)), "test = first 3 of the class in file order");
            assert_eq!(task.local_label(c as i64), Some(k), "class i ↔ output unit i");
        }
        assert!(task.train.windows(2).all(|w| w[0] < w[1]));
    }
    // Rows differ in their random image subsets.
    assert_ne!(t.tasks[0].train, t.tasks[1].train);
}

#[test]
fn bad_parameters_and_small_datasets_are_clear_errors() {
    let e = TasksOptions { test_tasks: 0.6, val_tasks: 0.4, ..Default::default() }.sample(&dataset(10, 2, 1)).unwrap_err();
    assert!(e.to_string().contains("leaving none for training"), "{e}");
    let e = TasksOptions::default().sample(&dataset(2, 2, 1)).unwrap_err();
    assert!(e.to_string().contains("the dataset has 2 classes; a task needs 3"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    let e = run_stage(&TasksKind, &[("val_fraction", Value::Float(1.0))], &[("data", tmp.path())], &tmp.path().join("o"))
        .unwrap_err();
    assert!(e.to_string().contains("`val_fraction` must be in [0, 1)"), "{e}");
}

#[test]
fn stage_output_loads_back_and_preserves_class_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, a, b) = (tmp.path().join("data"), tmp.path().join("a"), tmp.path().join("b"));
    run_stage(&DatasetKind, &[("train_per_class", Value::Int(30)), ("test_per_class", Value::Int(10))], &[], &data).unwrap();
    let params = [("count", Value::Int(40)), ("seed", Value::Int(7)), ("train_per_class", Value::Int(12))];
    run_stage(&TasksKind, &params, &[("data", &data)], &a).unwrap();
    run_stage(&TasksKind, &params, &[("data", &data)], &b).unwrap();
    for f in ["tasks.csv", "tasks.json", "indices.safetensors", "metrics.json"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs between runs");
    }
    let loaded = Tasks::load(&a).unwrap();
    let expected = TasksOptions { count: 40, seed: 7, train_per_class: 12, ..Default::default() }
        .sample(&Dataset::load(&data).unwrap())
        .unwrap();
    assert_eq!(loaded, expected);
    assert_eq!(loaded.class_names[0], "T-shirt/top");

    let csv = std::fs::read_to_string(a.join("tasks.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("task_id,class_0,class_1,class_2,split"));
    for (line, task) in lines.zip(&loaded.tasks) {
        let [x, y, z] = task.classes;
        assert_eq!(line, format!("{},{x},{y},{z},{}", task.id, task.split.as_str()));
    }
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["tasks"], 40);
    assert_eq!(metrics["test_triplets"], 24);
}
