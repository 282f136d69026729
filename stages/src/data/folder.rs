//! Image folders: `root/train/<class>/*.png|jpg|jpeg` and `root/test/<class>/*`.
//!
//! Classes are the folder names under `train/`, sorted (byte order); `test/` may lack a class but
//! may not add one. Within a class, files are read in sorted name order; files whose extension is
//! not `png`, `jpg` or `jpeg` (any case) and hidden files are skipped. Every image must have the
//! size of the first training image. Colour: `channels = 1` converts to grey, `3` to RGB, `0`
//! (auto) picks grey when every image is grey and RGB otherwise; alpha is dropped.

use std::path::{Path, PathBuf};

use image::DynamicImage;
use wspace_stage_api::StageError;

use super::files::{RawDataset, RawSplit};

/// The sorted entries of `dir` that satisfy `keep`, with their names.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<(String, PathBuf)>, StageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StageError::io(dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StageError::io(dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(String::from) else {
            return Err(StageError::msg(format!("{}: file name is not UTF-8", path.display())));
        };
        if !name.starts_with('.') && keep(&path) {
            out.push((name, path));
        }
    }
    out.sort();
    Ok(out)
}

fn is_image(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    path.is_file() && matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg"))
}

fn decode(path: &Path) -> Result<DynamicImage, StageError> {
    image::ImageReader::open(path)
        .map_err(|e| StageError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| StageError::io(path, e))?
        .decode()
        .map_err(|e| StageError::msg(format!("{}: cannot decode image: {e}", path.display())))
}

/// The decoded images of one split with their labels and files, in class-then-name order.
struct Decoded {
    images: Vec<(PathBuf, DynamicImage)>,
    labels: Vec<u32>,
}

fn decode_split(root: &Path, classes: &[String]) -> Result<Decoded, StageError> {
    let mut decoded = Decoded { images: Vec::new(), labels: Vec::new() };
    for (name, class_dir) in sorted_entries(root, Path::is_dir)? {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(StageError::msg(format!(
                "{}: class folder `{name}` does not exist under train/ (classes: {})",
                class_dir.display(),
                classes.join(", ")
            )));
        };
        for (_, file) in sorted_entries(&class_dir, is_image)? {
            let img = decode(&file)?;
            decoded.images.push((file, img));
            decoded.labels.push(label as u32);
        }
    }
    Ok(decoded)
}

fn to_chw(img: &DynamicImage, channels: usize) -> Vec<u8> {
    if channels == 1 {
        return img.to_luma8().into_raw();
    }
    let hwc = img.to_rgb8().into_raw();
    let plane = hwc.len() / 3;
    let mut chw = vec![0u8; hwc.len()];
    for (i, px) in hwc.chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            chw[c * plane + i] = v;
        }
    }
    chw
}

/// Reads an image folder (see the module doc); `channels` is 0 (auto), 1 or 3.
pub(crate) fn read_dir(root: &Path, channels: usize) -> Result<RawDataset, StageError> {
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    for d in [&train_dir, &test_dir] {
        if !d.is_dir() {
            return Err(StageError::msg(format!(
                "{}: missing folder (an image folder dataset needs train/<class>/ and test/<class>/)",
                d.display()
            )));
        }
    }
    let classes: Vec<String> = sorted_entries(&train_dir, Path::is_dir)?.into_iter().map(|(n, _)| n).collect();
    if classes.is_empty() {
        return Err(StageError::msg(format!("{}: no class folders", train_dir.display())));
    }
    let train = decode_split(&train_dir, &classes)?;
    for (label, class) in classes.iter().enumerate() {
        if !train.labels.contains(&(label as u32)) {
            return Err(StageError::msg(format!("{}: no .png/.jpg/.jpeg images", train_dir.join(class).display())));
        }
    }
    let test = decode_split(&test_dir, &classes)?;

    let (first_path, first) = &train.images[0];
    let (width, height) = (first.width(), first.height());
    let all = || train.images.iter().chain(&test.images);
    for (path, img) in all() {
        if (img.width(), img.height()) != (width, height) {
            return Err(StageError::msg(format!(
                "{}: image is {}×{} (width×height), but {} is {width}×{height}; all images must have the same size",
                path.display(),
                img.width(),
                img.height(),
                first_path.display()
            )));
        }
    }
    let channels = match channels {
        0 if all().all(|(_, img)| !img.color().has_color()) => 1,
        0 => 3,
        c => c,
    };
    let pack =
        |d: Decoded| RawSplit { images: d.images.iter().flat_map(|(_, img)| to_chw(img, channels)).collect(), labels: d.labels };
    Ok(RawDataset { train: pack(train), test: pack(test), channels, height: height as usize, width: width as usize, classes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_is_stored_channel_first() {
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_raw(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap());
        assert_eq!(to_chw(&img, 3), vec![1, 4, 2, 5, 3, 6]);
        assert_eq!(to_chw(&img, 1).len(), 2);
    }
}
