//! The `tasks` stage kind: ordered 3-class tasks sampled from a dataset, and [`Tasks`] to read them.
//!
//! A task is an ordered triplet of dataset classes: `classes[k]` ↔ output unit `k` of the model
//! trained on it. Tasks are split into train / val / test at the level of *unordered* triplets,
//! so a held-out task's three classes never occur together, in any order, in a training task.
//!
//! # Sampling (all from one `seed`; ChaCha8 with our own unbiased bounded draws and Fisher–Yates,
//! so the result does not depend on a `rand` version)
//! 1. Enumerate the `C(K, 3)` unordered triplets of the dataset's `K` classes, shuffle them
//!    (stream 0), and deal `round(test_tasks × T)` to test, `round(val_tasks × T)` to val (each at
//!    least one when its fraction is > 0), the rest to train; train must keep at least one.
//! 2. Rows per split: `round(count × split triplets / T)` for test and val, the rest train. A
//!    split's rows are drawn from its ordered tasks (6 orders per triplet) by shuffled passes:
//!    every ordered task is used once before any is used twice. Rows are numbered train first,
//!    then val, then test.
//! 3. Images per task (stream `1 + task_id`, so one task's images do not depend on the others):
//!    for each of its classes, the class's training images are shuffled, the first
//!    `train_per_class` kept (0 = all), and `round(val_fraction × n)` of them (at most `n − 1`)
//!    become the task's validation images. Test images are the first `test_per_class` of the class
//!    in the dataset's test split, in file order (0 = all), so tasks with the same classes share
//!    them. Every list is sorted ascending.
//!
//! # Parameters
//! | name | type | default | meaning |
//! | --- | --- | --- | --- |
//! | `count` | integer | `100` | number of task rows (rows may share a triplet) |
//! | `seed` | integer | `0` | the RNG seed |
//! | `val_tasks`, `test_tasks` | number | `0.1`, `0.2` | fractions of the unordered triplets held out |
//! | `val_fraction` | number | `0.2` | fraction of each task's training images used for validation |
//! | `train_per_class`, `test_per_class` | integer | `0`, `0` | image caps per class and task (0 = all) |
//!
//! Output: `tasks.csv`, `tasks.json`, `indices.safetensors`, `metrics.json` (see the
//! [module doc](super)).

use std::path::Path;

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};
use wspace_stage_api::{params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use super::dataset::Dataset;
use crate::sampling::shuffle;
use crate::tensors::{self, csv_row, TensorFile};

/// Classes per task.
const WAYS: usize = 3;

/// Which part of the task split a task belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskSplit {
    Train,
    Val,
    Test,
}

impl TaskSplit {
    pub const ALL: [TaskSplit; 3] = [TaskSplit::Train, TaskSplit::Val, TaskSplit::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskSplit::Train => "train",
            TaskSplit::Val => "val",
            TaskSplit::Test => "test",
        }
    }
}

/// One task: its classes in output-unit order and its image indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: usize,
    /// Dataset class indices; `classes[k]` is output unit `k`.
    pub classes: [usize; WAYS],
    pub split: TaskSplit,
    /// Indices into the dataset's *train* split, sorted.
    pub train: Vec<usize>,
    /// Indices into the dataset's *train* split (held out from `train`), sorted.
    pub val: Vec<usize>,
    /// Indices into the dataset's *test* split, sorted.
    pub test: Vec<usize>,
}

impl Task {
    /// The output unit of a dataset label, if the label is one of this task's classes.
    pub fn local_label(&self, dataset_label: i64) -> Option<usize> {
        self.classes.iter().position(|&c| c as i64 == dataset_label)
    }

    /// The unordered triplet (sorted classes).
    pub fn triplet(&self) -> [usize; WAYS] {
        let mut t = self.classes;
        t.sort_unstable();
        t
    }
}

/// The unordered class triplets (sorted within and across) dealt to each split of tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TripletSplit {
    pub train: Vec<[usize; WAYS]>,
    pub val: Vec<[usize; WAYS]>,
    pub test: Vec<[usize; WAYS]>,
}

impl TripletSplit {
    pub fn get(&self, split: TaskSplit) -> &[[usize; WAYS]] {
        match split {
            TaskSplit::Train => &self.train,
            TaskSplit::Val => &self.val,
            TaskSplit::Test => &self.test,
        }
    }
}

/// A `tasks` stage's output, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Tasks {
    /// The dataset's class names (index = dataset label).
    pub class_names: Vec<String>,
    /// Every unordered triplet's split, including triplets no row happened to draw.
    pub triplets: TripletSplit,
    /// Ordered by id (`tasks[i].id == i`).
    pub tasks: Vec<Task>,
}

