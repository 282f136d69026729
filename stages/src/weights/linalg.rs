//! Principal component analysis of one dense matrix, defined as scikit-learn's `PCA` defines it, and
//! computed through whichever Gram matrix is smaller.
//!
//! For `X` (`n` samples × `d` features), `μ` = the column means, `Xc = X − μ`:
//! - `n ≤ d`: eigen-decompose the `n × n` matrix `G = Xc Xcᵀ = U Λ Uᵀ`; component `i` is
//!   `vᵢ = Xcᵀ uᵢ / √λᵢ` (the right singular vector of `Xc` for the singular value `√λᵢ`), and the
//!   fitted rows' coefficients on it are `Xc vᵢ = G uᵢ / √λᵢ = √λᵢ uᵢ`, with no second product.
//! - `n > d`: eigen-decompose the `d × d` scatter matrix `S = Xcᵀ Xc = V Λ Vᵀ`; `vᵢ` is the eigenvector
//!   and the fitted rows' coefficients are `Xc vᵢ`.
//!
//! Either way the explained variance of component `i` is `λᵢ / (n − 1)` and the total variance is
//! `trace / (n − 1)` (scikit-learn's `explained_variance_`, with `ddof = 1`); the ratio is their
//! quotient. Eigenvalues are sorted in decreasing order. Signs follow scikit-learn ≥ 1.5
//! (`svd_flip(u_based_decision=False)`): the entry of largest magnitude of each component is positive.
//!
//! The number of components is capped at the rank bound `min(n − 1, d)`, and components whose
//! eigenvalue is below `1e-12 ×` the largest are dropped (their direction is numerically arbitrary).
//! All arithmetic is `f64`. The row-major `n × d` buffer of `Xc`, read column-major, is `Xcᵀ`: the
//! products take it as a view, and `Xc` is copied once.

use nalgebra::{DMatrixView, SymmetricEigen};

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
    /// The fitted rows' coefficients `(x − mean) · componentsᵀ`, `n × k`, row-major.
    pub coefficients: Vec<f64>,
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

/// `Xc = X − μ` for `X` (`n × d`, row-major), with the column means `μ` and the total variance (`ddof = 1`).
#[derive(Debug, Clone, PartialEq)]
pub struct Centred {
    /// `Xc`, `n × d`, row-major.
    pub rows: Vec<f64>,
    pub n: usize,
    pub d: usize,
    pub mean: Vec<f64>,
    pub total_variance: f64,
}

