//! Lane-batched layer kernels: forward and hand-written backward of conv, 2×2 max-pool, tanh, linear and
//! softmax cross-entropy.
//!
//! # Layout
//! Every activation of a block of [`L`] = 16 images is stored *lane-innermost*: a per-image tensor of
//! shape `[C, H, W]` becomes a slice of `C·H·W·L` floats with element `(c, y, x)` of image `l` at
//! `((c·H + y)·W + x)·L + l`. A "vector" [`V`] is the 16 lanes of one element. Every kernel is then a
//! loop over elements whose body works on whole vectors (the compiler turns the 16-lane loops into SIMD
//! of whatever width the enabled target features give), and weights are scalars broadcast across lanes.
//! Lanes never mix except in weight gradients, which accumulate lane-wise and are reduced by a fixed
//! pairwise tree ([`hsum`]) at the end of each kernel, so results are bit-identical whatever the SIMD
//! width. No kernel allocates; no float operation is fused (Rust never contracts `a*b + c`).
//!
//! # Maths (per image; `⋆` valid cross-correlation, stride 1, no padding)
//! * conv: `y[o, i, j] = b[o] + Σ_{c, u, v} W[o, c, u, v] · x[c, i+u, j+v]`, `W: [O, C, K, K]`,
//!   `x: [C, H, W]`, `y: [O, H−K+1, W−K+1]`. Backward, with upstream `g = ∂ℓ/∂y`:
//!   `∂ℓ/∂W[o, c, u, v] = Σ_{i, j} g[o, i, j] · x[c, i+u, j+v]` (summed over the images too),
//!   `∂ℓ/∂b[o] = Σ_{i, j} g[o, i, j]`, `∂ℓ/∂x[c, p, q] = Σ_{o, u, v} W[o, c, u, v] · g[o, p−u, q−v]`
//!   (terms with the output index out of range omitted).
//! * linear is conv with `K = H = W = 1`: `y = W x + b`, `W: [O, I]`; `∂W = g xᵀ`, `∂b = g`, `∂x = Wᵀ g`.
//! * max-pool 2×2 stride 2: `y[c, i, j] = max` of the window `x[c, 2i..2i+2, 2j..2j+2]` scanned row-major;
//!   the argmax is the *first* maximum (a later value wins only if strictly greater, or NaN), as in
//!   PyTorch. Backward routes `g[c, i, j]` to the argmax element alone; the other three get 0.
//! * tanh: `y = tanh(x)`, `∂ℓ/∂x = g · (1 − y²)`. [`tanh_fast`] is a branch-free rational approximation
//!   (a few ulp; exact `x` for `|x| < 4·10⁻⁴`) so that it vectorises.
//! * softmax cross-entropy over 3 logits `z`, label `t`: `ℓ = logsumexp(z) − z[t]`, mean over the batch
//!   of `n` images; `∂ℓ/∂z[k] = (softmax(z)[k] − [k = t]) / n`. Padding lanes (a short last block) get
//!   zero gradient, so they contribute nothing anywhere.

/// Lanes (images) per block.
pub const L: usize = 16;
/// One element of a tensor across the 16 lanes.
pub type V = [f32; L];

#[inline(always)]
fn lv(s: &[f32], i: usize) -> &V {
    debug_assert!(i * L + L <= s.len());
    // SAFETY: every caller asserts on entry that its slices cover the largest index it uses.
    unsafe { &*(s.as_ptr().add(i * L) as *const V) }
}

#[inline(always)]
fn lv_mut(s: &mut [f32], i: usize) -> &mut V {
    debug_assert!(i * L + L <= s.len());
    // SAFETY: as in `lv`.
    unsafe { &mut *(s.as_mut_ptr().add(i * L) as *mut V) }
}

#[inline(always)]
fn at(s: &[f32], i: usize) -> f32 {
    debug_assert!(i < s.len());
    // SAFETY: as in `lv`.
    unsafe { *s.get_unchecked(i) }
}

/// Sum of the 16 lanes by a fixed pairwise tree.
#[inline(always)]
pub fn hsum(v: &V) -> f32 {
    let mut a = [0.0f32; 8];
    for i in 0..8 {
        a[i] = v[i] + v[i + 8];
    }
    let b = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (b[0] + b[2]) + (b[1] + b[3])
}

