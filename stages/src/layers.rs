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

use candle_core::cpu::erf::erf_f32;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Device, Layout, Shape, Tensor, Var, D};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use wspace_stage_api::StageError;

use crate::matmul::matmul;
use crate::param_ops::{add_left, mul_left, values};
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
        let m = self.fc2.forward(&gelu_erf(&self.fc1.forward(&self.ln2.forward(&x)?)?)?)?;
        x + m
    }
}

/// candle's `gelu_erf`, forward and backward, each in one pass over the elements with candle's f32
/// operations in candle's order, so the same bits: candle's backward is eleven element-wise tensor
/// operations, each allocating a full-size output. Off the CPU it is candle's own.
fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if !x.device().is_cpu() {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluErf)
}

struct GeluErf;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = values(storage, layout)?;
        let out = x.iter().map(|&v| (erf_f32(v * std::f32::consts::FRAC_1_SQRT_2) + 1.) * 0.5 * v).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(arg, &GeluErfGrad)?))
    }
}

/// `grad · gelu_erf'(x)`, as candle's backward forms it: `0.5 + 0.398942·e^(−x²/2)·x + 0.5·erf(x/√2)`,
/// where each scalar product or sum with a constant is candle's `affine` (`v·mul + add`, `+ 0` included).
struct GeluErfGrad;

impl CustomOp2 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "gelu-erf-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (grad, x) = (values(s1, l1)?, values(s2, l2)?);
        let affine = |v: f32, mul: f64, add: f64| v * mul as f32 + add as f32;
        let out = grad
            .iter()
            .zip(x)
            .map(|(&g, &x)| {
                let neg_half_square = affine(-(x * x), 1. / 2., 0.);
                let scaled_exp_arg = affine(neg_half_square.exp(), 0.398942, 0.) * x;
                let erf_scaled_sqrt = affine(erf_f32(affine(x, 1. / 2f64.sqrt(), 0.)), 0.5, 0.);
                g * (affine(scaled_exp_arg, 1., 0.5) + erf_scaled_sqrt)
            })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused GELU gives candle's bits, forward and backward, on values across magnitudes and signs,
    /// zeros of both signs, and an upstream gradient of mixed magnitudes.
    #[test]
    fn fused_gelu_gives_candles_bits() {
        let mut s = 0x9e37_79b9u32;
        let mut next = |i: usize| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            match i % 13 {
                0 => 0.0,
                1 => -0.0,
                _ => (s as f32 / u32::MAX as f32 - 0.5) * 10f32.powi((i % 9) as i32 - 4),
            }
        };
        let x: Vec<f32> = (0..4097).map(&mut next).collect();
        let up: Vec<f32> = (0..4097).map(&mut next).collect();
        let v = Var::from_vec(x, (17, 241), &Device::Cpu).unwrap();
        let up = Tensor::from_vec(up, (17, 241), &Device::Cpu).unwrap();
        let bits =
            |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let run = |y: Tensor| {
            let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
            (bits(&y), bits(g.get(&v).unwrap()))
        };
        assert_eq!(run(gelu_erf(v.as_tensor()).unwrap()), run(v.as_tensor().gelu_erf().unwrap()));
    }
}
