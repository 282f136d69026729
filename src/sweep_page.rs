//! The sweep page: `sweeps/<name>.html` beside the sweep table, one SVG plot per numeric metric
//! against the swept parameter.
//!
//! # What is plotted
//! - x: the first swept parameter whose values are all numbers (log scale when all are positive and
//!   span a factor of 8 or more, as component counts 2…64 do); without one, the variant number. The
//!   other swept parameters split each plot into one series per combination of their values.
//! - y: every metric column whose values are numbers (empty cells are gaps) and not all equal. Columns
//!   `stage.VARIANT.rest` of three or more segments that differ only in their second segment (e.g.
//!   `evaluate.pca.real.agreement` and `evaluate.pca_ae.real.agreement`) share one plot, one series per
//!   variant, titled `stage.*.rest`, and come first; every other metric has a plot of its own.
//! - Metrics equal in every variant are listed in a table instead; text columns are left out.
//!
//! The page is generic: the runner knows nothing of what a metric means, so an axis title is the
//! metric's (or the parameter's) name as it appears in the table.

use std::collections::BTreeMap;
use std::path::Path;

use wspace_plot::{Chart, Series, CYCLE};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn number(cell: &str) -> Option<f64> {
    cell.trim().parse::<f64>().ok()
}

/// One plot: its title and `(series suffix, column)` members.
struct Group {
    title: String,
    members: Vec<(String, usize)>,
}

/// Groups metric columns (see the module doc).
fn groups(headers: &[String], metrics: &[usize]) -> Vec<Group> {
    let mut by_pattern: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
    for &c in metrics {
        let parts: Vec<&str> = headers[c].split('.').collect();
        if parts.len() >= 3 {
            let mut p = parts.clone();
            p[1] = "*";
            by_pattern.entry(p.join(".")).or_default().push((parts[1].to_string(), c));
        }
    }
    let mut out: Vec<Group> = Vec::new();
    let mut grouped = vec![false; headers.len()];
    for (pattern, members) in by_pattern {
        if members.len() >= 2 {
            members.iter().for_each(|(_, c)| grouped[*c] = true);
            out.push(Group { title: pattern, members });
        }
    }
    for &c in metrics.iter().filter(|&&c| !grouped[c]) {
        out.push(Group { title: headers[c].clone(), members: vec![(String::new(), c)] });
    }
    // Plots comparing variants of one metric first (e.g. agreement of pca vs pca_ae), then the rest.
    out.sort_by(|a, b| (a.members.len() == 1, &a.title).cmp(&(b.members.len() == 1, &b.title)));
    out
}

