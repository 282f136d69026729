//! Matrix products whose float order depends on the shapes alone, not on the machine.
//!
//! # Why
//! candle's CPU product goes through `gemm` 0.19. It splits the inner dimension k into blocks of `kc`
//! values and adds each block's partial sums to the result in turn, so a product's rounding depends on
//! `kc`. `gemm-common` sizes `kc` from the L1 data cache it reads in sysfs (`kernel_params`): 512 for a
//! 32 KiB 8-way L1, 1,024 for a 48 KiB 12-way or a 64 KiB 8-way one. For k ≤ 512 every cache gives one
//! block (`kc` = k, whatever the machine); only longer products differ between machines.
//!
//! # What
//! [`matmul`] cuts an inner dimension into pieces of at most [`BLOCK`] wherever `gemm` would size its
//! blocks from the cache ([`cut_by_cache`]), and adds the pieces' products in order. Each `gemm` call it
//! makes then sums in an order fixed by the shapes:
//! - the forward pass's k;
//! - when the product is tracked for gradients, also m and n. They are the inner dimensions of the
//!   backward products, `∂A = G Bᵀ` (over n) and `∂B = Aᵀ G` (over m). The product is then assembled from
//!   `m × n` tiles, and candle's autograd differentiates through the pieces. Where only k is cut (m and
//!   n ≤ 512, the usual case: a batch through a wide layer), the gradient goes through the whole
//!   product instead (`value + (whole − whole)`, detached value): its backward products already sum in
//!   one block on every machine, give the same bits, and skip the full-size zero-padded gradient that
//!   each piece's `narrow` would make (the align stage's loop ran 3× faster for it).
//!
//! The pieces sit exactly where `gemm` cuts k on a machine with a 32 KiB 8-way L1 ([`pieces`]), and
//! `gemm`'s other paths are left alone. So there, the forward product is bit for bit what
//! `Tensor::matmul` gives, and so is the backward one while m and n are ≤ 512; on every other cache
//! geometry it is now the same too. (Past 512, the backward pass sums the m- or n-pieces in candle's
//! autograd order, last piece first, where `gemm` goes first to last: still one fixed order.) Test:
//! `matmul_tests` in this module, run under faked cache sizes (`scripts/repro/fake-caches.sh`).
//!
//! What still depends on the machine is the instruction set of `gemm`'s microkernel: an FMA kernel on
//! x86-64 CPUs with AVX2 + FMA, a scalar one without. See the README's "Reproducibility" section.

use candle_core::{Result, Tensor};

/// `(start, len)` of one piece of a dimension.
type Piece = (usize, usize);

/// The longest inner dimension `gemm` sums in one block on every machine.
pub const BLOCK: usize = 512;

/// `(start, len)` of the pieces `gemm` cuts an inner dimension of `len > 512` into on a 32 KiB 8-way
/// L1: `kc = ⌈len / ⌈len / 512⌉⌉`, equal blocks with a shorter last one.
pub fn pieces(len: usize) -> Vec<(usize, usize)> {
    let size = len.div_ceil(len.div_ceil(BLOCK).max(1)).max(1);
    (0..len).step_by(size).map(|start| (start, size.min(len - start))).collect()
}

/// Whether `gemm` 0.19 sizes the k-blocks of this `m × n` product over `k` from the cache. It does so
/// only on its general path. The other paths sum in the same order on every machine:
/// - the horizontal kernel (row-major lhs, column-major rhs, `m·n ≤ 256`) uses fixed blocks of 1,024;
/// - matrix-vector products (`m` or `n` ≤ 1, with matching strides) do not block;
/// - products with `m`, `n` ≤ 64 use `kc = min(k, 512)`.
///
/// `lhs` and `rhs` are the `(row, column)` strides, with `dst` row-major, as candle passes them.
fn cut_by_cache(m: usize, n: usize, k: usize, lhs: (usize, usize), rhs: (usize, usize)) -> bool {
    let ((lhs_rs, lhs_cs), (rhs_rs, rhs_cs), dst_rs) = (lhs, rhs, n);
    let horizontal = lhs_cs == 1 && rhs_rs == 1 && m * n <= 256;
    let gemv = (n <= 1 && ((lhs_rs == 1 && dst_rs == 1) || (lhs_cs == 1 && rhs_rs == 1)))
        || (m <= 1 && (rhs_cs == 1 || (rhs_rs == 1 && lhs_cs == 1)));
    k > BLOCK && (m > 64 || n > 64) && !horizontal && !gemv
}

