//! `tracewire-bench compare`: tracewire against what a user would pick instead, every
//! comparison in one process and one run, so that the ratios compare like with like on the
//! same machine state (in the manner of opentelemetry-rust's `stress` program).
//!
//! ```text
//! cargo run --release -p tracewire-bench -- compare [--quick] [--json out.json]
//! ```
//!
//! Every row has `ours`, `peer`, a unit, a `ratio` oriented so that higher is better for
//! tracewire, the goal (issue [8/9]) and whether it is met. Method and the latest table:
//! `docs/benchmarks.md`.

mod alloc;
mod delivery;
mod exec;
mod ingest;
mod propagation;
mod relay;
mod spans;
mod store;

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(name = "tracewire-bench", about = "tracewire against its peers, side by side in one run")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every comparison, print a table, optionally write JSON.
    Compare {
        /// Fewer iterations: finishes in under 3 minutes on 2 cores.
        #[arg(long)]
        quick: bool,
        /// Write the rows as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Only the rows whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
}

/// One comparison.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) ours: f64,
    pub(crate) peer: f64,
    pub(crate) unit: String,
    /// Oriented so that higher is better for tracewire.
    pub(crate) ratio: f64,
    pub(crate) goal: String,
    pub(crate) met: bool,
    /// The peer, and anything else worth knowing about the row.
    pub(crate) note: String,
}

impl Row {
    /// A row where lower values are better (times): ratio = peer / ours.
    pub(crate) fn lower_is_better(name: &str, ours: f64, peer: f64, unit: &str, goal_ratio: f64, note: &str) -> Self {
        Self::new(name, ours, peer, unit, if ours > 0.0 { peer / ours } else { f64::INFINITY }, goal_ratio, note)
    }

    /// A row where higher values are better (throughput): ratio = ours / peer.
    pub(crate) fn higher_is_better(name: &str, ours: f64, peer: f64, unit: &str, goal_ratio: f64, note: &str) -> Self {
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
pub(crate) struct Scale {
    pub(crate) quick: bool,
}

impl Scale {
    /// `quick` in quick mode, else `full`.
    pub(crate) fn pick<T>(self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

fn main() -> Result<()> {
    let Command::Compare { quick, json, only } = Cli::parse().command;
    let scale = Scale { quick };
    let t0 = Instant::now();
    type Section = (&'static str, fn(Scale) -> Result<Vec<Row>>);
    let sections: [Section; 8] = [
        ("propagation", propagation::run),
        ("stage_span", spans::run),
        ("delivery", delivery::run),
        ("emit_collector_down", spans::run_collector_down),
        ("remote_exec", exec::run),
        ("relay_throughput", relay::run),
        ("store_append", store::run),
        ("collector_ingest", ingest::run),
    ];
    let mut rows = Vec::new();
    for (name, run) in sections {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        eprint!("{name} ... ");
        let _ = std::io::stderr().flush();
        let s = Instant::now();
        let got = run(scale).with_context(|| format!("comparison {name}"))?;
        eprintln!("{} rows in {:.1?}", got.len(), s.elapsed());
        rows.extend(got);
    }
    print_table(&rows);
    println!(
        "{} of {} goals met; {:.0} s ({})",
        rows.iter().filter(|r| r.met).count(),
        rows.len(),
        t0.elapsed().as_secs_f64(),
        if quick { "--quick" } else { "full" }
    );
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<34} {:>12} {:>12} {:<8} {:>8}  {:<14} {:<4}  note",
        "name", "ours", "peer", "unit", "ratio", "goal", "met"
    );
    for r in rows {
        println!(
            "{:<34} {:>12.3} {:>12.3} {:<8} {:>7.2}x  {:<14} {:<4}  {}",
            r.name,
            r.ours,
            r.peer,
            r.unit,
            r.ratio,
            r.goal,
            if r.met { "yes" } else { "NO" },
            r.note
        );
    }
}

/// The `per_mille`-th value of sorted samples (nearest rank).
pub(crate) fn percentile<T: Copy + Ord>(v: &mut [T], per_mille: usize) -> T {
    v.sort_unstable();
    v[(v.len() - 1) * per_mille / 1000]
}

#[cfg(test)]
mod tests {
    use super::Row;

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
        for k in ["name", "ours", "peer", "unit", "ratio", "goal", "met"] {
            assert!(json.get(k).is_some(), "{k} missing from {json}");
        }
    }
}
