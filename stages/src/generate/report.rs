//! The `report` stage: one self-contained HTML page (`report.html`, every figure an inline SVG) plus
//! the report's own figures as SVG files, summarising the whole pipeline from its stages' outputs.
//!
//! # Sections (each present when its inputs are connected)
//! 0. Headline (`method_*`, `samples`, `reconstruction`): one row per sampling method (each
//!    `method_<name>` input, an `evaluate-samples` stage) beside the natural reference, naming the best
//!    method; the table that answers "does conditional sampling work?" — trained, sampled and
//!    baseline rows — and the reconstruction agreement per encoder variant, each number linking to its
//!    section, with a sentence computed from the numbers ([`super::headline`]).
//! 1. Zoo (`zoo`): counts, and histograms of the validation loss and test accuracy per checkpoint
//!    (`zoo_val_loss.svg`, `zoo_test_acc.svg`: early and final checkpoints as two bar series).
//! 2. Weight encoder (`pca`, `autoencoder`): PCA metrics, the autoencoder's loss curve (its `loss.svg`).
//! 3. Reconstruction (`reconstruction`, an `evaluate-reconstruction` stage): the thesis's Table 4.1 —
//!    real-data agreement and output correlation of every reconstruction variant, next to the thesis's
//!    values (agreement 35.7 %, correlation −0.086); its `agreement.svg` and `correlation.svg`.
//! 4. Alignment (`align`): NT-Xent curves, baselines, retrieval, the cosine heat map (its `loss.svg`,
//!    `heatmap.svg`).
//! 5. Weight-latent map (`pca`, `autoencoder`, optionally `align`, `zoo`): the latents projected on
//!    their first two principal components (`latent_map.svg`: early and final checkpoints, and the
//!    align stage's `z_proj` of test-split pairs in the same projection; `latent_map_loss.svg`: the
//!    same points in four validation-loss quartiles).
//! 6. Sampling (`samples`, an `evaluate-samples` stage): samples vs trained, nearest-neighbour,
//!    noisy-neighbour and random baselines; target vs achieved loss; class-order sensitivity (its
//!    `target_vs_achieved.svg`, `accuracy.svg`).
//! 7. Parameters: the configuration each stage recorded in its own output (`zoo.json`, `pca.json`,
//!    `autoencoder.json`, `embeddings.json`, `align.json`) and every input's `metrics.json` scalars.
//!
//! Every figure is a `<figure class="chart">` holding the SVG inline (text selectable) and a caption;
//! its axis titles carry the classes `x-title` and `y-title` (see `wspace_plot`).
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `report.html` | the page |
//! | `*.svg` | every figure of the page, also as a file (input stages' figures prefixed with the slot) |
//! | `metrics.json` | `sections` (how many were written), `document` = `"report.html"` and `headline` (a few of the headline numbers: [`super::headline::headline_metrics`]); the runner names the document and prints the headline at the end of `wspace run` |

use std::path::Path;

use serde_json::{json, Value as Json};
use wspace_stage_api::{Inputs, ParamSpec, StageContext, StageError, StageKind};

use super::headline::{self, Cell, Unit};
use crate::plot::{self, Chart, Series};
use crate::tensors::{self, TensorFile};
use crate::weights::linalg;
use crate::weights::pca::PcaMeta;
use crate::zoo::store::{Checkpoint, Zoo, ZooRow};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn fmt(v: &Json) -> String {
    match v {
        Json::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => format!("{x:.4}"),
            _ => n.to_string(),
        },
        Json::Null => "–".into(),
        Json::String(s) => esc(s),
        other => esc(&other.to_string()),
    }
}

/// Scalars of a JSON object, flattened with dotted keys (arrays and `distributions` left out).
fn flatten(prefix: &str, v: &Json, out: &mut Vec<(String, String)>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                if k == "distributions" || k == "parameters" && x.is_array() || k == "rows" {
                    continue;
                }
                flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, x, out);
            }
        }
        Json::Array(a) if a.len() > 12 || a.iter().any(|x| x.is_object()) => {}
        other => out.push((prefix.to_string(), fmt(other))),
    }
}