/// The checked parameters of a `tasks` stage.
#[derive(Debug, Clone)]
pub struct TasksOptions {
    pub count: usize,
    pub seed: u64,
    pub val_tasks: f64,
    pub test_tasks: f64,
    pub val_fraction: f64,
    pub train_per_class: usize,
    pub test_per_class: usize,
}

params! {
    COUNT = "count": Int = 100, "number of task rows (rows may share a triplet)";
    SEED = "seed": Int = 0, "RNG seed";
    VAL_TASKS = "val_tasks": Float = 0.1, "fraction of the unordered class triplets held out as validation tasks";
    TEST_TASKS = "test_tasks": Float = 0.2, "fraction of the unordered class triplets held out as test tasks";
    VAL_FRACTION = "val_fraction": Float = 0.2, "fraction of each task's training images used for per-task validation";
    TRAIN_PER_CLASS = "train_per_class": Int = 0, "training images (train + val) per class and task, a random subset (0 = all)";
    TEST_PER_CLASS = "test_per_class": Int = 0, "test images per class and task, the first in file order (0 = all)";
}
/// The kind's parameters, in the order `wspace kinds` lists them.
const PARAMS: &[Param] = &[COUNT, SEED, VAL_TASKS, TEST_TASKS, VAL_FRACTION, TRAIN_PER_CLASS, TEST_PER_CLASS];

impl Default for TasksOptions {
    fn default() -> Self {
        TasksOptions::from_params(Params(&Param::defaults(PARAMS))).expect("the defaults are valid")
    }
}

impl TasksOptions {
    pub fn from_params(p: Params) -> Result<Self, StageError> {
        Ok(TasksOptions {
            count: p.positive(&COUNT)?,
            seed: p.seed(&SEED)?,
            val_tasks: p.fraction(&VAL_TASKS, false)?,
            test_tasks: p.fraction(&TEST_TASKS, false)?,
            val_fraction: p.fraction(&VAL_FRACTION, true)?,
            train_per_class: p.count(&TRAIN_PER_CLASS)?,
            test_per_class: p.count(&TEST_PER_CLASS)?,
        })
    }

    /// Samples the tasks for `dataset` (see the module doc).
    pub fn sample(&self, dataset: &Dataset) -> Result<Tasks, StageError> {
        let k = dataset.num_classes();
        let triplets = self.split_triplets(k)?;
        let total = triplets.train.len() + triplets.val.len() + triplets.test.len();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);

        let rows_for = |n: usize| ((self.count * n) as f64 / total as f64).round() as usize;
        let rows_test = rows_for(triplets.test.len()).min(self.count);
        let rows_val = rows_for(triplets.val.len()).min(self.count - rows_test);
        let rows = [self.count - rows_test - rows_val, rows_val, rows_test];

