//! `wspace bench zoo` reports training throughput with the JSON fields scripts rely on.

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
    assert_eq!(String::from_utf8_lossy(&bad.stderr), "error: --models 0: expected a positive integer\n");
}