/// A 16-lane f32 vector in registers. The kernels below are generic over it so that the multiply-adds
/// run along the lanes whatever the compiler's vectoriser would prefer; each implementation does the
/// same IEEE operations (a multiply, then an add: never fused), so all give the same bits.
///
/// The `x86_64` implementations use target-feature intrinsics: they must only run inside functions
/// compiled with (and CPUs that have) that feature — `net` guarantees this; they are not exported.
pub(crate) trait Lanes: Copy {
    fn splat(x: f32) -> Self;
    fn load(v: &V) -> Self;
    fn store(self, v: &mut V);
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// `self + a·b` (rounded twice).
    #[inline(always)]
    fn mul_acc(self, a: Self, b: Self) -> Self {
        self.add(a.mul(b))
    }
}

/// Plain arrays; the compiler vectorises what it can.
#[derive(Clone, Copy)]
pub(crate) struct Portable(V);

impl Lanes for Portable {
    #[inline(always)]
    fn splat(x: f32) -> Self {
        Portable([x; L])
    }
    #[inline(always)]
    fn load(v: &V) -> Self {
        Portable(*v)
    }
    #[inline(always)]
    fn store(self, v: &mut V) {
        *v = self.0;
    }
    #[inline(always)]
    fn add(mut self, o: Self) -> Self {
        for l in 0..L {
            self.0[l] += o.0[l];
        }
        self
    }
    #[inline(always)]
    fn mul(mut self, o: Self) -> Self {
        for l in 0..L {
            self.0[l] *= o.0[l];
        }
        self
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, V};
    use std::arch::x86_64::*;

    /// One AVX-512 register.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(__m512);

    // SAFETY (all unsafe blocks in this module): `V` is 16 contiguous f32, matching the unaligned
    // loads/stores; the feature requirement is upheld by `net`, which only instantiates these types
    // inside `#[target_feature]` functions it calls after checking the CPU.
    impl Lanes for Avx512 {
        #[inline(always)]
        fn splat(x: f32) -> Self {
            Avx512(unsafe { _mm512_set1_ps(x) })
        }
        #[inline(always)]
        fn load(v: &V) -> Self {
            Avx512(unsafe { _mm512_loadu_ps(v.as_ptr()) })
        }
        #[inline(always)]
        fn store(self, v: &mut V) {
            unsafe { _mm512_storeu_ps(v.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            Avx512(unsafe { _mm512_add_ps(self.0, o.0) })
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            Avx512(unsafe { _mm512_mul_ps(self.0, o.0) })
        }
    }

    /// Two AVX registers.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(__m256, __m256);

    impl Lanes for Avx2 {
        #[inline(always)]
        fn splat(x: f32) -> Self {
            unsafe { Avx2(_mm256_set1_ps(x), _mm256_set1_ps(x)) }
        }
        #[inline(always)]
        fn load(v: &V) -> Self {
            unsafe { Avx2(_mm256_loadu_ps(v.as_ptr()), _mm256_loadu_ps(v.as_ptr().add(8))) }
        }
        #[inline(always)]
        fn store(self, v: &mut V) {
            unsafe {
                _mm256_storeu_ps(v.as_mut_ptr(), self.0);
                _mm256_storeu_ps(v.as_mut_ptr().add(8), self.1);
            }
        }
        #[inline(always)]
        fn add(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_add_ps(self.0, o.0), _mm256_add_ps(self.1, o.1)) }
        }
        #[inline(always)]
        fn mul(self, o: Self) -> Self {
            unsafe { Avx2(_mm256_mul_ps(self.0, o.0), _mm256_mul_ps(self.1, o.1)) }
        }
    }
}

