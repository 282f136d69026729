//! Novelty and diversity (see the module doc): the natural reference of the replicas, the weight
//! distances between draws and between replicas, and memorisation on the zoo's own tasks.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value as Json};

use super::baselines::Matched;
use super::measures::{agreement, diversity, error_iou, finite_mean, mean_score, mean_within_groups, Score};
use super::scoring::{max_iou, Reference, SampleEval, TaskRefs};
use crate::generate::sample::SampleRow;
pub use crate::tensors::finite_json as num;
use crate::tensors::NamedTensors;

/// The mean over `tasks` of a per-task value of its replicas (tasks with fewer than two replicas left
/// out): `pair(a, b, labels)` averaged over the task's pairs of replicas.
fn over_replica_pairs(
    refs: &BTreeMap<usize, TaskRefs>,
    tasks: &BTreeSet<usize>,
    pair: impl Fn(&Reference, &Reference, &[u8]) -> f64,
) -> f64 {
    finite_mean(tasks.iter().filter_map(|t| refs.get(t)).map(|r| {
        let groups = vec![0; r.replicas.len()];
        mean_within_groups(&groups, |i, j| pair(&r.replicas[i], &r.replicas[j], &r.labels))
    }))
}

/// The tasks `rows` prompt.
pub fn tasks_of(rows: &[SampleRow]) -> BTreeSet<usize> {
    rows.iter().map(|s| s.task_id).collect()
}

/// The natural reference on `tasks`: the replicas' mean score and their mean pairwise prediction
/// disagreement (the natural diversity).
pub fn natural(refs: &BTreeMap<usize, TaskRefs>, tasks: &BTreeSet<usize>) -> (Score, f64) {
    let scores: Vec<Score> = tasks.iter().filter_map(|t| refs.get(t)).flat_map(|r| r.replicas.iter().map(|m| m.score)).collect();
    (mean_score(&scores), over_replica_pairs(refs, tasks, |a, b, _| 1.0 - agreement(&a.predictions, &b.predictions)))
}

/// Per tensor, and over the body (every tensor but the head's, `head`), the distance of two models'
/// weights relative to their size, `‖a − b‖ / ((‖a‖ + ‖b‖) / 2)` (0 for the same weights, about √2 for
/// independent ones of equal norm), tensors matched by name.
fn distances(a: &NamedTensors, b: &NamedTensors, head: &[String]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let (mut diff, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for x in a.iter() {
        let Some(y) = b.get(&x.name) else { continue };
        let d2: f64 = x.values.iter().zip(&y.values).map(|(&p, &q)| (p as f64 - q as f64).powi(2)).sum();
        let (a2, b2): (f64, f64) =
            (x.values.iter().map(|&p| (p as f64).powi(2)).sum(), y.values.iter().map(|&q| (q as f64).powi(2)).sum());
        let size = 0.5 * (a2.sqrt() + b2.sqrt());
        out.insert(x.name.clone(), if size > 0.0 { d2.sqrt() / size } else { 0.0 });
        if !head.contains(&x.name) {
            (diff, na, nb) = (diff + d2, na + a2, nb + b2);
        }
    }
    let size = 0.5 * (na.sqrt() + nb.sqrt());
    out.insert("body".into(), if size > 0.0 { diff.sqrt() / size } else { 0.0 });
    out
}

/// `{tensor: {draws, replicas}}` (and `body`): the mean relative weight distance between the draws of
/// one prompt and between the replicas of one task (the samples' tasks).
pub fn weight_distances(samples: &[SampleRow], evals: &[SampleEval], refs: &BTreeMap<usize, TaskRefs>, head: &[String]) -> Json {
    let prompts: Vec<usize> = samples.iter().map(|s| s.prompt).collect();
    let names: Vec<String> =
        evals.first().map_or_else(Vec::new, |e| e.weights.iter().map(|t| t.name.clone()).chain(["body".to_string()]).collect());
    // Each pair's distances once, for every tensor (keyed by the two models' addresses).
    let cache: RefCell<HashMap<(usize, usize), BTreeMap<String, f64>>> = RefCell::default();
    let distance = |a: &NamedTensors, b: &NamedTensors, name: &str| -> f64 {
        let key = (a as *const NamedTensors as usize, b as *const NamedTensors as usize);
        cache.borrow_mut().entry(key).or_insert_with(|| distances(a, b, head)).get(name).copied().unwrap_or(f64::NAN)
    };
    let mut out = serde_json::Map::new();
    for name in names {
        let draws = mean_within_groups(&prompts, |i, j| distance(&evals[i].weights, &evals[j].weights, &name));
        let replicas = over_replica_pairs(refs, &tasks_of(samples), |a, b, _| distance(&a.weights, &b.weights, &name));
        out.insert(name, json!({ "draws": num(draws), "replicas": num(replicas) }));
    }
    Json::Object(out)
}

/// Memorisation on the zoo's own tasks (`memorisation` samples and their evaluations): the samples'
/// largest error IoU with their task's zoo checkpoints against the replicas' (models trained anew on
/// the task), and against the baselines at the samples' accuracy.
pub fn memorisation(
    samples: &[SampleRow],
    evals: &[SampleEval],
    refs: &BTreeMap<usize, TaskRefs>,
    baselines: &[(&str, Matched)],
) -> Json {
    let tasks = tasks_of(samples);
    let prompts: Vec<usize> = samples.iter().map(|s| s.prompt).collect();
    let replica_max_iou = finite_mean(
        tasks
            .iter()
            .filter_map(|t| refs.get(t))
            .flat_map(|r| r.replicas.iter().map(|m| max_iou(&m.predictions, &r.checkpoints, &r.labels))),
    );
    let sample_iou = finite_mean(evals.iter().map(|e| e.max_iou));
    let mut base = serde_json::Map::new();
    let mut beats = serde_json::Map::new();
    for (name, m) in baselines {
        let iou = finite_mean(m.results.iter().map(|r| r.max_iou));
        base.insert(
            name.to_string(),
            json!({
                "scale": m.scale,
                "accuracy": num(finite_mean(m.results.iter().map(|r| r.score.accuracy))),
                "max_iou": num(iou),
                "diversity": num(diversity(&prompts, &m.results.iter().map(|r| r.predictions.as_slice()).collect::<Vec<_>>())),
            }),
        );
        beats.insert(name.to_string(), json!(sample_iou < iou));
    }
    json!({
        "samples": samples.len(),
        "tasks": tasks.len(),
        "accuracy": num(finite_mean(evals.iter().map(|e| e.sample.accuracy))),
        "max_iou": num(sample_iou),
        "diversity": num(diversity(&prompts, &evals.iter().map(|e| e.predictions.as_slice()).collect::<Vec<_>>())),
        "natural_max_iou": num(replica_max_iou),
        "replica_iou": num(over_replica_pairs(refs, &tasks, |a, b, l| error_iou(&a.predictions, &b.predictions, l))),
        "baselines": base,
        "beats": beats,
    })
}
