//! File helpers shared by the readers and writers of this module: gzip detection, reads and writes
//! whose errors name the path, and safetensors tensors checked by name, dtype and rank.

use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use wspace_stage_api::StageError;

/// Images and labels of one split as a reader produced them, before class caps are applied.
pub(crate) struct RawSplit {
    /// `N × C × H × W` bytes, each image in `C, H, W` order.
    pub images: Vec<u8>,
    /// One class index per image.
    pub labels: Vec<u32>,
}

/// What every reader returns: both splits, the image shape and the class names.
pub(crate) struct RawDataset {
    pub train: RawSplit,
    pub test: RawSplit,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Names from the source (CIFAR's meta file, folder names); empty = the reader has none.
    pub classes: Vec<String>,
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, StageError> {
    std::fs::read(path).map_err(|e| StageError::io(path, e))
}

/// Returns `bytes` decompressed when they start with the gzip magic (`1f 8b`), else unchanged.
/// `what` names the file in errors.
pub(crate) fn gunzip_if_gzip(what: &str, bytes: Vec<u8>) -> Result<Vec<u8>, StageError> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(2));
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| StageError::msg(format!("{what}: invalid or truncated gzip data ({e})")))?;
    Ok(out)
}

/// Reads a file and decompresses it if it is gzip.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, StageError> {
    gunzip_if_gzip(&path.display().to_string(), read(path)?)
}

pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), StageError> {
    std::fs::write(path, bytes).map_err(|e| StageError::io(path, e))
}

/// Writes pretty JSON with a trailing newline.
pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), StageError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| StageError::msg(format!("{}: cannot encode JSON: {e}", path.display())))?;
    text.push('\n');
    write(path, text.as_bytes())
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| StageError::msg(format!("{}: invalid JSON: {e}", path.display())))
}

/// `I64` little-endian bytes of `values`.
pub(crate) fn i64_bytes(values: impl IntoIterator<Item = i64>) -> Vec<u8> {
    values.into_iter().flat_map(i64::to_le_bytes).collect()
}

/// Writes named tensors `(name, dtype, shape, little-endian bytes)` as one safetensors file
/// (no `__metadata__`, so the bytes depend only on the tensors).
pub(crate) fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, &[u8])]) -> Result<(), StageError> {
    let fail = |e: safetensors::SafeTensorError| StageError::msg(format!("{}: cannot encode safetensors: {e}", path.display()));
    let mut views = Vec::with_capacity(tensors.len());
    for (name, dtype, shape, data) in tensors {
        views.push((*name, TensorView::new(*dtype, shape.clone(), data).map_err(fail)?));
    }
    let bytes = safetensors::serialize(views, None).map_err(fail)?;
    write(path, &bytes)
}

/// A safetensors file read into memory, with typed accessors whose errors name the file.
pub(crate) struct TensorFile {
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

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Every `F32` tensor, in the file's (sorted) name order: `(name, shape, values)`.
    pub fn f32_all(&self) -> Result<crate::zoo::store::NamedTensors, StageError> {
        let st = self.parsed()?;
        let mut names: Vec<&str> = st.names();
        names.sort_unstable();
        names
            .into_iter()
            .map(|name| {
                let (shape, data) = self.tensor(name, Dtype::F32, st.tensor(name).map(|v| v.shape().len()).unwrap_or(0))?;
                Ok((name.to_string(), shape, f32_from_bytes(&data)))
            })
            .collect()
    }
}

/// `F32` little-endian bytes of `values`.
pub(crate) fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub(crate) fn f32_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Writes `(name, shape, values)` tensors as `F32` safetensors.
pub(crate) fn write_f32_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<(), StageError> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| f32_bytes(v)).collect();
    let views: Vec<(&str, Dtype, Vec<usize>, &[u8])> =
        tensors.iter().zip(&bytes).map(|((n, s, _), b)| (n.as_str(), Dtype::F32, s.clone(), b.as_slice())).collect();
    write_safetensors(path, &views)
}

/// Keeps the first `per_class` images of each class, in file order (`0` = keep all).
pub(crate) fn cap_per_class(split: RawSplit, image_len: usize, per_class: usize) -> RawSplit {
    if per_class == 0 {
        return split;
    }
    let mut counts: Vec<usize> = Vec::new();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for (i, &label) in split.labels.iter().enumerate() {
        let l = label as usize;
        if counts.len() <= l {
            counts.resize(l + 1, 0);
        }
        if counts[l] < per_class {
            counts[l] += 1;
            labels.push(label);
            images.extend_from_slice(&split.images[i * image_len..(i + 1) * image_len]);
        }
    }
    RawSplit { images, labels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_detected_by_magic_and_truncation_is_an_error() {
        let plain = b"hello, not gzip".to_vec();
        assert_eq!(gunzip_if_gzip("x", plain.clone()).unwrap(), plain);
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
            enc.write_all(&[7u8; 1000]).unwrap();
            enc.finish().unwrap();
        }
        assert_eq!(gunzip_if_gzip("x", gz.clone()).unwrap(), vec![7u8; 1000]);
        gz.truncate(gz.len() / 2);
        let err = gunzip_if_gzip("some/file.gz", gz).unwrap_err().to_string();
        assert!(err.contains("some/file.gz") && err.contains("gzip"), "{err}");
    }

    #[test]
    fn cap_keeps_the_first_of_each_class_in_file_order() {
        let split = RawSplit { images: (0..6).collect(), labels: vec![0, 1, 0, 0, 1, 2] };
        let capped = cap_per_class(split, 1, 2);
        assert_eq!(capped.labels, vec![0, 1, 0, 1, 2]);
        assert_eq!(capped.images, vec![0, 1, 2, 4, 5]);
    }
}
