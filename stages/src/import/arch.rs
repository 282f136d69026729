//! The architectures of imported zoos, described once as data: tensor names and shapes (the project's
//! PyTorch-style names), layers (what the forward pass, the tokeniser and the permutation symmetries
//! read), and a forward pass on images through candle.
//!
//! | arch name | network | tensors |
//! | --- | --- | --- |
//! | `cnn-s` | the project's cnn-s: 3 outputs, tanh (runs on the fast kernel, [`crate::nn`]) | `conv1` `[8,1,5,5]`, `conv2` `[6,8,5,5]`, `conv3` `[4,6,2,2]`, `fc1` `[20,36]`, `fc2` `[3,20]` (+ biases) |
//! | `cnn-s-c<K>-<nlin>` | Model Zoos CNN-s: Conv(1,8,5) → pool 2 → act → Conv(8,6,5) → pool 2 → act → Conv(6,4,2) → act → Linear(36,20) → act → Linear(20,K) | the same names, `fc2` `[K,20]` |
//! | `small-cnn-<nlin>` (`-valid`) | Small CNN Zoo: 3 × (Conv(·,16,3, stride 2), TensorFlow `same` padding (extra row/column bottom/right), or `valid`) → act → global average pool → Linear(16,10) | `conv1` `[16,1,3,3]`, `conv2`, `conv3` `[16,16,3,3]`, `fc` `[10,16]` (+ biases) |
//!
//! `nlin` is one of `tanh`, `relu`, `gelu` (PyTorch's exact erf form), `sigmoid`, `leakyrelu`
//! (slope 0.01). Every tensor is a `*.weight` `[out, …]` followed by its `*.bias` `[out]`
//! (`state_dict` order), so a layer's tokens are its output units ([`ImportArch::token_layers`]).
//!
//! Permutation symmetries ([`ImportArch::symmetries`]): the output units of every hidden layer can be
//! permuted (with the next layer's input columns) without changing the function, since every
//! activation and pooling acts per channel; with tanh, a hidden unit's sign can also be flipped where
//! no max-pool lies between the layer and its activation (cnn-s: `conv3` and `fc1`; the Small CNN Zoo
//! network: every conv, since zero padding and the average pool commute with a sign).

use candle_core::{DType, Device, Tensor};
use wspace_stage_api::StageError;

use crate::tensors::{candle_error, NamedTensors};
use crate::zoo::store::ParamShape;

/// The architectures a zoo's `arch` names: itself, or each of `mixed:<a>,<b>,…` (an imported zoo whose
/// models differ, `zoo.csv` naming each model's own).
pub fn members(arch: &str) -> Vec<&str> {
    arch.strip_prefix("mixed:").map_or_else(|| vec![arch], |m| m.split(',').collect())
}

/// The tensors of the zoo architecture `arch` ([`members`]): every member must be an [`ImportArch`]
/// name, and all must have the same tensors. `Err`: what is wrong, naming the architecture.
pub fn tensors_of(arch: &str) -> Result<Vec<ParamShape>, String> {
    let mut layouts = Vec::new();
    for name in members(arch) {
        let described = ImportArch::from_name(name).ok_or_else(|| format!("unknown architecture `{name}`"))?;
        layouts.push(described.tensors());
    }
    if layouts.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("the models of `{arch}` have different tensors"));
    }
    Ok(layouts.swap_remove(0))
}

/// A pointwise activation (`model::nlin`, `config.activation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nlin {
    Tanh,
    Relu,
    Gelu,
    Sigmoid,
    LeakyRelu,
}

impl Nlin {
    /// The names accepted (the Model Zoos spelling first).
    pub const KNOWN: &'static [&'static str] = &["tanh", "relu", "gelu", "sigmoid", "leakyrelu"];

    /// Reads a source's spelling: `leakyrelu`, `leaky_relu` and `leaky-relu` are one; case is ignored.
    pub fn parse(s: &str) -> Option<Nlin> {
        Some(match s.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
            "tanh" => Nlin::Tanh,
            "relu" => Nlin::Relu,
            "gelu" => Nlin::Gelu,
            "sigmoid" => Nlin::Sigmoid,
            "leakyrelu" => Nlin::LeakyRelu,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Nlin::Tanh => "tanh",
            Nlin::Relu => "relu",
            Nlin::Gelu => "gelu",
            Nlin::Sigmoid => "sigmoid",
            Nlin::LeakyRelu => "leakyrelu",
        }
    }

    fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Nlin::Tanh => x.tanh(),
            Nlin::Relu => x.relu(),
            Nlin::Gelu => x.gelu_erf(),
            Nlin::Sigmoid => candle_nn::ops::sigmoid(x),
            Nlin::LeakyRelu => candle_nn::ops::leaky_relu(x, 0.01),
        }
    }
}