/// `a · b` over the last two dimensions (`[…, m, k] · […, k, n]`, the same leading dimensions), in the
/// machine-independent order of the [module doc](self) on the CPU; candle's own product on a GPU.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let r = a.rank();
    if r < 2 || b.rank() != r || !a.device().is_cpu() {
        return a.matmul(b); // candle's own shape error
    }
    let (m, k, n) = (a.dim(r - 2)?, a.dim(r - 1)?, b.dim(r - 1)?);
    let strides = |t: &Tensor| (t.stride()[r - 2], t.stride()[r - 1]);
    let tracked = a.track_op() || b.track_op();
    let cut = |yes: bool, len: usize| if yes { pieces(len) } else { vec![(0, len)] };
    let ks = cut(cut_by_cache(m, n, k, strides(a), strides(b)), k);
    // The backward products ∂A = G Bᵀ (m × k over n) and ∂B = Aᵀ G (k × n over m), on gemm's general path.
    let ms = cut(tracked && m > BLOCK && (k > 64 || n > 64), m);
    let ns = cut(tracked && n > BLOCK && (m > 64 || k > 64), n);
    if ks.len() == 1 && ms.len() == 1 && ns.len() == 1 {
        return a.matmul(b);
    }
    if tracked && ms.len() == 1 && ns.len() == 1 {
        // Only k is cut: the value from the pieces, the gradient through the whole product. Its backward
        // products sum over m and n (≤ 512: one block on every machine), the values the pieces'
        // backward gives, without the zero-padded full-size gradient each piece's `narrow` makes and
        // their sum. `whole − whole` is +0 wherever the product is finite.
        let value = pieced(&a.detach(), &b.detach(), (&ms, &ns, &ks))?;
        let whole = a.matmul(b)?;
        return value + (&whole - whole.detach())?;
    }
    pieced(a, b, (&ms, &ns, &ks))
}

/// `a · b` assembled from the `m × n` tiles `ms × ns`, each the sum over the k-pieces `ks` in order.
fn pieced(a: &Tensor, b: &Tensor, (ms, ns, ks): (&[Piece], &[Piece], &[Piece])) -> Result<Tensor> {
    let r = a.rank();
    let mut rows = Vec::with_capacity(ms.len());
    for &(m0, ml) in ms {
        let a_rows = a.narrow(r - 2, m0, ml)?;
        let mut tiles = Vec::with_capacity(ns.len());
        for &(n0, nl) in ns {
            let b_cols = b.narrow(r - 1, n0, nl)?;
            let mut sum: Option<Tensor> = None;
            for &(k0, kl) in ks {
                // Views, not copies: `gemm` picks its kernel by the strides, which must stay those of `a`, `b`.
                let p = a_rows.narrow(r - 1, k0, kl)?.matmul(&b_cols.narrow(r - 2, k0, kl)?)?;
                sum = Some(match sum {
                    None => p,
                    Some(s) => (s + p)?,
                });
            }
            tiles.push(sum.expect("at least one piece"));
        }
        rows.push(if tiles.len() == 1 { tiles.pop().expect("one tile") } else { Tensor::cat(&tiles, r - 1)? });
    }
    if rows.len() == 1 {
        Ok(rows.pop().expect("one row"))
    } else {
        Tensor::cat(&rows, r - 2)
    }
}

/// `y = x Wᵀ + b` on the last dimension of `x` (`W` `[out, in]`, `b` `[out]`), through [`matmul`].
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    affine(x, &w.t()?, b)
}

