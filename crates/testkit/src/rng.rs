//! A seeded random generator for tests: the same seed gives the same numbers on every
//! machine, so that a failing case can be replayed.
//!
//! [`SplitMix64`] is Steele, Lea and Flood's splitmix64 (the generator behind Java's
//! `SplittableRandom`, and the one Vigna recommends for seeding xoshiro): a 64-bit counter
//! stepped by the golden-ratio increment, each value mixed by two multiply-xorshift rounds.
//! It passes BigCrush, has period 2^64 and needs no dependency.
//!
//! ```
//! use tracewire_testkit::SplitMix64;
//!
//! let mut a = SplitMix64::new(7);
//! let mut b = SplitMix64::new(7);
//! assert_eq!(a.next_u64(), b.next_u64());
//! let x = a.next_f64();
//! assert!((0.0..1.0).contains(&x));
//! ```

/// The splitmix64 generator (see the [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is determined by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`: the top 53 bits of [`SplitMix64::next_u64`], so every value is
    /// a multiple of 2^-53 and exactly representable.
    #[allow(clippy::cast_precision_loss)]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference sequence of Vigna's `splitmix64.c` (and of Java's `SplittableRandom`
    /// seeded the same way) for seed 1234567.
    #[test]
    fn matches_the_reference_sequence() {
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423,
                4_593_380_528_125_082_431,
                16_408_922_859_458_223_821,
            ]
        );
    }

    #[test]
    fn floats_are_in_the_unit_interval_and_spread_over_it() {
        let mut rng = SplitMix64::new(3);
        let xs: Vec<f64> = (0..10_000).map(|_| rng.next_f64()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        for decile in 0..10u8 {
            let lo = f64::from(decile) / 10.0;
            let n = xs.iter().filter(|&&x| (lo..lo + 0.1).contains(&x)).count();
            assert!((800..1200).contains(&n), "decile {decile}: {n}");
        }
    }

    #[test]
    fn the_float_is_the_top_53_bits() {
        let (mut a, mut b) = (SplitMix64::new(11), SplitMix64::new(11));
        for _ in 0..100 {
            let bits = a.next_u64() >> 11;
            #[allow(clippy::cast_precision_loss)]
            let want = bits as f64 / 9_007_199_254_740_992.0;
            assert_eq!(b.next_f64().to_bits(), want.to_bits());
        }
    }
}
