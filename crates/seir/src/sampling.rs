//! Parameter ranges and space-filling designs over them: Sobol sequences and Latin hypercubes.
//!
//! Both designs return one `Vec` per point, with one value per range, in the order of the
//! ranges: `design[point][dimension]`, scaled from the unit interval to `[low, high]`.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// The interval one parameter is sampled over.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamRange {
    /// The parameter's name, e.g. `"beta"`.
    pub name: String,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

impl ParamRange {
    /// A range named `name` over `[low, high]`.
    pub fn new(name: impl Into<String>, low: f64, high: f64) -> Self {
        Self {
            name: name.into(),
            low,
            high,
        }
    }

    /// Maps `unit` in `[0, 1]` linearly onto `[low, high]`.
    pub fn scale(&self, unit: f64) -> f64 {
        self.low + unit * (self.high - self.low)
    }
}

/// The most dimensions (ranges) [`sobol`] supports.
pub const SOBOL_MAX_DIMENSIONS: usize = 1 + JOE_KUO.len();

/// The most points a Sobol sequence with 32-bit direction numbers has: indices `0..2³²`.
pub const SOBOL_MAX_POINTS: u64 = 1 << SOBOL_BITS;

/// Bits of precision of each Sobol coordinate.
const SOBOL_BITS: usize = 32;

/// One row of Joe and Kuo's direction-number table: a primitive polynomial over GF(2) of
/// `degree` s, its inner coefficients a (the bits between the leading and constant terms,
/// highest first) and the initial direction integers m₁ … mₛ (each odd, mᵢ < 2ⁱ).
#[derive(Debug)]
struct JoeKuoRow {
    degree: usize,
    coefficients: u32,
    initial: &'static [u32],
}

/// Dimensions 2–20 of S. Joe and F. Y. Kuo, "Constructing Sobol sequences with better
/// two-dimensional projections", SIAM J. Sci. Comput. 30 (2008), table `new-joe-kuo-6.21201`.
/// Dimension 1 is the van der Corput sequence and needs no row.
const JOE_KUO: [JoeKuoRow; 19] = [
    JoeKuoRow {
        degree: 1,
        coefficients: 0,
        initial: &[1],
    },
    JoeKuoRow {
        degree: 2,
        coefficients: 1,
        initial: &[1, 3],
    },
    JoeKuoRow {
        degree: 3,
        coefficients: 1,
        initial: &[1, 3, 1],
    },
    JoeKuoRow {
        degree: 3,
        coefficients: 2,
        initial: &[1, 1, 1],
    },
    JoeKuoRow {
        degree: 4,
        coefficients: 1,
        initial: &[1, 1, 3, 3],
    },
    JoeKuoRow {
        degree: 4,
        coefficients: 4,
        initial: &[1, 3, 5, 13],
    },
    JoeKuoRow {
        degree: 5,
        coefficients: 2,
        initial: &[1, 1, 5, 5, 17],
    },
    JoeKuoRow {
        degree: 5,
        coefficients: 4,
        initial: &[1, 1, 5, 5, 5],
    },
    JoeKuoRow {
        degree: 5,
        coefficients: 7,
        initial: &[1, 1, 7, 11, 19],
    },
    JoeKuoRow {
        degree: 5,
        coefficients: 11,
        initial: &[1, 1, 5, 1, 1],
    },
    JoeKuoRow {
        degree: 5,
        coefficients: 13,
        initial: &[1, 1, 1, 3, 11],
    },
    JoeKuoRow {
        degree: 5,
        coefficients: 14,
        initial: &[1, 3, 5, 5, 31],
    },
    JoeKuoRow {
        degree: 6,
        coefficients: 1,
        initial: &[1, 3, 3, 9, 7, 49],
    },
    JoeKuoRow {
        degree: 6,
        coefficients: 13,
        initial: &[1, 1, 1, 15, 21, 21],
    },
    JoeKuoRow {
        degree: 6,
        coefficients: 16,
        initial: &[1, 3, 1, 13, 27, 49],
    },
    JoeKuoRow {
        degree: 6,
        coefficients: 19,
        initial: &[1, 1, 1, 15, 7, 5],
    },
    JoeKuoRow {
        degree: 6,
        coefficients: 22,
        initial: &[1, 3, 1, 15, 13, 25],
    },
    JoeKuoRow {
        degree: 6,
        coefficients: 25,
        initial: &[1, 1, 5, 5, 19, 61],
    },
    JoeKuoRow {
        degree: 7,
        coefficients: 1,
        initial: &[1, 3, 7, 11, 23, 15, 103],
    },
];

