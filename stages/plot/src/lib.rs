//! Deterministic SVG charts for wspace: line, scatter and bar charts ([`Chart`]) and heat maps
//! ([`Heatmap`]), drawn with `plotters`' SVG backend.
//!
//! # Brief overview
//! A [`Chart`] has a title, two titled [`Axis`]es (linear or log [`Scale`]) and [`Series`], each drawn as
//! a [`Mark`] (line, points, line with points, or bars) in one colour under one name. A legend below the
//! plot names every series whenever there is more than one. A [`Heatmap`] draws one or more `K × K`
//! matrices side by side as cells on a shared colour scale (viridis), with titled axes, tick labels and
//! a titled colour bar. Both render to an SVG string (`to_svg`).
//!
//! # What the SVG is like
//! - Text is SVG `<text>` (selectable, scalable): title 18 px, axis titles 16 px, tick labels 14 px,
//!   legend 14 px, `sans-serif`. Every axis has a title (the caller says which unit it is in).
//! - The bytes depend only on the chart: no timestamps, no random ids, no fonts read from the system
//!   (text is laid out with fixed metrics; the browser draws it), pixel coordinates are integers. So a
//!   stage that writes a chart writes the same bytes every time, and its cache key and `wspace verify`
//!   stay stable.
//! - Non-finite points (and non-positive ones on a log axis) are left out; a line breaks there.
//! - The SVG carries a `viewBox`, so a page may scale it (`max-width: 100%`).
//! - The axis titles' `<text>` elements carry `class="x-title"` and `class="y-title"` (a heat map's
//!   colour-bar title is a `y-title` too), so a test in a browser can find them.

use std::fmt;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Colours (the usual ten-colour cycle's first six).
pub const BLUE: [u8; 3] = [31, 119, 180];
pub const ORANGE: [u8; 3] = [255, 127, 14];
pub const GREEN: [u8; 3] = [44, 160, 44];
pub const RED: [u8; 3] = [214, 39, 40];
pub const PURPLE: [u8; 3] = [148, 103, 189];
pub const GREY: [u8; 3] = [127, 127, 127];
pub const BROWN: [u8; 3] = [140, 86, 75];
pub const PINK: [u8; 3] = [227, 119, 194];
pub const OLIVE: [u8; 3] = [188, 189, 34];
pub const CYAN: [u8; 3] = [23, 190, 207];
/// The cycle, for series without a colour of their own meaning.
pub const CYCLE: [[u8; 3]; 10] = [BLUE, ORANGE, GREEN, RED, PURPLE, BROWN, PINK, GREY, OLIVE, CYAN];

const FONT: &str = "sans-serif";
const TITLE_PX: u32 = 18;
const AXIS_TITLE_PX: u32 = 16;
const TICK_PX: u32 = 14;
const LEGEND_ROW: u32 = 22;

/// A chart could not be drawn (plotters' own error, as text).
#[derive(Debug, Clone, PartialEq)]
pub struct PlotError(pub String);

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot draw the chart: {}", self.0)
    }
}

impl std::error::Error for PlotError {}

fn err(e: impl fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// Axis scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mark {
    /// A 2-pixel polyline.
    Line,
    /// A filled dot (radius 3) per point.
    Points,
    /// Both.
    LinePoints,
    /// A bar per point, centred on x, this wide (in x units), from the bottom of the plot up to y;
    /// semi-transparent, so overlapping bar series stay visible (histograms).
    Bars { width: f64 },
}

/// One named series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub colour: [u8; 3],
    pub mark: Mark,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, colour: [u8; 3], mark: Mark, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), colour, mark, points }
    }
    pub fn line(name: impl Into<String>, colour: [u8; 3], points: Vec<(f64, f64)>) -> Series {
        Series::new(name, colour, Mark::Line, points)
    }
    pub fn points(name: impl Into<String>, colour: [u8; 3], points: Vec<(f64, f64)>) -> Series {
        Series::new(name, colour, Mark::Points, points)
    }
    /// A histogram of `values` in `bins` equal bins over `[lo, hi]`: bars of models (or items) per bin.
    pub fn histogram(name: impl Into<String>, colour: [u8; 3], values: &[f64], lo: f64, hi: f64, bins: usize) -> Series {
        let bins = bins.max(1);
        let w = if hi > lo { (hi - lo) / bins as f64 } else { 1.0 };
        let mut counts = vec![0usize; bins];
        for &v in values.iter().filter(|v| v.is_finite()) {
            counts[(((v - lo) / w).floor().max(0.0) as usize).min(bins - 1)] += 1;
        }
        let points = counts.iter().enumerate().map(|(i, &c)| (lo + (i as f64 + 0.5) * w, c as f64)).collect();
        Series::new(name, colour, Mark::Bars { width: w }, points)
    }
}

