//! The `demo` section: how much of a remote exec via the relay no stage explains.
//!
//! Runs the release `tracewire demo --via relay` (next to the bench binary) and reads its
//! `summary.json`: `unattributed_fraction` (the share of root time no descendant span or
//! derived `net.transit` interval covers) against the goal of under 1 %, and the transit
//! share of the critical path for the note. No peer: the peer column is the goal.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::{Row, Scale};

/// Runs the demo once into `out` and returns its `summary.json`.
fn demo(bin: &Path, execs: usize, out: &Path) -> Result<serde_json::Value> {
    let status = std::process::Command::new(bin)
        .args(["demo", "--via", "relay", "--execs", &execs.to_string(), "--out"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    // The demo exits 1 when an objective is missed; its summary is written either way.
    if !matches!(status.code(), Some(0 | 1)) {
        bail!("tracewire demo failed ({status})");
    }
    let text = std::fs::read_to_string(out.join("summary.json")).context("reading the demo's summary.json")?;
    Ok(serde_json::from_str(&text)?)
}

/// The `demo` rows.
pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("the bench binary has no directory")?.join("tracewire");
    if !bin.is_file() {
        bail!("no tracewire binary next to the bench: cargo build --release --all-features -p tracewire-cli");
    }
    let execs = scale.pick(50, 200);
    let rounds = scale.pick(3, 5);
    let out = std::env::temp_dir().join(format!("tw-bench-demo-{}", std::process::id()));
    let mut fractions = Vec::with_capacity(rounds);
    let mut transit = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let summary = demo(&bin, execs, &out)?;
        let fraction =
            summary["unattributed_fraction"].as_f64().context("summary.json has no unattributed_fraction")?;
        fractions.push(fraction * 100.0);
        let share = summary["critical_path"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["stage"] == "net.transit"))
            .and_then(|r| r["share"].as_f64())
            .unwrap_or(0.0);
        transit.push(share * 100.0);
    }
    let _ = std::fs::remove_dir_all(&out);
    let mut sorted = fractions.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let list = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    let note = format!(
        "release `tracewire demo --via relay --execs {execs}`, {rounds} runs, the median: unattributed % of end-to-end time per run [{}]; net.transit % of the critical path per run [{}]; peer column: the goal",
        list(&fractions),
        list(&transit)
    );
    Ok(vec![Row::lower_is_better("demo.relay.unattributed", median, 1.0, "% e2e", 1.0, &note)])
}
