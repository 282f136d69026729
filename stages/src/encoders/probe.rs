//! "Does the encoder help?": nearest-class-mean (NCM) classification and class-by-class cosine
//! similarity, for any feature vectors (encoder features or raw pixels).
//!
//! NCM: `μ_k` = the mean of the reference vectors of class `k`; a query `f` is assigned
//! `argmin_k ‖f − μ_k‖²` (Euclidean) or `argmax_k cos(f, μ_k)` (cosine); ties go to the lower class.
//! Accuracy = the fraction of queries assigned their own class. With `K` classes chance is `1/K`.

/// The mean vector of each class: `vectors[i]` belongs to class `labels[i]`; classes without vectors
/// get a zero mean. Returns `classes` vectors of the common length.
pub fn class_means(vectors: &[Vec<f32>], labels: &[usize], classes: usize) -> Vec<Vec<f32>> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut sums = vec![vec![0f64; dim]; classes];
    let mut counts = vec![0usize; classes];
    for (v, &l) in vectors.iter().zip(labels) {
        counts[l] += 1;
        for (s, &x) in sums[l].iter_mut().zip(v) {
            *s += x as f64;
        }
    }
    sums.into_iter().zip(counts).map(|(s, n)| s.into_iter().map(|x| (x / n.max(1) as f64) as f32).collect()).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let n = (dot(a, a) * dot(b, b)).sqrt();
    if n > 0.0 {
        dot(a, b) / n
    } else {
        0.0
    }
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum()
}

/// NCM accuracies `(euclidean, cosine)` of `queries` (true classes `labels`) against `means`.
pub fn ncm_accuracy(means: &[Vec<f32>], queries: &[Vec<f32>], labels: &[usize]) -> (f64, f64) {
    if queries.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let argbest = |score: &dyn Fn(&[f32]) -> f64| -> usize {
        let mut best = (0, f64::NEG_INFINITY);
        for (k, m) in means.iter().enumerate() {
            let s = score(m);
            if s > best.1 {
                best = (k, s);
            }
        }
        best.0
    };
    let (mut euc, mut cos) = (0usize, 0usize);
    for (q, &l) in queries.iter().zip(labels) {
        euc += usize::from(argbest(&|m| -sq_dist(q, m)) == l);
        cos += usize::from(argbest(&|m| cosine(q, m)) == l);
    }
    let n = queries.len() as f64;
    (euc as f64 / n, cos as f64 / n)
}

/// The `K × K` cosine similarity matrix of `vectors`.
pub fn cosine_matrix(vectors: &[Vec<f32>]) -> Vec<Vec<f64>> {
    vectors.iter().map(|a| vectors.iter().map(|b| cosine(a, b)).collect()).collect()
}

/// The mean of the off-diagonal entries of a square matrix (NaN below 2 × 2).
pub fn mean_off_diagonal(m: &[Vec<f64>]) -> f64 {
    let k = m.len();
    let sum: f64 = (0..k).flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| m[i][j]).sum();
    sum / (k * k.saturating_sub(1)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ncm_on_separable_points() {
        let refs = vec![vec![0.0, 0.0], vec![0.2, 0.0], vec![10.0, 0.0], vec![10.0, 0.4]];
        let means = class_means(&refs, &[0, 0, 1, 1], 2);
        assert_eq!(means, vec![vec![0.1, 0.0], vec![10.0, 0.2]]);
        let queries = vec![vec![1.0, 0.0], vec![9.0, 1.0], vec![4.0, 0.0]];
        // Euclidean: 1.0 → class 0, 9.0 → class 1, 4.0 → class 0 (closer to 0.1 than to 10); 2/3 right.
        // Cosine: (1, 0) and (4, 0) have cos = 1 with μ0 (0.9998 with μ1) → class 0; (9, 1): 0.9959 with μ1
        // vs 0.9939 with μ0 → class 1; 2/3 right.
        let (euc, cos) = ncm_accuracy(&means, &queries, &[0, 1, 1]);
        // Counts over 3 in f64: 2/3 to within 1 ulp (1.1e-16); 1e-12 only tolerates the order of division.
        assert!((euc - 2.0 / 3.0).abs() < 1e-12);
        assert!((cos - 2.0 / 3.0).abs() < 1e-12, "{cos}");
    }

    #[test]
    fn cosine_matrix_is_symmetric_with_unit_diagonal() {
        let m = cosine_matrix(&[vec![1.0, 0.0], vec![1.0, 1.0], vec![0.0, 2.0]]);
        // f64 dot products of 2 terms, a square root and a division: a few ulps (≤ 1e-15) of values ≤ 1;
        // 1e-12 is a thousandfold margin; symmetry is one product order apart (≤ 1e-15).
        assert!((m[0][1] - 0.5f64.sqrt()).abs() < 1e-12 && (m[1][0] - m[0][1]).abs() < 1e-15);
        assert!((m[2][2] - 1.0).abs() < 1e-12 && m[0][2].abs() < 1e-12);
        assert!((mean_off_diagonal(&m) - (2.0 * 0.5f64.sqrt()) / 3.0).abs() < 1e-12);
    }
}