/// An axis: its title (with the unit) and scale; the shown interval spans the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub title: String,
    pub scale: Scale,
}

impl Axis {
    pub fn new(title: impl Into<String>) -> Axis {
        Axis { title: title.into(), scale: Scale::Linear }
    }
}

/// A line / scatter / bar chart: see the [crate doc](crate).
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
    /// Width and height of the plot (the legend adds rows below), in pixels.
    pub size: (u32, u32),
}

impl Chart {
    pub fn new(title: impl Into<String>, x_title: impl Into<String>, y_title: impl Into<String>) -> Chart {
        Chart { title: title.into(), x: Axis::new(x_title), y: Axis::new(y_title), series: Vec::new(), size: (720, 420) }
    }
    pub fn x_log(mut self) -> Chart {
        self.x.scale = Scale::Log;
        self
    }
    pub fn y_log(mut self) -> Chart {
        self.y.scale = Scale::Log;
        self
    }
    pub fn series(mut self, s: Series) -> Chart {
        self.series.push(s);
        self
    }
    pub fn with_series(mut self, s: impl IntoIterator<Item = Series>) -> Chart {
        self.series.extend(s);
        self
    }

    /// The chart as an SVG document.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        let columns = 3usize;
        let rows = if self.series.len() > 1 { self.series.len().div_ceil(columns) as u32 } else { 0 };
        let legend_h = if rows > 0 { rows * LEGEND_ROW + 10 } else { 0 };
        let (w, h) = self.size;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h + legend_h)).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            let (plot, legend) = root.split_vertically(h);
            let ok = |p: &(f64, f64)| {
                p.0.is_finite()
                    && p.1.is_finite()
                    && (self.x.scale == Scale::Linear || p.0 > 0.0)
                    && (self.y.scale == Scale::Linear || p.1 > 0.0)
            };
            let bar_edges = self.series.iter().flat_map(|s| match s.mark {
                Mark::Bars { width } => s.points.iter().flat_map(|p| [p.0 - width / 2.0, p.0 + width / 2.0]).collect(),
                _ => Vec::new(),
            });
            let xs = self.series.iter().flat_map(|s| s.points.iter().filter(|p| ok(p)).map(|p| p.0)).chain(bar_edges);
            let mut ys: Vec<f64> = self.series.iter().flat_map(|s| s.points.iter().filter(|p| ok(p)).map(|p| p.1)).collect();
            if self.series.iter().any(|s| matches!(s.mark, Mark::Bars { .. })) && self.y.scale == Scale::Linear {
                ys.push(0.0);
            }
            let (x0, x1) = span(xs, self.x.scale);
            let (y0, y1) = span(ys.into_iter(), self.y.scale);
            let lin = |a: f64, b: f64| -> RangedCoordf64 { (a..b).into() };
            let log = |a: f64, b: f64| -> LogCoord<f64> { (a..b).log_scale().into() };
            match (self.x.scale, self.y.scale) {
                (Scale::Linear, Scale::Linear) => self.draw(&plot, lin(x0, x1), lin(y0, y1), (x0, y0))?,
                (Scale::Log, Scale::Linear) => self.draw(&plot, log(x0, x1), lin(y0, y1), (x0, y0))?,
                (Scale::Linear, Scale::Log) => self.draw(&plot, lin(x0, x1), log(y0, y1), (x0, y0))?,
                (Scale::Log, Scale::Log) => self.draw(&plot, log(x0, x1), log(y0, y1), (x0, y0))?,
            }
            if rows > 0 {
                let col_w = (w as i32 - 40) / columns as i32;
                for (i, s) in self.series.iter().enumerate() {
                    let (c, r) = ((i % columns) as i32, (i / columns) as i32);
                    let (x, y) = (30 + c * col_w, 6 + r * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2);
                    let colour = rgb(s.colour);
                    match s.mark {
                        Mark::Line => legend.draw(&PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2))),
                        Mark::Points => legend.draw(&Circle::new((x + 12, y), 4, colour.filled())),
                        Mark::LinePoints => legend
                            .draw(&PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)))
                            .and_then(|_| legend.draw(&Circle::new((x + 12, y), 4, colour.filled()))),
                        Mark::Bars { .. } => {
                            legend.draw(&Rectangle::new([(x + 4, y - 6), (x + 20, y + 6)], colour.mix(0.5).filled()))
                        }
                    }
                    .map_err(err)?;
                    let style = TextStyle::from((FONT, TICK_PX).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
                    legend.draw(&Text::new(s.name.clone(), (x + 32, y), style)).map_err(err)?;
                }
            }
            root.present().map_err(err)?;
        }
        Ok(tag_title(&tag_title(&svg, &self.x.title, "x-title"), &self.y.title, "y-title"))
    }

    fn draw<X, Y>(&self, area: &DrawingArea<SVGBackend<'_>, Shift>, x: X, y: Y, base: (f64, f64)) -> Result<(), PlotError>
    where
        X: Ranged<ValueType = f64> + ValueFormatter<f64>,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, (FONT, TITLE_PX))
            .margin(12)
            .x_label_area_size(52)
            .y_label_area_size(72)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        let fmt_tick = |v: &f64| short_number(*v);
        chart
            .configure_mesh()
            .x_desc(&self.x.title)
            .y_desc(&self.y.title)
            .axis_desc_style((FONT, AXIS_TITLE_PX))
            .label_style((FONT, TICK_PX))
            .x_label_formatter(&fmt_tick)
            .y_label_formatter(&fmt_tick)
            .x_labels(8)
            .y_labels(7)
            .light_line_style(RGBColor(245, 245, 245))
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(err)?;
        let ok = |p: &(f64, f64)| {
            p.0.is_finite()
                && p.1.is_finite()
                && (self.x.scale == Scale::Linear || p.0 > 0.0)
                && (self.y.scale == Scale::Linear || p.1 > 0.0)
        };
        for s in &self.series {
            let colour = rgb(s.colour);
            if matches!(s.mark, Mark::Line | Mark::LinePoints) {
                let mut segment: Vec<(f64, f64)> = Vec::new();
                let mut segments = Vec::new();
                for p in &s.points {
                    if ok(p) {
                        segment.push(*p);
                    } else if !segment.is_empty() {
                        segments.push(std::mem::take(&mut segment));
                    }
                }
                segments.push(segment);
                chart
                    .draw_series(
                        segments.into_iter().filter(|s| s.len() > 1).map(|s| PathElement::new(s, colour.stroke_width(2))),
                    )
                    .map_err(err)?;
            }
            if matches!(s.mark, Mark::Points | Mark::LinePoints) {
                let r = if s.mark == Mark::Points { 3 } else { 2 };
                chart.draw_series(s.points.iter().filter(|p| ok(p)).map(|p| Circle::new(*p, r, colour.filled()))).map_err(err)?;
            }
            if let Mark::Bars { width } = s.mark {
                let bottom = base.1;
                chart
                    .draw_series(s.points.iter().filter(|p| ok(p) && p.1 > bottom).map(|p| {
                        Rectangle::new([(p.0 - width / 2.0, bottom), (p.0 + width / 2.0, p.1)], colour.mix(0.45).filled())
                    }))
                    .map_err(err)?;
            }
        }
        Ok(())
    }
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// The interval to show for these values: padded by 5 % (linear) or to whole decades' neighbours (log).
fn span(values: impl Iterator<Item = f64>, scale: Scale) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return if scale == Scale::Log { (0.1, 1.0) } else { (0.0, 1.0) };
    }
    match scale {
        // Whole decades, so that a log axis always has at least two labelled ticks.
        Scale::Log => (10f64.powf(lo.log10().floor()), 10f64.powf((hi.log10() - 1e-9).ceil().max(lo.log10().floor() + 1.0))),
        Scale::Linear if hi - lo <= hi.abs().max(lo.abs()) * 1e-12 => {
            let pad = (hi.abs() * 0.1).max(0.5);
            (lo - pad, hi + pad)
        }
        Scale::Linear => {
            let pad = (hi - lo) * 0.05;
            (lo - pad, hi + pad)
        }
    }
}

