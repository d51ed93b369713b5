//! `tracewire-bench compare`: tracewire against what a user would pick instead, every
//! comparison in one process and one run, so that the ratios compare like with like on the
//! same machine state (in the manner of opentelemetry-rust's `stress` program).
//!
//! ```text
//! cargo run --release -p tracewire-bench -- compare [--quick] [--json out.json]
//! ```
//!
//! Every row has `ours`, `peer`, a unit, a `ratio` oriented so that higher is better for
//! tracewire, the goal and whether it is met; both sides of a row do the same work, which
//! its note names. Method and the latest table:
//! `docs/benchmarks.md`. The comparisons and their set-up live in the library
//! (`src/lib.rs`), which the criterion benches under `benches/` share.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracewire_bench::{Row, Scale, alloc, sections};

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
        /// Fewer iterations: finishes in about 2 minutes on 2 cores.
        #[arg(long)]
        quick: bool,
        /// Write the rows as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Only the sections whose name contains this (`propagation`, `stage_span`, `delivery`,
        /// `emit_collector_down`, `remote_exec`, `relay_throughput`, `store`, `collector_ingest`, `collect_db`,
        /// `report`, `demo`).
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> Result<()> {
    let Command::Compare { quick, json, only } = Cli::parse().command;
    let scale = Scale { quick };
    let t0 = Instant::now();
    let mut rows = Vec::new();
    for (name, run) in sections() {
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
    // Rows without a goal ("none", "none yet") are shown, not counted.
    let with_goal: Vec<&Row> = rows.iter().filter(|r| !r.goal.starts_with("none")).collect();
    println!(
        "{} of {} goals met ({} rows without a goal); {:.0} s ({})",
        with_goal.iter().filter(|r| r.met).count(),
        with_goal.len(),
        rows.len() - with_goal.len(),
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
