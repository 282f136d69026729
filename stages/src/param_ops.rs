//! Operations on parameters whose backward passes are fast and give the bits candle's would.
//!
//! [`broadcast_left`]: a tensor repeated over new leading dimensions (a bias over a batch, positions
//! over a batch of sequences). candle's backward of `broadcast_as` sums the gradient over the broadcast
//! dimensions with its generic reduction: when those are not the last dimensions it walks the gradient
//! element by element, locating each one's destination with a division per dimension (`perf`: a fifth
//! of the flow's training time). Here the same sum — every destination starts at 0 and adds the
//! gradient's rows in memory order, one rounding per addition, as candle does — takes one vector add
//! per row.
//!
//! [`add_left`], [`mul_left`]: `x + t` and `x · t` with `t` repeated that way, in one pass without
//! materialising the repeat (8 % of the flow's time), the same bits as `x ∘ broadcast_left(t)`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// `t` (shape `s`) repeated to `shape` (`[..., s]`: `s` is `shape`'s trailing dimensions), materialised;
/// its gradient is the sum of the output gradient's rows. Off the CPU it is candle's `broadcast_as`.
pub fn broadcast_left(t: &Tensor, shape: &Shape) -> Result<Tensor> {
    check_trailing(t, shape)?;
    if !t.device().is_cpu() {
        return t.broadcast_as(shape);
    }
    t.contiguous()?.apply_op1(Repeat { shape: shape.clone() })
}

/// `x + broadcast_left(t, x.shape())` in one pass, without materialising the repeated `t`: the same
/// values and gradients, bit for bit (each output is the same one addition; `t`'s gradient is the same
/// [`SumRows`]). Off the CPU it is candle's `broadcast_add`.
pub fn add_left(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    rows(x, t, RowOp::Add)
}

/// `x * broadcast_left(t, x.shape())` in one pass, as [`add_left`]: `x`'s gradient is `g · t`, `t`'s the
/// [`SumRows`] of `g · x`, each product the one candle's `mul` backward forms.
pub fn mul_left(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    rows(x, t, RowOp::Mul)
}

fn rows(x: &Tensor, t: &Tensor, op: RowOp) -> Result<Tensor> {
    check_trailing(t, x.shape())?;
    match (x.device().is_cpu(), op) {
        (true, _) => x.contiguous()?.apply_op2(&t.contiguous()?, Rows { op }),
        (false, RowOp::Add) => x.broadcast_add(t),
        (false, RowOp::Mul) => x.broadcast_mul(t),
    }
}

fn check_trailing(t: &Tensor, shape: &Shape) -> Result<()> {
    let (dims, own) = (shape.dims(), t.dims());
    if own.len() > dims.len() || dims[dims.len() - own.len()..] != *own {
        candle_core::bail!("broadcast_left: {:?} is not the trailing part of {shape:?}", t.shape());
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum RowOp {
    Add,
    Mul,
}

/// `x ∘ t` with `t` repeated over `x`'s rows (`t`'s size each).
struct Rows {
    op: RowOp,
}

impl CustomOp2 for Rows {
    fn name(&self) -> &'static str {
        match self.op {
            RowOp::Add => "add-left",
            RowOp::Mul => "mul-left",
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, t) = (values(s1, l1)?, values(s2, l2)?);
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks_exact(t.len().max(1)) {
            match self.op {
                RowOp::Add => out.extend(row.iter().zip(t).map(|(a, b)| a + b)),
                RowOp::Mul => out.extend(row.iter().zip(t).map(|(a, b)| a * b)),
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, t: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let sum_rows = |g: &Tensor| g.apply_op1_no_bwd(&SumRows { shape: t.shape().clone() });
        Ok(match self.op {
            RowOp::Add => (Some(grad.clone()), Some(sum_rows(&grad)?)),
            RowOp::Mul => {
                let gx = grad.apply_op2_no_bwd(t, &Rows { op: RowOp::Mul })?;
                (Some(gx), Some(sum_rows(&grad.mul(x)?)?))
            }
        })
    }
}

/// The values of a contiguous f32 storage.
pub(crate) fn values<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("param_ops: a contiguous f32 tensor is expected"),
    }
}

struct Repeat {
    shape: Shape,
}

impl CustomOp1 for Repeat {
    fn name(&self) -> &'static str {
        "broadcast-left"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let row = values(storage, layout)?;
        let out: Vec<f32> = row.iter().copied().cycle().take(self.shape.elem_count()).collect();
        Ok((CpuStorage::F32(out), self.shape.clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&SumRows { shape: arg.shape().clone() })?))
    }
}

