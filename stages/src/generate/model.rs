//! The prompt encoders: the results encoder (binned loss → learned embedding) and the shared encoder
//! (MLP on `[dataset embedding; results embedding]` → a point of the weight latent space).
//!
//! ```text
//! d  = (task embedding − input_mean) / input_std        (per coordinate, train-split statistics)
//! b  = clamp(⌊(loss − loss_min) / (loss_max − loss_min) · bins⌋, 0, bins − 1)
//! r  = E[b]                                             (E: [bins, results_dim], learned)
//! z_proj = MLP([d; r])                                  (ELU between layers, none after the last)
//! ```
//!
//! `Linear(in → out)` is `y = x Wᵀ + b`, initialised as PyTorch does (`W`, `b` ~ U(−1/√in, 1/√in)) and
//! the bin embeddings as `nn.Embedding` does (N(0, 1)), all from one seeded ChaCha8 stream (candle's CPU
//! RNG cannot be seeded): layer by layer `W` then `b`, then `E`; uniforms `u = (next_u32 >> 8)·2⁻²⁴`,
//! normals by Box–Muller on pairs of uniforms.

use std::path::Path;

use candle_core::{Device, Tensor, Var};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use wspace_stage_api::StageError;

use crate::sampling::{normal_f32, uniform_in};
use crate::tensors::{self, candle_error, NamedTensor, NamedTensors, TensorFile};

/// The shape of the prompt encoders and the binning; `align.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignConfig {
    pub dataset_dim: usize,
    pub results_dim: usize,
    pub bins: usize,
    pub loss_min: f64,
    pub loss_max: f64,
    pub hidden: Vec<usize>,
    pub latent_dim: usize,
    pub tau: f64,
}

impl AlignConfig {
    /// The bin of a loss value; out-of-range values (and NaN) go to the end bins.
    pub fn bin(&self, loss: f64) -> usize {
        let span = self.loss_max - self.loss_min;
        if span.is_nan() || span <= 0.0 || loss.is_nan() {
            return if loss > self.loss_max { self.bins - 1 } else { 0 };
        }
        let b = ((loss - self.loss_min) / span * self.bins as f64).floor();
        b.clamp(0.0, (self.bins - 1) as f64) as usize
    }

    fn layers(&self) -> Vec<(usize, usize)> {
        let mut dims = vec![self.dataset_dim + self.results_dim];
        dims.extend(&self.hidden);
        dims.push(self.latent_dim);
        dims.windows(2).map(|w| (w[0], w[1])).collect()
    }
}

/// The trainable prompt encoders plus the dataset-embedding standardisation.
pub struct Aligner {
    pub config: AlignConfig,
    /// Where the variables are.
    pub device: Device,
    /// `(weight [in, out], bias [out])` per layer: the weight transposed from PyTorch's `[out, in]`
    /// (how it is drawn and saved), for [`crate::matmul::linear_in_out`].
    layers: Vec<(Var, Var)>,
    /// `[bins, results_dim]`.
    results: Var,
    pub input_mean: Vec<f32>,
    pub input_std: Vec<f32>,
}

impl Aligner {
    /// Seeded initialisation (see the module doc); standardisation starts as the identity.
    pub fn init(config: AlignConfig, seed: u64, device: &Device) -> Result<Self, StageError> {
        let e = candle_error("align init");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layers = Vec::new();
        for (i, o) in config.layers() {
            let bound = 1.0 / (i as f32).sqrt();
            let mut draw = |n: usize| -> Vec<f32> { (0..n).map(|_| uniform_in(&mut rng, bound)).collect() };
            let w = draw(o * i);
            let b = draw(o);
            let w = Tensor::from_slice(&w, (o, i), device).and_then(|w| Var::from_tensor(&w.t()?.contiguous()?));
            layers.push((w.map_err(&e)?, Var::from_slice(&b, o, device).map_err(&e)?));
        }
        let emb: Vec<f32> = (0..config.bins * config.results_dim).map(|_| normal_f32(&mut rng)).collect();
        let results = Var::from_slice(&emb, (config.bins, config.results_dim), device).map_err(&e)?;
        let d = config.dataset_dim;
        Ok(Aligner { config, device: device.clone(), layers, results, input_mean: vec![0.0; d], input_std: vec![1.0; d] })
    }

    pub fn vars(&self) -> Vec<Var> {
        let mut v: Vec<Var> = self.layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect();
        v.push(self.results.clone());
        v
    }

