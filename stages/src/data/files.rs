//! What the dataset readers share: the raw splits they return, gzip detection and per-class caps.
//! Reads, writes, JSON and safetensors go through [`crate::tensors`].

use std::io::Read;
use std::path::Path;

use wspace_stage_api::StageError;

use crate::tensors;

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
    gunzip_if_gzip(&path.display().to_string(), tensors::read(path)?)
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
