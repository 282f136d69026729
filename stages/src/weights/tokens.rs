//! Tokenisation of a model's weights (SANE, Schürholt et al. 2024): one token per output neuron or
//! channel, holding its incoming weights and its bias, zero-padded to a common width.
//!
//! ```text
//! layer l, unit j  →  token [ w_l[j, …] (fan_in values, PyTorch's row-major order), b_l[j], 0, …, 0 ]
//! tokens in order: conv1 units 0..8, conv2 0..6, conv3 0..4, fc1 0..20, fc2 0..3   (cnn-s: 41 tokens)
//! position of a token: (layer l, unit j)
//! ```
//!
//! The map is a bijection between the flat weights and the non-padding token entries, so
//! [`TokenLayout::detokenise`] inverts [`TokenLayout::tokenise`] exactly, and the transpose of
//! detokenising (what a gradient with respect to the weights needs to become one with respect to the
//! tokens) is tokenising ([`TokenLayout::tokenise`] of the gradient).
//!
//! Every architecture described in [`crate::import::arch`] is tokenised: the project's `cnn-s`, the Model
//! Zoos CNN-s with any head and activation, the Small CNN Zoo network (each a `*.weight` `[out, …]`
//! tensor followed by its `*.bias` `[out]`, throughout), and an imported zoo of several activations
//! (`mixed:…`) whose models share one set of tensors. Any other architecture (`resnet18`) is refused
//! with its name. A token width below a layer's `fan_in + 1` is refused with the layer's name, before
//! anything is trained.

use wspace_stage_api::StageError;

use crate::import::arch::tensors_of;
use crate::tensors::NamedTensors;
use crate::zoo::store::ParamShape;

/// One layer's tokens: `units` tokens of `fan_in + 1` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLayer {
    /// `conv1`, … (the tensor names without `.weight`).
    pub name: String,
    pub units: usize,
    pub fan_in: usize,
    /// Flat offsets of the weight `[units, fan_in]` and the bias `[units]`.
    pub weight: usize,
    pub bias: usize,
}

/// Where every weight of an architecture goes among the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLayout {
    pub arch: String,
    pub layers: Vec<TokenLayer>,
    /// Values per token (padding included).
    pub width: usize,
    /// The architecture's tensors in `state_dict` order (what detokenising rebuilds).
    specs: Vec<ParamShape>,
}

impl TokenLayout {
    /// The layout of `arch` at token width `width` (`None`: the widest layer's `fan_in + 1`).
    pub fn new(arch: &str, width: Option<usize>) -> Result<TokenLayout, StageError> {
        let specs = tensors_of(arch).map_err(|e| {
            StageError::msg(format!(
                "the tokeniser cannot lay out `{arch}`: {e} (it tokenises: cnn-s, cnn-s-c<K>-<nlin>, small-cnn-<nlin>[-valid], and mixed: zoos of one set of tensors)"
            ))
        })?;
        let mut offset = 0;
        let layers: Vec<TokenLayer> = specs
            .chunks_exact(2)
            .map(|p| {
                let (w, b) = (&p[0], &p[1]);
                let layer = TokenLayer {
                    name: w.name.trim_end_matches(".weight").to_string(),
                    units: w.shape[0],
                    fan_in: w.len() / w.shape[0],
                    weight: offset,
                    bias: offset + w.len(),
                };
                offset += w.len() + b.len();
                layer
            })
            .collect();
        let widest = layers.iter().map(|l| l.fan_in + 1).max().unwrap_or(0);
        let width = width.unwrap_or(widest);
        if let Some(l) = layers.iter().find(|l| l.fan_in + 1 > width) {
            return Err(StageError::param(
                "token_width",
                format!(
                    "{width} cannot hold layer `{}` of `{arch}`: a unit has {} incoming weights and a bias ({} values)",
                    l.name,
                    l.fan_in,
                    l.fan_in + 1
                ),
            ));
        }
        Ok(TokenLayout { arch: arch.to_string(), layers, width, specs })
    }

    /// Number of tokens.
    pub fn tokens(&self) -> usize {
        self.layers.iter().map(|l| l.units).sum()
    }

    /// Number of weights (flat length).
    pub fn weights(&self) -> usize {
        self.specs.iter().map(ParamShape::len).sum()
    }

    /// `(layer, unit)` of every token, in token order.
    pub fn positions(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.layers.iter().enumerate().flat_map(|(l, layer)| (0..layer.units).map(move |j| (l, j)))
    }

    /// The layer of every token.
    pub fn token_layers(&self) -> Vec<usize> {
        self.positions().map(|(l, _)| l).collect()
    }

    /// Whether each of the `tokens × width` entries holds a weight (1) or is padding (0).
    pub fn mask(&self) -> Vec<f32> {
        self.positions()
            .flat_map(|(l, _)| {
                let used = self.layers[l].fan_in + 1;
                (0..self.width).map(move |k| if k < used { 1.0 } else { 0.0 })
            })
            .collect()
    }

    /// Flat weights (`state_dict` order) → `tokens × width` values.
    pub fn tokenise(&self, flat: &[f32]) -> Vec<f32> {
        debug_assert_eq!(flat.len(), self.weights());
        let mut out = vec![0.0f32; self.tokens() * self.width];
        let mut t = 0;
        for l in &self.layers {
            for j in 0..l.units {
                let token = &mut out[t * self.width..(t + 1) * self.width];
                token[..l.fan_in].copy_from_slice(&flat[l.weight + j * l.fan_in..l.weight + (j + 1) * l.fan_in]);
                token[l.fan_in] = flat[l.bias + j];
                t += 1;
            }
        }
        out
    }

    /// `tokens × width` values → flat weights; padding entries are ignored.
    pub fn detokenise(&self, tokens: &[f32]) -> Vec<f32> {
        debug_assert_eq!(tokens.len(), self.tokens() * self.width);
        let mut flat = vec![0.0f32; self.weights()];
        let mut t = 0;
        for l in &self.layers {
            for j in 0..l.units {
                let token = &tokens[t * self.width..(t + 1) * self.width];
                flat[l.weight + j * l.fan_in..l.weight + (j + 1) * l.fan_in].copy_from_slice(&token[..l.fan_in]);
                flat[l.bias + j] = token[l.fan_in];
                t += 1;
            }
        }
        flat
    }

    /// Named tensors (the zoo's names and shapes) → flat weights in `state_dict` order; a missing or
    /// misshapen tensor is an error.
    pub fn flat_of(&self, weights: &NamedTensors) -> Result<Vec<f32>, StageError> {
        let mut flat = Vec::with_capacity(self.weights());
        for s in &self.specs {
            let t = weights
                .get(&s.name)
                .ok_or_else(|| StageError::msg(format!("tokenise: the weights lack `{}` of `{}`", s.name, self.arch)))?;
            if t.shape != s.shape {
                return Err(StageError::msg(format!(
                    "tokenise: `{}` has shape {:?}, `{}` has {:?}",
                    s.name, t.shape, self.arch, s.shape
                )));
            }
            flat.extend_from_slice(&t.values);
        }
        Ok(flat)
    }

    /// Flat weights → named tensors with the architecture's names and shapes, in `state_dict` order.
    pub fn named(&self, flat: &[f32]) -> NamedTensors {
        NamedTensors::unflatten(flat, self.specs.iter().map(|s| (s.name.as_str(), s.shape.as_slice())))
    }
}
