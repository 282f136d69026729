//! [`crate::nn::Optimizer`] (PyTorch's Adam and SGD-with-momentum, L2 weight decay) on candle tensors,
//! for any device. The update rules are those of `nn::optim` (PyTorch 2.x single-tensor path):
//! * Adam: `m ← m + (1−β₁)(g − m)` (`lerp`), `v ← β₂ v + (1−β₂) g²`,
//!   `θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)`;
//! * SGD: `b ← g` on the first step, else `b ← μ b + g`; `θ ← θ − lr · b`.
//!
//! [`TensorOptimizer`] works on any device (it is what CUDA uses); [`InPlaceOptimizer`] is the CPU path.
//!
//! candle's own `AdamW` decouples weight decay (it is `torch.optim.AdamW`, not `Adam`) and its `SGD` has
//! no momentum, hence this module.

use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor};

use crate::nn::{Optimizer, OptimizerState};

/// An optimizer's state for a list of parameter tensors.
#[derive(Debug, Clone)]
pub struct TensorOptimizer {
    opt: Optimizer,
    step: u64,
    /// Adam's first moment, or SGD's momentum buffer.
    m: Vec<Option<Tensor>>,
    /// Adam's second moment.
    v: Vec<Option<Tensor>>,
}

impl TensorOptimizer {
    /// Fresh state for `n` parameter tensors.
    pub fn new(opt: Optimizer, n: usize) -> Self {
        TensorOptimizer { opt, step: 0, m: vec![None; n], v: vec![None; n] }
    }

    /// The configuration.
    pub fn optimizer(&self) -> Optimizer {
        self.opt
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The updated values of `params` given `grads` (the caller installs them). Advances the state.
    pub fn step(&mut self, params: &[Tensor], grads: &[Tensor]) -> Result<Vec<Tensor>> {
        assert_eq!(params.len(), self.m.len());
        assert_eq!(grads.len(), self.m.len());
        self.step += 1;
        let mut out = Vec::with_capacity(params.len());
        match self.opt {
            Optimizer::Adam { lr, beta1, beta2, eps, weight_decay } => {
                let t = self.step as f64;
                let step_size = lr / (1.0 - beta1.powf(t));
                let bc2_sqrt = (1.0 - beta2.powf(t)).sqrt();
                for (i, (p, g)) in params.iter().zip(grads).enumerate() {
                    let g = if weight_decay != 0.0 { (g + p.affine(weight_decay, 0.0)?)? } else { g.clone() };
                    let m = match &self.m[i] {
                        None => g.affine(1.0 - beta1, 0.0)?,
                        Some(m) => (m + (&g - m)?.affine(1.0 - beta1, 0.0)?)?,
                    };
                    let g2 = g.sqr()?.affine(1.0 - beta2, 0.0)?;
                    let v = match &self.v[i] {
                        None => g2,
                        Some(v) => (v.affine(beta2, 0.0)? + g2)?,
                    };
                    let denom = v.sqrt()?.affine(1.0 / bc2_sqrt, eps)?;
                    out.push((p - (&m / denom)?.affine(step_size, 0.0)?)?);
                    self.m[i] = Some(m);
                    self.v[i] = Some(v);
                }
            }
            Optimizer::Sgd { lr, momentum, weight_decay } => {
                for (i, (p, g)) in params.iter().zip(grads).enumerate() {
                    let g = if weight_decay != 0.0 { (g + p.affine(weight_decay, 0.0)?)? } else { g.clone() };
                    let d = if momentum == 0.0 {
                        g
                    } else {
                        let b = match &self.m[i] {
                            None => g,
                            Some(b) => (b.affine(momentum, 0.0)? + g)?,
                        };
                        self.m[i] = Some(b.clone());
                        b
                    };
                    out.push((p - d.affine(lr, 0.0)?)?);
                }
            }
        }
        Ok(out)
    }
}

/// The CPU path: the same update, done in place on the parameters' storage by
/// [`crate::nn::OptimizerState`] (one per tensor; the rules of `nn::optim`, tested against PyTorch),
/// so a step allocates nothing (the tensor version allocates ~12 parameter-sized tensors per step,
/// which on the CPU cost as much as the forward and backward passes at 28×28).
#[derive(Debug)]
pub struct InPlaceOptimizer {
    states: Vec<std::sync::Mutex<OptimizerState>>,
    backups: Vec<std::sync::Mutex<Vec<f32>>>,
}

struct StepOp<'a> {
    state: &'a std::sync::Mutex<OptimizerState>,
    backup: &'a std::sync::Mutex<Vec<f32>>,
    restore: bool,
    finite: &'a std::sync::atomic::AtomicBool,
}

fn slice_of<'s>(s: &'s [f32], l: &Layout) -> Result<&'s [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s[a..b]),
        None => candle_core::bail!("optimizer step: non-contiguous tensor"),
    }
}

impl InplaceOp2 for StepOp<'_> {
    fn name(&self) -> &'static str {
        "wspace-optimizer-step"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else { candle_core::bail!("optimizer step: f32 tensors only") };
        let Some((a, b)) = l1.contiguous_offsets() else { candle_core::bail!("optimizer step: non-contiguous parameter") };
        let p = &mut p[a..b];
        let mut backup = self.backup.lock().expect("backup lock");
        if self.restore {
            p.copy_from_slice(&backup);
            return Ok(());
        }
        let g = slice_of(g, l2)?;
        backup.clear();
        backup.extend_from_slice(p);
        self.state.lock().expect("state lock").step(p, g);
        if !p.iter().all(|v| v.is_finite()) {
            self.finite.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

impl InPlaceOptimizer {
    /// Fresh state for parameter tensors of the given element counts.
    pub fn new(opt: Optimizer, sizes: &[usize]) -> Self {
        InPlaceOptimizer {
            states: sizes.iter().map(|&n| std::sync::Mutex::new(OptimizerState::new(opt, n))).collect(),
            backups: sizes.iter().map(|_| std::sync::Mutex::new(Vec::new())).collect(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.states.first().map(|s| s.lock().expect("state lock").steps()).unwrap_or(0)
    }

    /// Updates `params` (contiguous f32 CPU tensors, e.g. `Var`s) in place with `grads`. When an
    /// updated value is not finite, every parameter is restored to its value before the step and
    /// `false` is returned (the moment buffers have advanced; the caller stops training).
    pub fn step(&self, params: &[&Tensor], grads: &[Tensor]) -> Result<bool> {
        assert_eq!(params.len(), self.states.len());
        assert_eq!(grads.len(), self.states.len());
        let finite = std::sync::atomic::AtomicBool::new(true);
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let g = if g.is_contiguous() { g.clone() } else { g.contiguous()? };
            p.inplace_op2(&g, &StepOp { state: &self.states[i], backup: &self.backups[i], restore: false, finite: &finite })?;
        }
        if finite.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(true);
        }
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            p.inplace_op2(g, &StepOp { state: &self.states[i], backup: &self.backups[i], restore: true, finite: &finite })?;
        }
        Ok(false)
    }
}
