//! The ResNet-18 network: torchvision's structure, tensor names, `state_dict` order and initialisation.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::ops::{self, BnBatchStats};

use crate::sampling::{normal, uniform_in};
use crate::tensors::NamedTensor;
pub use crate::tensors::NamedTensors;

/// Input channels (torchvision's default; grey images are replicated to 3).
pub const IN_CHANNELS: usize = 3;
/// Output units of `fc`.
pub const NUM_CLASSES: usize = 3;
/// BatchNorm's running-statistics momentum (PyTorch's default).
pub const BN_MOMENTUM: f64 = 0.1;
/// `(planes, stride)` of `layer1` … `layer4`, two `BasicBlock`s each.
pub const LAYERS: [(usize, usize); 4] = [(64, 1), (128, 2), (256, 2), (512, 2)];

/// What a named tensor is (decides its initialisation, and whether the optimizer updates it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// `Conv2d` weight (no bias): `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
    ConvWeight,
    /// `BatchNorm2d.weight`: 1.
    BnWeight,
    /// `BatchNorm2d.bias`: 0.
    BnBias,
    /// Buffer `running_mean`: 0.
    RunningMean,
    /// Buffer `running_var`: 1.
    RunningVar,
    /// Buffer `num_batches_tracked` (an integer in PyTorch; stored here as an `F32` scalar): 0.
    NumBatchesTracked,
    /// `fc.weight`: PyTorch's `Linear` default, U(±1/√fan_in).
    FcWeight,
    /// `fc.bias`: U(±1/√fan_in).
    FcBias,
}

impl TensorKind {
    /// A trainable parameter (as opposed to a BatchNorm buffer).
    pub fn is_parameter(self) -> bool {
        !matches!(self, TensorKind::RunningMean | TensorKind::RunningVar | TensorKind::NumBatchesTracked)
    }
}

/// One entry of the `state_dict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn push_conv(out: &mut Vec<TensorSpec>, name: &str, shape: [usize; 4]) {
    out.push(TensorSpec { name: format!("{name}.weight"), shape: shape.to_vec(), kind: TensorKind::ConvWeight });
}

fn push_bn(out: &mut Vec<TensorSpec>, name: &str, c: usize) {
    use TensorKind::*;
    for (suffix, kind) in [("weight", BnWeight), ("bias", BnBias), ("running_mean", RunningMean), ("running_var", RunningVar)] {
        out.push(TensorSpec { name: format!("{name}.{suffix}"), shape: vec![c], kind });
    }
    out.push(TensorSpec { name: format!("{name}.num_batches_tracked"), shape: vec![], kind: NumBatchesTracked });
}

/// The 122 tensors of `torchvision.models.resnet18(num_classes=3).state_dict()`, in its order
/// (62 parameters, 60 buffers; 11,178,051 parameter values).
pub fn tensor_specs() -> Vec<TensorSpec> {
    let mut s = Vec::with_capacity(122);
    push_conv(&mut s, "conv1", [64, IN_CHANNELS, 7, 7]);
    push_bn(&mut s, "bn1", 64);
    let mut inplanes = 64;
    for (l, &(planes, stride)) in LAYERS.iter().enumerate() {
        for b in 0..2 {
            let p = format!("layer{}.{b}", l + 1);
            let (cin, st) = if b == 0 { (inplanes, stride) } else { (planes, 1) };
            push_conv(&mut s, &format!("{p}.conv1"), [planes, cin, 3, 3]);
            push_bn(&mut s, &format!("{p}.bn1"), planes);
            push_conv(&mut s, &format!("{p}.conv2"), [planes, planes, 3, 3]);
            push_bn(&mut s, &format!("{p}.bn2"), planes);
            if b == 0 && (st != 1 || cin != planes) {
                push_conv(&mut s, &format!("{p}.downsample.0"), [planes, cin, 1, 1]);
                push_bn(&mut s, &format!("{p}.downsample.1"), planes);
            }
        }
        inplanes = planes;
    }
    s.push(TensorSpec { name: "fc.weight".into(), shape: vec![NUM_CLASSES, 512], kind: TensorKind::FcWeight });
    s.push(TensorSpec { name: "fc.bias".into(), shape: vec![NUM_CLASSES], kind: TensorKind::FcBias });
    s
}

