//! Principal component analysis of one dense matrix, defined as scikit-learn's `PCA` defines it, and
//! computed through whichever Gram matrix is smaller.
//!
//! For `X` (`n` samples × `d` features), `μ` = the column means, `Xc = X − μ`:
//! - `n ≤ d`: eigen-decompose the `n × n` matrix `G = Xc Xcᵀ = U Λ Uᵀ`; component `i` is
//!   `vᵢ = Xcᵀ uᵢ / √λᵢ` (the right singular vector of `Xc` for the singular value `√λᵢ`).
//! - `n > d`: eigen-decompose the `d × d` scatter matrix `S = Xcᵀ Xc = V Λ Vᵀ`; `vᵢ` is the eigenvector.
//!
//! Either way the explained variance of component `i` is `λᵢ / (n − 1)` and the total variance is
//! `trace / (n − 1)` (scikit-learn's `explained_variance_`, with `ddof = 1`); the ratio is their
//! quotient. Eigenvalues are sorted in decreasing order. Signs follow scikit-learn ≥ 1.5
//! (`svd_flip(u_based_decision=False)`): the entry of largest magnitude of each component is positive.
//!
//! The number of components is capped at the rank bound `min(n − 1, d)`, and components whose
//! eigenvalue is below `1e-12 ×` the largest are dropped (their direction is numerically arbitrary).
//! All arithmetic is `f64`.

use nalgebra::{DMatrix, SymmetricEigen};

/// How many components to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ComponentRule {
    /// Exactly this many (capped at the rank bound).
    Count(usize),
    /// The fewest components whose explained-variance ratios add up to at least this fraction (0, 1].
    Fraction(f64),
}

/// A fitted PCA.
#[derive(Debug, Clone, PartialEq)]
pub struct PcaFit {
    /// Column means, `d`.
    pub mean: Vec<f64>,
    /// `k × d`, row-major; rows are orthonormal.
    pub components: Vec<f64>,
    /// `k`, decreasing.
    pub explained_variance: Vec<f64>,
    /// Sum of the per-column variances (`ddof = 1`).
    pub total_variance: f64,
    pub dim: usize,
}

impl PcaFit {
    pub fn k(&self) -> usize {
        self.explained_variance.len()
    }

    /// `explained_variance / total_variance` (zeros when the total is zero).
    pub fn explained_variance_ratio(&self) -> Vec<f64> {
        self.explained_variance.iter().map(|v| if self.total_variance > 0.0 { v / self.total_variance } else { 0.0 }).collect()
    }
}

/// Column means and the total variance (`ddof = 1`) of `x` (`n × d`, row-major).
pub fn mean_and_total_variance(x: &[f64], n: usize, d: usize) -> (Vec<f64>, f64) {
    let mut mean = vec![0.0; d];
    for row in x.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
    let mut total = 0.0;
    for row in x.chunks_exact(d) {
        for (m, v) in mean.iter().zip(row) {
            total += (v - m) * (v - m);
        }
    }
    (mean, if n > 1 { total / (n - 1) as f64 } else { 0.0 })
}

/// Fits a PCA to `x` (`n × d`, row-major). `n ≥ 2` gives at least one component unless `x` is constant.
pub fn fit(x: &[f64], n: usize, d: usize, rule: ComponentRule) -> PcaFit {
    assert_eq!(x.len(), n * d, "x must be n × d");
    let (mean, total_variance) = mean_and_total_variance(x, n, d);
    let centred = DMatrix::from_fn(n, d, |i, j| x[i * d + j] - mean[j]);
    let denom = (n.max(2) - 1) as f64;

    // Eigenvalues, largest first, and the eigenvectors of the decomposed matrix (n × n or d × d).
    let gram_route = n <= d;
    let centred_t = centred.transpose();
    let eig = if gram_route { SymmetricEigen::new(&centred * &centred_t) } else { SymmetricEigen::new(&centred_t * &centred) };
    let order = descending(eig.eigenvalues.as_slice());
    let values: Vec<f64> = order.iter().map(|&i| eig.eigenvalues[i].max(0.0)).collect();

    let largest = values.first().copied().unwrap_or(0.0);
    let usable = values.iter().take_while(|&&l| l > 0.0 && l > largest * 1e-12).count().min(n.saturating_sub(1)).min(d);
    let k = match rule {
        ComponentRule::Count(k) => k.min(usable),
        ComponentRule::Fraction(f) => {
            let total = total_variance * denom;
            let mut acc = 0.0;
            let mut k = 0;
            while k < usable && (total <= 0.0 || acc / total < f) {
                acc += values[k];
                k += 1;
            }
            k
        }
    };

    // The k directions in feature space (d × k): eigenvectors, or vᵢ = Xcᵀ uᵢ / √λᵢ on the Gram route.
    let rows = eig.eigenvectors.nrows();
    let top = DMatrix::from_fn(rows, k, |r, c| eig.eigenvectors[(r, order[c])]);
    let vectors = if gram_route {
        let mut v = &centred_t * &top;
        for (c, &l) in values[..k].iter().enumerate() {
            v.column_mut(c).scale_mut(1.0 / l.sqrt());
        }
        v
    } else {
        top
    };

    let mut components = Vec::with_capacity(k * d);
    for c in 0..k {
        let col = vectors.column(c);
        // Unit length exactly (the Gram route divides by √λ, which leaves rounding), then the sign.
        let norm = col.norm();
        let (imax, _) =
            col.iter().enumerate().fold((0, 0.0f64), |(bi, bv), (i, v)| if v.abs() > bv { (i, v.abs()) } else { (bi, bv) });
        let sign = if col[imax] < 0.0 { -1.0 } else { 1.0 };
        components.extend(col.iter().map(|v| sign * v / norm));
    }
    let explained_variance = values[..k].iter().map(|l| l / denom).collect();
    PcaFit { mean, components, explained_variance, total_variance, dim: d }
}