/// conv forward: `y = b + W ⋆ x` for `CO` output channels (see the module docs for shapes).
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub(crate) fn conv_forward<S: Lanes, const CO: usize>(
    x: &[f32],
    ci_n: usize,
    h: usize,
    w: usize,
    k: usize,
    wt: &[f32],
    b: &[f32],
    y: &mut [f32],
) {
    let (oh, ow) = (h - k + 1, w - k + 1);
    let kk = ci_n * k * k;
    assert!(x.len() >= ci_n * h * w * L && y.len() >= CO * oh * ow * L);
    assert!(wt.len() >= CO * kk && b.len() >= CO);
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = [S::splat(0.0); CO];
            for co in 0..CO {
                acc[co] = S::splat(at(b, co));
            }
            for ci in 0..ci_n {
                for ky in 0..k {
                    for kx in 0..k {
                        let xv = S::load(lv(x, (ci * h + oy + ky) * w + ox + kx));
                        let wi = (ci * k + ky) * k + kx;
                        for co in 0..CO {
                            acc[co] = acc[co].mul_acc(S::splat(at(wt, co * kk + wi)), xv);
                        }
                    }
                }
            }
            for co in 0..CO {
                acc[co].store(lv_mut(y, (co * oh + oy) * ow + ox));
            }
        }
    }
}

/// conv weight and bias gradients, accumulated (`+=`) into `dw: [CO, CI, K, K]` and `db: [CO]`.
/// `COB` output channels are done per pass (register blocking); it must divide `co_n`.
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub(crate) fn conv_backward_weight<S: Lanes, const COB: usize, const K: usize>(
    x: &[f32],
    ci_n: usize,
    h: usize,
    w: usize,
    dy: &[f32],
    co_n: usize,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let (oh, ow) = (h - K + 1, w - K + 1);
    assert!(co_n.is_multiple_of(COB));
    assert!(x.len() >= ci_n * h * w * L && dy.len() >= co_n * oh * ow * L);
    assert!(dw.len() >= co_n * ci_n * K * K && db.len() >= co_n);
    for cob in (0..co_n).step_by(COB) {
        for ci in 0..ci_n {
            for ky in 0..K {
                let mut acc = [[S::splat(0.0); K]; COB];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let xb = (ci * h + oy + ky) * w + ox;
                        let mut xs = [S::splat(0.0); K];
                        for kx in 0..K {
                            xs[kx] = S::load(lv(x, xb + kx));
                        }
                        for j in 0..COB {
                            let d = S::load(lv(dy, ((cob + j) * oh + oy) * ow + ox));
                            for kx in 0..K {
                                acc[j][kx] = acc[j][kx].mul_acc(d, xs[kx]);
                            }
                        }
                    }
                }
                for j in 0..COB {
                    for kx in 0..K {
                        let mut a = [0.0f32; L];
                        acc[j][kx].store(&mut a);
                        dw[(((cob + j) * ci_n + ci) * K + ky) * K + kx] += hsum(&a);
                    }
                }
            }
        }
    }
    for co in 0..co_n {
        let mut acc = S::splat(0.0);
        for p in 0..oh * ow {
            acc = acc.add(S::load(lv(dy, co * oh * ow + p)));
        }
        let mut a = [0.0f32; L];
        acc.store(&mut a);
        db[co] += hsum(&a);
    }
}

/// conv input gradient (overwrites `dx: [CI, OH+K−1, OW+K−1]`).
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub(crate) fn conv_backward_input<S: Lanes, const CI: usize>(
    dy: &[f32],
    co_n: usize,
    oh: usize,
    ow: usize,
    k: usize,
    wt: &[f32],
    dx: &mut [f32],
) {
    let (h, w) = (oh + k - 1, ow + k - 1);
    assert!(dy.len() >= co_n * oh * ow * L && dx.len() >= CI * h * w * L);
    assert!(wt.len() >= co_n * CI * k * k);
    for iy in 0..h {
        let (ky_lo, ky_hi) = ((iy + 1).saturating_sub(oh), iy.min(k - 1));
        for ix in 0..w {
            let (kx_lo, kx_hi) = ((ix + 1).saturating_sub(ow), ix.min(k - 1));
            let mut acc = [S::splat(0.0); CI];
            for ky in ky_lo..=ky_hi {
                for kx in kx_lo..=kx_hi {
                    for co in 0..co_n {
                        let d = S::load(lv(dy, (co * oh + iy - ky) * ow + ix - kx));
                        for ci in 0..CI {
                            acc[ci] = acc[ci].mul_acc(S::splat(at(wt, ((co * CI + ci) * k + ky) * k + kx)), d);
                        }
                    }
                }
            }
            for ci in 0..CI {
                acc[ci].store(lv_mut(dx, (ci * h + iy) * w + ix));
            }
        }
    }
}

