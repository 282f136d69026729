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
//!
//! **Machines.** Some kinds write the same bytes on every x86-64 CPU ([`Pin::Everywhere`]); the rest
//! only within a float class ([`Pin::PerClass`]: the README's "Reproducibility across machines"), which
//! `wspace --version` names. Each class's hashes were computed by this test, natively for
//! `x86_64 with AVX2+FMA` and under `WSPACE_TEST_WRAPPER="qemu-x86_64 -cpu Nehalem"` for
//! `x86_64 without FMA`. On a class with no pinned hashes, those rows are reported and not checked.

mod common;

use common::Project;

/// How a stage's output bytes are pinned.
enum Pin {
    /// The same bytes on every x86-64 machine.
    Everywhere(&'static str),
    /// One hash per float class: `x86_64 with AVX2+FMA`, then `x86_64 without FMA`.
    PerClass(&'static str, &'static str),
}

use Pin::{Everywhere, PerClass};

/// The float classes of [`Pin::PerClass`], in its order.
const CLASSES: [&str; 2] = ["x86_64 with AVX2+FMA", "x86_64 without FMA"];

/// `(stage, kind, code version, output hash on TINY)`.
#[rustfmt::skip]
const GOLDEN: &[(&str, &str, u32, Pin)] = &[
    ("data", "dataset", 1, Everywhere("d7cb01f7c02d832df96f2141b8375c92201784991c189b40ef4fa34e47e23a88")),
    ("tasks", "tasks", 1, Everywhere("1fbbbd46792634842833c98356e5f8cd0f1e02ac790ea41751c3975d98465982")),
    ("zoo", "zoo", 3, Everywhere("15116ec07adbe950b918cd52ec7647fc02fbe76292462ef8bcad9fe7332732fe")),
    ("canonical", "canonicalise", 1, Everywhere("b69fe222c87c4c20a26edb9a6673ca36ba2de11699c2cdbddb45e05a691252b5")),
    ("dataset_embed", "dataset-embed", 2, PerClass("d4d766076e00f66a6c4ab2d9e0974547165afbcde673f0712c0dd569b5afda2b", "f8a639624121ce277266a5d46e747408e7d9189d6cc15c33e022a56e8a5db5c2")),
    ("pca", "pca", 2, PerClass("5467488a0a5cbca6f83238b49c23889ea9c11a39e1c0f3036f6ca100384b8670", "991b69478266ef38243dcb891a3de55ea181e7ab00c58e6b2957e4bfb1b34c9f")),
    ("autoencoder", "autoencoder", 3, PerClass("e23ffa1e91c1ce34668c349e5f0c01f5b24bfa1d4d29e055a6564e9823aa9b32", "c9272ce1c4dce27b1427cb09d9a22f480304cf4b0090154f9c3e551e9635eb92")),
    ("tokens", "autoencoder", 3, PerClass("fff542854b2fb9e0445e7ffd2a597ad44a05926cd9b41f92185fdc9d86edadfc", "5f40354523ecff59217e4d19e63a24021431b0a0eb7fb3941ac7d26471bfb33d")),
    ("reconstruction", "evaluate-reconstruction", 2, PerClass("67f9c9dfb294bea6e54f404d30d6971961d00bf55599812b91f169b44ccb3e27", "e83e239c27396abbe3f718c697ba72f4773eea84fcde39fef72ab5c59e903695")),
    ("align", "align", 2, PerClass("67353e19111f88c9e335921c694d6312e6e0c55ce5d1dcd8f7cf5c6b8ceb68a7", "d5c584e77f142d732cff05e14dc0415899e4364963886380ccdc0febce607c68")),
    ("row_selection", "multiclass", 1, Everywhere("0b2dd1968539debddb8c494ff702f5cde6bd45f77ac0616ecfbf188c67dff690")),
    ("generator", "generator", 1, PerClass("a4d1abeba43943dbba0e140e5af5226250c4b3b13a4437f29c345fd7001d4eca", "d200bc862668b30c1b8c56e33e7796a631e836173fe0df3cd859285851179ad0")),
    ("sample", "sample", 3, PerClass("558dab429f696b6ac2c9a9c1d97c9d0f298824678184100e0cef408353d46688", "df291a2fedce7bc256490f80e695a8a47ea71e782c2ac6df7e47f71c3096ff83")),
    ("sample_kde", "sample", 3, PerClass("5455e4eb149d84a9dc569ae087ff715b38cb0231a0a561a838e197b7eaf72a0a", "448702bee34f7769ac6c2a7d8d74ba490ae938413030e2bf6317b69ec87a282b")),
    ("evaluate_samples", "evaluate-samples", 4, PerClass("cf03fc1d1607b0f244323c3626da2626423e38890b61aed612ccf007ed1e03fd", "fc2aadc5f737047187b507ad35f1b55b196b469d7e98dc526af628800c1b3edb")),
    ("report", "report", 4, PerClass("dc53984075c9570e63ad68565212d3a23e0d5b97dafe7b685f7b370c4d26aaea", "dc53984075c9570e63ad68565212d3a23e0d5b97dafe7b685f7b370c4d26aaea")),
];

/// The quick pipeline's graph at toy size: seconds in a debug build (stages at opt-level 2).
const TINY: &str = include_str!("pipelines/tiny-golden.toml");

#[test]
fn tiny_pipeline_runs_end_to_end_and_every_kinds_output_matches_its_golden_hash() {
    let p = Project::new();
    p.write("tiny.toml", TINY);
    let version = String::from_utf8_lossy(&p.wspace(&["--version"]).stdout).into_owned();
    let class = version.lines().find_map(|l| l.strip_prefix("float class: ")).unwrap_or("unknown").to_string();
    let column = CLASSES.iter().position(|c| *c == class);
    let s = p.run_json("tiny.toml", &[], 0);
    let stages = s.variants()[0]["stages"].as_array().unwrap().clone();
    assert_eq!(stages.len(), GOLDEN.len(), "one row per stage in the golden table");
    assert!(stages.iter().all(|st| st["status"] == "ran"), "{stages:?}");
    let report = p.wspace(&["show", "tiny.toml", "report"]);
    assert!(String::from_utf8_lossy(&report.stdout).lines().next().unwrap_or("").ends_with("report.html"));

    // stage → (kind, version, output hash), in topological order.
    let mut changed: Vec<String> = Vec::new();
    let (mut problems, mut unpinned) = (Vec::new(), Vec::new());
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
        let row = GOLDEN.iter().find(|g| g.0 == stage && g.1 == kind);
        let pinned = match row.map(|g| &g.3) {
            Some(Everywhere(h)) => Some(*h),
            Some(PerClass(fma, no_fma)) => match column {
                Some(c) => Some([*fma, *no_fma][c]),
                None => {
                    unpinned.push(stage.clone());
                    continue;
                }
            },
            None => None,
        };
        match (row, pinned) {
            (Some(&(_, _, v, _)), Some(h)) if v == version && h == hash => continue,
            (Some(&(_, _, v, _)), _) if v != version => problems.push(format!(
                "kind `{kind}` is at version {version}, the golden table at {v}: update its golden hash to {hash}"
            )),
            _ if !upstream_changed.is_empty() => problems.push(format!(
                "kind `{kind}` (stage `{stage}`): new hash {hash}, its input `{}` changed: update the golden hash",
                upstream_changed[0]
            )),
            _ => problems.push(format!(
                "kind `{kind}` (stage `{stage}`, version {version}) wrote different bytes on {class}: new hash {hash}; \
                 bump the kind's version and update the golden hash"
            )),
        }
        changed.push(stage);
    }
    assert!(
        problems.is_empty(),
        "\n{}\n\nthe table in tests/golden.rs, as this build computes it on {class}:\n{table}",
        problems.join("\n")
    );
    if !unpinned.is_empty() {
        eprintln!("float class `{class}` has no pinned hashes: not checked here: {}", unpinned.join(", "));
    }

    let again = p.run_json("tiny.toml", &[], 0);
    assert!(again.statuses(0).values().all(|st| st == "cached"));
}
