//! Image preprocessing for the encoders: dataset bytes → a normalised `[3, S, S]` f32 image.
//!
//! 1. **Channels**: a grey image (`C = 1`) is replicated to R = G = B; RGB (`C = 3`) is used as is.
//! 2. **Resize** to `S × S` by bilinear interpolation with half-pixel centres, i.e. source coordinate
//!    `u = (x + ½)·W/S − ½` clamped to `[0, W − 1]` (PyTorch `F.interpolate(mode="bilinear",
//!    align_corners=False)`, no antialiasing). The aspect ratio is not kept (dataset images are square).
//! 3. **Normalise** per encoder ([`Normalisation`]): EfficientNet-Lite0 `(v − 127) / 128`; CLIP
//!    `(v/255 − mean_c) / std_c` with CLIP's mean and std.

use super::clip::{CLIP_MEAN, CLIP_STD};

/// How pixel values `v ∈ [0, 255]` are mapped before the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalisation {
    /// `(v − 127) / 128` (EfficientNet-Lite's TF preprocessing).
    Lite,
    /// `(v/255 − mean_c) / std_c` (CLIPImageProcessor).
    Clip,
}

impl Normalisation {
    fn apply(self, channel: usize, v: f32) -> f32 {
        match self {
            Normalisation::Lite => (v - 127.0) / 128.0,
            Normalisation::Clip => (v / 255.0 - CLIP_MEAN[channel]) / CLIP_STD[channel],
        }
    }
}

/// Interpolation taps along one axis: for each output index, `(lower source index, upper, weight of upper)`.
fn taps(src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|x| {
            let u = ((x as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
            let lo = u.floor() as usize;
            let hi = (lo + 1).min(src - 1);
            (lo, hi, (u - lo as f64) as f32)
        })
        .collect()
}

/// `image` (`channels × height × width` bytes, `channels` 1 or 3) → `[3, size, size]` f32, appended to
/// `out`. See the [module doc](self).
pub fn preprocess_into(
    image: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    size: usize,
    norm: Normalisation,
    out: &mut Vec<f32>,
) {
    let ty = taps(height, size);
    let tx = taps(width, size);
    for c in 0..3 {
        let plane = &image[(if channels == 1 { 0 } else { c }) * height * width..][..height * width];
        for &(y0, y1, fy) in &ty {
            for &(x0, x1, fx) in &tx {
                let p = |y: usize, x: usize| plane[y * width + x] as f32;
                let top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * fx;
                let bottom = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * fx;
                out.push(norm.apply(c, top + (bottom - top) * fy));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_only_normalises_and_replicates_grey() {
        let img = [0u8, 127, 255, 1];
        let mut out = Vec::new();
        preprocess_into(&img, 1, 2, 2, 2, Normalisation::Lite, &mut out);
        let want = [-127.0 / 128.0, 0.0, 1.0, -126.0 / 128.0];
        assert_eq!(out.len(), 12);
        for c in 0..3 {
            assert_eq!(&out[c * 4..c * 4 + 4], &want);
        }
    }

    /// Expected values from PyTorch:
    /// `F.interpolate(torch.tensor([[[[0., 100.], [200., 255.]]]]), size=4, mode="bilinear", align_corners=False)`
    /// → rows [0, 25, 75, 100], [50, 72.1875, 116.5625, 138.75], [150, 166.5625, 199.6875, 216.25],
    /// [200, 213.75, 241.25, 255] (torch 2.15).
    #[test]
    fn bilinear_upsampling_matches_pytorch() {
        let img = [0u8, 100, 200, 255];
        let mut out = Vec::new();
        preprocess_into(&img, 1, 2, 2, 4, Normalisation::Lite, &mut out);
        let want = [
            0.0, 25.0, 75.0, 100.0, 50.0, 72.1875, 116.5625, 138.75, 150.0, 166.5625, 199.6875, 216.25, 200.0, 213.75, 241.25,
            255.0,
        ];
        let got: Vec<f32> = out[..16].iter().map(|v| v * 128.0 + 127.0).collect();
        // Interpolated in f32 (values ≤ 255, ulp 1.5e-5), normalised and mapped back (×128, two more
        // roundings): a few ulps of 255 ≈ 1e-4; the expected values are exact dyadic fractions. 1e-3 = 10×.
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "{got:?}");
        }
    }

    #[test]
    fn rgb_channels_keep_their_order_and_clip_normalisation() {
        let img = [255u8, 0, 128];
        let mut out = Vec::new();
        preprocess_into(&img, 3, 1, 1, 1, Normalisation::Clip, &mut out);
        for (c, v) in [255.0f32, 0.0, 128.0].iter().enumerate() {
            // The same f32 formula up to operation order: ≤ 3 roundings of values ≤ 2.2 (ulp 2.4e-7): 7e-7.
            assert!((out[c] - (v / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]).abs() < 1e-6);
        }
    }
}
