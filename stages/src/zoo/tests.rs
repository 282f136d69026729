//! The zoo stage end to end on a tiny slice of the embedded data: outputs, determinism, reload, resume.

use std::path::Path;

use wspace_stage_api::Value;

use super::{Zoo, ZooKind};
use crate::data::{DatasetKind, TasksKind};
use crate::nn::{self, CnnS};
use crate::test_util::{run_shard_in, run_stage, run_stage_in};

fn ints(v: &[i64]) -> Value {
    Value::List(v.iter().map(|&x| Value::Int(x)).collect())
}
fn floats(v: &[f64]) -> Value {
    Value::List(v.iter().map(|&x| Value::Float(x)).collect())
}

/// dataset (60 train + 20 test images per class) → 4 tasks, written under `root`.
fn inputs(root: &Path) {
    run_stage(&DatasetKind, &[("train_per_class", Value::Int(60)), ("test_per_class", Value::Int(20))], &[], &root.join("data"))
        .unwrap();
    let tasks = [("count", Value::Int(4)), ("val_tasks", Value::Float(0.0)), ("test_tasks", Value::Float(0.3))];
    run_stage(&TasksKind, &tasks, &[("data", &root.join("data"))], &root.join("tasks")).unwrap();
}

fn zoo_params() -> Vec<(&'static str, Value)> {
    vec![
        ("early_epoch", ints(&[1, 1])),
        ("final_epoch", floats(&[3.0, 0.0])),
        ("final_epoch_range", ints(&[2, 3])),
        ("adam_lr", floats(&[1e-3, 3e-3])),
        ("sgd_lr", floats(&[3e-2, 1e-1])),
    ]
}

fn run_zoo(root: &Path, out: &str, scratch: &Path) {
    let ins = [("data", root.join("data")), ("tasks", root.join("tasks"))];
    let ins: Vec<(&str, &Path)> = ins.iter().map(|(k, p)| (*k, p.as_path())).collect();
    run_stage_in(&ZooKind, &zoo_params(), &ins, &root.join(out), scratch).unwrap();
}

#[test]
fn trains_every_task_row_twice_checkpointed_and_reproducibly() {
    let root = tempfile::tempdir().unwrap();
    inputs(root.path());
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run_zoo(root.path(), "zoo1", s1.path());
    run_zoo(root.path(), "zoo2", s2.path());
    let zoo = Zoo::load(&root.path().join("zoo1")).unwrap();
    assert_eq!(zoo.rows.len(), 8, "4 models × (early, final)");
    assert_eq!(zoo.num_params(), nn::NUM_PARAMS);
    for row in &zoo.rows {
        assert!(row.ok(), "{row:?}");
        assert_eq!(row.epoch, if row.checkpoint == super::Checkpoint::Early { 1 } else { 3 });
        assert!(row.test_acc > 0.0 && row.test_loss.is_finite());
    }
    // Training helped: the final checkpoints beat chance (1/3) on average.
    let finals: Vec<f64> = zoo.checkpoint(super::Checkpoint::Final).map(|r| r.test_acc).collect();
    assert!(finals.iter().sum::<f64>() / finals.len() as f64 > 0.5, "{finals:?}");
    // Same parameters, same bytes.
    for name in ["zoo.csv", "zoo.json", "metrics.json", "models/m00002-final.safetensors"] {
        let a = std::fs::read(root.path().join("zoo1").join(name)).unwrap();
        let b = std::fs::read(root.path().join("zoo2").join(name)).unwrap();
        assert!(a == b, "{name} differs between two runs");
    }
}