/// linear forward `y = W x + b` with `W: [O, I]` (conv with `K = H = W = 1`).
#[inline(always)]
pub(crate) fn linear_forward<S: Lanes, const O: usize>(x: &[f32], i_n: usize, wt: &[f32], b: &[f32], y: &mut [f32]) {
    conv_forward::<S, O>(x, i_n, 1, 1, 1, wt, b, y)
}

/// linear weight/bias gradients, accumulated: `dW += g xᵀ`, `db += g` (summed over lanes).
#[inline(always)]
pub(crate) fn linear_backward_weight<S: Lanes, const OB: usize>(
    x: &[f32],
    i_n: usize,
    dy: &[f32],
    o_n: usize,
    dw: &mut [f32],
    db: &mut [f32],
) {
    conv_backward_weight::<S, OB, 1>(x, i_n, 1, 1, dy, o_n, dw, db)
}

/// linear input gradient `dx = Wᵀ g` (overwrites).
#[inline(always)]
pub(crate) fn linear_backward_input<S: Lanes, const I: usize>(dy: &[f32], o_n: usize, wt: &[f32], dx: &mut [f32]) {
    conv_backward_input::<S, I>(dy, o_n, 1, 1, 1, wt, dx)
}

/// 2×2 stride-2 max-pool over `[c, h, w]` (h, w even) into `y: [c, h/2, w/2]`, with the argmax
/// (0..4, row-major in the window) per lane in `idx` (same indexing as `y`).
#[inline(always)]
pub fn maxpool2_forward(x: &[f32], c: usize, h: usize, w: usize, y: &mut [f32], idx: &mut [u8]) {
    let (ph, pw) = (h / 2, w / 2);
    assert!(x.len() >= c * h * w * L && y.len() >= c * ph * pw * L && idx.len() >= c * ph * pw * L);
    for ch in 0..c {
        for py in 0..ph {
            for px in 0..pw {
                let top = (ch * h + 2 * py) * w + 2 * px;
                let win = [lv(x, top), lv(x, top + 1), lv(x, top + w), lv(x, top + w + 1)];
                let o = (ch * ph + py) * pw + px;
                let mut m = *win[0];
                let mut id = [0u8; L];
                for (j, v) in win.iter().enumerate().skip(1) {
                    for l in 0..L {
                        let t = v[l] > m[l] || v[l].is_nan();
                        m[l] = if t { v[l] } else { m[l] };
                        id[l] = if t { j as u8 } else { id[l] };
                    }
                }
                *lv_mut(y, o) = m;
                idx[o * L..o * L + L].copy_from_slice(&id);
            }
        }
    }
}

/// Max-pool backward: `dx` (`[c, h, w]`, overwritten) gets `dy` at each window's argmax, 0 elsewhere.
#[inline(always)]
pub fn maxpool2_backward(dy: &[f32], idx: &[u8], c: usize, h: usize, w: usize, dx: &mut [f32]) {
    let (ph, pw) = (h / 2, w / 2);
    assert!(dx.len() >= c * h * w * L && dy.len() >= c * ph * pw * L && idx.len() >= c * ph * pw * L);
    for ch in 0..c {
        for py in 0..ph {
            for px in 0..pw {
                let o = (ch * ph + py) * pw + px;
                let g = *lv(dy, o);
                let id: &[u8; L] = idx[o * L..o * L + L].try_into().unwrap();
                let top = (ch * h + 2 * py) * w + 2 * px;
                for (j, pos) in [top, top + 1, top + w, top + w + 1].into_iter().enumerate() {
                    let d = lv_mut(dx, pos);
                    for l in 0..L {
                        d[l] = if id[l] == j as u8 { g[l] } else { 0.0 };
                    }
                }
            }
        }
    }
}

