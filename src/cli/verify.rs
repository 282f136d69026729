//! `wspace verify STAGE`: recompute a cached stage and compare its output with the cached one, file by
//! file; where the bytes differ, number by number ([`crate::compare`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;

use crate::compare::{compare_files, Comparison, Tolerance};
use crate::progress::Ui;
use crate::registry::Registry;

use super::args::OneStage;
use super::args::PipelineArgs;
use super::fail::Fail;

/// Exit status: 0 the same bytes; 3 different bytes, every number within `tol`; 1 anything else.
pub(super) fn verify(p: &PipelineArgs, registry: &Registry, stage: &str, jobs: usize, tol: Tolerance) -> Result<u8, Fail> {
    let one = OneStage::open(p, registry, stage)?;
    let ui = Ui::new(!std::io::stderr().is_terminal());
    let (entry, recomputed) = one.runner(&ui, jobs).recompute(one.index).map_err(|e| Fail::error(&e, 1))?;
    let files = &recomputed.files;
    let hash = crate::digest::tree_hash(files);
    let m = &entry.manifest;
    println!("cached     {}", m.output_hash);
    println!("recomputed {hash}");
    if hash == m.output_hash {
        println!("reproducible: stage `{stage}` recomputed to the same {} files", files.len());
        return Ok(0);
    }
    let old: BTreeMap<&str, &str> = m.files.iter().map(|f| (f.path.as_str(), f.blake3.as_str())).collect();
    let new: BTreeMap<&str, &str> = files.iter().map(|f| (f.path.as_str(), f.blake3.as_str())).collect();
    let within = format!("rtol {:e}, atol {:e}", tol.rtol, tol.atol);
    let mut close_only = true;
    for path in old.keys().chain(new.keys()).collect::<BTreeSet<_>>() {
        match (old.get(path), new.get(path)) {
            (Some(a), Some(b)) if a != b => {
                let found =
                    compare_files(&entry.out().join(path), &recomputed.out().join(path), &tol).map_err(|e| Fail::error(&e, 1))?;
                let verdict = match found {
                    Comparison::Identical => "different bytes, the same numbers".to_string(),
                    Comparison::Close(d) => format!("numerically equal within {within} ({d})"),
                    Comparison::Far(d) => {
                        close_only = false;
                        format!("different ({d})")
                    }
                    Comparison::Structure(why) => {
                        close_only = false;
                        format!("different ({why})")
                    }
                };
                println!("  {path}: {verdict}");
            }
            (Some(_), None) => {
                close_only = false;
                println!("  {path}: missing in the recomputation");
            }
            (None, Some(_)) => {
                close_only = false;
                println!("  {path}: new in the recomputation");
            }
            _ => {}
        }
    }
    if close_only {
        println!(
            "numerically equal within {within}: stage `{stage}` recomputed to different bytes, every number within the tolerance"
        );
        Ok(3)
    } else {
        println!("NOT reproducible: stage `{stage}` gave different output");
        Ok(1)
    }
}
