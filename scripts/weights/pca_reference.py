"""Writes stages/tests/fixtures/pca/reference.json: scikit-learn PCA on two small deterministic matrices.

Run from the repository root (never in CI):
    /work/pyref/bin/python scripts/weights/pca_reference.py

The Rust test `weights::pca_reference_tests` fits our PCA (stages/src/weights/linalg.rs) on the same
matrices (stored in the fixture as values, so the formula below is documentation, not a dependency) and
compares components (up to sign) and explained-variance ratios within 1e-4 relative.

Matrices: x[i, j] = 3 sin(0.7 i + 0.3 j) + cos(1.3 i j + 0.1) + 0.1 sqrt((i + 1)(j + 2)) + 0.05 * r[i, j],
with r ~ N(0, 1) from numpy's default_rng(seed): "wide" 12 models x 40 elements (the Gram route,
n <= d) with seed 1, and "tall" 30 x 6 (the scatter route, n > d) with seed 2.
"""
import json
import pathlib

import numpy as np
import sklearn
from sklearn.decomposition import PCA


def matrix(n, d, seed):
    i, j = np.meshgrid(np.arange(n, dtype=np.float64), np.arange(d, dtype=np.float64), indexing="ij")
    r = np.random.default_rng(seed).standard_normal((n, d))
    return 3 * np.sin(0.7 * i + 0.3 * j) + np.cos(1.3 * i * j + 0.1) + 0.1 * np.sqrt((i + 1) * (j + 2)) + 0.05 * r


cases = {}
for name, (n, d, k, seed) in {"wide": (12, 40, 5, 1), "tall": (30, 6, 4, 2)}.items():
    x = matrix(n, d, seed)
    pca = PCA(n_components=k, svd_solver="full").fit(x)
    cases[name] = {
        "n": n,
        "d": d,
        "k": k,
        "x": x.ravel().tolist(),
        "mean": pca.mean_.tolist(),
        "components": pca.components_.ravel().tolist(),
        "explained_variance": pca.explained_variance_.tolist(),
        "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
    }

out = pathlib.Path("stages/tests/fixtures/pca/reference.json")
out.parent.mkdir(parents=True, exist_ok=True)
doc = {
    "produced_by": "scripts/weights/pca_reference.py: sklearn.decomposition.PCA(n_components=k, svd_solver='full').fit(x)",
    "sklearn": sklearn.__version__,
    "numpy": np.__version__,
    "cases": cases,
}
out.write_text(json.dumps(doc, indent=1) + "\n")
print("wrote", out)
