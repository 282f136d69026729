//! Ctrl-C and SIGTERM during a local run: running stages stop within about a second, published entries
//! stay, partial builds go, the summary says `interrupted`, the exit code is 128 + the signal, nothing
//! the run started survives, `fsck` is clean, and an interrupted zoo resumes without retraining the
//! models it finished.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use common::Project;

/// `fast` → `slow` → `after`. `slow` starts a background child and a foreground one, records the pids
/// of its shell and both children in `pids`, then touches `started`.
const CHAIN: &str = r#"
[stages.fast]
kind = "command"
run = "echo 1 > $WSPACE_OUT/a"
[stages.slow]
kind = "command"
inputs = { up = "fast" }
run = "sleep 60 & bg=$!; sleep 61 & fg=$!; echo $$ $bg $fg > pids; touch started; wait $fg; echo done > $WSPACE_OUT/b"
[stages.after]
kind = "command"
inputs = { up = "slow" }
run = "cat $WSPACE_IN_UP/b > $WSPACE_OUT/c"
"#;

/// Starts `wspace run FILE ARGS` in a process group of its own, as a shell starts a foreground job.
fn start(p: &Project, file: &str, args: &[&str]) -> Child {
    let mut all = vec!["run", file];
    all.extend_from_slice(args);
    let mut cmd = p.cmd(&all);
    cmd.process_group(0).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.spawn().expect("start wspace")
}

fn wait_for(p: &Project, file: &str) {
    let t0 = Instant::now();
    while !p.path(file).exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "`{file}` never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(target: i32, sig: i32) {
    // SAFETY: kill(2) on a process (group) this test started.
    assert_eq!(unsafe { libc::kill(target, sig) }, 0, "kill({target}, {sig})");
}

