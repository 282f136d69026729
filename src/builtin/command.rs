//! `kind = "command"`: a researcher's own script as a stage.
//!
//! ```toml
//! [stages.features]
//! kind = "command"
//! run = "python3 features.py"          # run by `sh -c` in the pipeline file's directory
//! inputs = { raw = "download" }        # any slot names
//! outputs = ["features.csv"]           # must exist in $WSPACE_OUT afterwards, else the stage fails
//! deps = ["features.py"]               # their content hashes join the key
//! [stages.features.params]             # free-form; `--set features.k=3` and sweeps address keys here
//! k = 5
//! ```
//!
//! The command sees `WSPACE_OUT` (an empty private directory: everything written there is the
//! output), `WSPACE_IN_<SLOT>` (the read-only output directory of each input, slot upper-cased),
//! `WSPACE_PARAMS` (the `params` table as JSON) and `WSPACE_PARAM_<NAME>` for each scalar param.
//! Its stdout and stderr go to a log; the last lines are shown when it fails.
//!
//! The shell runs in a process group of its own. When the run is interrupted, that whole group gets
//! SIGTERM, then SIGKILL half a second later: nothing the command started outlives the stage.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Command as Process, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use wspace_stage_api::{params, Inputs, Param, ParamSpec, StageContext, StageError, StageKind, Value};

pub struct Command;

params! {
    RUN = "run": Str, "the shell command (run by `sh -c` in the pipeline's directory)";
    OUTPUTS = "outputs": [Str] = [], "files that must exist in $WSPACE_OUT afterwards";
    DEPS = "deps": [Path] = [], "files whose content joins the key (e.g. the script)";
    PARAMS = "params": Table, "free-form values passed as WSPACE_PARAMS / WSPACE_PARAM_<NAME>";
}

const LOG_TAIL: usize = 20;

impl StageKind for Command {
    fn name(&self) -> &'static str {
        "command"
    }
    fn version(&self) -> u32 {
        1
    }
    fn summary(&self) -> &'static str {
        "runs a shell command that writes its output into $WSPACE_OUT"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Param::specs(&[RUN, OUTPUTS, DEPS, PARAMS])
    }
    fn inputs(&self) -> Inputs {
        Inputs::Any
    }
    fn open_table(&self) -> Option<&'static str> {
        Some("params")
    }

    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        let script = ctx.view().str(&RUN)?;
        let log_path = ctx.scratch.join("command.log");
        let log = File::create(&log_path).map_err(|e| StageError::io(&log_path, e))?;
        let log2 = log.try_clone().map_err(|e| StageError::io(&log_path, e))?;
        let mut cmd = Process::new("sh");
        cmd.arg("-c").arg(script).current_dir(ctx.workdir).stdin(Stdio::null()).stdout(log).stderr(log2);
        cmd.env("WSPACE_OUT", ctx.out);
        for (slot, dir) in ctx.inputs {
            cmd.env(format!("WSPACE_IN_{}", slot.to_uppercase()), dir);
        }
        let empty = Default::default();
        let params = ctx.view().value(&PARAMS)?.as_table().unwrap_or(&empty);
        cmd.env("WSPACE_PARAMS", serde_json::to_string(&Value::Table(params.clone())).unwrap_or_default());
        for (name, v) in params {
            if let Some(text) = v.scalar_text() {
                cmd.env(format!("WSPACE_PARAM_{}", name.to_uppercase()), text);
            }
        }
        ctx.progress.message(script);
        let status = run_until_stopped(&mut cmd).map_err(|e| match e {
            StageError::Io { source, .. } => StageError::msg(format!("cannot run `sh -c {script:?}`: {source}")),
            e => e,
        })?;
        if !status.success() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
            return Err(StageError::msg(format!(
                "command `{script}` exited with {status}{}",
                if tail.is_empty() { String::new() } else { format!("; its last output:\n{tail}") }
            )));
        }
        let missing: Vec<&str> = ctx
            .view()
            .value(&OUTPUTS)?
            .as_list()
            .unwrap_or(&[])
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !ctx.out.join(f).exists())
            .collect();
        if !missing.is_empty() {
            return Err(StageError::msg(format!(
                "command `{script}` succeeded but did not write {} into $WSPACE_OUT",
                missing.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }
}

/// Runs `cmd` in a new process group and waits for it, polling for a stop request; on one, kills the
/// group (SIGTERM, then SIGKILL after [`GRACE`]) and returns [`StageError::Stopped`].
fn run_until_stopped(cmd: &mut Process) -> Result<ExitStatus, StageError> {
    let io = |e| StageError::io("sh", e);
    let mut child = cmd.process_group(0).spawn().map_err(io)?;
    let _registered = crate::interrupt::ChildGuard::new(child.id());
    loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            return Ok(status);
        }
        if wspace_stage_api::stop_requested() {
            let group = -(child.id() as i32);
            // SAFETY: plain kill(2) calls on the child's own process group.
            unsafe { libc::kill(group, libc::SIGTERM) };
            let asked = Instant::now();
            while child.try_wait().map_err(io)?.is_none() && asked.elapsed() < GRACE {
                std::thread::sleep(POLL);
            }
            unsafe { libc::kill(group, libc::SIGKILL) };
            let _ = child.wait();
            return Err(StageError::Stopped);
        }
        std::thread::sleep(POLL);
    }
}

/// How often a running command is checked on.
const POLL: Duration = Duration::from_millis(10);
/// How long an interrupted command's group has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_millis(500);
