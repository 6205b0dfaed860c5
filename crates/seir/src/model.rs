//! The stochastic SEIR model: a chain binomial in daily steps over a closed population.
//!
//! Each day every transition is drawn from the state at the start of the day, so a person moves
//! at most one compartment a day:
//!
//! - new infections (S → E) ~ Binomial(S, 1 − exp(−β·I/N));
//! - onsets of infectiousness (E → I) ~ Binomial(E, 1 − exp(−σ));
//! - recoveries (I → R) ~ Binomial(I, 1 − exp(−γ)).

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::draws::binomial;

/// The model's rates, all per day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeirParams {
    /// Transmission rate: the infection hazard a susceptible person faces per day is β·I/N.
    pub beta: f64,
    /// Rate of becoming infectious: 1 / mean latent period in days.
    pub sigma: f64,
    /// Recovery rate: 1 / mean infectious period in days.
    pub gamma: f64,
}

impl SeirParams {
    /// The parameter names, in the order of [`SeirParams::from_values`] and
    /// [`SeirParams::to_values`] (and of [`crate::DEFAULT_RANGES`]).
    pub const NAMES: [&'static str; 3] = ["beta", "sigma", "gamma"];

    /// Reads `[beta, sigma, gamma]`, e.g. one point of a Sobol or Latin hypercube design over
    /// [`crate::default_ranges`]. `None` unless there are exactly three values.
    pub fn from_values(values: &[f64]) -> Option<Self> {
        match *values {
            [beta, sigma, gamma] => Some(Self { beta, sigma, gamma }),
            _ => None,
        }
    }

    /// The rates as `[beta, sigma, gamma]`.
    pub fn to_values(&self) -> [f64; 3] {
        [self.beta, self.sigma, self.gamma]
    }

    /// The basic reproduction number of the continuous-time model, β/γ.
    ///
    /// The daily-step model's infectious period is geometric with mean 1/(1 − e^−γ) days, a
    /// little longer than 1/γ, so its own R₀ is somewhat higher; β/γ is what calibrations report.
    pub fn r0(&self) -> f64 {
        self.beta / self.gamma
    }

    /// Whether every rate is finite and not negative (what [`simulate`] requires).
    pub fn is_valid(&self) -> bool {
        self.to_values()
            .iter()
            .all(|rate| rate.is_finite() && *rate >= 0.0)
    }
}

/// The population and the length of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeirSetup {
    /// Total population N, constant (closed population: no births, deaths or migration).
    pub population: u64,
    /// People infectious on day 0; everyone else is susceptible.
    pub initial_infected: u64,
    /// Number of daily steps to simulate.
    pub days: u32,
}

impl SeirSetup {
    /// Whether the population is positive and holds the initially infected (what [`simulate`]
    /// requires).
    pub fn is_valid(&self) -> bool {
        self.population > 0 && self.initial_infected <= self.population
    }
}

/// One simulated epidemic: the compartments and the incidence, one entry per day.
///
/// Entry `t` (0-based) describes day `t + 1`: the compartments at the end of that day and the
/// new infections during it. The day-0 state (N − I₀, 0, I₀, 0) is not repeated here, so every
/// vector has [`SeirSetup::days`] entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trajectory {
    /// Total population N (S + E + I + R on every day).
    pub population: u64,
    /// Susceptible people at the end of each day.
    pub susceptible: Vec<u64>,
    /// Exposed (infected, not yet infectious) people at the end of each day.
    pub exposed: Vec<u64>,
    /// Infectious people at the end of each day.
    pub infectious: Vec<u64>,
    /// Recovered (removed, immune) people at the end of each day.
    pub recovered: Vec<u64>,
    /// New infections (S → E) during each day.
    pub incidence: Vec<u64>,
}

impl Trajectory {
    /// An empty trajectory with room for `days` entries.
    fn with_capacity(population: u64, days: u32) -> Self {
        let days = days as usize;
        Self {
            population,
            susceptible: Vec::with_capacity(days),
            exposed: Vec::with_capacity(days),
            infectious: Vec::with_capacity(days),
            recovered: Vec::with_capacity(days),
            incidence: Vec::with_capacity(days),
        }
    }

    /// Number of days recorded.
    pub fn days(&self) -> usize {
        self.infectious.len()
    }

    /// Prevalence, I/N, for each day.
    pub fn prevalence(&self) -> Vec<f64> {
        let population = self.population as f64;
        self.infectious
            .iter()
            .map(|&infectious| infectious as f64 / population)
            .collect()
    }