impl Centred {
    /// Centres `x` (`n × d`, row-major) in place.
    pub fn new(mut x: Vec<f64>, n: usize, d: usize) -> Self {
        assert_eq!(x.len(), n * d, "x must be n × d");
        let mut mean = vec![0.0; d];
        for row in x.chunks_exact(d) {
            mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        let mut total = 0.0;
        for row in x.chunks_exact_mut(d) {
            for (v, m) in row.iter_mut().zip(&mean) {
                *v -= m;
                total += *v * *v;
            }
        }
        let total_variance = if n > 1 { total / (n - 1) as f64 } else { 0.0 };
        Centred { rows: x, n, d, mean, total_variance }
    }

    /// Fits a PCA. `n ≥ 2` gives at least one component unless `X` is constant.
    pub fn fit(self, rule: ComponentRule) -> PcaFit {
        let (n, d) = (self.n, self.d);
        let denom = (n.max(2) - 1) as f64;
        // The row-major buffer read column-major is `Xcᵀ` (`d × n`). `Xc` is a copy, not a row-major view:
        // nalgebra 0.35 runs past such a view on the left of a small product (dimforge/nalgebra#1616).
        let xct = DMatrixView::from_slice(&self.rows, d, n);
        let xc = xct.transpose();

        // Eigenvalues, largest first, and the eigenvectors of the decomposed matrix (n × n or d × d).
        let gram_route = n <= d;
        let eig = SymmetricEigen::new(if gram_route { &xc * xct } else { xct * &xc });
        let order = descending(eig.eigenvalues.as_slice());
        let values: Vec<f64> = order.iter().map(|&i| eig.eigenvalues[i].max(0.0)).collect();

        let largest = values.first().copied().unwrap_or(0.0);
        let usable = values.iter().take_while(|&&l| l > 0.0 && l > largest * 1e-12).count().min(n.saturating_sub(1)).min(d);
        let k = match rule {
            ComponentRule::Count(k) => k.min(usable),
            ComponentRule::Fraction(f) => {
                let total = self.total_variance * denom;
                let mut acc = 0.0;
                let mut k = 0;
                while k < usable && (total <= 0.0 || acc / total < f) {
                    acc += values[k];
                    k += 1;
                }
                k
            }
        };

        // The k directions in feature space (d × k) and the rows' coefficients on them (k × n).
        let top = eig.eigenvectors.select_columns(&order[..k]);
        let (mut vectors, mut coefficients) = if gram_route {
            let (mut inverse, mut scores) = (top.clone(), top.transpose());
            for (c, l) in values[..k].iter().enumerate() {
                inverse.column_mut(c).unscale_mut(l.sqrt());
                scores.row_mut(c).scale_mut(l.sqrt());
            }
            (xct * inverse, scores)
        } else {
            let scores = top.transpose() * xct;
            (top, scores)
        };
        for c in 0..k {
            // Unit length exactly (the Gram route divides by √λ, which leaves rounding), then the sign.
            let mut v = vectors.column_mut(c);
            let scale = if v[v.iamax()] < 0.0 { -1.0 } else { 1.0 } / v.norm();
            v.scale_mut(scale);
            coefficients.row_mut(c).scale_mut(scale);
        }
        PcaFit {
            mean: self.mean,
            components: vectors.data.into(),
            explained_variance: values[..k].iter().map(|l| l / denom).collect(),
            total_variance: self.total_variance,
            coefficients: coefficients.data.into(),
            dim: d,
        }
    }
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
    let centred: Vec<f64> = rows.chunks_exact(d).flat_map(|r| r.iter().zip(mean).map(|(v, m)| v - m)).collect();
    // Both buffers read column-major: `Vᵀ` (`d × k`) and the centred rows transposed (`d × m`); the
    // product `V Xcᵀ` is `k × m` column-major, i.e. `m × k` row-major.
    let v = DMatrixView::from_slice(components, d, k).transpose();
    (v * DMatrixView::from_slice(&centred, d, m)).data.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fit(x: &[f64], n: usize, d: usize, rule: ComponentRule) -> PcaFit {
        Centred::new(x.to_vec(), n, d).fit(rule)
    }

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
        for (f, x, n) in [(&a, &x, n), (&b, &y, 30)] {
            let k = f.k();
            // The rows' coefficients taken from the decomposition are their projections. f64 (u = 1.1e-16)
            // throughout: coefficients ≤ ~30 from sums of ≤ 40 products, eigenvectors orthonormal to ~d·u
            // times the condition of the smallest kept eigenvalue gap; 1e-9 leaves ≥ 1e3 over n·d·u·|x|².
            assert_eq!(f.coefficients.len(), n * k);
            for (c, p) in f.coefficients.iter().zip(project(x, n, &f.mean, &f.components, k)) {
                assert!((c - p).abs() < 1e-9, "coefficient {c} vs projection {p}");
            }
            for p in 0..k {
                for q in 0..k {
                    let dot: f64 = (0..f.dim).map(|j| f.components[p * f.dim + j] * f.components[q * f.dim + j]).sum();
                    let want = if p == q { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-9, "orthonormal {p} {q}: {dot}");
                }
            }
            let ratio: f64 = f.explained_variance_ratio().iter().sum();
            assert!(ratio <= 1.0 + 1e-12); // a sum of ≤ 6 ratios ≤ 1: ≤ 6 ulps above 1 (6.7e-16)
            assert!(f.explained_variance.windows(2).all(|w| w[0] >= w[1]));
        }
        // All 6 components of a 6-column matrix explain everything.
        // Eigenvalues sum to the trace up to the eigensolver's ~d·u·‖S‖ (and the trace's own sum): ≪ 1e-9.
        assert!((b.explained_variance_ratio().iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn rank_caps_the_component_count_and_fraction_picks_the_fewest() {
        let (n, d) = (5, 40);
        let x = matrix(n, d);
        assert_eq!(fit(&x, n, d, ComponentRule::Count(64)).k(), 4, "centred rank is n − 1");
        let full = fit(&x, n, d, ComponentRule::Count(4));
        let ratios = full.explained_variance_ratio();
        let k = fit(&x, n, d, ComponentRule::Fraction(ratios[0] + 1e-9)).k(); // just above: not a tolerance
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
                // Rank-complete reconstruction in f64: ~(k + d)·u·|x| (|x| ≤ 5) ≈ 1e-14; 1e-9 is a wide margin
                // that a missing component (error ~|x|) can never meet.
                assert!((back - x[i * d + j]).abs() < 1e-9, "{i} {j}");
            }
        }
    }
}