/// Number of trainable parameter values.
pub fn num_parameters() -> usize {
    tensor_specs().iter().filter(|s| s.kind.is_parameter()).map(TensorSpec::len).sum()
}

/// `Conv2d(bias=False)`.
#[derive(Debug, Clone)]
pub struct Conv {
    pub weight: Var,
    pub stride: usize,
    pub padding: usize,
}

impl Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(self.weight.as_tensor(), self.padding, self.stride, 1, 1)
    }
}

/// `BatchNorm2d` with its buffers.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    pub weight: Var,
    pub bias: Var,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub num_batches_tracked: i64,
}

impl BatchNorm {
    fn forward(&self, x: &Tensor, stats: Option<&mut Vec<BnBatchStats>>) -> Result<Tensor> {
        match stats {
            Some(stats) => {
                let (y, s) = ops::batch_norm_train(x, self.weight.as_tensor(), self.bias.as_tensor())?;
                stats.push(s);
                Ok(y)
            }
            None => {
                ops::batch_norm_eval(x, self.weight.as_tensor(), self.bias.as_tensor(), &self.running_mean, &self.running_var)
            }
        }
    }

    /// PyTorch's update: `r ← (1 − m) r + m · batch` (the variance unbiased: `· n / (n − 1)`).
    fn update(&mut self, s: &BnBatchStats) -> Result<()> {
        let m = BN_MOMENTUM;
        let unbias = s.count as f64 / (s.count.max(2) - 1) as f64;
        self.running_mean = (self.running_mean.affine(1.0 - m, 0.0)? + s.mean.affine(m, 0.0)?)?;
        self.running_var = (self.running_var.affine(1.0 - m, 0.0)? + s.var.affine(m * unbias, 0.0)?)?;
        self.num_batches_tracked += 1;
        Ok(())
    }
}

/// torchvision's `BasicBlock`.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub conv2: Conv,
    pub bn2: BatchNorm,
    pub downsample: Option<(Conv, BatchNorm)>,
}

impl BasicBlock {
    fn forward(&self, x: &Tensor, mut stats: Option<&mut Vec<BnBatchStats>>) -> Result<Tensor> {
        let out = ops::relu(&self.bn1.forward(&self.conv1.forward(x)?, stats.as_deref_mut())?)?;
        let out = self.bn2.forward(&self.conv2.forward(&out)?, stats.as_deref_mut())?;
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?, stats)?,
            None => x.clone(),
        };
        ops::relu(&(out + identity)?)
    }

    fn bns_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut v = vec![&mut self.bn1, &mut self.bn2];
        if let Some((_, bn)) = &mut self.downsample {
            v.push(bn);
        }
        v
    }
}

/// Hands out values in `tensor_specs` order while the structure is assembled.
struct Reader<'a> {
    it: std::vec::IntoIter<(TensorSpec, Vec<f32>)>,
    device: &'a Device,
}

impl Reader<'_> {
    fn tensor(&mut self, kind: TensorKind) -> Result<Tensor> {
        let (spec, v) = self.it.next().expect("tensor_specs and the structure agree");
        debug_assert_eq!(spec.kind, kind, "{}", spec.name);
        Tensor::from_vec(v, spec.shape, self.device)
    }
    fn var(&mut self, kind: TensorKind) -> Result<Var> {
        Var::from_tensor(&self.tensor(kind)?)
    }
    fn conv(&mut self, stride: usize, padding: usize) -> Result<Conv> {
        Ok(Conv { weight: self.var(TensorKind::ConvWeight)?, stride, padding })
    }
    fn bn(&mut self) -> Result<BatchNorm> {
        let weight = self.var(TensorKind::BnWeight)?;
        let bias = self.var(TensorKind::BnBias)?;
        let running_mean = self.tensor(TensorKind::RunningMean)?;
        let running_var = self.tensor(TensorKind::RunningVar)?;
        let count = self.tensor(TensorKind::NumBatchesTracked)?;
        let num_batches_tracked = count.to_scalar::<f32>()?.round() as i64;
        Ok(BatchNorm { weight, bias, running_mean, running_var, num_batches_tracked })
    }
}

