//! `wspace ls`: the cached entries, their sizes and last use.

use serde_json::json;

use crate::cache::{Cache, Entry};
use crate::report;

use super::args::Format;
use super::fail::Fail;
use super::fmt::{ago, human_size, report_unreadable};

pub(super) fn last_use(cache: &Cache) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    for line in cache.history() {
        for k in line.keys {
            out.insert(k.0, line.time);
        }
    }
    out
}

pub(super) fn ls(cache: &Cache, format: Format) -> Result<u8, Fail> {
    let used = last_use(cache);
    let crate::cache::Scan { entries, unreadable } = cache.scan();
    if format == Format::Json {
        let mut rows: Vec<_> = entries
            .iter()
            .map(|e| {
                let m = &e.manifest;
                json!({"key": m.key, "stage": m.stage, "pipeline": m.pipeline, "kind": m.ingredients.kind, "size": m.size(), "created": m.created, "last_used": used.get(&m.key.0).copied().unwrap_or(m.created)})
            })
            .collect();
        rows.extend(unreadable.iter().map(|(dir, why)| json!({"path": dir, "unreadable": why})));
        println!("{}", json!(rows));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e: &Entry| {
            let m = &e.manifest;
            let t = used.get(&m.key.0).copied().unwrap_or(m.created);
            vec![
                m.key.short().to_string(),
                m.ingredients.kind.clone(),
                format!("{}/{}", m.pipeline, m.stage),
                human_size(m.size()),
                ago(t),
            ]
        })
        .collect();
    println!("{}", report::table(&["key", "kind", "pipeline/stage", "size", "last used"], &rows));
    let total: u64 = entries.iter().map(|e| e.manifest.size()).sum();
    println!("{} entries, {} in {}", entries.len(), human_size(total), cache.root().display());
    report_unreadable(&unreadable);
    Ok(0)
}
