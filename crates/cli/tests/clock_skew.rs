//! Clock offsets as NTP estimates them, end to end: a real `tracewire exec-server` whose
//! clock runs 50 ms ahead of (or behind) the client's, under libfaketime, and real
//! `tracewire exec` clients, exporting to a real `tracewire collect`. The report says the
//! offset within 0.5 ms and puts every server span back where it happened.
//!
//! libfaketime (Debian package `faketime`) is preloaded into the server directly: the
//! `faketime` wrapper forks, and would not pass the test's signals on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use tracewire_testkit::TempDir;

mod common;
use common::{BIN, CollectProcess, ServerProcess, otel_env};

/// Execs run against the server: a clock sample each (their Start calls). The estimate's
/// error is at most half the smallest round trip among them, so more samples keep a
/// loaded machine's slow calls from deciding it.
const EXECS: u64 = 20;

/// The most an estimate and a corrected span may be off, in microseconds.
const BOUND_US: i64 = 500;

/// `libfaketimeMT.so` as Debian installs it (`dpkg -L libfaketime`).
fn libfaketime() -> PathBuf {
    let listed = Command::new("dpkg").args(["-L", "libfaketime"]).output().ok();
    let path = listed.and_then(|o| {
        String::from_utf8_lossy(&o.stdout).lines().find(|l| l.contains("libfaketimeMT.so")).map(PathBuf::from)
    });
    match path {
        Some(p) if p.exists() => p,
        _ => panic!(
            "libfaketime is missing (Debian package `faketime`): run scripts/setup-test-deps.sh, which installs it"
        ),
    }
}

/// An exec-server whose clock runs `faketime` away from this process's, exporting to
/// `collector`.
fn skewed_server(faketime: &str, collector: &str) -> ServerProcess {
    let mut env = otel_env(collector, "exec-server");
    env.push(("LD_PRELOAD", libfaketime().display().to_string()));
    env.push(("FAKETIME", faketime.to_owned()));
    ServerProcess::start(&env)
}

/// Runs execs against a server `faketime` away from the client's clock, and returns the
/// report's summary.json and traces.jaeger.json.
fn report_with_server_clock(faketime: &str) -> (Value, Value) {
    let dir = TempDir::new("clock-skew").unwrap();
    let db = dir.path().join("traces.db");
    let collector = CollectProcess::start(&db);
    let server = skewed_server(faketime, &collector.grpc);
    for _ in 0..EXECS {
        let o = Command::new(BIN)
            .args(["exec", "--server", &server.address, "--", "echo", "hi"])
            .envs(otel_env(&collector.grpc, "exec-client"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, b"hi\n");
    }
    // Both sides flush on exit; the collector acknowledges only what it queued for its
    // database, and writes it all before it exits.
    server.stop_gracefully();
    let (status, out, err) = collector.stop();
    assert!(status.success(), "{out}\n{err}");
    let report = dir.path().join("report");
    let o = Command::new(BIN).args(["report", "--db"]).arg(&db).arg("--out").arg(&report).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("clock exec-server - exec-client: "), "one line per pair: {stdout}");
    let read =
        |name: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(report.join(name)).unwrap()).unwrap() };
    (read("summary.json"), read("traces.jaeger.json"))
}

/// The checks of one run: the offset said, and every server span under a client's call
/// back inside it, within the bound.
fn check(faketime: &str, expected_ms: f64) {
    let (summary, jaeger) = report_with_server_clock(faketime);
    let clock = summary["clock"].as_array().unwrap_or_else(|| panic!("no clock in {summary}"));
    assert_eq!(clock.len(), 1, "one pair: {clock:?}");
    let pair = &clock[0];
    assert_eq!((pair["from"].as_str(), pair["to"].as_str()), (Some("exec-client"), Some("exec-server")), "{pair}");
    let offset = pair["offset_ms"].as_f64().unwrap();
    assert!((offset - expected_ms).abs() <= 0.5, "offset {offset} ms, expected {expected_ms} +- 0.5: {pair}");
    // The error is within the bound the estimate gives (half the smallest round trip),
    // up to the attribute's microsecond.
    let uncertainty = pair["uncertainty_ms"].as_f64().unwrap();
    assert!((offset - expected_ms).abs() <= uncertainty + 0.002, "{pair}");
    assert!(pair["samples"].as_u64().unwrap() >= EXECS, "a sample per call: {pair}");

    // traces.jaeger.json holds the corrected times, and says which spans moved.
    let mut checked: u64 = 0;
    for trace in jaeger["data"].as_array().unwrap() {
        let services: HashMap<&str, &str> = trace["processes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, p)| (id.as_str(), p["serviceName"].as_str().unwrap()))
            .collect();
        let spans = trace["spans"].as_array().unwrap();
        let by_id: HashMap<&str, &Value> = spans.iter().map(|s| (s["spanID"].as_str().unwrap(), s)).collect();
        let service = |s: &Value| services[s["processID"].as_str().unwrap()];
        for s in spans.iter().filter(|s| service(s) == "exec-server") {
            let warnings = s["warnings"].as_array().map_or(0, Vec::len);
            assert_eq!(warnings, 1, "every server span was moved, and says so once: {s}");
            let Some(parent) = s["references"].get(0).and_then(|r| by_id.get(r["spanID"].as_str().unwrap())) else {
                continue;
            };
            // A call answered (it has a clock sample): the server received the request
            // after the client sent it and before the client got the response, so its
            // first span starts inside the call. (A call the client dropped on exit, such
            // as a CloseStdin racing the end of the process, may reach the server later.)
            let answered = parent["tags"].as_array().unwrap().iter().any(|t| t["key"] == "tracewire.net.rtt_us");
            if service(parent) != "exec-client" || !answered {
                continue;
            }
            let (ps, pd, cs) = (
                parent["startTime"].as_i64().unwrap(),
                parent["duration"].as_i64().unwrap(),
                s["startTime"].as_i64().unwrap(),
            );
            assert!(
                cs - ps >= -BOUND_US && cs - ps <= pd + BOUND_US,
                "{} starts {} us after its {} (of {} us), beyond {BOUND_US} us",
                s["operationName"],
                cs - ps,
                parent["operationName"],
                pd
            );
            checked += 1;
        }
    }
    assert!(checked >= 2 * EXECS, "rpc.queue and rpc.dispatch of each Start call at least: {checked}");
}

#[test]
fn a_server_clock_50_ms_ahead_is_measured_and_corrected_within_half_a_millisecond() {
    check("+0.05", 50.0);
}

#[test]
fn a_server_clock_50_ms_behind_is_measured_and_corrected_within_half_a_millisecond() {
    check("-0.05", -50.0);
}
