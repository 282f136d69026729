//! Small PNG line charts, drawn with the `image` crate (no font files, no plotting dependency).
//!
//! A chart is 640 × 400 pixels: white background, light-grey grid lines at the axis ticks, the x axis
//! at the bottom and the y axis at the left, each tick labelled with a built-in 3 × 5 pixel digit font
//! (drawn at 2×). Every [`Series`] is a 2-pixel polyline with a dot at each point; non-finite points
//! (and non-positive ones on a log axis) break the line. There are no titles or legends: the caller
//! documents what each colour means (module docs, `metrics.json`).

use std::path::Path;

use image::{ImageEncoder, Rgb, RgbImage};
use wspace_stage_api::StageError;

use crate::data::files;

pub const BLUE: [u8; 3] = [31, 119, 180];
pub const ORANGE: [u8; 3] = [255, 127, 14];
pub const GREEN: [u8; 3] = [44, 160, 44];
pub const RED: [u8; 3] = [214, 39, 40];
pub const PURPLE: [u8; 3] = [148, 103, 189];
pub const GREY: [u8; 3] = [127, 127, 127];

const W: u32 = 640;
const H: u32 = 400;
const LEFT: u32 = 70;
const RIGHT: u32 = 15;
const TOP: u32 = 15;
const BOTTOM: u32 = 30;

/// Axis scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

/// One line: `(x, y)` points in drawing order and its colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub points: Vec<(f64, f64)>,
    pub colour: [u8; 3],
}

/// Glyphs of the tick labels, 3 × 5, one row per 3 bits (MSB left).
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => return None,
    })
}

const SCALE: u32 = 2;

fn text_width(s: &str) -> u32 {
    s.chars().count() as u32 * 4 * SCALE
}

fn draw_text(img: &mut RgbImage, x: i64, y: i64, s: &str) {
    for (i, c) in s.chars().enumerate() {
        let Some(g) = glyph(c) else { continue };
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for dy in 0..SCALE as i64 {
                        for dx in 0..SCALE as i64 {
                            let px = x + (i as i64 * 4 + col) * SCALE as i64 + dx;
                            let py = y + row as i64 * SCALE as i64 + dy;
                            put(img, px, py, [0, 0, 0]);
                        }
                    }
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: [u8; 3], width: i64) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = ((x0 + (x1 - x0) * t).round() as i64, (y0 + (y1 - y0) * t).round() as i64);
        for d in 0..width {
            put(img, x, y + d, c);
            put(img, x + d, y, c);
        }
    }
}

/// A short label: `0.25`, `12`, `1e-3`.
fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let e = a.log10().floor() as i32;
        let m = v / 10f64.powi(e);
        return if (m.round() - m).abs() < 1e-9 { format!("{}e{e}", m.round()) } else { format!("{m:.1}e{e}") };
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// Tick positions (in data units) for `[lo, hi]`.
fn ticks(lo: f64, hi: f64, scale: Scale) -> Vec<f64> {
    match scale {
        Scale::Log => {
            let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
            let inside = |v: &f64| *v >= lo * 0.999 && *v <= hi * 1.001;
            let decades: Vec<f64> = (a..=b).map(|e| 10f64.powi(e)).filter(inside).collect();
            if decades.len() >= 3 {
                return decades;
            }
            let t: Vec<f64> = (a..=b).flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e))).filter(inside).collect();
            if t.len() < 2 {
                vec![lo, hi]
            } else {
                t
            }
        }
        Scale::Linear => {
            let span = (hi - lo).max(1e-300);
            let raw = span / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
            let start = (lo / step).ceil() as i64;
            let end = (hi / step).floor() as i64;
            (start..=end).map(|i| i as f64 * step).collect()
        }
    }
}

fn range(values: impl Iterator<Item = f64>, scale: Scale) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (scale == Scale::Linear || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return if scale == Scale::Log { (0.1, 1.0) } else { (0.0, 1.0) };
    }
    if hi - lo <= hi.abs() * 1e-12 {
        return match scale {
            Scale::Log => (lo / 2.0, hi * 2.0),
            Scale::Linear => (lo - 0.5 - lo.abs() * 0.1, hi + 0.5 + hi.abs() * 0.1),
        };
    }
    match scale {
        Scale::Log => (lo, hi),
        Scale::Linear => {
            let pad = (hi - lo) * 0.05;
            (lo - pad, hi + pad)
        }
    }
}

