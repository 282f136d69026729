//! The report's opening: one table that answers "does conditional sampling work?", and a sentence that
//! says what its numbers mean, computed from them.
//!
//! # The table
//! Rows, from the `evaluate-samples` metrics (means over the same test-task samples): trained (final),
//! trained (early), sampled, row selection, nearest neighbour, NN + noise, random. Columns: test
//! accuracy, test loss, and for the sampled row the prompt R² (`prompt_r2`), the order gap
//! (`order_gap`) and the diversity (`diversity`). Row selection (`row_selection.accuracy`,
//! `row_selection.loss`), `order_gap` and `diversity` are read when the evaluate-samples stage writes
//! them; otherwise the cell shows "—" titled "not computed by this pipeline". Cells that have no meaning
//! for a row are left empty. A second table gives the reconstruction agreement, output correlation and
//! accuracy of every encoder variant in the `evaluate-reconstruction` metrics (`pca`, `pca_ae`, `mean`,
//! and any other top-level object with a `real.agreement`). Every number links to the section it comes
//! from.
//!
//! # The sentence
//! Built from the numbers only:
//! 1. what the samples score next to trained models, nearest-neighbour retrieval and random weights;
//! 2. a verdict: within [`NEAR`] (5 accuracy points) of random → "does not work here"; below retrieval →
//!    "beats random weights but not retrieval"; below trained models by more than [`NEAR`] → "beats
//!    retrieval, below trained models"; else "matches trained models";
//! 3. the best row other than the trained models;
//! 4. whether the achieved loss follows the prompt (R² above 0.5) when `prompt_r2` is there;
//! 5. for reconstructions, the best variant's agreement against chance (1/3), "above chance" meaning
//!    more than [`NEAR`] above it.

use serde_json::{json, Value as Json};

/// Accuracy difference (as a fraction) below which two rows count as the same.
pub const NEAR: f64 = 0.05;

/// A cell of the headline table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A number, shown with `unit` formatting, linking to `#section`.
    Value(f64),
    /// A metric this pipeline's stages do not write ("—").
    Missing,
    /// No meaning for this row (empty).
    Undefined,
}

/// How a column's numbers are shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Percent,
    Plain,
}

pub struct Column {
    pub title: &'static str,
    pub unit: Unit,
    /// `title` attribute of the header: what the number is.
    pub help: &'static str,
}

pub const COLUMNS: [Column; 5] = [
    Column { title: "test accuracy", unit: Unit::Percent, help: "mean accuracy on each task's real test images (chance 33.3 %)" },
    Column { title: "test loss", unit: Unit::Plain, help: "mean cross-entropy on the same images (nats)" },
    Column {
        title: "prompt R²",
        unit: Unit::Plain,
        help: "R² of achieved = target loss over the samples (1 is perfect control)",
    },
    Column { title: "order gap", unit: Unit::Percent, help: "accuracy with the prompt's class order minus with permuted labels" },
    Column { title: "diversity", unit: Unit::Plain, help: "how different the samples of one prompt are from each other" },
];

/// One row: its label, the metrics key prefix, and its cells (one per [`COLUMNS`] entry).
pub struct Row {
    pub label: &'static str,
    pub key: &'static str,
    pub cells: Vec<Cell>,
}

/// A metric: present and finite → its value; present but null/NaN → `Undefined`; absent → `Missing`.
fn cell(m: &Json, path: &str) -> Cell {
    match crate::tensors::json_path(m, path) {
        None => Cell::Missing,
        Some(v) => v.as_f64().filter(|x| x.is_finite()).map_or(Cell::Undefined, Cell::Value),
    }
}

/// The rows of the table from the `evaluate-samples` metrics.
pub fn rows(m: &Json) -> Vec<Row> {
    let rows: [(&str, &str); 7] = [
        ("trained (final)", "trained_final"),
        ("trained (early)", "trained_early"),
        ("sampled", "sample"),
        ("row selection", "row_selection"),
        ("nearest neighbour", "nn"),
        ("NN + noise", "nn_noise"),
        ("random", "random"),
    ];
    rows.iter()
        .map(|&(label, key)| {
            let sampled = key == "sample";
            let only_sampled = |path: &str| if sampled { cell(m, path) } else { Cell::Undefined };
            Row {
                label,
                key,
                cells: vec![
                    cell(m, &format!("{key}.accuracy")),
                    cell(m, &format!("{key}.loss")),
                    only_sampled("prompt_r2"),
                    only_sampled("order_gap"),
                    only_sampled("diversity"),
                ],
            }
        })
        .collect()
}

