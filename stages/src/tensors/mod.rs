//! Named tensors and the files stages keep them in.
//!
//! # Brief overview
//! - [`NamedTensor`] / [`NamedTensors`]: `F32` tensors with their PyTorch `state_dict` names and shapes,
//!   in order — what the zoo writes per model, what a PCA decodes to, what a trained encoder saves.
//! - [`TensorFile`] reads one safetensors file with typed accessors; [`write_safetensors`] and
//!   [`NamedTensors::write`] write one. No `__metadata__` is written, so the bytes depend only on the
//!   tensors (stage outputs are content-addressed).
//! - [`io`]: whole-file reads and writes (bytes, pretty JSON, CSV rows through the `csv` crate) whose
//!   errors name the path, and the error adapter for candle.
//!
//! Every stage module that reads or writes tensors or JSON goes through here; none of them reaches into
//! another stage module for it.

pub mod io;
mod safetensors_file;

pub(crate) use io::csv_row;
pub use io::{
    candle_error, finite_json, json_bytes, json_path, read, read_json, read_records, write, write_atomic, write_csv, write_json,
    write_json_with, write_records,
};
pub use safetensors_file::{f32_bytes, f32_from_bytes, i64_bytes, safetensors_bytes, write_safetensors, TensorFile};

use std::path::Path;

use wspace_stage_api::StageError;

/// One `F32` tensor: its `state_dict` name, its shape and its values (row-major).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl NamedTensor {
    pub fn new(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Self {
        NamedTensor { name: name.into(), shape, values }
    }
}

/// Named tensors in order (`state_dict` order where a model wrote them, name order when read from a
/// file). Names are not checked for uniqueness; lookups take the first match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NamedTensors(Vec<NamedTensor>);

impl NamedTensors {
    pub fn new() -> Self {
        NamedTensors(Vec::new())
    }

    pub fn push(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) {
        self.0.push(NamedTensor::new(name, shape, values));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, NamedTensor> {
        self.0.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, NamedTensor> {
        self.0.iter_mut()
    }

    /// The first tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.0.iter().find(|t| t.name == name)
    }

    /// Removes and returns the first tensor called `name` (the others keep their order).
    pub fn take(&mut self, name: &str) -> Option<NamedTensor> {
        let i = self.0.iter().position(|t| t.name == name)?;
        Some(self.0.remove(i))
    }

    /// `(name, shape, values)` borrowed, for constructors that take triples (`CnnS::from_named_tensors`).
    pub fn triples(&self) -> impl Iterator<Item = (&str, &[usize], &[f32])> {
        self.0.iter().map(|t| (t.name.as_str(), t.shape.as_slice(), t.values.as_slice()))
    }

    /// The inverse of [`NamedTensors::flat`]: `flat` cut into tensors of these names and shapes, in
    /// order (`flat` holds at least their values).
    pub fn unflatten<'a>(flat: &[f32], shapes: impl IntoIterator<Item = (&'a str, &'a [usize])>) -> NamedTensors {
        let mut at = 0;
        let tensors = shapes
            .into_iter()
            .map(|(name, shape)| {
                let len: usize = shape.iter().product();
                at += len;
                NamedTensor::new(name.to_string(), shape.to_vec(), flat[at - len..at].to_vec())
            })
            .collect();
        NamedTensors(tensors)
    }

    /// Every value, tensors concatenated in order.
    pub fn flat(&self) -> Vec<f32> {
        self.0.iter().flat_map(|t| t.values.iter().copied()).collect()
    }

    /// Reads every `F32` tensor of a safetensors file, in the file's (sorted) name order.
    pub fn read(path: &Path) -> Result<Self, StageError> {
        TensorFile::open(path)?.f32_all()
    }

    /// Writes the tensors as one `F32` safetensors file.
    pub fn write(&self, path: &Path) -> Result<(), StageError> {
        write(path, &self.to_safetensors(path)?)
    }

    /// The bytes [`NamedTensors::write`] writes; `path` names the file in errors.
    pub fn to_safetensors(&self, path: &Path) -> Result<Vec<u8>, StageError> {
        let bytes: Vec<Vec<u8>> = self.0.iter().map(|t| f32_bytes(&t.values)).collect();
        let views: Vec<(&str, safetensors::Dtype, Vec<usize>, &[u8])> = self
            .0
            .iter()
            .zip(&bytes)
            .map(|(t, b)| (t.name.as_str(), safetensors::Dtype::F32, t.shape.clone(), b.as_slice()))
            .collect();
        safetensors_bytes(path, &views)
    }
}

/// Writes one `F32` tensor as a safetensors file of its own.
pub fn write_f32(path: &Path, name: &str, shape: Vec<usize>, values: Vec<f32>) -> Result<(), StageError> {
    NamedTensors::from(vec![NamedTensor::new(name, shape, values)]).write(path)
}

impl std::ops::Index<usize> for NamedTensors {
    type Output = NamedTensor;
    fn index(&self, i: usize) -> &NamedTensor {
        &self.0[i]
    }
}

impl FromIterator<NamedTensor> for NamedTensors {
    fn from_iter<I: IntoIterator<Item = NamedTensor>>(iter: I) -> Self {
        NamedTensors(iter.into_iter().collect())
    }
}

impl From<Vec<NamedTensor>> for NamedTensors {
    fn from(v: Vec<NamedTensor>) -> Self {
        NamedTensors(v)
    }
}

/// From `(name, shape, values)` triples (what `CnnS::named_tensors` returns).
impl From<Vec<(String, Vec<usize>, Vec<f32>)>> for NamedTensors {
    fn from(v: Vec<(String, Vec<usize>, Vec<f32>)>) -> Self {
        v.into_iter().map(|(name, shape, values)| NamedTensor { name, shape, values }).collect()
    }
}

impl IntoIterator for NamedTensors {
    type Item = NamedTensor;
    type IntoIter = std::vec::IntoIter<NamedTensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a NamedTensors {
    type Item = &'a NamedTensor;
    type IntoIter = std::slice::Iter<'a, NamedTensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_tensors_round_trip_through_safetensors_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let mut t = NamedTensors::new();
        t.push("fc.weight", vec![2, 2], vec![1.0, -2.0, 3.5, 0.25]);
        t.push("conv.bias", vec![3], vec![0.5, 0.0, -1.0]);
        t.write(&path).unwrap();
        let back = NamedTensors::read(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], NamedTensor::new("conv.bias", vec![3], vec![0.5, 0.0, -1.0]));
        assert_eq!(back.get("fc.weight").unwrap().values, vec![1.0, -2.0, 3.5, 0.25]);
        assert_eq!(back.flat(), vec![0.5, 0.0, -1.0, 1.0, -2.0, 3.5, 0.25]);
    }

    #[test]
    fn take_removes_the_named_tensor_and_keeps_the_rest_in_order() {
        let mut t: NamedTensors =
            vec![("a".to_string(), vec![1], vec![1.0]), ("b".into(), vec![1], vec![2.0]), ("c".into(), vec![1], vec![3.0])]
                .into();
        assert_eq!(t.take("b").unwrap().values, vec![2.0]);
        assert!(t.take("b").is_none());
        assert_eq!(t.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    }
}