/// Indices of `v` sorted by decreasing value (ties by index, so the order is deterministic).
fn descending(v: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx
}

/// `(rows − mean) · componentsᵀ` for `m` rows of `rows` (`m × d`): the `m × k` coefficients, row-major.
pub fn project(rows: &[f64], m: usize, mean: &[f64], components: &[f64], k: usize) -> Vec<f64> {
    let d = mean.len();
    if k == 0 || m == 0 {
        return Vec::new();
    }
    let x = DMatrix::from_fn(m, d, |i, j| rows[i * d + j] - mean[j]);
    let v = DMatrix::from_row_slice(k, d, components);
    let c = x * v.transpose();
    let mut out = Vec::with_capacity(m * k);
    for i in 0..m {
        out.extend(c.row(i).iter());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(n: usize, d: usize) -> Vec<f64> {
        // A deterministic, anisotropic matrix: a few strong directions plus small structured noise.
        (0..n * d)
            .map(|t| {
                let (i, j) = ((t / d) as f64, (t % d) as f64);
                3.0 * (0.7 * i + 0.3 * j).sin() + (1.3 * i * j + 0.1).cos() + 0.1 * ((i + 1.0) * (j + 2.0)).sqrt()
            })
            .collect()
    }

    #[test]
    fn gram_and_scatter_routes_agree() {
        // Same data, once as 12 × 40 (Gram route) and the scatter route on its first 8 columns twice.
        let (n, d) = (12, 40);
        let x = matrix(n, d);
        let a = fit(&x, n, d, ComponentRule::Count(5));
        // Transposed problem size: append rows so n > d is exercised on a 30 × 6 matrix.
        let y = matrix(30, 6);
        let b = fit(&y, 30, 6, ComponentRule::Count(6));
        for f in [&a, &b] {
            let k = f.k();
            for p in 0..k {
                for q in 0..k {
                    let dot: f64 = (0..f.dim).map(|j| f.components[p * f.dim + j] * f.components[q * f.dim + j]).sum();
                    let want = if p == q { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-9, "orthonormal {p} {q}: {dot}");
                }
            }
            let ratio: f64 = f.explained_variance_ratio().iter().sum();
            assert!(ratio <= 1.0 + 1e-12);
            assert!(f.explained_variance.windows(2).all(|w| w[0] >= w[1]));
        }
        // All 6 components of a 6-column matrix explain everything.
        assert!((b.explained_variance_ratio().iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn rank_caps_the_component_count_and_fraction_picks_the_fewest() {
        let (n, d) = (5, 40);
        let x = matrix(n, d);
        assert_eq!(fit(&x, n, d, ComponentRule::Count(64)).k(), 4, "centred rank is n − 1");
        let full = fit(&x, n, d, ComponentRule::Count(4));
        let ratios = full.explained_variance_ratio();
        let k = fit(&x, n, d, ComponentRule::Fraction(ratios[0] + 1e-9)).k();
        assert_eq!(k, 2);
        assert_eq!(fit(&x, n, d, ComponentRule::Fraction(ratios[0] * 0.5)).k(), 1);
        let constant = vec![1.5; 6 * 3];
        assert_eq!(fit(&constant, 6, 3, ComponentRule::Count(2)).k(), 0);
    }

    #[test]
    fn projection_reconstructs_with_all_components() {
        let (n, d) = (8, 10);
        let x = matrix(n, d);
        let f = fit(&x, n, d, ComponentRule::Count(7));
        let c = project(&x, n, &f.mean, &f.components, f.k());
        for i in 0..n {
            for j in 0..d {
                let back: f64 = f.mean[j] + (0..f.k()).map(|p| c[i * f.k() + p] * f.components[p * d + j]).sum::<f64>();
                assert!((back - x[i * d + j]).abs() < 1e-9, "{i} {j}");
            }
        }
    }
}
