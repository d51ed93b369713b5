//! `tracewire-bench compare`: tracewire against what a user would pick instead, every
//! comparison in one process and one run, so that the ratios compare like with like on the
//! same machine state (in the manner of opentelemetry-rust's `stress` program).
//!
//! ```text
//! cargo run --release -p tracewire-bench -- compare [--quick] [--json out.json] [--markdown out.md]
//! ```
//!
//! Every row has `ours`, `peer`, a unit, a `ratio` oriented so that higher is better for
//! tracewire, the goal and whether it is met; both sides of a row do the same work, which
//! its note names. Method and the latest table:
//! `docs/benchmarks.md`. The comparisons and their set-up live in the library
//! (`src/lib.rs`), which the criterion benches under `benches/` share.

use std::fmt::Write as _;
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
        /// Write the rows as a Markdown table, with each row's note below it, here (the
        /// form of docs/benchmarks.md's latest results).
        #[arg(long)]
        markdown: Option<std::path::PathBuf>,
        /// Only the sections whose name contains this (`propagation`, `stage_span`, `delivery`,
        /// `emit_collector_down`, `remote_exec`, `relay_throughput`, `store`, `collector_ingest`, `collect_db`,
        /// `report`, `demo`).
        #[arg(long)]
        only: Option<String>,
    },
    /// Runs a command and prints its wall time (ns) and peak RSS (bytes): how `compare`
    /// measures the `tracewire` binary from a fresh process, whose small resident size is
    /// where the child's peak RSS starts.
    #[command(hide = true)]
    Measure {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
}

fn main() -> Result<()> {
    let (quick, json, markdown, only) = match Cli::parse().command {
        Command::Compare { quick, json, markdown, only } => (quick, json, markdown, only),
        Command::Measure { command } => {
            let (wall, max_rss) = tracewire_bench::measure(&command)?;
            println!("{} {max_rss}", wall.as_nanos());
            return Ok(());
        }
    };
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
    if let Some(path) = markdown {
        std::fs::write(&path, markdown_table(&rows)).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The rows as docs/benchmarks.md shows them: a table, then each row's note.
fn markdown_table(rows: &[Row]) -> String {
    let mut out =
        String::from("| row | tracewire | peer | unit | ratio | goal | met |\n|---|---:|---:|---|---:|---|---|\n");
    for r in rows {
        let none = r.goal.starts_with("none");
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {:.2}x | {} | {} |",
            r.name,
            figure(r.ours),
            figure(r.peer),
            r.unit,
            r.ratio,
            r.goal,
            if none {
                "-"
            } else if r.met {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    out.push_str("\nEach row's note, from the same run:\n");
    for r in rows {
        let _ = writeln!(out, "- `{}`: {}", r.name, r.note);
    }
    out
}

/// `v` with four significant digits at most below 1,000, and thousands separated above.
fn figure(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v.abs() >= 1000.0 {
        // Whole numbers from here: f64 holds them exactly far beyond any figure here.
        #[allow(clippy::cast_possible_truncation)]
        let whole = v.round() as i64;
        let digits = whole.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        return if whole < 0 { format!("-{grouped}") } else { grouped };
    }
    let decimals = if v.abs() >= 100.0 {
        1
    } else if v.abs() >= 10.0 {
        2
    } else {
        3
    };
    format!("{v:.decimals$}")
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

#[cfg(test)]
mod tests {
    use super::figure;

    #[test]
    fn figures_read_as_the_docs_write_them() {
        assert_eq!(figure(1_234_567.4), "1,234,567");
        assert_eq!(figure(-2_500.0), "-2,500");
        assert_eq!(figure(980.24), "980.2");
        assert_eq!(figure(36.401), "36.40");
        assert_eq!(figure(0.6512), "0.651");
        assert_eq!(figure(f64::INFINITY), "-");
    }
}
