//! `wspace show STAGE`: the cached result of a stage — its files and metrics.

use serde_json::json;

use crate::progress::Ui;
use crate::registry::Registry;

use super::args::OneStage;
use super::args::{Format, PipelineArgs};
use super::fail::Fail;

pub(super) fn show(p: &PipelineArgs, registry: &Registry, stage: &str, format: Format) -> Result<u8, Fail> {
    let one = OneStage::open(p, registry, stage)?;
    let cache = &one.cache;
    let ui = Ui::new(true);
    let (entry, _) = one.runner(&ui, 1).cached_entry(one.index).map_err(|e| Fail::error(&e, 1))?;
    cache.verify(&entry).map_err(|bad| {
        Fail(format!("error: the cached result of stage `{stage}` is corrupt ({bad}); the next `wspace run` recomputes it"), 1)
    })?;
    let out = std::fs::canonicalize(entry.out()).unwrap_or(entry.out());
    let metrics = crate::metrics::read(&out).unwrap_or(json!({}));
    let m = &entry.manifest;
    if format == Format::Json {
        let files: Vec<_> =
            m.files.iter().map(|f| json!({"path": out.join(&f.path), "size": f.size, "blake3": f.blake3})).collect();
        println!(
            "{}",
            json!({"stage": stage, "kind": m.ingredients.kind, "key": m.key, "output_hash": m.output_hash, "output": out, "seconds": m.seconds, "files": files, "metrics": metrics})
        );
    } else {
        for name in ["report.html", "index.html"] {
            if m.files.iter().any(|f| f.path == name) {
                println!("{}", out.join(name).display());
            }
        }
        println!("stage `{stage}` (kind `{}`), key {}", m.ingredients.kind, m.key);
        println!("output: {}", out.display());
        for f in &m.files {
            println!("  {}  ({} bytes)", out.join(&f.path).display(), f.size);
        }
        if metrics.as_object().is_some_and(|o| !o.is_empty()) {
            println!("metrics: {}", serde_json::to_string_pretty(&metrics).unwrap_or_default());
        }
    }
    Ok(0)
}