    /// Appends the end-of-day state and that day's new infections.
    fn record(&mut self, state: &Compartments, new_infections: u64) {
        self.susceptible.push(state.susceptible);
        self.exposed.push(state.exposed);
        self.infectious.push(state.infectious);
        self.recovered.push(state.recovered);
        self.incidence.push(new_infections);
    }
}

/// How many people are in each compartment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Compartments {
    susceptible: u64,
    exposed: u64,
    infectious: u64,
    recovered: u64,
}

impl Compartments {
    /// The day-0 state: the initially infected are infectious, everyone else susceptible.
    fn initial(setup: &SeirSetup) -> Self {
        Self {
            susceptible: setup.population - setup.initial_infected,
            exposed: 0,
            infectious: setup.initial_infected,
            recovered: 0,
        }
    }

    /// The state after one day's flows. Each flow is at most its source compartment, so nothing
    /// underflows and the total is kept.
    fn after(self, flows: DailyFlows) -> Self {
        Self {
            susceptible: self.susceptible - flows.infections,
            exposed: self.exposed + flows.infections - flows.onsets,
            infectious: self.infectious + flows.onsets - flows.recoveries,
            recovered: self.recovered + flows.recoveries,
        }
    }
}

/// The number of people making each transition in one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DailyFlows {
    /// S → E.
    infections: u64,
    /// E → I.
    onsets: u64,
    /// I → R.
    recoveries: u64,
}

/// Probability that a constant hazard `rate` fires within one day: 1 − exp(−rate).
fn daily_probability(rate: f64) -> f64 {
    -(-rate).exp_m1()
}

/// Draws one day's transitions from the state at the start of the day.
fn draw_daily_flows(
    state: &Compartments,
    params: &SeirParams,
    population: u64,
    rng: &mut StdRng,
) -> DailyFlows {
    let force_of_infection = params.beta * state.infectious as f64 / population as f64;
    DailyFlows {
        infections: binomial(
            state.susceptible,
            daily_probability(force_of_infection),
            rng,
        ),
        onsets: binomial(state.exposed, daily_probability(params.sigma), rng),
        recoveries: binomial(state.infectious, daily_probability(params.gamma), rng),
    }
}

