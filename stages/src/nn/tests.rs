//! Correctness of the `cnn-s` kernel: finite differences per layer and for the whole network, an
//! independent PyTorch reference, determinism across SIMD variants, learning, divergence.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::kernels::*;
use super::*;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform in [-1, 1).
fn unif(r: &mut ChaCha8Rng) -> f32 {
    (r.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
}

fn randv(r: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| unif(r)).collect()
}

/// Σ r·y in f64 (the scalar "loss" whose upstream gradient is r).
fn dot(r: &[f32], y: &[f32]) -> f64 {
    r.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Asserts |a − b| ≤ atol + rtol·|b| elementwise, reporting the worst offender.
fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let excess = (*g as f64 - w).abs() - (atol + rtol * w.abs());
        if excess > worst.0 || !g.is_finite() {
            worst = (excess.max(f64::MIN_POSITIVE), i);
        }
    }
    let i = worst.1;
    assert!(worst.0 <= 0.0, "{what}: element {i}: got {}, want {} (atol {atol}, rtol {rtol})", got[i], want[i]);
}

/// Central difference of `f` with respect to `v[i]`.
fn central(v: &mut [f32], i: usize, eps: f32, mut f: impl FnMut(&[f32]) -> f64) -> f64 {
    let orig = v[i];
    v[i] = orig + eps;
    let plus = f(v);
    v[i] = orig - eps;
    let minus = f(v);
    v[i] = orig;
    (plus - minus) / (2.0 * eps as f64)
}

// ----------------------------------------------------------------------------------------------------
// Per-layer finite differences (on the real kernels, portable variant; all variants are bit-identical,
// see `simd_variants_are_bit_identical`).

#[test]
fn nn_conv_backward_matches_finite_differences() {
    const CI: usize = 2;
    const CO: usize = 3;
    const K: usize = 3;
    let (h, w) = (6, 5);
    let (oh, ow) = (h - K + 1, w - K + 1);
    let mut r = rng(1);
    let mut x = randv(&mut r, CI * h * w * L);
    let mut wt = randv(&mut r, CO * CI * K * K);
    let mut b = randv(&mut r, CO);
    let up = randv(&mut r, CO * oh * ow * L);
    let fwd = |x: &[f32], wt: &[f32], b: &[f32]| {
        let mut y = vec![0.0; CO * oh * ow * L];
        conv_forward::<Portable, CO>(x, CI, h, w, K, wt, b, &mut y);
        dot(&up, &y)
    };
    let (mut dw, mut db) = (vec![0.0; wt.len()], vec![0.0; CO]);
    conv_backward_weight::<Portable, 1, K>(&x, CI, h, w, &up, CO, &mut dw, &mut db);
    let mut dx = vec![0.0; x.len()];
    conv_backward_input::<Portable, CI>(&up, CO, oh, ow, K, &wt, &mut dx);

    // The layer is linear in each input, so central differences have no truncation error; what is left
    // is float32 rounding of the ~200 outputs that one input moves (18-term sums of O(1) values, a few
    // 1e-7 each, random-walk ~1e-5 in the dot with `up`) over 2·eps = 0.02: ~5e-4. atol = rtol = 1e-3
    // is 2× that, and a wrong index or missing term is O(0.1).
    let eps = 1e-2;
    let (xc, bc) = (x.clone(), b.clone());
    let fd_w: Vec<f64> = (0..wt.len()).map(|i| central(&mut wt, i, eps, |wt| fwd(&xc, wt, &bc))).collect();
    assert_close("conv dW", &dw, &fd_w, 1e-3, 1e-3);
    let wc = wt.clone();
    let fd_b: Vec<f64> = (0..CO).map(|i| central(&mut b, i, eps, |b| fwd(&xc, &wc, b))).collect();
    assert_close("conv db", &db, &fd_b, 1e-3, 1e-3);
    let bc = b.clone();
    let fd_x: Vec<f64> = (0..x.len()).map(|i| central(&mut x, i, eps, |x| fwd(x, &wc, &bc))).collect();
    assert_close("conv dx", &dx, &fd_x, 1e-3, 1e-3);
}

