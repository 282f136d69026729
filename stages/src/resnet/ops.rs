//! The layer functions of ResNet-18 whose gradients we control: max-pool, ReLU, batch norm and the
//! cross-entropy loss. All are compositions of candle's device-generic ops (they run on CPU and CUDA
//! alike), arranged so that candle's autodiff yields PyTorch's gradient.
//!
//! * [`max_pool_3x3_s2_p1`]: candle's own `max_pool2d` is not used (its backward is wrong in 0.11.1 and
//!   refuses kernel ≠ stride). The 9 window taps are strided views of the padded input; the winner of
//!   each window is chosen on a *detached* copy (first maximum in row-major window order, as PyTorch's
//!   CPU kernel; padding is −∞ so it never wins) and recorded as 9 one-hot masks; the output is
//!   `Σₖ maskₖ · tapₖ(x)`. Its value is exactly the maximum, and since the masks are constants, autodiff
//!   routes each output gradient to exactly one input element: the winner's. That is the custom
//!   backward, in a form every candle backend runs.
//! * [`relu`]: `x · 1[x > 0]` with the mask constant. candle's `relu` backward passes gradient 1 at
//!   `x = 0` (`ge`), PyTorch passes 0 (`threshold_backward`); this matches PyTorch.
//! * [`batch_norm_train`] / [`batch_norm_eval`]: PyTorch's `BatchNorm2d` (ε = 1e-5) in training mode
//!   (normalise with the batch mean and biased variance; return the batch statistics so that the
//!   caller can update the running ones) and in eval mode (running statistics).
//! * [`cross_entropy`]: mean over the batch of `logsumexp(z) − z_label`, the shift by the row maximum
//!   taken on a detached copy (no gradient through `max`).

use candle_core::{DType, Result, Tensor, D};

/// BatchNorm's ε (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;

/// Output side of a 3×3, stride-2, padding-1 pool (PyTorch's floor rule).
pub fn pool_out(side: usize) -> usize {
    (side + 2 - 3) / 2 + 1
}

/// Pads dims 2 and 3 of `x` (N, C, H, W) by `lo` before and `hi_h` / `hi_w` after with `value`.
fn pad_hw(x: &Tensor, lo: usize, hi_h: usize, hi_w: usize, value: f64) -> Result<Tensor> {
    if value == 0.0 {
        return x.pad_with_zeros(2, lo, hi_h)?.pad_with_zeros(3, lo, hi_w);
    }
    let (n, c, h, w) = x.dims4()?;
    let col = |k: usize, rows: usize| Tensor::full(value, (n, c, rows, k), x.device())?.to_dtype(x.dtype());
    let mut parts = Vec::with_capacity(3);
    if lo > 0 {
        parts.push(col(lo, h)?);
    }
    parts.push(x.clone());
    if hi_w > 0 {
        parts.push(col(hi_w, h)?);
    }
    let x = Tensor::cat(&parts, 3)?;
    let wp = w + lo + hi_w;
    let (device, dtype) = (x.device().clone(), x.dtype());
    let row = |k: usize| Tensor::full(value, (n, c, k, wp), &device)?.to_dtype(dtype);
    let mut parts = Vec::with_capacity(3);
    if lo > 0 {
        parts.push(row(lo)?);
    }
    parts.push(x);
    if hi_h > 0 {
        parts.push(row(hi_h)?);
    }
    Tensor::cat(&parts, 2)
}

/// The 9 taps of 3×3 / stride 2 windows over a padded input of even sides `2(ho+1)` × `2(wo+1)`, in
/// row-major window order; each is `(N, C, ho, wo)`.
fn taps(padded: &Tensor, ho: usize, wo: usize) -> Result<Vec<Tensor>> {
    let (n, c, hp, wp) = padded.dims4()?;
    debug_assert_eq!((hp, wp), (2 * (ho + 1), 2 * (wo + 1)));
    // Row 2i + d of the padded input is (i + d/2, d%2) after splitting each side into (pairs, 2).
    let r = padded.reshape((n, c, ho + 1, 2, wo + 1, 2))?;
    let mut out = Vec::with_capacity(9);
    for di in 0..3 {
        let rows = r.narrow(2, di / 2, ho)?.narrow(3, di % 2, 1)?;
        for dj in 0..3 {
            out.push(rows.narrow(4, dj / 2, wo)?.narrow(5, dj % 2, 1)?.reshape((n, c, ho, wo))?);
        }
    }
    Ok(out)
}

