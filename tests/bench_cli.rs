//! `wspace bench zoo` and `wspace bench align` report training throughput with the JSON fields scripts
//! rely on.

mod common;

#[test]
fn bench_zoo_prints_images_per_second() {
    let p = common::Project::new();
    let out = p.wspace(&[
        "bench",
        "zoo",
        "--arch",
        "cnn-s",
        "--models",
        "2",
        "--epochs",
        "1",
        "--batch",
        "64",
        "--threads",
        "1",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"], 2.0 * 3000.0, "2 models × 1 epoch × the 3,000 images of classes 0-2");
    assert!(v["images_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(v["images_per_second_per_thread"], v["images_per_second"]);
    let bad = p.wspace(&["bench", "zoo", "--models", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.starts_with("error: invalid value '0' for '--models <MODELS>': expected a positive integer"), "{err}");
    // An unknown output format is an error, not text.
    let xml = p.wspace(&["bench", "zoo", "--format", "xml"]);
    assert_eq!(xml.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&xml.stderr).contains("invalid value 'xml' for '--format <FORMAT>'"));
    // --help is the benchmark's usage, and a success.
    let help = p.wspace(&["bench", "zoo", "--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Usage: wspace bench zoo") && text.contains("--threads <THREADS>"), "{text}");
}

#[test]
fn bench_align_times_the_training_loop() {
    let p = common::Project::new();
    let args = ["bench", "align", "--pairs", "8", "--val", "4", "--epochs", "2", "--batch", "4", "--dataset-dim", "12"];
    let out = p.wspace(
        &[&args[..], &["--results-dim", "8", "--hidden", "8", "--latent-dim", "4", "--repeats", "1", "--format", "json"]]
            .concat(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (median, per_second) = (v["median_s"].as_f64().unwrap(), v["pairs_per_s"].as_f64().unwrap());
    assert!(median > 0.0);
    assert!((per_second - 8.0 * 2.0 / median).abs() <= 1e-9 * per_second, "8 train pairs × 2 epochs per median run");
    assert!(v["threads"].as_u64().unwrap() >= 1);
    let bad = p.wspace(&["bench", "align", "--epochs", "0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--epochs <EPOCHS>"));
}
