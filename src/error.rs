//! The runner's errors: what can go wrong running a stage, in the cache, with Slurm and with a stage
//! spec (`wspace exec-stage`), each with its cause where it has one ([`std::error::Error::source`]).
//! [`chain`] writes an error with all its causes, as the command line prints it.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use wspace_stage_api::StageError;

use crate::cache::Corruption;
use crate::digest::PathError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Files, and the cache.
    /// A file or directory the runner reads, writes or creates.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A cache operation: `what` completes "cannot …".
    #[error("cannot {what}")]
    Cache {
        what: &'static str,
        #[source]
        source: PathError,
    },
    /// A `Path` parameter's file, which joins the key, could not be hashed.
    #[error("cannot hash a file parameter")]
    HashParam(#[source] PathError),
    /// The stage an input slot reads from has no result.
    #[error("input `{0}` has no result")]
    NoInput(String),
    /// The cached entry an input slot reads from is corrupt.
    #[error("input `{slot}` is corrupt")]
    CorruptInput {
        slot: String,
        #[source]
        source: Corruption,
    },
    /// A stage (or one it depends on) has no cached result: `why` says what changed.
    #[error("stage `{stage}` has no cached result ({why}); run `wspace run` first")]
    NotCached { stage: String, why: String },
    #[error("stage `{0}` is not in the pipeline")]
    NotInPipeline(String),

    // The stage itself.
    /// The stage kind's own failure.
    #[error(transparent)]
    Stage(StageError),
    #[error("the stage panicked: {0}")]
    Panicked(String),
    /// It stopped because the run was interrupted ([`StageError::Stopped`]); not a failure.
    #[error("stopped: the run was interrupted")]
    Stopped,
    #[error("cannot start a thread pool")]
    Pool(#[source] rayon::ThreadPoolBuildError),

    // Slurm.
    #[error("{}", spawn_message(program, source))]
    Spawn {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    /// A Slurm command exited with an error: the command line and its stderr.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: ExitStatus, stderr: String },
    #[error("`{command}` printed no job id: {output:?}")]
    NoJobId { command: String, output: String },
    /// `squeue` could not tell whether the job is still queued.
    #[error("`squeue -j {job}` failed: {stderr}")]
    Queue { job: String, stderr: String },
    #[error("cannot follow Slurm job {job} (the job may still run; `scancel {job}` stops it)")]
    Follow {
        job: String,
        #[source]
        source: Box<Error>,
    },
    #[error("interrupted: cancelled Slurm job {0}")]
    Cancelled(String),
    /// Tasks of an array job left no done marker; `logs` is the tail of each one's log (up to three).
    #[error(
        "Slurm job {job}: {} of {submitted} task(s) did not succeed ({}); the next run resubmits only those{logs}",
        failed.len(),
        failed.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
    )]
    TasksFailed { job: String, failed: Vec<usize>, submitted: usize, logs: String },
    #[error("cannot find the wspace binary")]
    CurrentExe(#[source] io::Error),
    #[error("cannot write the stage spec")]
    WriteSpec(#[source] serde_json::Error),

    // `wspace exec-stage SPEC`.
    #[error("cannot read {}", path.display())]
    ReadSpec {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a stage spec", path.display())]
    ParseSpec {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("this wspace binary has no stage kind `{0}`")]
    UnknownKind(String),
    #[error(
        "kind `{kind}` is at code version {ours} in this binary but {theirs} in the spec: run the same wspace binary everywhere"
    )]
    CodeVersion { kind: String, ours: u32, theirs: u32 },
    #[error("stage `{stage}` runs in {shards} shard(s); --shard {shard} names none of them")]
    NoSuchShard { stage: String, shards: usize, shard: usize },
    #[error("stage `{stage}` runs in {shards} shards: give --shard")]
    ShardNeeded { stage: String, shards: usize },
    /// An input's entry is not the one the runner meant (another cache under the same path?).
    #[error("input `{slot}`: {} holds output {held}, not {wanted}", manifest.display())]
    OtherInput { slot: String, manifest: PathBuf, held: String, wanted: String },
    #[error("input `{slot}`: cannot read {} (is the cache on a file system this node sees at the same path?)", manifest.display())]
    UnreadableInput {
        slot: String,
        manifest: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `what` ("stage `x`", "shard 2 of 4 of stage `x`") failed.
    #[error("{what} failed")]
    Failed {
        what: String,
        #[source]
        source: Box<Error>,
    },
}

impl From<StageError> for Error {
    fn from(e: StageError) -> Self {
        match e {
            StageError::Stopped => Error::Stopped,
            e => Error::Stage(e),
        }
    }
}

fn spawn_message(program: &str, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        format!("cannot run `{program}`: not found on PATH (is this a Slurm submit host? `--executor local` runs here)")
    } else {
        format!("cannot run `{program}`")
    }
}

/// `e` and each of its causes, joined by `: ` (ripgrep's and anyhow's `{:#}` layout). A cause whose
/// text already ends the text so far is not repeated: some errors print their source themselves
/// ([`PathError`], [`StageError::Io`]).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_names_every_cause_once() {
        let io = || io::Error::new(io::ErrorKind::PermissionDenied, "permission denied");
        let publish = Error::Cache { what: "publish", source: PathError { path: "/c/x".into(), source: io() } };
        assert_eq!(chain(&publish), "cannot publish: /c/x: permission denied");
        let failed = Error::Failed { what: "stage `a`".into(), source: Box::new(StageError::io("/in/y", io()).into()) };
        assert_eq!(chain(&failed), "stage `a` failed: /in/y: permission denied");
        let spawn = Error::Spawn { program: "sbatch", source: io::Error::from(io::ErrorKind::NotFound) };
        assert!(chain(&spawn).starts_with("cannot run `sbatch`: not found on PATH (is this"), "{}", chain(&spawn));
        let follow =
            Error::Follow { job: "7".into(), source: Box::new(Error::Queue { job: "7".into(), stderr: "timeout".into() }) };
        assert_eq!(
            chain(&follow),
            "cannot follow Slurm job 7 (the job may still run; `scancel 7` stops it): `squeue -j 7` failed: timeout"
        );
        assert!(matches!(Error::from(StageError::Stopped), Error::Stopped));
    }
}