/// How the Small CNN Zoo's convolutions pad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// TensorFlow's `same`: output ⌈n / stride⌉, the odd padding row/column at the bottom/right.
    Same,
    Valid,
}

/// One layer: a weight `[out, …]` and its bias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `conv1`, `fc`, … (the tensor names without `.weight` / `.bias`).
    pub name: &'static str,
    pub op: Op,
    /// `[out, in, kh, kw]` or `[out, in]`.
    pub weight_shape: Vec<usize>,
    /// Whether the activation follows (every layer but the last).
    pub activation: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Convolution at `stride`, then 2×2 max-pool when `pool` (before the activation).
    Conv { stride: usize, pool: bool },
    /// A dense layer on the flattened input (after a global average pool when `gap`).
    Linear { gap: bool },
}

/// An imported zoo's architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportArch {
    CnnS { classes: usize, nlin: Nlin },
    SmallCnn { nlin: Nlin, padding: Padding },
}

/// Which hidden units may be permuted, and where tanh's sign flips are exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symmetries {
    pub permutable: Vec<&'static str>,
    pub sign_flips: Vec<&'static str>,
}

impl ImportArch {
    /// The arch name in `zoo.json` and `zoo.csv` (see the module doc).
    pub fn name(&self) -> String {
        match *self {
            ImportArch::CnnS { classes: 3, nlin: Nlin::Tanh } => "cnn-s".into(),
            ImportArch::CnnS { classes, nlin } => format!("cnn-s-c{classes}-{}", nlin.name()),
            ImportArch::SmallCnn { nlin, padding: Padding::Same } => format!("small-cnn-{}", nlin.name()),
            ImportArch::SmallCnn { nlin, padding: Padding::Valid } => format!("small-cnn-{}-valid", nlin.name()),
        }
    }

    /// The inverse of [`ImportArch::name`].
    pub fn from_name(name: &str) -> Option<ImportArch> {
        if name == "cnn-s" {
            return Some(ImportArch::CnnS { classes: 3, nlin: Nlin::Tanh });
        }
        if let Some(rest) = name.strip_prefix("cnn-s-c") {
            let (k, nlin) = rest.split_once('-')?;
            return Some(ImportArch::CnnS { classes: k.parse().ok().filter(|&k| k >= 1)?, nlin: Nlin::parse(nlin)? });
        }
        let rest = name.strip_prefix("small-cnn-")?;
        let (nlin, padding) = match rest.strip_suffix("-valid") {
            Some(n) => (n, Padding::Valid),
            None => (rest, Padding::Same),
        };
        Some(ImportArch::SmallCnn { nlin: Nlin::parse(nlin)?, padding })
    }

    /// Number of output units.
    pub fn classes(&self) -> usize {
        match *self {
            ImportArch::CnnS { classes, .. } => classes,
            ImportArch::SmallCnn { .. } => 10,
        }
    }

    pub fn nlin(&self) -> Nlin {
        match *self {
            ImportArch::CnnS { nlin, .. } | ImportArch::SmallCnn { nlin, .. } => nlin,
        }
    }

    /// The layers, input to output.
    pub fn layers(&self) -> Vec<Layer> {
        let conv = |name, stride, pool, shape: [usize; 4]| Layer {
            name,
            op: Op::Conv { stride, pool },
            weight_shape: shape.to_vec(),
            activation: true,
        };
        match *self {
            ImportArch::CnnS { classes, .. } => vec![
                conv("conv1", 1, true, [8, 1, 5, 5]),
                conv("conv2", 1, true, [6, 8, 5, 5]),
                conv("conv3", 1, false, [4, 6, 2, 2]),
                Layer { name: "fc1", op: Op::Linear { gap: false }, weight_shape: vec![20, 36], activation: true },
                Layer { name: "fc2", op: Op::Linear { gap: false }, weight_shape: vec![classes, 20], activation: false },
            ],
            ImportArch::SmallCnn { .. } => vec![
                conv("conv1", 2, false, [16, 1, 3, 3]),
                conv("conv2", 2, false, [16, 16, 3, 3]),
                conv("conv3", 2, false, [16, 16, 3, 3]),
                Layer { name: "fc", op: Op::Linear { gap: true }, weight_shape: vec![10, 16], activation: false },
            ],
        }
    }

    /// Every tensor, in `state_dict` order (each layer's weight, then its bias).
    pub fn tensors(&self) -> Vec<ParamShape> {
        self.layers()
            .into_iter()
            .flat_map(|l| {
                let out = l.weight_shape[0];
                [
                    ParamShape { name: format!("{}.weight", l.name), shape: l.weight_shape },
                    ParamShape { name: format!("{}.bias", l.name), shape: vec![out] },
                ]
            })
            .collect()
    }

    /// Total parameter count.
    pub fn num_params(&self) -> usize {
        self.tensors().iter().map(ParamShape::len).sum()
    }

