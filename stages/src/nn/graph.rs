//! `cnn-s` as a candle graph: the forward pass of one network on its images, differentiable with respect
//! to the network's flat weights, on any candle device. It is how the behavioural term runs on a GPU
//! ([`crate::weights::behaviour::Engine`]); on the CPU the kernel of [`super::net`] computes the same
//! maths faster, and to the same bits on every machine.
//!
//! The layers are the kernel's ([`super`]'s module doc): conv 5×5 → max-pool 2 → tanh, conv 5×5 →
//! max-pool 2 → tanh, conv 2×2 → tanh, flatten `(C, H, W)`, fc → tanh, fc. Two differences, both below
//! float tolerance: `tanh` is candle's (the kernel's is a rational approximation within a few ulp), and
//! the products sum in candle's order. The 2×2 max-pool is `max_pool2` below: candle's own `max_pool2d`
//! is not used, as its backward is wrong (DESIGN.md).
//!
//! [`distill_loss`] is [`super::distill_with_labels`]'s loss on these logits: `(1 − λ)·T²·KL(p ‖ q) +
//! λ·CE`, mean over the images, with `p = softmax(teacher / T)`, `q = softmax(student / T)` and CE at
//! temperature 1.

use candle_core::{Result, Tensor, D};

use super::cnn_s::{classes_of_len, ParamSpec, IMAGE_SIDE};
use super::param_specs;

/// One parameter of `flat` (`[num_params]`) in its PyTorch shape.
fn param(flat: &Tensor, spec: &ParamSpec) -> Result<Tensor> {
    flat.narrow(0, spec.offset, spec.len())?.reshape(spec.shape)
}

/// `max` over each 2×2 window (stride 2) of `x` `[N, C, H, W]` (`H`, `W` even), whose gradient goes to
/// the window's *first* maximum in row-major order, as the kernel's and PyTorch's: the output is the
/// window times a constant one-hot mask of that element. (Ties are common: a conv over blank background
/// gives its bias everywhere.)
fn max_pool2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let windows = x.reshape((n, c, h / 2, 2, w / 2, 2))?.permute((0, 1, 2, 4, 3, 5))?.reshape((n, c, h / 2, w / 2, 4))?;
    let plain = windows.detach();
    let is_max = plain.broadcast_eq(&plain.max_keepdim(4)?)?.to_dtype(x.dtype())?;
    let mut none_before = is_max.narrow(4, 0, 1)?.ones_like()?;
    let mut first = Vec::with_capacity(4);
    for k in 0..4 {
        let here = is_max.narrow(4, k, 1)?;
        first.push((&here * &none_before)?);
        none_before = (none_before * (1.0 - here)?)?;
    }
    (windows * Tensor::cat(&first, 4)?)?.sum(4)
}

/// The logits `[P, classes]` of the network with flat weights `flat` (`[num_params]`, `state_dict`
/// order) on `images` (`[P, 784]`, pixels/255).
pub fn logits(flat: &Tensor, images: &Tensor) -> Result<Tensor> {
    let len = flat.dim(0)?;
    let specs = classes_of_len(len)
        .and_then(param_specs)
        .ok_or_else(|| candle_core::Error::Msg(format!("cnn-s: {len} parameters is no supported head")))?;
    let p: Vec<Tensor> = specs.iter().map(|s| param(flat, s)).collect::<Result<_>>()?;
    let bias4 = |b: &Tensor| b.reshape((1, b.dim(0)?, 1, 1));
    let n = images.dim(0)?;
    let x = images.reshape((n, 1, IMAGE_SIDE, IMAGE_SIDE))?;
    let conv = |x: &Tensor, w: &Tensor, b: &Tensor| x.conv2d(w, 0, 1, 1, 1)?.broadcast_add(&bias4(b)?);
    let a1 = max_pool2(&conv(&x, &p[0], &p[1])?)?.tanh()?;
    let a2 = max_pool2(&conv(&a1, &p[2], &p[3])?)?.tanh()?;
    let a3 = conv(&a2, &p[4], &p[5])?.tanh()?.reshape((n, 36))?;
    let h = a3.matmul(&p[6].t()?)?.broadcast_add(&p[7])?.tanh()?;
    h.matmul(&p[8].t()?)?.broadcast_add(&p[9])
}