/// Whether `pid` is still a live process (a zombie is not) a second after the run ended: a process
/// that got SIGKILL dies a moment after the signal is sent.
fn alive(pid: i32) -> bool {
    let state = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(')').next().and_then(|rest| rest.trim_start().chars().next())
    };
    let t0 = Instant::now();
    while matches!(state(), Some(c) if c != 'Z' && c != 'X') {
        if t0.elapsed() > Duration::from_secs(1) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn pids(p: &Project) -> Vec<i32> {
    p.read("pids").split_whitespace().map(|s| s.parse().unwrap()).collect()
}

/// The exit and how long it took after `since`.
fn finish(child: Child, since: Instant) -> (Output, Duration) {
    let out = child.wait_with_output().unwrap();
    (out, since.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The summary row of `stage`: its columns.
fn row(stdout: &str, stage: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(stage))
        .unwrap_or_else(|| panic!("no row for {stage}: {stdout}"));
    line.split_whitespace().map(str::to_string).collect()
}

fn assert_clean(p: &Project) {
    let fsck = p.wspace(&["fsck"]);
    assert_eq!(fsck.status.code(), Some(0), "fsck after the stop: {}", text(&fsck.stdout));
    let tmp = std::fs::read_dir(p.path("cache/tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(tmp, 0, "a partial build is left in cache/tmp");
}

/// Runs [`CHAIN`] and sends `sig` to `target(runner's pid)` once `slow` has started: the project, the
/// pids `slow` started, the run's output and how long it took to stop.
fn interrupt_chain(target: fn(u32) -> i32, sig: i32) -> (Project, Vec<i32>, Output, Duration) {
    let p = Project::new();
    p.write("p.toml", CHAIN);
    let child = start(&p, "p.toml", &[]);
    wait_for(&p, "started");
    let started = pids(&p);
    let t0 = Instant::now();
    signal(target(child.id()), sig);
    let (out, took) = finish(child, t0);
    (p, started, out, took)
}

#[test]
fn sigint_to_the_group_mid_stage_stops_the_run_and_keeps_what_was_published() {
    let (p, started, out, took) = interrupt_chain(|child| -(child as i32), libc::SIGINT);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{}", text(&out.stderr));
    // The command stops at once (SIGTERM to its group); 1 s is the design, 5 s the test's patience.
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");
    eprintln!("stopped {took:?} after SIGINT");
    assert_eq!(row(&stdout, "fast")[2], "ran");
    assert_eq!(row(&stdout, "slow")[2], "interrupted", "{stdout}");
    assert!(stdout.contains("stopped: the run was interrupted (SIGINT)"), "{stdout}");
    assert_eq!(row(&stdout, "after")[2], "skipped");
    assert!(stdout.contains("input `up` was interrupted (stage `slow`)"), "{stdout}");
    for pid in started {
        assert!(!alive(pid), "process {pid} the stage started is still alive");
    }
    assert_clean(&p);
    // The published stage is served from the cache; the cut one runs again.
    std::fs::remove_file(p.path("started")).unwrap();
    let again = start(&p, "p.toml", &["--format", "json"]);
    wait_for(&p, "started");
    signal(again.id() as i32, libc::SIGTERM);
    let (out, _) = finish(again, Instant::now());
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> =
        json["variants"][0]["stages"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["cached", "interrupted", "skipped"]);
}

#[test]
fn sigterm_to_the_runner_alone_kills_the_commands_process_group() {
    let (p, started, out, took) = interrupt_chain(|child| child as i32, libc::SIGTERM);
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stdout));
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");
    assert!(text(&out.stdout).contains("stopped: the run was interrupted (SIGTERM)"));
    for pid in started {
        assert!(!alive(pid), "process {pid} outlived the runner");
    }
    assert_clean(&p);
}

#[test]
fn a_second_interrupt_exits_at_once_and_kills_the_children() {
    // The stage ignores SIGTERM, so a first Ctrl-C takes the half-second grace before SIGKILL.
    let p = Project::new();
    p.write(
        "p.toml",
        "[stages.stubborn]\nkind = \"command\"\nrun = \"trap '' TERM; sleep 60 & echo $$ $! > pids; touch started; wait\"\n",
    );
    let child = start(&p, "p.toml", &[]);
    wait_for(&p, "started");
    let started = pids(&p);
    signal(child.id() as i32, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    signal(child.id() as i32, libc::SIGINT);
    let (out, took) = finish(child, t0);
    assert_eq!(out.status.code(), Some(130));
    assert!(!text(&out.stdout).contains("stubborn"), "no summary after a second Ctrl-C: {}", text(&out.stdout));
    eprintln!("exited {took:?} after the second SIGINT");
    std::thread::sleep(Duration::from_millis(100));
    for pid in started {
        assert!(!alive(pid), "process {pid} outlived the second Ctrl-C");
    }
}

/// 24 models, one at a time (`-j 1`), long enough to interrupt part-way.
const ZOO: &str = r#"
[pipeline]
name = "zoo-stop"
seed = 3
[stages.data]
kind = "dataset"
train_per_class = 40
test_per_class = 10
[stages.tasks]
kind = "tasks"
inputs = { data = "data" }
count = 24
test_per_class = 10
[stages.zoo]
kind = "zoo"
inputs = { data = "data", tasks = "tasks" }
batch_sizes = [16]
early_epoch = [1, 1]
final_epoch = [40.0, 0.0]
final_epoch_range = [40, 40]
"#;

/// `(model id, inode of its final checkpoint)` for each finished model in a zoo's scratch directory.
fn finished_models(dir: &std::path::Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(done) = std::fs::read_dir(dir.join("done")) else { return Vec::new() };
    let mut out: Vec<(String, u64)> = done
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".json").map(str::to_string))
        .filter(|id| id.starts_with('m'))
        .map(|id| {
            let ino = std::fs::metadata(dir.join(format!("models/{id}-final.safetensors"))).map(|m| m.ino()).unwrap_or(0);
            (id, ino)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn an_interrupted_zoo_resumes_and_trains_only_the_models_it_had_not_finished() {
    use std::os::unix::fs::MetadataExt;
    let p = Project::new();
    p.write("z.toml", ZOO);
    let child = start(&p, "z.toml", &["-j", "1"]);
    // Interrupt once a few models are done.
    let t0 = Instant::now();
    let scratch = loop {
        let dirs: Vec<_> = std::fs::read_dir(p.path("cache/scratch"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        if let Some(d) = dirs.into_iter().find(|d| finished_models(d).len() >= 3) {
            break d;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the zoo never finished 3 models");
        std::thread::sleep(Duration::from_millis(5));
    };
    signal(-(child.id() as i32), libc::SIGINT);
    let (out, _) = finish(child, Instant::now());
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert_eq!(row(&text(&out.stdout), "zoo")[2], "interrupted");
    let kept = finished_models(&scratch);
    assert!(kept.len() >= 3 && kept.len() < 24, "{} models finished before the stop", kept.len());
    eprintln!("{} of 24 models finished before the stop", kept.len());

    // fsck: clean, and it names the zoo's resumable work; gc keeps it.
    let fsck = p.wspace(&["fsck"]);
    let listing = text(&fsck.stdout);
    assert_eq!(fsck.status.code(), Some(0), "{listing}");
    assert!(listing.contains("resumable") && listing.contains("stage `zoo` (zoo, pipeline `zoo-stop`)"), "{listing}");
    let gc = p.wspace(&["gc"]);
    assert!(text(&gc.stdout).contains("keeping"), "{}", text(&gc.stdout));
    assert_eq!(finished_models(&scratch), kept, "gc kept the finished models");

    // The rerun trains the rest; the finished models' files are moved into the output, not rewritten.
    let s = p.run_json("z.toml", &["-j", "1"], 0);
    let key = s.stage(0, "zoo")["key"].as_str().unwrap().to_string();
    let models = p.path(&format!("cache/entries/{key}/out/models"));
    let mut reused = Vec::new();
    for entry in std::fs::read_dir(&models).unwrap().filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_suffix("-final.safetensors") else { continue };
        if let Some((_, ino)) = kept.iter().find(|(k, _)| k == id) {
            assert_eq!(entry.metadata().unwrap().ino(), *ino, "model {id} was trained again");
            reused.push(id.to_string());
        }
    }
    reused.sort();
    let want: Vec<String> = kept.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(reused, want, "every finished model is reused, and only those");
    assert!(!scratch.exists(), "the scratch directory is removed once the zoo is published");

    // And the resumed zoo is the same bytes as one trained in one go.
    let fresh = Project::new();
    fresh.write("z.toml", ZOO);
    let s2 = fresh.run_json("z.toml", &[], 0);
    let hash = |p: &Project, key: &str| -> String {
        let m: serde_json::Value = serde_json::from_str(&p.read(&format!("cache/entries/{key}/entry.json"))).unwrap();
        m["output_hash"].as_str().unwrap().to_string()
    };
    assert_eq!(hash(&p, &key), hash(&fresh, s2.stage(0, "zoo")["key"].as_str().unwrap()));
}

#[test]
fn signals_at_random_moments_never_leave_a_corrupt_or_partial_entry() {
    // tests/pipelines/kill.toml: a → (b, c) → d → e, each stage sleeping and writing several files.
    // `scripts/kill-test.sh N BIN INT|TERM` runs the same loop for longer.
    let p = Project::new();
    p.write("p.toml", include_str!("pipelines/kill.toml"));
    let mut state = 0x2545_f491_u32;
    for i in 0..8 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let delay = Duration::from_millis(u64::from(state % 1100));
        let sig = if i % 2 == 0 { libc::SIGINT } else { libc::SIGTERM };
        let n = i.to_string();
        let child = start(&p, "p.toml", &["--set", &format!("a.i={n}"), "-j", "2"]);
        std::thread::sleep(delay);
        let target = if sig == libc::SIGINT { -(child.id() as i32) } else { child.id() as i32 };
        // SAFETY: the process (group) may already be gone; that is a finished run.
        unsafe { libc::kill(target, sig) };
        let (out, _) = finish(child, Instant::now());
        let code = out.status.code();
        assert!(matches!(code, Some(0) | Some(130) | Some(143)), "run {i} ({delay:?}): exit {code:?}");
        assert_clean(&p);
        let s = p.run_json("p.toml", &["--set", &format!("a.i={n}")], 0);
        let e = s.stage(0, "e")["key"].as_str().unwrap().to_string();
        assert_eq!(p.read(&format!("cache/entries/{e}/out/e")), "4\n", "run {i}: the rerun's output");
    }
}
