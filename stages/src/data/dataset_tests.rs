//! Tests of the `dataset` kind: each reader on small good files made in a temp dir, on corrupt
//! ones (the error must name the file), and the embedded default.

use std::io::Write;
use std::path::Path;

use super::*;
use crate::data::cifar::tests::batch;
use crate::data::idx::tests::idx_bytes;
use crate::test_util::{run_stage, s};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An IDX directory: 6 train images (labels 0,1,2,0,1,2) and 3 test images of 2×2 pixels;
/// train files gzip-compressed, test files raw. Pixel bytes = image index.
fn idx_dir(dir: &Path) {
    let imgs = |n: u8| idx_bytes(&[n as u32, 2, 2], &(0..n).flat_map(|i| [i; 4]).collect::<Vec<_>>());
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz(&imgs(6))).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gz(&idx_bytes(&[6], &[0, 1, 2, 0, 1, 2]))).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), imgs(3)).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_bytes(&[3], &[2, 1, 0])).unwrap();
}

fn opts(format: Format, path: &Path) -> DatasetOptions {
    DatasetOptions { format, path: Some(path.to_path_buf()), ..DatasetOptions::default() }
}

fn build_err(o: &DatasetOptions) -> String {
    o.build().expect_err("expected an error").to_string()
}

#[test]
fn idx_reads_raw_and_gzip_and_caps_per_class() {
    let dir = tempfile::tempdir().unwrap();
    idx_dir(dir.path());
    let d = opts(Format::Idx, dir.path()).build().unwrap();
    assert_eq!(d.meta.classes, vec!["0", "1", "2"]);
    assert_eq!(d.image_shape(), [1, 2, 2]);
    assert_eq!(d.train.labels, vec![0, 1, 2, 0, 1, 2]);
    assert_eq!(d.test.labels, vec![2, 1, 0]);
    assert_eq!(d.train.image(4), &[4, 4, 4, 4]);
    assert_eq!(d.meta.train_class_counts, vec![2, 2, 2]);

    let capped = DatasetOptions {
        train_per_class: 1,
        class_names: vec!["a".into(), "b".into(), "c".into()],
        ..opts(Format::Idx, dir.path())
    }
    .build()
    .unwrap();
    assert_eq!(capped.meta.classes, vec!["a", "b", "c"]);
    assert_eq!(capped.train.labels, vec![0, 1, 2]);
    assert_eq!(capped.train.image(2), &[2, 2, 2, 2], "the first of each class, in file order");
}

#[test]
fn idx_corrupt_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    idx_dir(p);
    let o = opts(Format::Idx, p);

    // Truncated (raw): drop the last byte of the test images.
    let full = std::fs::read(p.join("t10k-images-idx3-ubyte")).unwrap();
    std::fs::write(p.join("t10k-images-idx3-ubyte"), &full[..full.len() - 1]).unwrap();
    let e = build_err(&o);
    assert!(e.contains("t10k-images-idx3-ubyte: truncated") && e.contains("12 data bytes, found 11"), "{e}");
    std::fs::write(p.join("t10k-images-idx3-ubyte"), &full).unwrap();

    // Truncated gzip stream.
    let gzl = std::fs::read(p.join("train-labels-idx1-ubyte.gz")).unwrap();
    std::fs::write(p.join("train-labels-idx1-ubyte.gz"), &gzl[..gzl.len() / 2]).unwrap();
    let e = build_err(&o);
    assert!(e.contains("train-labels-idx1-ubyte.gz: invalid or truncated gzip"), "{e}");

    // Bad magic: an image file where labels belong.
    std::fs::write(p.join("train-labels-idx1-ubyte.gz"), gz(&idx_bytes(&[6, 1, 1], &[0; 6]))).unwrap();
    let e = build_err(&o);
    assert!(e.contains("train-labels-idx1-ubyte.gz: bad magic number 0x00000803, expected 0x00000801"), "{e}");

    // Count mismatch.
    std::fs::write(p.join("train-labels-idx1-ubyte.gz"), gz(&idx_bytes(&[5], &[0; 5]))).unwrap();
    let e = build_err(&o);
    assert!(e.contains("train-labels-idx1-ubyte.gz: 5 labels, but") && e.contains("has 6 images"), "{e}");

    // Label out of range for the given class names.
    std::fs::write(p.join("train-labels-idx1-ubyte.gz"), gz(&idx_bytes(&[6], &[0, 1, 2, 0, 1, 2]))).unwrap();
    let named = DatasetOptions { class_names: vec!["a".into(), "b".into()], ..o.clone() };
    let e = build_err(&named);
    assert!(e.contains("train-labels-idx1-ubyte.gz: label 2 at index 2 is out of range"), "{e}");

    // Missing file.
    std::fs::remove_file(p.join("t10k-labels-idx1-ubyte")).unwrap();
    let e = build_err(&o);
    assert!(e.contains("missing IDX file: expected t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"), "{e}");
}

