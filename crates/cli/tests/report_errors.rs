//! Errors in `tracewire report`: spans with status ERROR (OTLP `Status.code` 2) written into
//! a database with the store API, then `tracewire report --db` as a real process: the
//! printed table's `err %` column, summary.json's `stages[].error_rate` and
//! `traces_with_errors`, the red marker in report.html, and error-rate objectives from
//! `--slo` and `--slo-file` gating the exit status (3 when one fails, 1 for a bad one).

use std::path::Path;
use std::process::{Command, Output};

use tracewire_store::{SpanRecord, Store, status};
use tracewire_testkit::TempDir;

mod common;
use common::BIN;

const MS: i64 = 1_000_000;
/// 2026-01-01T00:00:00Z in Unix nanoseconds.
const START_NS: i64 = 1_767_225_600 * 1_000_000_000;

/// 100 traces of `exec` > `process.spawn`; the spawn of traces 0 and 1 fails (2 %), and
/// trace 0's `exec` fails too.
fn spans() -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for i in 0..100i64 {
        let trace_id = format!("{:032x}", i + 1);
        let base = START_NS + i * 100 * MS;
        let span = |id: &str, parent: Option<&str>, name: &str, start: i64, end: i64, failed: bool| SpanRecord {
            trace_id: trace_id.clone(),
            span_id: id.into(),
            parent_id: parent.map(Into::into),
            name: name.into(),
            service: "svc".into(),
            start_ns: base + start * MS,
            end_ns: base + end * MS,
            status_code: if failed { status::ERROR } else { status::UNSET },
            status_message: if failed { format!("{name} failed") } else { String::new() },
            ..SpanRecord::default()
        };
        out.push(span("00000000000000a1", None, "exec", 0, 10, i == 0));
        out.push(span("00000000000000b2", Some("00000000000000a1"), "process.spawn", 1, 3, i < 2));
    }
    out
}

fn database(dir: &Path) -> std::path::PathBuf {
    let db = dir.join("traces.db");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let store = Store::open(&db).unwrap();
        store.append_spans(spans()).await.unwrap();
        store.flush().await.unwrap();
    });
    db
}

fn report(db: &Path, out: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(["report", "--db"]).arg(db).arg("--out").arg(out).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_report_shows_error_rates_per_stage_and_traces_with_errors() {
    let dir = TempDir::new("tw-report-errors").unwrap();
    let db = database(dir.path());
    let out = dir.path().join("report");
    let o = report(&db, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("100 traces, 200 spans, 0 orphans, 2 traces with errors"), "{stdout}");
    // The table: `err %` beside the latency columns.
    let header = stdout.lines().find(|l| l.starts_with("stage ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(header.contains("max ms") && header.trim_end().ends_with("err %"), "{header}");
    let row = |stage: &str| {
        let line = stdout.lines().find(|l| l.split_whitespace().next() == Some(stage));
        line.unwrap_or_else(|| panic!("no {stage} row: {stdout}")).split_whitespace().collect::<Vec<_>>()
    };
    assert_eq!(row("process.spawn")[1..], ["100", "2.000", "2.000", "2.000", "2.000", "2.00"]);
    assert_eq!(row("exec")[6], "1.00");

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["traces_with_errors"], 2, "{summary}");
    let stage = |name: &str| summary["stages"].as_array().unwrap().iter().find(|s| s["stage"] == name).unwrap().clone();
    assert_eq!(
        (stage("process.spawn")["errors"].as_u64(), stage("process.spawn")["error_rate"].as_f64()),
        (Some(2), Some(0.02))
    );
    assert_eq!(stage("exec")["error_rate"].as_f64(), Some(0.01));

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    if let Some(keep) = std::env::var_os("TRACEWIRE_KEEP_REPORT") {
        std::fs::write(keep, &html).unwrap();
    }
    assert!(html.contains(r#"<tr class="errors"><td>process.spawn</td>"#), "the stage row is marked");
    assert_eq!(html.matches(r#"<circle class="error-marker""#).count(), 3, "e2e, exec and process.spawn");
}

#[test]
fn error_rate_objectives_gate_the_exit_status() {
    let dir = TempDir::new("tw-report-error-slos").unwrap();
    let db = database(dir.path());
    let out = dir.path().join("report");
    // process.spawn fails in 2 % of its spans; 2 % of the traces have an error.
    for (slo, code, line) in [
        (
            "process.spawn.error_rate<=2%",
            0,
            "SLO process.spawn.error_rate<=2%: error rate 2.00%, 2.0% of traces with an error, pass",
        ),
        (
            "process.spawn.error_rate<=1%",
            3,
            "SLO process.spawn.error_rate<=1%: error rate 2.00%, 2.0% of traces with an error, FAIL",
        ),
        ("process.spawn.error_rate<=0.5%", 3, "FAIL"),
        ("e2e.error_rate<=5%", 0, "SLO e2e.error_rate<=5%: error rate 2.00%, 2.0% of traces with an error, pass"),
        ("e2e.error_rate<=1.5%", 3, "FAIL"),
        ("exec.error_rate<=1%", 0, "pass"),
        ("no.such.stage.error_rate<=100%", 3, "FAIL"),
    ] {
        let o = report(&db, &out, &["--slo", slo]);
        assert_eq!(o.status.code(), Some(code), "{slo}: {}", text(&o));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.lines().any(|l| l.contains(&format!("SLO {slo}:")) && l.contains(line)), "{slo}: {stdout}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["slos"][0]["expr"], slo);
        assert!(
            summary["slos"][0]["error_rate"].is_number() && summary["slos"][0].get("value_ms").is_none(),
            "{summary}"
        );
    }
    // Beside a latency objective that passes, from the SLO file.
    let file = dir.path().join("slo.toml");
    std::fs::write(&file, "slos = [\"e2e.p99<=1s\", \"process.spawn.error_rate<=1%\"]\n").unwrap();
    let o = report(&db, &out, &["--slo-file", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    std::fs::write(&file, "slos = [\"e2e.p99<=1s\", \"process.spawn.error_rate<=2.5%\"]\n").unwrap();
    let o = report(&db, &out, &["--slo-file", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_malformed_error_rate_objective_is_a_clear_error() {
    let dir = TempDir::new("tw-report-error-slo-syntax").unwrap();
    let db = database(dir.path());
    let out = dir.path().join("report");
    for (slo, says) in [
        ("process.spawn.error_rate<=0.01", "a fraction such as 0.01 is not accepted"),
        ("process.spawn.error_rate<=1ms", "must be a percentage"),
        ("process.spawn.error_rate<=150%", "from 0% to 100%"),
        ("first_output.error_rate<=1%", "first_output has no error rate"),
        ("e2e.p99<=1%", "percentages are for error_rate"),
    ] {
        let o = report(&db, &out, &["--slo", slo]);
        assert_eq!(o.status.code(), Some(1), "{slo}: {}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains(slo) && stderr.contains(says), "{slo}: {stderr}");
    }
    // In a file, the error names the file too.
    let file = dir.path().join("slo.toml");
    std::fs::write(&file, "slos = [\"e2e.error_rate<=0.01\"]\n").unwrap();
    let o = report(&db, &out, &["--slo-file", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("slo.toml") && stderr.contains("percentage"), "{stderr}");
}
