//! IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
//!
//! An IDX file is a big-endian header — two zero bytes, a data-type byte (`0x08` = unsigned byte),
//! the number of dimensions `d` — then `d` big-endian `u32` sizes, then the data in row-major
//! order. So the magic number is `0x00000803` for images (`N × H × W`) and `0x00000801` for labels
//! (`N`). A directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each with or without `.gz`; gzip is
//! detected by its magic bytes, not by the name.

use std::path::{Path, PathBuf};

use wspace_stage_api::StageError;

use super::files::{self, RawDataset, RawSplit};

/// One parsed IDX file: its dimensions and its data bytes (header removed).
#[derive(Debug)]
pub(crate) struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parses IDX bytes (already decompressed) with `rank` dimensions of unsigned bytes. `what`
/// names the file in errors.
pub(crate) fn parse(what: &str, mut bytes: Vec<u8>, rank: usize) -> Result<Idx, StageError> {
    let expected_magic = 0x0800 | rank as u32;
    let kind = if rank == 1 { "IDX1 unsigned-byte labels" } else { "IDX3 unsigned-byte images" };
    if bytes.len() < 4 {
        return Err(StageError::msg(format!(
            "{what}: truncated: {} bytes, too short for an IDX header (expected magic number 0x{expected_magic:08x}, {kind})",
            bytes.len()
        )));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != expected_magic {
        return Err(StageError::msg(format!("{what}: bad magic number 0x{magic:08x}, expected 0x{expected_magic:08x} ({kind})")));
    }
    let header_len = 4 + 4 * rank;
    if bytes.len() < header_len {
        return Err(StageError::msg(format!("{what}: truncated: {} bytes, the IDX header needs {header_len}", bytes.len())));
    }
    let dims: Vec<usize> =
        bytes[4..header_len].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let body_len = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| StageError::msg(format!("{what}: dimensions {dims:?} overflow")))?;
    let found = bytes.len() - header_len;
    if found != body_len {
        let problem = if found < body_len { "truncated" } else { "trailing bytes" };
        return Err(StageError::msg(format!(
            "{what}: {problem}: header says dimensions {dims:?} = {body_len} data bytes, found {found}"
        )));
    }
    let data = bytes.split_off(header_len);
    Ok(Idx { dims, data })
}

/// Parses an image file and its label file into one split; checks that the counts agree and,
/// given `classes`, that every label is below it.
pub(crate) fn parse_split(
    images_what: &str,
    images: Vec<u8>,
    labels_what: &str,
    labels: Vec<u8>,
    classes: Option<usize>,
) -> Result<(RawSplit, usize, usize), StageError> {
    let images = parse(images_what, images, 3)?;
    let labels = parse(labels_what, labels, 1)?;
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        return Err(StageError::msg(format!("{labels_what}: {} labels, but {images_what} has {n} images", labels.dims[0])));
    }
    if n > 0 && (h == 0 || w == 0) {
        return Err(StageError::msg(format!("{images_what}: images of size {h}×{w}")));
    }
    if let Some(k) = classes {
        if let Some((i, &l)) = labels.data.iter().enumerate().find(|(_, &l)| l as usize >= k) {
            return Err(StageError::msg(format!(
                "{labels_what}: label {l} at index {i} is out of range: expected labels 0..={} ({k} classes)",
                k.saturating_sub(1)
            )));
        }
    }
    let split = RawSplit { images: images.data, labels: labels.data.into_iter().map(u32::from).collect() };
    Ok((split, h, w))
}

/// Finds `stem` or `stem.gz` in `dir`.
fn locate(dir: &Path, stem: &str) -> Result<PathBuf, StageError> {
    let plain = dir.join(stem);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(StageError::msg(format!("{}: missing IDX file: expected {stem} or {stem}.gz", dir.display())))
}

/// Reads the four IDX files of a directory (see the module doc); given `classes`, labels must be
/// below it.
pub(crate) fn read_dir(dir: &Path, classes: Option<usize>) -> Result<RawDataset, StageError> {
    let split = |prefix: &str| -> Result<(RawSplit, usize, usize), StageError> {
        let images = locate(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels = locate(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        parse_split(
            &images.display().to_string(),
            files::read_maybe_gz(&images)?,
            &labels.display().to_string(),
            files::read_maybe_gz(&labels)?,
            classes,
        )
    };
    from_splits(split("train")?, split("t10k")?, &dir.join("t10k-images-idx3-ubyte").display().to_string())
}

/// Joins two parsed splits; their image sizes must agree (`test_what` names the test file).
pub(crate) fn from_splits(
    (train, h, w): (RawSplit, usize, usize),
    (test, th, tw): (RawSplit, usize, usize),
    test_what: &str,
) -> Result<RawDataset, StageError> {
    if (th, tw) != (h, w) && !test.labels.is_empty() {
        return Err(StageError::msg(format!("{test_what}: test images are {th}×{tw}, but the training images are {h}×{w}")));
    }
    Ok(RawDataset { train, test, channels: 1, height: h, width: w, classes: Vec::new() })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// IDX bytes for `dims` and `data` (test helper, also used by the dataset tests).
    pub(crate) fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0x08, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn parses_images_and_labels() {
        let images = idx_bytes(&[2, 2, 3], &(0..12).collect::<Vec<u8>>());
        let labels = idx_bytes(&[2], &[1, 0]);
        let (split, h, w) = parse_split("img", images, "lab", labels, Some(2)).unwrap();
        assert_eq!((h, w), (2, 3));
        assert_eq!(split.labels, vec![1, 0]);
        assert_eq!(split.images.len(), 12);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let err = |r: Result<Idx, StageError>| r.unwrap_err().to_string();
        let e = err(parse("a/lab", idx_bytes(&[2, 2, 3], &[0; 12]), 1));
        assert!(e.contains("a/lab") && e.contains("bad magic number 0x00000803, expected 0x00000801"), "{e}");
        let e = err(parse("a/img", idx_bytes(&[2, 2, 3], &[0; 11]), 3));
        assert!(e.contains("a/img") && e.contains("truncated") && e.contains("12 data bytes, found 11"), "{e}");
        let e = err(parse("a/img", vec![0, 0, 8], 3));
        assert!(e.contains("a/img") && e.contains("truncated"), "{e}");
        let e = err(parse("a/img", vec![0, 0, 8, 3, 0, 0], 3));
        assert!(e.contains("a/img") && e.contains("header needs 16"), "{e}");
        let e = err(parse("a/img", vec![0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 3));
        assert!(e.contains("a/img"), "{e}");
        let e = parse_split("a/img", idx_bytes(&[2, 1, 1], &[0; 2]), "a/lab", idx_bytes(&[3], &[0; 3]), None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("a/lab: 3 labels, but a/img has 2 images"), "{e}");
        let e = parse_split("a/img", idx_bytes(&[2, 1, 1], &[0; 2]), "a/lab", idx_bytes(&[2], &[1, 3]), Some(3))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("a/lab: label 3 at index 1 is out of range: expected labels 0..=2"), "{e}");
    }
}
