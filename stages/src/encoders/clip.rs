//! The CLIP ViT vision tower (ViT-B/32 by default), loaded from a Hugging Face checkpoint directory.
//!
//! ```text
//! x [B, 3, S, S]  (RGB in 0..1, normalised per channel by CLIP's mean/std, S = image_size)
//!  → patch_embedding conv P×P/P, no bias        [B, D, S/P, S/P] → [B, N−1, D]   (N = (S/P)² + 1)
//!  → prepend class_embedding, + position_embedding                 [B, N, D]
//!  → pre_layrnorm → L × { x += attn(ln1(x)); x += mlp(ln2(x)) }
//!        attn: H heads of d = D/H; softmax(q·kᵀ/√d)·v; q, k, v, out: Linear(D → D)
//!        mlp:  Linear(D → I) → act (quick_gelu: x·σ(1.702x)) → Linear(I → D)
//!  → pooled = post_layernorm(x[:, 0])                              [B, D]
//!  → image features = pooled · visual_projectionᵀ (no bias)         [B, projection_dim]
//! ```
//! This is what `CLIPModel.get_image_features` computes in `transformers`. ViT-B/32: S = 224, P = 32,
//! D = 768, L = 12, H = 12, I = 3072, projection 512, LayerNorm eps 1e-5.
//!
//! Files (the layout of `openai/clip-vit-base-patch32`): `config.json` (a `CLIPModel` config with a
//! `vision_config` and top-level `projection_dim`, or a `clip_vision_model` config; absent fields take
//! `transformers`' defaults, which are ViT-B/32's) and `model.safetensors` with tensors
//! `vision_model.embeddings.{class_embedding, patch_embedding.weight, position_embedding.weight}`,
//! `vision_model.{pre_layrnorm, post_layernorm}.{weight, bias}`,
//! `vision_model.encoder.layers.{i}.{layer_norm1, layer_norm2, self_attn.{q,k,v,out}_proj, mlp.fc1, mlp.fc2}.*`
//! and `visual_projection.weight`. The text tower, if present, is ignored; f16/bf16 tensors are
//! converted to f32.

use std::path::Path;

use candle_core::{Device, Module, Tensor};
use candle_nn::LayerNorm;
use wspace_stage_api::StageError;

use super::weights::{read_file, require_file, WeightFile};
use crate::matmul::{linear, matmul};
use crate::tensors::candle_error;

/// `y = x Wᵀ + b` (as `torch.nn.Linear`), through the machine-independent [`crate::matmul`].
struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        linear(x, &self.w, &self.b)
    }
}

/// CLIP's image normalisation (`CLIPImageProcessor`): per RGB channel, `(v/255 − mean) / std`
/// (mean 0.48145466, 0.4578275, 0.40821073; std 0.26862954, 0.26130258, 0.27577711, rounded to f32).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The vision tower's hyper-parameters, read from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    pub projection_dim: usize,
}

/// The MLP activations `transformers` offers that CLIP checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `x · σ(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// `x · Φ(x)` (erf form).
    Gelu,
    /// `0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))`.
    GeluTanh,
}

impl Activation {
    fn forward(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::QuickGelu => x * candle_nn::ops::sigmoid(&(x * 1.702)?)?,
            Activation::Gelu => x.gelu_erf(),
            Activation::GeluTanh => x.gelu(),
        }
    }
}

