//! The `report` stage: one self-contained HTML page (`report.html`, every image inlined as a base64
//! data URI) plus the same PNGs as files, summarising the whole pipeline from its stages' outputs.
//!
//! # Sections (each present when its inputs are connected)
//! 1. Zoo (`zoo`): counts, and histograms of the validation loss and test accuracy per checkpoint
//!    (`zoo_val_loss.png`, `zoo_test_acc.png`: early orange, final blue; x = value, y = models per bin).
//! 2. Weight encoder (`pca`, `autoencoder`): PCA metrics, the autoencoder's loss curve.
//! 3. Reconstruction (`reconstruction`, an `evaluate-reconstruction` stage): the thesis's Table 4.1 —
//!    real-data agreement and output correlation of PCA / PCA + AE / mean reconstructions, next to the
//!    thesis's values (agreement 35.7 %, correlation −0.086).
//! 4. Alignment (`align`): NT-Xent curves, baselines, retrieval, the cosine heat map.
//! 5. Weight-latent map (`pca`, `autoencoder`, optionally `align`): the latents projected on their first
//!    two principal components (`latent_map.png`: early-checkpoint models orange, final blue; the align
//!    stage's `z_proj` of test-split pairs red, in the same projection).
//! 6. Sampling (`samples`, an `evaluate-samples` stage): samples vs trained, nearest-neighbour,
//!    noisy-neighbour and random baselines; target vs achieved loss; class-order sensitivity.
//! 7. Parameters: the configuration each stage recorded in its own output (`zoo.json`, `pca.json`,
//!    `autoencoder.json`, `embeddings.json`, `align.json`) and every input's `metrics.json` scalars.
//!
//! # Output (a directory)
//! | file | content |
//! | --- | --- |
//! | `report.html` | the page |
//! | `*.png` | the figures of the page, also as files |
//! | `metrics.json` | `sections` (how many were written) |

use std::path::Path;

use serde_json::{json, Value as Json};
use wspace_stage_api::{Inputs, ParamSpec, StageContext, StageError, StageKind};

use crate::data::files::{self, TensorFile};
use crate::weights::pca::PcaMeta;
use crate::weights::plot::{self, Series};
use crate::zoo::store::{Checkpoint, Zoo};

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                s.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
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
    files::read_json::<Json>(path).ok()
}

fn get<'a>(v: &'a Json, path: &str) -> &'a Json {
    path.split('.').fold(v, |v, k| v.get(k).unwrap_or(&Json::Null))
}

struct Page {
    html: String,
    out: std::path::PathBuf,
    sections: usize,
}

impl Page {
    fn section(&mut self, title: &str) {
        self.sections += 1;
        self.html.push_str(&format!("<h2>{}. {}</h2>\n", self.sections, esc(title)));
    }
    fn p(&mut self, text: &str) {
        self.html.push_str(&format!("<p>{text}</p>\n"));
    }
    fn raw(&mut self, html: &str) {
        self.html.push_str(html);
    }
    /// Inlines a PNG (bytes) and writes it as `name`.
    fn png(&mut self, name: &str, bytes: &[u8], caption: &str) -> Result<(), StageError> {
        files::write(&self.out.join(name), bytes)?;
        self.html.push_str(&format!(
            "<figure><img src=\"data:image/png;base64,{}\" alt=\"{name}\"><figcaption>{}</figcaption></figure>\n",
            base64(bytes),
            esc(caption)
        ));
        Ok(())
    }
    fn png_file(&mut self, src: &Path, name: &str, caption: &str) -> Result<(), StageError> {
        match std::fs::read(src) {
            Ok(bytes) => self.png(name, &bytes, caption),
            Err(_) => Ok(()),
        }
    }
    fn lines(&mut self, name: &str, series: &[Series], caption: &str) -> Result<(), StageError> {
        let bytes = plot::render_lines(series, plot::Scale::Linear, plot::Scale::Linear)?;
        self.png(name, &bytes, caption)
    }
}