/// The batch statistics of every BatchNorm of one training-mode forward, in forward order.
#[derive(Debug, Clone, Default)]
pub struct BatchStats(pub Vec<BnBatchStats>);

/// ResNet-18 (torchvision), `fc` → [`NUM_CLASSES`] outputs, on one device.
#[derive(Debug, Clone)]
pub struct ResNet18 {
    pub conv1: Conv,
    pub bn1: BatchNorm,
    pub layers: Vec<[BasicBlock; 2]>,
    pub fc_weight: Var,
    pub fc_bias: Var,
}

impl ResNet18 {
    /// torchvision's `ResNet.__init__` initialisation, drawn from a ChaCha8 stream seeded by `seed`,
    /// tensor by tensor in `state_dict` order, element by element (so a model is bit-identical run to
    /// run and machine to machine):
    /// * conv weights: N(0, 2 / fan_out), fan_out = out_channels · kh · kw (Box–Muller in f64, one
    ///   normal per two 53-bit uniforms, cast to f32);
    /// * BatchNorm: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0 (no draws);
    /// * `fc`: PyTorch's `Linear` default, weight and bias `−b + 2b·u` with b = 1/√512 and
    ///   `u = (next_u32 >> 8)·2⁻²⁴` (torchvision does not re-initialise `fc`; the thesis's code replaced
    ///   `fc` and gave it `kaiming_normal_(fan_out)` and bias 0 — we follow torchvision).
    pub fn init(seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let values = tensor_specs()
            .iter()
            .map(|s| {
                let n = s.len();
                match s.kind {
                    TensorKind::ConvWeight => {
                        let std = (2.0 / (s.shape[0] * s.shape[2] * s.shape[3]) as f64).sqrt();
                        (0..n).map(|_| (std * normal(&mut rng)) as f32).collect()
                    }
                    TensorKind::BnWeight | TensorKind::RunningVar => vec![1.0f32; n],
                    TensorKind::BnBias | TensorKind::RunningMean | TensorKind::NumBatchesTracked => vec![0.0f32; n],
                    TensorKind::FcWeight | TensorKind::FcBias => {
                        let b = 1.0 / (512f32).sqrt();
                        (0..n).map(|_| uniform_in(&mut rng, b)).collect()
                    }
                }
            })
            .collect::<Vec<Vec<f32>>>();
        Self::from_values(values, device)
    }

    /// Builds from values in [`tensor_specs`] order (f32, row-major, one value for a scalar).
    fn from_values(values: Vec<Vec<f32>>, device: &Device) -> Result<Self> {
        let specs = tensor_specs();
        assert_eq!(values.len(), specs.len());
        let mut r = Reader { it: specs.into_iter().zip(values).collect::<Vec<_>>().into_iter(), device };
        // The structure, visited in the same order as `tensor_specs`.
        let conv1 = r.conv(2, 3)?;
        let bn1 = r.bn()?;
        let mut layers = Vec::with_capacity(4);
        let mut inplanes = 64;
        for &(planes, stride) in &LAYERS {
            let mut block = |b: usize| -> Result<BasicBlock> {
                let (cin, st) = if b == 0 { (inplanes, stride) } else { (planes, 1) };
                let conv1 = r.conv(st, 1)?;
                let bn1 = r.bn()?;
                let conv2 = r.conv(1, 1)?;
                let bn2 = r.bn()?;
                let downsample = if b == 0 && (st != 1 || cin != planes) { Some((r.conv(st, 0)?, r.bn()?)) } else { None };
                Ok(BasicBlock { conv1, bn1, conv2, bn2, downsample })
            };
            let b0 = block(0)?;
            let b1 = block(1)?;
            layers.push([b0, b1]);
            inplanes = planes;
        }
        let fc_weight = r.var(TensorKind::FcWeight)?;
        let fc_bias = r.var(TensorKind::FcBias)?;
        Ok(ResNet18 { conv1, bn1, layers, fc_weight, fc_bias })
    }

