//! The calibration target and how simulations are scored against it.
//!
//! The target is a synthetic "observed" prevalence series: the mean of a few replicate runs at
//! known true parameters, optionally with seeded observation noise. A candidate parameter set
//! is scored by the mean squared error between its own replicate-mean prevalence and the target.

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::draws::standard_normal;
use crate::model::{SeirParams, SeirSetup, simulate};

/// Replicates [`synthetic_target`] averages.
pub const DEFAULT_TARGET_REPLICATES: u32 = 5;

/// How a synthetic target is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetOptions {
    /// Replicate runs averaged into the series (at least 1).
    pub replicates: u32,
    /// Standard deviation of the observation noise on the log scale; 0 for none.
    ///
    /// Each day's value is multiplied by exp(sd·z − sd²/2), z standard normal: a mean-one
    /// lognormal factor, so the noise scales with the signal, zeros stay zero and values stay
    /// non-negative (they are capped at 1, as prevalence is a fraction).
    pub noise_sd: f64,
}

impl Default for TargetOptions {
    /// [`DEFAULT_TARGET_REPLICATES`] replicates, no noise.
    fn default() -> Self {
        Self {
            replicates: DEFAULT_TARGET_REPLICATES,
            noise_sd: 0.0,
        }
    }
}

/// The seed of replicate `replicate` of a run seeded with `seed`: SplitMix64 of the pair, so
/// replicates (and different base seeds) get well-separated random streams.
pub fn replicate_seed(seed: u64, replicate: u64) -> u64 {
    let mut mixed = seed.wrapping_add(
        replicate
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^ (mixed >> 31)
}

/// The day-by-day mean prevalence of `replicates` runs, replicate `r` seeded with
/// [`replicate_seed`]`(seed, r)`.
///
/// # Panics
///
/// If `replicates` is 0, or as [`simulate`] does.
pub fn mean_prevalence(
    params: &SeirParams,
    setup: &SeirSetup,
    replicates: u32,
    seed: u64,
) -> Vec<f64> {
    assert!(replicates > 0, "need at least one replicate");
    let runs: Vec<Vec<f64>> = (0..u64::from(replicates))
        .map(|replicate| simulate(params, setup, replicate_seed(seed, replicate)).prevalence())
        .collect();
    mean_trajectory(&runs)
}

/// A synthetic observed prevalence series at `true_params`: the mean of
/// [`DEFAULT_TARGET_REPLICATES`] replicates, without noise (see [`synthetic_target_with`]).
pub fn synthetic_target(true_params: &SeirParams, setup: &SeirSetup, seed: u64) -> Vec<f64> {
    synthetic_target_with(true_params, setup, TargetOptions::default(), seed)
}

/// A synthetic observed prevalence series at `true_params`, made as `options` say.
///
/// The replicates use streams 0 … replicates − 1 of `seed` (see [`replicate_seed`]); the noise
/// uses the next one.
///
/// # Panics
///
/// If `options.replicates` is 0, or as [`simulate`] does.
pub fn synthetic_target_with(
    true_params: &SeirParams,
    setup: &SeirSetup,
    options: TargetOptions,
    seed: u64,
) -> Vec<f64> {
    let clean = mean_prevalence(true_params, setup, options.replicates, seed);
    if options.noise_sd <= 0.0 {
        return clean;
    }
    let noise_seed = replicate_seed(seed, u64::from(options.replicates));
    with_lognormal_noise(&clean, options.noise_sd, noise_seed)
}

/// Multiplies each value by an independent mean-one lognormal factor, capping at 1.
fn with_lognormal_noise(values: &[f64], noise_sd: f64, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mean_correction = noise_sd * noise_sd / 2.0;
    values
        .iter()
        .map(|value| {
            let factor = (noise_sd * standard_normal(&mut rng) - mean_correction).exp();
            (value * factor).min(1.0)
        })
        .collect()
}

/// The day-by-day mean of replicate series; empty for no replicates.
///
/// # Panics
///
/// If the replicates differ in length.
pub fn mean_trajectory(replicates: &[Vec<f64>]) -> Vec<f64> {
    let Some(first) = replicates.first() else {
        return Vec::new();
    };
    assert!(
        replicates.iter().all(|series| series.len() == first.len()),
        "replicates must all have the same length"
    );
    let count = replicates.len() as f64;
    (0..first.len())
        .map(|day| replicates.iter().map(|series| series[day]).sum::<f64>() / count)
        .collect()
}

/// The mean squared error between a simulated (replicate-mean) series and the observed one:
/// (1/T)·Σₜ (simulatedₜ − observedₜ)². 0 for identical series (and for two empty ones),
/// positive otherwise. Lower is a better fit.
///
/// # Panics
///
/// If the series differ in length.
pub fn loss(simulated_mean: &[f64], observed: &[f64]) -> f64 {
    assert_eq!(
        simulated_mean.len(),
        observed.len(),
        "simulated and observed series must have the same length"
    );
    if observed.is_empty() {
        return 0.0;
    }
    let squared_errors: f64 = simulated_mean
        .iter()
        .zip(observed)
        .map(|(simulated, observed)| (simulated - observed).powi(2))
        .sum();
    squared_errors / observed.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_SETUP, DEFAULT_TRUTH};

    #[test]
    fn loss_is_zero_for_identical_series() {
        let series = [0.0, 0.01, 0.2, 0.05];
        assert_eq!(loss(&series, &series), 0.0);
        assert_eq!(loss(&[], &[]), 0.0);
    }

    #[test]
    fn loss_is_the_mean_squared_error() {
        assert!(loss(&[0.1, 0.2], &[0.1, 0.25]) > 0.0);
        assert!((loss(&[1.0, 2.0, 3.0], &[1.0, 0.0, 6.0]) - (4.0 + 9.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    #[should_panic(expected = "same length")]
    fn loss_rejects_series_of_different_lengths() {
        loss(&[0.1], &[0.1, 0.2]);
    }

    #[test]
    fn mean_trajectory_averages_day_by_day() {
        let replicates = vec![vec![1.0, 2.0, 3.0], vec![3.0, 2.0, 0.0]];
        assert_eq!(mean_trajectory(&replicates), [2.0, 2.0, 1.5]);
        assert_eq!(mean_trajectory(&replicates[..1]), replicates[0]);
        assert!(mean_trajectory(&[]).is_empty());
    }

    #[test]
    fn synthetic_target_is_the_mean_of_replicates_at_the_truth() {
        let target = synthetic_target(&DEFAULT_TRUTH, &DEFAULT_SETUP, 99);
        assert_eq!(target.len(), DEFAULT_SETUP.days as usize);
        let expected = mean_prevalence(
            &DEFAULT_TRUTH,
            &DEFAULT_SETUP,
            DEFAULT_TARGET_REPLICATES,
            99,
        );
        assert_eq!(target, expected);
        assert_eq!(target, synthetic_target(&DEFAULT_TRUTH, &DEFAULT_SETUP, 99));
        assert_ne!(
            target,
            synthetic_target(&DEFAULT_TRUTH, &DEFAULT_SETUP, 100)
        );
    }

    #[test]
    fn observation_noise_is_seeded_and_keeps_values_in_range() {
        let options = TargetOptions {
            replicates: 3,
            noise_sd: 0.2,
        };
        let clean = mean_prevalence(&DEFAULT_TRUTH, &DEFAULT_SETUP, 3, 4);
        let noisy = synthetic_target_with(&DEFAULT_TRUTH, &DEFAULT_SETUP, options, 4);
        assert_eq!(
            noisy,
            synthetic_target_with(&DEFAULT_TRUTH, &DEFAULT_SETUP, options, 4)
        );
        assert_ne!(noisy, clean);
        assert!(noisy.iter().all(|value| (0.0..=1.0).contains(value)));
        // Noise multiplies, so days with no one infectious stay at zero.
        for (noisy, clean) in noisy.iter().zip(&clean) {
            assert_eq!(*clean == 0.0, *noisy == 0.0);
        }
        // Mean-one factors: the series' total moves little.
        let ratio = noisy.iter().sum::<f64>() / clean.iter().sum::<f64>();
        assert!((ratio - 1.0).abs() < 0.1, "ratio {ratio}");
    }

    #[test]
    fn replicate_seeds_differ_between_replicates_and_base_seeds() {
        let seeds: Vec<u64> = (0..4)
            .flat_map(|seed| (0..4).map(move |replicate| replicate_seed(seed, replicate)))
            .collect();
        for (i, a) in seeds.iter().enumerate() {
            assert!(seeds[i + 1..].iter().all(|b| a != b));
        }
    }

    #[test]
    fn the_truth_fits_its_own_target_better_than_a_wrong_guess() {
        let target = synthetic_target(&DEFAULT_TRUTH, &DEFAULT_SETUP, 1);
        let at_truth = loss(
            &mean_prevalence(&DEFAULT_TRUTH, &DEFAULT_SETUP, 3, 2),
            &target,
        );
        let wrong = SeirParams {
            beta: 0.15,
            ..DEFAULT_TRUTH
        };
        let at_wrong = loss(&mean_prevalence(&wrong, &DEFAULT_SETUP, 3, 2), &target);
        assert!(at_truth < at_wrong, "truth {at_truth}, wrong {at_wrong}");
    }
}
