//! The contract between the wspace runner and the stage kinds.
//!
//! # Brief overview
//! A stage kind (`kind = "zoo"` in a pipeline file) is a [`StageKind`]: it declares its parameters
//! ([`ParamSpec`], typed, with defaults), its input slots ([`Inputs`]) and a code [`StageKind::version`],
//! and it [`StageKind::run`]s with a [`StageContext`]: resolved parameters ([`Value`]s), one read-only
//! directory per input slot, an empty private output directory, a persistent scratch directory for
//! resumable work, and a [`Progress`] handle. Long loops call [`check_stop`], so that an interrupted
//! run stops within about a second.
//!
//! Stage code knows nothing of the cache: it reads its input directories, writes files into
//! `ctx.out`, and returns. Whatever it wrote is the stage's output. A `metrics.json` (a JSON object) at
//! the top of the output is special only in that the runner reports its scalar values (sweep tables,
//! `wspace show`), and two optional keys:
//! - `"document"`: the path, relative to the output, of the file a person should open (e.g.
//!   `"report.html"`); the runner names it at the end of `wspace run` (`STAGE: /abs/path`) and gives it as
//!   `document` under `--format json`;
//! - `"headline"`: an object of a few (at most five are printed) named numbers or strings, printed under
//!   the document's path and given as `headline` under `--format json`.
//!
//! Determinism is part of the contract: given the same parameters and input bytes, a stage must write
//! the same bytes (on CPU), so that `wspace verify` can prove a cached result reproducible.

mod params;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use params::{defaults, Choice, Fixed, Param, Params};

/// A resolved parameter value. Maps are ordered (`BTreeMap`) so every encoding of a value is canonical.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Table(BTreeMap<String, Value>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "array",
            Value::Table(_) => "table",
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    /// Integers are accepted where a float is wanted.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_table(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }
    /// Scalars only: what a command stage sees as `WSPACE_PARAM_<NAME>` and a sweep table shows.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            Value::List(_) | Value::Table(_) => None,
        }
    }
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Renders as TOML would write it: `16`, `0.5`, `"adam"`, `[2, 4]`, `{ a = 1 }`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e15 => write!(f, "{x:.1}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Value::Table(t) => {
                write!(f, "{{")?;
                for (i, (k, v)) in t.iter().enumerate() {
                    write!(f, "{}{k} = {v}", if i > 0 { ", " } else { " " })?;
                }
                write!(f, " }}")
            }
        }
    }
}

/// The type of a declared parameter; the runner checks values against it before anything runs.
/// A `const` can hold it (see [`Param`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    Bool,
    Int,
    /// A float; integers are accepted and converted.
    Float,
    Str,
    /// A string that must be one of these.
    Choice(&'static [&'static str]),
    /// A file or directory, relative to the pipeline file. Its *content* hash joins the stage key, its
    /// path does not; the stage receives it resolved to an absolute path.
    Path,
    List(&'static ParamType),
    /// Any TOML value (checked by the stage itself, at the start of its run).
    Any,
    /// A free-form table of scalars and arrays.
    Table,
}

impl ParamType {
    pub fn describe(&self) -> String {
        match self {
            ParamType::Bool => "a boolean".into(),
            ParamType::Int => "an integer".into(),
            ParamType::Float => "a number".into(),
            ParamType::Str => "a string".into(),
            ParamType::Choice(c) => format!("one of {}", c.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")),
            ParamType::Path => "a path (string)".into(),
            ParamType::List(t) => format!("an array ({} each)", t.describe()),
            ParamType::Any => "any value".into(),
            ParamType::Table => "a table".into(),
        }
    }
}

/// A parameter a kind declares. `default: None` means the parameter is required.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: Option<Value>,
    pub doc: &'static str,
}

impl ParamSpec {
    pub fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: None, doc }
    }
    pub fn optional(name: &'static str, ty: ParamType, default: Value, doc: &'static str) -> Self {
        ParamSpec { name, ty, default: Some(default), doc }
    }
}

/// The input slots a kind accepts in `inputs = { slot = "stage" }`.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Exactly these slots: `(name, required, doc)`. A name ending in `*` is a family: every slot whose
    /// name starts with what comes before the `*` (`method_*`: `method_flow`, `method_kde`, …), never
    /// required.
    Slots(Vec<(&'static str, bool, &'static str)>),
    /// Any slot names (the `command` kind).
    Any,
}

