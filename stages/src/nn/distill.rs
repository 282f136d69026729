//! Distillation: how far a student `cnn-s`'s outputs are from a teacher's on probe images, and the
//! gradient of that distance with respect to the student's weights (the behavioural term of the weight
//! autoencoder and of latent refinement, [`crate::weights`]).
//!
//! With teacher logits `t_i` and student logits `s_i` (3 each) on `n` probe images, temperature `T`:
//!
//! ```text
//! p_i = softmax(t_i / T),  q_i = softmax(s_i / T)
//! ℓ = T² · (1/n) Σ_i KL(p_i ‖ q_i) = T² · (1/n) Σ_i Σ_k p_ik (ln p_ik − ln q_ik)
//! ∂ℓ/∂s_ik = (T / n) · (q_ik − p_ik)
//! ```
//!
//! This is PyTorch's `F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean") · T²`
//! (Hinton et al.'s distillation loss; the `T²` keeps the gradient's scale independent of `T`). The
//! gradient with respect to the weights is the network's hand-written backward pass
//! ([`super::net::backward_from_dz`]) run from `∂ℓ/∂s`. The loss is accumulated in f64.

use super::kernels::L;
use super::net::{backward_from_dz, eval_block, Isa, Workspace};
use super::{IMAGE_PIXELS, NUM_CLASSES, NUM_PARAMS};

/// `softmax(z / T)` in f64, and its logarithm.
fn softmax_t(z: &[f32; NUM_CLASSES], t: f64) -> ([f64; NUM_CLASSES], [f64; NUM_CLASSES]) {
    let s = z.map(|v| v as f64 / t);
    let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + s.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    let log = s.map(|v| v - lse);
    (log.map(f64::exp), log)
}

/// The distillation loss of `student` (flat `cnn-s` weights) against `teacher` logits on `images`
/// (`n × 784` f32, already scaled), at temperature `temperature`; when `grad` is given, `∂ℓ/∂weights`
/// is **added** to it. Images are processed in blocks of [`L`] with `ws` as scratch.
pub fn distill(
    student: &[f32],
    images: &[f32],
    teacher: &[[f32; NUM_CLASSES]],
    temperature: f32,
    grad: Option<&mut [f32]>,
    ws: &mut Workspace,
) -> f64 {
    distill_with_labels(student, images, teacher, &[], temperature, 0.0, grad, ws)
}