/// A histogram as a step line: `bins` equal bins over `[lo, hi]`.
fn histogram(values: &[f64], lo: f64, hi: f64, bins: usize, colour: [u8; 3]) -> Series {
    let mut counts = vec![0usize; bins];
    let w = (hi - lo).max(1e-12) / bins as f64;
    for &v in values.iter().filter(|v| v.is_finite()) {
        counts[(((v - lo) / w).floor().max(0.0) as usize).min(bins - 1)] += 1;
    }
    let mut points = Vec::new();
    for (i, &c) in counts.iter().enumerate() {
        points.push((lo + i as f64 * w, c as f64));
        points.push((lo + (i + 1) as f64 * w, c as f64));
    }
    Series { points, colour }
}

/// The first two principal axes of `rows` (`n × k`): `(mean, axis1, axis2)`.
fn principal_axes(rows: &[f32], k: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = rows.len() / k.max(1);
    let mut mean = vec![0.0; k];
    for r in rows.chunks_exact(k) {
        r.iter().zip(&mut mean).for_each(|(x, m)| *m += *x as f64 / n as f64);
    }
    let mut cov = nalgebra::DMatrix::<f64>::zeros(k, k);
    for r in rows.chunks_exact(k) {
        let c: Vec<f64> = r.iter().zip(&mean).map(|(x, m)| *x as f64 - m).collect();
        for i in 0..k {
            for j in 0..k {
                cov[(i, j)] += c[i] * c[j];
            }
        }
    }
    let eig = cov.symmetric_eigen();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
    let axis = |i: usize| -> Vec<f64> {
        let mut v: Vec<f64> = eig.eigenvectors.column(order[i]).iter().copied().collect();
        // A deterministic sign: the largest-magnitude entry positive.
        let big = v.iter().copied().fold(0.0f64, |a, x| if x.abs() > a.abs() { x } else { a });
        if big < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        v
    };
    (mean, axis(0), axis(1.min(k - 1)))
}

fn f32_tensor(path: &Path, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
    TensorFile::open(path).ok()?.f32_all().ok()?.into_iter().find(|(n, _, _)| n == name).map(|(_, s, v)| (s, v))
}

