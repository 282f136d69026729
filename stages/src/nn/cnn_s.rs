//! The `cnn-s` parameters: ten named f32 tensors with PyTorch's names and layouts, stored as one flat
//! vector in PyTorch's `state_dict` order.
//!
//! | name           | shape        | fan_in | flat offset |
//! |----------------|--------------|--------|-------------|
//! | `conv1.weight` | [8, 1, 5, 5] | 25     | 0           |
//! | `conv1.bias`   | [8]          | 25     | 200         |
//! | `conv2.weight` | [6, 8, 5, 5] | 200    | 208         |
//! | `conv2.bias`   | [6]          | 200    | 1408        |
//! | `conv3.weight` | [4, 6, 2, 2] | 24     | 1414        |
//! | `conv3.bias`   | [4]          | 24     | 1510        |
//! | `fc1.weight`   | [20, 36]     | 36     | 1514        |
//! | `fc1.bias`     | [20]         | 36     | 2234        |
//! | `fc2.weight`   | [3, 20]      | 20     | 2254        |
//! | `fc2.bias`     | [3]          | 20     | 2314        |
//!
//! Initialisation is PyTorch's default for `Conv2d` and `Linear` (`kaiming_uniform_(a = √5)` for the
//! weight, which is U(−1/√fan_in, 1/√fan_in), and the same interval for the bias), drawn from our own
//! seeded [`ChaCha8Rng`] so that a model is bit-identical run to run and machine to machine: tensors are
//! filled in the order above, element by element, each value `−b + 2b·u` with `u = (next_u32 >> 8)·2⁻²⁴`.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of parameters of `cnn-s` (the 3-class head every zoo model has).
pub const NUM_PARAMS: usize = num_params(NUM_CLASSES);
/// Parameters before the head (`conv1` … `fc1`); the head `fc2` adds 21 per class.
pub const BODY_PARAMS: usize = 2254;
/// Input image side (1 × 28 × 28 grey).
pub const IMAGE_SIDE: usize = 28;
/// Pixels per input image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Output classes (logits) of a zoo model.
pub const NUM_CLASSES: usize = 3;
/// The head sizes the kernels are compiled for: the zoo's 3 classes, and 10 (one model on every class of
/// a 10-class dataset: the row-selection baseline).
pub const SUPPORTED_CLASSES: [usize; 2] = [NUM_CLASSES, 10];

/// Parameters of a `cnn-s` with a `classes`-way head.
pub const fn num_params(classes: usize) -> usize {
    BODY_PARAMS + classes * 21
}

/// The head size of a flat parameter vector of length `len` (`None` unless a supported one).
pub fn classes_of_len(len: usize) -> Option<usize> {
    SUPPORTED_CLASSES.into_iter().find(|&c| num_params(c) == len)
}

/// One parameter tensor of the network: name, PyTorch shape, fan-in, offset into the flat vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub shape: &'static [usize],
    pub fan_in: usize,
    pub offset: usize,
}

impl ParamSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Always false (every tensor has elements); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The flat range of this tensor.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The ten tensors for a head of shape `fc2_w = [classes, 20]`, `fc2_b = [classes]`.
const fn specs(fc2_w: &'static [usize], fc2_b: &'static [usize]) -> [ParamSpec; 10] {
    [
        ParamSpec { name: "conv1.weight", shape: &[8, 1, 5, 5], fan_in: 25, offset: 0 },
        ParamSpec { name: "conv1.bias", shape: &[8], fan_in: 25, offset: 200 },
        ParamSpec { name: "conv2.weight", shape: &[6, 8, 5, 5], fan_in: 200, offset: 208 },
        ParamSpec { name: "conv2.bias", shape: &[6], fan_in: 200, offset: 1408 },
        ParamSpec { name: "conv3.weight", shape: &[4, 6, 2, 2], fan_in: 24, offset: 1414 },
        ParamSpec { name: "conv3.bias", shape: &[4], fan_in: 24, offset: 1510 },
        ParamSpec { name: "fc1.weight", shape: &[20, 36], fan_in: 36, offset: 1514 },
        ParamSpec { name: "fc1.bias", shape: &[20], fan_in: 36, offset: 2234 },
        ParamSpec { name: "fc2.weight", shape: fc2_w, fan_in: 20, offset: BODY_PARAMS },
        ParamSpec { name: "fc2.bias", shape: fc2_b, fan_in: 20, offset: BODY_PARAMS + fc2_w[0] * 20 },
    ]
}