fn table(rows: &[(String, String)]) -> String {
    let mut h = String::from("<table>");
    for (k, v) in rows {
        h.push_str(&format!("<tr><th>{}</th><td>{v}</td></tr>", esc(k)));
    }
    h + "</table>"
}

fn read_json(path: &Path) -> Option<Json> {
    tensors::read_json::<Json>(path).ok()
}

fn get<'a>(v: &'a Json, path: &str) -> &'a Json {
    tensors::json_path(v, path).unwrap_or(&Json::Null)
}

/// Section anchors (the headline's links point at them).
const ZOO: &str = "zoo";
const ENCODER: &str = "weight-encoder";
const RECONSTRUCTION: &str = "reconstruction";
const ALIGNMENT: &str = "alignment";
const LATENT_MAP: &str = "latent-map";
const SAMPLING: &str = "sampling";
const PARAMETERS: &str = "parameters";

struct Page {
    html: String,
    out: std::path::PathBuf,
    sections: Vec<(String, String)>,
}

impl Page {
    fn section(&mut self, id: &str, title: &str) {
        self.sections.push((id.to_string(), title.to_string()));
        self.html.push_str(&format!("<h2 id=\"{id}\">{}. {}</h2>\n", self.sections.len(), esc(title)));
    }
    fn p(&mut self, text: &str) {
        self.html.push_str(&format!("<p>{text}</p>\n"));
    }
    fn raw(&mut self, html: &str) {
        self.html.push_str(html);
    }
    /// Inlines an SVG document and writes it as `name`.
    fn svg(&mut self, name: &str, svg: &str, caption: &str) -> Result<(), StageError> {
        tensors::write(&self.out.join(name), svg.as_bytes())?;
        let body = svg.find("<svg").map_or(svg, |i| &svg[i..]);
        self.html.push_str(&format!(
            "<figure class=\"chart\" id=\"fig-{}\">{body}<figcaption>{}</figcaption></figure>\n",
            esc(name.trim_end_matches(".svg")),
            esc(caption)
        ));
        Ok(())
    }
    /// An input stage's SVG figure, when it wrote one.
    fn svg_file(&mut self, src: &Path, name: &str, caption: &str) -> Result<(), StageError> {
        match std::fs::read_to_string(src) {
            Ok(svg) => self.svg(name, &svg, caption),
            Err(_) => Ok(()),
        }
    }
    fn chart(&mut self, name: &str, chart: &Chart, caption: &str) -> Result<(), StageError> {
        let svg = chart.to_svg().map_err(|e| StageError::msg(format!("{name}: {e}")))?;
        self.svg(name, &svg, caption)
    }
}

/// The first two principal axes of `rows` (`n × k`), by the project's PCA ([`linalg`]): `(mean, axis1,
/// axis2)`; an axis the rows do not span is zero.
fn principal_axes(rows: &[f32], k: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = rows.len() / k.max(1);
    let fit = linalg::Centred::new(rows.iter().map(|&x| x as f64).collect(), n, k).fit(linalg::ComponentRule::Count(2));
    let axis = |i: usize| fit.components.get(i * k..(i + 1) * k).map_or_else(|| vec![0.0; k], <[f64]>::to_vec);
    (fit.mean.clone(), axis(0), axis(1))
}

fn f32_tensor(path: &Path, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
    TensorFile::open(path).ok()?.f32(name).ok().map(|t| (t.shape, t.values))
}

/// A headline cell: the number linking to `section`, "—" when the pipeline does not compute it.
fn headline_cell(c: &Cell, unit: Unit, section: &str) -> String {
    match c {
        Cell::Value(x) => {
            let text = match unit {
                Unit::Percent => format!("{:.1} %", 100.0 * x),
                Unit::Plain if x.abs() >= 1e4 => format!("{x:.2e}"),
                Unit::Plain => format!("{x:.3}"),
            };
            format!("<td><a href=\"#{section}\">{text}</a></td>")
        }
        Cell::Missing => "<td class=\"missing\" title=\"not computed by this pipeline\">—</td>".into(),
        Cell::Undefined => "<td class=\"undefined\" title=\"not defined for this row\"></td>".into(),
    }
}

