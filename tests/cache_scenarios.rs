//! Run a pipeline of `command` stages twice (or more) in a temp dir; assert which stages ran, which
//! were cached, and why. Side effects outside the cache (`count/*.log`) count real executions.

mod common;

use common::{expect, make_writable, Project};

/// a → b → c, and d alone. Each stage appends a line to count/<name>.log when it really runs.
const CHAIN: &str = include_str!("pipelines/chain.toml");

fn chain() -> Project {
    let p = Project::new();
    p.write("p.toml", CHAIN);
    std::fs::create_dir_all(p.path("count")).unwrap();
    p
}

#[test]
fn second_run_is_all_cached() {
    let p = chain();
    let first = p.run_json("p.toml", &[], 0);
    assert_eq!(first.statuses(0), expect(&[("a", "ran"), ("b", "ran"), ("c", "ran"), ("d", "ran")]));
    assert_eq!(first.stage(0, "a")["reason"], "no earlier run recorded");
    let second = p.run_json("p.toml", &[], 0);
    assert_eq!(second.statuses(0), expect(&[("a", "cached"), ("b", "cached"), ("c", "cached"), ("d", "cached")]));
    assert_eq!(first.stage(0, "c")["key"], second.stage(0, "c")["key"]);
    assert_eq!(p.count_lines("count/c.log"), 1);
}

#[test]
fn param_change_reruns_the_stage_and_its_dependents_only() {
    let p = chain();
    p.run_json("p.toml", &[], 0);
    let s = p.run_json("p.toml", &["--set", "b.k=11"], 0);
    assert_eq!(s.statuses(0), expect(&[("a", "cached"), ("b", "ran"), ("c", "ran"), ("d", "cached")]));
    assert_eq!(s.stage(0, "b")["reason"], "`params.k` changed (10 → 11)");
    assert_eq!(s.stage(0, "c")["reason"], "input `up` changed (stage `b`)");
    // Editing the file has the same effect as --set.
    p.write("p.toml", &CHAIN.replace("params = { k = 10 }", "params = { k = 12 }"));
    let s = p.run_json("p.toml", &[], 0);
    assert_eq!(s.statuses(0), expect(&[("a", "cached"), ("b", "ran"), ("c", "ran"), ("d", "cached")]));
    assert_eq!(s.stage(0, "b")["reason"], "`params.k` changed (11 → 12)");
    assert_eq!((p.count_lines("count/a.log"), p.count_lines("count/b.log")), (1, 3));
}

#[test]
fn upstream_rerun_with_identical_bytes_leaves_downstream_cached() {
    let p = chain();
    p.run_json("p.toml", &[], 0);
    let s = p.run_json("p.toml", &["--set", "a.note=\"still the same output\""], 0);
    assert_eq!(s.statuses(0), expect(&[("a", "ran"), ("b", "cached"), ("c", "cached"), ("d", "cached")]));
    assert_eq!(p.count_lines("count/a.log"), 2);
    assert_eq!(p.count_lines("count/b.log"), 1);
}

#[test]
fn editing_a_deps_file_reruns() {
    let p = Project::new();
    p.write("script.sh", "echo one > \"$WSPACE_OUT/x\"\n");
    p.write("p.toml", "[stages.s]\nkind = \"command\"\nrun = \"sh script.sh\"\ndeps = [\"script.sh\"]\noutputs = [\"x\"]\n");
    assert_eq!(p.run_json("p.toml", &[], 0).statuses(0), expect(&[("s", "ran")]));
    assert_eq!(p.run_json("p.toml", &[], 0).statuses(0), expect(&[("s", "cached")]));
    p.write("script.sh", "echo two > \"$WSPACE_OUT/x\"\n");
    let s = p.run_json("p.toml", &[], 0);
    assert_eq!(s.statuses(0), expect(&[("s", "ran")]));
    assert_eq!(s.stage(0, "s")["reason"], "file `deps[0]` (script.sh) changed");
}