/// Writes the report for the connected inputs (`slot → directory`).
pub fn run_report(inputs: &std::collections::BTreeMap<String, std::path::PathBuf>, out: &Path) -> Result<Json, StageError> {
    let dir = |s: &str| inputs.get(s).map(|p| p.as_path());
    let mut page = Page { html: String::new(), out: out.to_path_buf(), sections: 0 };
    let mut params: Vec<(String, String)> = Vec::new();

    if let Some(z) = dir("zoo") {
        let zoo = Zoo::load(z)?;
        page.section("Model zoo");
        let ok: Vec<_> = zoo.rows.iter().filter(|r| r.ok()).collect();
        let col = |c: Checkpoint, f: fn(&crate::zoo::store::ZooRow) -> f64| -> Vec<f64> {
            ok.iter().filter(|r| r.checkpoint == c).map(|r| f(r)).collect()
        };
        page.p(&format!(
            "{} models of architecture <code>{}</code>, {} rows (checkpoints {:?}), {} diverged.",
            zoo.meta.models,
            esc(&zoo.meta.arch),
            zoo.rows.len(),
            zoo.meta.checkpoints.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
            zoo.rows.len() - ok.len()
        ));
        for (name, f, caption) in [
            ("zoo_val_loss.png", (|r: &crate::zoo::store::ZooRow| r.val_loss) as fn(&_) -> f64, "validation loss"),
            ("zoo_test_acc.png", |r| r.test_acc, "test accuracy"),
        ] {
            let (e, fi) = (col(Checkpoint::Early, f), col(Checkpoint::Final, f));
            let all = e.iter().chain(&fi).copied().filter(|v| v.is_finite());
            let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
            if lo.is_finite() {
                page.lines(
                    name,
                    &[histogram(&e, lo, hi, 20, plot::ORANGE), histogram(&fi, lo, hi, 20, plot::BLUE)],
                    &format!("Zoo {caption}: models per bin, early checkpoint orange, final blue."),
                )?;
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
    }

    if dir("pca").is_some() || dir("autoencoder").is_some() {
        page.section("Weight encoder: PCA + autoencoder");
        let mut rows = Vec::new();
        for (slot, prefix) in [("pca", "pca"), ("autoencoder", "autoencoder")] {
            if let Some(m) = dir(slot).and_then(|d| read_json(&d.join("metrics.json"))) {
                flatten(prefix, &m, &mut rows);
            }
        }
        page.raw(&table(&rows));
        if let Some(a) = dir("autoencoder") {
            page.png_file(
                &a.join("loss.png"),
                "autoencoder_loss.png",
                "Autoencoder MSE per epoch (log y): train blue, val orange.",
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

    if let Some(r) = dir("reconstruction") {
        if let Some(m) = read_json(&r.join("metrics.json")) {
            page.section("Reconstruction (the thesis's Table 4.1)");
            page.p("Test-split models against their reconstructions, on their own tasks' real test images (chance agreement ≈ 33 %).");
            let pct = |v: &Json| v.as_f64().map_or("–".into(), |x| format!("{:.1} %", 100.0 * x));
            let mut h = String::from(
                "<table><tr><th>reconstruction</th><th>agreement</th><th>output correlation</th><th>accuracy</th><th>weight MSE</th></tr>",
            );
            for v in ["pca", "pca_ae", "mean"] {
                if get(&m, v).is_null() {
                    continue;
                }
                h.push_str(&format!(
                    "<tr><th>{v}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    pct(get(&m, &format!("{v}.real.agreement"))),
                    fmt(get(&m, &format!("{v}.real.correlation"))),
                    pct(get(&m, &format!("{v}.real.accuracy"))),
                    fmt(get(&m, &format!("{v}.weight_mse")))
                ));
            }
            h.push_str("<tr><th>thesis (PCA + AE)</th><td>35.7 %</td><td>−0.086</td><td>–</td><td>–</td></tr></table>");
            page.raw(&h);
            page.p(&format!("Original models' accuracy: {}.", pct(get(&m, "original_accuracy"))));
            page.png_file(
                &r.join("agreement.png"),
                "reconstruction_agreement.png",
                "Real-data agreement per model, sorted: pca blue, pca_ae orange, mean grey.",
            )?;
        }
    }

    if let Some(a) = dir("align") {
        if let Some(m) = read_json(&a.join("metrics.json")) {
            page.section("Alignment (shared encoder, NT-Xent)");
            let row = |name: &str, v: &str, b: &str| format!("<tr><th>{name}</th><td>{v}</td><td>{b}</td></tr>");
            let mut h = String::from("<table><tr><th>measure</th><th>trained</th><th>reference</th></tr>");
            h.push_str(&row(
                "val NT-Xent (best epoch)",
                &fmt(get(&m, "val_loss")),
                &format!("chance ln N = {}", fmt(get(&m, "val_loss_chance"))),
            ));
            h.push_str(&row("val NT-Xent, untrained", &fmt(get(&m, "val_loss_untrained")), ""));
            h.push_str(&row("val NT-Xent, pairs shuffled", &fmt(get(&m, "val_loss_shuffled")), ""));
            h.push_str(&row("train NT-Xent", &fmt(get(&m, "train_loss")), ""));
            h.push_str(&row("test NT-Xent", &fmt(get(&m, "test_loss")), &format!("chance {}", fmt(get(&m, "test_loss_chance")))));
            for s in ["val", "test"] {
                for k in ["top1", "top5"] {
                    h.push_str(&row(
                        &format!("{s} retrieval {k}"),
                        &fmt(get(&m, &format!("{s}_{k}"))),
                        &format!("chance {}", fmt(get(&m, &format!("{s}_{k}_chance")))),
                    ));
                }
            }
            page.raw(&(h + "</table>"));
            page.png_file(
                &a.join("loss.png"),
                "align_loss.png",
                "NT-Xent per epoch: train blue, val orange, untrained val grey, ln N_val red.",
            )?;
            page.png_file(
                &a.join("heatmap.png"),
                "align_heatmap.png",
                "Cosine of weight latents (rows) and projections (columns) of val pairs, after epoch 1 (left) and at the best epoch (right); −1 dark … 1 yellow.",
            )?;
            if let Some(j) = read_json(&a.join("align.json")) {
                flatten("align", &j, &mut params);
            }
        }
    }

    if let (Some(p), Some(a)) = (dir("pca"), dir("autoencoder")) {
        let meta: Option<PcaMeta> = files::read_json(&p.join("pca.json")).ok();
        if let (Some(meta), Some((shape, lat))) = (meta, f32_tensor(&a.join("latents.safetensors"), "latents")) {
            let k = shape.get(1).copied().unwrap_or(0);
            if k >= 2 && lat.len() / k == meta.rows.len() {
                page.section("Map of weight latents");
                let (mean, ax1, ax2) = principal_axes(&lat, k);
                let proj = |r: &[f32]| -> (f64, f64) {
                    let c: Vec<f64> = r.iter().zip(&mean).map(|(x, m)| *x as f64 - m).collect();
                    (c.iter().zip(&ax1).map(|(a, b)| a * b).sum(), c.iter().zip(&ax2).map(|(a, b)| a * b).sum())
                };
                let mut series: Vec<Series> = lat
                    .chunks_exact(k)
                    .zip(&meta.rows)
                    .map(|(r, m)| Series {
                        points: vec![proj(r)],
                        colour: if m.checkpoint == Checkpoint::Early { plot::ORANGE } else { plot::BLUE },
                    })
                    .collect();
                if let Some((_, zp)) = dir("align").and_then(|d| f32_tensor(&d.join("projections.safetensors"), "projections")) {
                    for (r, m) in zp.chunks_exact(k).zip(&meta.rows) {
                        if m.split == crate::data::TaskSplit::Test {
                            series.push(Series { points: vec![proj(r)], colour: plot::RED });
                        }
                    }
                }
                page.lines(
                    "latent_map.png",
                    &series,
                    "Weight latents on their first two principal components: early checkpoints orange, final blue; z_proj of test pairs red.",
                )?;
                // The same map coloured by each model's validation loss and by its task (class triplet).
                if let Some(zoo) = dir("zoo").and_then(|z| Zoo::load(z).ok()) {
                    let row = |m: &crate::weights::pca::RowRef| {
                        zoo.rows.iter().find(|r| r.model_id == m.model_id && r.checkpoint == m.checkpoint)
                    };
                    let logs: Vec<f64> = meta.rows.iter().map(|m| row(m).map(|r| r.val_loss.ln()).unwrap_or(f64::NAN)).collect();
                    let finite = logs.iter().copied().filter(|x| x.is_finite());
                    let (lo, hi) = finite.clone().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
                    let ramp = |x: f64| -> [u8; 3] {
                        let t = if hi > lo && x.is_finite() { ((x - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.5 };
                        let mix = |a: u8, b: u8| (a as f64 + t * (b as f64 - a as f64)).round() as u8;
                        [mix(plot::BLUE[0], plot::RED[0]), mix(plot::BLUE[1], plot::RED[1]), mix(plot::BLUE[2], plot::RED[2])]
                    };
                    let by_loss: Vec<Series> =
                        lat.chunks_exact(k).zip(&logs).map(|(r, &l)| Series { points: vec![proj(r)], colour: ramp(l) }).collect();
                    page.lines(
                        "latent_map_loss.png",
                        &by_loss,
                        "The same map coloured by validation loss (log scale): low blue … high red.",
                    )?;
                    let triplet_colour = |m: &crate::weights::pca::RowRef| -> [u8; 3] {
                        let mut c = row(m).map(|r| r.classes()).unwrap_or([0; 3]);
                        c.sort_unstable();
                        let h = (c[0] * 100 + c[1] * 10 + c[2]) as u64;
                        [(h * 67 % 200 + 30) as u8, (h * 131 % 200 + 30) as u8, (h * 199 % 200 + 30) as u8]
                    };
                    let by_task: Vec<Series> = lat
                        .chunks_exact(k)
                        .zip(&meta.rows)
                        .map(|(r, m)| Series { points: vec![proj(r)], colour: triplet_colour(m) })
                        .collect();
                    page.lines(
                        "latent_map_task.png",
                        &by_task,
                        "The same map coloured by task: one colour per class triplet (models of the same classes share it).",
                    )?;
                }
            }
        }
    }

    if let Some(s) = dir("samples") {
        if let Some(m) = read_json(&s.join("metrics.json")) {
            page.section("Sampling: generated models vs baselines");
            page.p(&format!(
                "{} samples on {} test tasks, scored on each task's real test images (chance accuracy 1/3).",
                fmt(get(&m, "samples")),
                fmt(get(&m, "tasks"))
            ));
            let mut h = String::from("<table><tr><th>model</th><th>test accuracy</th><th>test loss</th></tr>");
            for (k, name) in [
                ("sample", "generated sample"),
                ("trained_final", "trained zoo model (final)"),
                ("trained_early", "trained zoo model (early)"),
                ("nn", "nearest-neighbour retrieval"),
                ("nn_noise", "nearest neighbour + noise"),
                ("random", "random initialisation"),
                ("nn_decoded", "nearest neighbour's latent, decoded"),
                ("own_decoded", "task's own models' latents, decoded (perfect alignment)"),
            ] {
                h.push_str(&format!(
                    "<tr><th>{name}</th><td>{}</td><td>{}</td></tr>",
                    fmt(get(&m, &format!("{k}.accuracy"))),
                    fmt(get(&m, &format!("{k}.loss")))
                ));
            }
            page.raw(&(h + "</table>"));
            let rows = vec![
                ("prompt R² (achieved = target)".to_string(), fmt(get(&m, "prompt_r2"))),
                ("prompt Pearson r".to_string(), fmt(get(&m, "prompt_pearson"))),
                ("accuracy, prompt's class order".to_string(), fmt(get(&m, "order.accuracy"))),
                ("accuracy, labels permuted".to_string(), fmt(get(&m, "order.permuted_accuracy"))),
                ("samples more accurate than their neighbour".to_string(), fmt(get(&m, "sample_beats_nn"))),
            ];
            page.raw(&table(&rows));
            page.png_file(
                &s.join("target_vs_achieved.png"),
                "target_vs_achieved.png",
                "Target loss (x) vs achieved test loss (y) of each sample; identity grey.",
            )?;
            page.png_file(
                &s.join("accuracy.png"),
                "sample_accuracy.png",
                "Per-sample accuracy, sorted: sample blue, nn orange, nn+noise green, random grey, trained (final) red.",
            )?;
        }
    }

    page.section("Parameters and recorded metrics");
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

    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>wspace report</title><style>\
         body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
         th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}td{{font-family:monospace}}img{{max-width:100%}}\
         figcaption{{font-size:90%;color:#555}}</style></head><body>\n<h1>wspace report</h1>\n{}</body></html>\n",
        page.html
    );
    files::write(&out.join("report.html"), html.as_bytes())?;
    let metrics = json!({ "sections": page.sections });
    files::write_json(&out.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// `kind = "report"`: see the [module doc](self).
pub struct ReportKind;

impl StageKind for ReportKind {
    fn name(&self) -> &'static str {
        "report"
    }
    fn version(&self) -> u32 {
        2
    }
    fn summary(&self) -> &'static str {
        "one self-contained HTML page (plus PNGs) summarising the zoo, weight encoder, alignment and sampling"
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
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn an_empty_report_still_writes_a_page() {
        let dir = tempfile::tempdir().unwrap();
        run_report(&Default::default(), dir.path()).unwrap();
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("<h1>wspace report</h1>"));
    }

    #[test]
    fn principal_axes_find_the_long_direction() {
        let rows: Vec<f32> = (0..10).flat_map(|i| [i as f32, 0.1 * (i % 2) as f32]).collect();
        let (_, a1, _) = principal_axes(&rows, 2);
        assert!(a1[0].abs() > 0.99, "{a1:?}");
    }
}