/// The headline block: the methods table and sentence, the sampling table and sentence, the
/// reconstruction table and sentence.
fn headline_html(samples: Option<&Json>, reconstruction: Option<&Json>, methods: &[(String, Json)]) -> String {
    let mut h = String::from("<section id=\"headline\">\n<h2>Does conditional sampling work?</h2>\n");
    if !methods.is_empty() {
        h.push_str("<table id=\"headline-methods\"><tr><th>sampling method</th>");
        for c in &headline::METHOD_COLUMNS {
            h.push_str(&format!("<th title=\"{}\">{}</th>", esc(c.help), esc(c.title)));
        }
        h.push_str("</tr>");
        for row in headline::method_rows(methods) {
            h.push_str(&format!("<tr><th>{}</th>", esc(&row.label)));
            for (c, col) in row.cells.iter().zip(&headline::METHOD_COLUMNS) {
                h.push_str(&headline_cell(c, col.unit, PARAMETERS));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>\n");
        h.push_str(&format!("<p class=\"verdict\">{}</p>\n", esc(&headline::methods_verdict(methods))));
    }
    let empty = json!({});
    let m = samples.unwrap_or(&empty);
    h.push_str("<table id=\"headline-table\"><tr><th>model</th>");
    for c in &headline::COLUMNS {
        h.push_str(&format!("<th title=\"{}\">{}</th>", esc(c.help), esc(c.title)));
    }
    h.push_str("</tr>");
    for row in headline::rows(m) {
        h.push_str(&format!("<tr><th>{}</th>", esc(row.label)));
        for (c, col) in row.cells.iter().zip(&headline::COLUMNS) {
            h.push_str(&headline_cell(c, col.unit, SAMPLING));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>\n");
    let v = headline::verdict(m);
    h.push_str(&format!(
        "<p class=\"verdict\">{}</p>\n",
        if v.is_empty() { "This pipeline has no evaluate-samples stage connected to the report.".into() } else { esc(&v) }
    ));
    let rec = reconstruction.map(headline::reconstruction_rows).unwrap_or_default();
    if !rec.is_empty() {
        h.push_str("<table id=\"headline-reconstruction\"><tr><th>weight encoder</th><th>agreement with the original</th><th>output correlation</th><th>accuracy</th></tr>");
        for (name, a, c, acc) in &rec {
            h.push_str(&format!(
                "<tr><th>{}</th>{}{}{}</tr>",
                esc(name),
                headline_cell(a, Unit::Percent, RECONSTRUCTION),
                headline_cell(c, Unit::Plain, RECONSTRUCTION),
                headline_cell(acc, Unit::Percent, RECONSTRUCTION)
            ));
        }
        h.push_str("</table>\n");
        if let Some(m) = reconstruction {
            h.push_str(&format!("<p class=\"verdict\">{}</p>\n", esc(&headline::reconstruction_verdict(m))));
        }
    }
    h + "</section>\n"
}

fn zoo_section(page: &mut Page, z: &Path, params: &mut Vec<(String, String)>) -> Result<(), StageError> {
    let zoo = Zoo::load(z)?;
    page.section(ZOO, "Model zoo");
    let ok: Vec<&ZooRow> = zoo.rows.iter().filter(|r| r.ok()).collect();
    let col =
        |c: Checkpoint, f: fn(&ZooRow) -> f64| -> Vec<f64> { ok.iter().filter(|r| r.checkpoint == c).map(|r| f(r)).collect() };
    page.p(&format!(
        "{} models of architecture <code>{}</code>, {} rows (checkpoints {:?}), {} diverged.",
        zoo.meta.models,
        esc(&zoo.meta.arch),
        zoo.rows.len(),
        zoo.meta.checkpoints.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        zoo.rows.len() - ok.len()
    ));
    type Field = fn(&ZooRow) -> f64;
    let figures: [(&str, Field, &str, &str); 2] = [
        ("zoo_val_loss.svg", |r| r.val_loss, "Validation loss of the zoo's models", "validation loss (cross-entropy, nats)"),
        (
            "zoo_test_acc.svg",
            |r| r.test_acc,
            "Test accuracy of the zoo's models on their own tasks",
            "test accuracy (fraction of test images)",
        ),
    ];
    for (name, f, title, x_title) in figures {
        let (e, fi) = (col(Checkpoint::Early, f), col(Checkpoint::Final, f));
        let all = e.iter().chain(&fi).copied().filter(|v| v.is_finite());
        let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        if lo.is_finite() {
            let mut chart = Chart::new(title, x_title, "models per bin");
            if !e.is_empty() {
                chart = chart.series(Series::histogram("early checkpoint", plot::ORANGE, &e, lo, hi, 20));
            }
            if !fi.is_empty() {
                chart = chart.series(Series::histogram("final checkpoint", plot::BLUE, &fi, lo, hi, 20));
            }
            page.chart(name, &chart, &format!("{title}: models per bin, per checkpoint (20 equal bins)."))?;
        }
    }
    let mut rows = Vec::new();
    if let Some(m) = read_json(&z.join("metrics.json")) {
        flatten("", &m, &mut rows);
    }
    page.raw(&table(&rows));
    params.push(("zoo.arch".into(), esc(&zoo.meta.arch)));
    params.push(("zoo.models".into(), zoo.meta.models.to_string()));
    for (k, v) in &zoo.meta.recipe {
        params.push((format!("zoo.{k}"), esc(&v.to_string())));
    }
    Ok(())
}

fn reconstruction_section(page: &mut Page, r: &Path, m: &Json) -> Result<(), StageError> {
    page.section(RECONSTRUCTION, "Reconstruction (the thesis's Table 4.1)");
    page.p("Test-split models against their reconstructions, on their own tasks' real test images (chance agreement ≈ 33 %).");
    let pct = |v: &Json| v.as_f64().map_or("–".into(), |x| format!("{:.1} %", 100.0 * x));
    let mut h = String::from(
        "<table><tr><th>reconstruction</th><th>agreement</th><th>output correlation</th><th>accuracy</th><th>weight MSE</th></tr>",
    );
    for (v, ..) in headline::reconstruction_rows(m) {
        h.push_str(&format!(
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&v),
            pct(get(m, &format!("{v}.real.agreement"))),
            fmt(get(m, &format!("{v}.real.correlation"))),
            pct(get(m, &format!("{v}.real.accuracy"))),
            fmt(get(m, &format!("{v}.weight_mse")))
        ));
    }
    h.push_str("<tr><th>thesis (PCA + AE)</th><td>35.7 %</td><td>−0.086</td><td>–</td><td>–</td></tr></table>");
    page.raw(&h);
    page.p(&format!("Original models' accuracy: {}.", pct(get(m, "original_accuracy"))));
    page.svg_file(
        &r.join("agreement.svg"),
        "reconstruction_agreement.svg",
        "Real-data agreement of each test model with its reconstruction, sorted, one line per reconstruction variant.",
    )?;
    page.svg_file(
        &r.join("correlation.svg"),
        "reconstruction_correlation.svg",
        "Real-data output correlation of each test model with its reconstruction, sorted.",
    )
}

fn alignment_section(page: &mut Page, a: &Path, m: &Json, params: &mut Vec<(String, String)>) -> Result<(), StageError> {
    page.section(ALIGNMENT, "Alignment (shared encoder, NT-Xent)");
    let row = |name: &str, v: &str, b: &str| format!("<tr><th>{name}</th><td>{v}</td><td>{b}</td></tr>");
    let mut h = String::from("<table><tr><th>measure</th><th>trained</th><th>reference</th></tr>");
    h.push_str(&row(
        "val NT-Xent (best epoch)",
        &fmt(get(m, "val_loss")),
        &format!("chance ln N = {}", fmt(get(m, "val_loss_chance"))),
    ));
    h.push_str(&row("val NT-Xent, untrained", &fmt(get(m, "val_loss_untrained")), ""));
    h.push_str(&row("val NT-Xent, pairs shuffled", &fmt(get(m, "val_loss_shuffled")), ""));
    h.push_str(&row("train NT-Xent", &fmt(get(m, "train_loss")), ""));
    h.push_str(&row("test NT-Xent", &fmt(get(m, "test_loss")), &format!("chance {}", fmt(get(m, "test_loss_chance")))));
    for s in ["val", "test"] {
        for k in ["top1", "top5"] {
            h.push_str(&row(
                &format!("{s} retrieval {k}"),
                &fmt(get(m, &format!("{s}_{k}"))),
                &format!("chance {}", fmt(get(m, &format!("{s}_{k}_chance")))),
            ));
        }
    }
    page.raw(&(h + "</table>"));
    page.svg_file(
        &a.join("loss.svg"),
        "align_loss.svg",
        "NT-Xent per epoch, with the untrained model's val loss and chance (ln N_val).",
    )?;
    page.svg_file(
        &a.join("heatmap.svg"),
        "align_heatmap.svg",
        "Cosine of weight latents (rows) and projections (columns) of val pairs, after epoch 1 (left) and at the best epoch (right): a bright diagonal means each prompt finds its own model.",
    )?;
    if let Some(j) = read_json(&a.join("align.json")) {
        flatten("align", &j, params);
    }
    Ok(())
}

fn latent_map_section(page: &mut Page, p: &Path, a: &Path, align: Option<&Path>, zoo: Option<&Path>) -> Result<(), StageError> {
    let meta: Option<PcaMeta> = tensors::read_json(&p.join("pca.json")).ok();
    let (Some(meta), Some((shape, lat))) = (meta, f32_tensor(&a.join("latents.safetensors"), "latents")) else { return Ok(()) };
    let k = shape.get(1).copied().unwrap_or(0);
    if k < 2 || lat.len() / k != meta.rows.len() {
        return Ok(());
    }
    page.section(LATENT_MAP, "Map of weight latents");
    let (mean, ax1, ax2) = principal_axes(&lat, k);
    let proj = |r: &[f32]| -> (f64, f64) {
        let c: Vec<f64> = r.iter().zip(&mean).map(|(x, m)| *x as f64 - m).collect();
        (c.iter().zip(&ax1).map(|(a, b)| a * b).sum(), c.iter().zip(&ax2).map(|(a, b)| a * b).sum())
    };
    let (x_title, y_title) =
        ("principal component 1 of the weight latents (latent units)", "principal component 2 (latent units)");
    let points = |c: Checkpoint| -> Vec<(f64, f64)> {
        lat.chunks_exact(k).zip(&meta.rows).filter(|(_, m)| m.checkpoint == c).map(|(r, _)| proj(r)).collect()
    };
    let mut chart = Chart::new("Weight latents on their first two principal components", x_title, y_title);
    for (c, name, colour) in
        [(Checkpoint::Early, "early checkpoint", plot::ORANGE), (Checkpoint::Final, "final checkpoint", plot::BLUE)]
    {
        let pts = points(c);
        if !pts.is_empty() {
            chart = chart.series(Series::points(name, colour, pts));
        }
    }
    if let Some((_, zp)) = align.and_then(|d| f32_tensor(&d.join("projections.safetensors"), "projections")) {
        let pts: Vec<(f64, f64)> = zp
            .chunks_exact(k)
            .zip(&meta.rows)
            .filter(|(_, m)| m.split == crate::data::TaskSplit::Test)
            .map(|(r, _)| proj(r))
            .collect();
        chart = chart.series(Series::points("z_proj of test pairs (align)", plot::RED, pts));
    }
    page.chart(
        "latent_map.svg",
        &chart,
        "Each dot is one zoo model's weight latent (or one test prompt's projection), in the latents' own principal axes.",
    )?;
    // The same map in quartiles of each model's validation loss.
    let Some(zoo) = zoo.and_then(|z| Zoo::load(z).ok()) else { return Ok(()) };
    let loss = |m: &crate::zoo::store::RowRef| {
        zoo.rows.iter().find(|r| r.model_id == m.model_id && r.checkpoint == m.checkpoint).map_or(f64::NAN, |r| r.val_loss)
    };
    let losses: Vec<f64> = meta.rows.iter().map(loss).collect();
    let mut sorted: Vec<f64> = losses.iter().copied().filter(|x| x.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.len() < 4 {
        return Ok(());
    }
    let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f).round() as usize];
    let edges = [sorted[0], q(0.25), q(0.5), q(0.75), sorted[sorted.len() - 1]];
    let colours = [plot::BLUE, plot::GREEN, plot::ORANGE, plot::RED];
    let mut chart = Chart::new("Weight latents by validation loss (quartiles)", x_title, y_title);
    for b in 0..4 {
        let inside = |l: f64| l >= edges[b] && (l < edges[b + 1] || b == 3 && l <= edges[4]);
        let pts: Vec<(f64, f64)> = lat.chunks_exact(k).zip(&losses).filter(|(_, &l)| inside(l)).map(|(r, _)| proj(r)).collect();
        let name = format!("val loss {:.3}–{:.3}", edges[b], edges[b + 1]);
        chart = chart.series(Series::points(name, colours[b], pts));
    }
    page.chart(
        "latent_map_loss.svg",
        &chart,
        "The same map, each model coloured by the quartile of its validation loss (the loss the prompt conditions on).",
    )
}

fn sampling_section(page: &mut Page, s: &Path, m: &Json) -> Result<(), StageError> {
    page.section(SAMPLING, "Sampling: generated models vs baselines");
    page.p(&format!(
        "{} samples on {} test tasks, scored on each task's real test images (chance accuracy 1/3).",
        fmt(get(m, "samples")),
        fmt(get(m, "tasks"))
    ));
    let mut h = String::from("<table><tr><th>model</th><th>test accuracy</th><th>test loss</th></tr>");
    for (k, name) in [
        ("sample", "generated sample"),
        ("trained_final", "trained zoo model (final)"),
        ("trained_early", "trained zoo model (early)"),
        ("row_selection", "row selection"),
        ("nn", "nearest-neighbour retrieval"),
        ("nn_noise", "nearest neighbour + noise"),
        ("random", "random initialisation"),
        ("nn_decoded", "nearest neighbour's latent, decoded"),
        ("own_decoded", "task's own models' latents, decoded (perfect alignment)"),
    ] {
        if get(m, k).is_null() {
            continue;
        }
        h.push_str(&format!(
            "<tr><th>{name}</th><td>{}</td><td>{}</td></tr>",
            fmt(get(m, &format!("{k}.accuracy"))),
            fmt(get(m, &format!("{k}.loss")))
        ));
    }
    page.raw(&(h + "</table>"));
    let rows = vec![
        ("prompt R² (achieved = target)".to_string(), fmt(get(m, "prompt_r2"))),
        ("prompt Pearson r".to_string(), fmt(get(m, "prompt_pearson"))),
        ("accuracy, prompt's class order".to_string(), fmt(get(m, "order.accuracy"))),
        ("accuracy, labels permuted".to_string(), fmt(get(m, "order.permuted_accuracy"))),
        ("samples more accurate than their neighbour".to_string(), fmt(get(m, "sample_beats_nn"))),
        ("diversity: draws of one prompt predicting differently".to_string(), fmt(get(m, "diversity"))),
        ("agreement with the nearest training model".to_string(), fmt(get(m, "nn_agreement"))),
        ("NN + noise at the samples' accuracy: noise scale".to_string(), fmt(get(m, "nn_noise_matched.noise"))),
        ("NN + noise at the samples' accuracy: accuracy".to_string(), fmt(get(m, "nn_noise_matched.accuracy"))),
        ("NN + noise at the samples' accuracy: diversity".to_string(), fmt(get(m, "nn_noise_matched.diversity"))),
        (
            "NN + noise at the samples' accuracy: agreement with the neighbour".to_string(),
            fmt(get(m, "nn_noise_matched.nn_agreement")),
        ),
    ];
    page.raw(&table(&rows));
    page.svg_file(
        &s.join("target_vs_achieved.svg"),
        "target_vs_achieved.svg",
        "Each sample's prompted (target) loss against the test loss it achieved; on the grey line the prompt is met.",
    )?;
    page.svg_file(&s.join("accuracy.svg"), "sample_accuracy.svg", "Test accuracy of every sample and of each baseline, sorted.")
}

/// Writes the report for the connected inputs (`slot → directory`).
pub fn run_report(inputs: &std::collections::BTreeMap<String, std::path::PathBuf>, out: &Path) -> Result<Json, StageError> {
    let dir = |s: &str| inputs.get(s).map(|p| p.as_path());
    let mut page = Page { html: String::new(), out: out.to_path_buf(), sections: Vec::new() };
    let mut params: Vec<(String, String)> = Vec::new();
    let samples = dir("samples").and_then(|s| read_json(&s.join("metrics.json")));
    let methods: Vec<(String, Json)> = inputs
        .iter()
        .filter_map(|(slot, d)| Some((slot.strip_prefix("method_")?.to_string(), read_json(&d.join("metrics.json"))?)))
        .collect();
    let reconstruction = dir("reconstruction").and_then(|r| read_json(&r.join("metrics.json")));

    if let Some(z) = dir("zoo") {
        zoo_section(&mut page, z, &mut params)?;
    }
    if dir("pca").is_some() || dir("autoencoder").is_some() {
        page.section(ENCODER, "Weight encoder: PCA + autoencoder");
        let mut rows = Vec::new();
        for (slot, prefix) in [("pca", "pca"), ("autoencoder", "autoencoder")] {
            if let Some(m) = dir(slot).and_then(|d| read_json(&d.join("metrics.json"))) {
                flatten(prefix, &m, &mut rows);
            }
        }
        page.raw(&table(&rows));
        if let Some(a) = dir("autoencoder") {
            page.svg_file(
                &a.join("loss.svg"),
                "autoencoder_loss.svg",
                "Autoencoder reconstruction loss per epoch (train and val).",
            )?;
            if let Some(j) = read_json(&a.join("autoencoder.json")) {
                flatten("autoencoder", &j, &mut params);
            }
        }
        if let Some(j) = dir("pca").and_then(|d| read_json(&d.join("pca.json"))) {
            for k in
                ["checkpoints", "variance_threshold", "dimension_limit", "coefficient_dim", "fit_models", "explained_variance"]
            {
                params.push((format!("pca.{k}"), fmt(get(&j, k))));
            }
        }
    }
    if let (Some(r), Some(m)) = (dir("reconstruction"), &reconstruction) {
        reconstruction_section(&mut page, r, m)?;
    }
    if let Some(a) = dir("align") {
        if let Some(m) = read_json(&a.join("metrics.json")) {
            alignment_section(&mut page, a, &m, &mut params)?;
        }
    }
    if let (Some(p), Some(a)) = (dir("pca"), dir("autoencoder")) {
        latent_map_section(&mut page, p, a, dir("align"), dir("zoo"))?;
    }
    if let (Some(s), Some(m)) = (dir("samples"), &samples) {
        sampling_section(&mut page, s, m)?;
    }

    page.section(PARAMETERS, "Parameters and recorded metrics");
    if let Some(j) = dir("embed").and_then(|d| read_json(&d.join("embeddings.json"))) {
        for k in ["encoder", "weights", "dim", "task_dim", "image_size"] {
            params.push((format!("dataset_embed.{k}"), fmt(get(&j, k))));
        }
    }
    page.raw(&table(&params));
    for (slot, d) in inputs {
        if let Some(m) = read_json(&d.join("metrics.json")) {
            let mut rows = Vec::new();
            flatten("", &m, &mut rows);
            page.raw(&format!("<details><summary><code>{}</code> metrics.json</summary>{}</details>\n", esc(slot), table(&rows)));
        }
    }

    let contents: String = page
        .sections
        .iter()
        .enumerate()
        .map(|(i, (id, title))| format!("<li><a href=\"#{id}\">{}. {}</a></li>", i + 1, esc(title)))
        .collect();
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>wspace report</title><style>\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}}\
         table{{border-collapse:collapse;margin:1em 0}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         td{{font-family:monospace;text-align:right}}td.missing{{color:#999;text-align:center}}\
         #headline{{border:2px solid #1f77b4;border-radius:6px;padding:0 1em;margin-bottom:2em}}\
         #headline-table td a,#headline-reconstruction td a{{color:inherit}}p.verdict{{font-size:110%}}\
         figure{{margin:1.5em 0}}figure svg{{max-width:100%;height:auto;display:block}}\
         figcaption{{font-size:90%;color:#555}}nav ol{{columns:2}}</style></head><body>\n<h1>wspace report</h1>\n{}\
         <nav><h2>Contents</h2><ol>{contents}</ol></nav>\n{}</body></html>\n",
        headline_html(samples.as_ref(), reconstruction.as_ref(), &methods),
        page.html
    );
    tensors::write(&out.join("report.html"), html.as_bytes())?;
    let metrics = json!({
        "sections": page.sections.len(),
        "document": "report.html",
        "headline": headline::headline_metrics(samples.as_ref(), reconstruction.as_ref(), &methods),
    });
    tensors::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// `kind = "report"`: see the [module doc](self).
pub struct ReportKind;

impl StageKind for ReportKind {
    fn name(&self) -> &'static str {
        "report"
    }
    fn version(&self) -> u32 {
        6
    }
    fn summary(&self) -> &'static str {
        "one self-contained HTML page (SVG figures inline) opening with the headline table; summarises zoo, encoders, alignment, sampling"
    }
    fn params(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(vec![
            ("zoo", false, "a `zoo` stage"),
            ("pca", false, "a `pca` stage"),
            ("autoencoder", false, "an `autoencoder` stage"),
            ("reconstruction", false, "an `evaluate-reconstruction` stage"),
            ("embed", false, "a `dataset-embed` stage"),
            ("align", false, "an `align` stage"),
            ("samples", false, "an `evaluate-samples` stage"),
            ("method_*", false, "`method_<name>`: an `evaluate-samples` stage per sampling method, a row of the methods table"),
        ])
    }
    fn run(&self, ctx: &StageContext) -> Result<(), StageError> {
        run_report(ctx.inputs, ctx.out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_report_still_writes_a_page() {
        let dir = tempfile::tempdir().unwrap();
        run_report(&Default::default(), dir.path()).unwrap();
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("<h1>wspace report</h1>"));
        // The headline table is there, with "—" for what no stage computed.
        assert!(html.contains("id=\"headline-table\"") && html.contains("not computed by this pipeline"));
        let m: Json = tensors::read_json(&dir.path().join("metrics.json")).unwrap();
        assert_eq!(m["document"], "report.html");
    }

    #[test]
    fn the_headline_opens_the_page_and_links_to_the_sections() {
        let dir = tempfile::tempdir().unwrap();
        let samples = dir.path().join("samples");
        std::fs::create_dir_all(&samples).unwrap();
        let m = json!({"samples": 10, "tasks": 2, "sample": {"accuracy": 0.4, "loss": 1.0}, "nn": {"accuracy": 0.7, "loss": 0.8},
            "random": {"accuracy": 0.33, "loss": 1.1}, "trained_final": {"accuracy": 0.9, "loss": 0.3}, "prompt_r2": 0.1});
        tensors::write_json(&samples.join("metrics.json"), &m).unwrap();
        let svg = Chart::new("t", "target loss", "achieved loss")
            .series(Series::points("s", plot::BLUE, vec![(1.0, 1.0)]))
            .to_svg()
            .unwrap();
        tensors::write(&samples.join("target_vs_achieved.svg"), svg.as_bytes()).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let inputs = [("samples".to_string(), samples)].into_iter().collect();
        let metrics = run_report(&inputs, &out).unwrap();
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        let (headline, sampling) = (html.find("id=\"headline-table\"").unwrap(), html.find("id=\"sampling\"").unwrap());
        assert!(headline < sampling, "the headline comes first");
        assert!(html.contains("<a href=\"#sampling\">40.0 %</a>"), "numbers link to their section");
        assert!(html[headline..sampling].contains("beats random weights by 7.0 points but not retrieval"));
        assert!(html.contains("class=\"x-title\"") && out.join("target_vs_achieved.svg").exists());
        assert_eq!(metrics["headline"]["sampled_accuracy"], json!(0.4));
        // Deterministic: the same inputs give the same bytes.
        let again = dir.path().join("again");
        std::fs::create_dir_all(&again).unwrap();
        run_report(&inputs, &again).unwrap();
        assert_eq!(std::fs::read(again.join("report.html")).unwrap(), std::fs::read(out.join("report.html")).unwrap());
    }

    #[test]
    fn principal_axes_find_the_long_direction() {
        let rows: Vec<f32> = (0..10).flat_map(|i| [i as f32, 0.1 * (i % 2) as f32]).collect();
        let (_, a1, _) = principal_axes(&rows, 2);
        assert!(a1[0].abs() > 0.99, "{a1:?}");
    }
}