    /// Standardised dataset embeddings `[B, dataset_dim]` and bins → `z_proj` `[B, latent_dim]`.
    pub fn forward(&self, d: &Tensor, bins: &[usize]) -> candle_core::Result<Tensor> {
        let mut onehot = vec![0f32; bins.len() * self.config.bins];
        for (i, &b) in bins.iter().enumerate() {
            onehot[i * self.config.bins + b] = 1.0;
        }
        let onehot = Tensor::from_vec(onehot, (bins.len(), self.config.bins), &self.device)?;
        let r = crate::matmul::matmul(&onehot, self.results.as_tensor())?;
        let mut x = Tensor::cat(&[d, &r], 1)?;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            x = crate::matmul::linear_in_out(&x, w.as_tensor(), b.as_tensor())?;
            if i + 1 < self.layers.len() {
                x = x.elu(1.0)?;
            }
        }
        Ok(x)
    }

    /// Raw dataset embeddings → standardised (`n × dataset_dim`, row-major).
    pub fn standardise(&self, raw: &[f32]) -> Vec<f32> {
        let d = self.config.dataset_dim.max(1);
        raw.chunks_exact(d)
            .flat_map(|row| row.iter().zip(&self.input_mean).zip(&self.input_std).map(|((x, m), s)| (x - m) / s))
            .collect()
    }

    /// Raw dataset embeddings (`n × dataset_dim`) and losses → `z_proj` (`n × latent_dim`).
    pub fn project(&self, raw: &[f32], losses: &[f64]) -> Result<Vec<f32>, StageError> {
        let e = candle_error("align");
        if losses.is_empty() {
            return Ok(Vec::new());
        }
        let x = Tensor::from_vec(self.standardise(raw), (losses.len(), self.config.dataset_dim), &self.device).map_err(&e)?;
        let bins: Vec<usize> = losses.iter().map(|&l| self.config.bin(l)).collect();
        self.forward(&x, &bins).and_then(|z| z.flatten_all()?.to_vec1::<f32>()).map_err(&e)
    }

    /// Number of trainable values.
    pub fn parameter_count(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }

    pub fn named_tensors(&self) -> Result<NamedTensors, StageError> {
        let e = candle_error("align");
        let mut out = NamedTensors::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let w = w.as_tensor().t().and_then(|t| t.contiguous()).map_err(&e)?;
            for (suffix, v) in [("weight", &w), ("bias", b.as_tensor())] {
                let values = v.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(&e)?;
                out.push(format!("shared.{}.{suffix}", 2 * i), v.dims().to_vec(), values);
            }
        }
        let emb = self.results.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(&e)?;
        out.push("results.weight", self.results.dims().to_vec(), emb);
        let d = self.config.dataset_dim;
        out.push("input_mean", vec![d], self.input_mean.clone());
        out.push("input_std", vec![d], self.input_std.clone());
        Ok(out)
    }

    pub fn snapshot(&self) -> Result<Vec<Tensor>, StageError> {
        self.vars().iter().map(|v| v.as_tensor().copy().map_err(candle_error("align"))).collect()
    }

    pub fn set_from(&self, snapshot: &[Tensor]) -> Result<(), StageError> {
        for (v, t) in self.vars().iter().zip(snapshot) {
            v.set(t).map_err(candle_error("align"))?;
        }
        Ok(())
    }

    /// Writes `align.safetensors` (weights: `shared.<2i>.weight|bias`, `results.weight`, `input_mean`,
    /// `input_std`) and `align.json` (the [`AlignConfig`] plus `extra`).
    pub fn save(&self, dir: &Path, extra: serde_json::Value) -> Result<(), StageError> {
        self.named_tensors()?.write(&dir.join("align.safetensors"))?;
        let mut json = serde_json::to_value(&self.config).map_err(|e| StageError::msg(e.to_string()))?;
        if let (Some(obj), Some(more)) = (json.as_object_mut(), extra.as_object()) {
            obj.extend(more.clone());
        }
        tensors::write_json(&dir.join("align.json"), &json)
    }

    /// Reads an `align` stage's output.
    pub fn load(dir: &Path, device: &Device) -> Result<Aligner, StageError> {
        let config: AlignConfig = tensors::read_json(&dir.join("align.json"))?;
        let mut al = Aligner::init(config, 0, device)?;
        let file = TensorFile::open(&dir.join("align.safetensors"))?;
        let mut snapshot = Vec::new();
        for NamedTensor { name, shape, .. } in al.named_tensors()? {
            let v = file.f32_shaped(&name, &shape, "align.json")?;
            match name.as_str() {
                "input_mean" => al.input_mean = v,
                "input_std" => al.input_std = v,
                _ => {
                    let t = Tensor::from_vec(v, shape.as_slice(), device);
                    // Layer weights are saved `[out, in]` and held `[in, out]`.
                    let weight = name.starts_with("shared.") && name.ends_with(".weight");
                    let t = t.and_then(|t| if weight { t.t()?.contiguous() } else { Ok(t) });
                    snapshot.push(t.map_err(candle_error("align"))?)
                }
            }
        }
        al.set_from(&snapshot)?;
        Ok(al)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AlignConfig {
        AlignConfig {
            dataset_dim: 6,
            results_dim: 4,
            bins: 5,
            loss_min: 0.2,
            loss_max: 1.2,
            hidden: vec![8],
            latent_dim: 3,
            tau: 0.1,
        }
    }

    #[test]
    fn bins_clamp_to_the_ends() {
        let c = config();
        assert_eq!(c.bin(0.2), 0);
        assert_eq!(c.bin(0.41), 1);
        assert_eq!(c.bin(1.2), 4);
        assert_eq!(c.bin(-3.0), 0);
        assert_eq!(c.bin(9.0), 4);
        assert_eq!(c.bin(f64::NAN), 0);
    }

    #[test]
    fn results_embedding_changes_the_projection_and_save_load_round_trips() {
        let mut al = Aligner::init(config(), 3, &Device::Cpu).unwrap();
        al.input_mean = vec![0.5; 6];
        al.input_std = vec![2.0; 6];
        let d = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let z = al.project(&d, &[0.25, 1.1]).unwrap();
        assert_eq!(z.len(), 6);
        assert_ne!(z[..3], z[3..], "different loss bins must give different projections");
        let dir = tempfile::tempdir().unwrap();
        al.save(dir.path(), serde_json::json!({ "best_epoch": 1 })).unwrap();
        let back = Aligner::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(back.project(&d, &[0.25, 1.1]).unwrap(), z);
        assert_eq!(Aligner::init(config(), 3, &Device::Cpu).unwrap().named_tensors().unwrap()[0], al.named_tensors().unwrap()[0]);
    }
}