#[test]
fn a_three_value_sweep_computes_the_shared_upstream_once() {
    let p = chain();
    let text = format!("{CHAIN}\n[sweep]\n\"b.k\" = [1, 2, 3]\n");
    p.write("p.toml", &text);
    let s = p.run_json("p.toml", &[], 0);
    assert_eq!(s.variants().len(), 3);
    assert_eq!(s.variants()[1]["overrides"]["b.k"], 2);
    assert_eq!(s.statuses(0)["a"], "ran");
    assert_eq!(s.statuses(1)["a"], "cached");
    assert_eq!(s.statuses(2)["a"], "cached");
    assert_eq!((p.count_lines("count/a.log"), p.count_lines("count/b.log"), p.count_lines("count/d.log")), (1, 3, 1));
    // The sweep table: one row per variant, the override first.
    let table = p.read("sweeps/chain.csv");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("b.k"), "{table}");
    assert_eq!(s.0["sweep_table"], "sweeps/chain.csv");
}

#[test]
fn sweep_table_collects_published_metrics() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"[pipeline]
name = "m"
[stages.sq]
kind = "command"
run = "echo \"{\\\"square\\\": $(($WSPACE_PARAM_X * $WSPACE_PARAM_X)), \\\"nested\\\": {\\\"x\\\": $WSPACE_PARAM_X}}\" > $WSPACE_OUT/metrics.json"
params = { x = 0 }
[sweep]
sq.x = [2, 3]
"#,
    );
    let s = p.run_json("p.toml", &[], 0);
    assert_eq!(p.read("sweeps/m.csv"), "sq.x,sq.nested.x,sq.square\n2,2,4\n3,3,9\n");
    // Beside it, a page with one plot per metric against the swept parameter.
    assert_eq!(s.0["sweep_page"], "sweeps/m.html");
    let page = p.read("sweeps/m.html");
    assert_eq!(page.matches("<svg").count(), 2, "{page}");
    assert!(page.contains("sq.square vs sq.x") && page.contains("sq.nested.x vs sq.x"), "{page}");
}

