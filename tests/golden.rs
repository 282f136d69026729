//! The whole science end to end on a tiny zoo — dataset → tasks → zoo (shared init) → canonicalise →
//! pca → autoencoder (behavioural loss; and the token transformer, whose latents the alignment and the
//! evaluation's decoded baseline use) → dataset-embed → align, multiclass, generator → sample (generator;
//! and SANE's KDE on the transformer) → evaluate-samples → report (and evaluate-reconstruction) — and every stage's output bytes pinned to its kind's code version.
//!
//! A kind whose output bytes change must bump its `version()` (the cache would otherwise serve old
//! results as if they were new). [`GOLDEN`] records, per stage, its kind's version and the output hash (the
//! tree hash of its output directory) on the tiny pipeline below. When a kind's output changes, this
//! test fails and prints the new hash; after bumping the kind's version, update its row (one line).
//! Stages downstream of a changed one get new inputs, so their hashes change too: the failure lists
//! every new hash, ready to paste.

mod common;

use common::Project;

/// `(stage, kind, code version, output hash on TINY)`.
const GOLDEN: &[(&str, &str, u32, &str)] = &[
    ("data", "dataset", 1, "d7cb01f7c02d832df96f2141b8375c92201784991c189b40ef4fa34e47e23a88"),
    ("tasks", "tasks", 1, "1fbbbd46792634842833c98356e5f8cd0f1e02ac790ea41751c3975d98465982"),
    ("zoo", "zoo", 3, "15116ec07adbe950b918cd52ec7647fc02fbe76292462ef8bcad9fe7332732fe"),
    ("canonical", "canonicalise", 1, "b69fe222c87c4c20a26edb9a6673ca36ba2de11699c2cdbddb45e05a691252b5"),
    ("dataset_embed", "dataset-embed", 2, "d4d766076e00f66a6c4ab2d9e0974547165afbcde673f0712c0dd569b5afda2b"),
    ("pca", "pca", 2, "5467488a0a5cbca6f83238b49c23889ea9c11a39e1c0f3036f6ca100384b8670"),
    ("autoencoder", "autoencoder", 2, "c71df5805edd72615227670f4b1fc609ec775ce02cc10711a635060af4cd0735"),
    ("tokens", "autoencoder", 2, "9c9b8a5282c6d3906248b4f7b5ff22271dd0d37f8708b2e4f9d8c2e4c6697688"),
    ("reconstruction", "evaluate-reconstruction", 2, "67f9c9dfb294bea6e54f404d30d6971961d00bf55599812b91f169b44ccb3e27"),
    ("align", "align", 2, "67353e19111f88c9e335921c694d6312e6e0c55ce5d1dcd8f7cf5c6b8ceb68a7"),
    ("row_selection", "multiclass", 1, "0b2dd1968539debddb8c494ff702f5cde6bd45f77ac0616ecfbf188c67dff690"),
    ("generator", "generator", 1, "a4d1abeba43943dbba0e140e5af5226250c4b3b13a4437f29c345fd7001d4eca"),
    ("sample", "sample", 3, "558dab429f696b6ac2c9a9c1d97c9d0f298824678184100e0cef408353d46688"),
    ("sample_kde", "sample", 3, "5455e4eb149d84a9dc569ae087ff715b38cb0231a0a561a838e197b7eaf72a0a"),
    ("evaluate_samples", "evaluate-samples", 4, "cf03fc1d1607b0f244323c3626da2626423e38890b61aed612ccf007ed1e03fd"),
    ("report", "report", 4, "dc53984075c9570e63ad68565212d3a23e0d5b97dafe7b685f7b370c4d26aaea"),
];

/// The quick pipeline's graph at toy size: seconds in a debug build (stages at opt-level 2).
const TINY: &str = include_str!("pipelines/tiny-golden.toml");

#[test]
fn tiny_pipeline_runs_end_to_end_and_every_kinds_output_matches_its_golden_hash() {
    let p = Project::new();
    p.write("tiny.toml", TINY);
    let s = p.run_json("tiny.toml", &[], 0);
    let stages = s.variants()[0]["stages"].as_array().unwrap().clone();
    assert_eq!(stages.len(), GOLDEN.len(), "one row per stage in the golden table");
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
        table.push_str(&format!("    (\"{stage}\", \"{kind}\", {version}, \"{hash}\"),\n"));
        let upstream_changed: Vec<&String> = manifest["ingredients"]["inputs"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|i| changed.iter().find(|c| **c == i["stage"].as_str().unwrap()))
            .collect();
        match GOLDEN.iter().find(|g| g.0 == stage && g.1 == kind) {
            Some(&(_, _, v, h)) if v == version && h == hash => continue,
            Some(&(_, _, v, _)) if v != version => problems.push(format!(
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