impl ClipVisionConfig {
    /// Parses the text of a `config.json`; `label` names the file in errors.
    pub fn parse(label: &str, text: &str) -> Result<Self, StageError> {
        let root: serde_json::Value =
            serde_json::from_str(text).map_err(|e| StageError::msg(format!("{label}: invalid JSON: {e}")))?;
        let vision = match root.get("vision_config") {
            Some(v) if v.is_object() => v,
            Some(_) => return Err(StageError::msg(format!("{label}: `vision_config` must be an object"))),
            None if root.get("model_type").and_then(|m| m.as_str()) == Some("clip_vision_model") => &root,
            None => {
                return Err(StageError::msg(format!(
                    "{label}: no `vision_config`; expected the config.json of a Hugging Face CLIPModel (e.g. openai/clip-vit-base-patch32)"
                )))
            }
        };
        let int = |obj: &serde_json::Value, key: &str, default: usize| -> Result<usize, StageError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| StageError::msg(format!("{label}: `{key}` must be a positive integer, found {v}"))),
            }
        };
        let act = match vision.get("hidden_act").and_then(|a| a.as_str()).unwrap_or("quick_gelu") {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            other => return Err(StageError::msg(format!("{label}: unsupported `hidden_act` \"{other}\""))),
        };
        let cfg = ClipVisionConfig {
            hidden_size: int(vision, "hidden_size", 768)?,
            intermediate_size: int(vision, "intermediate_size", 3072)?,
            num_hidden_layers: int(vision, "num_hidden_layers", 12)?,
            num_attention_heads: int(vision, "num_attention_heads", 12)?,
            num_channels: int(vision, "num_channels", 3)?,
            image_size: int(vision, "image_size", 224)?,
            patch_size: int(vision, "patch_size", 32)?,
            hidden_act: act,
            layer_norm_eps: vision.get("layer_norm_eps").and_then(|v| v.as_f64()).unwrap_or(1e-5),
            projection_dim: int(&root, "projection_dim", int(vision, "projection_dim", 512)?)?,
        };
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(StageError::msg(format!(
                "{label}: hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if !cfg.image_size.is_multiple_of(cfg.patch_size) {
            return Err(StageError::msg(format!(
                "{label}: image_size {} is not a multiple of patch_size {}",
                cfg.image_size, cfg.patch_size
            )));
        }
        if cfg.num_channels != 3 {
            return Err(StageError::msg(format!("{label}: num_channels is {}, expected 3 (RGB)", cfg.num_channels)));
        }
        Ok(cfg)
    }
}

struct Layer {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The CLIP vision tower with its projection; see the [module doc](self).
pub struct ClipVision {
    pub config: ClipVisionConfig,
    class_embedding: Tensor,
    /// `[D, 3, P, P]`.
    patch_embedding: Tensor,
    /// `[N, D]`.
    position_embedding: Tensor,
    pre_ln: LayerNorm,
    layers: Vec<Layer>,
    post_ln: LayerNorm,
    /// `[D, projection_dim]`.
    projection_t: Tensor,
}

type R<T> = Result<T, StageError>;

impl ClipVision {
    /// Loads `config.json` and `model.safetensors` from `dir` (or, when `path` is a file, that
    /// safetensors file and the `config.json` beside it).
    pub fn load(path: &Path, device: &Device) -> R<Self> {
        let (dir, model) = if path.is_dir() {
            (path.to_path_buf(), require_file(path, "model.safetensors", "CLIP weights")?)
        } else if path.is_file() {
            (path.parent().unwrap_or(Path::new(".")).to_path_buf(), path.to_path_buf())
        } else {
            return Err(StageError::msg(format!(
                "{}: CLIP checkpoint not found (expected a directory with model.safetensors and config.json, as in openai/clip-vit-base-patch32)",
                path.display()
            )));
        };
        let config_path = require_file(&dir, "config.json", "CLIP config")?;
        let text = std::fs::read_to_string(&config_path).map_err(|e| StageError::io(&config_path, e))?;
        let config = ClipVisionConfig::parse(&config_path.display().to_string(), &text)?;
        let bytes = read_file(&model)?;
        let wf = WeightFile::from_slice(model.display().to_string(), &bytes, device)?;
        Self::from_weights(config, &wf)
    }

