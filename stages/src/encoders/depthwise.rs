//! Depthwise 2-D convolution with TensorFlow "same" padding on channels-last activations, fused with
//! a per-channel bias and an optional ReLU6.
//!
//! ```text
//! x [B, H, W, C] (contiguous), weight [k, k, C], bias [C]  →  y [B, ⌈H/s⌉, ⌈W/s⌉, C]
//! pad_total = max((⌈H/s⌉ − 1)·s + k − H, 0),  pad_top = ⌊pad_total / 2⌋   (width likewise)
//! y[b, oy, ox, c] = bias[c] + Σ_{i,j < k} weight[i, j, c] · x[b, oy·s + i − pad_top, ox·s + j − pad_left, c]
//! ```
//! (out-of-range `x` reads as 0), then `min(max(y, 0), 6)` when `relu6`.
//!
//! Why a custom op: candle 0.11 runs a grouped convolution as one convolution per group followed by a
//! concatenation, i.e. 1,152 separate convolutions for one EfficientNet depthwise layer. On the CPU this
//! op is a direct loop, parallel over output rows, with channels innermost (so it vectorises); the loop
//! order is fixed, so results do not depend on the thread count. On other devices
//! [`depthwise_same`] falls back to candle's own padded grouped convolution.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// TensorFlow "same" padding along one axis: `(output length, padding before, padding after)`.
pub fn same_padding(len: usize, kernel: usize, stride: usize) -> (usize, usize, usize) {
    let out = len.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(len);
    (out, total / 2, total - total / 2)
}

/// The op; see the [module doc](self).
struct DepthwiseSame {
    kernel: usize,
    stride: usize,
    relu6: bool,
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("depthwise conv: {what} must be f32") };
    let Some((start, end)) = l.contiguous_offsets() else { candle_core::bail!("depthwise conv: {what} must be contiguous") };
    Ok(&v[start..end])
}

impl CustomOp3 for DepthwiseSame {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-same"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, h, w, c) = l1.shape().dims4()?;
        let (k, s) = (self.kernel, self.stride);
        if l2.shape().dims() != [k, k, c] || l3.shape().dims() != [c] {
            candle_core::bail!(
                "depthwise conv: weight {:?} / bias {:?} do not fit input {:?}",
                l2.shape(),
                l3.shape(),
                l1.shape()
            )
        }
        let (x, wt, bias) = (contiguous(s1, l1, "input")?, contiguous(s2, l2, "weight")?, contiguous(s3, l3, "bias")?);
        let (oh, pt, _) = same_padding(h, k, s);
        let (ow, pl, _) = same_padding(w, k, s);
        let mut y = vec![0f32; b * oh * ow * c];
        y.par_chunks_mut(ow * c).enumerate().for_each(|(row, out)| {
            let (bi, oy) = (row / oh, row % oh);
            for px in out.chunks_exact_mut(c) {
                px.copy_from_slice(bias);
            }
            for i in 0..k {
                let iy = (oy * s + i) as isize - pt as isize;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let in_row = &x[(bi * h + iy as usize) * w * c..][..w * c];
                for j in 0..k {
                    let wv = &wt[(i * k + j) * c..][..c];
                    for (ox, px) in out.chunks_exact_mut(c).enumerate() {
                        let ix = (ox * s + j) as isize - pl as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let xv = &in_row[ix as usize * c..][..c];
                        for ((o, &a), &wc) in px.iter_mut().zip(xv).zip(wv) {
                            *o += a * wc;
                        }
                    }
                }
            }
            if self.relu6 {
                for o in out.iter_mut() {
                    *o = o.clamp(0.0, 6.0);
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from_dims(&[b, oh, ow, c])))
    }
}

/// Depthwise convolution with "same" padding, bias and optional ReLU6 (see the [module doc](self)).
/// `x`: `[B, H, W, C]`, `weight`: `[k, k, C]`, `bias`: `[C]`, all f32.
pub fn depthwise_same(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize, relu6: bool) -> Result<Tensor> {
    let (_, h, w, c) = x.dims4()?;
    let (k, _, _) = weight.dims3()?;
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let op = DepthwiseSame { kernel: k, stride, relu6 };
        return x.contiguous()?.apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &op);
    }
    // Other devices: candle's grouped convolution on an explicitly padded NCHW tensor.
    let (_, pt, pb) = same_padding(h, k, stride);
    let (_, pl, pr) = same_padding(w, k, stride);
    let xn = x.permute((0, 3, 1, 2))?.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
    let kernel = weight.permute((2, 0, 1))?.reshape((c, 1, k, k))?.contiguous()?;
    let y = xn.conv2d(&kernel, 0, stride, 1, c)?.broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
    let y = if relu6 { y.clamp(0f32, 6f32)? } else { y };
    y.permute((0, 2, 3, 1))?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_padding_matches_tensorflow() {
        // TF: out = ceil(in / s); pad_total = max((out - 1) * s + k - in, 0); the odd pixel goes last.
        assert_eq!(same_padding(64, 3, 2), (32, 0, 1));
        assert_eq!(same_padding(32, 5, 2), (16, 1, 2));
        assert_eq!(same_padding(7, 5, 1), (7, 2, 2));
        assert_eq!(same_padding(1, 3, 2), (1, 1, 1));
    }

    /// The CPU op against candle's own grouped convolution (the non-CPU fallback path, forced here by
    /// calling it on a permuted copy) for every kernel size and stride EfficientNet-Lite0 uses.
    #[test]
    fn cpu_op_matches_candle_grouped_conv() -> Result<()> {
        let dev = Device::Cpu;
        for (k, s, h, w) in [(3, 1, 7, 6), (3, 2, 8, 9), (5, 1, 5, 5), (5, 2, 9, 8), (3, 2, 1, 1)] {
            let c = 5;
            let n = 2 * h * w * c;
            let x = Tensor::from_vec((0..n).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 3.0).collect(), (2, h, w, c), &dev)?;
            let wt = Tensor::from_vec((0..k * k * c).map(|i| (i * 13 % 17) as f32 / 8.0 - 1.0).collect(), (k, k, c), &dev)?;
            let bias = Tensor::from_vec((0..c).map(|i| i as f32 * 0.3 - 0.6).collect(), c, &dev)?;
            for relu6 in [false, true] {
                let got = depthwise_same(&x, &wt, &bias, s, relu6)?;
                let (_, pt, pb) = same_padding(h, k, s);
                let (_, pl, pr) = same_padding(w, k, s);
                let xn = x.permute((0, 3, 1, 2))?.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
                let kern = wt.permute((2, 0, 1))?.reshape((c, 1, k, k))?.contiguous()?;
                let want = xn.conv2d(&kern, 0, s, 1, c)?.broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
                let want = if relu6 { want.clamp(0f32, 6f32)? } else { want };
                let want = want.permute((0, 2, 3, 1))?;
                assert_eq!(got.dims(), want.dims());
                let err = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                // Two f32 evaluation orders of k² products plus a bias: each within (k² + 1)·u·(Σ|x·w| + |b|)
                // of the exact value (the classic γₙ bound), so they differ by at most twice that.
                // max|x| · (largest per-channel Σ|w|) bounds Σ|x·w|; |b| ≤ 0.6.
                let xm = x.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                let wsum = wt.abs()?.sum((0, 1))?.max(0)?.to_scalar::<f32>()?;
                let bound = 2.0 * (k * k + 1) as f32 * (f32::EPSILON / 2.0) * (xm * wsum + 0.6);
                assert!(err <= bound, "k={k} s={s} {h}x{w} relu6={relu6}: max error {err} > {bound}");
            }
        }
        Ok(())
    }
}
