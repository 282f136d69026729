//! What `wspace gc` removes, and `wspace fsck`: the cache's housekeeping, decided here and carried
//! out (and printed) by [`crate::cli`].
//!
//! # What gc keeps
//! - **By history** (`wspace gc [--keep-last N]`): every entry that one of the last N finished runs
//!   *of each pipeline file* resolved to (`runs/history.jsonl` has one line per `wspace run`: all its
//!   sweep variants, and the whole DAG even when only some stages were asked for). Running another
//!   pipeline never makes a first one's results garbage.
//! - Entries no finished run mentions but made after the last finished run of their pipeline: a run
//!   that was killed or interrupted made them, and its next attempt will want them.
//! - **By pipeline** (`wspace gc FILE...`): exactly what those files resolve to now; all else goes.
//! - Resumable work (a zoo's finished models, left by an interrupted or failed run: see
//!   [`Cache::resumable`]) stays, except that `gc FILE...` removes what those files no longer resolve to.
//!
//! Entries whose manifest cannot be read are never removed by gc: it reports them, and
//! `wspace fsck --repair` removes them.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::cache::{Cache, Entry, HistoryLine, ResumeNote};
use crate::key::StageKey;

/// Which entries to keep.
pub enum Keep {
    /// The last `n` finished runs of each pipeline file, and what unfinished runs made since.
    History(usize),
    /// Exactly these keys.
    Exactly(HashSet<StageKey>),
}

/// What a gc will do.
#[derive(Default)]
pub struct GcPlan {
    pub remove: Vec<Entry>,
    /// Kept because a run that did not finish made them.
    pub unfinished: Vec<Entry>,
    /// Builds, scratch and job directories of dead runs (see [`Cache::orphans`]), and resumable work
    /// that `gc FILE...` does not keep.
    pub leftovers: Vec<PathBuf>,
    /// Resumable work kept (see [`Cache::resumable`]).
    pub resumable: Vec<(PathBuf, ResumeNote)>,
    pub unreadable: Vec<(PathBuf, String)>,
}

impl GcPlan {
    pub fn size(&self) -> u64 {
        self.remove.iter().map(|e| e.manifest.size()).sum()
    }
}

/// The keys the last `keep_last` runs of each pipeline file used.
pub fn recent_keys(history: &[HistoryLine], keep_last: usize) -> HashSet<StageKey> {
    let mut per_group: BTreeMap<&str, usize> = BTreeMap::new();
    let mut keep = HashSet::new();
    for line in history.iter().rev() {
        let n = per_group.entry(line.group()).or_default();
        if *n < keep_last {
            *n += 1;
            keep.extend(line.keys.iter().cloned());
        }
    }
    keep
}

pub fn plan(cache: &Cache, keep: &Keep) -> GcPlan {
    let scan = cache.scan();
    let mut plan = GcPlan { leftovers: cache.orphans(), unreadable: scan.unreadable, ..GcPlan::default() };
    for (path, note) in cache.resumable() {
        let key = StageKey(path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        match keep {
            Keep::Exactly(keys) if !keys.contains(&key) => plan.leftovers.push(path),
            _ => plan.resumable.push((path, note)),
        }
    }
    let history = cache.history();
    let (kept, mentioned, last_run) = match keep {
        Keep::Exactly(keys) => (keys.clone(), HashSet::new(), BTreeMap::new()),
        Keep::History(n) => {
            let mentioned: HashSet<StageKey> = history.iter().flat_map(|h| h.keys.iter().cloned()).collect();
            let mut last_run: BTreeMap<&str, u64> = BTreeMap::new();
            for h in &history {
                let t = last_run.entry(h.pipeline.as_str()).or_default();
                *t = (*t).max(h.time);
            }
            (recent_keys(&history, *n), mentioned, last_run)
        }
    };
    for e in scan.entries {
        let m = &e.manifest;
        if kept.contains(&m.key) {
            continue;
        }
        let unfinished = matches!(keep, Keep::History(_))
            && !mentioned.contains(&m.key)
            && last_run.get(m.pipeline.as_str()).is_none_or(|&t| m.created >= t);
        if unfinished {
            plan.unfinished.push(e);
        } else {
            plan.remove.push(e);
        }
    }
    plan
}

/// One problem `fsck` found.
pub struct Finding {
    /// `corrupt`, `partial` or `orphaned`.
    pub what: &'static str,
    pub path: PathBuf,
    pub detail: String,
    /// The entry's key, for a corrupt entry.
    pub key: Option<StageKey>,
}

/// Hashes every entry against its manifest; lists unreadable manifests, unfinished builds and
/// leftovers of dead runs. Also returns how many entries were hashed.
pub fn fsck(cache: &Cache) -> (usize, Vec<Finding>) {
    let scan = cache.scan();
    let hashed = scan.entries.len();
    let mut out = Vec::new();
    for (path, why) in scan.unreadable {
        let key = path.file_name().map(|n| StageKey(n.to_string_lossy().into_owned()));
        out.push(Finding { what: "corrupt", detail: format!("unreadable manifest: {why}"), path, key });
    }
    for e in scan.entries {
        if let Err(bad) = cache.verify(&e) {
            let m = &e.manifest;
            let detail = format!("{}/{} ({}): {bad}", m.pipeline, m.stage, m.ingredients.kind);
            out.push(Finding { what: "corrupt", path: e.dir.clone(), detail, key: Some(m.key.clone()) });
        }
    }
    for path in cache.orphans() {
        let partial = path.parent().is_some_and(|p| p.ends_with("tmp"));
        let (what, detail) = if partial {
            ("partial", "an unfinished build left by a killed or failed run")
        } else {
            ("orphaned", "work of a build no run holds and no entry owns")
        };
        out.push(Finding { what, path, detail: detail.into(), key: None });
    }
    (hashed, out)
}