/// Renders the series as a PNG (see the module doc) and returns its bytes.
pub fn render_lines(series: &[Series], xs: Scale, ys: Scale) -> Result<Vec<u8>, StageError> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let (x0, x1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)), xs);
    let (y0, y1) = range(series.iter().flat_map(|s| s.points.iter().map(|p| p.1)), ys);
    let t = |v: f64, s: Scale| if s == Scale::Log { v.log10() } else { v };
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let px = |x: f64| LEFT as f64 + (t(x, xs) - t(x0, xs)) / (t(x1, xs) - t(x0, xs)) * pw;
    let py = |y: f64| TOP as f64 + ph - (t(y, ys) - t(y0, ys)) / (t(y1, ys) - t(y0, ys)) * ph;

    for v in ticks(x0, x1, xs) {
        let x = px(v);
        line(&mut img, (x, TOP as f64), (x, (H - BOTTOM) as f64), [225, 225, 225], 1);
        let s = label(v);
        draw_text(&mut img, x as i64 - text_width(&s) as i64 / 2, (H - BOTTOM + 8) as i64, &s);
    }
    for v in ticks(y0, y1, ys) {
        let y = py(v);
        line(&mut img, (LEFT as f64, y), ((W - RIGHT) as f64, y), [225, 225, 225], 1);
        let s = label(v);
        draw_text(&mut img, LEFT as i64 - 6 - text_width(&s) as i64, y as i64 - 5, &s);
    }
    line(&mut img, (LEFT as f64, TOP as f64), (LEFT as f64, (H - BOTTOM) as f64), [0, 0, 0], 1);
    line(&mut img, (LEFT as f64, (H - BOTTOM) as f64), ((W - RIGHT) as f64, (H - BOTTOM) as f64), [0, 0, 0], 1);

    let ok = |(x, y): (f64, f64)| {
        x.is_finite() && y.is_finite() && (xs == Scale::Linear || x > 0.0) && (ys == Scale::Linear || y > 0.0)
    };
    for s in series {
        let mut prev: Option<(f64, f64)> = None;
        for &p in &s.points {
            if !ok(p) {
                prev = None;
                continue;
            }
            let q = (px(p.0), py(p.1));
            if let Some(a) = prev {
                line(&mut img, a, q, s.colour, 2);
            }
            for dy in -2..=2 {
                for dx in -2..=2 {
                    put(&mut img, q.0 as i64 + dx, q.1 as i64 + dy, s.colour);
                }
            }
            prev = Some(q);
        }
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(img.as_raw(), W, H, image::ExtendedColorType::Rgb8)
        .map_err(|e| StageError::msg(format!("cannot encode PNG: {e}")))?;
    Ok(png)
}

/// [`render_lines`] into a file.
pub fn write_lines(path: &Path, series: &[Series], xs: Scale, ys: Scale) -> Result<(), StageError> {
    files::write(path, &render_lines(series, xs, ys)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_ticks_are_short_and_inside_the_range() {
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(12.0), "12");
        assert_eq!(label(0.0001), "1e-4");
        let t = ticks(0.03, 0.97, Scale::Linear);
        assert!(t.len() >= 3 && t.iter().all(|v| (0.03..=0.97).contains(v)), "{t:?}");
        assert_eq!(ticks(0.002, 3.0, Scale::Log), vec![0.01, 0.1, 1.0]);
        assert_eq!(ticks(2.0, 64.0, Scale::Log), vec![2.0, 5.0, 10.0, 20.0, 50.0]);
    }

    #[test]
    fn renders_a_png_with_nan_and_single_points() {
        let s = Series { points: vec![(1.0, 0.5), (2.0, f64::NAN), (3.0, 0.1)], colour: BLUE };
        let png = render_lines(&[s, Series { points: vec![(2.0, 2.0)], colour: RED }], Scale::Log, Scale::Log).unwrap();
        assert!(png.starts_with(&[0x89, b'P', b'N', b'G']));
        let empty = render_lines(&[], Scale::Linear, Scale::Linear).unwrap();
        assert!(!empty.is_empty());
    }
}
