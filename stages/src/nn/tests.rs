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
    // Exactly one element per window gets the whole upstream gradient (not a quarter of it).
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
    assert!(worst < 5e-7, "tanh_fast max abs error {worst}");
    for x in [1e-5f32, -3e-4, 1e-30, 0.0] {
        assert_eq!(tanh_fast(x), x);
    }
    assert!(tanh_fast(f32::NAN).is_nan());
    assert!((tanh_fast(f32::INFINITY) - 1.0).abs() < 1e-6);
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
    assert_close("tanh dx", &g, &fd, 2e-4, 1e-3);
}

#[test]
fn nn_softmax_xent_backward_matches_finite_differences() {
    let mut r = rng(5);
    let mut z: Vec<f32> = randv(&mut r, 3 * L).iter().map(|v| 4.0 * v).collect();
    let labels: Vec<u8> = (0..L).map(|l| (l % 3) as u8).collect();
    let n_valid = 13; // three padding lanes
    let scale = 1.0 / n_valid as f32;
    let loss = |z: &[f32]| xent_lanes(z, &labels, n_valid).0 / n_valid as f64;
    let mut dz = vec![f32::NAN; 3 * L];
    let (sum, _) = softmax_xent(&z, &labels, n_valid, scale, &mut dz);
    // The loss itself: logsumexp − z[t], computed here in f64.
    let mut want = 0.0;
    for l in 0..n_valid {
        let zl: Vec<f64> = (0..3).map(|k| z[k * L + l] as f64).collect();
        want += zl.iter().map(|v| v.exp()).sum::<f64>().ln() - zl[labels[l] as usize];
    }
    assert!((sum - want).abs() < 1e-5 * n_valid as f64, "{sum} vs {want}");
    let fd: Vec<f64> = (0..z.len()).map(|i| central(&mut z, i, 1e-3, loss)).collect();
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

#[test]
fn nn_matches_pytorch_logits_loss_and_gradients() {
    let fx = fixture();
    let labels = fixture_labels(&fx);
    let images = formula_images(labels.len());
    let model = formula_model();
    let logits: Vec<f32> = logits_f32(&model, &images).into_iter().flatten().collect();
    assert_close("logits", &logits, &f64s(&fx["logits"]), 2e-6, 1e-5);
    let mut tr = Trainer::new(model, &adam_cfg(0.01));
    let (loss, g) = tr.loss_and_gradient_f32(&images, &labels);
    let want_loss = fx["loss"].as_f64().unwrap();
    assert!((loss as f64 - want_loss).abs() < 2e-6, "loss {loss} vs PyTorch {want_loss}");
    let want = f64s(&fx["grads"]);
    for s in &PARAM_SPECS {
        let scale = want[s.range()].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert_close(s.name, &g[s.range()], &want[s.range()], 1e-4 * scale + 1e-8, 1e-4);
    }
}

fn check_two_steps(opt: Optimizer, key: &str) {
    let fx = fixture();
    let labels = fixture_labels(&fx);
    let images = formula_images(labels.len());
    let mut tr = Trainer::new(formula_model(), &TrainConfig { optimizer: opt, batch_size: 4, seed: 0 });
    for _ in 0..2 {
        assert!(!tr.step_f32(&images, &labels).diverged);
    }
    let want = f64s(&fx[key]);
    let got = tr.model().flat();
    // Adam's first steps move every weight by ≈ lr regardless of the gradient's size, so compare the
    // change from the start, relative to lr.
    let start = formula_model();
    let lr = opt.lr();
    let got_delta: Vec<f32> = got.iter().zip(start.flat()).map(|(a, b)| a - b).collect();
    let want_delta: Vec<f64> = want.iter().zip(start.flat()).map(|(a, b)| a - *b as f64).collect();
    assert_close(key, &got_delta, &want_delta, 2e-3 * lr, 2e-3);
    assert_close(key, got, &want, 1e-6, 1e-6);
}

#[test]
fn nn_adam_steps_match_pytorch() {
    check_two_steps(Optimizer::adam(0.01), "adam_after_2_steps");
}

#[test]
fn nn_sgd_momentum_steps_match_pytorch() {
    check_two_steps(Optimizer::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 0.001 }, "sgd_after_2_steps");
}

#[test]
fn nn_simd_variants_are_bit_identical() {
    let (images, labels) = synthetic::synthetic_data(40, 9);
    let cfg = TrainConfig { optimizer: Optimizer::sgd(0.05, 0.9), batch_size: 24, seed: 5 };
    let run = |isa: Isa| {
        let mut t = Trainer::new(CnnS::init(2), &cfg).with_isa(isa);
        let s = t.train_epoch(&images, &labels);
        (t.into_model(), s.loss)
    };
    let base = run(Isa::Portable);
    for isa in [Isa::Avx2, Isa::Avx512] {
        if isa.supported() {
            let other = run(isa);
            assert!(base.0.flat().iter().zip(other.0.flat()).all(|(a, b)| a.to_bits() == b.to_bits()), "{isa:?}");
            assert_eq!(base.1.to_bits(), other.1.to_bits());
        }
    }
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
    assert!((e.accuracy - correct as f64 / 37.0).abs() < 1e-12);
    assert!((e.loss - loss / 37.0).abs() < 1e-5);
}
