//! Optimizers with PyTorch's (2.x, single-tensor CPU path) update rules, on the flat parameter vector.
//!
//! With `g` the gradient (plus `weight_decay · θ` when that is non-zero, i.e. L2, not AdamW) and `t` the
//! 1-based step:
//! * **Adam**: `m ← m + (1−β₁)(g − m)`, `v ← β₂ v + (1−β₂) g²`,
//!   `θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)`. Defaults β = (0.9, 0.999), ε = 10⁻⁸.
//! * **SGD with momentum** (dampening 0, not Nesterov): `b ← g` on the first step, else
//!   `b ← μ b + g`; `θ ← θ − lr · b`. With `μ = 0` it is plain SGD.
//!
//! Scalars (bias corrections, step size) are computed in f64 as Python does, element updates in f32.
//! The moment buffers are allocated once, in [`OptimizerState::new`].

/// Optimizer choice and hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    Adam { lr: f64, beta1: f64, beta2: f64, eps: f64, weight_decay: f64 },
    Sgd { lr: f64, momentum: f64, weight_decay: f64 },
}

impl Optimizer {
    /// Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8, no weight decay).
    pub fn adam(lr: f64) -> Self {
        Optimizer::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }

    /// SGD with momentum `momentum` (0 for plain SGD), no weight decay.
    pub fn sgd(lr: f64, momentum: f64) -> Self {
        Optimizer::Sgd { lr, momentum, weight_decay: 0.0 }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            Optimizer::Adam { lr, .. } | Optimizer::Sgd { lr, .. } => lr,
        }
    }
}

/// An optimizer with its state (step count, moment buffers) for `n` parameters.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    opt: Optimizer,
    step: u64,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl OptimizerState {
    /// Fresh state for `n` parameters.
    pub fn new(opt: Optimizer, n: usize) -> Self {
        let v_len = if matches!(opt, Optimizer::Adam { .. }) { n } else { 0 };
        OptimizerState { opt, step: 0, m: vec![0.0; n], v: vec![0.0; v_len] }
    }

    /// The configuration.
    pub fn optimizer(&self) -> Optimizer {
        self.opt
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update of `params` with `grads`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        assert_eq!(params.len(), self.m.len());
        assert_eq!(grads.len(), self.m.len());
        self.step += 1;
        match self.opt {
            Optimizer::Adam { lr, beta1, beta2, eps, weight_decay } => {
                let t = self.step as f64;
                let bc1 = 1.0 - libm::pow(beta1, t);
                let bc2 = 1.0 - libm::pow(beta2, t);
                let step_size = (lr / bc1) as f32;
                let bc2_sqrt = bc2.sqrt() as f32;
                let (w1, b2, w2, eps, wd) =
                    ((1.0 - beta1) as f32, beta2 as f32, (1.0 - beta2) as f32, eps as f32, weight_decay as f32);
                for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
                    let g = if wd != 0.0 { g + wd * *p } else { g };
                    *m += w1 * (g - *m);
                    *v = *v * b2 + w2 * g * g;
                    let denom = v.sqrt() / bc2_sqrt + eps;
                    *p += -step_size * (*m / denom);
                }
            }
            Optimizer::Sgd { lr, momentum, weight_decay } => {
                let (lr, mu, wd) = (lr as f32, momentum as f32, weight_decay as f32);
                let first = self.step == 1;
                for ((p, &g), b) in params.iter_mut().zip(grads).zip(&mut self.m) {
                    let g = if wd != 0.0 { g + wd * *p } else { g };
                    let d = if mu == 0.0 {
                        g
                    } else {
                        *b = if first { g } else { *b * mu + g };
                        *b
                    };
                    *p += -lr * d;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_step_moves_by_lr_times_sign() {
        let mut st = OptimizerState::new(Optimizer::adam(0.01), 3);
        let mut p = vec![1.0f32, -2.0, 0.5];
        st.step(&mut p, &[0.3, -4.0, 1e-3]);
        // m̂ = g, v̂ = g² ⇒ Δ = −lr·g/(|g| + ε) ≈ −lr·sign(g)
        // Exact rule: Δ = lr·g/(|g| + ε), off from lr·sign(g) by lr·ε/|g| ≤ 1e-7, plus f32 rounding of |p| ≤ 2
        // (ulp 2.4e-7): < 1e-6. A wrong bias correction would move by ≥ 1e-3.
        for (a, b) in p.iter().zip([0.99f32, -1.99, 0.49]) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn sgd_momentum_matches_hand_computation() {
        let mut st = OptimizerState::new(Optimizer::sgd(0.1, 0.9), 1);
        let mut p = vec![1.0f32];
        st.step(&mut p, &[2.0]); // b = 2, p = 1 − 0.2
        assert!((p[0] - 0.8).abs() < 1e-7); // f32: 0.2 and 1 − 0.2 each rounded, ≤ ulp(0.8) = 6e-8
        st.step(&mut p, &[1.0]); // b = 0.9·2 + 1 = 2.8, p = 0.8 − 0.28
        assert!((p[0] - 0.52).abs() < 1e-6); // ≤ 5 f32 roundings of values < 3 (≤ 1.2e-7 each): 6e-7
    }
}