/// The direction numbers v₁ … v₃₂ of one Sobol dimension (0-based), as 32-bit binary fractions.
fn direction_numbers(dimension: usize) -> [u32; SOBOL_BITS] {
    let mut directions = [0_u32; SOBOL_BITS];
    if dimension == 0 {
        for (bit, direction) in directions.iter_mut().enumerate() {
            *direction = 1 << (SOBOL_BITS - 1 - bit);
        }
        return directions;
    }
    let row = &JOE_KUO[dimension - 1];
    let degree = row.degree;
    for (bit, &initial) in row.initial.iter().enumerate() {
        directions[bit] = initial << (SOBOL_BITS - 1 - bit);
    }
    // The recurrence of the primitive polynomial:
    // vᵢ = a₁vᵢ₋₁ ⊕ … ⊕ aₛ₋₁vᵢ₋ₛ₊₁ ⊕ vᵢ₋ₛ ⊕ (vᵢ₋ₛ >> s).
    for bit in degree..SOBOL_BITS {
        let mut direction = directions[bit - degree] ^ (directions[bit - degree] >> degree);
        for lag in 1..degree {
            if (row.coefficients >> (degree - 1 - lag)) & 1 == 1 {
                direction ^= directions[bit - lag];
            }
        }
        directions[bit] = direction;
    }
    directions
}

/// Walks a Sobol sequence in Gray-code order, one XOR per coordinate per point.
#[derive(Debug)]
struct SobolWalk {
    directions: Vec<[u32; SOBOL_BITS]>,
    index: u64,
    coordinates: Vec<u32>,
}

impl SobolWalk {
    /// Positions the walk at point `start` of a `dimensions`-dimensional sequence: the point is
    /// the XOR of the direction numbers picked by the bits of the Gray code of `start`.
    fn starting_at(dimensions: usize, start: u64) -> Self {
        let directions: Vec<_> = (0..dimensions).map(direction_numbers).collect();
        let gray_code = start ^ (start >> 1);
        let coordinates = directions
            .iter()
            .map(|dimension| {
                (0..SOBOL_BITS)
                    .filter(|&bit| (gray_code >> bit) & 1 == 1)
                    .fold(0, |point, bit| point ^ dimension[bit])
            })
            .collect();
        Self {
            directions,
            index: start,
            coordinates,
        }
    }

    /// Moves to the next point: consecutive Gray codes differ in the bit that is the number of
    /// trailing zeros of the new index.
    fn advance(&mut self) {
        self.index += 1;
        let bit = self.index.trailing_zeros() as usize;
        for (coordinate, dimension) in self.coordinates.iter_mut().zip(&self.directions) {
            *coordinate ^= dimension[bit];
        }
    }

    /// The current point in the unit cube.
    fn unit_point(&self) -> impl Iterator<Item = f64> + '_ {
        self.coordinates
            .iter()
            .map(|&coordinate| coordinate as f64 / SOBOL_MAX_POINTS as f64)
    }
}

/// `n` points of the Sobol low-discrepancy sequence over `ranges`, starting at point `skip`.
///
/// Uses Joe–Kuo direction numbers and the Gray-code construction (Antonov–Saleev), unscrambled.
/// Point 0 is the origin (every range's `low`); with `skip = 0` the first 2ᵏ points of every
/// dimension fall one in each interval [i/2ᵏ, (i + 1)/2ᵏ) of the unit range, and any aligned
/// block of 2ᵏ points (`skip` a multiple of 2ᵏ) keeps that balance. `skip = 1` drops the origin.
///
/// # Panics
///
/// If there are more than [`SOBOL_MAX_DIMENSIONS`] ranges, or `skip + n` exceeds
/// [`SOBOL_MAX_POINTS`].
pub fn sobol(ranges: &[ParamRange], n: usize, skip: usize) -> Vec<Vec<f64>> {
    assert!(
        ranges.len() <= SOBOL_MAX_DIMENSIONS,
        "Sobol sequence supports at most {SOBOL_MAX_DIMENSIONS} dimensions, got {}",
        ranges.len()
    );
    assert!(
        (skip as u64)
            .checked_add(n as u64)
            .is_some_and(|end| end <= SOBOL_MAX_POINTS),
        "Sobol sequence has {SOBOL_MAX_POINTS} points; asked for {n} after skipping {skip}"
    );
    let mut walk = SobolWalk::starting_at(ranges.len(), skip as u64);
    let mut points = Vec::with_capacity(n);
    for point in 0..n {
        if point > 0 {
            walk.advance();
        }
        points.push(scale_point(ranges, walk.unit_point()));
    }
    points
}

