//! The content-addressed cache of stage results.
//!
//! # Brief overview
//! [`Cache`] is a directory (default `./cache`, or `--cache DIR`, or `WSPACE_CACHE`). A stage result is
//! an [`Entry`], found by its [`StageKey`]. [`Cache::lookup`] answers hit or miss without locking;
//! to compute a result, a run takes the key's [`BuildLock`], looks again (another run may have just
//! published it), writes into a private [`Build`] directory, and [`BuildLock::publish`]es it: only then
//! does the entry exist.
//!
//! # What is in a key
//! | ingredient | why |
//! |---|---|
//! | the stage's kind (`kind = "pca"`) | different code |
//! | the kind's code version (a constant in the kind, bumped when its semantics change) | code changed |
//! | every parameter, resolved: defaults filled in, sorted by name, type-tagged | different request |
//! | the content hash (blake3) of each file or tree a `Path` parameter names | different data |
//! | for each input slot, the **output hash** of the upstream result | different input |
//!
//! **What invalidates a stage**: any of those changing, and nothing else. Because inputs enter by the
//! upstream *output* hash, an upstream stage that reruns (say its code version was bumped) but writes
//! identical bytes leaves every downstream key unchanged: downstream stays cached (early cutoff).
//!
//! **What is never hashed**: the stage's name in the pipeline file, the pipeline's name or location,
//! the path strings of `Path` parameters (only their contents), absolute paths, mtimes, hash-map
//! order (all maps are sorted), wall-clock time, the thread count.
//!
//! # On-disk layout
//! ```text
//! cache/
//!   entries/<key>/entry.json    manifest: key, ingredients, output hash, every file's size and blake3,
//!                               and each file's size + mtime once sealed (its "stamp")
//!   entries/<key>/out/...       the stage's output files (read-only)
//!   locks/<key>.lock            flock(2) target while a run computes <key> (an empty file)
//!   tmp/<key>.<pid>.<n>/        a build in progress: out/ + entry.json, renamed into entries/ on success
//!   scratch/<key>/              work of an unfinished build; kept across failed and interrupted runs
//!                               (marked `.wspace-resumable`) for a kind that resumes from it
//!   jobs/<key>/                 a Slurm-run stage: spec.json, job.sh, logs/, done/ (see `crate::slurm`)
//!   runs/<pipeline>/<stage>.json  ingredients of the last run of that stage name (for `explain`)
//!   runs/history.jsonl          one line per finished `wspace run`: time, pipeline name and file, the
//!                               keys its whole DAG resolved to over all sweep variants (`ls`, `gc`)
//! ```
//! The output hash of an entry is the tree hash of `out/` (see [`crate::digest`]).
//!
//! # Guarantees
//! - **Atomic publish**: a build is written into `tmp/`, every file and directory fsynced, `entry.json`
//!   written last, then the directory is renamed into `entries/`. A reader sees a whole entry or none.
//! - **Verify on read**: before a stage runs, the entries it reads are re-hashed against their
//!   manifests; a mismatch is reported and that entry recomputed.
//! - **Verify on serve**: a cache hit — also of a terminal stage nothing downstream reads — is checked
//!   before it is reported cached: [`Cache::verify_fast`] `stat`s every file and compares size and
//!   mtime (nanoseconds) with the stamps recorded at publish; only on a difference does it re-hash,
//!   and a real mismatch is recomputed like a miss. An unreadable manifest is recomputed too.
//!   *Decision*: stat, not hash. Re-hashing every hit costs what the outputs weigh, on every no-op
//!   run; a stat per file costs microseconds. Measured (release, this project's 2-core box under a
//!   load of ~11, hyperfine medians): the no-op rerun of the 20-stage chain (`benches/noop-rerun.sh`)
//!   takes 10.9 ms with the stat check (13.7 ms for the build before it, within the noise; target
//!   ≤ 50 ms); with one 256 MiB output, the no-op rerun takes 24 ms while hashing that entry
//!   (`wspace fsck`) takes 434 ms — a ResNet-18 zoo (GBs) would cost seconds per no-op run. Any write through the
//!   file system changes the mtime, so edits, truncation and replaced files are caught; what a stat
//!   cannot see (bit rot under an unchanged mtime, an mtime restored by hand) is found by
//!   `wspace fsck` (hashes everything), `wspace show` and `wspace verify` (hash their entry), and by the
//!   next stage that reads the entry.
//! - **Concurrency**: two runs that need the same missing key serialise on its lock; the second waits,
//!   then finds the published entry. The lock is an `flock`, released by the kernel when its holder
//!   dies, so a `kill -9` never leaves a lock that blocks anyone; the dead run's `tmp/` directory is
//!   removed by the next run that takes the lock.
//!
//! # A cache shared by cluster nodes (the Slurm executor)
//! With `--executor slurm` the cache directory must be on a file system every node sees at the same path
//! (NFS, Lustre, …). The division of labour keeps what the guarantees above rely on in one process:
//! - the `wspace run` process (on a login node) takes the key's lock, creates `tmp/<key>.*/out` and
//!   `scratch/<key>/`, and after the job ends hashes, writes the manifest and renames the build into
//!   `entries/`: publishing is the same atomic rename as locally, done by the lock holder;
//! - a job (`wspace exec-stage`) only reads its input entries and writes into that build's `out/` or the
//!   key's `scratch/`; it takes no lock and publishes nothing. Shards of one key share `scratch/<key>/`
//!   and write disjoint files there, each through a temporary name and a rename;
//! - the lock is an `flock` held by the `wspace run` process for the whole job. Two runs on the same login
//!   node exclude each other as locally; two runs on *different* nodes only where `flock` works across
//!   clients (NFSv4 with its lock manager, Lustre mounted with `-o flock`). Where it does not, run one
//!   `wspace run` per cache at a time.
//! - A job's node must see the files the runner wrote (close-to-open consistency: NFS guarantees it for a
//!   file closed before the job starts, which is how the runner writes `spec.json` and `job.sh`), and the
//!   runner must see the job's files after the job has ended (it reads them only then).
//!
//! # Housekeeping
//! - `wspace gc` keeps, per pipeline *file*, every entry its last N runs resolved to (all sweep
//!   variants; the whole DAG even after `run FILE STAGE`), and entries that runs which never finished
//!   (killed) made after that pipeline's last finished run; `gc FILE...` keeps exactly what those files
//!   resolve to now. It prints what it will remove and the space freed first. See [`crate::gc`].
//! - `wspace fsck` re-hashes every entry and lists corrupt entries (a file changed, missing or extra; an
//!   unreadable manifest), partial ones (a build in `tmp/` no live run holds) and orphaned ones
//!   (`scratch/`, `jobs/` that no run holds and no entry owns); `--repair` removes them. Resumable work
//!   (a `scratch/<key>/` marked `.wspace-resumable`: a zoo's finished models) is listed, not counted
//!   as a problem; the next run of that stage resumes from it, and `gc FILE...` removes it when
//!   the files no longer resolve to its key.
//!
//! # Reproducibility across machines
//! A key never includes the machine (a shared cache serves every node), so "the same key, the same
//! bytes" holds only as far as the computation is the same on both machines. Measured on the tiny
//! golden pipeline (`tests/golden.rs`), natively on AVX2 and AVX-512 CPUs, under faked cache sizes
//! (`scripts/repro/fake-caches.sh`) and under `qemu-x86_64` CPU models (README, "Reproducibility across
//! machines"):
//!
//! | kinds | the same bytes on |
//! |---|---|
//! | `dataset`, `tasks`, `zoo` (`cnn-s`), `canonicalise`, `multiclass`, `replicas`, `zoo-import`, `export-zoo` | every x86-64 CPU: any instruction set (SSE2 only to AVX-512), cache sizes and core count |
//! | `pca`, `dataset-embed`, `autoencoder` (both architectures), `evaluate-reconstruction`, `align`, `generator`, `flow`, `sample`, `evaluate-samples`, `report` | every x86-64 CPU of one float class (`wspace --version` names it): with AVX2 + FMA, or without FMA; any cache sizes and core count |
//! | `zoo` with `arch = "resnet18"` on the CPU | one float class and one L1 data cache geometry |
//! | `command` | whatever the command guarantees |
//!
//! The first row's kinds use the project's own kernels, whose instruction-set variants agree bit for
//! bit, and their `exp`/`log`/`cos`/`pow` come from the `libm` crate (glibc's FMA and plain
//! versions differ in the last bit). The second row's go through candle's `gemm` or nalgebra's `matrixmultiply`, which choose an FMA
//! or a plain kernel at run time; their products are cut where `gemm` would size its blocks from the
//! cache (`wspace_stages::matmul`). ResNet-18's convolutions are not cut. Between classes the numbers
//! differ in their last bits, and training stages carry the difference on: `wspace verify` says by how
//! much ("numerically equal within …" or "different"). Other architectures (aarch64) have not been
//! measured.
//!
//! # Known limits
//! - `Path` parameters are re-hashed on every run (blake3, ~1 GB/s): huge data directories cost time.
//! - `gc` must not run while another run reads the entries it removes (it skips keys being built).
//! - Concurrent runs rely on `flock` and `rename` being atomic: true on local file systems; on NFS
//!   only with a server and client that support them (NFSv4).
//! - Outputs are trusted to be deterministic; `wspace verify` checks one, on the machine it runs on.
//! - Stamps are exact mtimes: a cache copied without preserving mtimes (`cp` without `-a`) is re-hashed
//!   on every hit (correct, slower) until its entries are recomputed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::digest::{list_stamps, list_tree, path_err, tree_hash, FileRecord, PathError, Stamp};
use crate::key::{Ingredients, StageKey};