#[test]
fn a_stage_that_names_a_document_is_named_at_the_end_of_the_run() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"[pipeline]
name = "doc"
[stages.page]
kind = "command"
run = "echo '<p>hi</p>' > $WSPACE_OUT/index.html; echo '{\"document\": \"index.html\", \"headline\": {\"score\": 0.25}}' > $WSPACE_OUT/metrics.json"
"#,
    );
    let s = p.run_json("p.toml", &[], 0);
    let doc = s.stage(0, "page")["document"].as_str().expect("document in the JSON summary").to_string();
    assert!(doc.ends_with("out/index.html") && std::path::Path::new(&doc).is_file(), "{doc}");
    assert_eq!(s.stage(0, "page")["headline"]["score"], 0.25);
    let out = p.wspace(&["run", "p.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.ends_with(&format!("page: {doc}\n  score  0.2500\n")), "{stdout}");
}

#[test]
fn a_failing_stage_skips_its_dependents_and_the_rest_still_runs() {
    let p = chain();
    p.write("p.toml", &CHAIN.replace("echo b >> count/b.log;", "echo b >> count/b.log; echo boom >&2; exit 3;"));
    let s = p.run_json("p.toml", &[], 1);
    assert_eq!(s.statuses(0), expect(&[("a", "ran"), ("b", "failed"), ("c", "skipped"), ("d", "ran")]));
    assert!(s.stage(0, "b")["reason"].as_str().unwrap().contains("exited with exit status: 3"), "{:?}", s.stage(0, "b"));
    assert_eq!(s.stage(0, "c")["reason"], "input `up` failed (stage `b`)");
    // Nothing of the failed stage was published; the good work is kept.
    let again = p.run_json("p.toml", &[], 1);
    assert_eq!(again.statuses(0)["a"], "cached");
    assert_eq!(again.statuses(0)["b"], "failed");
}

#[test]
fn missing_declared_output_fails_the_stage() {
    let p = Project::new();
    p.write("p.toml", "[stages.s]\nkind = \"command\"\nrun = \"true\"\noutputs = [\"model.bin\"]\n");
    let s = p.run_json("p.toml", &[], 1);
    assert_eq!(s.stage(0, "s")["reason"], "command `true` succeeded but did not write `model.bin` into $WSPACE_OUT");
}

#[test]
fn stage_arguments_run_only_those_and_their_ancestors() {
    let p = chain();
    let s = p.run_json("p.toml", &["b"], 0);
    assert_eq!(s.statuses(0), expect(&[("a", "ran"), ("b", "ran")]));
    assert_eq!(p.count_lines("count/c.log"), 0);
}

#[test]
fn a_flipped_byte_in_a_stored_output_is_detected_and_recomputed() {
    let p = chain();
    let first = p.run_json("p.toml", &[], 0);
    let a_key = first.stage(0, "a")["key"].as_str().unwrap().to_string();
    let entry = p.path(&format!("cache/entries/{a_key}"));
    make_writable(&entry);
    let file = entry.join("out/a.txt");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    // b must read a: a is verified, found corrupt, recomputed; b's key is unchanged by the repair.
    let s = p.run_json("p.toml", &["--set", "b.k=99"], 0);
    assert_eq!(s.statuses(0), expect(&[("a", "ran"), ("b", "ran"), ("c", "ran"), ("d", "cached")]));
    let why = s.stage(0, "a")["reason"].as_str().unwrap();
    assert_eq!(why, "cached output was corrupt (out/a.txt does not match its recorded hash); recomputed");
    assert_eq!(s.stage(0, "a")["key"].as_str().unwrap(), a_key);
    assert_eq!(p.count_lines("count/a.log"), 2);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "1\n");
    let v = p.wspace(&["verify", "p.toml", "a"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn verify_detects_a_nondeterministic_stage() {
    let p = Project::new();
    p.write("p.toml", "[stages.r]\nkind = \"command\"\nrun = \"date +%s%N > $WSPACE_OUT/t; echo x > $WSPACE_OUT/u\"\n");
    p.run_json("p.toml", &[], 0);
    let v = p.wspace(&["verify", "p.toml", "r", "--rtol", "0", "--atol", "0"]);
    assert_eq!(v.status.code(), Some(1));
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(text.contains("  t: different (1 of 1 numbers differ; max |Δ|") && text.contains("NOT reproducible"), "{text}");
    assert!(!text.contains("  u:"), "an identical file is not listed: {text}");
}

/// A stage that writes `first` on its first run and `again` on every later one (`w.csv`, one value).
fn drifting(first: &str, again: &str) -> String {
    format!(
        "[stages.r]\nkind = \"command\"\nrun = \"echo x >> runs.log; if [ $(wc -l < runs.log) = 1 ]; then v={first}; \
         else v={again}; fi; printf 'loss\\\\n%s\\\\n' $v > $WSPACE_OUT/w.csv\"\n"
    )
}

#[test]
fn verify_reports_how_far_apart_the_numbers_are() {
    // Within the default tolerance (|Δ| ≤ 3e-5 + 1e-4·|x|): numerically equal, exit 3.
    let p = Project::new();
    p.write("p.toml", &drifting("0.5", "0.50000001"));
    p.run_json("p.toml", &[], 0);
    let v = p.wspace(&["verify", "p.toml", "r"]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(3), "{text}");
    assert!(
        text.contains("  w.csv: numerically equal within rtol 1e-4, atol 3e-5 (1 of 1 numbers differ; max |Δ| 1.000e-8 (at line 2), max relative 2.000e-8)"),
        "{text}"
    );
    assert!(text.contains("numerically equal within rtol 1e-4, atol 3e-5: stage `r` recomputed to different bytes"), "{text}");
    // The same difference with no tolerance is a difference, and says where and what.
    let v = p.wspace(&["verify", "p.toml", "r", "--rtol", "0", "--atol", "0"]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{text}");
    assert!(text.contains("outside the tolerance first at line 2: 0.5 vs 0.50000001)"), "{text}");

    let p = Project::new();
    p.write("p.toml", &drifting("0.5", "0.7"));
    p.run_json("p.toml", &[], 0);
    let v = p.wspace(&["verify", "p.toml", "r"]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(1), "{text}");
    assert!(text.contains("  w.csv: different (1 of 1 numbers differ; max |Δ| 2.000e-1"), "{text}");
}

#[test]
fn killed_mid_stage_then_rerun_completes_with_no_leftovers() {
    use std::os::unix::process::CommandExt;
    let p = Project::new();
    p.write(
        "p.toml",
        "[stages.slow]\nkind = \"command\"\nrun = \"touch started; echo partial > $WSPACE_OUT/half; sleep $WSPACE_PARAM_S; echo done > $WSPACE_OUT/x\"\nparams = { s = 1 }\n",
    );
    let mut child = p.cmd(&["run", "p.toml"]).process_group(0).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !p.path("started").exists() {
        assert!(t0.elapsed().as_secs() < 30, "the stage never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // kill -9 the whole process group: wspace and the stage's shell.
    unsafe_kill_group(child.id());
    let _ = child.wait();
    let published = std::fs::read_dir(p.path("cache/entries")).map(|d| d.count()).unwrap_or(0);
    let listing = std::process::Command::new("find").arg(p.path("cache")).output().unwrap();
    assert_eq!(published, 0, "a killed stage publishes nothing: {}", String::from_utf8_lossy(&listing.stdout));
    let s = p.run_json("p.toml", &[], 0);
    assert_eq!(s.statuses(0), expect(&[("slow", "ran")]));
    let tmp: Vec<_> = std::fs::read_dir(p.path("cache/tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "leftovers in cache/tmp: {tmp:?}");
    assert!(!p.path("cache/scratch").read_dir().unwrap().any(|_| true), "scratch is removed after publish");
    let key = s.stage(0, "slow")["key"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(p.path(&format!("cache/entries/{key}/out/x"))).unwrap(), "done\n");
}

fn unsafe_kill_group(pid: u32) {
    let status = std::process::Command::new("sh").args(["-c", &format!("kill -9 -{pid}")]).status().unwrap();
    assert!(status.success());
}

#[test]
fn dry_run_and_status_execute_nothing() {
    let p = chain();
    p.run_json("p.toml", &[], 0);
    let s = p.run_json("p.toml", &["--dry-run", "--set", "a.n=5"], 0);
    assert_eq!(s.statuses(0), expect(&[("a", "would-run"), ("b", "pending"), ("c", "pending"), ("d", "cached")]));
    assert_eq!(s.stage(0, "a")["reason"], "`params.n` changed (1 → 5)");
    let out = p.wspace(&["status", "p.toml", "--set", "a.n=5"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would-run") && text.contains("`params.n` changed (1 → 5)"), "{text}");
    assert_eq!(p.count_lines("count/a.log"), 1);
}

#[test]
fn explain_names_what_changed() {
    let p = chain();
    p.run_json("p.toml", &[], 0);
    let out = p.wspace(&["explain", "p.toml", "a", "--set", "a.n=16"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("changed since the last recorded run: `params.n` changed (1 → 16)"), "{text}");
    p.run_json("p.toml", &["--set", "a.n=16"], 0);
    // Back to n = 1: `b` is cached from the first run, and differs from the last run (n = 16) by its input.
    let out = p.wspace(&["explain", "p.toml", "b"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: cached"), "{text}");
    assert!(text.contains("changed since the last recorded run: input `up` changed (stage `a`)"), "{text}");
}

#[test]
fn show_ls_and_gc() {
    let p = chain();
    let first = p.run_json("p.toml", &[], 0);
    let out = p.wspace(&["show", "p.toml", "b", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["key"], first.stage(0, "b")["key"]);
    assert!(v["files"][0]["path"].as_str().unwrap().ends_with("out/b.txt"));
    p.run_json("p.toml", &["--set", "b.k=2"], 0);
    let ls = String::from_utf8_lossy(&p.wspace(&["ls"]).stdout).to_string();
    assert!(ls.contains("6 entries"), "{ls}");
    let gc = p.wspace(&["gc", "--keep-last", "1"]);
    assert!(gc.status.success());
    let ls = String::from_utf8_lossy(&p.wspace(&["ls"]).stdout).to_string();
    assert!(ls.contains("4 entries"), "gc keeps what the last run used: {ls}");
    assert_eq!(p.run_json("p.toml", &["--set", "b.k=2"], 0).statuses(0)["c"], "cached");
}
