//! `wspace gc` (remove what no recent run needs) and `wspace fsck` (hash every entry, repair).

use std::path::PathBuf;

use crate::cache::{Cache, Entry};
use crate::exec::{Runner, Status};
use crate::pipeline;
use crate::progress::Ui;
use crate::registry::Registry;

use super::fail::Fail;
use super::fmt::{human_size, report_unreadable};

/// The keys the pipeline files resolve to now, over every sweep variant (stages not computed yet
/// have no entry to keep, only perhaps resumable work).
pub(super) fn resolved_keys(
    files: &[PathBuf],
    registry: &Registry,
    cache: &Cache,
) -> Result<std::collections::HashSet<crate::key::StageKey>, Fail> {
    let ui = Ui::new(true);
    let mut keys = std::collections::HashSet::new();
    for file in files {
        let pipeline = pipeline::load(file, registry)?;
        for variant in pipeline.variants() {
            let vp = pipeline.with_overrides(&variant).map_err(|d| Fail(d.to_string(), 2))?;
            let runner = Runner { pipeline: &vp, cache, ui: &ui, jobs: 1, on_abandon: None };
            let plan = runner.plan(&vec![true; vp.stages.len()]);
            // A stage that would run has no entry yet, but may have resumable work to keep.
            keys.extend(plan.into_iter().filter(|r| matches!(r.status, Status::Cached | Status::WouldRun)).filter_map(|r| r.key));
        }
    }
    Ok(keys)
}

pub(super) fn gc(cache: &Cache, keep: &crate::gc::Keep, dry_run: bool) -> Result<u8, Fail> {
    let plan = crate::gc::plan(cache, keep);
    let describe = |e: &Entry| {
        let m = &e.manifest;
        format!("{} ({}/{}, {}, {})", m.key.short(), m.pipeline, m.stage, m.ingredients.kind, human_size(m.size()))
    };
    let (n, size) = (plan.remove.len(), human_size(plan.size()));
    println!(
        "{} {n} entries ({size}) and {} leftovers of dead runs:",
        if dry_run { "would remove" } else { "removing" },
        plan.leftovers.len()
    );
    for e in &plan.remove {
        println!("  {}", describe(e));
    }
    for path in &plan.leftovers {
        println!("  {}", path.display());
    }
    for e in &plan.unfinished {
        println!("keeping {}: made by a run that did not finish", describe(e));
    }
    for (path, note) in &plan.resumable {
        println!("keeping {}: {}", path.display(), resumable(note));
    }
    report_unreadable(&plan.unreadable);
    if dry_run {
        return Ok(0);
    }
    let mut freed = 0;
    let mut removed = 0;
    for e in &plan.remove {
        let m = &e.manifest;
        if cache.remove(&m.key).map_err(|e| Fail::error(&e, 1))? {
            freed += m.size();
            removed += 1;
        } else {
            println!("kept {}: a run is building it", m.key.short());
        }
    }
    for orphan in &plan.leftovers {
        crate::cache::remove_tree(orphan).map_err(|e| Fail::error(&e, 1))?;
    }
    println!("removed {removed} entries, freed {}", human_size(freed));
    Ok(0)
}

/// How `gc` and `fsck` describe resumable work.
fn resumable(note: &crate::cache::ResumeNote) -> String {
    format!(
        "resumable work of stage `{}` ({}, pipeline `{}`): its next run continues from it",
        note.stage, note.kind, note.pipeline
    )
}

pub(super) fn fsck(cache: &Cache, repair: bool) -> Result<u8, Fail> {
    for (path, note) in cache.resumable() {
        println!("{:<9} {}: {}", "resumable", path.display(), resumable(&note));
    }
    let (entries, findings) = crate::gc::fsck(cache);
    for f in &findings {
        println!("{:<9} {}: {}", f.what, f.path.display(), f.detail);
    }
    if findings.is_empty() {
        println!("fsck: {entries} entries hashed, all match their manifests; nothing partial or orphaned");
        return Ok(0);
    }
    if !repair {
        println!("fsck: {} problem(s); `wspace fsck --repair` removes them (the next run recomputes)", findings.len());
        return Ok(1);
    }
    let mut left = 0;
    for f in &findings {
        let gone = match &f.key {
            Some(key) => cache.remove(key).map_err(|e| Fail::error(&e, 1))?,
            None => crate::cache::remove_tree(&f.path).map(|_| true).map_err(|e| Fail::error(&e, 1))?,
        };
        if !gone {
            println!("kept {}: a run is building it", f.path.display());
            left += 1;
        }
    }
    println!("fsck: removed {} of {} problem(s)", findings.len() - left, findings.len());
    Ok(if left == 0 { 0 } else { 1 })
}