/// `entries/<key>/entry.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub key: StageKey,
    pub output_hash: String,
    /// The stage and pipeline names of the run that computed it (informative only).
    pub stage: String,
    pub pipeline: String,
    pub ingredients: Ingredients,
    pub files: Vec<FileRecord>,
    /// Each file's size and mtime once sealed, in the order of `files`: what [`Cache::verify_fast`]
    /// compares before it decides to re-hash (empty in manifests older than this field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stamps: Vec<Stamp>,
    /// Unix seconds.
    pub created: u64,
    pub seconds: f64,
}

impl Manifest {
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A published result.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Entry {
    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
}

/// What [`Cache::verify`] found wrong with an entry.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    #[error("out/{0} does not match its recorded hash")]
    Changed(String),
    #[error("out/{0} is missing")]
    Missing(String),
    #[error("out/{0} is not in the manifest")]
    Extra(String),
    #[error(transparent)]
    Io(#[from] PathError),
}

/// The last recorded run of a stage name: what `explain` compares against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub key: StageKey,
    pub time: u64,
    pub ingredients: Ingredients,
}

/// One finished `wspace run` (all its sweep variants): the keys its pipeline resolves to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryLine {
    pub time: u64,
    pub pipeline: String,
    /// The pipeline file, absolute (absent in lines written before this field: `pipeline` then
    /// stands for the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub keys: Vec<StageKey>,
}