    /// One token per output unit of each layer: `(layer name, units, fan_in + 1 values each)`.
    pub fn token_layers(&self) -> Vec<(&'static str, usize, usize)> {
        self.layers()
            .into_iter()
            .map(|l| {
                let fan_in: usize = l.weight_shape[1..].iter().product();
                (l.name, l.weight_shape[0], fan_in + 1)
            })
            .collect()
    }

    /// See the module doc.
    pub fn symmetries(&self) -> Symmetries {
        let layers = self.layers();
        let hidden: Vec<&'static str> = layers[..layers.len() - 1].iter().map(|l| l.name).collect();
        let sign_flips = if self.nlin() == Nlin::Tanh {
            layers[..layers.len() - 1].iter().filter(|l| !matches!(l.op, Op::Conv { pool: true, .. })).map(|l| l.name).collect()
        } else {
            Vec::new()
        };
        Symmetries { permutable: hidden, sign_flips }
    }

    /// Checks that `weights` has exactly this architecture's tensors (names, shapes, order).
    pub fn check(&self, weights: &NamedTensors) -> Result<(), String> {
        let want = self.tensors();
        if weights.len() != want.len() {
            return Err(format!("has {} tensors, `{}` has {}", weights.len(), self.name(), want.len()));
        }
        for (t, p) in weights.iter().zip(&want) {
            if t.name != p.name || t.shape != p.shape {
                return Err(format!("tensor `{}` {:?} where `{}` has `{}` {:?}", t.name, t.shape, self.name(), p.name, p.shape));
            }
        }
        Ok(())
    }

    /// Pre-softmax outputs on 1 × 28 × 28 grey images (`N × 784` bytes, pixels / 255), through candle.
    pub fn logits(&self, weights: &NamedTensors, images: &[u8]) -> Result<Vec<Vec<f32>>, StageError> {
        let pixels: Vec<f32> = images.iter().map(|&p| p as f32 / 255.0).collect();
        self.logits_f32(weights, &pixels)
    }

    /// Pre-softmax outputs on 1 × 28 × 28 grey images given as values in `[0, 1]` (`N × 784`).
    pub fn logits_f32(&self, weights: &NamedTensors, pixels: &[f32]) -> Result<Vec<Vec<f32>>, StageError> {
        self.check(weights).map_err(|e| StageError::msg(format!("weights of `{}`: {e}", self.name())))?;
        let ctx = candle_error(self.name());
        let dev = Device::Cpu;
        let n = pixels.len() / 784;
        let mut x = Tensor::from_slice(&pixels[..n * 784], (n, 1, 28, 28), &dev).map_err(&ctx)?;
        let tensor = |name: String| -> Result<Tensor, StageError> {
            let t = weights.get(&name).ok_or_else(|| StageError::msg(format!("no tensor `{name}`")))?;
            Tensor::from_vec(t.values.clone(), t.shape.clone(), &dev).map_err(&ctx)
        };
        for layer in self.layers() {
            let w = tensor(format!("{}.weight", layer.name))?;
            let b = tensor(format!("{}.bias", layer.name))?;
            let out = layer.weight_shape[0];
            x = match layer.op {
                Op::Conv { stride, pool } => {
                    if let ImportArch::SmallCnn { padding: Padding::Same, .. } = self {
                        let size = x.dim(3).map_err(&ctx)?;
                        let total = ((size.div_ceil(stride) - 1) * stride + 3).saturating_sub(size);
                        x = x.pad_with_zeros(2, total / 2, total - total / 2).map_err(&ctx)?;
                        x = x.pad_with_zeros(3, total / 2, total - total / 2).map_err(&ctx)?;
                    }
                    let y =
                        x.conv2d(&w, 0, stride, 1, 1).and_then(|y| y.broadcast_add(&b.reshape((1, out, 1, 1))?)).map_err(&ctx)?;
                    if pool {
                        y.max_pool2d(2).map_err(&ctx)?
                    } else {
                        y
                    }
                }
                Op::Linear { gap } => {
                    let flat = if gap { x.mean((2, 3)) } else { x.flatten_from(1) }.map_err(&ctx)?;
                    flat.matmul(&w.t().map_err(&ctx)?).and_then(|y| y.broadcast_add(&b)).map_err(&ctx)?
                }
            };
            if layer.activation {
                x = self.nlin().apply(&x).map_err(&ctx)?;
            }
        }
        x.to_dtype(DType::F32).and_then(|x| x.to_vec2::<f32>()).map_err(&ctx)
    }

    /// Accuracy on images with dataset labels (output unit k ↔ class k).
    pub fn accuracy(&self, weights: &NamedTensors, images: &[u8], labels: &[i64]) -> Result<f64, StageError> {
        let logits = self.logits(weights, images)?;
        let correct = logits.iter().zip(labels).filter(|(z, &y)| crate::nn::argmax(z) as i64 == y).count();
        Ok(correct as f64 / labels.len().max(1) as f64)
    }
}
