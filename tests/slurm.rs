//! The Slurm executor against a live Slurm (`.ci/run` starts a one-node cluster with
//! `scripts/slurm/up.sh` and exports `SLURM_CONF`). Each test that needs Slurm first asks `sinfo`;
//! where no Slurm answers it prints why and returns (skipped), so `cargo test` passes on a laptop —
//! except under `CI=true`, where an unreachable Slurm fails the test: CI cannot pass by skipping.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Project;

/// Whether a Slurm controller answers, with an idle or mixed node; prints the reason when not.
fn slurm_reachable(test: &str) -> bool {
    let why = match Command::new("sinfo").args(["-h", "-o", "%a"]).output() {
        Err(e) => format!("`sinfo` cannot run: {e}"),
        Ok(o) if !o.status.success() => format!("`sinfo` failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Ok(o) if !String::from_utf8_lossy(&o.stdout).contains("up") => "no partition is up".to_string(),
        Ok(_) => return true,
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: no Slurm reachable ({why}), and CI=true forbids skipping; `.ci/run` starts one (scripts/slurm/up.sh)");
    }
    eprintln!("skipped {test}: no Slurm reachable ({why}); `.ci/run` starts one (scripts/slurm/up.sh)");
    false
}

const COMMANDS: &str = include_str!("pipelines/commands-slurm.toml");

/// stage → (key, output hash), from a run's JSON summary and the cache's manifests.
fn keys_and_hashes(p: &Project, summary: &common::Summary, cache: &str) -> BTreeMap<String, (String, String)> {
    summary.variants()[0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let key = s["key"].as_str().unwrap().to_string();
            let manifest: serde_json::Value =
                serde_json::from_str(&p.read(&format!("{cache}/entries/{key}/entry.json"))).expect("entry.json");
            (s["name"].as_str().unwrap().to_string(), (key, manifest["output_hash"].as_str().unwrap().to_string()))
        })
        .collect()
}

/// A directory holding an `sbatch` that only records that it was called, and fails.
fn fake_sbatch(p: &Project) -> PathBuf {
    let bin = p.path("fake-bin");
    p.write("fake-bin/sbatch", &format!("#!/bin/sh\necho \"$@\" >> {}\nexit 1\n", p.path("sbatch-calls").display()));
    Command::new("chmod").arg("+x").arg(bin.join("sbatch")).status().unwrap();
    bin
}

#[test]
fn command_pipeline_gives_the_same_hashes_on_slurm_and_a_cached_rerun_submits_nothing() {
    if !slurm_reachable("command_pipeline_gives_the_same_hashes_on_slurm") {
        return;
    }
    let p = Project::new();
    p.write("p.toml", COMMANDS);
    let local = p.run_json("p.toml", &["--cache", "local"], 0);
    let slurm = p.run_json("p.toml", &["--cache", "slurm", "--executor", "slurm"], 0);
    assert_eq!(slurm.statuses(0), common::expect(&[("a", "ran"), ("b", "ran"), ("c", "ran")]));
    let (l, s) = (keys_and_hashes(&p, &local, "local"), keys_and_hashes(&p, &slurm, "slurm"));
    assert_eq!(l, s, "same keys and output hashes");
    // It really went through Slurm: each stage has a job log written by `exec-stage`.
    for (stage, (key, _)) in &s {
        let logs: Vec<_> = std::fs::read_dir(p.path(&format!("slurm/jobs/{key}/logs"))).unwrap().collect();
        assert_eq!(logs.len(), 1, "{stage}: one job log");
        let log = std::fs::read_to_string(logs[0].as_ref().unwrap().path()).unwrap();
        assert!(log.contains(&format!("wspace exec-stage: stage `{stage}`")), "{log}");
    }

    // Cached: no job at all, even with an `sbatch` that would fail.
    let path = format!("{}:{}", fake_sbatch(&p).display(), std::env::var("PATH").unwrap_or_default());
    let out = p.cmd(&["run", "p.toml", "--cache", "slurm", "--executor", "slurm"]).env("PATH", path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).matches("cached").count() == 3);
    assert!(!p.path("sbatch-calls").exists(), "sbatch was called: {}", p.read("sbatch-calls"));
}