#[test]
fn a_saved_model_reloads_bit_identically_and_scores_as_recorded() {
    let root = tempfile::tempdir().unwrap();
    inputs(root.path());
    let s = tempfile::tempdir().unwrap();
    run_zoo(root.path(), "zoo", s.path());
    let zoo = Zoo::load(&root.path().join("zoo")).unwrap();
    let row = zoo.checkpoint(super::Checkpoint::Final).next().unwrap();
    let tensors = zoo.weights(row).unwrap();
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, nn::PARAM_SPECS.iter().map(|p| p.name).collect::<Vec<_>>());
    let model = CnnS::from_named_tensors(tensors.triples()).unwrap();
    let again: Vec<f32> = model.named_tensors().into_iter().flat_map(|(_, _, v)| v).collect();
    assert_eq!(
        again.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        zoo.flat(row).unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    // Re-evaluating the reloaded model on its task's test images gives the recorded accuracy.
    let data = crate::data::Dataset::load(&root.path().join("data")).unwrap();
    let tasks = crate::data::Tasks::load(&root.path().join("tasks")).unwrap();
    let task = &tasks.tasks[row.task_id];
    let (x, y) = super::gather(&data.test, &task.test, task).unwrap();
    let eval = nn::evaluate(&model, &x, &y);
    assert_eq!(eval.accuracy, row.test_acc);
    // Same kernel, same images: the same f64 bits; the stored value went through zoo.csv's decimal text,
    // so 1e-9 on an O(1) loss admits any format with ≥ 10 significant digits.
    assert!((eval.loss - row.test_loss).abs() < 1e-9);
}

#[test]
fn an_interrupted_zoo_resumes_without_retraining_finished_models() {
    let root = tempfile::tempdir().unwrap();
    inputs(root.path());
    let full = tempfile::tempdir().unwrap();
    run_zoo(root.path(), "whole", full.path());
    // A killed run left models 0 and 1 finished in the scratch directory. Plant them with recognisable
    // (zeroed) weights: if the resumed run retrained them, the zeros would be gone.
    let scratch = tempfile::tempdir().unwrap();
    let whole = Zoo::load(&root.path().join("whole")).unwrap();
    std::fs::create_dir_all(scratch.path().join("done")).unwrap();
    std::fs::create_dir_all(scratch.path().join("models")).unwrap();
    let zeros = crate::tensors::NamedTensors::from(CnnS::from_flat(vec![0.0; nn::NUM_PARAMS]).named_tensors());
    for id in [0usize, 1] {
        let rows: Vec<_> = whole.rows.iter().filter(|r| r.model_id == id).cloned().collect();
        for r in &rows {
            zeros.write(&scratch.path().join(&r.file)).unwrap();
        }
        crate::tensors::write_json(&scratch.path().join(format!("done/m{id:05}.json")), &rows).unwrap();
    }
    // Leftover of the model that was being trained when the run died.
    std::fs::write(scratch.path().join("models/.4242.0.tmp"), b"half").unwrap();
    run_zoo(root.path(), "resumed", scratch.path());
    let resumed = Zoo::load(&root.path().join("resumed")).unwrap();
    assert_eq!(resumed.rows, whole.rows, "the table is complete and the same");
    for row in &resumed.rows {
        let flat = resumed.flat(row).unwrap();
        if row.model_id < 2 {
            assert!(flat.iter().all(|&x| x == 0.0), "model {} was retrained", row.model_id);
        } else {
            assert_eq!(flat, whole.flat(row).unwrap(), "model {} differs from the uninterrupted run", row.model_id);
        }
    }
}

