//! The candle layers of the project's transformers (the token autoencoder, the flow denoiser): linear,
//! LayerNorm, pre-norm blocks and a token stack, every product through [`crate::matmul`] so the bytes
//! do not depend on the machine's caches, and every weight drawn from one seeded stream ([`Init`]).
//!
//! ```text
//! stack(x) = LayerNorm(blocks(x·E + P))·O           E input projection, P learned position per token
//! block(x) = x + MHA(LN(x));  x + MLP(LN(x))        MHA: `heads` heads; MLP d → 2d → d, GELU
//! ```
//!
//! Initialisation: linear layers as PyTorch's default, U(±1/√in) (weight, then bias); positions
//! N(0, 0.02²); LayerNorm 1, 0; in creation order.

use candle_core::{Device, Tensor, Var, D};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wspace_stage_api::StageError;

use crate::matmul::matmul;
use crate::param_ops::{add_left, mul_left};
use crate::sampling::{normal_f32, uniform_in};
use crate::tensors::candle_error;

/// `y = x Wᵀ + b` on the last dimension; `W` `[out, in]`. Not candle-nn's `Linear`: its product is
/// candle's own, whose float order follows the machine's cache ([`crate::matmul`]).
pub struct Linear {
    w: Var,
    b: Var,
}

impl Linear {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::matmul::linear(x, self.w.as_tensor(), self.b.as_tensor())
    }
}

/// LayerNorm over the last dimension (ε = 1e-5). Not candle-nn's `LayerNorm`: on contiguous inputs it
/// runs a fused kernel with no backward pass, so nothing trains through it.
pub struct LayerNorm {
    g: Var,
    b: Var,
}

impl LayerNorm {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let y = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        add_left(&mul_left(&y, self.g.as_tensor())?, self.b.as_tensor())
    }
}

struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn forward(&self, x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let dh = d / heads;
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?;
        let split = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(2, i * d, d)?.reshape((b, t, heads, dh))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let att = (matmul(&q, &k.t()?.contiguous()?)? / (dh as f64).sqrt())?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        let o = matmul(&att, &v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let x = (x + self.proj.forward(&o)?)?;
        let m = self.fc2.forward(&self.fc1.forward(&self.ln2.forward(&x)?)?.gelu_erf()?)?;
        x + m
    }
}

/// The shape of a [`Stack`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StackShape {
    pub tokens: usize,
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
}

/// Input projection, position embedding, blocks, final norm, output projection: `[B, T, in]` →
/// `[B, T, out]`.
pub struct Stack {
    input: Linear,
    position: Var,
    blocks: Vec<Block>,
    ln: LayerNorm,
    output: Linear,
    heads: usize,
}

impl Stack {
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.input.forward(x)?;
        let mut h = add_left(&h, self.position.as_tensor())?;
        for block in &self.blocks {
            h = block.forward(&h, self.heads)?;
        }
        self.output.forward(&self.ln.forward(&h)?)
    }
}

/// Creates the variables on `device` in order from one seeded stream and records their names.
pub struct Init {
    rng: ChaCha8Rng,
    device: Device,
    pub named: Vec<(String, Var)>,
}

impl Init {
    pub fn new(seed: u64, device: &Device) -> Init {
        Init { rng: ChaCha8Rng::seed_from_u64(seed), device: device.clone(), named: Vec::new() }
    }

    fn var(&mut self, name: String, shape: &[usize], values: Vec<f32>) -> Result<Var, StageError> {
        let v = Var::from_vec(values, shape, &self.device).map_err(candle_error("init"))?;
        self.named.push((name, v.clone()));
        Ok(v)
    }

    pub fn linear(&mut self, name: &str, i: usize, o: usize) -> Result<Linear, StageError> {
        let bound = 1.0 / (i as f32).sqrt();
        let w = (0..o * i).map(|_| uniform_in(&mut self.rng, bound)).collect();
        let b = (0..o).map(|_| uniform_in(&mut self.rng, bound)).collect();
        Ok(Linear { w: self.var(format!("{name}.weight"), &[o, i], w)?, b: self.var(format!("{name}.bias"), &[o], b)? })
    }

    pub fn norm(&mut self, name: &str, d: usize) -> Result<LayerNorm, StageError> {
        Ok(LayerNorm {
            g: self.var(format!("{name}.weight"), &[d], vec![1.0; d])?,
            b: self.var(format!("{name}.bias"), &[d], vec![0.0; d])?,
        })
    }

    /// A stack `[B, tokens, inp]` → `[B, tokens, out]`; `heads` must divide `d_model`.
    pub fn stack(&mut self, prefix: &str, s: StackShape, inp: usize, out: usize) -> Result<Stack, StageError> {
        if s.heads == 0 || !s.d_model.is_multiple_of(s.heads) {
            return Err(StageError::param("heads", format!("{} does not divide d_model = {}", s.heads, s.d_model)));
        }
        let d = s.d_model;
        let input = self.linear(&format!("{prefix}.input"), inp, d)?;
        let pos: Vec<f32> = (0..s.tokens * d).map(|_| 0.02 * normal_f32(&mut self.rng)).collect();
        let position = self.var(format!("{prefix}.position"), &[s.tokens, d], pos)?;
        let mut blocks = Vec::with_capacity(s.layers);
        for l in 0..s.layers {
            let p = format!("{prefix}.blocks.{l}");
            blocks.push(Block {
                ln1: self.norm(&format!("{p}.ln1"), d)?,
                qkv: self.linear(&format!("{p}.attn.qkv"), d, 3 * d)?,
                proj: self.linear(&format!("{p}.attn.proj"), d, d)?,
                ln2: self.norm(&format!("{p}.ln2"), d)?,
                fc1: self.linear(&format!("{p}.mlp.fc1"), d, 2 * d)?,
                fc2: self.linear(&format!("{p}.mlp.fc2"), 2 * d, d)?,
            });
        }
        let ln = self.norm(&format!("{prefix}.ln"), d)?;
        let output = self.linear(&format!("{prefix}.output"), d, out)?;
        Ok(Stack { input, position, blocks, ln, output, heads: s.heads })
    }
}