/// Runs the model for `setup.days` days. The same `params`, `setup` and `seed` always give the
/// same trajectory (with the same `rand` version).
///
/// # Panics
///
/// If `params` or `setup` is not valid (see [`SeirParams::is_valid`], [`SeirSetup::is_valid`]).
pub fn simulate(params: &SeirParams, setup: &SeirSetup, seed: u64) -> Trajectory {
    assert!(
        params.is_valid(),
        "SEIR rates must be finite and not negative: {params:?}"
    );
    assert!(
        setup.is_valid(),
        "SEIR setup needs population > 0 and initial_infected <= population: {setup:?}"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state = Compartments::initial(setup);
    let mut trajectory = Trajectory::with_capacity(setup.population, setup.days);
    for _ in 0..setup.days {
        let flows = draw_daily_flows(&state, params, setup.population, &mut rng);
        state = state.after(flows);
        trajectory.record(&state, flows.infections);
    }
    trajectory
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_SETUP, DEFAULT_TRUTH};

    #[test]
    fn every_vector_has_one_entry_per_day() {
        let trajectory = simulate(&DEFAULT_TRUTH, &DEFAULT_SETUP, 1);
        let days = DEFAULT_SETUP.days as usize;
        assert_eq!(trajectory.days(), days);
        for series in [
            &trajectory.susceptible,
            &trajectory.exposed,
            &trajectory.infectious,
            &trajectory.recovered,
            &trajectory.incidence,
        ] {
            assert_eq!(series.len(), days);
        }
        assert_eq!(trajectory.prevalence().len(), days);
    }

    #[test]
    fn the_population_is_conserved_every_day() {
        let setup = SeirSetup {
            population: 100_000,
            initial_infected: 25,
            days: 365,
        };
        for seed in 0..5 {
            let trajectory = simulate(&DEFAULT_TRUTH, &setup, seed);
            for day in 0..trajectory.days() {
                let total = trajectory.susceptible[day]
                    + trajectory.exposed[day]
                    + trajectory.infectious[day]
                    + trajectory.recovered[day];
                assert_eq!(total, setup.population, "seed {seed}, day {day}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trajectory() {
        assert_eq!(
            simulate(&DEFAULT_TRUTH, &DEFAULT_SETUP, 42),
            simulate(&DEFAULT_TRUTH, &DEFAULT_SETUP, 42)
        );
        assert_ne!(
            simulate(&DEFAULT_TRUTH, &DEFAULT_SETUP, 42),
            simulate(&DEFAULT_TRUTH, &DEFAULT_SETUP, 43)
        );
    }

    #[test]
    fn nothing_spreads_without_transmission() {
        let params = SeirParams {
            beta: 0.0,
            ..DEFAULT_TRUTH
        };
        let trajectory = simulate(&params, &DEFAULT_SETUP, 7);
        let initially_susceptible = DEFAULT_SETUP.population - DEFAULT_SETUP.initial_infected;
        assert!(trajectory.incidence.iter().all(|&new| new == 0));
        assert!(trajectory.exposed.iter().all(|&exposed| exposed == 0));
        assert!(
            trajectory
                .susceptible
                .iter()
                .all(|&s| s == initially_susceptible)
        );
        // The initially infected still recover.
        assert_eq!(
            *trajectory.recovered.last().unwrap(),
            DEFAULT_SETUP.initial_infected
        );
    }

    #[test]
    fn an_epidemic_takes_off_and_burns_out_at_the_default_truth() {
        let trajectory = simulate(&DEFAULT_TRUTH, &DEFAULT_SETUP, 3);
        let peak = trajectory.infectious.iter().copied().max().unwrap();
        let final_size = *trajectory.recovered.last().unwrap();
        // R0 = 3: a large outbreak (the deterministic final size is about 94%).
        assert!(peak > DEFAULT_SETUP.population / 10, "peak {peak}");
        assert!(
            final_size > DEFAULT_SETUP.population * 8 / 10,
            "final size {final_size}"
        );
    }

    #[test]
    fn incidence_is_what_leaves_the_susceptibles() {
        let trajectory = simulate(&DEFAULT_TRUTH, &DEFAULT_SETUP, 9);
        let mut previous = DEFAULT_SETUP.population - DEFAULT_SETUP.initial_infected;
        for (day, &susceptible) in trajectory.susceptible.iter().enumerate() {
            assert_eq!(
                previous - susceptible,
                trajectory.incidence[day],
                "day {day}"
            );
            previous = susceptible;
        }
    }

    #[test]
    fn prevalence_is_infectious_over_population() {
        let trajectory = simulate(&DEFAULT_TRUTH, &DEFAULT_SETUP, 5);
        for (day, prevalence) in trajectory.prevalence().into_iter().enumerate() {
            let expected = trajectory.infectious[day] as f64 / DEFAULT_SETUP.population as f64;
            assert_eq!(prevalence, expected);
            assert!((0.0..=1.0).contains(&prevalence));
        }
    }

    #[test]
    fn a_fully_infected_population_only_recovers() {
        let setup = SeirSetup {
            population: 50,
            initial_infected: 50,
            days: 200,
        };
        let trajectory = simulate(&DEFAULT_TRUTH, &setup, 2);
        assert!(trajectory.incidence.iter().all(|&new| new == 0));
        assert_eq!(*trajectory.recovered.last().unwrap(), 50);
    }

    #[test]
    fn params_convert_to_and_from_values() {
        let params = SeirParams::from_values(&[0.3, 0.2, 0.1]).unwrap();
        assert_eq!(
            params,
            SeirParams {
                beta: 0.3,
                sigma: 0.2,
                gamma: 0.1
            }
        );
        assert_eq!(params.to_values(), [0.3, 0.2, 0.1]);
        assert_eq!(SeirParams::from_values(&[0.3, 0.2]), None);
        assert!((params.r0() - 3.0).abs() < 1e-12);
    }

    #[test]
    fn validity_checks_reject_what_simulate_cannot_run() {
        assert!(DEFAULT_TRUTH.is_valid());
        assert!(
            !SeirParams {
                beta: -0.1,
                ..DEFAULT_TRUTH
            }
            .is_valid()
        );
        assert!(
            !SeirParams {
                gamma: f64::NAN,
                ..DEFAULT_TRUTH
            }
            .is_valid()
        );
        assert!(DEFAULT_SETUP.is_valid());
        assert!(
            !SeirSetup {
                population: 0,
                initial_infected: 0,
                days: 1
            }
            .is_valid()
        );
        assert!(
            !SeirSetup {
                population: 5,
                initial_infected: 6,
                days: 1
            }
            .is_valid()
        );
    }

    #[test]
    #[should_panic(expected = "SEIR setup")]
    fn simulate_rejects_more_infected_than_people() {
        simulate(
            &DEFAULT_TRUTH,
            &SeirSetup {
                population: 5,
                initial_infected: 6,
                days: 1,
            },
            0,
        );
    }
}