/// The sum of a tensor's rows of `shape`'s size: `dst = 0; for row in order: dst += row`.
struct SumRows {
    shape: Shape,
}

impl CustomOp1 for SumRows {
    fn name(&self) -> &'static str {
        "sum-rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = values(storage, layout)?;
        let mut dst = vec![0.0f32; self.shape.elem_count()];
        for row in src.chunks_exact(dst.len().max(1)) {
            dst.iter_mut().zip(row).for_each(|(d, s)| *d += s);
        }
        Ok((CpuStorage::F32(dst), self.shape.clone()))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// `n` values of mixed magnitude (sums whose order matters) from a fixed xorshift; with
    /// `signed_zeros`, every 11th is −0.
    fn mixed(n: usize, seed: u32, signed_zeros: bool) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                if signed_zeros && i % 11 == 0 {
                    -0.0
                } else {
                    (s as f32 / u32::MAX as f32 - 0.5) * 10f32.powi((i % 7) as i32 - 3)
                }
            })
            .collect()
    }

    /// The same forward values and the same gradient bits as candle's `broadcast_as`, on sums whose
    /// order matters (values of mixed magnitude), for a vector and a matrix repeated over 1 and 2 dims.
    #[test]
    fn same_bits_as_candle() {
        let mixed = |n: usize, seed: u32| mixed(n, seed, false);
        for (own, shape) in [(vec![5], vec![37, 5]), (vec![3, 4], vec![6, 9, 3, 4]), (vec![8], vec![2, 3, 8])] {
            let n: usize = own.iter().product();
            let t = Var::from_vec(mixed(n, 1), own.as_slice(), &Device::Cpu).unwrap();
            let m: usize = shape.iter().product();
            let up = Tensor::from_vec(mixed(m, 2), shape.as_slice(), &Device::Cpu).unwrap();
            let shape = Shape::from(shape);
            let theirs = t.as_tensor().broadcast_as(&shape).unwrap();
            let ours = broadcast_left(t.as_tensor(), &shape).unwrap();
            let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat(&theirs), flat(&ours));
            let grad = |y: &Tensor| {
                let g = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
                flat(g.get(&t).unwrap()).iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(grad(&theirs), grad(&ours), "{own:?} over {shape:?}");
        }
        let t = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(broadcast_left(&t, &Shape::from((2, 4))).is_err());
        assert!(add_left(&Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu).unwrap(), &t).is_err());
    }

    /// `add_left` and `mul_left` give the bits of `x ∘ broadcast_left(t)`: values, and the gradients of
    /// both `x` and `t`, with mixed magnitudes and signed zeros in the upstream gradient.
    #[test]
    fn add_and_mul_left_give_the_bits_of_the_materialised_repeat() {
        let mixed = |n: usize, seed: u32| mixed(n, seed, true);
        let flat =
            |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (own, shape) in [(vec![5], vec![37, 5]), (vec![3, 4], vec![6, 9, 3, 4])] {
            let (n, m) = (own.iter().product::<usize>(), shape.iter().product::<usize>());
            let t = Var::from_vec(mixed(n, 1), own.as_slice(), &Device::Cpu).unwrap();
            let x = Var::from_vec(mixed(m, 3), shape.as_slice(), &Device::Cpu).unwrap();
            let up = Tensor::from_vec(mixed(m, 2), shape.as_slice(), &Device::Cpu).unwrap();
            let repeated = broadcast_left(t.as_tensor(), x.shape()).unwrap();
            type Op = fn(&Tensor, &Tensor) -> Result<Tensor>;
            let cases: [(Op, Tensor); 2] =
                [(add_left, (x.as_tensor() + &repeated).unwrap()), (mul_left, (x.as_tensor() * &repeated).unwrap())];
            for (op, theirs) in cases {
                let ours = op(x.as_tensor(), t.as_tensor()).unwrap();
                assert_eq!(flat(&ours), flat(&theirs));
                let grads = |y: &Tensor| {
                    let g = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
                    (flat(g.get(&x).unwrap()), flat(g.get(&t).unwrap()))
                };
                assert_eq!(grads(&ours), grads(&theirs), "{own:?} over {shape:?}");
            }
        }
    }
}
