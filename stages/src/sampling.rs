//! Seeded sampling: every random draw a stage makes (weight initialisation, recipes, batch orders,
//! noise) comes from a ChaCha8 stream through these functions, so a stage's output is a function of its
//! `seed` parameter alone.
//!
//! # Brief overview
//! | draw | function | bits taken from the stream |
//! | --- | --- | --- |
//! | U[0, 1) in f64 | [`uniform`] | one `next_u64`, top 53 bits |
//! | U[0, 1) in f32 | [`uniform_f32`] | one `next_u32`, top 24 bits |
//! | U[lo, hi) in f32 (PyTorch's default init) | [`uniform_in`] | as [`uniform_f32`] |
//! | N(0, 1) in f64 | [`normal`] | Box–Muller on two [`uniform`]s |
//! | N(0, 1) in f32 | [`normal_f32`] | Box–Muller on two [`uniform_f32`]s |
//! | integer in `0..n` | [`below`] (64-bit, rejection) and [`below_u32`] (32-bit, Lemire) | one word, redrawn when it falls in the biased zone |
//! | a permutation | [`shuffle`] (Fisher–Yates on [`below`]) and [`shuffle_u32`] (on [`below_u32`]) | one bounded draw per position |
//!
//! Every draw is exact: the uniforms are multiples of 2⁻⁵³ (2⁻²⁴) with every value equally likely, and
//! the bounded integers reject the top of the word's range that a plain modulo would over-weight. The
//! two widths exist because outputs already pinned to the byte use them (the zoo's batch order is
//! [`shuffle_u32`]; the `tasks` split, the autoencoder's and the aligner's batch orders are [`shuffle`]);
//! a new stage should take the 64-bit ones.

use rand_core::RngCore;

/// U[0, 1) with 53 random bits.
pub fn uniform(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// U[0, 1) with 24 random bits.
pub fn uniform_f32(rng: &mut impl RngCore) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// U[−bound, bound) (PyTorch's default `Linear` / `Conv` initialisation with bound 1/√fan_in).
pub fn uniform_in(rng: &mut impl RngCore, bound: f32) -> f32 {
    -bound + 2.0 * bound * uniform_f32(rng)
}

/// Box–Muller: one N(0, 1) value from `u1` ∈ (0, 1] and `u2` ∈ [0, 1). `ln` and `cos` come from
/// [`libm`], not the platform's libm, whose FMA and non-FMA code paths differ in the last bit.
fn box_muller(u1: f64, u2: f64) -> f64 {
    (-2.0 * libm::log(u1)).sqrt() * libm::cos(std::f64::consts::TAU * u2)
}

/// N(0, 1): Box–Muller on `1 − u` and `u'`, two 53-bit uniforms (one value per pair).
pub fn normal(rng: &mut impl RngCore) -> f64 {
    let u1 = 1.0 - uniform(rng);
    box_muller(u1, uniform(rng))
}

/// N(0, 1) in f32: Box–Muller on two 24-bit uniforms (`u1` floored at 1e-12, so a zero draw gives a
/// finite value).
pub fn normal_f32(rng: &mut impl RngCore) -> f32 {
    let u1 = (uniform_f32(rng) as f64).max(1e-12);
    box_muller(u1, uniform_f32(rng) as f64) as f32
}

/// A uniform integer in `0..n` (`n > 0`): a 64-bit word, redrawn while it lies in the last
/// `2⁶⁴ mod n` values (which a plain `% n` would over-weight).
pub fn below(rng: &mut impl RngCore, n: u64) -> u64 {
    assert!(n > 0, "below(0)");
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % n;
        }
    }
}

/// A uniform integer in `0..n` (`n > 0`) from 32-bit words: Lemire's multiply-shift with rejection.
pub fn below_u32(rng: &mut impl RngCore, n: u32) -> u32 {
    assert!(n > 0, "below_u32(0)");
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = rng.next_u32() as u64 * n as u64;
        if (m as u32) >= threshold {
            return (m >> 32) as u32;
        }
    }
}

/// Fisher–Yates from the back, position `i` swapped with `draw(i + 1)`.
fn fisher_yates<T>(items: &mut [T], mut draw: impl FnMut(usize) -> usize) {
    for i in (1..items.len()).rev() {
        let j = draw(i + 1);
        items.swap(i, j);
    }
}

