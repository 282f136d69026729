//! A PNG heat map of one or more `K × K` matrices side by side, on a shared colour scale.
//!
//! Layout: each panel is `K × K` square cells of [`CELL`] pixels, row `i` / column `j` = entry `[i][j]`
//! (class order), panels separated by a [`GAP`]-pixel white gutter, and a vertical colour bar at the
//! right (top = `hi`, bottom = `lo`). Colours follow the viridis map (dark purple = `lo`, yellow = `hi`);
//! values outside `[lo, hi]` are clamped. There is no text: the caller documents panel order and range.

use std::path::Path;

use image::{ImageEncoder, Rgb, RgbImage};
use wspace_stage_api::StageError;

pub const CELL: u32 = 24;
pub const GAP: u32 = 12;

/// Viridis at 0, 0.25, 0.5, 0.75, 1 (matplotlib), linearly interpolated in between.
const VIRIDIS: [[f64; 3]; 5] =
    [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];

fn colour(t: f64) -> Rgb<u8> {
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f64;
    let c = |k: usize| (VIRIDIS[i][k] + (VIRIDIS[i + 1][k] - VIRIDIS[i][k]) * f).round() as u8;
    Rgb([c(0), c(1), c(2)])
}

/// Renders `panels` (each `K × K`) with values mapped from `[lo, hi]` and returns the PNG bytes.
pub fn render(panels: &[&[Vec<f64>]], lo: f64, hi: f64) -> Result<Vec<u8>, StageError> {
    let k = panels.first().map_or(0, |p| p.len()) as u32;
    let side = k * CELL;
    let bar_w = CELL / 2;
    let width = GAP + panels.len() as u32 * (side + GAP) + bar_w + GAP;
    let height = side + 2 * GAP;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let span = if hi > lo { hi - lo } else { 1.0 };
    for (p, m) in panels.iter().enumerate() {
        let x0 = GAP + p as u32 * (side + GAP);
        for (i, row) in m.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let c = colour((v - lo) / span);
                for dy in 0..CELL {
                    for dx in 0..CELL {
                        img.put_pixel(x0 + j as u32 * CELL + dx, GAP + i as u32 * CELL + dy, c);
                    }
                }
            }
        }
    }
    let xb = GAP + panels.len() as u32 * (side + GAP);
    for y in 0..side {
        let c = colour(1.0 - y as f64 / (side.max(2) - 1) as f64);
        for dx in 0..bar_w {
            img.put_pixel(xb + dx, GAP + y, c);
        }
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(img.as_raw(), width, height, image::ExtendedColorType::Rgb8)
        .map_err(|e| StageError::msg(format!("cannot encode the heat map PNG: {e}")))?;
    Ok(png)
}

/// [`render`] into the file `path`.
pub fn write(path: &Path, panels: &[&[Vec<f64>]], lo: f64, hi: f64) -> Result<(), StageError> {
    let png = render(panels, lo, hi)?;
    std::fs::write(path, png).map_err(|e| StageError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_decodable_png_of_the_expected_size() {
        let m = vec![vec![1.0, 0.5], vec![0.5, 1.0]];
        let png = render(&[&m, &m], 0.0, 1.0).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (GAP + 2 * (2 * CELL + GAP) + CELL / 2 + GAP, 2 * CELL + 2 * GAP));
        assert_eq!(*img.get_pixel(GAP, GAP), Rgb([253, 231, 37])); // entry [0][0] = 1 = hi → yellow
        assert_eq!(*img.get_pixel(GAP + CELL, GAP), colour(0.5)); // entry [0][1]
    }
}