/// A short tick label: `0`, `0.25`, `12`, `1.5e-4`, `2e5`.
pub fn short_number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a < 1e-12 {
        return "0".into();
    }
    if !(1e-3..1e5).contains(&a) {
        let e = a.log10().floor() as i32;
        let m = v / 10f64.powi(e);
        let m = format!("{m:.2}");
        let m = m.trim_end_matches('0').trim_end_matches('.');
        return format!("{m}e{e}");
    }
    let digits = (4 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The viridis colour map at `t` ∈ [0, 1] (clamped; NaN → 0): matplotlib's values at 0, ¼, ½, ¾, 1,
/// linearly interpolated.
pub fn viridis(t: f64) -> [u8; 3] {
    const V: [[f64; 3]; 5] =
        [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f64;
    let c = |k: usize| (V[i][k] + (V[i + 1][k] - V[i][k]) * f).round() as u8;
    [c(0), c(1), c(2)]
}

/// Heat maps of `K × K` matrices side by side on one colour scale: see the [crate doc](crate).
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    pub title: String,
    /// `(panel title, matrix)`; row `i`, column `j` is entry `[i][j]`, row 0 at the top.
    pub panels: Vec<(String, Vec<Vec<f64>>)>,
    pub x_title: String,
    pub y_title: String,
    /// Tick labels of the rows and columns (default: 0, 1, …).
    pub row_labels: Option<Vec<String>>,
    pub col_labels: Option<Vec<String>>,
    /// The colour scale: `lo` dark purple … `hi` yellow; values outside are clamped.
    pub lo: f64,
    pub hi: f64,
    /// The colour bar's title (what the values are).
    pub value_title: String,
}

impl Heatmap {
    pub fn to_svg(&self) -> Result<String, PlotError> {
        let k = self.panels.first().map_or(0, |p| p.1.len()).max(1) as i32;
        let panel_w = 400u32;
        let (bar_w, h) = (110u32, 440u32);
        let w = panel_w * self.panels.len().max(1) as u32 + bar_w;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            let root = root.titled(&self.title, (FONT, TITLE_PX)).map_err(err)?;
            let (panels, bar) = root.split_horizontally(w - bar_w);
            let span = if self.hi > self.lo { self.hi - self.lo } else { 1.0 };
            let labels = |l: &Option<Vec<String>>, i: i32| {
                l.as_ref().and_then(|l| l.get(i as usize).cloned()).unwrap_or_else(|| i.to_string())
            };
            for ((title, m), area) in self.panels.iter().zip(panels.split_evenly((1, self.panels.len().max(1)))) {
                let mut chart = ChartBuilder::on(&area)
                    .caption(title, (FONT, AXIS_TITLE_PX))
                    .margin(8)
                    .x_label_area_size(50)
                    .y_label_area_size(if self.row_labels.is_some() { 100 } else { 50 })
                    .build_cartesian_2d((0..k).into_segmented(), (0..k).into_segmented())
                    .map_err(err)?;
                let centre = |v: &SegmentValue<i32>| match v {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if (0..k).contains(i) => Some(*i),
                    _ => None,
                };
                let x_fmt = |v: &SegmentValue<i32>| centre(v).map(|i| labels(&self.col_labels, i)).unwrap_or_default();
                let y_fmt = |v: &SegmentValue<i32>| centre(v).map(|i| labels(&self.row_labels, k - 1 - i)).unwrap_or_default();
                chart
                    .configure_mesh()
                    .disable_mesh()
                    .x_desc(&self.x_title)
                    .y_desc(&self.y_title)
                    .axis_desc_style((FONT, AXIS_TITLE_PX))
                    .label_style((FONT, TICK_PX))
                    .x_labels(k as usize)
                    .y_labels(k as usize)
                    .x_label_formatter(&x_fmt)
                    .y_label_formatter(&y_fmt)
                    .draw()
                    .map_err(err)?;
                let cells = m.iter().enumerate().flat_map(|(i, row)| {
                    row.iter().enumerate().map(move |(j, &v)| {
                        let (x, y) = (j as i32, k - 1 - i as i32);
                        let c = rgb(viridis((v - self.lo) / span));
                        Rectangle::new(
                            [
                                (SegmentValue::Exact(x), SegmentValue::Exact(y + 1)),
                                (SegmentValue::Exact(x + 1), SegmentValue::Exact(y)),
                            ],
                            c.filled(),
                        )
                    })
                });
                chart.draw_series(cells).map_err(err)?;
            }
            let mut chart = ChartBuilder::on(&bar)
                .margin_top(40)
                .margin_bottom(58)
                .margin_right(8)
                .y_label_area_size(80)
                .build_cartesian_2d(0f64..1f64, self.lo..self.lo + span)
                .map_err(err)?;
            let fmt_tick = |v: &f64| short_number(*v);
            chart
                .configure_mesh()
                .disable_mesh()
                .disable_x_axis()
                .y_desc(&self.value_title)
                .axis_desc_style((FONT, AXIS_TITLE_PX))
                .label_style((FONT, TICK_PX))
                .y_label_formatter(&fmt_tick)
                .y_labels(5)
                .draw()
                .map_err(err)?;
            let steps = 48;
            chart
                .draw_series((0..steps).map(|s| {
                    let (a, b) = (s as f64 / steps as f64, (s + 1) as f64 / steps as f64);
                    Rectangle::new([(0.0, self.lo + a * span), (1.0, self.lo + b * span)], rgb(viridis((a + b) / 2.0)).filled())
                }))
                .map_err(err)?;
            root.present().map_err(err)?;
        }
        let svg = tag_title(&svg, &self.x_title, "x-title");
        Ok(tag_title(&tag_title(&svg, &self.y_title, "y-title"), &self.value_title, "y-title"))
    }
}