#[test]
fn sbatch_missing_or_refusing_is_a_clear_error() {
    // Missing: needs no Slurm.
    let p = Project::new();
    p.write("p.toml", COMMANDS);
    let out = p.cmd(&["run", "p.toml", "--executor", "slurm"]).env("PATH", "/nonexistent").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run `sbatch`: not found on PATH"), "{err}");
    assert!(!p.path("cache/entries").exists(), "nothing published");

    if !slurm_reachable("sbatch_refusing_is_a_clear_error") {
        return;
    }
    p.write("p.toml", &format!("{COMMANDS}\n[executor]\nkind = \"slurm\"\npartition = \"no-such-partition\"\n"));
    let out = p.wspace(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`sbatch --parsable") && err.contains("--partition=no-such-partition"), "{err}");
    assert!(err.contains("invalid partition"), "sbatch's own message: {err}");
}

/// The quick pipeline's file with `shards` for its zoo, written into the project.
fn quick_with_shards(p: &Project, shards: usize) {
    let quick = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/quick.toml")).unwrap();
    p.write("quick.toml", &format!("{quick}\n[executor.stages.zoo]\nshards = {shards}\n"));
}

/// Every file below `dir` (relative path → bytes).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn quick_zoo_in_4_shards_on_slurm_equals_the_local_zoo() {
    if !slurm_reachable("quick_zoo_in_4_shards_on_slurm_equals_the_local_zoo") {
        return;
    }
    let p = Project::new();
    quick_with_shards(&p, 4);
    let local = p.run_json("quick.toml", &["zoo", "--cache", "local"], 0);
    let slurm = p.run_json("quick.toml", &["zoo", "--cache", "slurm", "--executor", "slurm"], 0);
    let key = local.stage(0, "zoo")["key"].as_str().unwrap().to_string();
    assert_eq!(slurm.stage(0, "zoo")["key"], local.stage(0, "zoo")["key"], "shards do not join the key");
    let (l, s) = (tree(&p.path(&format!("local/entries/{key}/out"))), tree(&p.path(&format!("slurm/entries/{key}/out"))));
    assert_eq!(l.len(), 203, "100 models × 2 checkpoints + zoo.csv, zoo.json, metrics.json");
    assert!(l == s, "the zoos differ in {:?}", l.keys().filter(|k| l.get(*k) != s.get(*k)).collect::<Vec<_>>());
    let logs = std::fs::read_dir(p.path(&format!("slurm/jobs/{key}/logs"))).unwrap().count();
    assert_eq!(logs, 4, "one log per shard");
}

/// `(array job id, task id, state)` of the queued tasks of jobs named `name`.
fn queued(name: &str) -> Vec<(String, usize, String)> {
    let out = Command::new("squeue").args(["-h", "-r", "-n", name, "-o", "%F %K %t"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?, f.get(2)?.to_string()))
        })
        .collect()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(x) = f() {
            return x;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_shard_killed_with_scancel_is_resubmitted_alone_by_the_next_run() {
    if !slurm_reachable("a_shard_killed_with_scancel_is_resubmitted_alone_by_the_next_run") {
        return;
    }
    let p = Project::new();
    quick_with_shards(&p, 4);
    // A distinct pipeline name keeps this test's jobs apart from the others' in `squeue -n`.
    let text = p.read("quick.toml").replacen("name = \"quick\"", "name = \"quick-scancel\"", 1);
    p.write("quick.toml", &text);
    let args = ["run", "quick.toml", "zoo", "--set", "tasks.count=16", "--executor", "slurm", "--format", "json"];
    let child = p.cmd(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let name = "wspace-quick-scancel-zoo";
    let job = wait_for("task 1 of the zoo job running", Duration::from_secs(600), || {
        queued(name).into_iter().find(|(_, task, state)| *task == 1 && state == "R").map(|(job, _, _)| job)
    });
    let status = Command::new("scancel").arg(format!("{job}_1")).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("Slurm job {job}: 1 of 4 task(s) did not succeed (1)")), "{err}");
    assert!(err.contains("── task 1, log ") && err.contains("CANCELLED"), "the task's log tail is shown: {err}");

    let out = p.wspace(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("zoo: 3 of 4 shards finished in an earlier run"), "{err}");
    assert!(err.contains("1 task(s) [1] of 4"), "only the cancelled shard is resubmitted: {err}");
    // The published zoo is whole; the scratch directory with the shards' work and markers is gone.
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = summary["variants"][0]["stages"].as_array().unwrap().iter().find(|s| s["name"] == "zoo").unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let models = std::fs::read_dir(p.path(&format!("cache/entries/{key}/out/models"))).unwrap().count();
    assert_eq!(models, 32, "16 models × 2 checkpoints");
    assert!(!p.path(&format!("cache/scratch/{key}")).exists());
}

#[test]
fn ctrl_c_cancels_the_runs_own_jobs() {
    if !slurm_reachable("ctrl_c_cancels_the_runs_own_jobs") {
        return;
    }
    let p = Project::new();
    p.write("p.toml", "[pipeline]\nname = \"sleepy\"\n[stages.nap]\nkind = \"command\"\nrun = \"sleep 120\"\n");
    let child = p.cmd(&["run", "p.toml", "--executor", "slurm"]).stderr(Stdio::piped()).spawn().unwrap();
    let job = wait_for("the job running", Duration::from_secs(300), || {
        queued("wspace-sleepy-nap").into_iter().find(|(_, _, s)| s == "R").map(|(job, _, _)| job)
    });
    let started = Instant::now();
    sigint(child.id());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "the run ended promptly");
    assert!(err.contains(&format!("interrupted: cancelled Slurm job {job}")), "{err}");
    wait_for("the job gone from the queue", Duration::from_secs(30), || queued("wspace-sleepy-nap").is_empty().then_some(()));
}

fn sigint(pid: u32) {
    assert!(Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap().success());
}

#[test]
fn exec_stage_rejects_a_bad_spec_clearly() {
    // Needs no Slurm: `exec-stage` is an ordinary command.
    let p = Project::new();
    let out = p.wspace(&["exec-stage", "missing.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: cannot read missing.json"));

    let spec = |version: u32, shards: usize| {
        serde_json::json!({
            "pipeline": "p", "stage": "a", "kind": "command", "version": version, "key": "00",
            "params": {"run": "true", "outputs": [], "deps": [], "params": {}}, "inputs": {},
            "out": p.path("out"), "scratch": p.path("scratch"), "workdir": p.path(""), "threads": 1, "shards": shards
        })
        .to_string()
    };
    p.write("old.json", &spec(999, 1));
    let err = String::from_utf8(p.wspace(&["exec-stage", "old.json"]).stderr).unwrap();
    assert!(err.contains("kind `command` is at code version 1 in this binary but 999 in the spec"), "{err}");
    p.write("one.json", &spec(1, 1));
    let err = String::from_utf8(p.wspace(&["exec-stage", "one.json", "--shard", "3"]).stderr).unwrap();
    assert!(err.contains("stage `a` runs in 1 shard(s); --shard 3 names none of them"), "{err}");
    let out = p.wspace(&["exec-stage", "one.json", "--shard", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(p.path("out").is_dir());
}

/// `sbatch` and `squeue` stand-ins that run each job at once, in the foreground, as its one task 0:
/// the Slurm executor's files and quoting are exercised without a cluster.
fn inline_slurm(p: &Project) -> String {
    p.write("inline-bin/sbatch", "#!/bin/sh\nfor last; do :; done\nSLURM_ARRAY_TASK_ID=0 sh \"$last\" >/dev/null 2>&1\necho 7\n");
    p.write("inline-bin/squeue", "#!/bin/sh\nexit 0\n");
    for f in ["sbatch", "squeue"] {
        Command::new("chmod").arg("+x").arg(p.path("inline-bin").join(f)).status().unwrap();
    }
    format!("{}:{}", p.path("inline-bin").display(), std::env::var("PATH").unwrap_or_default())
}

#[test]
fn job_scripts_quote_every_path_a_cache_with_spaces_and_quotes_works() {
    let p = Project::new();
    // COMMANDS with its variables quoted: the cache's path has spaces.
    p.write(
        "p.toml",
        &COMMANDS
            .replace("$WSPACE_OUT/", "\\\"$WSPACE_OUT\\\"/")
            .replace("$WSPACE_IN_A/", "\\\"$WSPACE_IN_A\\\"/")
            .replace("$WSPACE_IN_B/", "\\\"$WSPACE_IN_B\\\"/"),
    );
    let path = inline_slurm(&p);
    let rel = "a cache/it's \"here\" $(touch pwned)";
    let cache = p.path(rel);
    let cache = cache.to_str().unwrap();
    let args = ["run", "p.toml", "--format", "json", "--executor", "slurm", "--cache", cache];
    let out = p.cmd(&args).env("PATH", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let s = common::Summary(serde_json::from_slice(&out.stdout).unwrap());
    assert_eq!(s.statuses(0), common::expect(&[("a", "ran"), ("b", "ran"), ("c", "ran")]));
    assert!(!p.path("pwned").exists() && !p.path("a cache/pwned").exists(), "nothing in a path ran as a command");
    let key = s.stage(0, "a")["key"].as_str().unwrap().to_string();
    let script = std::fs::read_to_string(Path::new(cache).join("jobs").join(&key).join("job.sh")).unwrap();
    assert!(script.contains(r#"/a cache/it'\''s "here" $(touch pwned)/jobs/"#), "{script}");
    let local = p.run_json("p.toml", &["--cache", "local"], 0);
    assert_eq!(keys_and_hashes(&p, &local, "local"), keys_and_hashes(&p, &s, rel));
}