impl Inputs {
    /// Whether a stage of this kind may have an input named `slot`.
    pub fn accepts(&self, slot: &str) -> bool {
        match self {
            Inputs::Any => true,
            Inputs::Slots(known) => known.iter().any(|(s, _, _)| match s.strip_suffix('*') {
                Some(prefix) => slot.len() > prefix.len() && slot.starts_with(prefix),
                None => *s == slot,
            }),
        }
    }
}

/// How a running stage reports progress. The runner draws it (a bar on a terminal, nothing otherwise).
pub trait Progress: Send + Sync {
    /// The amount of work, in `unit`s (e.g. "models", "images").
    fn start(&self, total: u64, unit: &str);
    fn inc(&self, n: u64);
    fn message(&self, msg: &str);
}

/// A progress handle that draws nothing (tests, library use).
pub struct NoProgress;
impl Progress for NoProgress {
    fn start(&self, _: u64, _: &str) {}
    fn inc(&self, _: u64) {}
    fn message(&self, _: &str) {}
}

/// Everything a stage run may use.
pub struct StageContext<'a> {
    /// The stage's name in the pipeline file (for messages only; it is not part of the key).
    pub stage: &'a str,
    /// Every declared parameter, defaults filled in, `Path` parameters made absolute.
    pub params: &'a BTreeMap<String, Value>,
    /// One read-only directory per input slot: the upstream stage's output.
    pub inputs: &'a BTreeMap<String, PathBuf>,
    /// Empty, private; whatever the stage writes here is its output once it returns `Ok`.
    pub out: &'a Path,
    /// Persistent across attempts of this same stage key (a killed run's finished work survives here,
    /// so a stage can resume). Removed once the output is published. Names starting with `.wspace`
    /// are the runner's.
    pub scratch: &'a Path,
    /// The directory of the pipeline file (commands run there).
    pub workdir: &'a Path,
    /// The thread budget (the run's `-j`); the stage runs inside a rayon pool of this size.
    pub threads: usize,
    pub progress: &'a dyn Progress,
}

impl<'a> StageContext<'a> {
    /// The parameters, read through their declarations ([`Params`]).
    pub fn view(&self) -> Params<'a> {
        Params(self.params)
    }
    pub fn input(&self, slot: &str) -> Result<&Path, StageError> {
        self.inputs.get(slot).map(PathBuf::as_path).ok_or_else(|| StageError::input(slot, "is not connected"))
    }
}

/// Stopping a run early (Ctrl-C, SIGTERM): the runner calls [`request_stop`]; stage code calls
/// [`check_stop`] between units of work — an epoch, a batch, a model, a task — and returns its error, so
/// that a stage ends within about a second of the request. The runner then discards the stage's
/// output directory; what the stage kept in its scratch directory stays for the next attempt (see
/// [`StageKind::resumes`]).
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks every running stage of this process to stop (async-signal-safe: one atomic store).
pub fn request_stop() {
    STOP.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether [`request_stop`] was called.
pub fn stop_requested() -> bool {
    STOP.load(std::sync::atomic::Ordering::Relaxed)
}

/// `Err(StageError::Stopped)` once a stop was requested: `check_stop()?` between units of work.
pub fn check_stop() -> Result<(), StageError> {
    if stop_requested() {
        Err(StageError::Stopped)
    } else {
        Ok(())
    }
}

/// A stage failed. The message should name the file or parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The run was interrupted ([`check_stop`]); not a failure of the stage.
    #[error("stopped: the run was interrupted")]
    Stopped,
    #[error("{0}")]
    Msg(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A parameter's value is wrong: `message` completes "parameter `name` …".
    #[error("parameter `{name}` {message}")]
    Param { name: String, message: String },
    /// An input slot is missing, or what it holds is wrong: `message` completes "input `slot` …".
    #[error("input `{slot}` {message}")]
    Input { slot: String, message: String },
}

impl StageError {
    pub fn msg(m: impl Into<String>) -> Self {
        StageError::Msg(m.into())
    }
    /// "parameter `name` {message}": the runner points at that parameter in the pipeline file.
    pub fn param(name: &str, message: impl Into<String>) -> Self {
        StageError::Param { name: name.to_string(), message: message.into() }
    }
    /// "input `slot` {message}": the runner points at that input in the pipeline file.
    pub fn input(slot: &str, message: impl Into<String>) -> Self {
        StageError::Input { slot: slot.to_string(), message: message.into() }
    }
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StageError::Io { path: path.into(), source }
    }
}