/// `y = x W + b` with `W` stored `[in, out]`, so that its gradient arrives contiguous (the gradient of
/// [`linear`]'s `Wᵀ` view arrives transposed, and candle adds it into the weight's gradient through its
/// strided path: a quarter of the alignment's training time). Where the products run on gemm's general
/// path (every `m · n` of the forward and both backward products over 256, no dimension of 1), the float
/// order does not depend on the strides, and `W` is read as stored; elsewhere gemm picks its kernel by
/// the strides, and `W` is laid out as [`linear`]'s view. Either way the bits are [`linear`]'s.
pub fn linear_in_out(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (inp, out) = w.dims2()?;
    let rows = x.elem_count() / inp.max(1);
    let general = [rows * out, rows * inp, inp * out].iter().all(|&mn| mn > 256) && rows.min(inp).min(out) > 1;
    if general {
        affine(x, w, b)
    } else {
        affine(x, &w.t()?.contiguous()?.t()?, b)
    }
}

/// `x W + b` on the last dimension of `x`, `W` `[in, out]` (any layout).
fn affine(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut shape = x.dims().to_vec();
    let inp = *shape.last().unwrap_or(&1);
    let y = matmul(&x.reshape((x.elem_count() / inp.max(1), inp))?, w)?;
    let y = crate::param_ops::add_left(&y, b)?;
    if let Some(last) = shape.last_mut() {
        *last = w.dim(1)?;
    }
    y.reshape(shape)
}

