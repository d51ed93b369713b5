//! A DDSketch-style quantile sketch of durations (ns) with a bounded relative error.
//!
//! Positive values go into log-spaced buckets: with `gamma = (1 + alpha) / (1 - alpha)`,
//! bucket `i = ceil(log_gamma(x))` holds `(gamma^(i-1), gamma^i]` and reports
//! `2 * gamma^i / (gamma + 1)`, which is within `alpha` relative error of every value in the
//! bucket. Negative values go into a mirrored set of buckets (by magnitude), zeros into a
//! count of their own. Buckets are kept order-preserving, so the bucket holding the value of
//! a rank reports that value within `alpha`. The smallest and largest values are exact, and
//! so are the ranks 1 and `n`.
//! Memory is bounded by the range: nanoseconds from 1 to `i64::MAX` are under 4,400 buckets
//! at `alpha = 0.005`.

/// The relative accuracy of [`Sketch`]: every quantile it reports is within this relative
/// error of the value of that rank.
pub(crate) const RELATIVE_ERROR: f64 = 0.005;

/// Counts of consecutive bucket indexes, `counts[0]` being bucket `offset`.
#[derive(Debug, Default, Clone)]
struct Buckets {
    offset: i32,
    counts: Vec<u64>,
}

impl Buckets {
    fn add(&mut self, index: i32) {
        if self.counts.is_empty() {
            self.offset = index;
            self.counts.push(0);
        } else if index < self.offset {
            let grow = usize::try_from(self.offset - index).unwrap_or(0);
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = index;
        }
        let at = usize::try_from(index - self.offset).unwrap_or(0);
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += 1;
    }

    /// (bucket index, count), smallest index first.
    #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
    fn iter(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        // Under 4,400 buckets: the index fits.
        self.counts.iter().enumerate().filter(|&(_, &c)| c > 0).map(|(k, &c)| (self.offset + k as i32, c))
    }
}

/// A quantile sketch of `i64` values with relative error [`RELATIVE_ERROR`].
#[derive(Debug, Clone)]
pub(crate) struct Sketch {
    /// `ln(gamma)`.
    ln_gamma: f64,
    gamma: f64,
    positive: Buckets,
    /// Negative values, by the bucket of their magnitude.
    negative: Buckets,
    zeros: u64,
    count: u64,
    min: i64,
    max: i64,
}

impl Default for Sketch {
    fn default() -> Self {
        let gamma = (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR);
        Self {
            ln_gamma: gamma.ln(),
            gamma,
            positive: Buckets::default(),
            negative: Buckets::default(),
            zeros: 0,
            count: 0,
            min: i64::MAX,
            max: i64::MIN,
        }
    }
}

impl Sketch {
    /// The bucket of a magnitude of at least 1.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    fn index(&self, magnitude: u64) -> i32 {
        ((magnitude as f64).ln() / self.ln_gamma).ceil() as i32
    }

    /// The value a bucket reports.
    fn value(&self, index: i32) -> f64 {
        2.0 * self.gamma.powi(index) / (self.gamma + 1.0)
    }

    /// Adds one value.
    pub(crate) fn add(&mut self, x: i64) {
        self.count += 1;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        match x {
            0 => self.zeros += 1,
            x if x > 0 => self.positive.add(self.index(x.unsigned_abs())),
            x => self.negative.add(self.index(x.unsigned_abs())),
        }
    }

    /// Values added.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// The largest value added (exact; 0 for none).
    pub(crate) fn max(&self) -> i64 {
        if self.count == 0 { 0 } else { self.max }
    }

    /// The nearest-rank `p`th percentile (the value of rank `ceil(p/100 * n)`), within
    /// [`RELATIVE_ERROR`] of it; 0 for no values.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    pub(crate) fn percentile(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = (((p / 100.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let (min, max) = (self.min as f64, self.max as f64);
        if rank == 1 {
            return min;
        }
        if rank == self.count {
            return max;
        }
        // The smallest first: the negative buckets by falling magnitude, zeros, positives.
        let mut seen = 0u64;
        for (i, c) in self.negative.iter().rev() {
            seen += c;
            if seen >= rank {
                return (-self.value(i)).clamp(min, max);
            }
        }
        seen += self.zeros;
        if seen >= rank {
            return 0.0;
        }
        for (i, c) in self.positive.iter() {
            seen += c;
            if seen >= rank {
                return self.value(i).clamp(min, max);
            }
        }
        max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nearest_rank(sorted: &[i64], p: f64) -> i64 {
        crate::percentile_ns(sorted, p)
    }

    /// Every p50/p90/p99 of the sketch is within [`RELATIVE_ERROR`] of the exact nearest
    /// rank; the max is exact.
    #[allow(clippy::cast_precision_loss, clippy::float_cmp)]
    fn check(values: &[i64]) {
        let mut sketch = Sketch::default();
        for &v in values {
            sketch.add(v);
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        assert_eq!(sketch.count(), values.len() as u64);
        assert_eq!(sketch.max(), sorted[sorted.len() - 1]);
        for p in [0.0, 1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
            let exact = nearest_rank(&sorted, p) as f64;
            let got = sketch.percentile(p);
            // The bound plus floating-point rounding at a bucket's edge.
            let bound = RELATIVE_ERROR * exact.abs() * (1.0 + 1e-9);
            assert!((got - exact).abs() <= bound, "p{p}: {got} vs exact {exact} (bound {bound})");
        }
    }

    // Log-uniform and heavy-tailed inputs of 100k values go through the `Analyzer` in
    // crates/collector/tests/scale.rs; here, what the analysis never gives it (negative
    // values) mixed with zeros and values near the end of the range.

    #[test]
    #[allow(clippy::cast_possible_truncation)]
    fn zeros_negatives_and_huge_values_mixed() {
        let mut rng = tracewire_testkit::SplitMix64::new(3);
        let values: Vec<i64> = (0..100_000)
            .map(|i| match i % 5 {
                0 => 0,
                1 => -(10f64.powf(9.0 * rng.next_f64()).round() as i64) - 1,
                2 => 10f64.powf(12.0 + 6.0 * rng.next_f64()).round() as i64,
                3 => i64::MAX - i,
                _ => 1 + (rng.next_f64() * 1000.0) as i64,
            })
            .collect();
        check(&values);
        check(&[i64::MIN + 1, -1, 0, 1, i64::MAX]);
        check(&[0; 10]);
        check(&[-5; 3]);
        // Mostly negative: the median and p90 are negative, next to zeros.
        let negative: Vec<i64> = (0..10_000).map(|i| if i % 20 == 0 { 0 } else { -1 - i }).collect();
        check(&negative);
    }

    #[test]
    #[allow(clippy::cast_precision_loss, clippy::float_cmp)]
    fn buckets_stay_few() {
        let mut sketch = Sketch::default();
        for x in [1, 1_000, 1_000_000_000, 10_000_000_000_000, i64::MAX, -1, -i64::MAX] {
            sketch.add(x);
        }
        assert!(sketch.positive.counts.len() < 4_400, "{}", sketch.positive.counts.len());
        assert!(sketch.negative.counts.len() < 4_400, "{}", sketch.negative.counts.len());
        assert_eq!(sketch.percentile(0.0), sketch.min as f64);
    }

    #[test]
    fn empty_is_zero() {
        let sketch = Sketch::default();
        assert_eq!((sketch.count(), sketch.max()), (0, 0));
        assert!(sketch.percentile(50.0).abs() < f64::EPSILON);
    }
}