/// The columns of the methods table: every sampling method on the same prompts.
pub const METHOD_COLUMNS: [Column; 7] = [
    Column { title: "test accuracy", unit: Unit::Percent, help: "mean accuracy on each unseen task's real test images (chance 33.3 %)" },
    Column { title: "test loss", unit: Unit::Plain, help: "mean cross-entropy on the same images, as sampled (nats)" },
    Column {
        title: "R² without scaling",
        unit: Unit::Plain,
        help: "R² of achieved = target loss, the head as the method made it (before any loss-control scaling)",
    },
    Column { title: "order gap", unit: Unit::Percent, help: "accuracy with the prompt's class order minus with permuted labels" },
    Column {
        title: "draw diversity",
        unit: Unit::Percent,
        help: "mean pairwise prediction disagreement among the draws of one prompt",
    },
    Column {
        title: "natural diversity",
        unit: Unit::Percent,
        help: "the same between models trained independently on the task (the replicas)",
    },
    Column {
        title: "max error IoU",
        unit: Unit::Plain,
        help: "on the zoo's own tasks: the largest IoU of a model's error set with one of its task's training checkpoints (lower = more novel)",
    },
];

/// A row of the methods table.
pub struct MethodRow {
    pub label: String,
    pub cells: Vec<Cell>,
}

/// One row per method (its `evaluate-samples` metrics), then the natural reference (the replicas, from
/// the first method that has them).
pub fn method_rows(methods: &[(String, Json)]) -> Vec<MethodRow> {
    let mut rows: Vec<MethodRow> = methods
        .iter()
        .map(|(name, m)| MethodRow {
            label: name.clone(),
            cells: [
                "sample.accuracy",
                "sample.loss",
                "prompt_r2_unscaled",
                "order_gap",
                "diversity",
                "natural_diversity",
                "memorisation.max_iou",
            ]
            .iter()
            .map(|p| cell(m, p))
            .collect(),
        })
        .collect();
    if let Some((_, m)) = methods.iter().find(|(_, m)| matches!(cell(m, "replicas.accuracy"), Cell::Value(_))) {
        let natural = cell(m, "natural_diversity");
        rows.push(MethodRow {
            label: "natural reference (replicas)".into(),
            cells: vec![
                cell(m, "replicas.accuracy"),
                cell(m, "replicas.loss"),
                Cell::Undefined,
                Cell::Undefined,
                natural.clone(),
                natural,
                cell(m, "memorisation.natural_max_iou"),
            ],
        });
    }
    rows
}

/// How far below the training reference a sampling method's accuracy may stay and still meet the
/// accuracy target of the methods table: 1 point.
pub const ACCURACY_SLACK: f64 = 0.01;

/// A sampling method measured against the two targets of the methods table.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub name: String,
    pub accuracy: f64,
    /// The accuracy the target asks for: the row-selection baseline's (else the replicas') less
    /// [`ACCURACY_SLACK`]; `None` when the evaluation had neither.
    pub accuracy_target: Option<f64>,
    pub diversity: Option<f64>,
    pub natural_diversity: Option<f64>,
}

impl Ranked {
    /// The shortfalls from the targets, in accuracy and in diversity (0 where one is met or unmeasured).
    fn shortfalls(&self) -> (f64, f64) {
        let acc = self.accuracy_target.map_or(0.0, |t| (t - self.accuracy).max(0.0));
        let div = match (self.diversity, self.natural_diversity) {
            (Some(d), Some(n)) => (n - d).max(0.0),
            _ => 0.0,
        };
        (acc, div)
    }

    /// Whether both targets are measured and met: draws at least as diverse as the natural reference,
    /// accuracy at most [`ACCURACY_SLACK`] below the reference.
    pub fn meets_targets(&self) -> bool {
        self.accuracy_target.is_some()
            && self.diversity.is_some()
            && self.natural_diversity.is_some()
            && self.shortfalls() == (0.0, 0.0)
    }

    /// The sum of the two shortfalls: a method at chance accuracy is far from the targets however
    /// diverse its draws, and a method whose draws are all alike is far however accurate.
    fn distance(&self) -> f64 {
        let (a, d) = self.shortfalls();
        a + d
    }
}

