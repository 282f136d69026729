//! The Slurm executor: one stage that must run → one `sbatch` array job, watched until it ends.
//!
//! # Brief overview
//! [`run`] writes into the key's job directory (`cache/jobs/<key>/`, see [`crate::cache`]):
//! - `spec.json`, the [`StageSpec`];
//! - `job.sh`, which runs `wspace exec-stage spec.json --shard $SLURM_ARRAY_TASK_ID` and, when that
//!   succeeds, creates the marker `<scratch>/.wspace-done/<task>` in the key's scratch directory;
//! - `logs/<job>_<task>.log`, each task's output (kept).
//!
//! and submits the tasks that have no marker yet (a stage of one shard is always submitted whole: its
//! output directory is new for each attempt). Every value `job.sh` interpolates is one single-quoted
//! shell word. It then polls `squeue`, first every 0.2 s, backing off to every 5 s while nothing
//! changes (a long job costs the controller little), shows how many tasks are pending, running, done
//! and failed in the stage's progress line, and when no task is left in the queue, checks the
//! markers. A missing marker is looked for again for a few seconds (NFS caches directory
//! attributes: a marker a node just wrote may not be visible yet); a task still without one failed,
//! or was cancelled or killed; its log's last lines are part of the error. The shards that did succeed keep their markers, so the next run
//! submits only the others. The markers live and die with the work they vouch for: the scratch
//! directory is removed when the stage is published (or by `wspace gc`).
//!
//! On Ctrl-C ([`crate::interrupt`]) the job is cancelled with `scancel`: only jobs this run submitted.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use wspace_stage_api::Progress;

use crate::digest::{path_err, PathError};
use crate::error::Error;
use crate::pipeline::JobSettings;
use crate::progress::Ui;
use crate::spec::StageSpec;

/// The first interval between two `squeue` polls, and the longest.
const POLL: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(5);
/// How long a missing done marker is looked for again before its task is declared failed.
const MARKER_GRACE: [Duration; 4] =
    [Duration::from_millis(250), Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)];

/// Runs `spec` as a Slurm array job of `spec.shards` tasks (those not finished by an earlier attempt).
pub fn run(spec: &StageSpec, dir: &Path, settings: &JobSettings, ui: &Ui, progress: &dyn Progress) -> Result<(), Error> {
    let dir = std::path::absolute(dir).map_err(path_err(dir))?;
    let (logs, done) = (dir.join("logs"), spec.scratch.join(".wspace-done"));
    for d in [&logs, &done] {
        std::fs::create_dir_all(d).map_err(path_err(d))?;
    }
    let spec_path = dir.join("spec.json");
    write(&spec_path, &serde_json::to_string_pretty(spec).map_err(Error::WriteSpec)?)?;
    let exe = std::env::current_exe().map_err(Error::CurrentExe)?;
    let script = dir.join("job.sh");
    write(&script, &job_script(spec, &exe, &spec_path, &done))?;

    let n = spec.shards;
    if n == 1 {
        let _ = std::fs::remove_file(done.join("0"));
    }
    let todo: Vec<usize> = (0..n).filter(|i| !done.join(i.to_string()).exists()).collect();
    if todo.len() < n {
        ui.line(&format!("  {}: {} of {n} shards finished in an earlier run", spec.stage, n - todo.len()));
    }
    if todo.is_empty() {
        return Ok(());
    }
    let array = todo.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let mut args: Vec<String> = vec![
        "--parsable".into(),
        format!("--job-name=wspace-{}-{}", spec.pipeline, spec.stage),
        format!("--output={}", logs.join("%A_%a.log").display()),
        format!("--chdir={}", spec.workdir.display()),
        format!("--array={array}"),
        format!("--cpus-per-task={}", spec.threads),
    ];
    let optional = [
        ("--partition", &settings.partition),
        ("--time", &settings.time),
        ("--mem", &settings.memory),
        ("--gres", &settings.gres),
    ];
    args.extend(optional.iter().filter_map(|(flag, v)| v.as_ref().map(|v| format!("{flag}={v}"))));
    args.extend(settings.sbatch_args.iter().cloned());
    args.push(script.display().to_string());
    let out = command("sbatch", &args)?;
    let job = out.trim().split(';').next().unwrap_or("").to_string();
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::NoJobId { command: format!("sbatch {}", args.join(" ")), output: out });
    }
    ui.line(&format!("  {}: Slurm job {job}, {} task(s) [{array}] of {n}", spec.stage, todo.len()));
    progress.start(todo.len() as u64, "tasks");

    let interrupted = watch(&job, &todo, &done, progress, ui, &spec.stage)?;
    let mut failed: Vec<usize> = todo.iter().copied().filter(|&i| !marked(&done, i)).collect();
    for pause in MARKER_GRACE {
        if failed.is_empty() || interrupted {
            break;
        }
        std::thread::sleep(pause);
        failed.retain(|&i| !marked(&done, i));
    }
    if failed.is_empty() {
        return Ok(());
    }
    if interrupted {
        return Err(Error::Cancelled(job));
    }
    let mut tails = String::new();
    for i in failed.iter().take(3) {
        let log = logs.join(format!("{job}_{i}.log"));
        tails.push_str(&format!("\n── task {i}, log {} ──\n{}", log.display(), tail(&log, 15)));
    }
    Err(Error::TasksFailed { job, failed, submitted: todo.len(), logs: tails })
}