        let train_by_class: Vec<Vec<usize>> = (0..k).map(|c| dataset.train.indices_of(c)).collect();
        let test_by_class: Vec<Vec<usize>> = (0..k).map(|c| dataset.test.indices_of(c)).collect();
        let mut tasks = Vec::with_capacity(self.count);
        for (split, &n_rows) in TaskSplit::ALL.into_iter().zip(&rows) {
            for classes in ordered_rows(triplets.get(split), n_rows, &mut rng) {
                let id = tasks.len();
                let mut task_rng = ChaCha8Rng::seed_from_u64(self.seed);
                task_rng.set_stream(1 + id as u64);
                let mut task = Task { id, classes, split, train: Vec::new(), val: Vec::new(), test: Vec::new() };
                for &c in &classes {
                    let mut pool = train_by_class[c].clone();
                    if pool.is_empty() {
                        return Err(StageError::msg(format!(
                            "task {id}: class {c} ({}) has no training images in the dataset",
                            dataset.meta.classes[c]
                        )));
                    }
                    shuffle(&mut pool, &mut task_rng);
                    if self.train_per_class > 0 {
                        pool.truncate(self.train_per_class);
                    }
                    let n_val = ((self.val_fraction * pool.len() as f64).round() as usize).min(pool.len() - 1);
                    task.val.extend_from_slice(&pool[..n_val]);
                    task.train.extend_from_slice(&pool[n_val..]);
                    let test = &test_by_class[c];
                    let n_test = if self.test_per_class > 0 { self.test_per_class.min(test.len()) } else { test.len() };
                    task.test.extend_from_slice(&test[..n_test]);
                }
                task.train.sort_unstable();
                task.val.sort_unstable();
                task.test.sort_unstable();
                tasks.push(task);
            }
        }
        Ok(Tasks { class_names: dataset.meta.classes.clone(), triplets, tasks })
    }

    /// The unordered triplets of `k` classes dealt to [train, val, test] (stream 0 of the seed).
    fn split_triplets(&self, k: usize) -> Result<TripletSplit, StageError> {
        if k < WAYS {
            return Err(StageError::msg(format!("the dataset has {k} classes; a task needs {WAYS}")));
        }
        let mut all = Vec::new();
        for a in 0..k {
            for b in a + 1..k {
                for c in b + 1..k {
                    all.push([a, b, c]);
                }
            }
        }
        let t = all.len();
        let held_out = |f: f64| {
            if f > 0.0 {
                ((f * t as f64).round() as usize).max(1)
            } else {
                0
            }
        };
        let (n_test, n_val) = (held_out(self.test_tasks), held_out(self.val_tasks));
        if n_test + n_val >= t {
            return Err(StageError::msg(format!(
                "`test_tasks` = {} and `val_tasks` = {} hold out {n_test} + {n_val} of the {t} class triplets of {k} classes, \
                 leaving none for training; lower them",
                self.test_tasks, self.val_tasks
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        shuffle(&mut all, &mut rng);
        let mut test: Vec<_> = all.drain(..n_test).collect();
        let mut val: Vec<_> = all.drain(..n_val).collect();
        let mut train = all;
        for s in [&mut train, &mut val, &mut test] {
            s.sort_unstable();
        }
        Ok(TripletSplit { train, val, test })
    }
}

/// `n` ordered tasks from `triplets`: shuffled passes over every order of every triplet.
fn ordered_rows(triplets: &[[usize; WAYS]], n: usize, rng: &mut ChaCha8Rng) -> Vec<[usize; WAYS]> {
    const ORDERS: [[usize; WAYS]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    let ordered: Vec<[usize; WAYS]> =
        triplets.iter().flat_map(|t| ORDERS.iter().map(move |o| [t[o[0]], t[o[1]], t[o[2]]])).collect();
    let mut rows = Vec::with_capacity(n);
    while rows.len() < n && !ordered.is_empty() {
        let mut pass = ordered.clone();
        shuffle(&mut pass, rng);
        let take = (n - rows.len()).min(pass.len());
        rows.extend_from_slice(&pass[..take]);
    }
    rows
}

/// `tasks.json`: the tasks without their index lists.
#[derive(Serialize, Deserialize)]
struct TasksFile {
    classes: Vec<String>,
    triplets: TripletSplit,
    tasks: Vec<TaskEntry>,
}

#[derive(Serialize, Deserialize)]
struct TaskEntry {
    id: usize,
    classes: [usize; WAYS],
    class_names: Vec<String>,
    split: TaskSplit,
    train_count: usize,
    val_count: usize,
    test_count: usize,
}

impl Tasks {
    /// The tasks of one split, in id order.
    pub fn split(&self, split: TaskSplit) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(move |t| t.split == split)
    }

    /// Writes `tasks.csv`, `tasks.json` and `indices.safetensors` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), StageError> {
        let mut csv_rows = Vec::new();
        for t in &self.tasks {
            let [a, b, c] = t.classes;
            csv_rows.push(csv_row![t.id, a, b, c, t.split.as_str()]);
        }
        tensors::write_csv(&dir.join("tasks.csv"), &["task_id", "class_0", "class_1", "class_2", "split"], csv_rows)?;

        let file = TasksFile {
            classes: self.class_names.clone(),
            triplets: self.triplets.clone(),
            tasks: self
                .tasks
                .iter()
                .map(|t| TaskEntry {
                    id: t.id,
                    classes: t.classes,
                    class_names: t.classes.iter().map(|&c| self.class_names[c].clone()).collect(),
                    split: t.split,
                    train_count: t.train.len(),
                    val_count: t.val.len(),
                    test_count: t.test.len(),
                })
                .collect(),
        };
        tensors::write_json(&dir.join("tasks.json"), &file)?;

        let csr = |list: fn(&Task) -> &Vec<usize>| {
            let mut offsets = vec![0i64];
            let mut values = Vec::new();
            for t in &self.tasks {
                values.extend(list(t).iter().map(|&i| i as i64));
                offsets.push(values.len() as i64);
            }
            (tensors::i64_bytes(values.iter().copied()), values.len(), tensors::i64_bytes(offsets))
        };
        let (train, n_train, train_off) = csr(|t| &t.train);
        let (val, n_val, val_off) = csr(|t| &t.val);
        let (test, n_test, test_off) = csr(|t| &t.test);
        let n_off = self.tasks.len() + 1;
        tensors::write_safetensors(
            &dir.join("indices.safetensors"),
            &[
                ("train", Dtype::I64, vec![n_train], &train),
                ("train_offsets", Dtype::I64, vec![n_off], &train_off),
                ("val", Dtype::I64, vec![n_val], &val),
                ("val_offsets", Dtype::I64, vec![n_off], &val_off),
                ("test", Dtype::I64, vec![n_test], &test),
                ("test_offsets", Dtype::I64, vec![n_off], &test_off),
            ],
        )
    }

    /// Reads a `tasks` stage's output directory.
    pub fn load(dir: &Path) -> Result<Tasks, StageError> {
        let json_path = dir.join("tasks.json");
        let file: TasksFile = tensors::read_json(&json_path)?;
        let indices = TensorFile::open(&dir.join("indices.safetensors"))?;
        let n = file.tasks.len();
        let lists = |name: &str| -> Result<Vec<Vec<usize>>, StageError> {
            let values = indices.i64_vec(name)?;
            let offsets = indices.i64_vec(&format!("{name}_offsets"))?;
            let bad = || StageError::msg(format!("{}: tensor `{name}_offsets` is inconsistent", indices.path()));
            if offsets.len() != n + 1 {
                return Err(StageError::msg(format!(
                    "{}: `{name}_offsets` has {} entries, but {} lists {n} tasks",
                    indices.path(),
                    offsets.len(),
                    json_path.display()
                )));
            }
            offsets
                .windows(2)
                .map(|w| {
                    let (a, b) = (usize::try_from(w[0]).map_err(|_| bad())?, usize::try_from(w[1]).map_err(|_| bad())?);
                    let slice = values.get(a..b).ok_or_else(bad)?;
                    slice.iter().map(|&i| usize::try_from(i).map_err(|_| bad())).collect()
                })
                .collect()
        };
        let (train, val, test) = (lists("train")?, lists("val")?, lists("test")?);
        let tasks = file
            .tasks
            .into_iter()
            .zip(train.into_iter().zip(val).zip(test))
            .enumerate()
            .map(|(i, (e, ((train, val), test)))| {
                if e.id != i || e.classes.iter().any(|&c| c >= file.classes.len()) {
                    return Err(StageError::msg(format!(
                        "{}: task at position {i} has id {} and classes {:?} ({} classes)",
                        json_path.display(),
                        e.id,
                        e.classes,
                        file.classes.len()
                    )));
                }
                Ok(Task { id: e.id, classes: e.classes, split: e.split, train, val, test })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tasks { class_names: file.classes, triplets: file.triplets, tasks })
    }
}

/// `kind = "tasks"`: see the [module doc](self).
pub struct TasksKind;

impl StageKind for TasksKind {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "ordered 3-class tasks from a dataset, with train/val/test tasks split by unordered class triplet"
    }

    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(PARAMS)
    }

    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![("data", true, "a `dataset` stage")])
    }

    fn validate(&self, params: Params) -> Result<(), StageError> {
        TasksOptions::from_params(params).map(|_| ())
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let opts = TasksOptions::from_params(ctx.view())?;
        let dataset = Dataset::load(ctx.input("data")?)?;
        ctx.progress.message(&format!("sampling {} tasks", opts.count));
        let tasks = opts.sample(&dataset)?;
        tasks.write(ctx.out)?;
        let rows = |s| tasks.split(s).count();
        let triplets = |s| tasks.triplets.get(s).len();
        let mut ordered: Vec<_> = tasks.tasks.iter().map(|t| t.classes).collect();
        ordered.sort_unstable();
        ordered.dedup();
        let mean_train = tasks.tasks.iter().map(|t| t.train.len()).sum::<usize>() as f64 / tasks.tasks.len() as f64;
        tensors::write_json(
            &ctx.out.join("metrics.json"),
            &serde_json::json!({
                "tasks": tasks.tasks.len(),
                "train_tasks": rows(TaskSplit::Train),
                "val_tasks": rows(TaskSplit::Val),
                "test_tasks": rows(TaskSplit::Test),
                "train_triplets": triplets(TaskSplit::Train),
                "val_triplets": triplets(TaskSplit::Val),
                "test_triplets": triplets(TaskSplit::Test),
                "distinct_ordered_tasks": ordered.len(),
                "mean_train_images": mean_train,
            }),
        )
    }
}

#[cfg(test)]
#[path = "tasks_tests.rs"]
mod tests;
