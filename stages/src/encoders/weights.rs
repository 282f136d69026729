//! Reading encoder weights from safetensors: every failure is a [`StageError`] that names the file and,
//! where it concerns one tensor, the tensor, its expected shape and what was found.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use wspace_stage_api::StageError;

use crate::tensors::candle_error;

/// The tensors of one safetensors file, converted to f32 on request.
pub struct WeightFile<'a> {
    /// How errors name the file (its path, or "the embedded EfficientNet-Lite0 weights").
    label: String,
    vb: VarBuilder<'a>,
}

impl<'a> WeightFile<'a> {
    /// Parses `bytes` (the content of `label`) as safetensors.
    pub fn from_slice(label: impl Into<String>, bytes: &'a [u8], device: &Device) -> Result<Self, StageError> {
        let label = label.into();
        let vb = VarBuilder::from_slice_safetensors(bytes, DType::F32, device)
            .map_err(|e| StageError::msg(format!("{label}: not a valid safetensors file ({e})")))?;
        Ok(WeightFile { label, vb })
    }

    /// The tensor `name`, which must have `shape`; any float dtype is converted to f32.
    pub fn get(&self, name: &str, shape: impl Into<Shape>) -> Result<Tensor, StageError> {
        let shape = shape.into();
        if !self.vb.contains_tensor(name) {
            return Err(StageError::msg(format!("{}: tensor `{name}` missing (expected shape {shape:?})", self.label)));
        }
        let t = self.vb.get_unchecked(name).map_err(candle_error(format!("{}: tensor `{name}`", self.label)))?;
        if t.shape() != &shape {
            return Err(StageError::msg(format!(
                "{}: tensor `{name}` has shape {:?}, expected {shape:?}",
                self.label,
                t.shape()
            )));
        }
        Ok(t)
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Reads a whole file; the error names it.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, StageError> {
    std::fs::read(path).map_err(|e| StageError::io(path, e))
}

/// A model directory's file, or a clear error when it is absent.
pub(crate) fn require_file(dir: &Path, name: &str, what: &str) -> Result<PathBuf, StageError> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(StageError::msg(format!("{}: {what} not found (expected the file `{name}` in {})", p.display(), dir.display())))
    }
}
