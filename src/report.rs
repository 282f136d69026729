//! What a run prints: the summary table, the `--format json` object, the documents stages name with
//! their headline numbers (read by [`crate::metrics`]), and the sweep table (CSV; its page of plots is
//! [`crate::sweep_page`]).

use crate::exec::StageReport;
use crate::metrics;
use crate::pipeline::Override;
use std::collections::{BTreeMap, BTreeSet};

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

/// A headline value as printed: numbers to 4 significant digits, strings as they are.
fn headline_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() && x != 0.0 && x.is_finite() => {
                let digits = (3 - x.abs().log10().floor() as i32).clamp(0, 8) as usize;
                format!("{x:.digits$}")
            }
            _ => n.to_string(),
        },
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `STAGE: PATH` for every report that names a document, each followed by its headline values
/// (at most five), indented; empty when no stage names one.
pub fn documents(reports: &[StageReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let Some(doc) = &r.document else { continue };
        out.push_str(&format!("{}: {}\n", r.name, doc.display()));
        if let Some(h) = &r.headline {
            let rows: Vec<Vec<String>> = h.iter().take(5).map(|(k, v)| vec![format!("  {k}"), headline_value(v)]).collect();
            if !rows.is_empty() {
                let t = table(&["", ""], &rows);
                out.push_str(t.split_once('\n').map_or("", |x| x.1));
                out.push('\n');
            }
        }
    }
    out
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
                for (k, v) in metrics::scalars(out) {
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

/// The table as CSV (the `csv` crate: RFC 4180 quoting where a field needs it — a comma, a quote, `\r`
/// or `\n` — and `\n` line ends).
pub fn csv(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
    for record in std::iter::once(headers).chain(rows.iter().map(Vec::as_slice)) {
        w.write_record(record).expect("writing to memory");
    }
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("UTF-8 in, UTF-8 out")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_named_with_its_headline() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        std::fs::write(out.join("page.html"), "<p>hi</p>").unwrap();
        let metrics = r#"{"document": "page.html", "headline": {"accuracy": 0.38214, "models": 100, "best": "nn"}}"#;
        std::fs::write(out.join("metrics.json"), metrics).unwrap();
        let (path, headline) = metrics::document(out).unwrap();
        assert!(path.ends_with("page.html") && path.is_absolute());
        let report = StageReport {
            name: "report".into(),
            kind: "report".into(),
            status: crate::exec::Status::Ran,
            key: None,
            seconds: 0.0,
            reason: String::new(),
            output: Some(out.to_path_buf()),
            document: Some(path.clone()),
            headline,
        };
        let text = documents(std::slice::from_ref(&report));
        assert_eq!(text, format!("report: {}\n  accuracy  0.3821\n  best      nn\n  models    100\n", path.display()));
        // A path outside the output, or a missing file, names nothing.
        for bad in [r#"{"document": "../x.html"}"#, r#"{"document": "/etc/passwd"}"#, r#"{"document": "none.html"}"#] {
            std::fs::write(out.join("metrics.json"), bad).unwrap();
            assert!(metrics::document(out).is_none(), "{bad}");
        }
    }

    #[test]
    fn table_aligns_and_csv_quotes() {
        let t = table(&["a", "long"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    long\nxyz  1");
        let c = csv(&["x".into()], &[vec!["a,b".into()], vec!["q\"".into()], vec!["cr\r".into()], vec!["plain".into()]]);
        assert_eq!(c, "x\n\"a,b\"\n\"q\"\"\"\n\"cr\r\"\nplain\n");
    }
}
