//! The whole science end to end on a tiny zoo — dataset → tasks → zoo (shared init) → canonicalise →
//! pca → autoencoder (behavioural loss; and the token transformer, whose latents the alignment and the
//! evaluation's decoded baseline use) → dataset-embed → align, multiclass, generator → sample (generator;
//! and SANE's KDE on the transformer) → evaluate-samples → report (and evaluate-reconstruction; the flow sampler and the replicas; a public zoo imported, the zoo exported) — and every stage's output bytes pinned to its kind's code version.
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
    ("zoo", "zoo", 4, Everywhere("ca862af1bd496ed55d547b1c49b62160c1a494e15ee6c49798c5f8fc5c061f08")),
    ("canonical", "canonicalise", 1, Everywhere("9f16912f43c558ec33c69976b91467ef4f8d43c792e7d4432fb0f0a86d518a25")),
    ("dataset_embed", "dataset-embed", 2, PerClass("d4d766076e00f66a6c4ab2d9e0974547165afbcde673f0712c0dd569b5afda2b", "f8a639624121ce277266a5d46e747408e7d9189d6cc15c33e022a56e8a5db5c2")),
    ("pca", "pca", 2, PerClass("cbffd0d7a54191d30db7285165f2dfa55c8c718213f937c07c6c2839935c6ea2", "175332ae2c5de756fdbb9f4f5331b32f8e114862b4fe704b690f86fd40874ec6")),
    ("autoencoder", "autoencoder", 3, PerClass("dc40641787c8b1a390dec3d7eb3b73f3401c0f4ff03a7de172cdd0549aeb0f7c", "fbe2345b155b97b40fdb7807bc882fa2530e3d0959f5375e58dd99128a713620")),
    ("tokens", "autoencoder", 3, PerClass("f3367b2975910e707853567014a260bdd5426b301c1e1f06164c203235b3ffad", "75847b2690495baec2feefd7cde46868c0e0e46ba3e5b89d00d44859bdb0bbe0")),
    ("reconstruction", "evaluate-reconstruction", 2, PerClass("67829ecc3f21802f33ccc93b3326f14b611f70f55fd39ed9671d464637e827f7", "27f18e81337a9b3422aad233955c271e7d2c5e19934487f19cb8bccf82d65a52")),
    ("align", "align", 2, PerClass("a9c4fd770494e730c2cb73acc311a7580f51f7fc4fe4578e965d53a9bf467859", "5e5633fedb1fd1c8077f5d4c00b834b5b13c52a961644e685f5b7fd453f9458b")),
    ("row_selection", "multiclass", 2, Everywhere("975b29535e51eab8d1bb1968aeb7693a3be5fe8bd6a0707288a9185f6d5b1ac0")),
    ("generator", "generator", 1, PerClass("a789b58c9e34d2e68dbb58c31b9bd71d3eaaf4e0de21a58e455fd0d495beaccc", "8fe1c6b2748e96d78da85954e873620198160a47b0f767b4b6f5d0192533f5f4")),
    ("sample", "sample", 3, PerClass("870fc86a627fb283c2a6c86435a3d9cb7e9e66ae2cb665286c2f056476ae2580", "3e34a60a966f2d99f979c413f4a030c39a68544f3fbdc12b5949d15313da4d4d")),
    ("sample_kde", "sample", 3, PerClass("d47b32600b86916ec5b1c1b277a6f7f3ca7cf08e0daa7a3b5f833522089773cf", "243abdad602de7ab7f49f96cba56049d3ea1677fd5cc0c5dc7856933bc2cefd9")),
    ("evaluate_samples", "evaluate-samples", 5, PerClass("a716058b9359233485b68bf58512e1501acb9cd9649602d5d2278b18853beda9", "835bb850ed80a361b6864b778e8b876d5709c2eecd5214ec95028ee0d2e94a6a")),
    ("replicas", "replicas", 2, Everywhere("52becb46bc53d764c138284af67eac74357acbba2f8d87881c362d628a9e83bc")),
    ("flow", "flow", 1, PerClass("d9d123b48bd00b1426cabdee051bcfbad74f23bf1655f1e8bcf69fb40b5a895d", "882cb161638cbae4528ebbc92c73ee0e90b1dd4857cae2c22bb2e45246d42374")),
    ("sample_flow", "sample", 3, PerClass("478e2f728cfe8077fd111d18115fc890bdfd9b57bdde4a92a0a099539eeb1c1e", "1cab41419bcd74f5233cfccf38a56852debe2edf774fc1dbe8b85baac3e445dd")),
    ("sample_flow_train", "sample", 3, PerClass("132ee70d4acdbc89f581214cac1e680981ccfd622796b0ac23c5c56eb73cfe92", "7d179f85e3c06495123d0564d79b3201f6f2f6caa1f33d84fe4f473962869992")),
    ("evaluate_flow", "evaluate-samples", 5, PerClass("8cd4efbc53c8ce1ddfd9ff256f7578ded78c36d466322591f997cd9a094c033f", "4948419c5897f9c6af171724fc501bed01ab7923ab725b963aaabf1a6c15b47f")),
    ("report", "report", 6, PerClass("0731d6f51d7485788894711d6bc8dd35ebf17c36b12c72cf7f2493abf8a18136", "59188fc5c156284b2055688487b5173a36640739982dac59501eae4fff2d71c1")),
    ("imported", "zoo-import", 1, Everywhere("2d0d8e1e61ca4949f4557a7a0bb2cd58cd3185255edf67adcba78fb3f56d5527")),
    ("exported", "export-zoo", 1, Everywhere("700b52e0018ccd58a532b1f4513f1eb2056602f5813866f7bd5b1d18ae8d19f4")),
];

/// The quick pipeline's graph at toy size: seconds in a debug build (stages at opt-level 2).
const TINY: &str = include_str!("pipelines/tiny-golden.toml");

#[test]
fn tiny_pipeline_runs_end_to_end_and_every_kinds_output_matches_its_golden_hash() {
    let p = Project::new();
    let tiny = TINY.replace("FIXTURES", concat!(env!("CARGO_MANIFEST_DIR"), "/stages/tests/fixtures/zoos"));
    p.write("tiny.toml", &tiny);
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

    // A codec the flow cannot read (the MLP's flat latent) is refused before it trains, naming the
    // stage and the input.
    let mlp = "\n[stages.flow_mlp]\nkind = \"flow\"\ninputs = { pca = \"pca\", autoencoder = \"autoencoder\", zoo = \"canonical\", embed = \"dataset_embed\" }\n";
    p.write("mlp.toml", &format!("{tiny}{mlp}"));
    let out = p.wspace(&["run", "mlp.toml", "flow_mlp"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("flow_mlp") && err.contains("input `autoencoder`") && err.contains("`mlp` codec"), "{err}");
}
