//! `wspace explain STAGE`: a stage's key ingredients, its inputs' state, and what changed since its
//! last recorded run.

use crate::exec::{StageReport, Status};
use crate::progress::Ui;
use crate::registry::Registry;

use super::args::OneStage;
use super::args::PipelineArgs;
use super::fail::Fail;

pub(super) fn explain(p: &PipelineArgs, registry: &Registry, stage: &str) -> Result<u8, Fail> {
    let one = OneStage::open(p, registry, stage)?;
    let (pipeline, cache, i) = (&one.pipeline, &one.cache, one.index);
    let ui = Ui::new(true);
    let runner = one.runner(&ui, 1);
    let st = &pipeline.stages[i];
    println!("stage `{}` (kind `{}`, code version {})", st.name, st.kind.name(), st.kind.version());
    println!("parameters:");
    for (k, v) in &st.params {
        println!("  {k} = {v}");
    }
    let plan = runner.plan(&pipeline.select(&[stage.to_string()]).map_err(|d| Fail(d.to_string(), 2))?);
    let upstream: std::collections::BTreeMap<&str, &StageReport> = plan.iter().map(|r| (r.name.as_str(), r)).collect();
    if !st.inputs.is_empty() {
        println!("inputs:");
        for (slot, name) in pipeline.upstream_names(i) {
            let state = match upstream.get(name.as_str()) {
                Some(r) if r.status == Status::Cached => "cached".to_string(),
                Some(r) => format!("{} first", r.status.as_str()),
                None => "?".into(),
            };
            println!("  {slot} ← stage `{name}` ({state})");
        }
    }
    let last = cache.last_run(&pipeline.name, stage);
    let since_last = |now: &crate::key::Ingredients| match &last {
        None => "no earlier run recorded".to_string(),
        Some(rec) => crate::reason::since(&rec.ingredients, now).unwrap_or_else(|| "nothing".into()),
    };
    match runner.cached_entry(i) {
        Ok((entry, ingredients)) => {
            for (name, f) in &ingredients.files {
                println!("file {name}: {} ({})", f.path, f.hash);
            }
            println!("key: {}", entry.manifest.key);
            println!("status: cached ({})", entry.out().display());
            println!("changed since the last recorded run: {}", since_last(&ingredients));
        }
        Err(_) => {
            let Some(r) = plan.iter().find(|r| r.name == stage) else { return Ok(0) };
            match &r.key {
                Some(k) => println!("key: {k}"),
                None => println!("key: not known until the inputs are computed"),
            }
            println!("status: {}", r.status.as_str());
            if r.status == Status::Pending {
                println!("why: {}", r.reason);
                // Compare what is known now: the parameters and files (inputs as last recorded).
                if let Some(rec) = &last {
                    let known = crate::key::Ingredients::of(st, rec.ingredients.inputs.clone(), &pipeline.workdir)
                        .map_err(|e| Fail::error(&e, 1))?;
                    println!("changed since the last recorded run (besides inputs): {}", since_last(&known));
                }
            } else {
                println!("changed since the last recorded run: {}", r.reason);
            }
        }
    }
    if let Some(rec) = &last {
        println!("last recorded run: key {} at unix time {}", rec.key.short(), rec.time);
    }
    Ok(0)
}