/// The best sampling method: the one closest to the targets ([`Ranked::distance`]), the more
/// accurate on a tie. Methods without a sample accuracy are left out.
pub fn best_method(methods: &[(String, Json)]) -> Option<Ranked> {
    let value = |m: &Json, p: &str| match cell(m, p) {
        Cell::Value(x) => Some(x),
        _ => None,
    };
    methods
        .iter()
        .filter_map(|(name, m)| {
            let reference = value(m, "row_selection.accuracy").or_else(|| value(m, "replicas.accuracy"));
            Some(Ranked {
                name: name.clone(),
                accuracy: value(m, "sample.accuracy")?,
                accuracy_target: reference.map(|r| r - ACCURACY_SLACK),
                diversity: value(m, "diversity"),
                natural_diversity: value(m, "natural_diversity"),
            })
        })
        .min_by(|a, b| a.distance().total_cmp(&b.distance()).then(b.accuracy.total_cmp(&a.accuracy)))
}

/// The sentence under the methods table.
pub fn methods_verdict(methods: &[(String, Json)]) -> String {
    let Some(best) = best_method(methods) else { return String::new() };
    let name = &best.name;
    let acc = pct(best.accuracy);
    if best.meets_targets() {
        return format!(
            "The best method is {name}: {acc} test accuracy, within {} of the trained reference, with draws that differ at least as much as independently trained models do.",
            points(ACCURACY_SLACK)
        );
    }
    let (short_acc, short_div) = best.shortfalls();
    let mut missed = Vec::new();
    if let (Some(t), true) = (best.accuracy_target, short_acc > 0.0) {
        missed.push(format!("accuracy {} below the target {}", points(short_acc), pct(t)));
    }
    if let (Some(d), Some(n), true) = (best.diversity, best.natural_diversity, short_div > 0.0) {
        // Two decimals: the two are often within a tenth of a point.
        missed.push(format!("draw diversity {:.2} % against the natural {:.2} %", 100.0 * d, 100.0 * n));
    }
    if missed.is_empty() {
        missed.push("a target unmeasured (no reference accuracy or no natural diversity)".into());
    }
    format!("No method meets both targets. The closest is {name} ({acc} test accuracy): {}.", join_and(&missed))
}