#[test]
fn nn_linear_backward_matches_finite_differences() {
    const I: usize = 7;
    const O: usize = 4;
    let mut r = rng(2);
    let mut x = randv(&mut r, I * L);
    let mut wt = randv(&mut r, O * I);
    let mut b = randv(&mut r, O);
    let up = randv(&mut r, O * L);
    let fwd = |x: &[f32], wt: &[f32], b: &[f32]| {
        let mut y = vec![0.0; O * L];
        linear_forward::<Portable, O>(x, I, wt, b, &mut y);
        dot(&up, &y)
    };
    let (mut dw, mut db, mut dx) = (vec![0.0; O * I], vec![0.0; O], vec![0.0; I * L]);
    linear_backward_weight::<Portable, 2>(&x, I, &up, O, &mut dw, &mut db);
    linear_backward_input::<Portable, I>(&up, O, &wt, &mut dx);
    // Linear in each input: no truncation error; float32 rounding of 7-term sums over 2·eps = 0.02 is
    // below the conv test's, whose 1e-3 is kept.
    let eps = 1e-2;
    let (xc, bc) = (x.clone(), b.clone());
    let fd_w: Vec<f64> = (0..wt.len()).map(|i| central(&mut wt, i, eps, |wt| fwd(&xc, wt, &bc))).collect();
    assert_close("linear dW", &dw, &fd_w, 1e-3, 1e-3);
    let wc = wt.clone();
    let fd_b: Vec<f64> = (0..O).map(|i| central(&mut b, i, eps, |b| fwd(&xc, &wc, b))).collect();
    assert_close("linear db", &db, &fd_b, 1e-3, 1e-3);
    let bc = b.clone();
    let fd_x: Vec<f64> = (0..x.len()).map(|i| central(&mut x, i, eps, |x| fwd(x, &wc, &bc))).collect();
    assert_close("linear dx", &dx, &fd_x, 1e-3, 1e-3);
}

#[test]
fn nn_maxpool_backward_matches_finite_differences() {
    let (c, h, w) = (2, 4, 6);
    let n = c * h * w * L;
    let mut r = rng(3);
    // Distinct values ≥ 0.01 apart, so ±eps never changes an argmax.
    let mut x: Vec<f32> = (0..n).map(|i| 0.01 * i as f32).collect();
    for i in (1..n).rev() {
        x.swap(i, (r.next_u32() as usize) % (i + 1));
    }
    let m = c * (h / 2) * (w / 2) * L;
    let up = randv(&mut r, m);
    let fwd = |x: &[f32]| {
        let (mut y, mut idx) = (vec![0.0; m], vec![0u8; m]);
        maxpool2_forward(x, c, h, w, &mut y, &mut idx);
        dot(&up, &y)
    };
    let (mut y, mut idx) = (vec![0.0; m], vec![0u8; m]);
    maxpool2_forward(&x, c, h, w, &mut y, &mut idx);
    let mut dx = vec![f32::NAN; n];
    maxpool2_backward(&up, &idx, c, h, w, &mut dx);
    let fd: Vec<f64> = (0..n).map(|i| central(&mut x, i, 1e-3, fwd)).collect();
    // Exactly one element per window gets the whole upstream gradient (not a quarter of it). Piecewise
    // linear with no argmax change within ±1e-3 (values 0.01 apart): the quotient is exact up to the
    // float32 rounding of x ± 1e-3 (x ≤ 7.7: u·7.7 = 4.6e-7 over 2e-3: 2.3e-4); 1e-3 leaves room, a wrong
    // routing is O(1).
    assert_close("maxpool dx", &dx, &fd, 1e-3, 1e-3);
    assert_eq!(dx.iter().filter(|v| **v != 0.0).count(), m);
}