#[test]
fn shards_train_their_own_rows_into_scratch_and_the_assembled_zoo_is_the_same() {
    let root = tempfile::tempdir().unwrap();
    inputs(root.path());
    let whole = tempfile::tempdir().unwrap();
    run_zoo(root.path(), "whole", whole.path());
    let ins = [("data", root.path().join("data")), ("tasks", root.path().join("tasks"))];
    let ins: Vec<(&str, &Path)> = ins.iter().map(|(k, p)| (*k, p.as_path())).collect();
    let (scratch, out) = (tempfile::tempdir().unwrap(), root.path().join("sharded"));
    std::fs::create_dir_all(&out).unwrap();
    let done = |dir: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(dir.join("done")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    // Shard 0 of 3 trains task rows 0 and 3, into the scratch directory only.
    run_shard_in(&ZooKind, &zoo_params(), &ins, (&out, scratch.path()), (0, 3)).unwrap();
    assert_eq!(done(scratch.path()), ["m00000.json", "m00003.json"]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "a shard writes no output");
    for index in [2, 1] {
        run_shard_in(&ZooKind, &zoo_params(), &ins, (&out, scratch.path()), (index, 3)).unwrap();
    }
    assert_eq!(done(scratch.path()).len(), 4);
    run_stage_in(&ZooKind, &zoo_params(), &ins, &out, scratch.path()).unwrap();
    let (a, b) = (Zoo::load(&root.path().join("whole")).unwrap(), Zoo::load(&out).unwrap());
    assert_eq!(a.rows, b.rows);
    for name in ["zoo.csv", "zoo.json", "metrics.json"] {
        assert!(std::fs::read(root.path().join("whole").join(name)).unwrap() == std::fs::read(out.join(name)).unwrap(), "{name}");
    }
    for row in &a.rows {
        assert!(std::fs::read(root.path().join("whole").join(&row.file)).unwrap() == std::fs::read(out.join(&row.file)).unwrap());
    }
}

#[test]
fn a_resnet18_zoo_saves_torchvision_names_with_batchnorm_buffers() {
    let root = tempfile::tempdir().unwrap();
    run_stage(
        &DatasetKind,
        &[("train_per_class", Value::Int(20)), ("test_per_class", Value::Int(5))],
        &[],
        &root.path().join("data"),
    )
    .unwrap();
    let tasks = [("count", Value::Int(1)), ("val_tasks", Value::Float(0.0)), ("test_tasks", Value::Float(0.0))];
    run_stage(&TasksKind, &tasks, &[("data", &root.path().join("data"))], &root.path().join("tasks")).unwrap();
    let mut params = zoo_params();
    params.push(("arch", Value::Str("resnet18".into())));
    params.push(("batch_sizes", ints(&[32])));
    let ins = [("data", root.path().join("data")), ("tasks", root.path().join("tasks"))];
    let ins: Vec<(&str, &Path)> = ins.iter().map(|(k, p)| (*k, p.as_path())).collect();
    let scratch = tempfile::tempdir().unwrap();
    run_stage_in(&ZooKind, &params, &ins, &root.path().join("zoo"), scratch.path()).unwrap();
    let zoo = Zoo::load(&root.path().join("zoo")).unwrap();
    assert_eq!(zoo.meta.arch, "resnet18");
    assert_eq!(zoo.rows.len(), 2);
    let weights = zoo.weights(&zoo.rows[1]).unwrap();
    assert_eq!(weights.len(), 122, "62 parameters + 60 BatchNorm buffers, as torchvision's state_dict");
    assert_eq!(weights[0].name, "conv1.weight");
    assert_eq!(weights[0].shape, vec![64, 3, 7, 7]);
    assert!(weights.get("layer4.1.bn2.running_var").is_some());
    assert_eq!(weights[weights.len() - 1].shape, vec![3], "fc.bias: three outputs");
    assert!(zoo.rows.iter().all(|r| r.ok() && r.test_loss.is_finite()));
}

#[test]
fn init_shared_and_groups_are_recorded_per_model() {
    let root = tempfile::tempdir().unwrap();
    inputs(root.path());
    let ins = [("data", root.path().join("data")), ("tasks", root.path().join("tasks"))];
    let ins: Vec<(&str, &Path)> = ins.iter().map(|(k, p)| (*k, p.as_path())).collect();
    let run = |init: Value, out: &str| {
        let mut params = zoo_params();
        params.push(("init", init));
        run_stage(&ZooKind, &params, &ins, &root.path().join(out)).unwrap();
        Zoo::load(&root.path().join(out)).unwrap()
    };
    let shared = run(Value::Str("shared".into()), "shared");
    assert!(shared.rows.iter().all(|r| r.init == "shared" && r.seed == shared.rows[0].seed), "{:?}", shared.rows);
    assert_eq!(shared.meta.recipe["init"], Value::Str("shared".into()), "zoo.json records the scheme");
    let groups = run(Value::Int(2), "groups");
    for r in &groups.rows {
        assert_eq!(r.init, (r.model_id % 2).to_string());
        assert!(groups.rows.iter().filter(|o| o.model_id % 2 == r.model_id % 2).all(|o| o.seed == r.seed));
    }
    assert_ne!(groups.rows[0].seed, groups.rows.iter().find(|r| r.model_id % 2 == 1).unwrap().seed);
    // Every model of one group really started from the same weights: the seed is the init.
    assert_eq!(CnnS::init(shared.rows[0].seed), CnnS::init(shared.rows[2].seed));
    let mut params = zoo_params();
    params.push(("init", Value::Str("same".into())));
    let e = run_stage(&ZooKind, &params, &ins, &root.path().join("bad")).unwrap_err().to_string();
    assert!(e.contains("`init`"), "{e}");
}