/// A benchmark (`wspace bench NAME ARGS`): parses its own arguments and returns what to print (its
/// result, or its usage for `--help`) or an error message (for wrong arguments: exit 2).
pub type Bench = fn(&[String]) -> Result<String, String>;

/// A kind of stage: `kind = "..."` in a pipeline file.
pub trait StageKind: Send + Sync {
    /// The `kind = "..."` string.
    fn name(&self) -> &'static str;
    /// Bump when the kind's output for the same parameters and inputs changes; it joins the key.
    fn version(&self) -> u32;
    /// One line for `--help`-style listings.
    fn summary(&self) -> &'static str;
    fn params(&self) -> Vec<ParamSpec>;
    fn inputs(&self) -> Inputs;
    /// A parameter of type `Table` into which `stage.key` addresses that name no declared parameter go
    /// (`--set` and `[sweep]`); the `command` kind says `Some("params")`.
    fn open_table(&self) -> Option<&'static str> {
        None
    }
    /// Checks the parameters before anything runs (ranges, relations between parameters, files a
    /// `Path` names): the runner calls it for every stage and sweep variant while it checks the
    /// pipeline file, and refuses the file (exit 2, nothing runs) on an error. Checks that need the
    /// inputs' contents (data sizes) belong in [`StageKind::run`]. Errors should name the parameter
    /// ([`StageError::param`], or a message that quotes it as "`name`"), so the runner can point at it.
    fn validate(&self, params: Params) -> Result<(), StageError> {
        let _ = params;
        Ok(())
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError>;
    /// Whether the kind keeps finished work in `ctx.scratch` that a later attempt resumes from (the zoo
    /// keeps each trained model). The runner keeps such a scratch directory when a run is interrupted
    /// or fails, and marks it as resumable work for `wspace fsck`; any other kind's scratch is removed
    /// with the failed build.
    fn resumes(&self) -> bool {
        false
    }
    /// Whether the kind's work splits into shards that can run as separate processes at once (a Slurm
    /// array job, `shards = N` in the pipeline's `[executor.stages.NAME]`): see [`StageKind::run_shard`].
    fn shardable(&self) -> bool {
        false
    }
    /// Does shard `index` of `count` of the work, writing **only** into `ctx.scratch` (never `ctx.out`).
    /// The shards of one run execute concurrently, each in its own process, sharing the scratch
    /// directory; a shard killed part-way is run again later and should resume from what it finished.
    /// Once every shard has succeeded, [`StageKind::run`] is called once, in the runner's process, to
    /// write the output from the scratch; it must then find no work left to do. The output must be the
    /// same bytes for every `count`, and the same as a plain [`StageKind::run`] from an empty scratch.
    fn run_shard(&self, ctx: &StageContext, index: usize, count: usize) -> Result<(), StageError> {
        let _ = (ctx, index, count);
        Err(StageError::msg(format!("kind `{}` cannot run in shards", self.name())))
    }
}

/// Writes `bytes` to `path` so that no reader ever sees part of them: into a temporary file beside it
/// (unique to this process and call), fsynced, then renamed over `path`. The parent directory is created
/// if missing. A killed writer leaves at most a `.…tmp` file, never a partial `path`. The runner's cache
/// records and a stage's resumable scratch files both go through here. The error names the path at fault
/// (the temporary file, or `path` for the rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let mut f = std::fs::File::create(&tmp).map_err(|e| (tmp.clone(), e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| (tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| (path.to_path_buf(), e))
}

#[cfg(test)]
mod atomic_tests {
    use super::*;

    #[test]
    fn a_slot_family_accepts_every_name_it_prefixes_and_nothing_else() {
        let slots = Inputs::Slots(vec![("zoo", true, ""), ("method_*", false, "")]);
        assert!(slots.accepts("zoo") && slots.accepts("method_flow") && slots.accepts("method_k"));
        assert!(!slots.accepts("method_"), "the family's prefix alone names no member");
        assert!(!slots.accepts("zo") && !slots.accepts("zoo2") && !slots.accepts("methods"));
        assert!(Inputs::Any.accepts("anything"));
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("wspace-api-atomic-{}", std::process::id()));
        let path = dir.join("sub/file.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["file.txt"]);
        let (at, _) = write_atomic(&dir.join("sub/file.txt/below"), b"x").unwrap_err();
        assert!(at.starts_with(dir.join("sub/file.txt")), "{}", at.display());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