/// The ten tensors, in PyTorch's `state_dict` order (3-class head).
pub const PARAM_SPECS: [ParamSpec; 10] = specs(&[3, 20], &[3]);
/// The same with a 10-class head.
pub const PARAM_SPECS_10: [ParamSpec; 10] = specs(&[10, 20], &[10]);

/// The tensors of a `classes`-way `cnn-s` (`None` unless a [`SUPPORTED_CLASSES`] size).
pub fn param_specs(classes: usize) -> Option<&'static [ParamSpec; 10]> {
    match classes {
        NUM_CLASSES => Some(&PARAM_SPECS),
        10 => Some(&PARAM_SPECS_10),
        _ => None,
    }
}

// Flat offsets used by the kernels.
pub(crate) const W1: usize = 0;
pub(crate) const B1: usize = 200;
pub(crate) const W2: usize = 208;
pub(crate) const B2: usize = 1408;
pub(crate) const W3: usize = 1414;
pub(crate) const B3: usize = 1510;
pub(crate) const F1W: usize = 1514;
pub(crate) const F1B: usize = 2234;
pub(crate) const F2W: usize = 2254;
/// `fc2.bias` of the 3-class head.
#[cfg(test)]
pub(crate) const F2B: usize = 2314;

/// Errors when building a [`CnnS`] from named tensors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("cnn-s: missing tensor `{0}`")]
    Missing(String),
    #[error("cnn-s: unexpected tensor `{0}`")]
    Unexpected(String),
    #[error("cnn-s: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape { name: String, got: Vec<usize>, expected: Vec<usize> },
    #[error("cnn-s: tensor `{name}` has {got} values for shape {shape:?}")]
    Len { name: String, got: usize, shape: Vec<usize> },
    #[error("cnn-s: a {0}-class head is not supported (heads of {SUPPORTED_CLASSES:?} classes are)")]
    Classes(usize),
    #[error("cnn-s: the head has {classes} rows, there is no row {row}")]
    Row { row: usize, classes: usize },
}

/// The parameters of one `cnn-s` network (flat, in [`PARAM_SPECS`] order).
#[derive(Debug, Clone, PartialEq)]
pub struct CnnS {
    params: Vec<f32>,
}

impl CnnS {
    /// PyTorch-default initialisation of the 3-class network from a seeded ChaCha8 stream (see the
    /// module docs).
    pub fn init(seed: u64) -> Self {
        Self::init_with_classes(seed, NUM_CLASSES).expect("3 classes are supported")
    }

    /// The same for a `classes`-way head. The body's values do not depend on `classes` (the head is
    /// drawn last), so a 10-class model from seed `s` has the body of the 3-class one.
    pub fn init_with_classes(seed: u64, classes: usize) -> Result<Self, ParamError> {
        let specs = param_specs(classes).ok_or(ParamError::Classes(classes))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![0.0f32; num_params(classes)];
        for spec in specs {
            let bound = 1.0 / (spec.fan_in as f32).sqrt();
            for p in &mut params[spec.range()] {
                let u = (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32);
                *p = -bound + 2.0 * bound * u;
            }
        }
        Ok(CnnS { params })
    }

    /// Build from a flat vector in [`PARAM_SPECS`] order. Panics unless it has the parameter count of a
    /// supported head ([`num_params`]).
    pub fn from_flat(params: Vec<f32>) -> Self {
        assert!(
            classes_of_len(params.len()).is_some(),
            "cnn-s has {NUM_PARAMS} parameters (3 classes) or {} (10)",
            num_params(10)
        );
        CnnS { params }
    }

    /// The number of output classes.
    pub fn classes(&self) -> usize {
        (self.params.len() - BODY_PARAMS) / 21
    }