/// `(1 − λ)·`[`distill`]` + λ·CE`, CE the mean cross-entropy of the student's logits (temperature 1)
/// with `labels` (one per image; unused when `λ = 0`): one forward and one backward pass per block,
/// from `∂ℓ/∂s_ik = (1 − λ)·(T/n)·(q_ik − p_ik) + λ·(softmax(s_i)_k − [k = y_i])/n`. With `λ = 0` it is
/// [`distill`], bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn distill_with_labels(
    student: &[f32],
    images: &[f32],
    teacher: &[[f32; NUM_CLASSES]],
    labels: &[u8],
    temperature: f32,
    label_weight: f64,
    mut grad: Option<&mut [f32]>,
    ws: &mut Workspace,
) -> f64 {
    let n = teacher.len();
    let lambda = label_weight;
    assert_eq!(student.len(), NUM_PARAMS);
    assert_eq!(images.len(), n * IMAGE_PIXELS, "one teacher output per image");
    assert!(lambda == 0.0 || labels.len() == n, "one label per image");
    if let Some(g) = grad.as_deref() {
        assert_eq!(g.len(), NUM_PARAMS);
    }
    if n == 0 {
        return 0.0;
    }
    let isa = Isa::detect();
    let t = temperature as f64;
    let (mut loss, mut ce) = (0.0f64, 0.0f64);
    for start in (0..n).step_by(L) {
        let len = L.min(n - start);
        ws.load_f32(&images[start * IMAGE_PIXELS..(start + len) * IMAGE_PIXELS]);
        ws.labels = [0; L];
        eval_block(isa, student, ws, len);
        ws.dz.iter_mut().for_each(|v| *v = 0.0);
        for l in 0..len {
            let z = ws.logits(l);
            let (p, log_p) = softmax_t(&teacher[start + l], t);
            let (q, log_q) = softmax_t(&z, t);
            loss += (0..NUM_CLASSES).map(|k| if p[k] > 0.0 { p[k] * (log_p[k] - log_q[k]) } else { 0.0 }).sum::<f64>();
            let mut dz: [f64; NUM_CLASSES] = std::array::from_fn(|k| (1.0 - lambda) * (t / n as f64 * (q[k] - p[k])));
            if lambda > 0.0 {
                let y = labels[start + l] as usize;
                let (q1, log_q1) = softmax_t(&z, 1.0);
                ce -= log_q1[y];
                for (k, d) in dz.iter_mut().enumerate() {
                    *d += lambda * (q1[k] - if k == y { 1.0 } else { 0.0 }) / n as f64;
                }
            }
            for (k, d) in dz.iter().enumerate() {
                ws.dz[k * L + l] = *d as f32;
            }
        }
        if let Some(g) = grad.as_deref_mut() {
            backward_from_dz(isa, student, g, ws);
        }
    }
    let kl = t * t * loss / n as f64;
    if lambda > 0.0 {
        (1.0 - lambda) * kl + lambda * ce / n as f64
    } else {
        kl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{logits_f32, CnnS, PARAM_SPECS};

    /// 20 images (one full block and a short one) of U(0, 1) pixels from a fixed LCG.
    fn images(n: usize) -> Vec<f32> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n * IMAGE_PIXELS)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect()
    }

    #[test]
    fn distill_is_zero_against_itself_and_positive_otherwise() {
        let (a, b) = (CnnS::init(1), CnnS::init(2));
        let x = images(20);
        let mut ws = Workspace::new();
        let teacher = logits_f32(&a, &x);
        let mut g = vec![0.0f32; NUM_PARAMS];
        let own = distill(a.flat(), &x, &teacher, 2.0, Some(&mut g), &mut ws);
        // p = q exactly (same kernel, same bits): the loss and every gradient entry are 0.
        assert_eq!(own, 0.0);
        assert!(g.iter().all(|v| *v == 0.0));
        assert!(distill(b.flat(), &x, &teacher, 2.0, None, &mut ws) > 1e-4);
    }

    #[test]
    fn distill_matches_pytorch() {
        // `scripts/weights/distill_reference.py` (torch, f32): the formula student and images of the
        // cnn-s reference, teacher logits 3·sin(1.3n + 0.7k + 0.2), T = 2.
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/distill_reference.json"));
        let fx: serde_json::Value = serde_json::from_str(text).expect("fixture parses");
        let f = |k: &str| fx[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect::<Vec<f64>>();
        let teacher: Vec<[f32; 3]> = f("teacher").chunks(3).map(|c| [c[0] as f32, c[1] as f32, c[2] as f32]).collect();
        let (student, images) = (crate::nn::tests::formula_model(), crate::nn::tests::formula_images(4));
        let mut g = vec![0.0f32; NUM_PARAMS];
        let loss = distill(
            student.flat(),
            &images,
            &teacher,
            fx["temperature"].as_f64().unwrap() as f32,
            Some(&mut g),
            &mut Workspace::new(),
        );
        let want_loss = fx["loss"].as_f64().unwrap();
        // The loss is a sum of 12 f64 terms of f32 logits: each logit carries ~1e-6 relative f32 error
        // from its reductions (≤ 200 products), so 1e-5 relative is ample and still far below any real bug.
        assert!((loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "loss {loss} vs torch {want_loss}");
        let want = f("grads");
        for s in &PARAM_SPECS {
            let scale = want[s.range()].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            // Error budget: the longest reduction is conv1's weight gradient, 4 images × 24·24 = 2,304
            // products summed in a different order than torch; its worst-case f32 error is
            // 2,304 · ε_f32 (6e-8) ≈ 1.4e-4 of the tensor's scale.
            for i in s.range() {
                assert!(
                    (g[i] as f64 - want[i]).abs() <= 1.4e-4 * scale + 1e-9,
                    "{} [{}]: {} vs torch {}",
                    s.name,
                    i - s.offset,
                    g[i],
                    want[i]
                );
            }
        }
    }

    #[test]
    fn distill_gradient_matches_finite_differences() {
        let (teacher_model, student) = (CnnS::init(5), CnnS::init(9));
        let x = images(20);
        let teacher = logits_f32(&teacher_model, &x);
        let mut ws = Workspace::new();
        let mut g = vec![0.0f32; NUM_PARAMS];
        distill(student.flat(), &x, &teacher, 2.0, Some(&mut g), &mut ws);
        let mut p = student.flat().to_vec();
        for s in &PARAM_SPECS {
            for i in s.range().step_by((s.len() / 7).max(1)) {
                let h = 1e-3f32;
                let keep = p[i];
                p[i] = keep + h;
                let up = distill(&p, &x, &teacher, 2.0, None, &mut ws);
                p[i] = keep - h;
                let down = distill(&p, &x, &teacher, 2.0, None, &mut ws);
                p[i] = keep;
                let fd = (up - down) / (2.0 * h as f64);
                // Central differences of an f32 forward pass: truncation O(h²·ℓ''') ≈ 1e-7 and rounding
                // ≈ ε_f32·|ℓ|/h ≈ 1e-7·0.1/1e-3 = 1e-5 (the loss is ~0.1); a max-pool argmax that
                // flips inside ±h can add more, so the bound is 1e-4 absolute + 2 % relative.
                let tol = 1e-4 + 0.02 * fd.abs();
                assert!(
                    (g[i] as f64 - fd).abs() <= tol,
                    "{} [{}]: analytic {} vs finite differences {fd}",
                    s.name,
                    i - s.offset,
                    g[i]
                );
            }
        }
    }

    #[test]
    fn the_label_term_is_the_trainers_cross_entropy_and_mixes_linearly() {
        let (m, teacher_model) = (CnnS::init(3), CnnS::init(4));
        let x = images(20);
        let teacher = logits_f32(&teacher_model, &x);
        let labels: Vec<u8> = (0..20).map(|i| (i % 3) as u8).collect();
        let run = |lambda: f64| {
            let mut g = vec![0.0f32; NUM_PARAMS];
            let loss = distill_with_labels(m.flat(), &x, &teacher, &labels, 1.0, lambda, Some(&mut g), &mut Workspace::new());
            (loss, g)
        };
        // λ = 0 is `distill`, bit for bit.
        let mut g0 = vec![0.0f32; NUM_PARAMS];
        let d = distill(m.flat(), &x, &teacher, 1.0, Some(&mut g0), &mut Workspace::new());
        assert_eq!(run(0.0), (d, g0.clone()));
        // λ = 1 is the training kernel's cross-entropy (its f32 softmax against our f64 one: the per-image
        // dz differ by a few f32 roundings of values ≤ 1/20, so gradients agree to 1e-6 + 1e-4 relative).
        let cfg = crate::nn::TrainConfig { optimizer: crate::nn::Optimizer::adam(1e-3), batch_size: 20, seed: 0 };
        let mut tr = crate::nn::Trainer::new(m.clone(), &cfg);
        let (want, want_g) = tr.loss_and_gradient_f32(&x, &labels);
        let (l1, g1) = run(1.0);
        assert!((l1 - want as f64).abs() < 1e-6 * want.abs() as f64 + 1e-6, "{l1} vs {want}");
        for (a, b) in g1.iter().zip(want_g) {
            assert!((a - b).abs() <= 1e-6 + 1e-4 * b.abs(), "{a} vs {b}");
        }
        // The mix is linear in λ (loss and gradient), up to f32 rounding of the gradient.
        let (lh, gh) = run(0.5);
        assert!((lh - 0.5 * (d + l1)).abs() < 1e-12, "{lh}");
        for ((h, a), b) in gh.iter().zip(&g0).zip(&g1) {
            assert!((h - 0.5 * (a + b)).abs() <= 1e-6 + 1e-5 * h.abs(), "{h} vs {a}, {b}");
        }
    }
}
