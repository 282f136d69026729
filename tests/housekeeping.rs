//! `gc` keeps what pipelines still need, `fsck` finds what is wrong, corrupt or unreadable entries are
//! recomputed, and concurrent runs share the work. Tiny `command` pipelines in a temp dir; side
//! effects outside the cache (`count/*.log`) count real executions.

mod common;

use common::{expect, make_writable, Project};

/// a → b → c.
const CHAIN: &str = include_str!("pipelines/chain-housekeeping.toml");

/// Another pipeline, sharing nothing with the chain.
const OTHER: &str = include_str!("pipelines/other.toml");

fn project() -> Project {
    let p = Project::new();
    p.write("chain.toml", CHAIN);
    p.write("other.toml", OTHER);
    std::fs::create_dir_all(p.path("count")).unwrap();
    p
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gc(p: &Project, args: &[&str]) -> String {
    let mut all = vec!["gc"];
    all.extend_from_slice(args);
    let out = p.wspace(&all);
    assert!(out.status.success(), "gc: {}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    stdout(&out)
}

fn entries(p: &Project) -> usize {
    std::fs::read_dir(p.path("cache/entries")).map(|d| d.count()).unwrap_or(0)
}

fn all_cached(p: &Project, file: &str, args: &[&str]) {
    let s = p.run_json(file, args, 0);
    for v in 0..s.variants().len() {
        assert!(s.statuses(v).values().all(|st| st == "cached"), "variant {v}: {:?}", s.statuses(v));
    }
}

#[test]
fn gc_after_another_pipeline_keeps_the_first_pipelines_results() {
    let p = project();
    p.run_json("chain.toml", &[], 0);
    p.run_json("other.toml", &[], 0);
    let out = gc(&p, &[]);
    assert!(out.starts_with("removing 0 entries (0 B) and 0 leftovers of dead runs:"), "{out}");
    assert_eq!(entries(&p), 4);
    all_cached(&p, "chain.toml", &[]);
    all_cached(&p, "other.toml", &[]);
    assert_eq!(p.count_lines("count/a.log"), 1);
}

#[test]
fn gc_after_running_one_stage_keeps_the_whole_dag() {
    let p = project();
    p.run_json("chain.toml", &[], 0);
    p.run_json("chain.toml", &["a"], 0);
    gc(&p, &[]);
    all_cached(&p, "chain.toml", &[]);
}

#[test]
fn gc_after_a_sweep_keeps_every_variant() {
    let p = project();
    p.write("chain.toml", &format!("{CHAIN}\n[sweep]\n\"b.k\" = [1, 2, 3]\n"));
    p.run_json("chain.toml", &[], 0);
    gc(&p, &[]);
    assert_eq!(entries(&p), 7);
    all_cached(&p, "chain.toml", &[]);
}

#[test]
fn keep_last_counts_runs_per_pipeline_and_says_what_it_removes() {
    let p = project();
    p.run_json("chain.toml", &["--set", "b.k=2"], 0);
    p.run_json("chain.toml", &[], 0);
    p.run_json("other.toml", &[], 0);
    p.run_json("other.toml", &[], 0);
    assert!(gc(&p, &["--keep-last", "2"]).starts_with("removing 0 entries"));
    assert_eq!(entries(&p), 6);
    // Only the latest run of each file: b and c of `b.k = 2` go, and nothing of `other`.
    let dry = gc(&p, &["--dry-run"]);
    assert!(dry.starts_with("would remove 2 entries (6 B) and 0 leftovers of dead runs:"), "{dry}");
    assert!(dry.contains("(chain/b, command, 4 B)") && dry.contains("(chain/c, command, 2 B)"), "{dry}");
    assert_eq!(entries(&p), 6, "a dry run removes nothing");
    let out = gc(&p, &[]);
    assert!(out.starts_with("removing 2 entries (6 B)") && out.ends_with("removed 2 entries, freed 6 B\n"), "{out}");
    all_cached(&p, "chain.toml", &[]);
    all_cached(&p, "other.toml", &[]);
}

#[test]
fn gc_given_pipeline_files_keeps_exactly_what_they_resolve_to() {
    let p = project();
    p.run_json("chain.toml", &["--set", "a.n=5"], 0);
    p.run_json("chain.toml", &[], 0);
    p.run_json("other.toml", &[], 0);
    let out = gc(&p, &["chain.toml"]);
    assert!(out.starts_with("removing 4 entries"), "{out}");
    assert_eq!(entries(&p), 3);
    all_cached(&p, "chain.toml", &[]);
    assert_eq!(p.run_json("other.toml", &[], 0).statuses(0)["x"], "ran");
}

#[test]
fn gc_keeps_what_a_killed_run_made() {
    use std::os::unix::process::CommandExt;
    let p = project();
    p.write("slow.toml", "[stages.fast]\nkind = \"command\"\nrun = \"echo f > $WSPACE_OUT/f\"\n\n[stages.slow]\nkind = \"command\"\ninputs = { f = \"fast\" }\nrun = \"touch started; sleep 30\"\n");
    p.run_json("other.toml", &[], 0);
    let mut child = p.cmd(&["run", "slow.toml"]).process_group(0).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !p.path("started").exists() {
        assert!(t0.elapsed().as_secs() < 30, "the slow stage never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = std::process::Command::new("sh").args(["-c", &format!("kill -9 -{}", child.id())]).status().unwrap();
    assert!(status.success());
    let _ = child.wait();
    let out = gc(&p, &[]);
    assert!(out.contains("leftovers of dead runs") && out.contains("keeping "), "{out}");
    assert!(out.contains("(slow/fast, command, 2 B): made by a run that did not finish"), "{out}");
    assert_eq!(entries(&p), 2);
    let fsck = p.wspace(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "gc left nothing for fsck: {}", stdout(&fsck));
}

fn entry_dir(p: &Project, summary: &common::Summary, stage: &str) -> std::path::PathBuf {
    p.path(&format!("cache/entries/{}", summary.stage(0, stage)["key"].as_str().unwrap()))
}

fn flip_first_byte(file: &std::path::Path) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_corrupt_terminal_stage_is_recomputed_not_served() {
    let p = project();
    let first = p.run_json("chain.toml", &[], 0);
    let c = entry_dir(&p, &first, "c");
    make_writable(&c);
    flip_first_byte(&c.join("out/c.txt"));
    let show = p.wspace(&["show", "chain.toml", "c"]);
    assert_eq!(show.status.code(), Some(1));
    let err = String::from_utf8_lossy(&show.stderr);
    assert!(err.contains("the cached result of stage `c` is corrupt (out/c.txt does not match its recorded hash)"), "{err}");
    let s = p.run_json("chain.toml", &[], 0);
    assert_eq!(s.statuses(0), expect(&[("a", "cached"), ("b", "cached"), ("c", "ran")]));
    assert_eq!(s.stage(0, "c")["reason"], "cached output was corrupt (out/c.txt does not match its recorded hash); recomputed");
    assert_eq!(p.count_lines("count/c.log"), 2);
    assert_eq!(std::fs::read_to_string(c.join("out/c.txt")).unwrap(), "2\n");
}

#[test]
fn fsck_finds_corrupt_unreadable_and_partial_entries_and_repairs_them() {
    let p = project();
    let first = p.run_json("chain.toml", &[], 0);
    let clean = p.wspace(&["fsck"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));
    assert!(stdout(&clean).contains("3 entries hashed, all match"), "{}", stdout(&clean));

    let (a, b) = (entry_dir(&p, &first, "a"), entry_dir(&p, &first, "b"));
    make_writable(&a);
    make_writable(&b);
    // Same size, same mtime: only hashing finds it.
    let mtime = std::fs::metadata(a.join("out/a.txt")).unwrap().modified().unwrap();
    flip_first_byte(&a.join("out/a.txt"));
    std::fs::File::options().write(true).open(a.join("out/a.txt")).unwrap().set_modified(mtime).unwrap();
    std::fs::write(b.join("entry.json"), "{\"key\": 1").unwrap();
    std::fs::create_dir_all(p.path("cache/tmp/deadbeef.1.0/out")).unwrap();

    let ls = p.wspace(&["ls"]);
    assert!(String::from_utf8_lossy(&ls.stderr).contains("warning: unreadable entry"), "ls reports it");
    let out = p.wspace(&["fsck"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("corrupt") && text.contains("chain/a (command): out/a.txt does not match its recorded hash"), "{text}");
    assert!(text.contains("unreadable manifest"), "{text}");
    assert!(text.contains("partial") && text.contains("deadbeef.1.0"), "{text}");
    assert!(text.contains("fsck: 3 problem(s)"), "{text}");

    let repair = p.wspace(&["fsck", "--repair"]);
    assert_eq!(repair.status.code(), Some(0), "{}", stdout(&repair));
    assert_eq!(p.wspace(&["fsck"]).status.code(), Some(0));
    let s = p.run_json("chain.toml", &[], 0);
    assert_eq!(s.statuses(0), expect(&[("a", "ran"), ("b", "ran"), ("c", "cached")]));
}

#[test]
fn an_unreadable_manifest_is_recomputed_by_the_next_run() {
    let p = project();
    let first = p.run_json("chain.toml", &[], 0);
    let b = entry_dir(&p, &first, "b");
    make_writable(&b);
    std::fs::write(b.join("entry.json"), "not json").unwrap();
    let s = p.run_json("chain.toml", &[], 0);
    assert_eq!(s.statuses(0), expect(&[("a", "cached"), ("b", "ran"), ("c", "cached")]));
    assert!(s.stage(0, "b")["reason"].as_str().unwrap().starts_with("cached entry was unreadable ("), "{:?}", s.stage(0, "b"));
    all_cached(&p, "chain.toml", &[]);
}

#[test]
fn four_concurrent_runs_compute_each_stage_once() {
    let p = Project::new();
    p.write("p.toml", include_str!("pipelines/diamond-concurrent.toml"));
    let children: Vec<_> = (0..4)
        .map(|_| p.cmd(&["run", "p.toml", "--format", "json"]).stdout(std::process::Stdio::piped()).spawn().unwrap())
        .collect();
    let mut ran = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stdout(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for st in v["variants"][0]["stages"].as_array().unwrap() {
            assert!(st["status"] == "ran" || st["status"] == "cached", "{st}");
            ran += (st["status"] == "ran") as usize;
        }
    }
    let counts: Vec<usize> = ["a.log", "b.log", "c.log", "d.log"].iter().map(|f| p.count_lines(f)).collect();
    assert_eq!(counts, [1, 1, 1, 1], "each stage ran once in all");
    assert_eq!(ran, 4);
    assert_eq!(p.wspace(&["fsck"]).status.code(), Some(0));
}