/// A CIFAR-10 directory (nested as the archive unpacks): 5 train batches with 2 records each and a
/// test batch of 3; 3 class names.
fn cifar_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir(&dir).unwrap();
    for b in 1..=5u8 {
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), batch(&[b % 3, (b + 1) % 3])).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), batch(&[2, 0, 1])).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), "cat\ndog\nbird\n\n").unwrap();
    dir
}

#[test]
fn cifar_reads_batches_in_order_with_meta_names() {
    let root = tempfile::tempdir().unwrap();
    cifar_dir(root.path());
    let d = opts(Format::Cifar10, root.path()).build().unwrap();
    assert_eq!(d.meta.classes, vec!["cat", "dog", "bird"]);
    assert_eq!(d.image_shape(), [3, 32, 32]);
    assert_eq!(d.train.labels, vec![1, 2, 2, 0, 0, 1, 1, 2, 2, 0]);
    assert_eq!(d.test.labels, vec![2, 0, 1]);
    assert_eq!(d.test.image(1)[0], 1);
    let e = build_err(&DatasetOptions { class_names: vec!["x".into()], ..opts(Format::Cifar10, root.path()) });
    assert!(e.contains("`class_names` has 1 names, but the cifar10 dataset has 3 classes (cat, dog, bird)"), "{e}");
}

#[test]
fn cifar_corrupt_files_name_the_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = cifar_dir(root.path());
    let o = opts(Format::Cifar10, &dir);
    let good = std::fs::read(dir.join("data_batch_3.bin")).unwrap();
    std::fs::write(dir.join("data_batch_3.bin"), &good[..good.len() - 10]).unwrap();
    let e = build_err(&o);
    assert!(e.contains("data_batch_3.bin: truncated"), "{e}");
    std::fs::write(dir.join("data_batch_3.bin"), &good).unwrap();
    std::fs::write(dir.join("test_batch.bin"), batch(&[0, 3])).unwrap();
    let e = build_err(&o);
    assert!(e.contains("test_batch.bin: record 1 has label 3, but there are 3 classes"), "{e}");
    std::fs::remove_file(dir.join("data_batch_5.bin")).unwrap();
    let e = build_err(&o);
    assert!(e.contains("missing CIFAR-10 file data_batch_5.bin"), "{e}");
}

fn save_png(path: &Path, w: u32, h: u32, grey: bool, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if grey {
        image::GrayImage::from_pixel(w, h, image::Luma([v])).save(path).unwrap();
    } else {
        image::RgbImage::from_pixel(w, h, image::Rgb([v, 0, 255])).save(path).unwrap();
    }
}

#[test]
fn folder_reads_sorted_classes_and_converts_consistently() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    save_png(&r.join("train/zebra/b.png"), 4, 3, true, 10);
    save_png(&r.join("train/zebra/a.png"), 4, 3, true, 20);
    save_png(&r.join("train/ant/x.PNG"), 4, 3, true, 30);
    std::fs::write(r.join("train/ant/notes.txt"), "skipped").unwrap();
    save_png(&r.join("test/zebra/c.png"), 4, 3, true, 40);

    let d = opts(Format::Folder, r).build().unwrap();
    assert_eq!(d.meta.classes, vec!["ant", "zebra"]);
    assert_eq!(d.image_shape(), [1, 3, 4], "all grey → 1 channel");
    assert_eq!(d.train.labels, vec![0, 1, 1]);
    assert_eq!(d.train.image(1)[0], 20, "files in sorted name order");
    assert_eq!(d.test.labels, vec![1]);

    // One colour image makes the whole dataset RGB.
    save_png(&r.join("test/ant/d.png"), 4, 3, false, 50);
    let d = opts(Format::Folder, r).build().unwrap();
    assert_eq!(d.image_shape(), [3, 3, 4]);
    assert_eq!(d.test.image(0)[..12], [50; 12], "red plane first (C, H, W)");
    assert_eq!(d.test.image(0)[24..], [255; 12]);
    assert_eq!(d.train.image(0), &[30; 36][..], "grey replicated into RGB");
    let forced = DatasetOptions { channels: 1, ..opts(Format::Folder, r) }.build().unwrap();
    assert_eq!(forced.image_shape(), [1, 3, 4]);
}