const TANH_CLAMP: f32 = 7.905_311;
const TANH_A: [f32; 7] =
    [4.893_524_6e-3, 6.372_619_3e-4, 1.485_722_4e-5, 5.122_297e-8, -8.604_672e-11, 2.000_188e-13, -2.760_768_5e-16];
const TANH_B: [f32; 4] = [4.893_525e-3, 2.268_434_7e-3, 1.185_347_1e-4, 1.198_258_4e-6];

/// tanh by a [13/6] rational approximation on [−7.9, 7.9] (the one Eigen and XLA use); NaN passes
/// through. Branch-free, so a loop over lanes vectorises.
#[inline(always)]
pub fn tanh_fast(a: f32) -> f32 {
    let x = a.clamp(-TANH_CLAMP, TANH_CLAMP); // NaN stays NaN
    let x2 = x * x;
    let mut p = TANH_A[6];
    for c in TANH_A[..6].iter().rev() {
        p = p * x2 + c;
    }
    p *= x;
    let q = ((TANH_B[3] * x2 + TANH_B[2]) * x2 + TANH_B[1]) * x2 + TANH_B[0];
    let t = p / q;
    if a.abs() < 4e-4 {
        a
    } else {
        t
    }
}

/// `s = tanh(s)` elementwise.
#[inline(always)]
pub fn tanh_forward(s: &mut [f32]) {
    for v in s.iter_mut() {
        *v = tanh_fast(*v);
    }
}

/// `g = g · (1 − y²)` elementwise, `y` the tanh output.
#[inline(always)]
pub fn tanh_backward(g: &mut [f32], y: &[f32]) {
    assert!(g.len() <= y.len());
    for (g, y) in g.iter_mut().zip(y) {
        *g *= 1.0 - y * y;
    }
}

/// Softmax cross-entropy over `z: [C]` (lane-innermost) for the first `n_valid` lanes with labels
/// `labels`; writes `dz = (softmax − onehot)·scale` (0 in padding lanes). Returns the sum of the
/// per-image losses (f64) and the number of correct argmax predictions (first maximum on ties).
/// Maximum, exponentials and their sum run in class order, so `C = 3` gives the bits it always gave.
#[inline(always)]
pub fn softmax_xent<const C: usize>(z: &[f32], labels: &[u8], n_valid: usize, scale: f32, dz: &mut [f32]) -> (f64, u32) {
    assert!(z.len() >= C * L && dz.len() >= C * L && labels.len() >= n_valid && n_valid <= L);
    let mut loss = 0.0f64;
    let mut correct = 0u32;
    for l in 0..L {
        if l >= n_valid {
            for k in 0..C {
                dz[k * L + l] = 0.0;
            }
            continue;
        }
        let zl: [f32; C] = std::array::from_fn(|k| z[k * L + l]);
        let t = labels[l] as usize;
        assert!(t < C, "cnn-s labels must be below the number of classes ({C})");
        let m = zl[1..].iter().fold(zl[0], |m, &v| m.max(v));
        let m = if zl.iter().any(|v| v.is_nan()) { f32::NAN } else { m };
        let e: [f32; C] = std::array::from_fn(|k| libm::expf(zl[k] - m));
        let s = e[1..].iter().fold(e[0], |s, &v| s + v);
        let lse = m + libm::logf(s);
        loss += (lse - zl[t]) as f64;
        let mut best = 0;
        for k in 1..C {
            if zl[k] > zl[best] {
                best = k;
            }
        }
        correct += (best == t) as u32;
        for k in 0..C {
            let onehot = if k == t { 1.0 } else { 0.0 };
            dz[k * L + l] = (e[k] / s - onehot) * scale;
        }
    }
    (loss, correct)
}

/// Per-lane cross-entropy losses (f32), first `n_valid` lanes; helper for evaluation.
#[inline(always)]
pub fn xent_lanes<const C: usize>(z: &[f32], labels: &[u8], n_valid: usize) -> (f64, u32) {
    let mut scratch = [[0.0f32; L]; C];
    softmax_xent::<C>(z, labels, n_valid, 0.0, scratch.as_flattened_mut())
}
