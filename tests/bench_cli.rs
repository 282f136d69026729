//! `wspace bench zoo`, `align` and the learned stages' benchmarks report training throughput with the
//! JSON fields scripts (`benches/learned.sh`) rely on, and refuse impossible sizes.

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

/// Each learned stage's benchmark at a tiny size: rows per second is rows per run over the median, the
/// behavioural images are rows × probe images (none for the flow); impossible sizes are refused.
#[test]
fn learned_stage_benches_report_rows_and_images_per_second() {
    let p = common::Project::new();
    let tiny = ["--repeats", "1", "--format", "json"];
    let cases: [(&[&str], f64, f64); 6] = [
        (&["autoencoder", "--models", "4", "--val", "2", "--epochs", "2", "--probes", "4", "--components", "2"], 8.0, 4.0),
        (
            &["autoencoder", "--architecture", "transformer", "--models", "4", "--val", "2", "--epochs", "1", "--probes", "4"],
            4.0,
            4.0,
        ),
        (&["refine", "--models", "2", "--steps", "3", "--probes", "4"], 2.0, 3.0 * 4.0),
        (&["refine", "--codec", "mlp", "--models", "3", "--steps", "2", "--probes", "4", "--components", "2"], 3.0, 2.0 * 4.0),
        (&["generator", "--models", "4", "--val", "2", "--epochs", "2", "--probes", "8"], 8.0, 8.0),
        (&["flow", "--models", "2", "--val", "1", "--orders", "3", "--epochs", "2", "--tokens", "5", "--width", "4"], 12.0, 0.0),
    ];
    for (args, rows, images_per_row) in cases {
        let out = p.wspace(&[&["bench"], args, &tiny].concat());
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let median = v["median_s"].as_f64().unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(close(v["rows_per_s"].as_f64().unwrap(), rows / median), "{args:?}: {v}");
        assert!(close(v["images_per_s"].as_f64().unwrap(), rows * images_per_row / median), "{args:?}: {v}");
    }
    for (args, says) in [
        (&["flow", "--tokens", "2"][..], "invalid value '2' for '--tokens <TOKENS>'"),
        (&["flow", "--orders", "7"][..], "invalid value '7' for '--orders <ORDERS>'"),
        (
            &["generator", "--label-weight", "2"][..],
            "invalid value '2' for '--label-weight <LABEL_WEIGHT>': expected a number in [0, 1]",
        ),
        (&["refine", "--label-weight=-1"][..], "expected a number in [0, 1]"),
        (&["autoencoder", "--models", "1", "--val", "1", "--probes", "2"][..], "pca: needs at least 2 train-split models"),
        (&["autoencoder", "--batch", "0"][..], "invalid value '0' for '--batch <BATCH>'"),
        (&["flow", "--device", "tpu"][..], "invalid value 'tpu' for '--device <DEVICE>': expected one of: cpu, cuda"),
    ] {
        let out = p.wspace(&[&["bench"], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// `--device cuda` in a build without the `cuda` feature: every learned stage's benchmark refuses it
/// with how to build.
#[cfg(not(feature = "cuda"))]
#[test]
fn learned_stage_benches_refuse_cuda_without_the_feature() {
    let p = common::Project::new();
    for name in ["align", "autoencoder", "refine", "generator", "flow"] {
        let out = p.wspace(&["bench", name, "--device", "cuda"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid value 'cuda' for '--device <DEVICE>'") && err.contains("--features cuda"), "{name}: {err}");
    }
}