impl HistoryLine {
    /// What `gc` counts runs per: the pipeline file, else its name.
    pub fn group(&self) -> &str {
        self.file.as_deref().unwrap_or(&self.pipeline)
    }
}

/// What [`Cache::scan`] finds under `entries/`.
#[derive(Debug, Default)]
pub struct Scan {
    pub entries: Vec<Entry>,
    /// Entry directories whose manifest cannot be read or parsed, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

pub struct Cache {
    root: PathBuf,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    wspace_stage_api::write_atomic(path, bytes).map_err(|(path, source)| PathError { path, source })
}

fn sync_dir(dir: &Path) -> Result<(), PathError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(path_err(dir))
}

/// fsync every file and directory below `dir`, and make the files read-only.
fn seal(dir: &Path) -> Result<(), PathError> {
    for entry in fs::read_dir(dir).map_err(path_err(dir))? {
        let path = entry.map_err(path_err(dir))?.path();
        let meta = fs::symlink_metadata(&path).map_err(path_err(&path))?;
        if meta.is_dir() {
            seal(&path)?;
        } else if meta.is_file() {
            File::open(&path).and_then(|f| f.sync_all()).map_err(path_err(&path))?;
            let mut perm = meta.permissions();
            perm.set_readonly(true);
            fs::set_permissions(&path, perm).map_err(path_err(&path))?;
        }
    }
    sync_dir(dir)
}

impl Cache {
    /// No directory is created until something is written.
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    fn entry_dir(&self, key: &StageKey) -> PathBuf {
        self.root.join("entries").join(&key.0)
    }

