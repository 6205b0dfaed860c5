//! A small stochastic SEIR model and what calibrating it needs: the model behind `mops demo`.
//!
//! The model is a discrete-time chain binomial over a closed population of N people, in four
//! compartments: Susceptible, Exposed (infected, not yet infectious), Infectious and Recovered.
//! Each day, drawing every transition from the state at the start of the day:
//!
//! - each susceptible person is infected (S → E) with probability 1 − exp(−β·I/N);
//! - each exposed person becomes infectious (E → I) with probability 1 − exp(−σ);
//! - each infectious person recovers (I → R) with probability 1 − exp(−γ).
//!
//! So 1/σ and 1/γ are, roughly, the mean latent and infectious periods in days (exactly, in daily
//! steps, 1/(1 − e^−σ) and 1/(1 − e^−γ)), and R₀ ≈ β/γ. A run is reproducible from its seed,
//! and S + E + I + R = N on every day.
//!
//! - [`model`]: the parameters, the setup, [`simulate`] and the [`Trajectory`] it returns;
//! - [`sampling`]: parameter ranges and the [`sobol`] and [`latin_hypercube`] designs;
//! - [`target`]: the synthetic observed prevalence, replicate means and the [`loss`].

mod draws;
pub mod model;
pub mod sampling;
pub mod target;

pub use model::{SeirParams, SeirSetup, Trajectory, simulate};
pub use sampling::{ParamRange, SOBOL_MAX_DIMENSIONS, latin_hypercube, sobol};
pub use target::{
    TargetOptions, loss, mean_prevalence, mean_trajectory, replicate_seed, synthetic_target,
    synthetic_target_with,
};

/// The demo's parameter ranges as `(name, low, high)`: β 0.1–0.6, σ 0.1–0.5, γ 0.05–0.3 per
/// day, in the order of [`SeirParams::NAMES`]. See [`default_ranges`].
pub const DEFAULT_RANGES: [(&str, f64, f64); 3] = [
    ("beta", 0.1, 0.6),
    ("sigma", 0.1, 0.5),
    ("gamma", 0.05, 0.3),
];

/// The "true" parameters the demo's synthetic target is made from: β 0.3, σ 0.2 (a 5-day latent
/// period), γ 0.1 (a 10-day infectious period), so R₀ = 3.
pub const DEFAULT_TRUTH: SeirParams = SeirParams {
    beta: 0.3,
    sigma: 0.2,
    gamma: 0.1,
};

/// The demo's setup: 10 000 people, 10 of them infectious on day 0, 120 days.
pub const DEFAULT_SETUP: SeirSetup = SeirSetup {
    population: 10_000,
    initial_infected: 10,
    days: 120,
};

/// [`DEFAULT_RANGES`] as [`ParamRange`]s, ready for [`sobol`] or [`latin_hypercube`]; a design
/// point over them converts with [`SeirParams::from_values`].
pub fn default_ranges() -> Vec<ParamRange> {
    DEFAULT_RANGES
        .iter()
        .map(|&(name, low, high)| ParamRange::new(name, low, high))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_agree_with_each_other() {
        let ranges = default_ranges();
        let names: Vec<&str> = ranges.iter().map(|range| range.name.as_str()).collect();
        assert_eq!(names, SeirParams::NAMES);
        for (range, truth) in ranges.iter().zip(DEFAULT_TRUTH.to_values()) {
            assert!(range.low < truth && truth < range.high, "{}", range.name);
        }
        assert!(DEFAULT_SETUP.is_valid());
    }

    #[test]
    fn calibration_against_the_synthetic_target_finds_the_right_r0() {
        let target = synthetic_target(&DEFAULT_TRUTH, &DEFAULT_SETUP, 2024);
        let candidates: Vec<SeirParams> = sobol(&default_ranges(), 64, 0)
            .iter()
            .map(|point| SeirParams::from_values(point).unwrap())
            .collect();
        let losses: Vec<f64> = candidates
            .iter()
            .enumerate()
            .map(|(i, params)| {
                loss(
                    &mean_prevalence(params, &DEFAULT_SETUP, 3, i as u64),
                    &target,
                )
            })
            .collect();
        let best = (0..candidates.len())
            .min_by(|&a, &b| losses[a].total_cmp(&losses[b]))
            .unwrap();

        let r0_error = |params: &SeirParams| (params.r0() - DEFAULT_TRUTH.r0()).abs();
        let mut errors: Vec<f64> = candidates.iter().map(r0_error).collect();
        errors.sort_by(f64::total_cmp);
        let median_error = (errors[31] + errors[32]) / 2.0;
        let best_error = r0_error(&candidates[best]);
        assert!(
            best_error < median_error,
            "best {:?} (R0 error {best_error}) vs median R0 error {median_error}",
            candidates[best]
        );
    }
}