/// Scales one point of the unit cube onto `ranges`.
fn scale_point(ranges: &[ParamRange], unit: impl Iterator<Item = f64>) -> Vec<f64> {
    ranges
        .iter()
        .zip(unit)
        .map(|(range, unit)| range.scale(unit))
        .collect()
}

/// `n` points of a Latin hypercube over `ranges`, reproducible from `seed`.
///
/// Each range is cut into `n` equal strata; in every dimension each stratum holds exactly one
/// point, placed uniformly at random inside it, and the strata are paired across dimensions by
/// independent random permutations.
pub fn latin_hypercube(ranges: &[ParamRange], n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut points = vec![Vec::with_capacity(ranges.len()); n];
    for range in ranges {
        let mut strata: Vec<usize> = (0..n).collect();
        strata.shuffle(&mut rng);
        for (point, stratum) in points.iter_mut().zip(strata) {
            let unit = (stratum as f64 + rng.random::<f64>()) / n as f64;
            point.push(range.scale(unit));
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dimensions` copies of the unit interval.
    fn unit_ranges(dimensions: usize) -> Vec<ParamRange> {
        (0..dimensions)
            .map(|d| ParamRange::new(format!("x{d}"), 0.0, 1.0))
            .collect()
    }

    /// Column `dimension` of a design.
    fn column(design: &[Vec<f64>], dimension: usize) -> Vec<f64> {
        design.iter().map(|point| point[dimension]).collect()
    }

    /// Whether the values, on the unit interval, fall one in each of `strata` equal intervals.
    fn one_per_stratum(values: &[f64], strata: usize) -> bool {
        let mut hits = vec![0; strata];
        for value in values {
            hits[(value * strata as f64).floor() as usize] += 1;
        }
        hits.iter().all(|&count| count == 1)
    }

    #[test]
    fn the_first_dimension_is_van_der_corput_in_gray_code_order() {
        let design = sobol(&unit_ranges(1), 6, 0);
        assert_eq!(column(&design, 0), [0.0, 0.5, 0.75, 0.25, 0.375, 0.875]);
        let without_origin = sobol(&unit_ranges(1), 5, 1);
        assert_eq!(column(&without_origin, 0), [0.5, 0.75, 0.25, 0.375, 0.875]);
    }

    #[test]
    fn the_first_three_dimensions_match_the_published_sequence() {
        let design = sobol(&unit_ranges(3), 8, 0);
        let expected = [
            [0.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.75, 0.25, 0.25],
            [0.25, 0.75, 0.75],
            [0.375, 0.375, 0.625],
            [0.875, 0.875, 0.125],
            [0.625, 0.125, 0.875],
            [0.125, 0.625, 0.375],
        ];
        for (point, expected) in design.iter().zip(expected) {
            assert_eq!(point.as_slice(), expected);
        }
    }

    #[test]
    fn every_dimension_is_stratified_in_the_first_power_of_two_points() {
        let design = sobol(&unit_ranges(SOBOL_MAX_DIMENSIONS), 1 << 12, 0);
        for dimension in 0..SOBOL_MAX_DIMENSIONS {
            let values = column(&design, dimension);
            for k in 0..=12 {
                assert!(
                    one_per_stratum(&values[..1 << k], 1 << k),
                    "dimension {dimension}, 2^{k}"
                );
            }
        }
    }

    #[test]
    fn aligned_blocks_after_a_skip_are_stratified_too() {
        let design = sobol(&unit_ranges(SOBOL_MAX_DIMENSIONS), 64, 192);
        for dimension in 0..SOBOL_MAX_DIMENSIONS {
            assert!(
                one_per_stratum(&column(&design, dimension), 64),
                "dimension {dimension}"
            );
        }
    }

    #[test]
    fn the_first_two_dimensions_form_a_zero_m_two_net() {
        // Every elementary box of volume 2^-m holds exactly one of the first 2^m points.
        for m in 0..=10_u32 {
            let design = sobol(&unit_ranges(2), 1 << m, 0);
            for x_bits in 0..=m {
                let (x_cells, y_cells) = (1_usize << x_bits, 1_usize << (m - x_bits));
                let mut hits = vec![0; x_cells * y_cells];
                for point in &design {
                    let x = (point[0] * x_cells as f64) as usize;
                    let y = (point[1] * y_cells as f64) as usize;
                    hits[x * y_cells + y] += 1;
                }
                assert!(
                    hits.iter().all(|&count| count == 1),
                    "m {m}, x bits {x_bits}"
                );
            }
        }
    }

    #[test]
    fn skipping_continues_the_same_sequence() {
        let ranges = unit_ranges(5);
        let full = sobol(&ranges, 40, 0);
        assert_eq!(sobol(&ranges, 17, 23), full[23..]);
    }

    #[test]
    fn the_direction_number_table_is_well_formed() {
        for row in &JOE_KUO {
            assert_eq!(row.initial.len(), row.degree);
            assert!(row.coefficients < 1 << (row.degree - 1));
            for (bit, &initial) in row.initial.iter().enumerate() {
                assert!(
                    initial % 2 == 1 && initial < 1 << (bit + 1),
                    "m = {initial}"
                );
            }
        }
    }

    #[test]
    fn sobol_points_are_scaled_onto_the_ranges() {
        let ranges = vec![
            ParamRange::new("beta", 0.1, 0.6),
            ParamRange::new("gamma", 0.05, 0.3),
        ];
        let design = sobol(&ranges, 3, 0);
        assert_eq!(design[0], [0.1, 0.05]);
        assert!((design[1][0] - 0.35).abs() < 1e-15 && (design[1][1] - 0.175).abs() < 1e-15);
        for point in sobol(&ranges, 256, 1) {
            for (value, range) in point.iter().zip(&ranges) {
                assert!((range.low..range.high).contains(value));
            }
        }
    }

    #[test]
    #[should_panic(expected = "at most")]
    fn sobol_rejects_too_many_dimensions() {
        sobol(&unit_ranges(SOBOL_MAX_DIMENSIONS + 1), 1, 0);
    }

    #[test]
    fn latin_hypercube_puts_one_point_in_each_stratum() {
        let ranges = vec![
            ParamRange::new("beta", 0.1, 0.6),
            ParamRange::new("sigma", 0.1, 0.5),
            ParamRange::new("gamma", 0.05, 0.3),
        ];
        for n in [1, 2, 7, 64, 100] {
            let design = latin_hypercube(&ranges, n, 17);
            assert_eq!(design.len(), n);
            for (dimension, range) in ranges.iter().enumerate() {
                let unit: Vec<f64> = column(&design, dimension)
                    .iter()
                    .map(|value| (value - range.low) / (range.high - range.low))
                    .collect();
                assert!(one_per_stratum(&unit, n), "n {n}, {}", range.name);
            }
        }
    }

    #[test]
    fn latin_hypercube_is_reproducible_from_its_seed() {
        let ranges = unit_ranges(3);
        assert_eq!(
            latin_hypercube(&ranges, 20, 5),
            latin_hypercube(&ranges, 20, 5)
        );
        assert_ne!(
            latin_hypercube(&ranges, 20, 5),
            latin_hypercube(&ranges, 20, 6)
        );
    }

    #[test]
    fn empty_designs_are_empty() {
        assert!(sobol(&unit_ranges(3), 0, 0).is_empty());
        assert!(latin_hypercube(&unit_ranges(3), 0, 0).is_empty());
        assert_eq!(sobol(&[], 2, 0), vec![Vec::<f64>::new(); 2]);
    }

    #[test]
    fn ranges_scale_linearly() {
        let range = ParamRange::new("gamma", 0.05, 0.3);
        assert_eq!(range.scale(0.0), 0.05);
        assert_eq!(range.scale(1.0), 0.3);
        assert!((range.scale(0.5) - 0.175).abs() < 1e-15);
    }
}
