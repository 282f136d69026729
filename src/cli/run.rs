//! `wspace run` and `wspace status`: every sweep variant of a pipeline, the summary, the sweep table
//! and page, the run history.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cache::{Cache, HistoryLine};
use crate::exec::{Runner, StageReport, Status};
use crate::pipeline::{self, ExecutorKind, Override};
use crate::progress::Ui;
use crate::registry::Registry;
use crate::report;

use super::args::load;
use super::args::{Format, PipelineArgs};
use super::fail::Fail;

pub(super) struct RunOptions {
    pub dry_run: bool,
    pub jobs: usize,
    pub format: Format,
    pub sweep_table: Option<PathBuf>,
    pub executor: Option<ExecutorKind>,
    pub quiet: bool,
}

pub(super) fn run(p: &PipelineArgs, registry: &Registry, targets: &[String], opts: RunOptions) -> Result<u8, Fail> {
    let RunOptions { dry_run, jobs, format, sweep_table, executor, quiet } = opts;
    let (mut pipeline, overrides) = load(p, registry)?;
    if let Some(kind) = executor {
        pipeline.executor.kind = kind;
    }
    if !dry_run {
        crate::interrupt::catch();
    }
    let mask = pipeline.select(targets).map_err(|d| Fail(d.to_string(), 2))?;
    let cache = Cache::new(&p.cache.cache);
    let ui = Ui::new(dry_run || quiet);
    let variants = pipeline.variants();
    let mut results: Vec<(Vec<Override>, Vec<StageReport>)> = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (n, variant) in variants.iter().enumerate() {
        // `--set` applies on top of every sweep variant.
        let all: Vec<Override> = variant.iter().chain(&overrides).cloned().collect();
        let vp = pipeline.with_overrides(&all).map_err(|d| Fail(d.to_string(), 2))?;
        if variants.len() > 1 {
            let desc = variant.iter().map(|o| format!("{} = {}", o.address(), o.value)).collect::<Vec<_>>().join(", ");
            ui.line(&format!("── variant {}/{}: {desc}", n + 1, variants.len()));
        }
        // Stages that do not stop within a second of an interrupt: the summary so far, then exit.
        let abandon = |reports: Vec<StageReport>| {
            match format {
                Format::Text => println!("{}", report::summary(&reports)),
                Format::Json => println!(
                    "{}",
                    json!({"pipeline": pipeline.name, "variants": [{"overrides": pipeline::sweep::overrides_json(variant), "stages": reports}]})
                ),
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::process::exit(crate::interrupt::exit_code().unwrap_or(130).into());
        };
        let runner = Runner { pipeline: &vp, cache: &cache, ui: &ui, jobs, on_abandon: Some(&abandon) };
        let reports = if dry_run { runner.plan(&mask) } else { runner.run(&mask) };
        if !dry_run {
            used.extend(reports.iter().filter_map(|r| r.key.clone()));
            if mask.contains(&false) {
                // The stages left out are still the pipeline's: what they resolve to stays wanted.
                let all = runner.plan(&vec![true; vp.stages.len()]);
                used.extend(all.into_iter().filter(|r| r.status == Status::Cached).filter_map(|r| r.key));
            }
        }
        if format == Format::Text {
            if variants.len() > 1 {
                println!(
                    "variant {}/{}: {}",
                    n + 1,
                    variants.len(),
                    serde_json::Value::Object(pipeline::sweep::overrides_json(variant))
                );
            }
            println!("{}", report::summary(&reports));
            print!("{}", report::documents(&reports));
        }
        results.push((variant.clone(), reports));
        if crate::interrupt::requested() {
            break;
        }
    }
    // An interrupted run is not a finished one: `gc` keeps what it made (see `crate::gc`).
    if !dry_run && !crate::interrupt::requested() {
        let file = std::fs::canonicalize(&p.file).unwrap_or_else(|_| p.file.clone());
        let line = HistoryLine {
            time: crate::cache::now(),
            pipeline: pipeline.name.clone(),
            file: Some(file.display().to_string()),
            keys: used.into_iter().collect(),
        };
        if let Err(e) = cache.append_history(&line) {
            ui.line(&format!("warning: cannot append to the run history: {e}"));
        }
    }
    let mut table_path = None;
    if variants.len() > 1 && !dry_run {
        let (headers, rows) = report::sweep_rows(&results);
        let path = sweep_table.unwrap_or_else(|| Path::new("sweeps").join(format!("{}.csv", pipeline.name)));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Fail(format!("error: {}: {e}", dir.display()), 1))?;
        }
        std::fs::write(&path, report::csv(&headers, &rows)).map_err(|e| Fail(format!("error: {}: {e}", path.display()), 1))?;
        let params: std::collections::BTreeSet<String> =
            results.iter().flat_map(|(o, _)| o.iter().map(Override::address)).collect();
        let page_path = path.with_extension("html");
        let page = crate::sweep_page::page(&pipeline.name, &path, params.len(), &headers, &rows);
        std::fs::write(&page_path, page).map_err(|e| Fail(format!("error: {}: {e}", page_path.display()), 1))?;
        if format == Format::Text {
            let h: Vec<&str> = headers.iter().map(String::as_str).collect();
            println!("\nsweep table ({}):\n{}", path.display(), report::table(&h, &rows));
            println!("sweep plots: {}", page_path.display());
        }
        table_path = Some((path, page_path));
    }
    if format == Format::Json {
        let variants: Vec<_> =
            results.iter().map(|(o, r)| json!({"overrides": pipeline::sweep::overrides_json(o), "stages": r})).collect();
        let mut obj = json!({"pipeline": pipeline.name, "variants": variants});
        if let Some((table, page)) = table_path {
            obj["sweep_table"] = json!(table);
            obj["sweep_page"] = json!(page);
        }
        println!("{obj}");
    }
    let failed = results.iter().flat_map(|(_, r)| r).any(|r| matches!(r.status, Status::Failed | Status::Skipped));
    Ok(match crate::interrupt::exit_code() {
        Some(code) => code,
        None if failed => 1,
        None => 0,
    })
}
