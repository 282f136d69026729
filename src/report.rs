//! What a run prints: the summary table, the `--format json` object, and the sweep table (CSV).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::exec::StageReport;
use crate::pipeline::Override;

/// Left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// stage, kind, status, seconds, short key, reason.
pub fn summary(reports: &[StageReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.kind.clone(),
                r.status.as_str().to_string(),
                format!("{:.2}", r.seconds),
                r.key.as_ref().map(|k| k.short().to_string()).unwrap_or_else(|| "-".into()),
                r.reason.clone(),
            ]
        })
        .collect();
    table(&["stage", "kind", "status", "seconds", "key", "reason"], &rows)
}

/// The scalar values of a stage output's `metrics.json`, nested objects flattened with `.`.
pub fn scalar_metrics(out: &Path) -> BTreeMap<String, String> {
    fn flatten(prefix: &str, v: &serde_json::Value, into: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    flatten(&name, v, into);
                }
            }
            serde_json::Value::Number(n) => {
                into.insert(prefix.to_string(), n.to_string());
            }
            serde_json::Value::Bool(b) => {
                into.insert(prefix.to_string(), b.to_string());
            }
            serde_json::Value::String(s) => {
                into.insert(prefix.to_string(), s.clone());
            }
            _ => {}
        }
    }
    let mut out_map = BTreeMap::new();
    if let Ok(bytes) = std::fs::read(out.join("metrics.json")) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            if v.is_object() {
                flatten("", &v, &mut out_map);
            }
        }
    }
    out_map
}

/// One row per variant: its overrides, then `stage.metric` for every scalar metric its stages published.
pub fn sweep_rows(variants: &[(Vec<Override>, Vec<StageReport>)]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut rows: Vec<BTreeMap<String, String>> = Vec::new();
    let mut override_cols: Vec<String> = Vec::new();
    let mut metric_cols = BTreeSet::new();
    for (overrides, reports) in variants {
        let mut row = BTreeMap::new();
        for o in overrides {
            if !override_cols.contains(&o.address()) {
                override_cols.push(o.address());
            }
            row.insert(o.address(), o.value.scalar_text().unwrap_or_else(|| o.value.to_string()));
        }
        for r in reports {
            if let Some(out) = &r.output {
                for (k, v) in scalar_metrics(out) {
                    let col = format!("{}.{k}", r.name);
                    metric_cols.insert(col.clone());
                    row.insert(col, v);
                }
            }
        }
        rows.push(row);
    }
    let headers: Vec<String> = override_cols.into_iter().chain(metric_cols).collect();
    let cells = rows.iter().map(|row| headers.iter().map(|h| row.get(h).cloned().unwrap_or_default()).collect()).collect();
    (headers, cells)
}

/// RFC 4180 quoting where needed.
pub fn csv(headers: &[String], rows: &[Vec<String>]) -> String {
    let cell = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut out = headers.iter().map(|h| cell(h)).collect::<Vec<_>>().join(",");
    out.push('\n');
    for row in rows {
        out.push_str(&row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_csv_quotes() {
        let t = table(&["a", "long"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    long\nxyz  1");
        let c = csv(&["x".into()], &[vec!["a,b".into()], vec!["q\"".into()]]);
        assert_eq!(c, "x\n\"a,b\"\n\"q\"\"\"\n");
    }
}