/// The HTML page for a sweep table whose first `params` columns are the swept parameters.
pub fn page(pipeline: &str, table: &Path, params: usize, headers: &[String], rows: &[Vec<String>]) -> String {
    let params = params.min(headers.len());
    fn cell(r: &[String], c: usize) -> &str {
        r.get(c).map(String::as_str).unwrap_or("")
    }
    let numeric = |c: usize| rows.iter().all(|r| number(cell(r, c)).is_some());
    let x_col = (0..params).find(|&c| numeric(c));
    let xs: Vec<f64> =
        rows.iter().enumerate().map(|(i, r)| x_col.and_then(|c| number(cell(r, c))).unwrap_or(i as f64 + 1.0)).collect();
    let x_title = x_col.map_or("variant".to_string(), |c| headers[c].clone());
    let positive = xs.iter().all(|&x| x > 0.0);
    let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let log_x = x_col.is_some() && positive && hi / lo >= 8.0;
    // Series split: the other swept parameters' values.
    let split = |r: &Vec<String>| -> String {
        (0..params)
            .filter(|&c| Some(c) != x_col)
            .map(|c| format!("{} = {}", headers[c], cell(r, c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut metric_cols = Vec::new();
    let mut constant = Vec::new();
    for (c, header) in headers.iter().enumerate().skip(params) {
        let values: Vec<&str> = rows.iter().map(|r| cell(r, c)).filter(|v| !v.is_empty()).collect();
        if values.is_empty() || !values.iter().all(|v| number(v).is_some()) {
            continue;
        }
        if values.iter().all(|v| *v == values[0]) {
            constant.push((header.clone(), values[0].to_string()));
        } else {
            metric_cols.push(c);
        }
    }

    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sweep {name}</title><style>\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}\
         table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         figure svg{{max-width:100%;height:auto;display:block}}</style></head><body>\n\
         <h1>Sweep <code>{name}</code></h1>\n<p>{n} variants over {swept}; the table: <a href=\"{csv}\">{csv}</a>. \
         One plot per metric that changes across the variants.</p>\n",
        name = esc(pipeline),
        n = rows.len(),
        swept = headers[..params].iter().map(|h| format!("<code>{}</code>", esc(h))).collect::<Vec<_>>().join(", "),
        csv = esc(&table.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()),
    );
    for g in groups(headers, &metric_cols) {
        let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (suffix, c) in &g.members {
            for (r, &x) in rows.iter().zip(&xs) {
                let name = [suffix.as_str(), &split(r)].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join(", ");
                by_series.entry(name).or_default().push((x, number(cell(r, *c)).unwrap_or(f64::NAN)));
            }
        }
        let mut chart = Chart::new(format!("{} vs {x_title}", g.title), x_title.clone(), g.title.clone());
        if log_x {
            chart = chart.x_log();
        }
        for (i, (name, mut points)) in by_series.into_iter().enumerate() {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let name = if name.is_empty() { g.title.clone() } else { name };
            chart = chart.series(Series::new(name, CYCLE[i % CYCLE.len()], wspace_plot::Mark::LinePoints, points));
        }
        match chart.to_svg() {
            Ok(svg) => html.push_str(&format!("<figure class=\"chart\">{svg}</figure>\n")),
            Err(e) => html.push_str(&format!("<p>{}: {}</p>\n", esc(&g.title), esc(&e.to_string()))),
        }
    }
    if !constant.is_empty() {
        html.push_str("<h2>The same in every variant</h2>\n<table>");
        for (k, v) in constant {
            html.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(&k), esc(&v)));
        }
        html.push_str("</table>\n");
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// The (trimmed) contents of the `<text>` elements, and of those of one class.
    fn texts(html: &str, class: Option<&str>) -> Vec<String> {
        let open = class.map_or("<text".to_string(), |c| format!("<text class=\"{c}\""));
        html.split(&open).skip(1).filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string())).collect()
    }

    #[test]
    fn one_plot_per_changing_metric_variants_share_one() {
        let headers = s(&[
            "pca.components",
            "ev.pca.real.agreement",
            "ev.pca_ae.real.agreement",
            "ae.val_loss",
            "zoo.models",
            "r.document",
        ]);
        let rows = vec![
            s(&["2", "0.34", "0.33", "0.9", "100", "report.html"]),
            s(&["16", "0.5", "0.4", "0.5", "100", "report.html"]),
            s(&["64", "0.8", "", "0.2", "100", "report.html"]),
        ];
        let html = page("ablation", Path::new("sweeps/ablation.csv"), 1, &headers, &rows);
        assert_eq!(html.matches("<svg").count(), 2, "ev.*.real.agreement and ae.val_loss");
        let all = texts(&html, None);
        for want in ["ev.*.real.agreement vs pca.components", "pca_ae", "pca", "ae.val_loss"] {
            assert!(all.iter().any(|t| t == want), "{want} in {all:?}");
        }
        assert_eq!(texts(&html, Some("x-title")), ["pca.components", "pca.components"], "the x axis is the swept parameter");
        assert_eq!(texts(&html, Some("y-title")), ["ev.*.real.agreement", "ae.val_loss"], "grouped plots first");
        assert!(html.contains("<th>zoo.models</th><td>100</td>"), "constants are listed");
        assert!(!html.contains("document"), "text columns are left out");
        assert!(html.contains("<a href=\"ablation.csv\">"));
        assert_eq!(page("ablation", Path::new("sweeps/ablation.csv"), 1, &headers, &rows), html, "deterministic");
    }

    #[test]
    fn a_second_parameter_splits_the_series_and_text_parameters_fall_back_to_the_variant_number() {
        let headers = s(&["a.k", "b.mode", "c.m"]);
        let rows = vec![s(&["1", "x", "1"]), s(&["2", "x", "2"]), s(&["1", "y", "3"]), s(&["2", "y", "5"])];
        let html = page("p", Path::new("p.csv"), 2, &headers, &rows);
        let all = texts(&html, None);
        assert!(all.iter().any(|t| t == "b.mode = x") && all.iter().any(|t| t == "b.mode = y"), "{all:?}");
        let headers = s(&["b.mode", "c.m"]);
        let rows = vec![s(&["x", "1"]), s(&["y", "2"])];
        let html = page("p", Path::new("p.csv"), 1, &headers, &rows);
        assert_eq!(texts(&html, Some("x-title")), ["variant"]);
    }
}