#[test]
fn folder_errors_name_the_file() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    save_png(&r.join("train/a/1.png"), 4, 3, true, 0);
    save_png(&r.join("train/b/1.png"), 5, 3, true, 0);
    std::fs::create_dir_all(r.join("test")).unwrap();
    let e = build_err(&opts(Format::Folder, r));
    assert!(e.contains("train/b/1.png: image is 5×3 (width×height), but") && e.contains("train/a/1.png is 4×3"), "{e}");

    save_png(&r.join("train/b/1.png"), 4, 3, true, 0);
    save_png(&r.join("test/c/1.png"), 4, 3, true, 0);
    let e = build_err(&opts(Format::Folder, r));
    assert!(e.contains("test/c: class folder `c` does not exist under train/"), "{e}");

    std::fs::remove_dir_all(r.join("test/c")).unwrap();
    std::fs::write(r.join("train/b/2.jpg"), b"not a jpeg").unwrap();
    let e = build_err(&opts(Format::Folder, r));
    assert!(e.contains("train/b/2.jpg: cannot decode image"), "{e}");

    let e = build_err(&opts(Format::Folder, &r.join("nowhere")));
    assert!(e.contains("nowhere: not a directory"), "{e}");
}

#[test]
fn embedded_default_is_ten_classes_of_1000_and_200() {
    let d = DatasetOptions::default().build().unwrap();
    assert_eq!(d.meta.classes, FASHION_MNIST_CLASSES.to_vec());
    assert_eq!(d.image_shape(), [1, 28, 28]);
    assert_eq!(d.meta.train_class_counts, vec![1000; 10]);
    assert_eq!(d.meta.test_class_counts, vec![200; 10]);
    assert_eq!((d.train.len(), d.test.len()), (10_000, 2_000));
    assert_eq!(d.train.images.len(), 10_000 * 784);
}

#[test]
fn stage_writes_files_that_load_back_and_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let params = [("train_per_class", Value::Int(20)), ("test_per_class", Value::Int(5))];
    run_stage(&DatasetKind, &params, &[], &a).unwrap();
    run_stage(&DatasetKind, &params, &[], &b).unwrap();
    for f in ["train.safetensors", "test.safetensors", "dataset.json", "metrics.json"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs between runs");
    }
    let d = Dataset::load(&a).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (200, 50));
    assert_eq!(d.meta.format, "embedded");
    assert_eq!(d, DatasetOptions { train_per_class: 20, test_per_class: 5, ..Default::default() }.build().unwrap());
    let metrics: serde_json::Value = serde_json::from_slice(&std::fs::read(a.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["train_count"], 200);

    // A corrupted output is reported with its file name, not a panic.
    std::fs::write(a.join("test.safetensors"), b"garbage").unwrap();
    let e = Dataset::load(&a).unwrap_err().to_string();
    assert!(e.contains("test.safetensors: not a valid safetensors file"), "{e}");
}

#[test]
fn stage_parameter_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let e = run_stage(&DatasetKind, &[("format", s("idx"))], &[], tmp.path()).unwrap_err().to_string();
    assert!(e.contains("parameter `path` is required with format = \"idx\""), "{e}");
    let e = run_stage(&DatasetKind, &[("path", s("/data"))], &[], tmp.path()).unwrap_err().to_string();
    assert!(e.contains("not used with format = \"embedded\""), "{e}");
    let e = run_stage(&DatasetKind, &[("train_per_class", Value::Int(-1))], &[], tmp.path()).unwrap_err().to_string();
    assert!(e.contains("`train_per_class` must be ≥ 0"), "{e}");
}