/// `job.sh`: runs the task's shard and, when it succeeds, writes its done marker. Every interpolated
/// value is one single-quoted shell word; the comment line holds no newline.
fn job_script(spec: &StageSpec, exe: &Path, spec_path: &Path, done: &Path) -> String {
    let about = format!("stage {:?} of pipeline {:?}, key {}", spec.stage, spec.pipeline, spec.key).replace(['\n', '\r'], " ");
    format!(
        "#!/bin/sh\n# wspace: {about}\nset -e\n{} exec-stage {} --shard \"$SLURM_ARRAY_TASK_ID\"\ntouch {}/\"$SLURM_ARRAY_TASK_ID\"\n",
        quote(exe),
        quote(spec_path),
        quote(done)
    )
}

/// Whether task `i`'s done marker exists. Opening the directory and the file (not only `stat`)
/// makes an NFS client revalidate what it cached.
fn marked(done: &Path, i: usize) -> bool {
    let _ = std::fs::read_dir(done).map(|d| d.count());
    std::fs::File::open(done.join(i.to_string())).is_ok()
}

/// Polls the queue until none of the job's tasks is in it; whether it was cancelled by an interrupt.
fn watch(job: &str, todo: &[usize], done: &Path, progress: &dyn Progress, ui: &Ui, stage: &str) -> Result<bool, Error> {
    let mut shown = None;
    let mut failures = 0;
    let mut pause = POLL;
    loop {
        if crate::interrupt::requested() {
            // scancel's own failure (the job just ended) changes nothing: the markers tell the next
            // run. Slurm takes its time to drain cancelled tasks; the run must stop within the
            // runner's grace, so it does not wait for the queue to empty.
            let _ = command("scancel", &[job.to_string()]);
            return Ok(true);
        }
        let queued = match queue(job) {
            Ok(q) => {
                failures = 0;
                q
            }
            Err(e) => {
                failures += 1;
                if failures > 20 {
                    return Err(Error::Follow { job: job.to_string(), source: Box::new(e) });
                }
                pause = (pause * 2).min(POLL_MAX);
                std::thread::sleep(pause);
                continue;
            }
        };
        let state = |i: &usize| match queued.get(i).map(String::as_str) {
            Some("PD") => 0,
            Some(_) => 1,
            None if marked(done, *i) => 2,
            None => 3,
        };
        let mut counts = [0usize; 4];
        todo.iter().for_each(|i| counts[state(i)] += 1);
        if shown != Some(counts) {
            let [pending, running, ok, failed] = counts;
            let line = format!("Slurm job {job}: {pending} pending · {running} running · {ok} done · {failed} failed");
            progress.message(&line);
            progress.inc((ok + failed - shown.map_or(0, |c| c[2] + c[3])) as u64);
            if shown.is_some() {
                ui.line(&format!("  {stage}: {line}"));
            }
            shown = Some(counts);
            pause = POLL;
        } else {
            pause = (pause * 3 / 2).min(POLL_MAX);
        }
        if counts[0] + counts[1] == 0 {
            return Ok(false);
        }
        std::thread::sleep(pause);
    }
}

/// The job's tasks still in the queue, with their compact state (`PD`, `R`, `CG`, …).
fn queue(job: &str) -> Result<BTreeMap<usize, String>, Error> {
    let out = Command::new("squeue")
        .args(["-h", "-r", "-j", job, "-o", "%K %t"])
        .output()
        .map_err(|source| Error::Spawn { program: "squeue", source })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // A job that left the queue long ago is unknown to squeue: nothing of it is queued.
        if stderr.contains("Invalid job id") {
            return Ok(BTreeMap::new());
        }
        return Err(Error::Queue { job: job.to_string(), stderr: stderr.trim().to_string() });
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (task, state) = l.trim().split_once(' ')?;
            Some((task.parse().ok()?, state.to_string()))
        })
        .collect())
}

/// Runs a Slurm command; its stdout, or an error naming the command and its message.
fn command(program: &'static str, args: &[String]) -> Result<String, Error> {
    let out = Command::new(program).args(args).output().map_err(|source| Error::Spawn { program, source })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write(path: &Path, text: &str) -> Result<(), PathError> {
    std::fs::write(path, text).map_err(path_err(path))
}

/// A path as one single-quoted shell word.
fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The last `n` lines of a file (or why there are none).
fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(no log: {e})"),
    }
}