/// `MaxPool2d(kernel_size=3, stride=2, padding=1)` with PyTorch's gradient (see the module docs).
pub fn max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (ho, wo) = (pool_out(h), pool_out(w));
    // Pad to 2(ho+1) × 2(wo+1): one in front, the rest behind (1 or 2 rows/columns).
    let (hi_h, hi_w) = (2 * (ho + 1) - h - 1, 2 * (wo + 1) - w - 1);
    let plain = x.detach();
    let cand = taps(&pad_hw(&plain, 1, hi_h, hi_w, f64::NEG_INFINITY)?, ho, wo)?;
    let mut max = cand[0].clone();
    for c in &cand[1..] {
        max = max.maximum(c)?;
    }
    // One-hot masks of the first maximum in window order.
    let mut taken: Option<Tensor> = None;
    let mut masks = Vec::with_capacity(9);
    for c in &cand {
        let hit = c.eq(&max)?.to_dtype(x.dtype())?;
        let (mask, now) = match &taken {
            None => (hit.clone(), hit),
            Some(t) => {
                let m = (&hit * t.affine(-1.0, 1.0)?)?;
                let now = (t + &m)?;
                (m, now)
            }
        };
        taken = Some(now);
        masks.push(mask);
    }
    // The differentiable path: zero padding (a padded tap is never selected, so its value is unused).
    let live = taps(&pad_hw(x, 1, hi_h, hi_w, 0.0)?, ho, wo)?;
    let mut out: Option<Tensor> = None;
    for (m, t) in masks.iter().zip(&live) {
        let term = (t * m)?;
        out = Some(match out {
            None => term,
            Some(o) => (o + term)?,
        });
    }
    Ok(out.expect("nine taps"))
}

/// ReLU with PyTorch's gradient (0 at 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let mask = x.gt(0.0)?.to_dtype(x.dtype())?;
    x * mask
}

/// Per-channel view `(1, C, 1, 1)` of a `(C)` tensor.
fn chan(t: &Tensor) -> Result<Tensor> {
    t.reshape((1, t.dim(0)?, 1, 1))
}

/// The batch statistics of one training-mode batch norm: the mean and the *biased* variance over
/// (N, H, W) (detached, shape `(C)`), and the count N·H·W (for the unbiased running variance).
#[derive(Debug, Clone)]
pub struct BnBatchStats {
    pub mean: Tensor,
    pub var: Tensor,
    pub count: usize,
}

/// Training-mode `BatchNorm2d`: `(x − mean) / √(var + ε) · weight + bias` with batch statistics.
pub fn batch_norm_train(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<(Tensor, BnBatchStats)> {
    let (n, c, h, w) = x.dims4()?;
    let mean = x.mean_keepdim([0, 2, 3])?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim([0, 2, 3])?;
    let inv = (var.affine(1.0, BN_EPS))?.sqrt()?.recip()?;
    let scale = inv.broadcast_mul(&chan(weight)?)?;
    let y = xc.broadcast_mul(&scale)?.broadcast_add(&chan(bias)?)?;
    let stats = BnBatchStats { mean: mean.detach().reshape(c)?, var: var.detach().reshape(c)?, count: n * h * w };
    Ok((y, stats))
}

/// Eval-mode `BatchNorm2d` with running statistics.
pub fn batch_norm_eval(x: &Tensor, weight: &Tensor, bias: &Tensor, mean: &Tensor, var: &Tensor) -> Result<Tensor> {
    let scale = (weight * var.affine(1.0, BN_EPS)?.sqrt()?.recip()?)?;
    let shift = (bias - (mean * &scale)?)?;
    x.broadcast_mul(&chan(&scale)?)?.broadcast_add(&chan(&shift)?)
}

/// Mean cross-entropy of `logits` (N, K) against `labels` (N, `U32`).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let max = logits.detach().max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&labels.to_dtype(DType::U32)?.unsqueeze(1)?, 1)?;
    (lse - picked)?.mean_all()
}
