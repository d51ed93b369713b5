//! tracewire against what a user would pick instead, measured side by side.
//!
//! Two front ends share this library:
//!
//! - the `tracewire-bench compare` program (`src/main.rs`): every comparison in one process
//!   and one run, so that the ratios compare like with like on the same machine state (in
//!   the manner of opentelemetry-rust's `stress` program);
//!
//!   ```text
//!   cargo run --release -p tracewire-bench -- compare [--quick] [--json out.json]
//!   ```
//!
//! - the criterion benchmarks under `benches/` (package `tracewire-benches`), one file per
//!   hot path, which take their set-up from [`fixtures`].
//!
//! Every [`Row`] has `ours`, `peer`, a unit, a `ratio` oriented so that higher is better for
//! tracewire, the goal and whether it is met; both sides of a row do the same work, which
//! its note names. Method and the latest table:
//! `docs/benchmarks.md`.
#![deny(missing_docs)]

pub mod alloc;
mod cpu;
mod delivery;
mod demo;
mod exec;
pub mod fixtures;
mod ingest;
mod propagation;
mod relay;
mod report;
pub use report::measure;
mod spans;
mod store;

use anyhow::Result;
use serde::Serialize;

/// One comparison. Serialised as `{name, ours, peer, unit, ratio, goal, met, note}`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is compared, e.g. `traceparent.parse`.
    pub name: String,
    /// tracewire's figure.
    pub ours: f64,
    /// The peer's figure, in the same unit.
    pub peer: f64,
    /// The unit of `ours` and `peer`.
    pub unit: String,
    /// Oriented so that higher is better for tracewire.
    pub ratio: f64,
    /// The goal, in words.
    pub goal: String,
    /// Whether the goal is met.
    pub met: bool,
    /// The peer, and anything else worth knowing about the row.
    pub note: String,
}

impl Row {
    /// A row where lower values are better (times): ratio = peer / ours.
    pub fn lower_is_better(name: &str, ours: f64, peer: f64, unit: &str, goal_ratio: f64, note: &str) -> Self {
        Self::new(name, ours, peer, unit, if ours > 0.0 { peer / ours } else { f64::INFINITY }, goal_ratio, note)
    }

    /// A row where higher values are better (throughput): ratio = ours / peer.
    pub fn higher_is_better(name: &str, ours: f64, peer: f64, unit: &str, goal_ratio: f64, note: &str) -> Self {
        Self::new(name, ours, peer, unit, if peer > 0.0 { ours / peer } else { f64::INFINITY }, goal_ratio, note)
    }

    fn new(name: &str, ours: f64, peer: f64, unit: &str, ratio: f64, goal_ratio: f64, note: &str) -> Self {
        Self {
            name: name.into(),
            ours,
            peer,
            unit: unit.into(),
            ratio,
            goal: format!("ratio >= {goal_ratio}"),
            met: ratio >= goal_ratio,
            note: note.into(),
        }
    }
}

/// How much work each comparison does.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Fewer iterations (`compare --quick`).
    pub quick: bool,
}

impl Scale {
    /// `quick` in quick mode, else `full`.
    pub fn pick<T>(self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// A section of `compare`: its name (what `--only` matches) and what runs it.
pub type Section = (&'static str, fn(Scale) -> Result<Vec<Row>>);

/// Every section of `compare`, in the order they run.
pub fn sections() -> [Section; 11] {
    [
        ("propagation", propagation::run),
        ("stage_span", spans::run),
        ("delivery", delivery::run),
        ("emit_collector_down", spans::run_collector_down),
        ("remote_exec", exec::run),
        ("relay_throughput", relay::run),
        ("store", store::run),
        ("collector_ingest", ingest::run),
        ("collect_db", ingest::run_db),
        ("report", report::run),
        ("demo", demo::run),
    ]
}

/// The `per_mille`-th value of `v` once sorted (nearest rank). `v` must not be empty.
pub fn percentile<T: Copy + Ord>(v: &mut [T], per_mille: usize) -> T {
    v.sort_unstable();
    v[(v.len() - 1) * per_mille / 1000]
}

#[cfg(test)]
mod tests {
    use super::{Row, percentile, sections};

    #[test]
    fn ratios_are_oriented_so_that_higher_is_better_for_tracewire() {
        // A time: ours 10 ns against 200 ns is 20x in our favour.
        let r = Row::lower_is_better("t", 10.0, 200.0, "ns/op", 20.0, "");
        assert!((r.ratio - 20.0).abs() < 1e-12 && r.met);
        assert!(!Row::lower_is_better("t", 11.0, 200.0, "ns/op", 20.0, "").met);
        // A throughput: ours 0.5 GB/s against 1.0 is 0.5x.
        let r = Row::higher_is_better("g", 0.5, 1.0, "GB/s", 0.7, "");
        assert!((r.ratio - 0.5).abs() < 1e-12 && !r.met);
        let json = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 8, "{json}");
        for k in ["name", "ours", "peer", "unit", "ratio", "goal", "met", "note"] {
            assert!(json.get(k).is_some(), "{k} missing from {json}");
        }
    }

    #[test]
    fn percentile_is_the_nearest_rank_of_the_sorted_values() {
        let mut v = [5, 1, 4, 2, 3];
        assert_eq!(percentile(&mut v, 0), 1);
        assert_eq!(percentile(&mut v, 500), 3);
        assert_eq!(percentile(&mut v, 1000), 5);
    }

    #[test]
    fn section_names_are_distinct() {
        let names: std::collections::HashSet<&str> = sections().iter().map(|s| s.0).collect();
        assert_eq!(names.len(), sections().len());
    }
}