/// The loss of [the module doc](self) for student logits `student` `[P, C]` against the teacher's
/// `teacher` `[P, C]` and `labels` `[P]` (u32; unused when `λ = 0`), as a scalar tensor.
pub fn distill_loss(student: &Tensor, teacher: &Tensor, labels: &Tensor, temperature: f64, label_weight: f64) -> Result<Tensor> {
    let n = student.dim(0)? as f64;
    let log_p = candle_nn::ops::log_softmax(&(teacher / temperature)?, D::Minus1)?;
    let log_q = candle_nn::ops::log_softmax(&(student / temperature)?, D::Minus1)?;
    let kl = ((log_p.exp()? * (log_p - log_q)?)?.sum_all()? * (temperature * temperature / n))?;
    if label_weight == 0.0 {
        return Ok(kl);
    }
    let ce = candle_nn::loss::cross_entropy(student, labels)?;
    (kl * (1.0 - label_weight))? + (ce * label_weight)?
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::nn::{logits_f32, CnnS, IMAGE_PIXELS, NUM_PARAMS, PARAM_SPECS};
    use crate::weights::behaviour::{Engine, Probe};

    /// `n` images from a fixed LCG: a blank top half (as Fashion-MNIST's background: every max-pool
    /// window there is a tie) over U(0, 1) pixels.
    fn images(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n * IMAGE_PIXELS)
            .map(|i| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if i % IMAGE_PIXELS < IMAGE_PIXELS / 2 {
                    0.0
                } else {
                    (x >> 40) as f32 / (1u64 << 24) as f32
                }
            })
            .collect()
    }

    /// Whether `got` is within `rel` of `want`'s largest magnitude, per parameter tensor.
    fn close_per_tensor(got: &[f32], want: &[f64], rel: f64) -> std::result::Result<(), String> {
        for s in &PARAM_SPECS {
            let scale = want[s.range()].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for i in s.range() {
                if (got[i] as f64 - want[i]).abs() > rel * scale + 1e-9 {
                    return Err(format!("{} [{}]: {} vs {}", s.name, i - s.offset, got[i], want[i]));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn graph_distillation_matches_pytorch() {
        // The fixture of `nn::distill`'s PyTorch test (`scripts/weights/distill_reference.py`, torch f32):
        // the formula student on 4 formula images, teacher logits 3·sin(1.3n + 0.7k + 0.2), T = 2. The
        // tolerances are that test's: the loss is 12 terms of f32 logits from ≤ 200-product reductions
        // (1e-5 relative), and the longest gradient reduction, conv1's weight, sums 4 · 24 · 24 = 2,304
        // products in another order than torch (2,304 · ε_f32 ≈ 1.4e-4 of the tensor's scale).
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/distill_reference.json"));
        let fx: serde_json::Value = serde_json::from_str(text).unwrap();
        let f = |k: &str| fx[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect::<Vec<f32>>();
        let (student, x) = (crate::nn::tests::formula_model(), crate::nn::tests::formula_images(4));
        let dev = Device::Cpu;
        let w = Var::from_slice(student.flat(), NUM_PARAMS, &dev).unwrap();
        let images = Tensor::from_slice(&x, (4, IMAGE_PIXELS), &dev).unwrap();
        let teacher = Tensor::from_vec(f("teacher"), (4, 3), &dev).unwrap();
        let labels = Tensor::zeros(4, candle_core::DType::U32, &dev).unwrap();
        let t = fx["temperature"].as_f64().unwrap();
        let loss = distill_loss(&logits(w.as_tensor(), &images).unwrap(), &teacher, &labels, t, 0.0).unwrap();
        let (got, want) = (loss.to_scalar::<f32>().unwrap() as f64, fx["loss"].as_f64().unwrap());
        assert!((got - want).abs() <= 1e-5 * want.abs(), "loss {got} vs torch {want}");
        let g = loss.backward().unwrap().get(&w).unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f64> = f("grads").into_iter().map(f64::from).collect();
        close_per_tensor(&g, &want, 1.4e-4).unwrap();
    }

    #[test]
    fn graph_engine_matches_the_kernel_with_labels() {
        // Two students of one batch, each on its own 20 images, against teachers of other models, with
        // λ = 0.25. Kernel (`Engine::Kernel`) and graph (`Engine::Graph` on the CPU) differ in summation
        // order and in tanh (the kernel's rational tanh is within a few ulp). Budget: the longest reduction,
        // conv1's weight gradient over 20 · 24 · 24 = 11,520 products, ≈ 11,520 · ε_f32 ≈ 7e-4 of the
        // tensor's scale; the loss, from 3-logit softmaxes of ≤ 200-product reductions, 1e-5 relative.
        let students = [CnnS::init(11), CnnS::init(12)];
        let probes: Vec<Probe> = (0..2)
            .map(|i| {
                let x = images(20, 7 + i as u64);
                let teacher = logits_f32(&CnnS::init(30 + i as u64), &x);
                let labels = (0..20).map(|j| (j % 3) as u8).collect();
                Probe { images: x, teacher, labels }
            })
            .collect();
        let weights: Vec<Vec<f32>> = students.iter().map(|s| s.flat().to_vec()).collect();
        let refs: Vec<&Probe> = probes.iter().collect();
        let kernel = Engine::Kernel.losses(&weights, &refs, 2.0, 0.25, true).unwrap();
        let graph = Engine::Graph(Device::Cpu).losses(&weights, &refs, 2.0, 0.25, true).unwrap();
        for ((lk, gk), (lg, gg)) in kernel.iter().zip(&graph) {
            assert!((lk - lg).abs() <= 1e-5 * lk.abs(), "loss {lg} vs kernel {lk}");
            let want: Vec<f64> = gk.iter().map(|&v| v as f64).collect();
            close_per_tensor(gg, &want, 7e-4).unwrap();
        }
        // Without gradients, the losses alone.
        let values = Engine::Graph(Device::Cpu).losses(&weights, &refs, 2.0, 0.25, false).unwrap();
        assert!(values.iter().zip(&graph).all(|(a, b)| a.0 == b.0 && a.1.is_empty()));
    }
}
