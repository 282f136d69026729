//! `wspace verify STAGE`: recompute a cached stage and compare output hashes, file by file.

use std::io::IsTerminal;

use crate::progress::Ui;
use crate::registry::Registry;

use super::args::OneStage;
use super::{Fail, PipelineArgs};

pub(super) fn verify(p: &PipelineArgs, registry: &Registry, stage: &str, jobs: usize) -> Result<u8, Fail> {
    let one = OneStage::open(p, registry, stage)?;
    let ui = Ui::new(!std::io::stderr().is_terminal());
    let (entry, files) = one.runner(&ui, jobs).recompute(one.index).map_err(|e| Fail(format!("error: {e}"), 1))?;
    let recomputed = crate::digest::tree_hash(&files);
    let m = &entry.manifest;
    println!("cached     {}", m.output_hash);
    println!("recomputed {recomputed}");
    if recomputed == m.output_hash {
        println!("reproducible: stage `{stage}` recomputed to the same {} files", files.len());
        return Ok(0);
    }
    let old: std::collections::BTreeMap<&str, &str> = m.files.iter().map(|f| (f.path.as_str(), f.blake3.as_str())).collect();
    let new: std::collections::BTreeMap<&str, &str> = files.iter().map(|f| (f.path.as_str(), f.blake3.as_str())).collect();
    for path in old.keys().chain(new.keys()).collect::<std::collections::BTreeSet<_>>() {
        match (old.get(path), new.get(path)) {
            (Some(a), Some(b)) if a != b => println!("  differs: {path}"),
            (Some(_), None) => println!("  missing in the recomputation: {path}"),
            (None, Some(_)) => println!("  new in the recomputation: {path}"),
            _ => {}
        }
    }
    println!("NOT reproducible: stage `{stage}` gave different output");
    Ok(1)
}