/// Adds `class="CLASS"` to every `<text>` element whose content (trimmed) is exactly `title`.
fn tag_title(svg: &str, title: &str, class: &str) -> String {
    if title.is_empty() {
        return svg.to_string();
    }
    let escaped = title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut out = String::with_capacity(svg.len() + 32);
    let mut rest = svg;
    while let Some(i) = rest.find("<text") {
        out.push_str(&rest[..i]);
        let element = &rest[i..];
        let end = element.find("</text>").map_or(element.len(), |e| e + "</text>".len());
        let (tag, content) = element[..end].split_once('>').unwrap_or((&element[..end], ""));
        let content = content.trim_end_matches("</text>").trim();
        if content == escaped && !tag.contains("class=") {
            out.push_str(&format!("<text class=\"{class}\"{}", &element[5..end]));
        } else {
            out.push_str(&element[..end]);
        }
        rest = &element[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string()))
            .collect()
    }

    #[test]
    fn a_chart_has_its_title_axis_titles_legend_and_is_deterministic() {
        let chart = || {
            Chart::new("Loss per epoch", "epoch", "MSE (normalised coefficients)")
                .y_log()
                .series(Series::line("train", BLUE, vec![(1.0, 0.5), (2.0, 0.2), (3.0, f64::NAN), (4.0, 0.05)]))
                .series(Series::new("val", ORANGE, Mark::LinePoints, vec![(1.0, 0.6), (2.0, 0.3), (4.0, 0.1)]))
        };
        let svg = chart().to_svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        assert!(svg.contains("viewBox"), "scalable");
        let t = texts(&svg);
        for want in ["Loss per epoch", "epoch", "MSE (normalised coefficients)", "train", "val"] {
            assert!(t.iter().any(|x| x == want), "no text `{want}` in {t:?}");
        }
        // The y axis title is rotated; both titles are marked.
        assert!(svg.contains("rotate("), "{svg}");
        assert!(svg.contains("class=\"x-title\"") && svg.contains("class=\"y-title\""), "{svg}");
        assert_eq!(chart().to_svg().unwrap(), svg, "same chart, same bytes");
        let other = chart().series(Series::points("extra", GREEN, vec![(2.0, 0.4)])).to_svg().unwrap();
        assert_ne!(other, svg);
        assert!(texts(&other).iter().any(|x| x == "extra"));
    }

    #[test]
    fn one_series_has_no_legend_and_bars_reach_the_axis() {
        let values: Vec<f64> = (0..50).map(|i| (i % 10) as f64 / 10.0).collect();
        let svg = Chart::new("Histogram", "test accuracy (fraction)", "models per bin")
            .series(Series::histogram("final", BLUE, &values, 0.0, 1.0, 10))
            .to_svg()
            .unwrap();
        assert!(!texts(&svg).iter().any(|x| x == "final"), "a single series needs no legend");
        assert_eq!(svg.matches("<rect").count() - 1, 10, "ten bars (plus the background)");
        let h = Series::histogram("h", BLUE, &[0.0, 0.05, 1.0, f64::NAN], 0.0, 1.0, 4);
        assert_eq!(h.points, vec![(0.125, 2.0), (0.375, 0.0), (0.625, 0.0), (0.875, 1.0)]);
    }

    #[test]
    fn empty_and_degenerate_charts_still_render() {
        Chart::new("empty", "x", "y").to_svg().unwrap();
        Chart::new("one point", "x", "y").x_log().series(Series::points("p", RED, vec![(3.0, 3.0)])).to_svg().unwrap();
        Chart::new("all bad", "x", "y")
            .y_log()
            .series(Series::line("l", RED, vec![(1.0, -1.0), (2.0, f64::NAN)]))
            .to_svg()
            .unwrap();
    }

    #[test]
    fn log_axes_span_whole_decades() {
        assert_eq!(span([0.12, 0.9].into_iter(), Scale::Log), (0.1, 1.0));
        assert_eq!(span([2.0, 64.0].into_iter(), Scale::Log), (1.0, 100.0));
        assert_eq!(span([5.0].into_iter(), Scale::Log), (1.0, 10.0));
        assert_eq!(span([1.0, 2.0].into_iter(), Scale::Linear), (0.95, 2.05));
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(0.30000000000000004), "0.3");
        assert_eq!(short_number(12.0), "12");
        assert_eq!(short_number(-3.5), "-3.5");
        assert_eq!(short_number(0.00015), "1.5e-4");
        assert_eq!(short_number(200000.0), "2e5");
    }

    #[test]
    fn heatmap_has_cells_titles_colour_bar_and_is_deterministic() {
        let m = vec![vec![1.0, -1.0], vec![0.0, 1.0]];
        let map = || Heatmap {
            title: "Cosine".into(),
            panels: vec![("epoch 1".into(), m.clone()), ("best epoch".into(), m.clone())],
            x_title: "projection (val pair)".into(),
            y_title: "weight latent (val pair)".into(),
            row_labels: Some(vec!["a".into(), "b".into()]),
            col_labels: None,
            lo: -1.0,
            hi: 1.0,
            value_title: "cosine".into(),
        };
        let svg = map().to_svg().unwrap();
        let t = texts(&svg);
        for want in ["Cosine", "epoch 1", "best epoch", "projection (val pair)", "weight latent (val pair)", "cosine", "a", "b"] {
            assert!(t.iter().any(|x| x == want), "no text `{want}` in {t:?}");
        }
        // 8 cells, the 48-step colour bar, the background.
        assert!(svg.matches("<rect").count() >= 8 + 48, "{}", svg.matches("<rect").count());
        // Entry [0][0] = hi is yellow, [0][1] = lo is dark purple.
        assert!(svg.contains("#FDE725") || svg.contains("#fde725"), "yellow cell");
        assert!(svg.contains("#440154") || svg.contains("#440154"), "purple cell");
        assert_eq!(map().to_svg().unwrap(), svg);
    }

    #[test]
    fn viridis_ends() {
        assert_eq!(viridis(0.0), [68, 1, 84]);
        assert_eq!(viridis(1.0), [253, 231, 37]);
        assert_eq!(viridis(f64::NAN), [68, 1, 84]);
    }
}
