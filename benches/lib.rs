//! Criterion benchmarks of tracewire's hot paths against their peers, measured in the same
//! run: one file per hot path, each starting with a comment that records its latest results
//! and the machine. Their set-up (exporters, the relay and exec-servers, store and
//! collector fixtures) is `tracewire_bench::fixtures`, shared with the
//! `tracewire-bench compare` program.
//!
//! ```text
//! cargo bench -p tracewire-benches                              # all of them
//! cargo bench -p tracewire-benches --bench relay -- --quick     # one, quickly
//! cargo test -p tracewire-benches --benches                     # each routine once (CI)
//! ```
#![deny(missing_docs)]

use std::time::{Duration, Instant};

use criterion::Criterion;

/// The criterion settings every bench here uses: short runs (10 samples, 0.5 s warm-up,
/// 2 s of measurement per routine), so that all of them finish in a few minutes on 2
/// cores. Command-line options (`--quick`, `--measurement-time`, ...) still apply.
pub fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// `criterion_group!` with [`criterion()`]'s settings over these targets, and
/// `criterion_main!`: the last line of every bench file here.
#[macro_export]
macro_rules! main {
    ($($target:path),+ $(,)?) => {
        criterion::criterion_group! {
            name = benches;
            config = $crate::criterion();
            targets = $($target),+
        }
        criterion::criterion_main!(benches);
    };
}

/// For criterion's `iter_custom`: the time `iters` calls of `f` take, run in rounds of at
/// most `round` calls with `between` after each round, untimed (a flush, so that no round
/// measures a backlog the previous one left).
pub fn timed_in_rounds(iters: u64, round: u64, mut f: impl FnMut(), mut between: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(round.max(1));
        let t0 = Instant::now();
        for _ in 0..n {
            f();
        }
        total += t0.elapsed();
        between();
        left -= n;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::timed_in_rounds;

    #[test]
    fn every_iteration_runs_once_in_rounds_of_at_most_round() {
        let calls = std::cell::Cell::new(0u64);
        let mut rounds = Vec::new();
        timed_in_rounds(10, 4, || calls.set(calls.get() + 1), || rounds.push(calls.get()));
        assert_eq!(calls.get(), 10);
        // The calls made by the end of each round.
        assert_eq!(rounds, [4, 8, 10]);
    }
}