    /// Reads an entry's manifest. A half-written entry cannot exist (see the module doc); an unreadable
    /// manifest is reported as an error, never taken for a hit.
    pub fn lookup(&self, key: &StageKey) -> Result<Option<Entry>, PathError> {
        let dir = self.entry_dir(key);
        let path = dir.join("entry.json");
        match fs::read(&path) {
            Ok(bytes) => {
                let manifest: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| PathError { path: path.clone(), source: io::Error::new(io::ErrorKind::InvalidData, e) })?;
                Ok(Some(Entry { dir, manifest }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PathError { path, source: e }),
        }
    }

    /// Checks an entry cheaply: every file's size and mtime against the stamps recorded at publish
    /// (a `stat` per file, nothing read). Only when they differ (or were never recorded) are the files
    /// re-hashed ([`Cache::verify`]); the answer is then the hash's. See the module doc for the cost.
    pub fn verify_fast(&self, entry: &Entry) -> Result<(), Corruption> {
        let m = &entry.manifest;
        if m.stamps.len() == m.files.len() && !m.files.is_empty() {
            if let Ok(found) = list_stamps(&entry.out()) {
                let same = found.len() == m.files.len()
                    && found.iter().zip(m.files.iter().zip(&m.stamps)).all(|((p, st), (f, want))| *p == f.path && st == want);
                if same {
                    return Ok(());
                }
            }
        }
        self.verify(entry)
    }

    /// Re-hashes an entry's files against its manifest.
    pub fn verify(&self, entry: &Entry) -> Result<(), Corruption> {
        let found = list_tree(&entry.out())?;
        let mut want = entry.manifest.files.iter().peekable();
        let mut have = found.iter().peekable();
        loop {
            match (want.peek(), have.peek()) {
                (None, None) => return Ok(()),
                (Some(w), None) => return Err(Corruption::Missing(w.path.clone())),
                (None, Some(h)) => return Err(Corruption::Extra(h.path.clone())),
                (Some(w), Some(h)) => match w.path.cmp(&h.path) {
                    std::cmp::Ordering::Less => return Err(Corruption::Missing(w.path.clone())),
                    std::cmp::Ordering::Greater => return Err(Corruption::Extra(h.path.clone())),
                    std::cmp::Ordering::Equal if w.blake3 != h.blake3 => return Err(Corruption::Changed(w.path.clone())),
                    std::cmp::Ordering::Equal => {
                        want.next();
                        have.next();
                    }
                },
            }
        }
    }

    fn lock_file(&self, key: &StageKey) -> Result<File, PathError> {
        let dir = self.root.join("locks");
        fs::create_dir_all(&dir).map_err(path_err(&dir))?;
        let path = dir.join(format!("{}.lock", key.0));
        OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(path_err(&path))
    }

    /// Takes the key's build lock, waiting for another run that holds it (`on_wait` is called first,
    /// so the user learns why nothing happens). Removes builds that dead runs left for this key.
    pub fn lock(&self, key: &StageKey, on_wait: impl FnOnce()) -> Result<BuildLock<'_>, PathError> {
        let file = self.lock_file(key)?;
        let path = self.root.join("locks").join(format!("{}.lock", key.0));
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(path_err(&path))?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(PathError { path, source: e }),
        }
        let lock = BuildLock { cache: self, key: key.clone(), _file: file };
        lock.remove_stale_builds()?;
        Ok(lock)
    }

    /// Whether some live run holds the key's lock.
    fn is_locked(&self, key: &str) -> bool {
        let path = self.root.join("locks").join(format!("{key}.lock"));
        match OpenOptions::new().write(true).open(path) {
            Ok(f) => matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    pub fn record_run(&self, pipeline: &str, stage: &str, record: &RunRecord) -> Result<(), PathError> {
        let path = self.root.join("runs").join(pipeline).join(format!("{stage}.json"));
        write_atomic(&path, &serde_json::to_vec_pretty(record).unwrap_or_default())
    }

    pub fn last_run(&self, pipeline: &str, stage: &str) -> Option<RunRecord> {
        let path = self.root.join("runs").join(pipeline).join(format!("{stage}.json"));
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    /// Appends one line to `runs/history.jsonl` (a single `write` on an `O_APPEND` file).
    pub fn append_history(&self, line: &HistoryLine) -> Result<(), PathError> {
        let dir = self.root.join("runs");
        fs::create_dir_all(&dir).map_err(path_err(&dir))?;
        let path = dir.join("history.jsonl");
        let mut text = serde_json::to_string(line).unwrap_or_default();
        text.push('\n');
        let mut f = OpenOptions::new().create(true).append(true).open(&path).map_err(path_err(&path))?;
        f.write_all(text.as_bytes()).map_err(path_err(&path))
    }

    pub fn history(&self) -> Vec<HistoryLine> {
        let text = fs::read_to_string(self.root.join("runs/history.jsonl")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Every published entry, and the entry directories whose manifest cannot be read.
    pub fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        let Ok(dir) = fs::read_dir(self.root.join("entries")) else { return scan };
        for e in dir.filter_map(|e| e.ok()) {
            let key = StageKey(e.file_name().to_string_lossy().into_owned());
            match self.lookup(&key) {
                Ok(Some(entry)) if entry.manifest.key == key => scan.entries.push(entry),
                Ok(Some(entry)) => scan.unreadable.push((e.path(), format!("its manifest is for key {}", entry.manifest.key))),
                Ok(None) => scan.unreadable.push((e.path(), "no entry.json".into())),
                Err(err) => scan.unreadable.push((e.path(), err.source.to_string())),
            }
        }
        scan.entries.sort_by(|a, b| a.manifest.key.cmp(&b.manifest.key));
        scan.unreadable.sort();
        scan
    }

    /// Where the Slurm executor keeps the job files and logs of `key`.
    pub fn job_dir(&self, key: &StageKey) -> PathBuf {
        self.root.join("jobs").join(&key.0)
    }

    /// Removes an entry and its job logs (used by `gc` and `fsck --repair`). Returns false when a live
    /// run is building that key. The entry is first renamed out of `entries/`, so a reader never sees
    /// half of it.
    pub fn remove(&self, key: &StageKey) -> Result<bool, PathError> {
        if self.is_locked(&key.0) {
            return Ok(false);
        }
        let tmp = self.root.join("tmp");
        fs::create_dir_all(&tmp).map_err(path_err(&tmp))?;
        let doomed = tmp.join(format!("{}.{}.removed", key.0, std::process::id()));
        match fs::rename(self.entry_dir(key), &doomed) {
            Ok(()) => remove_tree(&doomed)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(PathError { path: self.entry_dir(key), source: e }),
        }
        remove_tree(&self.job_dir(key))?;
        let lock = self.root.join("locks").join(format!("{}.lock", key.0));
        let _ = fs::remove_file(lock);
        Ok(true)
    }

    /// Builds, scratch and job directories that no live run holds and no entry owns: left by killed
    /// or failed runs. Resumable work ([`Cache::resumable`]) is not among them.
    pub fn orphans(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for sub in ["tmp", "scratch", "jobs"] {
            let Ok(dir) = fs::read_dir(self.root.join(sub)) else { continue };
            for e in dir.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = name.split('.').next().unwrap_or("");
                let published = sub == "jobs" && self.entry_dir(&StageKey(key.to_string())).exists();
                let resumable = sub == "scratch" && e.path().join(RESUMABLE).is_file();
                if !self.is_locked(key) && !published && !resumable {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    /// Scratch directories of unfinished builds that a later run of the same stage resumes from (a zoo
    /// interrupted part-way keeps its trained models), with what their marker says, oldest first not
    /// guaranteed: sorted by path.
    pub fn resumable(&self) -> Vec<(PathBuf, ResumeNote)> {
        let mut out = Vec::new();
        let Ok(dir) = fs::read_dir(self.root.join("scratch")) else { return out };
        for e in dir.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let note = fs::read(e.path().join(RESUMABLE)).ok().and_then(|b| serde_json::from_slice(&b).ok());
            if let (Some(note), false) = (note, self.is_locked(&name)) {
                out.push((e.path(), note));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The marker file in the scratch directory of a kind that resumes from it
/// ([`wspace_stage_api::StageKind::resumes`]): JSON, a [`ResumeNote`].
pub const RESUMABLE: &str = ".wspace-resumable";

/// Whose resumable work a scratch directory holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResumeNote {
    pub pipeline: String,
    pub stage: String,
    pub kind: String,
}

/// Removes a directory tree whose files may be read-only (`remove_dir_all` needs only the directories
/// writable on Unix).
pub fn remove_tree(dir: &Path) -> Result<(), PathError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(PathError { path: dir.to_path_buf(), source: e }),
        _ => Ok(()),
    }
}

/// The right to compute one key; dropping it releases the lock.
pub struct BuildLock<'c> {
    cache: &'c Cache,
    key: StageKey,
    _file: File,
}

/// A private directory to compute into, and the key's persistent scratch directory.
pub struct Build {
    dir: PathBuf,
    pub out: PathBuf,
    pub scratch: PathBuf,
    /// Whether the scratch directory holds resumable work (kept when the build is abandoned).
    resumable: bool,
}

impl Build {
    /// What removing this unfinished build takes: its directory, and its scratch unless that is
    /// resumable work.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.dir.clone()];
        if !self.resumable {
            paths.push(self.scratch.clone());
        }
        paths
    }
}

impl BuildLock<'_> {
    fn remove_stale_builds(&self) -> Result<(), PathError> {
        let tmp = self.cache.root.join("tmp");
        if let Ok(dir) = fs::read_dir(&tmp) {
            let prefix = format!("{}.", self.key.0);
            for e in dir.filter_map(|e| e.ok()) {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    remove_tree(&e.path())?;
                }
            }
        }
        Ok(())
    }

    /// Looks again, now that no other run can be publishing this key.
    pub fn lookup(&self) -> Result<Option<Entry>, PathError> {
        self.cache.lookup(&self.key)
    }

    /// Moves a corrupt entry out of the way (under the lock) so it can be recomputed.
    pub fn discard(&self) -> Result<(), PathError> {
        let dir = self.cache.entry_dir(&self.key);
        let doomed = self.cache.root.join("tmp").join(format!("{}.{}.corrupt", self.key.0, std::process::id()));
        fs::create_dir_all(self.cache.root.join("tmp")).map_err(path_err(&doomed))?;
        match fs::rename(&dir, &doomed) {
            Ok(()) => remove_tree(&doomed),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PathError { path: dir, source: e }),
        }
    }

    /// A fresh, empty build directory (and the persistent scratch directory). `resumes`: the kind keeps
    /// resumable work in the scratch directory, which is marked as such ([`RESUMABLE`]).
    pub fn begin(&self, resumes: Option<&ResumeNote>) -> Result<Build, PathError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = self.cache.root.join("tmp").join(format!(
            "{}.{}.{}",
            self.key.0,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let out = dir.join("out");
        fs::create_dir_all(&out).map_err(path_err(&out))?;
        let scratch = self.cache.root.join("scratch").join(&self.key.0);
        fs::create_dir_all(&scratch).map_err(path_err(&scratch))?;
        if let Some(note) = resumes {
            write_atomic(&scratch.join(RESUMABLE), &serde_json::to_vec_pretty(note).unwrap_or_default())?;
        }
        Ok(Build { dir, out, scratch, resumable: resumes.is_some() })
    }

    /// Hashes the build's output, writes its manifest, and renames it into place.
    pub fn publish(
        &self,
        build: Build,
        ingredients: &Ingredients,
        stage: &str,
        pipeline: &str,
        seconds: f64,
    ) -> Result<Entry, PathError> {
        let files = list_tree(&build.out)?;
        let mut manifest = Manifest {
            key: self.key.clone(),
            output_hash: tree_hash(&files),
            stage: stage.to_string(),
            pipeline: pipeline.to_string(),
            ingredients: ingredients.clone(),
            files,
            stamps: Vec::new(),
            created: now(),
            seconds,
        };
        seal(&build.out)?;
        // Stamped after sealing (which changes no mtime); the same sorted order as `files`.
        let stamps = list_stamps(&build.out)?;
        if stamps.iter().map(|(p, _)| p).eq(manifest.files.iter().map(|f| &f.path)) {
            manifest.stamps = stamps.into_iter().map(|(_, st)| st).collect();
        }
        let mpath = build.dir.join("entry.json");
        let mut f = File::create(&mpath).map_err(path_err(&mpath))?;
        f.write_all(&serde_json::to_vec_pretty(&manifest).unwrap_or_default())
            .and_then(|_| f.sync_all())
            .map_err(path_err(&mpath))?;
        sync_dir(&build.dir)?;
        let entries = self.cache.root.join("entries");
        fs::create_dir_all(&entries).map_err(path_err(&entries))?;
        let dest = self.cache.entry_dir(&self.key);
        fs::rename(&build.dir, &dest).map_err(path_err(&dest))?;
        sync_dir(&entries)?;
        remove_tree(&build.scratch)?;
        Ok(Entry { dir: dest, manifest })
    }

    /// Throws a failed or interrupted build away; its scratch stays only if it is resumable work.
    pub fn abandon(&self, build: Build) {
        for path in build.leftovers() {
            let _ = remove_tree(&path);
        }
    }
}
