//! The `replicas` stage kind: the natural-diversity reference. For every task of the chosen splits,
//! `replicas` models trained independently on that task, with the zoo's own recipe: what two models
//! of one prompt differ by when they come from training rather than from a sampler.
//!
//! Replica `r` of task `t` is model `t · replicas + r`. It draws its recipe (optimizer, learning rate,
//! batch size, checkpoint epochs, data order) as zoo model `t · replicas + r` would from the zoo's
//! seed mixed with this stage's `seed`, so two replicas of a task differ in recipe and data order, and
//! none repeats the zoo's own model of the task. Its initial weights are the zoo's: with `init =
//! "shared"` (or K groups) the init the zoo's model of the task started from, with `"random"` one of
//! its own. It trains on the task's training images with the zoo's trainer and keeps both checkpoints.
//!
//! # Output
//! The `zoo` kind's layout ([`super::store`]): `zoo.csv` (`model_id` the replica's id, `task_id` its
//! task), `models/`, `zoo.json` (the zoo's arch and recipe), and `metrics.json` (`replicas`, `tasks`,
//! `models`, the final and early checkpoints' mean test accuracy, `diverged`).

use rayon::prelude::*;
use serde_json::json;
use wspace_stage_api::{choice_enum, params, Inputs, Param, ParamSpec, Params, StageContext, StageError, StageKind};

use super::sample::{InitScheme, Recipe};
use super::store::{self, Checkpoint, ZooMeta, ZooRow};
use super::{train_model, Arch};
use crate::data::{Dataset, Task, TaskSplit, Tasks};
use crate::tensors;

choice_enum! {
    /// A task split whose tasks get replicas.
    pub enum SplitName { Train = "train", Val = "val", Test = "test" }
}

impl SplitName {
    fn split(self) -> TaskSplit {
        match self {
            SplitName::Train => TaskSplit::Train,
            SplitName::Val => TaskSplit::Val,
            SplitName::Test => TaskSplit::Test,
        }
    }
}

params! {
    REPLICAS = "replicas": Int = 3, "models per task (≥ 2: a diversity reference compares pairs)";
    SPLITS = "splits": [choice(SplitName)] = ["test"], "the task splits whose tasks get replicas";
    SEED = "seed": Int = 0, "mixed into the zoo's seed for the replicas' recipe draws";
}

/// The checked parameters.
struct Options {
    replicas: usize,
    splits: Vec<TaskSplit>,
    seed: u64,
}

fn options(p: Params) -> Result<Options, StageError> {
    let replicas = p.positive(&REPLICAS)?;
    if replicas < 2 {
        return Err(StageError::param(
            REPLICAS.name,
            format!("must be at least 2 (a diversity reference compares pairs of models), got {replicas}"),
        ));
    }
    let names = p.choice_list::<SplitName>(&SPLITS)?;
    if names.is_empty() {
        return Err(StageError::param(SPLITS.name, "must name at least one split"));
    }
    Ok(Options { replicas, splits: names.into_iter().map(SplitName::split).collect(), seed: p.seed(&SEED)? })
}

fn run(ctx: &StageContext, o: &Options) -> Result<(), StageError> {
    let zoo_dir = ctx.input("zoo")?;
    let zoo_json = zoo_dir.join("zoo.json");
    let meta: ZooMeta = tensors::read_json(&zoo_json)?;
    if meta.arch != Arch::CnnS.name() {
        return Err(StageError::input("zoo", format!("is a `{}` zoo; replicas train `cnn-s` models", meta.arch)));
    }
    let recipe = Recipe::from_params(Params(&meta.recipe))
        .map_err(|e| StageError::msg(format!("{}: the zoo's recipe: {e}", zoo_json.display())))?;
    let draws = Recipe { seed: recipe.seed ^ o.seed.wrapping_add(1).wrapping_mul(0x7265_706c_6963_6173), ..recipe.clone() };
    let data = Dataset::load(ctx.input("data")?)?;
    let tasks = Tasks::load(ctx.input("tasks")?)?;
    let chosen: Vec<&Task> = tasks.tasks.iter().filter(|t| o.splits.contains(&t.split)).collect();
    if chosen.is_empty() {
        let names: Vec<&str> = o.splits.iter().map(|s| s.as_str()).collect();
        return Err(StageError::param(SPLITS.name, format!("the `tasks` input has no tasks of split {}", names.join(", "))));
    }
    let jobs: Vec<(usize, &Task)> =
        chosen.iter().flat_map(|&t| (0..o.replicas).map(move |r| (t.id * o.replicas + r, t))).collect();
    let dir = ctx.out.join("models");
    std::fs::create_dir_all(&dir).map_err(|e| StageError::io(&dir, e))?;
    ctx.progress.start(jobs.len() as u64, "models");
    let per_model: Vec<Vec<ZooRow>> = jobs
        .par_iter()
        .map(|&(id, task)| {
            let mut plan = draws.plan(id);
            if recipe.init != InitScheme::Random {
                let zoo_plan = recipe.plan(task.id);
                (plan.init_seed, plan.init) = (zoo_plan.init_seed, zoo_plan.init);
            }
            let rows = train_model(Arch::CnnS, id, &plan, task, &recipe, &data, ctx.out)?;
            ctx.progress.inc(1);
            Ok(rows)
        })
        .collect::<Result<_, StageError>>()?;
    let rows: Vec<ZooRow> = per_model.into_iter().flatten().collect();
    store::write_csv(&ctx.out.join("zoo.csv"), &rows)?;
    let out_meta = ZooMeta { models: jobs.len(), checkpoints: vec![Checkpoint::Early, Checkpoint::Final], ..meta };
    tensors::write_json(&ctx.out.join("zoo.json"), &out_meta)?;
    let acc = |c: Checkpoint| {
        let v: Vec<f64> = rows.iter().filter(|r| r.checkpoint == c && r.ok()).map(|r| r.test_acc).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    tensors::write_json(
        &ctx.out.join("metrics.json"),
        &json!({
            "replicas": o.replicas,
            "tasks": chosen.len(),
            "models": jobs.len(),
            "final_test_acc": acc(Checkpoint::Final),
            "early_test_acc": acc(Checkpoint::Early),
            "diverged": rows.iter().filter(|r| r.checkpoint == Checkpoint::Final && !r.ok()).count(),
        }),
    )
}

/// `kind = "replicas"`.
pub struct ReplicasKind;

impl StageKind for ReplicasKind {
    fn name(&self) -> &'static str {
        "replicas"
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "the natural-diversity reference: `replicas` cnn-s models per task of the chosen splits, trained independently with the zoo's recipe"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(&[REPLICAS, SPLITS, SEED])
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("zoo", true, "a cnn-s `zoo` stage: its recipe and initialisation"),
            ("tasks", true, "the zoo's `tasks` stage"),
            ("data", true, "the zoo's `dataset` stage"),
        ])
    }
    fn validate(&self, params: Params) -> Result<(), StageError> {
        options(params).map(|_| ())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let o = options(ctx.view())?;
        ctx.progress.message("training replicas");
        run(ctx, &o)
    }
}
