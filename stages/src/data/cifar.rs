//! CIFAR-10 binary batches.
//!
//! A batch file is a sequence of 3,073-byte records: one label byte, then a 3 × 32 × 32 image
//! (the red plane, then green, then blue, each row-major) — already `C, H, W` order. The
//! directory (or its `cifar-10-batches-bin/` subdirectory, as the archive unpacks) holds
//! `data_batch_1.bin` … `data_batch_5.bin` (train, read in that order), `test_batch.bin` and
//! `batches.meta.txt` (one class name a line; when absent, the standard CIFAR-10 names).

use std::path::{Path, PathBuf};

use wspace_stage_api::StageError;

use super::files::{RawDataset, RawSplit};
use crate::tensors;

const SIDE: usize = 32;
const IMAGE_LEN: usize = 3 * SIDE * SIDE;
const RECORD_LEN: usize = 1 + IMAGE_LEN;

/// The CIFAR-10 class names, used when `batches.meta.txt` is absent.
pub(crate) const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Appends the records of one batch file to `split`; labels must be below `classes`.
pub(crate) fn parse_batch(what: &str, bytes: &[u8], classes: usize, split: &mut RawSplit) -> Result<(), StageError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_LEN) {
        let whole = bytes.len() / RECORD_LEN;
        return Err(StageError::msg(format!(
            "{what}: truncated or not a CIFAR-10 batch: {} bytes is not a whole, non-zero number of \
             {RECORD_LEN}-byte records (1 label + 3×32×32 pixels); {whole} whole records and {} bytes over",
            bytes.len(),
            bytes.len() % RECORD_LEN
        )));
    }
    for (i, record) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        let label = record[0] as usize;
        if label >= classes {
            return Err(StageError::msg(format!(
                "{what}: record {i} has label {label}, but there are {classes} classes (labels 0..={})",
                classes - 1
            )));
        }
        split.labels.push(label as u32);
        split.images.extend_from_slice(&record[1..]);
    }
    Ok(())
}

/// Parses `batches.meta.txt`: one name a line, blank lines ignored.
pub(crate) fn parse_meta(what: &str, bytes: &[u8]) -> Result<Vec<String>, StageError> {
    let text = std::str::from_utf8(bytes).map_err(|e| StageError::msg(format!("{what}: not UTF-8 text ({e})")))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.is_empty() {
        return Err(StageError::msg(format!("{what}: no class names")));
    }
    Ok(names)
}

fn batch_dir(dir: &Path) -> PathBuf {
    let nested = dir.join("cifar-10-batches-bin");
    if !dir.join("data_batch_1.bin").exists() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

fn read_required(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>), StageError> {
    let path = dir.join(name);
    if !path.is_file() {
        return Err(StageError::msg(format!("{}: missing CIFAR-10 file {name}", dir.display())));
    }
    let bytes = tensors::read(&path)?;
    Ok((path, bytes))
}

/// Reads a CIFAR-10 binary directory (see the module doc).
pub(crate) fn read_dir(dir: &Path) -> Result<RawDataset, StageError> {
    let dir = batch_dir(dir);
    let meta = dir.join("batches.meta.txt");
    let classes = if meta.is_file() {
        parse_meta(&meta.display().to_string(), &tensors::read(&meta)?)?
    } else {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    };
    let mut train = RawSplit { images: Vec::new(), labels: Vec::new() };
    for b in 1..=5 {
        let (path, bytes) = read_required(&dir, &format!("data_batch_{b}.bin"))?;
        parse_batch(&path.display().to_string(), &bytes, classes.len(), &mut train)?;
    }
    let mut test = RawSplit { images: Vec::new(), labels: Vec::new() };
    let (path, bytes) = read_required(&dir, "test_batch.bin")?;
    parse_batch(&path.display().to_string(), &bytes, classes.len(), &mut test)?;
    Ok(RawDataset { train, test, channels: 3, height: SIDE, width: SIDE, classes })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A batch of records with these labels; pixel bytes = record index (test helper).
    pub(crate) fn batch(labels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &l) in labels.iter().enumerate() {
            out.push(l);
            out.extend(std::iter::repeat_n(i as u8, IMAGE_LEN));
        }
        out
    }

    #[test]
    fn parses_records_and_rejects_bad_ones() {
        let mut split = RawSplit { images: Vec::new(), labels: Vec::new() };
        parse_batch("b", &batch(&[3, 9, 0]), 10, &mut split).unwrap();
        assert_eq!(split.labels, vec![3, 9, 0]);
        assert_eq!(split.images.len(), 3 * IMAGE_LEN);
        assert_eq!(split.images[IMAGE_LEN], 1);

        let mut bytes = batch(&[1, 2]);
        bytes.pop();
        let e = parse_batch("dir/data_batch_2.bin", &bytes, 10, &mut split).unwrap_err().to_string();
        assert!(e.contains("dir/data_batch_2.bin: truncated") && e.contains("1 whole records and 3072 bytes over"), "{e}");
        let e = parse_batch("dir/test_batch.bin", &batch(&[1, 10]), 10, &mut split).unwrap_err().to_string();
        assert!(e.contains("dir/test_batch.bin: record 1 has label 10, but there are 10 classes"), "{e}");
        let e = parse_meta("m.txt", b"\n \n").unwrap_err().to_string();
        assert!(e.contains("m.txt: no class names"), "{e}");
    }
}
