//! The statistics behind [`crate::diff`]: a seeded random number generator, nearest-rank
//! percentiles, the bootstrap of a percentile's change, the Mann-Whitney U test (normal
//! approximation with tie and continuity corrections) and Holm's step-down correction.
//!
//! ```
//! use tracewire_collector::diff::stats::{holm, mann_whitney};
//!
//! // R's `wilcox.test` example (`?wilcox.test`): W = 35.
//! let x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
//! let y = [1.15, 0.88, 0.90, 0.74, 1.21];
//! let test = mann_whitney(&x, &y);
//! assert_eq!(test.u, 35.0);
//! assert!((test.p_value - 0.2446).abs() < 1e-3);
//! assert_eq!(holm(&[0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02]);
//! ```

// Counts become f64 for the arithmetic; precision is far beyond what the tests need. The
// names are the formulas' (n, k, u, z, ...).
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::many_single_char_names
)]

/// A small, fast, seeded generator (xoshiro256**, seeded through SplitMix64): the same seed
/// gives the same numbers on every platform.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self { s: [next(), next(), next(), next()] }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in the open interval (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`; 0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Gamma with shape `a > 0` and scale 1 (Marsaglia and Tsang, 2000).
    pub fn gamma(&mut self, a: f64) -> f64 {
        if a < 1.0 {
            let u = self.uniform();
            return self.gamma(a + 1.0) * u.powf(1.0 / a);
        }
        let d = a - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.uniform();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// Beta with shapes `a, b > 0`.
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        if x + y > 0.0 { x / (x + y) } else { 0.5 }
    }
}

/// The rank (from 1) of the nearest-rank `p` percentile among `n` values: `ceil(p/100 * n)`,
/// clamped to `1..=n` (0 for `n == 0`).
pub fn rank(p: f64, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    (((p / 100.0) * n as f64).ceil() as usize).clamp(1, n)
}

/// The nearest-rank percentile of sorted values, as the report computes its percentiles
/// ([`crate::percentile_ns`]); 0 for no values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match rank(p, sorted.len()) {
        0 => 0.0,
        r => sorted[r - 1],
    }
}

/// The `p` percentile of one bootstrap resample of `sorted` (`n` draws with replacement),
/// drawn directly: the `k`-th smallest of `n` uniform draws is Beta(`k`, `n + 1 - k`), and
/// the draw `u` picks the value at rank `ceil(n * u)`, so the resample's `k`-th smallest is
/// the value at rank `ceil(n * U)` with `U ~ Beta(k, n + 1 - k)`. The result has exactly
/// the distribution of resampling all `n` values and taking the percentile, at a cost that
/// does not grow with `n`.
pub fn resampled_percentile(sorted: &[f64], p: f64, rng: &mut Rng) -> f64 {
    let n = sorted.len();
    let k = rank(p, n);
    if k == 0 {
        return 0.0;
    }
    let u = rng.beta(k as f64, (n + 1 - k) as f64);
    let j = ((n as f64 * u).ceil() as usize).clamp(1, n);
    sorted[j - 1]
}

/// The percentile bootstrap interval, at `confidence`, for the change of the `p` percentile
/// from `base` to `new` (both sorted): each of `resamples` rounds resamples both sides
/// independently ([`resampled_percentile`]) and records `new - base`; the interval runs
/// from the `(1 - confidence) / 2` to the `(1 + confidence) / 2` quantile (nearest rank)
/// of the recorded changes. `[0, 0]` when a side is empty.
pub fn bootstrap_change_ci(
    base: &[f64],
    new: &[f64],
    p: f64,
    resamples: usize,
    confidence: f64,
    rng: &mut Rng,
) -> [f64; 2] {
    if base.is_empty() || new.is_empty() || resamples == 0 {
        return [0.0, 0.0];
    }
    let mut changes: Vec<f64> =
        (0..resamples).map(|_| resampled_percentile(new, p, rng) - resampled_percentile(base, p, rng)).collect();
    changes.sort_unstable_by(f64::total_cmp);
    let alpha = 1.0 - confidence;
    [percentile(&changes, 100.0 * alpha / 2.0), percentile(&changes, 100.0 * (1.0 - alpha / 2.0))]
}

/// The complementary error function (Numerical Recipes' `erfcc`, fractional error below
/// 1.2e-7 everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The result of [`mann_whitney`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: the number of pairs (x, y) with x > y, ties counting one half
    /// (R's `W`).
    pub u: f64,
    /// The standardized statistic, continuity-corrected: positive when the first sample
    /// tends to be larger.
    pub z: f64,
    /// The two-sided p-value of the normal approximation (1 when a sample is empty or every
    /// value is tied).
    pub p_value: f64,
}

/// The Mann-Whitney U test (Wilcoxon rank-sum) of `x` against `y`: midranks for ties,
/// `mean = n1 n2 / 2`, `var = n1 n2 / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1)))` over the
/// groups of `t` tied values, a continuity correction of 1/2, and the two-sided p-value of
/// the normal approximation (as R's `wilcox.test(x, y, exact = FALSE, correct = TRUE)`).
pub fn mann_whitney(x: &[f64], y: &[f64]) -> MannWhitney {
    let (n1, n2) = (x.len(), y.len());
    let mut all: Vec<(f64, bool)> = x.iter().map(|&v| (v, true)).chain(y.iter().map(|&v| (v, false))).collect();
    all.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let (mut r1, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && all[j].0.total_cmp(&all[i].0).is_eq() {
            j += 1;
        }
        // Ranks i+1 ..= j share their mean.
        let midrank = (i + 1 + j) as f64 / 2.0;
        let in_x = all[i..j].iter().filter(|(_, first)| *first).count();
        r1 += midrank * in_x as f64;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    let (f1, f2, fnn) = (n1 as f64, n2 as f64, n as f64);
    let u = r1 - f1 * (f1 + 1.0) / 2.0;
    if n1 == 0 || n2 == 0 {
        return MannWhitney { u, z: 0.0, p_value: 1.0 };
    }
    let mean = f1 * f2 / 2.0;
    let var = f1 * f2 / 12.0 * ((fnn + 1.0) - ties / (fnn * (fnn - 1.0)));
    if var <= 0.0 {
        return MannWhitney { u, z: 0.0, p_value: 1.0 };
    }
    let d = u - mean;
    let z = d.signum() * (d.abs() - 0.5).max(0.0) / var.sqrt();
    let p_value = erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0);
    MannWhitney { u, z, p_value }
}

/// Holm's step-down adjustment of `p` values (each compared with the significance level
/// afterwards): sorted ascending, the `i`-th smallest (from 0) becomes
/// `max over j <= i of min(1, (m - j) p_(j))`; returned in the given order.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (i, &k) in order.iter().enumerate() {
        running = running.max(((m - i) as f64 * p[k]).min(1.0));
        adjusted[k] = running;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in
            [(0.0, 1.0), (0.5, 0.479_500_122), (1.0, 0.157_299_207), (2.0, 0.004_677_735), (-1.0, 1.842_700_793)]
        {
            assert!((erfc(x) - want).abs() < 1e-7 * want.max(1.0), "erfc({x}) = {}", erfc(x));
        }
    }

    #[test]
    fn uniform_and_below_stay_in_range() {
        let mut rng = Rng::new(7);
        for _ in 0..10_000 {
            let u = rng.uniform();
            assert!(u > 0.0 && u < 1.0);
            assert!(rng.below(3) < 3);
        }
    }
}