    fn specs(&self) -> &'static [ParamSpec; 10] {
        param_specs(self.classes()).expect("a CnnS always has a supported head")
    }

    /// The flat parameter vector ([`PARAM_SPECS`] order).
    pub fn flat(&self) -> &[f32] {
        &self.params
    }

    /// Mutable flat parameter vector.
    pub fn flat_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// One tensor's values by PyTorch name.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.specs().iter().find(|s| s.name == name).map(|s| &self.params[s.range()])
    }

    /// `(name, shape, values)` for every tensor, in `state_dict` order (for safetensors).
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.specs().iter().map(|s| (s.name.to_string(), s.shape.to_vec(), self.params[s.range()].to_vec())).collect()
    }

    /// Inverse of [`CnnS::named_tensors`]; order-free, every tensor required, shapes checked. The head
    /// size is that of `fc2.bias` (3 when it is missing, which is then reported as missing).
    pub fn from_named_tensors<N, S, D>(tensors: impl IntoIterator<Item = (N, S, D)>) -> Result<Self, ParamError>
    where
        N: AsRef<str>,
        S: AsRef<[usize]>,
        D: AsRef<[f32]>,
    {
        let tensors: Vec<(N, S, D)> = tensors.into_iter().collect();
        let classes = tensors.iter().find(|t| t.0.as_ref() == "fc2.bias").map_or(NUM_CLASSES, |t| t.2.as_ref().len());
        let specs = param_specs(classes).ok_or(ParamError::Classes(classes))?;
        let mut params = vec![0.0f32; num_params(classes)];
        let mut seen = [false; 10];
        for (name, shape, data) in &tensors {
            let (name, shape, data) = (name.as_ref(), shape.as_ref(), data.as_ref());
            let Some(i) = specs.iter().position(|s| s.name == name) else {
                return Err(ParamError::Unexpected(name.to_string()));
            };
            let spec = &specs[i];
            if shape != spec.shape {
                return Err(ParamError::Shape { name: name.to_string(), got: shape.to_vec(), expected: spec.shape.to_vec() });
            }
            if data.len() != spec.len() {
                return Err(ParamError::Len { name: name.to_string(), got: data.len(), shape: shape.to_vec() });
            }
            params[spec.range()].copy_from_slice(data);
            seen[i] = true;
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(ParamError::Missing(specs[i].name.to_string()));
        }
        Ok(CnnS { params })
    }

    /// The 3-class network whose output `k` is this network's output `rows[k]` (the head's rows
    /// `rows`, in that order; the body unchanged): row selection from a many-class model.
    pub fn select_rows(&self, rows: [usize; 3]) -> Result<CnnS, ParamError> {
        let c = self.classes();
        if let Some(&r) = rows.iter().find(|&&r| r >= c) {
            return Err(ParamError::Row { row: r, classes: c });
        }
        let (w, b) = (&self.params[BODY_PARAMS..BODY_PARAMS + 20 * c], &self.params[BODY_PARAMS + 20 * c..]);
        let mut params = self.params[..BODY_PARAMS].to_vec();
        for &r in &rows {
            params.extend_from_slice(&w[20 * r..20 * r + 20]);
        }
        params.extend(rows.iter().map(|&r| b[r]));
        Ok(CnnS { params })
    }

    /// True when every parameter is finite.
    pub fn is_finite(&self) -> bool {
        self.params.iter().all(|p| p.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_contiguous_and_total_2317() {
        let mut off = 0;
        for s in &PARAM_SPECS {
            assert_eq!(s.offset, off, "{}", s.name);
            let fan: usize = if s.shape.len() > 1 { s.shape[1..].iter().product() } else { s.fan_in };
            assert_eq!(s.fan_in, fan, "{}", s.name);
            off += s.len();
        }
        assert_eq!(off, NUM_PARAMS);
    }

    #[test]
    fn cnn_s_init_is_deterministic_and_bounded() {
        let a = CnnS::init(7);
        assert_eq!(a, CnnS::init(7));
        assert_ne!(a, CnnS::init(8));
        for s in &PARAM_SPECS {
            let b = 1.0 / (s.fan_in as f32).sqrt();
            let t = a.tensor(s.name).unwrap();
            assert!(t.iter().all(|v| v.abs() <= b), "{}", s.name);
            // Spread over the interval, not collapsed.
            let max = t.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(max > 0.5 * b, "{}", s.name);
        }
    }

    #[test]
    fn cnn_s_named_tensors_round_trip() {
        let a = CnnS::init(3);
        let named = a.named_tensors();
        assert_eq!(named.len(), 10);
        assert_eq!(named[2].0, "conv2.weight");
        assert_eq!(named[2].1, vec![6, 8, 5, 5]);
        let b = CnnS::from_named_tensors(named.iter().rev().map(|(n, s, d)| (n, s, d))).unwrap();
        assert_eq!(a, b);
        let missing = CnnS::from_named_tensors(named.iter().skip(1).map(|(n, s, d)| (n, s, d)));
        assert_eq!(missing, Err(ParamError::Missing("conv1.weight".into())));
        let mut bad = named.clone();
        bad[0].1 = vec![8, 25];
        assert!(matches!(CnnS::from_named_tensors(bad), Err(ParamError::Shape { .. })));
    }
}