/// A uniformly random permutation of `items` in place (Fisher–Yates on [`below`]).
pub fn shuffle<T>(items: &mut [T], rng: &mut impl RngCore) {
    fisher_yates(items, |n| below(rng, n as u64) as usize);
}

/// A uniformly random permutation of `items` in place (Fisher–Yates on [`below_u32`]); `items` must
/// have fewer than 2³² elements.
pub fn shuffle_u32<T>(items: &mut [T], rng: &mut impl RngCore) {
    fisher_yates(items, |n| below_u32(rng, n as u32) as usize);
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    use super::*;

    /// A stream that replays fixed words, to reach the rejection zones.
    struct Words(Vec<u64>);
    impl RngCore for Words {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0.remove(0)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for chunk in dest.chunks_mut(8) {
                let word = self.next_u64().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
        }
    }

    #[test]
    fn below_rejects_the_zone_a_modulo_would_over_weight() {
        // n = 3: the last 2^64 mod 3 = 1 word (u64::MAX) is rejected; u64::MAX % 3 would be 0.
        assert_eq!(below(&mut Words(vec![u64::MAX, 7]), 3), 1);
        assert_eq!(below(&mut Words(vec![u64::MAX - 1]), 3), (u64::MAX - 1) % 3);
        // 32-bit: n = 3, threshold = 2^32 mod 3 = 1; a word whose low product is 0 is redrawn.
        assert_eq!(below_u32(&mut Words(vec![0, u32::MAX as u64]), 3), 2);
    }

    #[test]
    fn bounded_draws_are_uniform() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut a, mut b) = ([0usize; 6], [0usize; 6]);
        for _ in 0..60_000 {
            a[below(&mut rng, 6) as usize] += 1;
            b[below_u32(&mut rng, 6) as usize] += 1;
        }
        // Expected 10,000 each, sd ≈ 91: ±500 is over 5 sd.
        assert!(a.iter().chain(&b).all(|&c| c.abs_diff(10_000) < 500), "{a:?} {b:?}");
    }

    #[test]
    fn shuffles_are_permutations_and_every_order_is_reached() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut seen = std::collections::BTreeMap::new();
        for round in 0..6_000 {
            let mut v = [0, 1, 2];
            if round % 2 == 0 {
                shuffle(&mut v, &mut rng)
            } else {
                shuffle_u32(&mut v, &mut rng)
            }
            *seen.entry(v).or_insert(0usize) += 1;
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert!(seen.values().all(|&c| c.abs_diff(1_000) < 200), "{seen:?}");
    }

    #[test]
    fn uniforms_and_normals_have_the_right_moments() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 100_000;
        let u: Vec<f64> = (0..n).map(|_| uniform(&mut rng)).collect();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        assert!((u.iter().sum::<f64>() / n as f64 - 0.5).abs() < 0.005);
        for z in [(0..n).map(|_| normal(&mut rng)).collect::<Vec<f64>>(), (0..n).map(|_| normal_f32(&mut rng) as f64).collect()] {
            let mean = z.iter().sum::<f64>() / n as f64;
            let var = z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            assert!(mean.abs() < 0.015 && (var - 1.0).abs() < 0.02, "{mean} {var}");
        }
        let w: Vec<f32> = (0..n).map(|_| uniform_in(&mut rng, 0.5)).collect();
        assert!(w.iter().all(|&x| (-0.5..0.5).contains(&x)));
    }

    #[test]
    fn draws_are_pinned_to_the_stream() {
        // The outputs of the zoo, tasks, autoencoder and align stages depend on these exact values.
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut v: Vec<u32> = (0..8).collect();
        shuffle(&mut v, &mut rng);
        let mut w: Vec<u32> = (0..8).collect();
        shuffle_u32(&mut w, &mut rng);
        let mut again = ChaCha8Rng::seed_from_u64(42);
        let mut modulo: Vec<u32> = (0..8).collect();
        for i in (1..8).rev() {
            // What the autoencoder and align stages drew before: equal but for a 2⁻⁶⁰ chance.
            modulo.swap(i, (again.next_u64() % (i as u64 + 1)) as usize);
        }
        assert_eq!(v, modulo);
        assert_ne!(v, w);
    }
}
