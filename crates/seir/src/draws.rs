//! The random draws the model needs beyond what `rand` offers: binomial and standard normal.
//!
//! `rand` 0.9 has no distributions (they live in `rand_distr`, which this workspace does not
//! use), so the binomial sampler is written here. A draw from Binomial(n, p):
//!
//! - is made for `p ≤ ½`; for `p > ½` it draws the number of failures, Binomial(n, 1 − p), and
//!   returns `n` minus it;
//! - when the expected count `n·p` is below [`INVERSION_MAX_MEAN`], is exact, by inversion: the
//!   probability mass function is walked from 0 until a uniform draw is used up, which costs
//!   O(n·p) steps;
//! - otherwise uses the normal approximation N(n·p, n·p·(1 − p)) with continuity correction: a
//!   normal draw rounded to the nearest integer, so P(k) ≈ P(k − ½ ≤ X < k + ½), clamped to
//!   [0, n]. It costs O(1). With `n·p ≥ 30` and `p ≤ ½` the variance is at least 15 and the
//!   skewness at most 0.26; the error is far below the model's own stochastic noise.

use rand::Rng;

/// Expected counts below this are drawn exactly by inversion; larger ones by the normal
/// approximation.
const INVERSION_MAX_MEAN: f64 = 30.0;

/// Draws the number of successes in `n` independent trials that each succeed with probability
/// `p`. A `p` at or below 0 (or NaN) gives 0, one at or above 1 gives `n`.
pub(crate) fn binomial<R: Rng + ?Sized>(n: u64, p: f64, rng: &mut R) -> u64 {
    if n == 0 || p.is_nan() || p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if p > 0.5 {
        return n - binomial_at_most_half(n, 1.0 - p, rng);
    }
    binomial_at_most_half(n, p, rng)
}

/// A binomial draw for `0 < p ≤ ½`, picking the exact or the approximate method by the mean.
fn binomial_at_most_half<R: Rng + ?Sized>(n: u64, p: f64, rng: &mut R) -> u64 {
    let mean = n as f64 * p;
    if mean < INVERSION_MAX_MEAN {
        binomial_by_inversion(n, p, rng)
    } else {
        binomial_by_normal_approximation(n, p, rng)
    }
}

/// An exact binomial draw by inversion of the cumulative distribution, for small `n·p`.
///
/// Starts from P(0) = (1 − p)ⁿ and steps with P(k + 1) = P(k) · (n − k)/(k + 1) · p/(1 − p).
/// With `n·p < 30` and `p ≤ ½`, P(0) ≥ e⁻⁶⁰, so it never underflows.
fn binomial_by_inversion<R: Rng + ?Sized>(n: u64, p: f64, rng: &mut R) -> u64 {
    let odds = p / (1.0 - p);
    let mut probability = (n as f64 * (-p).ln_1p()).exp();
    let mut remaining: f64 = rng.random();
    let mut successes = 0;
    loop {
        if remaining < probability || successes == n {
            return successes;
        }
        remaining -= probability;
        probability *= odds * (n - successes) as f64 / (successes + 1) as f64;
        successes += 1;
        // Rounding can leave a sliver of `remaining` after the whole mass; stop in the tail.
        if probability == 0.0 {
            return successes;
        }
    }
}

/// An approximate binomial draw: a normal draw with the binomial's mean and variance, rounded
/// to the nearest integer (the continuity correction) and clamped to `[0, n]`.
fn binomial_by_normal_approximation<R: Rng + ?Sized>(n: u64, p: f64, rng: &mut R) -> u64 {
    let mean = n as f64 * p;
    let standard_deviation = (mean * (1.0 - p)).sqrt();
    let draw = (mean + standard_deviation * standard_normal(rng) + 0.5).floor();
    draw.clamp(0.0, n as f64) as u64
}

/// A standard normal draw by the Box–Muller transform (one of the pair is used).
pub(crate) fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    // `random` is in [0, 1); 1 − it is in (0, 1], so the logarithm is finite.
    let radius_uniform = 1.0 - rng.random::<f64>();
    let angle_uniform: f64 = rng.random();
    (-2.0 * radius_uniform.ln()).sqrt() * (std::f64::consts::TAU * angle_uniform).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Sample mean and (population) variance of many draws.
    fn moments(draws: &[u64]) -> (f64, f64) {
        let count = draws.len() as f64;
        let mean = draws.iter().map(|&d| d as f64).sum::<f64>() / count;
        let variance = draws
            .iter()
            .map(|&d| (d as f64 - mean).powi(2))
            .sum::<f64>()
            / count;
        (mean, variance)
    }

    fn draws(n: u64, p: f64, count: usize, seed: u64) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count).map(|_| binomial(n, p, &mut rng)).collect()
    }

    #[test]
    fn degenerate_cases_are_exact() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(binomial(0, 0.3, &mut rng), 0);
        assert_eq!(binomial(100, 0.0, &mut rng), 0);
        assert_eq!(binomial(100, -1.0, &mut rng), 0);
        assert_eq!(binomial(100, f64::NAN, &mut rng), 0);
        assert_eq!(binomial(100, 1.0, &mut rng), 100);
        assert_eq!(binomial(100, 2.0, &mut rng), 100);
    }

    #[test]
    fn draws_never_exceed_the_number_of_trials() {
        for (n, p) in [
            (5, 0.5),
            (40, 0.9),
            (1_000, 0.02),
            (100_000, 0.7),
            (3, 0.999),
        ] {
            assert!(draws(n, p, 2_000, 7).iter().all(|&k| k <= n), "n={n} p={p}");
        }
    }

    #[test]
    fn moments_match_in_every_regime() {
        // (n, p): inversion, inversion by symmetry, normal approximation, and its mirror.
        for (n, p) in [(50, 0.1), (50, 0.95), (10_000, 0.3), (10_000, 0.8)] {
            let (mean, variance) = moments(&draws(n, p, 40_000, 11));
            let expected_mean = n as f64 * p;
            let expected_variance = expected_mean * (1.0 - p);
            // Standard error of the mean is sqrt(var / 40 000); allow five of them.
            let tolerance = 5.0 * (expected_variance / 40_000.0).sqrt();
            assert!(
                (mean - expected_mean).abs() < tolerance,
                "n={n} p={p} mean={mean}"
            );
            assert!(
                (variance / expected_variance - 1.0).abs() < 0.05,
                "n={n} p={p} variance={variance}"
            );
        }
    }

    #[test]
    fn inversion_reproduces_the_probability_mass_function() {
        let (n, p) = (10_u64, 0.3_f64);
        let sample = draws(n, p, 100_000, 3);
        let mut expected = (1.0 - p).powi(10);
        for k in 0..=n {
            let observed = sample.iter().filter(|&&d| d == k).count() as f64 / 100_000.0;
            let standard_error = (expected * (1.0 - expected) / 100_000.0).sqrt();
            assert!(
                (observed - expected).abs() < 5.0 * standard_error + 1e-4,
                "k={k}"
            );
            expected *= (n - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
        }
    }

    #[test]
    fn standard_normal_has_zero_mean_and_unit_variance() {
        let mut rng = StdRng::seed_from_u64(5);
        let sample: Vec<f64> = (0..50_000).map(|_| standard_normal(&mut rng)).collect();
        let mean = sample.iter().sum::<f64>() / 50_000.0;
        let variance = sample.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 50_000.0;
        assert!(mean.abs() < 0.03, "mean={mean}");
        assert!((variance - 1.0).abs() < 0.03, "variance={variance}");
    }
}