/// The encoder variants of the `evaluate-reconstruction` metrics: `(name, agreement, correlation,
/// accuracy)`, `pca` and `pca_ae` first, then the rest by name.
pub fn reconstruction_rows(m: &Json) -> Vec<(String, Cell, Cell, Cell)> {
    let Some(obj) = m.as_object() else { return Vec::new() };
    let mut names: Vec<&String> =
        obj.keys().filter(|k| crate::tensors::json_path(&obj[k.as_str()], "real.agreement").is_some()).collect();
    let rank = |k: &str| match k {
        "pca" => 0,
        "pca_ae" => 1,
        _ => 2,
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    names
        .into_iter()
        .map(|k| {
            let v = &obj[k.as_str()];
            (k.clone(), cell(v, "real.agreement"), cell(v, "real.correlation"), cell(v, "real.accuracy"))
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

fn points(d: f64) -> String {
    format!("{:.1} points", 100.0 * d.abs())
}

/// The sentence under the table (see the module doc); empty when the sampled accuracy is unknown.
pub fn verdict(m: &Json) -> String {
    let acc = |k: &str| match cell(m, &format!("{k}.accuracy")) {
        Cell::Value(x) => Some(x),
        _ => None,
    };
    let Some(s) = acc("sample") else { return String::new() };
    let mut out = format!("Sampled models score {} test accuracy on held-out tasks", pct(s));
    let refs: Vec<String> =
        [("trained_final", "trained models"), ("nn", "nearest-neighbour retrieval"), ("random", "random weights")]
            .iter()
            .filter_map(|(k, name)| acc(k).map(|x| format!("{} for {name}", pct(x))))
            .collect();
    if !refs.is_empty() {
        out.push_str(&format!(", against {}", join_and(&refs)));
    }
    out.push_str(". ");
    let (tf, nn, rnd) = (acc("trained_final"), acc("nn"), acc("random"));
    let sentence = match (rnd, nn, tf) {
        (Some(r), _, _) if s - r < NEAR => format!(
            "Conditional sampling does not work here: the samples are within {} of random weights.",
            points(NEAR)
        ),
        (_, Some(n), _) if s < n => format!(
            "Sampling beats random weights{} but not retrieval: {} below the nearest neighbour, so nothing here shows generation adding to memorisation.",
            rnd.map(|r| format!(" by {}", points(s - r))).unwrap_or_default(),
            points(n - s)
        ),
        (_, _, Some(t)) if s < t - NEAR => format!(
            "Sampling beats retrieval{} but stays {} below trained models.",
            nn.map(|n| format!(" by {}", points(s - n))).unwrap_or_default(),
            points(t - s)
        ),
        (_, _, Some(_)) => format!(
            "Sampling matches trained models (within {}){}.",
            points(NEAR),
            nn.map(|n| format!(" and beats retrieval by {}", points(s - n))).unwrap_or_default()
        ),
        _ => String::new(),
    };
    out.push_str(&sentence);
    let best = rows(m)
        .into_iter()
        .filter(|r| !r.key.starts_with("trained"))
        .filter_map(|r| match r.cells[0] {
            Cell::Value(x) => Some((r.label, x)),
            _ => None,
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((label, x)) = best {
        out.push_str(&format!(" The best row besides the trained models is {label} ({}).", pct(x)));
    }
    if let Cell::Value(r2) = cell(m, "prompt_r2") {
        out.push_str(&if r2 > 0.5 {
            format!(" The achieved loss follows the prompted one (R² = {r2:.2}).")
        } else {
            format!(" The prompted loss does not control the achieved one (R² = {r2:.2}; 1 would be perfect).")
        });
    }
    out
}

/// The sentence under the reconstruction table; empty without variants.
pub fn reconstruction_verdict(m: &Json) -> String {
    let best = reconstruction_rows(m)
        .into_iter()
        .filter_map(|(name, a, ..)| match a {
            Cell::Value(x) => Some((name, x)),
            _ => None,
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((name, a)) = best else { return String::new() };
    let chance = 1.0 / 3.0;
    if a - chance > NEAR {
        format!(
            "The best reconstruction ({name}) agrees with the original models on {} of real test predictions, {} above chance (33.3 %).",
            pct(a),
            points(a - chance)
        )
    } else {
        format!(
            "No reconstruction carries the models' function: the best ({name}) agrees with the originals on {} of real test predictions, within {} of chance (33.3 %).",
            pct(a),
            points(NEAR)
        )
    }
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [a] => a.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// A few headline numbers for the runner to print (`metrics.json` `headline`): sampled, nearest
/// neighbour, random and trained (final) accuracy, the best reconstruction agreement, and the best
/// sampling method ([`best_method`]) with its accuracy; those present.
pub fn headline_metrics(samples: Option<&Json>, reconstruction: Option<&Json>, methods: &[(String, Json)]) -> Json {
    let mut h = serde_json::Map::new();
    if let Some(best) = best_method(methods) {
        h.insert("best_method".into(), json!(best.name));
        h.insert("best_method_accuracy".into(), json!(best.accuracy));
        h.insert("best_method_meets_targets".into(), json!(best.meets_targets()));
    }
    if let Some(m) = samples {
        for (name, key) in [
            ("sampled_accuracy", "sample"),
            ("nn_accuracy", "nn"),
            ("random_accuracy", "random"),
            ("trained_final_accuracy", "trained_final"),
        ] {
            if let Cell::Value(x) = cell(m, &format!("{key}.accuracy")) {
                h.insert(name.into(), json!(x));
            }
        }
    }
    if let Some(m) = reconstruction {
        let best = reconstruction_rows(m)
            .into_iter()
            .filter_map(|(name, a, ..)| if let Cell::Value(x) = a { Some((name, x)) } else { None })
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((name, x)) = best {
            h.insert(format!("reconstruction_agreement_{name}"), json!(x));
        }
    }
    Json::Object(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(sample: f64, nn: f64, random: f64, trained: f64) -> Json {
        json!({
            "sample": {"accuracy": sample, "loss": 1.0},
            "nn": {"accuracy": nn, "loss": 0.9},
            "nn_noise": {"accuracy": nn - 0.01, "loss": 0.95},
            "random": {"accuracy": random, "loss": 1.1},
            "trained_final": {"accuracy": trained, "loss": 0.2},
            "trained_early": {"accuracy": trained - 0.1, "loss": 0.4},
            "prompt_r2": -3.9,
        })
    }

    #[test]
    fn absent_metrics_are_missing_and_other_rows_leave_sample_columns_undefined() {
        let r = rows(&metrics(0.38, 0.7, 0.34, 0.93));
        let sampled = r.iter().find(|r| r.key == "sample").unwrap();
        assert_eq!(sampled.cells[0], Cell::Value(0.38));
        assert_eq!(sampled.cells[2], Cell::Value(-3.9));
        assert_eq!(sampled.cells[3], Cell::Missing, "order_gap is not written yet");
        let rs = r.iter().find(|r| r.key == "row_selection").unwrap();
        assert_eq!(rs.cells[0], Cell::Missing);
        assert_eq!(r.iter().find(|r| r.key == "nn").unwrap().cells[2], Cell::Undefined);
        let with = json!({"row_selection": {"accuracy": 0.94, "loss": 0.2}, "order_gap": 0.3, "diversity": null});
        let r = rows(&with);
        assert_eq!(r[3].cells[0], Cell::Value(0.94));
        assert_eq!(r[2].cells[3], Cell::Value(0.3));
        assert_eq!(r[2].cells[4], Cell::Undefined, "null = not defined");
    }

    #[test]
    fn the_verdict_follows_the_numbers() {
        let v = verdict(&metrics(0.36, 0.7, 0.34, 0.93));
        assert!(v.starts_with("Sampled models score 36.0 % test accuracy"), "{v}");
        assert!(v.contains("does not work here"), "{v}");
        assert!(v.contains("best row besides the trained models is nearest neighbour (70.0 %)"), "{v}");
        assert!(v.contains("does not control"), "{v}");
        let v = verdict(&metrics(0.5, 0.7, 0.34, 0.93));
        assert!(v.contains("beats random weights by 16.0 points but not retrieval: 20.0 points below"), "{v}");
        let v = verdict(&metrics(0.8, 0.7, 0.34, 0.93));
        assert!(v.contains("beats retrieval by 10.0 points but stays 13.0 points below trained"), "{v}");
        assert!(v.contains("is sampled (80.0 %)"), "{v}");
        let v = verdict(&metrics(0.92, 0.7, 0.34, 0.93));
        assert!(v.contains("matches trained models"), "{v}");
        assert_eq!(verdict(&json!({})), "");
    }

    fn method(acc: f64, div: f64) -> Json {
        json!({"sample": {"accuracy": acc}, "row_selection": {"accuracy": 0.93}, "diversity": div, "natural_diversity": 0.066})
    }

    #[test]
    fn the_best_method_is_the_closest_to_both_targets_not_the_most_diverse() {
        // The quick run's shape: a chance-level method with wild draws, an accurate one whose draws
        // are all alike, and one slightly short on both.
        let methods = vec![
            ("kde".to_string(), method(0.335, 0.68)),
            ("generator".to_string(), method(0.9245, 0.003)),
            ("flow".to_string(), method(0.903, 0.0657)),
        ];
        let best = best_method(&methods).unwrap();
        assert_eq!(best.name, "flow");
        assert!(!best.meets_targets());
        let v = methods_verdict(&methods);
        assert!(v.starts_with("No method meets both targets. The closest is flow (90.3 % test accuracy)"), "{v}");
        assert!(
            v.contains("accuracy 1.7 points below the target 92.0 %")
                && v.contains("draw diversity 6.57 % against the natural 6.60 %"),
            "{v}"
        );

        let mut methods = methods;
        methods.push(("new".to_string(), method(0.925, 0.07)));
        let best = best_method(&methods).unwrap();
        assert_eq!((best.name.as_str(), best.meets_targets()), ("new", true));
        assert!(methods_verdict(&methods).starts_with("The best method is new: 92.5 %"));
        // Without a reference nothing is said to meet the targets; the most accurate wins the tie.
        let bare = vec![
            ("a".to_string(), json!({"sample": {"accuracy": 0.5}})),
            ("b".to_string(), json!({"sample": {"accuracy": 0.6}})),
        ];
        let best = best_method(&bare).unwrap();
        assert_eq!((best.name.as_str(), best.meets_targets()), ("b", false));
        assert!(methods_verdict(&bare).contains("a target unmeasured"));
    }

    #[test]
    fn reconstruction_rows_take_every_variant_pca_first() {
        let m = json!({
            "mean": {"real": {"agreement": 0.33}},
            "zeta": {"real": {"agreement": 0.5, "correlation": 0.1}},
            "pca_ae": {"real": {"agreement": 0.34}},
            "pca": {"real": {"agreement": 0.36}},
            "models": 40,
            "distributions": {"pca": {"real": [1, 2]}},
        });
        let names: Vec<String> = reconstruction_rows(&m).into_iter().map(|r| r.0).collect();
        assert_eq!(names, ["pca", "pca_ae", "mean", "zeta"]);
        assert!(reconstruction_verdict(&m).contains("(zeta) agrees with the original models on 50.0 %"));
        let flat = json!({"pca": {"real": {"agreement": 0.35}}});
        assert!(reconstruction_verdict(&flat).starts_with("No reconstruction carries"));
        let h = headline_metrics(Some(&metrics(0.36, 0.7, 0.34, 0.93)), Some(&m), &[]);
        assert_eq!(h["sampled_accuracy"], json!(0.36));
        assert_eq!(h["reconstruction_agreement_zeta"], json!(0.5));
        assert_eq!(h.as_object().unwrap().len(), 5);
    }
}