    pub fn from_weights(config: ClipVisionConfig, wf: &WeightFile) -> R<Self> {
        let c = &config;
        let (d, i) = (c.hidden_size, c.intermediate_size);
        let n = (c.image_size / c.patch_size).pow(2) + 1;
        let ln = |name: &str| -> R<LayerNorm> {
            Ok(LayerNorm::new(wf.get(&format!("{name}.weight"), d)?, wf.get(&format!("{name}.bias"), d)?, c.layer_norm_eps))
        };
        let lin = |name: &str, o: usize, inp: usize| -> R<Linear> {
            Ok(Linear { w: wf.get(&format!("{name}.weight"), (o, inp))?, b: wf.get(&format!("{name}.bias"), o)? })
        };
        let e = "vision_model.embeddings";
        let class_embedding = wf.get(&format!("{e}.class_embedding"), d)?;
        let patch_embedding = wf.get(&format!("{e}.patch_embedding.weight"), (d, 3, c.patch_size, c.patch_size))?;
        let position_embedding = wf.get(&format!("{e}.position_embedding.weight"), (n, d))?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for l in 0..c.num_hidden_layers {
            let p = format!("vision_model.encoder.layers.{l}");
            layers.push(Layer {
                ln1: ln(&format!("{p}.layer_norm1"))?,
                q: lin(&format!("{p}.self_attn.q_proj"), d, d)?,
                k: lin(&format!("{p}.self_attn.k_proj"), d, d)?,
                v: lin(&format!("{p}.self_attn.v_proj"), d, d)?,
                out: lin(&format!("{p}.self_attn.out_proj"), d, d)?,
                ln2: ln(&format!("{p}.layer_norm2"))?,
                fc1: lin(&format!("{p}.mlp.fc1"), i, d)?,
                fc2: lin(&format!("{p}.mlp.fc2"), d, i)?,
            });
        }
        let projection_t = wf
            .get("visual_projection.weight", (c.projection_dim, d))?
            .t()
            .and_then(|t| t.contiguous())
            .map_err(candle_error("visual_projection"))?;
        Ok(ClipVision {
            pre_ln: ln("vision_model.pre_layrnorm")?,
            post_ln: ln("vision_model.post_layernorm")?,
            config,
            class_embedding,
            patch_embedding,
            position_embedding,
            layers,
            projection_t,
        })
    }

    fn attention(&self, layer: &Layer, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        let h = self.config.num_attention_heads;
        let hd = d / h;
        let split = |t: Tensor| t.reshape((b, n, h, hd))?.transpose(1, 2)?.contiguous();
        let q = split((layer.q.forward(x)? * (hd as f64).powf(-0.5))?)?;
        let k = split(layer.k.forward(x)?)?;
        let v = split(layer.v.forward(x)?)?;
        let att = candle_nn::ops::softmax_last_dim(&matmul(&q, &k.t()?)?)?;
        let y = matmul(&att, &v)?.transpose(1, 2)?.reshape((b, n, d))?;
        layer.out.forward(&y)
    }

    /// The unprojected pooled output: `x` `[B, 3, S, S]` (normalised) → `[B, D]`.
    pub fn pooled(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, _, h, w) = x.dims4()?;
        if h != c.image_size || w != c.image_size {
            candle_core::bail!("CLIP expects {0}×{0} images, got {h}×{w}", c.image_size)
        }
        let d = c.hidden_size;
        // The patch convolution (kernel = stride = patch size) as a product: each patch's 3·p·p values
        // (channel, row, column order, as the kernel's) times the kernel matrix.
        let (p, g) = (c.patch_size, c.image_size / c.patch_size);
        let cols = x.reshape((b, 3, g, p, g, p))?.permute((0, 2, 4, 1, 3, 5))?.reshape((b * g * g, 3 * p * p))?;
        let kernel = self.patch_embedding.reshape((d, 3 * p * p))?;
        let patches = matmul(&cols, &kernel.t()?)?.reshape((b, g * g, d))?;
        let cls = self.class_embedding.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let mut x = Tensor::cat(&[&cls, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        x = self.pre_ln.forward(&x)?;
        for layer in &self.layers {
            x = (&x + self.attention(layer, &layer.ln1.forward(&x)?)?)?;
            let m = layer.fc2.forward(&c.hidden_act.forward(&layer.fc1.forward(&layer.ln2.forward(&x)?)?)?)?;
            x = (x + m)?;
        }
        self.post_ln.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)
    }

    /// Image features as `CLIPModel.get_image_features`: `[B, 3, S, S]` → `[B, projection_dim]`.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        matmul(&self.pooled(x)?, &self.projection_t)
    }

    /// The feature dimension (`projection_dim`).
    pub fn dim(&self) -> usize {
        self.config.projection_dim
    }
}
