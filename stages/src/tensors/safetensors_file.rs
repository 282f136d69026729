//! Safetensors I/O: one file read into memory with typed accessors whose errors name the file, and a
//! writer of `(name, dtype, shape, bytes)` views.

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wspace_stage_api::StageError;

use super::{read, write, NamedTensor, NamedTensors};

/// `I64` little-endian bytes of `values`.
pub fn i64_bytes(values: impl IntoIterator<Item = i64>) -> Vec<u8> {
    values.into_iter().flat_map(i64::to_le_bytes).collect()
}

/// `F32` little-endian bytes of `values`.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn f32_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Writes named tensors `(name, dtype, shape, little-endian bytes)` as one safetensors file
/// (no `__metadata__`, so the bytes depend only on the tensors).
pub fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, &[u8])]) -> Result<(), StageError> {
    write(path, &safetensors_bytes(path, tensors)?)
}

/// The bytes [`write_safetensors`] writes; `path` names the file in errors.
pub fn safetensors_bytes(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, &[u8])]) -> Result<Vec<u8>, StageError> {
    let fail = |e: safetensors::SafeTensorError| StageError::msg(format!("{}: cannot encode safetensors: {e}", path.display()));
    let mut views = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, data) in tensors {
        views.push((*name, TensorView::new(*dtype, shape.clone(), data).map_err(fail)?));
    }
    safetensors::serialize(views, None).map_err(fail)
}

/// A safetensors file read into memory, with typed accessors whose errors name the file.
pub struct TensorFile {
    path: String,
    bytes: Vec<u8>,
}

impl TensorFile {
    pub fn open(path: &Path) -> Result<Self, StageError> {
        let file = TensorFile { path: path.display().to_string(), bytes: read(path)? };
        file.parsed()?;
        Ok(file)
    }

    fn parsed(&self) -> Result<SafeTensors<'_>, StageError> {
        SafeTensors::deserialize(&self.bytes)
            .map_err(|e| StageError::msg(format!("{}: not a valid safetensors file ({e})", self.path)))
    }

    fn tensor(&self, name: &str, dtype: Dtype, rank: usize) -> Result<(Vec<usize>, Vec<u8>), StageError> {
        let st = self.parsed()?;
        let view = st.tensor(name).map_err(|_| StageError::msg(format!("{}: has no tensor `{name}`", self.path)))?;
        if view.dtype() != dtype || view.shape().len() != rank {
            return Err(StageError::msg(format!(
                "{}: tensor `{name}` is {:?} {:?}, expected {dtype:?} of rank {rank}",
                self.path,
                view.dtype(),
                view.shape()
            )));
        }
        Ok((view.shape().to_vec(), view.data().to_vec()))
    }

    /// A `U8` tensor of the given rank: its shape and bytes.
    pub fn u8(&self, name: &str, rank: usize) -> Result<(Vec<usize>, Vec<u8>), StageError> {
        self.tensor(name, Dtype::U8, rank)
    }

    /// A 1-D `I64` tensor.
    pub fn i64_vec(&self, name: &str) -> Result<Vec<i64>, StageError> {
        let (_, data) = self.tensor(name, Dtype::I64, 1)?;
        Ok(data.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
    }

    /// An `F32` tensor of any rank: its shape and values.
    pub fn f32(&self, name: &str) -> Result<NamedTensor, StageError> {
        let st = self.parsed()?;
        let rank = st.tensor(name).map(|v| v.shape().len()).unwrap_or(0);
        let (shape, data) = self.tensor(name, Dtype::F32, rank)?;
        Ok(NamedTensor::new(name, shape, f32_from_bytes(&data)))
    }

    /// The values of the `F32` tensor `name`, which must have shape `shape`; `source` names what
    /// implies that shape in the error ("pca.json").
    pub fn f32_shaped(&self, name: &str, shape: &[usize], source: &str) -> Result<Vec<f32>, StageError> {
        let t = self.f32(name)?;
        if t.shape != shape {
            return Err(StageError::msg(format!("{}: `{name}` has shape {:?}, {source} implies {shape:?}", self.path, t.shape)));
        }
        Ok(t.values)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Every `F32` tensor, in the file's (sorted) name order.
    pub fn f32_all(&self) -> Result<NamedTensors, StageError> {
        let mut names: Vec<String> = self.parsed()?.names().into_iter().map(String::from).collect();
        names.sort_unstable();
        names.iter().map(|name| self.f32(name)).collect()
    }
}