    /// Builds from named tensors (any order; every name of [`tensor_specs`] exactly once, shapes as
    /// there; `num_batches_tracked` a one-value tensor of shape `[]`).
    pub fn from_named_tensors(tensors: &NamedTensors, device: &Device) -> Result<Self> {
        let specs = tensor_specs();
        if let Some(t) = tensors.iter().find(|t| !specs.iter().any(|s| s.name == t.name)) {
            candle_core::bail!("resnet18: unexpected tensor `{}`", t.name)
        }
        let mut values = Vec::with_capacity(specs.len());
        for s in &specs {
            let t =
                tensors.get(&s.name).ok_or_else(|| candle_core::Error::Msg(format!("resnet18: missing tensor `{}`", s.name)))?;
            if t.shape != s.shape || t.values.len() != s.len().max(1) {
                candle_core::bail!(
                    "resnet18: tensor `{}` has shape {:?} ({} values), expected {:?}",
                    s.name,
                    t.shape,
                    t.values.len(),
                    s.shape
                )
            }
            values.push(t.values.clone());
        }
        Self::from_values(values, device)
    }

    /// Every tensor (parameters and buffers) in `state_dict` order, paired with [`tensor_specs`].
    pub fn tensors(&self) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(122);
        let dev = self.device();
        let bn = |out: &mut Vec<Tensor>, b: &BatchNorm| -> Result<()> {
            out.push(b.weight.as_tensor().clone());
            out.push(b.bias.as_tensor().clone());
            out.push(b.running_mean.clone());
            out.push(b.running_var.clone());
            out.push(Tensor::new(b.num_batches_tracked as f32, &dev)?);
            Ok(())
        };
        out.push(self.conv1.weight.as_tensor().clone());
        bn(&mut out, &self.bn1)?;
        for layer in &self.layers {
            for block in layer {
                out.push(block.conv1.weight.as_tensor().clone());
                bn(&mut out, &block.bn1)?;
                out.push(block.conv2.weight.as_tensor().clone());
                bn(&mut out, &block.bn2)?;
                if let Some((c, b)) = &block.downsample {
                    out.push(c.weight.as_tensor().clone());
                    bn(&mut out, b)?;
                }
            }
        }
        out.push(self.fc_weight.as_tensor().clone());
        out.push(self.fc_bias.as_tensor().clone());
        Ok(out)
    }

    /// `(name, shape, values)` of every tensor in `state_dict` order, as f32 on the host (what
    /// `zoo` writes as safetensors; `num_batches_tracked` becomes an `F32` scalar, which PyTorch's
    /// `load_state_dict` copies into its `int64` buffer).
    pub fn named_tensors(&self) -> Result<NamedTensors> {
        tensor_specs()
            .into_iter()
            .zip(self.tensors()?)
            .map(|(s, t)| Ok(NamedTensor::new(s.name, s.shape, t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)))
            .collect()
    }

    /// The trainable parameters in `state_dict` order (62 tensors).
    pub fn parameters(&self) -> Vec<&Var> {
        let mut out = Vec::with_capacity(62);
        out.push(&self.conv1.weight);
        out.extend([&self.bn1.weight, &self.bn1.bias]);
        for layer in &self.layers {
            for block in layer {
                out.extend([&block.conv1.weight, &block.bn1.weight, &block.bn1.bias]);
                out.extend([&block.conv2.weight, &block.bn2.weight, &block.bn2.bias]);
                if let Some((c, b)) = &block.downsample {
                    out.extend([&c.weight, &b.weight, &b.bias]);
                }
            }
        }
        out.extend([&self.fc_weight, &self.fc_bias]);
        out
    }

    /// The names of [`ResNet18::parameters`].
    pub fn parameter_names() -> Vec<String> {
        tensor_specs().into_iter().filter(|s| s.kind.is_parameter()).map(|s| s.name).collect()
    }

    fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut out = vec![&mut self.bn1];
        for layer in &mut self.layers {
            for block in layer.iter_mut() {
                out.extend(block.bns_mut());
            }
        }
        out
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.fc_bias.device().clone()
    }

    /// The same weights on another device and/or dtype (e.g. `F64` for finite differences).
    pub fn to(&self, device: &Device, dtype: DType) -> Result<Self> {
        let mut m = self.clone();
        let conv = |c: &Conv| -> Result<Conv> {
            Ok(Conv { weight: Var::from_tensor(&c.weight.to_device(device)?.to_dtype(dtype)?)?, ..c.clone() })
        };
        let var = |v: &Var| -> Result<Var> { Var::from_tensor(&v.to_device(device)?.to_dtype(dtype)?) };
        let bn = |b: &BatchNorm| -> Result<BatchNorm> {
            Ok(BatchNorm {
                weight: var(&b.weight)?,
                bias: var(&b.bias)?,
                running_mean: b.running_mean.to_device(device)?.to_dtype(dtype)?,
                running_var: b.running_var.to_device(device)?.to_dtype(dtype)?,
                num_batches_tracked: b.num_batches_tracked,
            })
        };
        m.conv1 = conv(&self.conv1)?;
        m.bn1 = bn(&self.bn1)?;
        for (dst, src) in m.layers.iter_mut().zip(&self.layers) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = BasicBlock {
                    conv1: conv(&s.conv1)?,
                    bn1: bn(&s.bn1)?,
                    conv2: conv(&s.conv2)?,
                    bn2: bn(&s.bn2)?,
                    downsample: match &s.downsample {
                        Some((c, b)) => Some((conv(c)?, bn(b)?)),
                        None => None,
                    },
                };
            }
        }
        m.fc_weight = var(&self.fc_weight)?;
        m.fc_bias = var(&self.fc_bias)?;
        Ok(m)
    }

    fn forward_impl(&self, x: &Tensor, mut stats: Option<&mut Vec<BnBatchStats>>) -> Result<Tensor> {
        let x = self.conv1.forward(x)?;
        let x = ops::relu(&self.bn1.forward(&x, stats.as_deref_mut())?)?;
        let mut x = ops::max_pool_3x3_s2_p1(&x)?;
        for layer in &self.layers {
            for block in layer {
                x = block.forward(&x, stats.as_deref_mut())?;
            }
        }
        let x = x.mean([2, 3])?; // AdaptiveAvgPool2d(1) + flatten
        x.matmul(&self.fc_weight.t()?)?.broadcast_add(self.fc_bias.as_tensor())
    }

    /// Training-mode forward of `x` (N, 3, H, W): logits (N, 3) and every BatchNorm's batch statistics.
    /// The running statistics are not touched; pass the statistics to [`ResNet18::update_running_stats`].
    pub fn forward_train(&self, x: &Tensor) -> Result<(Tensor, BatchStats)> {
        let mut stats = Vec::with_capacity(20);
        let logits = self.forward_impl(x, Some(&mut stats))?;
        Ok((logits, BatchStats(stats)))
    }

    /// Eval-mode forward (running statistics): logits (N, 3).
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_impl(x, None)
    }

    /// PyTorch's running-statistics update (momentum 0.1, unbiased variance), and
    /// `num_batches_tracked += 1`, for every BatchNorm.
    pub fn update_running_stats(&mut self, stats: &BatchStats) -> Result<()> {
        let bns = self.batch_norms_mut();
        if bns.len() != stats.0.len() {
            candle_core::bail!("resnet18: {} batch statistics for {} BatchNorm layers", stats.0.len(), bns.len())
        }
        for (bn, s) in bns.into_iter().zip(&stats.0) {
            bn.update(s)?;
        }
        Ok(())
    }

    /// Replaces the trainable parameters (same order and shapes as [`ResNet18::parameters`]).
    pub fn set_parameters(&self, values: &[Tensor]) -> Result<()> {
        let params = self.parameters();
        if params.len() != values.len() {
            candle_core::bail!("resnet18: {} values for {} parameters", values.len(), params.len())
        }
        for (p, v) in params.into_iter().zip(values) {
            p.set(v)?;
        }
        Ok(())
    }
}
