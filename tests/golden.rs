//! The whole science end to end on a tiny zoo — dataset → tasks → zoo → pca → autoencoder →
//! dataset-embed → align → sample → evaluate-samples → report (and evaluate-reconstruction) — and
//! every stage kind's output bytes pinned to its code version.
//!
//! A kind whose output bytes change must bump its `version()` (the cache would otherwise serve old
//! results as if they were new). [`GOLDEN`] records, per kind, the version and the output hash (the
//! tree hash of its output directory) on the tiny pipeline below. When a kind's output changes, this
//! test fails and prints the new hash; after bumping the kind's version, update its row (one line).
//! Stages downstream of a changed one get new inputs, so their hashes change too: the failure lists
//! every new hash, ready to paste.

mod common;

use common::Project;

/// `(kind, code version, output hash on TINY)`.
const GOLDEN: &[(&str, u32, &str)] = &[
    ("dataset", 1, "d7cb01f7c02d832df96f2141b8375c92201784991c189b40ef4fa34e47e23a88"),
    ("tasks", 1, "1fbbbd46792634842833c98356e5f8cd0f1e02ac790ea41751c3975d98465982"),
    ("zoo", 2, "4299629842dda87c0690171ef05f0c0a771883cd92a70f1a28e92a9448622220"),
    ("dataset-embed", 1, "1bc1f1582d8e0a70495a4d82a2e98af025b3058a814f1c1b8241cdcea7092fcc"),
    ("pca", 2, "782d7e1c18795ed91da1ba91c7fafb814627f1c90e55fd05b8fc4d4f151af1a7"),
    ("autoencoder", 1, "b01c2a15e9209c16a4bd4a2128427acc92649a0987e593bcbee2d83c7490f702"),
    ("evaluate-reconstruction", 1, "0101cfd34203b5fe97d582227364c311e3c916e4a1f1ced1e4a3dd6013ee5c63"),
    ("align", 1, "3250e4df2f476ba6758cdf48a1f3de455ea26d578e30bf412296f14bbcbb1212"),
    ("sample", 1, "74feb256c24c09bdd964620b45cd79fbfeade8592b49e9478a352d64db042bef"),
    ("evaluate-samples", 1, "ed885e270f7ee4abc86af8047b5b347f6f785ccba2406d38fa7c16712eaae11e"),
    ("report", 2, "d5cdee8cd124d504f0757ba3a02118509f487de8917f2eb4f49c88ae0d6edfc6"),
];

/// The quick pipeline's graph at toy size: seconds in a debug build (stages at opt-level 2).
const TINY: &str = r#"
[pipeline]
name = "tiny"
seed = 1

[stages.data]
kind = "dataset"
train_per_class = 40
test_per_class = 10

[stages.tasks]
kind = "tasks"
inputs = { data = "data" }
count = 12
test_per_class = 10

[stages.zoo]
kind = "zoo"
inputs = { data = "data", tasks = "tasks" }
batch_sizes = [16]
early_epoch = [1, 1]
final_epoch = [2.0, 0.0]
final_epoch_range = [2, 2]

[stages.dataset_embed]
kind = "dataset-embed"
inputs = { data = "data", tasks = "tasks" }
images_per_class = 2
image_size = 32
eval_per_class = 2

[stages.pca]
kind = "pca"
inputs = { zoo = "zoo" }
components = 4
checkpoints = ["early", "final"]

[stages.autoencoder]
kind = "autoencoder"
inputs = { pca = "pca" }
hidden = [16]
latent_dim = 4
epochs = 5
batch_size = 4
patience = 5

[stages.reconstruction]
kind = "evaluate-reconstruction"
inputs = { zoo = "zoo", pca = "pca", autoencoder = "autoencoder", tasks = "tasks", data = "data" }
synthetic_images = 8

[stages.align]
kind = "align"
inputs = { zoo = "zoo", pca = "pca", autoencoder = "autoencoder", embed = "dataset_embed" }
bins = 3
results_dim = 8
hidden = [16]
batch_size = 4
epochs = 5
patience = 5

[stages.sample]
kind = "sample"
inputs = { align = "align", pca = "pca", autoencoder = "autoencoder", embed = "dataset_embed", tasks = "tasks" }
targets = 2

[stages.evaluate_samples]
kind = "evaluate-samples"
inputs = { samples = "sample", align = "align", zoo = "zoo", tasks = "tasks", data = "data", embed = "dataset_embed", pca = "pca", autoencoder = "autoencoder" }

[stages.report]
kind = "report"
inputs = { zoo = "zoo", pca = "pca", autoencoder = "autoencoder", reconstruction = "reconstruction", embed = "dataset_embed", align = "align", samples = "evaluate_samples" }
"#;

#[test]
fn tiny_pipeline_runs_end_to_end_and_every_kinds_output_matches_its_golden_hash() {
    let p = Project::new();
    p.write("tiny.toml", TINY);
    let s = p.run_json("tiny.toml", &[], 0);
    let stages = s.variants()[0]["stages"].as_array().unwrap().clone();
    assert_eq!(stages.len(), 11);
    assert!(stages.iter().all(|st| st["status"] == "ran"), "{stages:?}");
    let report = p.wspace(&["show", "tiny.toml", "report"]);
    assert!(String::from_utf8_lossy(&report.stdout).lines().next().unwrap_or("").ends_with("report.html"));

    // stage → (kind, version, output hash), in topological order.
    let mut changed: Vec<String> = Vec::new();
    let mut problems = Vec::new();
    let mut table = String::new();
    for st in &stages {
        let key = st["key"].as_str().unwrap();
        let manifest: serde_json::Value = serde_json::from_str(&p.read(&format!("cache/entries/{key}/entry.json"))).unwrap();
        let kind = manifest["ingredients"]["kind"].as_str().unwrap();
        let version = manifest["ingredients"]["version"].as_u64().unwrap() as u32;
        let hash = manifest["output_hash"].as_str().unwrap();
        let stage = st["name"].as_str().unwrap().to_string();
        table.push_str(&format!("    (\"{kind}\", {version}, \"{hash}\"),\n"));
        let upstream_changed: Vec<&String> = manifest["ingredients"]["inputs"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|i| changed.iter().find(|c| **c == i["stage"].as_str().unwrap()))
            .collect();
        match GOLDEN.iter().find(|g| g.0 == kind) {
            Some(&(_, v, h)) if v == version && h == hash => continue,
            Some(&(_, v, _)) if v != version => problems.push(format!(
                "kind `{kind}` is at version {version}, the golden table at {v}: update its golden hash to {hash}"
            )),
            _ if !upstream_changed.is_empty() => problems.push(format!(
                "kind `{kind}` (stage `{stage}`): new hash {hash}, its input `{}` changed: update the golden hash",
                upstream_changed[0]
            )),
            _ => problems.push(format!(
                "kind `{kind}` (stage `{stage}`, version {version}) wrote different bytes: new hash {hash}; \
                 bump the kind's version and update the golden hash"
            )),
        }
        changed.push(stage);
    }
    assert!(
        problems.is_empty(),
        "\n{}\n\nthe table in tests/golden.rs, as this build computes it:\n{table}",
        problems.join("\n")
    );

    let again = p.run_json("tiny.toml", &[], 0);
    assert!(again.statuses(0).values().all(|st| st == "cached"));
}