#[test]
fn nn_maxpool_ties_go_to_the_first_maximum() {
    // Window (row-major) [1, 1, 1, 0]: first maximum is element 0; [0, 2, 2, 2]: element 1.
    let win = [[1.0f32, 1.0, 1.0, 0.0], [0.0, 2.0, 2.0, 2.0]];
    // Tensor [1, 2, 4] per lane: rows (1,1,0,2) and (1,0,2,2).
    let vals = [1.0f32, 1.0, 0.0, 2.0, 1.0, 0.0, 2.0, 2.0];
    let mut x = vec![0.0; 8 * L];
    for (i, v) in vals.iter().enumerate() {
        x[i * L..i * L + L].fill(*v);
    }
    let (mut y, mut idx) = (vec![0.0; 2 * L], vec![0u8; 2 * L]);
    maxpool2_forward(&x, 1, 2, 4, &mut y, &mut idx);
    assert_eq!((y[0], y[L]), (win[0][0], win[1][1]));
    assert_eq!((idx[0], idx[L]), (0, 1));
    let mut up = vec![1.0; 2 * L];
    up[L..].fill(2.0);
    let mut dx = vec![0.0; 8 * L];
    maxpool2_backward(&up, &idx, 1, 2, 4, &mut dx);
    let got: Vec<f32> = (0..8).map(|i| dx[i * L]).collect();
    // PyTorch's answer, from the reference fixture.
    let fx = fixture();
    assert_eq!(f32s(&fx["maxpool_tie_input"]), vals.to_vec());
    assert_eq!(got, f32s(&fx["maxpool_tie_input_grad"]));
    assert_eq!(got, vec![1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn nn_maxpool_propagates_nan() {
    let mut x = vec![0.0; 4 * L];
    x[2 * L] = f32::NAN;
    let (mut y, mut idx) = (vec![0.0; L], vec![0u8; L]);
    maxpool2_forward(&x, 1, 2, 2, &mut y, &mut idx);
    assert!(y[0].is_nan() && idx[0] == 2);
    assert!(y[1] == 0.0 && idx[1] == 0);
}

#[test]
fn nn_tanh_fast_is_accurate() {
    let mut worst = 0.0f64;
    let mut x = -12.0f32;
    while x <= 12.0 {
        let e = (tanh_fast(x) as f64 - (x as f64).tanh()).abs();
        worst = worst.max(e);
        x += 1.0 / 1024.0 + x.abs() * 1e-4;
    }
    // The [13/6] rational (Eigen/XLA) is accurate to a few ulps of f32 on |tanh| ≤ 1 (u = 6e-8); 5e-7 ≈
    // 8 ulps. The cnn-s PyTorch comparisons carry this bound in their budget (`tanh_fast_sensitivity`).
    assert!(worst < 5e-7, "tanh_fast max abs error {worst}");
    for x in [1e-5f32, -3e-4, 1e-30, 0.0] {
        assert_eq!(tanh_fast(x), x);
    }
    assert!(tanh_fast(f32::NAN).is_nan());
    assert!((tanh_fast(f32::INFINITY) - 1.0).abs() < 1e-6); // clamped at 7.9: tanh(7.9) = 1 − 2.8e-7
}

#[test]
fn nn_tanh_backward_matches_finite_differences() {
    let mut r = rng(4);
    let mut x: Vec<f32> = randv(&mut r, 3 * L).iter().map(|v| 3.0 * v).collect();
    let up = randv(&mut r, x.len());
    let fwd = |x: &[f32]| {
        let mut y = x.to_vec();
        tanh_forward(&mut y);
        dot(&up, &y)
    };
    let mut y = x.clone();
    tanh_forward(&mut y);
    let mut g = up.clone();
    tanh_backward(&mut g, &y);
    let fd: Vec<f64> = (0..x.len()).map(|i| central(&mut x, i, 1e-3, fwd)).collect();
    // Truncation h²/6·|tanh‴|·|up| ≤ 1e-6/6·2 ≈ 3e-7; tanh_fast's ≤ 5e-7 error over 2h = 2e-3 is ≤ 2.5e-4
    // (far less in practice: the error is smooth, so it mostly cancels in the difference): atol 2e-4
    // + rtol 1e-3 of |g| ≤ 1.
    assert_close("tanh dx", &g, &fd, 2e-4, 1e-3);
}

#[test]
fn nn_softmax_xent_backward_matches_finite_differences() {
    let mut r = rng(5);
    let mut z: Vec<f32> = randv(&mut r, 3 * L).iter().map(|v| 4.0 * v).collect();
    let labels: Vec<u8> = (0..L).map(|l| (l % 3) as u8).collect();
    let n_valid = 13; // three padding lanes
    let scale = 1.0 / n_valid as f32;
    let loss = |z: &[f32]| xent_lanes::<3>(z, &labels, n_valid).0 / n_valid as f64;
    let mut dz = vec![f32::NAN; 3 * L];
    let (sum, _) = softmax_xent::<3>(&z, &labels, n_valid, scale, &mut dz);
    // The loss itself: logsumexp − z[t], computed here in f64.
    let mut want = 0.0;
    for l in 0..n_valid {
        let zl: Vec<f64> = (0..3).map(|k| z[k * L + l] as f64).collect();
        want += zl.iter().map(|v| v.exp()).sum::<f64>().ln() - zl[labels[l] as usize];
    }
    // Each lane's loss is an f32 logsumexp of 3 values |z| ≤ 4: a few roundings of values ≤ 5.1
    // (u·5.1 = 3e-7 each), well inside 1e-5 per lane.
    assert!((sum - want).abs() < 1e-5 * n_valid as f64, "{sum} vs {want}");
    let fd: Vec<f64> = (0..z.len()).map(|i| central(&mut z, i, 1e-3, loss)).collect();
    // Truncation h²/6·|ℓ‴| ≤ 1e-7; the lane losses' f32 rounding (~3e-7, / 13 lanes) over 2h = 2e-3:
    // ≤ 1.5e-4; atol 2e-4 + rtol 1e-3 (a wrong softmax or scale is ≥ 1/13 ≈ 0.08).
    assert_close("softmax-xent dz", &dz, &fd, 2e-4, 1e-3);
    for l in n_valid..L {
        assert_eq!((dz[l], dz[L + l], dz[2 * L + l]), (0.0, 0.0, 0.0));
    }
}

// ----------------------------------------------------------------------------------------------------
// Whole network.

/// `n` images with the fixture formula (see `scripts/reference/cnn_s_reference.py`).
pub(crate) fn formula_images(n: usize) -> Vec<f32> {
    let mut x = vec![0.0f32; n * IMAGE_PIXELS];
    for (k, v) in x.iter_mut().enumerate() {
        let (img, row) = (k / IMAGE_PIXELS, (k % IMAGE_PIXELS) / IMAGE_SIDE);
        *v = if img == 3 && row < 10 { 0.0 } else { (0.5 + 0.5 * (0.37 * k as f64 + 0.1).sin()) as f32 };
    }
    x
}

/// Weights with the fixture formula.
pub(crate) fn formula_model() -> CnnS {
    let mut p = vec![0.0f32; NUM_PARAMS];
    for (t, s) in PARAM_SPECS.iter().enumerate() {
        for (e, v) in p[s.range()].iter_mut().enumerate() {
            *v = (2.0 * (0.91 * e as f64 + 1.7 * t as f64 + 0.3).sin() / (s.fan_in as f64).sqrt()) as f32;
        }
    }
    CnnS::from_flat(p)
}

fn adam_cfg(lr: f64) -> TrainConfig {
    TrainConfig { optimizer: Optimizer::adam(lr), batch_size: 64, seed: 0 }
}

fn mean_loss_f32(model: &CnnS, images: &[f32], labels: &[u8]) -> f64 {
    let mut sum = 0.0f64;
    for (z, &t) in logits_f32(model, images).iter().zip(labels) {
        let zl: Vec<f64> = z.iter().map(|v| *v as f64).collect();
        sum += zl.iter().map(|v| v.exp()).sum::<f64>().ln() - zl[t as usize];
    }
    sum / labels.len() as f64
}

#[test]
fn nn_network_gradient_matches_finite_differences() {
    // 5 images (one short block) with random init weights.
    let model = CnnS::init(11);
    let mut r = rng(6);
    let images: Vec<f32> = (0..5 * IMAGE_PIXELS).map(|_| 0.5 + 0.5 * unif(&mut r)).collect();
    let labels = [0u8, 1, 2, 2, 1];
    let mut tr = Trainer::new(model.clone(), &adam_cfg(1e-3));
    let (loss, g) = tr.loss_and_gradient_f32(&images, &labels);
    let g = g.to_vec();
    // The same f32 forward (same kernel) summed in f64 either way; the reported loss is cast to f32:
    // ≤ u·|loss| ≈ 6e-8·1.2 plus the 5-term mean, far inside 1e-5.
    assert!((loss as f64 - mean_loss_f32(&model, &images, &labels)).abs() < 1e-5);

    let mut p = model.flat().to_vec();
    let f = |p: &[f32]| mean_loss_f32(&CnnS::from_flat(p.to_vec()), &images, &labels);
    // Per parameter: a spread of entries from every tensor. A small step keeps max-pool argmax changes
    // rare (a conv1 weight moves every conv1 output); the loss's f32 rounding then limits precision
    // to ~1e-5 absolute.
    for s in &PARAM_SPECS {
        let idx: Vec<usize> = s.range().step_by((s.len() / 12).max(1)).collect();
        let fd: Vec<f64> = idx.iter().map(|&i| central(&mut p, i, 1e-3, f)).collect();
        let got: Vec<f32> = idx.iter().map(|&i| g[i]).collect();
        let scale = got.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        // The loss is f32 logits summed in f64 (~1e-7 rounding) over 2h = 2e-3: ~1e-4 noise, inside 1e-5 +
        // 2% of the tensor's largest gradient; the h² truncation and rare argmax switches take ~1%.
        assert_close(s.name, &got, &fd, 2e-2 * scale + 1e-5, 2e-2);
    }
    // Directional derivatives along random directions (every parameter at once).
    for k in 0..4 {
        let mut dr = rng(100 + k);
        let u = randv(&mut dr, NUM_PARAMS);
        let eps = 1e-4f32;
        let shift = |sgn: f32| p.iter().zip(&u).map(|(a, b)| a + sgn * eps * b).collect::<Vec<_>>();
        let fd = (f(&shift(1.0)) - f(&shift(-1.0))) / (2.0 * eps as f64);
        let an = dot(&u, &g);
        // Every parameter moves by 1e-4·u: the loss's f32 rounding (~1e-7) over 2e-4 gives ~1e-3-scale noise
        // in fd, hence 2e-4 absolute + 2% (truncation, argmax switches).
        assert!((fd - an).abs() <= 2e-2 * an.abs() + 2e-4, "direction {k}: fd {fd} vs analytic {an}");
    }
}

fn fixture() -> serde_json::Value {
    // Produced by scripts/reference/cnn_s_reference.py (PyTorch, CPU, float32): see its docstring for
    // the input/weight formulas that `formula_images` and `formula_model` repeat here.
    let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cnn_s_reference.json"));
    serde_json::from_str(text).expect("fixture parses")
}

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn fixture_labels(fx: &serde_json::Value) -> Vec<u8> {
    fx["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect()
}

// Against PyTorch: the error budget. The reference is PyTorch in float64 (`fx["f64"]`, same float32
// inputs and weights), not PyTorch in float32, whose digits depend on the reduction order its kernels
// pick per machine (the float32 fixture values differ between the machine that first wrote them and
// this one by up to 2.4e-7). The bound of each quantity (per parameter tensor for gradients and
// weights) is
//     K × max(s + t, u × max|value|)
// * s = `fx["f32_spread"]["max"]`: the largest |float32 − float64| of four legitimate PyTorch float32
//   orders (oneDNN or im2col + BLAS, NCHW or channels-last, 1 or 4 threads): the computation's measured
//   sensitivity to float32 rounding (an a-priori u × reduction length (≤ 200) × layers bound is ~1e-4,
//   a thousand times looser than what is measured);
// * t = `fx["tanh_fast_sensitivity"]`: the largest change of the float64 result when every tanh output
//   is off by up to 5e-7 (the bound `nn_tanh_fast_is_accurate` asserts for the kernel's rational
//   approximation; PyTorch uses a correctly rounded tanh), over 8 random draws;
// * u × max|value|: the last rounding to float32 of the largest value (u = 2⁻²⁴), the floor;
// * K = 4: another correct float32 order (the kernel's) is another draw of the same size; 4 covers the
//   variation seen between PyTorch's orders (largest/smallest: ×1.6 logits, ×3 gradients, ×1.2 SGD
//   weights, ×5.3 Adam weights, whose spread is the floor-level rounding of a few weights).
// The kernel is the same for every instruction set (bit-identical, `nn_simd_variants_are_bit_identical`);
// each check runs every variant this CPU supports anyway.

/// Safety factor over the measured sensitivities (see above).
const K: f64 = 4.0;
/// Unit roundoff of f32.
const U32: f64 = f32::EPSILON as f64 / 2.0;

/// Asserts max |got − want| ≤ K × max(spread + tanh, u × max|want|), printing the margin.
fn assert_budget(what: &str, got: &[f32], want: &[f64], spread: f64, tanh: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let bound = K * (spread + tanh).max(U32 * scale);
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(g, w)| if g.is_finite() { (*g as f64 - w).abs() } else { f64::INFINITY })
        .enumerate()
        .fold((0, 0.0f64), |m, (i, e)| if e > m.1 { (i, e) } else { m });
    eprintln!("{what}: error {err:.3e}, bound {bound:.3e} (float32 spread {spread:.2e}, tanh_fast {tanh:.2e})");
    assert!(
        err <= bound,
        "{what}: element {i}: got {}, PyTorch float64 {} (error {err:.3e} > bound {bound:.3e})",
        got[i],
        want[i]
    );
}

/// The variants this CPU can run.
fn isas() -> Vec<Isa> {
    [Isa::Portable, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.supported()).collect()
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().expect("number")
}

#[test]
fn nn_matches_pytorch_logits_loss_and_gradients() {
    let fx = fixture();
    let (want, spread, tanh) = (&fx["f64"], &fx["f32_spread"]["max"], &fx["tanh_fast_sensitivity"]);
    let labels = fixture_labels(&fx);
    let images = formula_images(labels.len());
    for isa in isas() {
        let model = formula_model();
        let logits: Vec<f32> = train::logits_f32_with(isa, &model, &images).into_iter().flatten().collect();
        assert_budget(&format!("{isa:?} logits"), &logits, &f64s(&want["logits"]), num(&spread["logits"]), num(&tanh["logits"]));
        let mut tr = Trainer::new(model, &adam_cfg(0.01)).with_isa(isa);
        let (loss, g) = tr.loss_and_gradient_f32(&images, &labels);
        assert_budget(&format!("{isa:?} loss"), &[loss], &[num(&want["loss"])], num(&spread["loss"]), num(&tanh["loss"]));
        let want_g = f64s(&want["grads"]);
        for (t, s) in PARAM_SPECS.iter().enumerate() {
            let what = format!("{isa:?} gradient of {}", s.name);
            assert_budget(&what, &g[s.range()], &want_g[s.range()], num(&spread["grads"][t]), num(&tanh["grads"][t]));
        }
    }
}

fn check_two_steps(opt: Optimizer, key: &str) {
    let fx = fixture();
    let (want, spread, tanh) = (f64s(&fx["f64"][key]), &fx["f32_spread"]["max"][key], &fx["tanh_fast_sensitivity"][key]);
    let labels = fixture_labels(&fx);
    let images = formula_images(labels.len());
    for isa in isas() {
        let mut tr = Trainer::new(formula_model(), &TrainConfig { optimizer: opt, batch_size: 4, seed: 0 }).with_isa(isa);
        for _ in 0..2 {
            assert!(!tr.step_f32(&images, &labels).diverged);
        }
        let got = tr.model().flat();
        for (t, s) in PARAM_SPECS.iter().enumerate() {
            let what = format!("{isa:?} {key}: {}", s.name);
            assert_budget(&what, &got[s.range()], &want[s.range()], num(&spread[t]), num(&tanh[t]));
        }
        // The steps moved the weights by far more than the bound (the comparison is not of the start).
        let moved = got.iter().zip(formula_model().flat()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(moved > 1e-3, "{key}: the weights barely moved ({moved})");
    }
}

#[test]
fn nn_adam_steps_match_pytorch() {
    check_two_steps(Optimizer::adam(0.01), "adam_after_2_steps");
}

#[test]
fn nn_sgd_momentum_steps_match_pytorch() {
    check_two_steps(Optimizer::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 0.001 }, "sgd_after_2_steps");
}

/// The vector variants this CPU and OS can run, read from CPUID and XCR0 directly (independently of
/// `Isa::supported` and of std's detection): AVX2 = CPUID.7.0:EBX[5] with YMM state enabled,
/// AVX-512F = CPUID.7.0:EBX[16] with opmask/ZMM state enabled.
#[cfg(target_arch = "x86_64")]
fn cpu_vector_isas() -> Vec<Isa> {
    use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
    // CPUID exists on every x86-64 CPU; leaf 7 is read only when the maximum leaf allows it.
    let (max_leaf, leaf1) = (__cpuid(0).eax, __cpuid(1));
    if max_leaf < 7 || leaf1.ecx & (1 << 27) == 0 {
        return Vec::new(); // no leaf 7, or the OS has not enabled XSAVE: no AVX state at all
    }
    // SAFETY: OSXSAVE (CPUID.1:ECX[27]) is set, so XGETBV is available.
    let xcr0 = unsafe { _xgetbv(0) };
    let ebx = __cpuid_count(7, 0).ebx;
    let mut out = Vec::new();
    if ebx & (1 << 5) != 0 && xcr0 & 0b110 == 0b110 {
        out.push(Isa::Avx2);
    }
    if ebx & (1 << 16) != 0 && xcr0 & 0xe6 == 0xe6 {
        out.push(Isa::Avx512);
    }
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_vector_isas() -> Vec<Isa> {
    Vec::new()
}

/// Every vector variant the CPU has is compared with the portable one, bit for bit; the test names
/// what it compared and fails if that is not everything the CPU has (it cannot pass by comparing nothing
/// on a machine with AVX2 or AVX-512).
#[test]
fn nn_simd_variants_are_bit_identical() {
    let (images, labels) = synthetic::synthetic_data(40, 9);
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.05, 0.9), batch_size: 24, seed: 5 };
    let run = |isa: Isa| {
        let mut t = Trainer::new(CnnS::init(2), &cfg).with_isa(isa);
        let s = t.train_epoch(&images, &labels);
        let eval = train::evaluate_with(isa, t.model(), &mut Workspace::new(), &images, &labels, None);
        let logits = train::logits_f32_with(isa, t.model(), &formula_images(5));
        (t.into_model(), s.loss, eval.loss, logits)
    };
    let base = run(Isa::Portable);
    let mut compared = Vec::new();
    for isa in [Isa::Avx2, Isa::Avx512] {
        if isa.supported() {
            let other = run(isa);
            assert!(base.0.flat().iter().zip(other.0.flat()).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?} weights");
            assert_eq!(base.1.to_bits(), other.1.to_bits(), "{isa:?} training loss");
            assert_eq!(base.2.to_bits(), other.2.to_bits(), "{isa:?} evaluation loss");
            assert_eq!(base.3, other.3, "{isa:?} logits");
            compared.push(isa);
        }
    }
    let cpu = cpu_vector_isas();
    eprintln!("cnn-s kernels: Portable compared bit for bit with {compared:?}; CPUID/XCR0 report {cpu:?}");
    assert_eq!(compared, cpu, "the variants compared are not the ones this CPU has");
}

#[test]
fn nn_training_is_deterministic_and_lowers_the_loss() {
    let (images, labels) = synthetic::synthetic_data(192, 1);
    let (test_x, test_y) = synthetic::synthetic_data(96, 2);
    let before = evaluate(&CnnS::init(4), &test_x, &test_y);
    let cfg = TrainConfig { optimizer: Optimizer::adam(3e-3), batch_size: 32, seed: 3 };
    let mut losses = Vec::new();
    let t = train(CnnS::init(4), &cfg, &images, &labels, 6, |e, s, _| {
        assert!(!s.diverged);
        losses.push((e, s.loss));
    });
    let after = t.model().clone();
    let eval = evaluate(&after, &test_x, &test_y);
    assert_eq!(losses.len(), 6);
    // Learning, not precision: on a separable problem the loss must at least halve in 6 epochs.
    assert!(losses[5].1 < 0.5 * losses[0].1, "train loss {losses:?}");
    assert!(eval.loss < 0.5 * before.loss, "test loss {} → {}", before.loss, eval.loss);
    assert!(eval.accuracy > 0.9, "test accuracy {}", eval.accuracy);
    // Same seeds ⇒ same bits.
    let again = train(CnnS::init(4), &cfg, &images, &labels, 6, |_, _, _| {});
    assert_eq!(again.model(), &after);
    // SGD with momentum learns too.
    let sgd = TrainConfig { optimizer: Optimizer::sgd(0.05, 0.9), ..cfg };
    let t = train(CnnS::init(4), &sgd, &images, &labels, 6, |_, _, _| {});
    assert!(evaluate(t.model(), &test_x, &test_y).loss < 0.7 * before.loss);
}

#[test]
fn nn_divergence_is_flagged_not_a_panic() {
    let (images, labels) = synthetic::synthetic_data(64, 1);
    let mut model = CnnS::init(1);
    model.flat_mut()[PARAM_SPECS[8].offset] = f32::NAN; // fc2.weight[0, 0]
    let mut t = Trainer::new(model.clone(), &adam_cfg(1e-3));
    let s = t.train_epoch(&images, &labels);
    assert!(s.diverged && t.diverged() && s.steps == 0);
    assert_eq!(t.model().flat()[..100], model.flat()[..100], "no update after a non-finite loss");
    assert!(t.train_epoch(&images, &labels).diverged);
    let e = evaluate(&model, &images, &labels);
    assert!(!e.loss.is_finite());

    // A huge learning rate: whatever happens, no panic and the weights stay finite.
    let mut t = Trainer::new(CnnS::init(1), &TrainConfig { optimizer: Optimizer::sgd(1e30, 0.9), batch_size: 16, seed: 0 });
    for _ in 0..3 {
        t.train_epoch(&images, &labels);
    }
    assert!(t.model().is_finite());
}

#[test]
fn nn_evaluate_agrees_with_logits() {
    let (images, labels) = synthetic::synthetic_data(37, 8);
    let model = CnnS::init(6);
    let e = evaluate(&model, &images, &labels);
    let z = logits_u8(&model, &images);
    let mut correct = 0;
    let mut loss = 0.0;
    for (z, &t) in z.iter().zip(&labels) {
        let best = (0..3).fold(0, |b, k| if z[k] > z[b] { k } else { b });
        correct += (best == t as usize) as usize;
        let zl: Vec<f64> = z.iter().map(|v| *v as f64).collect();
        loss += zl.iter().map(|v| v.exp()).sum::<f64>().ln() - zl[t as usize];
    }
    assert_eq!(e.n, 37);
    // A ratio of small integers in f64: exact to 1 ulp.
    assert!((e.accuracy - correct as f64 / 37.0).abs() < 1e-12);
    // The same f32 logits; the evaluation sums its f32 lane losses (u·|ℓ| ≈ 1e-7 each) in f64: ≪ 1e-5.
    assert!((e.loss - loss / 37.0).abs() < 1e-5);
}

// ----------------------------------------------------------------------------------------------------
// The 10-class head (one model on every class: the row-selection baseline).

fn mean_loss_n(model: &CnnS, images: &[f32], labels: &[u8]) -> f64 {
    let u8s: Vec<u8> = images.iter().map(|&v| (v * 255.0).round() as u8).collect();
    let mut sum = 0.0f64;
    for (z, &t) in logits_n_u8(model, &u8s).iter().zip(labels) {
        let zl: Vec<f64> = z.iter().map(|v| *v as f64).collect();
        sum += zl.iter().map(|v| v.exp()).sum::<f64>().ln() - zl[t as usize];
    }
    sum / labels.len() as f64
}

#[test]
fn nn_ten_class_head_gradient_matches_finite_differences() {
    let model = CnnS::init_with_classes(11, 10).unwrap();
    assert_eq!((model.classes(), model.flat().len()), (10, num_params(10)));
    // The body is drawn first: the 3-class model of the same seed has the same body.
    assert_eq!(&model.flat()[..BODY_PARAMS], &CnnS::init(11).flat()[..BODY_PARAMS]);
    let mut r = rng(16);
    // Images on the u8 grid, so the f32 gradient path and the u8 logits path see the same inputs.
    let images: Vec<f32> = (0..6 * IMAGE_PIXELS).map(|_| ((0.5 + 0.5 * unif(&mut r)) * 255.0).round() / 255.0).collect();
    let labels: Vec<u8> = (0..6).map(|i| (i * 7 % 10) as u8).collect();
    let mut tr = Trainer::new(model.clone(), &adam_cfg(1e-3));
    let (loss, g) = tr.loss_and_gradient_f32(&images, &labels);
    let g = g.to_vec();
    // Same forward in f32, the mean taken in f64 either way (see the 3-class test): inside 1e-5.
    assert!((loss as f64 - mean_loss_n(&model, &images, &labels)).abs() < 1e-5, "{loss}");
    let mut p = model.flat().to_vec();
    let f = |p: &[f32]| mean_loss_n(&CnnS::from_flat(p.to_vec()), &images, &labels);
    // Bounds as in `nn_network_gradient_matches_finite_differences`.
    for s in &PARAM_SPECS_10 {
        let idx: Vec<usize> = s.range().step_by((s.len() / 12).max(1)).collect();
        let fd: Vec<f64> = idx.iter().map(|&i| central(&mut p, i, 1e-3, f)).collect();
        let got: Vec<f32> = idx.iter().map(|&i| g[i]).collect();
        let scale = got.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
        assert_close(s.name, &got, &fd, 2e-2 * scale + 1e-5, 2e-2);
    }
    // And the trainer learns a 10-way problem: the loss on its own batch falls.
    let mut tr = Trainer::new(model, &adam_cfg(1e-2));
    let before = mean_loss_n(tr.model(), &images, &labels);
    for _ in 0..50 {
        tr.step_f32(&images, &labels);
    }
    let after = mean_loss_n(tr.model(), &images, &labels);
    assert!(after < 0.5 * before, "{before} → {after}");
}

#[test]
fn nn_selected_rows_give_the_many_class_models_logits() {
    let model = CnnS::init_with_classes(4, 10).unwrap();
    let images: Vec<u8> = formula_images(19).iter().map(|&v| (v * 255.0) as u8).collect();
    let all = logits_n_u8(&model, &images);
    for rows in [[0, 1, 2], [9, 3, 5], [7, 7, 0]] {
        let three = model.select_rows(rows).unwrap();
        assert_eq!(three.classes(), 3);
        assert_eq!(&three.flat()[..BODY_PARAMS], &model.flat()[..BODY_PARAMS]);
        for (z3, z10) in logits_u8(&three, &images).iter().zip(&all) {
            // Each output unit is its own dot product over the same hidden values: the same bits.
            assert_eq!(z3.to_vec(), rows.iter().map(|&k| z10[k]).collect::<Vec<_>>(), "rows {rows:?}");
        }
    }
    assert_eq!(model.select_rows([0, 10, 1]), Err(ParamError::Row { row: 10, classes: 10 }));
    // Named tensors round-trip with the head size read from the tensors.
    let back = CnnS::from_named_tensors(model.named_tensors()).unwrap();
    assert_eq!(back, model);
    assert_eq!(CnnS::init_with_classes(1, 4), Err(ParamError::Classes(4)));
}

/// One pass for loss, accuracy and logits gives the bits of `evaluate` and `logits_u8` apart (37
/// images: two full blocks and a partial one).
#[test]
fn evaluate_and_logits_is_evaluate_and_logits_u8() {
    let (images, labels) = synthetic::synthetic_data(37, 4);
    let model = CnnS::init(6);
    let (ev, logits) = train::evaluate_and_logits(&model, &images, &labels);
    let (want_ev, want_logits) = (train::evaluate(&model, &images, &labels), train::logits_u8(&model, &images));
    assert_eq!((ev.loss.to_bits(), ev.accuracy.to_bits(), ev.n), (want_ev.loss.to_bits(), want_ev.accuracy.to_bits(), want_ev.n));
    let bits = |l: &[[f32; 3]]| l.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&logits), bits(&want_logits));
}
