"""PCA fit time: scikit-learn's IncrementalPCA (the thesis's tool) vs `wspace bench pca`, same matrices.

Never run in CI. From the repository root, after a zoo exists (e.g. the quick pipeline's):

    ZOO=$(cargo run --release -- show pipelines/quick.toml zoo --format json | jq -r .output)   # or any zoo dir
    /work/pyref/bin/python scripts/weights/bench_pca.py --zoo "$ZOO" --components 8 \
        --wspace target/release/wspace

The matrices are the `pca` stage's: per named parameter, the train-split models' tensors of the chosen
checkpoint (status ok), one row per model. Algorithm 3.1 decides which parameters get a PCA (total
variance ≥ 1e-8 and more than 4 elements); only those are fitted, in both tools, with
k = min(components, n − 1, d) components. IncrementalPCA is fed as the thesis's code feeds it
(`partial_fit` on batches of 64 models, a last batch smaller than k skipped); scikit-learn's exact
`PCA(svd_solver="full")` is timed too, for reference. Loading is not timed. Times are the best of
`--repeats` runs of the whole per-parameter loop. With `--wspace`, the Rust binary is run in the same
session (`wspace bench pca --zoo … --format json`, before the scikit-learn fits) and the ratio printed.
"""
import argparse
import csv
import json
import pathlib
import subprocess
import time

import numpy as np
import sklearn
from safetensors.numpy import load_file
from sklearn.decomposition import PCA, IncrementalPCA


def matrices(zoo, checkpoint):
    meta = json.loads((zoo / "zoo.json").read_text())
    rows = [r for r in csv.DictReader(open(zoo / "zoo.csv")) if r["split"] == "train" and r["status"] == "ok" and r["checkpoint"] == checkpoint]
    models = [load_file(str(zoo / r["file"])) for r in rows]
    out = []
    for p in meta["parameters"]:
        x = np.stack([m[p["name"]].reshape(-1).astype(np.float64) for m in models])
        out.append((p["name"], x))
    return out


def fit_all(mats, k, incremental):
    kept = 0.0
    for name, x in mats:
        n, d = x.shape
        if x.var(axis=0, ddof=1).sum() < 1e-8 or d <= 4:
            continue
        kk = min(k, n - 1, d)
        if incremental:
            ipca = IncrementalPCA(n_components=kk)
            for s in range(0, n, 64):
                b = x[s : s + 64]
                if b.shape[0] >= max(kk, 2):
                    ipca.partial_fit(b)
            kept += ipca.explained_variance_.sum()
        else:
            kept += PCA(n_components=kk, svd_solver="full").fit(x).explained_variance_.sum()
    return kept


def best_time(f, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", required=True, type=pathlib.Path)
    ap.add_argument("--components", type=int, default=8)
    ap.add_argument("--checkpoint", default="final")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--wspace", help="path of the wspace binary, to time it in the same session")
    a = ap.parse_args()
    mats = matrices(a.zoo, a.checkpoint)
    n = mats[0][1].shape[0]
    print(f"sklearn {sklearn.__version__}, numpy {np.__version__}; {n} train models, {len(mats)} tensors, k = {a.components}")
    r = None
    if a.wspace:
        # wspace first: numpy's OpenBLAS threads keep spinning for a while after the scikit-learn fits
        # and, on a small machine, would slow down a process started right after them.
        cp = {"final": "final", "early": "early"}[a.checkpoint]
        out = subprocess.run(
            [a.wspace, "bench", "pca", "--zoo", str(a.zoo), "--components", str(a.components), "--checkpoints", cp,
             "--repeats", str(a.repeats), "--format", "json"],
            check=True, capture_output=True, text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
    t_inc = best_time(lambda: fit_all(mats, a.components, True), a.repeats)
    t_pca = best_time(lambda: fit_all(mats, a.components, False), a.repeats)
    print(f"IncrementalPCA (batches of 64): {t_inc:.4f} s  (kept variance {fit_all(mats, a.components, True):.6g})")
    print(f"PCA(svd_solver='full'):         {t_pca:.4f} s  (kept variance {fit_all(mats, a.components, False):.6g})")
    if r:
        print(f"wspace bench pca (best):        {r['best_s']:.4f} s  → {t_inc / r['best_s']:.1f}x faster than IncrementalPCA, "
              f"{t_pca / r['best_s']:.1f}x than PCA")

if __name__ == "__main__":
    main()