#[cfg(test)]
mod matmul_tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A cheap, fixed pseudo-random sequence in [−1, 1): no two runs or machines differ.
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
    }

    #[test]
    fn pieces_follow_gemms_blocking_on_a_32_kib_l1_and_only_where_it_depends_on_the_cache() {
        assert_eq!(pieces(1152), [(0, 384), (384, 384), (768, 384)]);
        assert_eq!(pieces(1025), [(0, 342), (342, 342), (684, 341)]);
        assert!(cut_by_cache(100, 500, 1300, (1300, 1), (500, 1)));
        assert!(!cut_by_cache(100, 500, 512, (512, 1), (500, 1)), "one block");
        assert!(!cut_by_cache(32, 40, 1300, (1300, 1), (40, 1)), "m, n ≤ 64: kc = 512 everywhere");
        assert!(!cut_by_cache(100, 2, 1300, (1300, 1), (1, 1300)), "horizontal kernel: kc = 1024 everywhere");
        assert!(!cut_by_cache(1, 500, 1300, (1300, 1), (500, 1)), "matrix-vector");
    }

    /// The cut product equals a float64 product to float32 accuracy, forward and backward: whatever the
    /// cutting does, it computes the same maths. (The bound: a k-term float32 sum of products of values
    /// in [−1, 1) is within k·2⁻²⁴·Σ|aᵢbᵢ| ≤ k²·6e-8 of the exact value; 4e-4 is far above the
    /// worst case seen, ~2e-5, and far below a wrong tile, ~1.)
    #[test]
    fn cut_products_and_their_gradients_are_the_plain_products() {
        let dev = Device::Cpu;
        let (m, k, n) = (600, 1100, 530);
        let a = Var::from_vec(values(m * k, 1), (m, k), &dev).unwrap();
        let b = Var::from_vec(values(k * n, 2), (k, n), &dev).unwrap();
        let g = Tensor::from_vec(values(m * n, 3), (m, n), &dev).unwrap();
        let y = matmul(a.as_tensor(), b.as_tensor()).unwrap();
        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let f64s = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
        let (a64, b64, g64) = (f64s(a.as_tensor()), f64s(b.as_tensor()), f64s(&g));
        let want = [
            (y.clone(), a64.matmul(&b64).unwrap()),
            (grads.get(a.as_tensor()).unwrap().clone(), g64.matmul(&b64.t().unwrap()).unwrap()),
            (grads.get(b.as_tensor()).unwrap().clone(), a64.t().unwrap().matmul(&g64).unwrap()),
        ];
        for (i, (got, want)) in want.iter().enumerate() {
            let diff = (f64s(got) - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            assert!(diff < 4e-4, "product {i}: max |difference| {diff}");
        }
    }

    /// Bit for bit what `Tensor::matmul` gives where `gemm` cuts k in the same places, i.e. on a
    /// machine whose L1 is 32 KiB, 8-way (`scripts/repro/fake-caches.sh 32K 256K 8M 8 -- …` runs this
    /// test under such a faked cache): forward, and backward where m and n are ≤ 512. Elsewhere it says
    /// so and checks nothing: `gemm` cuts k elsewhere there.
    #[test]
    fn on_a_32_kib_l1_the_cut_product_is_candles_product_bit_for_bit() {
        let read =
            |f: &str| std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index0/{f}")).unwrap_or_default();
        let (l1, ways) = (read("size"), read("ways_of_associativity"));
        if (l1.trim(), ways.trim()) != ("32K", "8") {
            eprintln!("skipped: L1d is {} {}-way here; the comparison needs a 32 KiB 8-way L1", l1.trim(), ways.trim());
            return;
        }
        let differing = |x: &Tensor, y: &Tensor| bits(x).iter().zip(bits(y)).filter(|(a, b)| **a != *b).count();
        let dev = Device::Cpu;
        for &(m, k, n) in &[(32, 1300, 40), (100, 1300, 500), (300, 2000, 64), (1300, 64, 192), (700, 900, 600)] {
            let a = Var::from_vec(values(m * k, 4), (m, k), &dev).unwrap();
            let b = Var::from_vec(values(k * n, 5), (k, n), &dev).unwrap();
            let g = Tensor::from_vec(values(m * n, 6), (m, n), &dev).unwrap();
            let cut = matmul(a.as_tensor(), b.as_tensor()).unwrap();
            let plain = a.as_tensor().matmul(b.as_tensor()).unwrap();
            assert_eq!(differing(&cut, &plain), 0, "forward {m}×{k}×{n}: values differ");
            if m > BLOCK || n > BLOCK {
                continue;
            }
            let gc = (&cut * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gp = (&plain * &g).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("∂A", &a), ("∂B", &b)] {
                let d = differing(gc.get(v.as_tensor()).unwrap(), gp.get(v.as_tensor()).unwrap());
                assert_eq!(d, 0, "{name} {m}×{k}×{n}: values differ");
            }
        }
    }

    #[test]
    fn batched_and_linear_shapes() {
        let dev = Device::Cpu;
        let a = Tensor::from_vec(values(2 * 3 * 700, 7), (2, 3, 700), &dev).unwrap();
        let b = Tensor::from_vec(values(2 * 700 * 5, 8), (2, 700, 5), &dev).unwrap();
        assert_eq!(matmul(&a, &b).unwrap().dims(), [2, 3, 5]);
        let w = Tensor::from_vec(values(4 * 700, 9), (4, 700), &dev).unwrap();
        let bias = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        assert_eq!(linear(&a, &w, &bias).unwrap().dims(), [2, 3, 4]);
    }

    /// `linear_in_out` with `W` stored `[in, out]` gives `linear`'s bits, forward and in the gradients
    /// of the input, the weight (transposed) and the bias: on the general path (with and without a
    /// k-cut), and on the small products where gemm picks its kernel by the strides (one row, `m·n` ≤ 256).
    #[test]
    fn linear_in_out_has_the_bits_of_linear() {
        let bits =
            |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (n, i, o) in [(32, 64, 33), (32, 700, 40), (1, 700, 40), (5, 7, 3), (40, 20, 6)] {
            let x = Var::from_vec(values(n * i, 1), (n, i), &Device::Cpu).unwrap();
            let w = Var::from_vec(values(o * i, 2), (o, i), &Device::Cpu).unwrap();
            let w_io = Var::from_tensor(&w.as_tensor().t().unwrap().contiguous().unwrap()).unwrap();
            let b = Var::from_vec(values(o, 3), o, &Device::Cpu).unwrap();
            let up = Tensor::from_vec(values(n * o, 4), (n, o), &Device::Cpu).unwrap();
            let run = |y: Tensor, w: &Var| {
                let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let gw = g.get(w).unwrap();
                let gw = if gw.dims() == [o, i] { gw.clone() } else { gw.t().unwrap() };
                (bits(&y), bits(g.get(&x).unwrap()), bits(&gw), bits(g.get(&b).unwrap()))
            };
            let plain = run(linear(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap(), &w);
            let stored = run(linear_in_out(x.as_tensor(), w_io.as_tensor(), b.as_tensor()).unwrap(), &w_io);
            assert!(plain == stored, "{n} × {i} → {o}");
        }
    }
}
