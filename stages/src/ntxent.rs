//! The symmetric (CLIP-style) NT-Xent loss between projections and weight latents.
//!
//! For `p` `[N, k]` (projected prompts) and `h` `[N, k]` (weight latents), row `i` of each a positive pair:
//!
//! ```text
//! P = p / |p|,  H = h / |h|            (row-wise, |x| floored at 1e-12)
//! S = P Hᵀ / τ                          (cosine similarities over the temperature)
//! loss = ½ (CE(S, 0..N) + CE(Sᵀ, 0..N))  (mean cross-entropy: p → its h, and h → its p)
//! ```
//!
//! With random pairings the loss is about `ln N` (the "chance" value). Checked against PyTorch by
//! `scripts/generate/ntxent_reference.py` (fixture `stages/tests/fixtures/generate/ntxent.json`).

use candle_core::{DType, Device, Tensor, D};

/// Row-wise L2 normalisation.
pub fn normalise_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
    x.broadcast_div(&norm)
}

/// `S = P Hᵀ`: cosine similarity of every projection (rows) with every latent (columns).
pub fn cosine_matrix(p: &Tensor, h: &Tensor) -> candle_core::Result<Tensor> {
    crate::matmul::matmul(&normalise_rows(p)?, &normalise_rows(h)?.t()?)
}

/// The loss of the [module doc](self) (a scalar tensor of `p`'s dtype).
pub fn ntxent(p: &Tensor, h: &Tensor, tau: f64) -> candle_core::Result<Tensor> {
    let n = p.dim(0)?;
    let s = (cosine_matrix(p, h)? / tau)?;
    let target = Tensor::arange(0u32, n as u32, p.device())?;
    let a = candle_nn::loss::cross_entropy(&s, &target)?;
    let b = candle_nn::loss::cross_entropy(&s.t()?.contiguous()?, &target)?;
    (a + b)? / 2.0
}

/// [`ntxent`] on plain `f32` rows (`n × k` each), as `f64`.
pub fn ntxent_value(p: &[f32], h: &[f32], k: usize, tau: f64) -> candle_core::Result<f64> {
    let n = p.len() / k.max(1);
    if n == 0 {
        return Ok(f64::NAN);
    }
    let p = Tensor::from_slice(p, (n, k), &Device::Cpu)?;
    let h = Tensor::from_slice(h, (n, k), &Device::Cpu)?;
    ntxent(&p, &h, tau)?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn matches_pytorch_reference() {
        let fixture: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/generate/ntxent.json")).unwrap();
        for case in fixture["cases"].as_array().unwrap() {
            let n = case["n"].as_u64().unwrap() as usize;
            let k = case["k"].as_u64().unwrap() as usize;
            let tau = case["tau"].as_f64().unwrap();
            let vals = |key: &str| -> Vec<f64> { case[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
            let p = Var::from_vec(vals("p"), (n, k), &Device::Cpu).unwrap();
            let h = Tensor::from_vec(vals("h"), (n, k), &Device::Cpu).unwrap();
            let loss = ntxent(p.as_tensor(), &h, tau).unwrap();
            let got = loss.to_scalar::<f64>().unwrap();
            let want = case["loss"].as_f64().unwrap();
            // Both sides in f64 (u = 2⁻⁵³): each similarity is a length-k dot product of unit rows over τ
            // (|S| ≤ 1/τ), each cross-entropy a logsumexp over n terms, plus ~8 elementwise operations
            // (normalising, exp, log, the means), so |error| ≤ (k + n + 8)·u/τ per side, times 1/min|p|
            // for the gradient (∂P/∂p scales as 1/|p|); K = 4 for the two sides and libm's 1-ulp exp/log.
            let min_norm =
                (0..n).map(|i| vals("p")[i * k..(i + 1) * k].iter().map(|v| v * v).sum::<f64>().sqrt()).fold(1.0, f64::min);
            let budget = 4.0 * (k + n + 8) as f64 * (f64::EPSILON / 2.0) / tau;
            assert!((got - want).abs() <= budget * want.abs().max(1.0), "loss {got} vs PyTorch {want} (bound {budget:.2e})");
            let grads = loss.backward().unwrap();
            let g = grads.get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let g_scale = vals("grad_p").iter().fold(1.0f64, |m, v| m.max(v.abs()));
            for (a, b) in g.iter().zip(vals("grad_p")) {
                assert!((a - b).abs() <= budget * g_scale / min_norm, "gradient {a} vs PyTorch {b}");
            }
        }
    }

    #[test]
    fn perfect_alignment_beats_chance() {
        let h: Vec<f32> = (0..16).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect(); // 4 one-hot-ish rows
        let aligned = ntxent_value(&h, &h, 4, 0.1).unwrap();
        assert!(aligned < 0.01, "{aligned}");
        let zeros = vec![1.0f32; 16];
        let chance = ntxent_value(&zeros, &h, 4, 0.1).unwrap();
        // In f32 (`ntxent_value`) with all similarities equal (s = 5), each cross-entropy is logsumexp − s =
        // ln 4 up to a few roundings of values ≤ s + ln 4 ≈ 6.4: ~6 × u₃₂ × 6.4 ≈ 2.3e-6; 1e-5 is K = 4 × that.
        assert!((chance - 4f64.ln()).abs() < 1e-5, "{chance}");
    }
}
