//! `tracewire demo` keeps its spans in a SQLite database, `out/traces.db` (memory bounded
//! whatever `--execs`), and prints its peak RSS in its summary line.

mod common;

use std::process::{Command, Stdio};

use common::BIN;

#[test]
fn demo_prints_its_peak_rss_and_keeps_its_spans_in_out_traces_db() {
    let dir = tracewire_testkit::TempDir::new("tracewire-demo-rss").unwrap();
    let child = Command::new(BIN)
        .args(["demo", "--execs", "5", "--via", "direct", "--slo", "e2e.p99<=10s", "--out"])
        .arg(dir.path().join("out"))
        .env("TMPDIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // "5 remote execs (direct) in 41.2ms; 0 spans dropped; peak RSS 43.6 MiB"
    let line = stdout.lines().next().unwrap();
    assert!(line.starts_with("5 remote execs (direct) in "), "{line}");
    let rss = line.split("; peak RSS ").nth(1).unwrap_or_else(|| panic!("no peak RSS in {line:?}"));
    let mib: f64 = rss.strip_suffix(" MiB").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{rss:?}"));
    // A real figure: more than the binary's own pages, far less than a leak would give.
    assert!((4.0..2048.0).contains(&mib), "peak RSS {mib} MiB");
    // Every span went through the database and back: the report has the five execs.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/summary.json")).unwrap()).unwrap();
    let exec = summary["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "exec").unwrap();
    assert_eq!(exec["count"], 5, "{exec}");
    // The spans are in out/traces.db, and nothing is left under TMPDIR.
    assert!(dir.path().join("out/traces.db").is_file());
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("tracewire-demo-{pid}-")))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
