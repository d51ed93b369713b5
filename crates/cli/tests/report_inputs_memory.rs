//! `tracewire report --otlp-json` reads JSON lines with bounded memory: the peak RSS of the
//! real process (`wait4`'s rusage) barely grows from 50k to 200k spans, even with every
//! trace's spans spread over the whole file; the report equals the one `--db` gives for the
//! same spans; a malformed line is named by its number.
#![allow(unsafe_code)] // wait4 on our own child

use std::path::Path;
use std::process::{Command, Output};

mod common;
mod memory;
use common::BIN;
use memory::{SmallAndLarge, run_measured, spans};

/// Runs `tracewire report ARGS --out OUT` with `TMPDIR=TMP`; its output and peak RSS in MiB.
fn report(args: &[&std::ffi::OsStr], out: &Path, tmp: &Path) -> (Output, f64) {
    run_measured(Command::new(BIN).arg("report").args(args).arg("--out").arg(out).env("TMPDIR", tmp))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn json_lines_are_analyzed_with_bounded_memory_and_equal_the_database_path() {
    let dir = tracewire_testkit::TempDir::new("tracewire-report-inputs-memory").unwrap();
    let SmallAndLarge { small: small_file, large: large_file, large_mib: file_mib, tmp } =
        SmallAndLarge::write(dir.path(), 1);
    let flag = std::ffi::OsStr::new("--otlp-json");
    let (_, rss_small) = report(&[flag, small_file.as_os_str()], &dir.path().join("small"), &tmp);
    let (o, rss_large) = report(&[flag, large_file.as_os_str()], &dir.path().join("large"), &tmp);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(&format!("read 200000 spans from {}", large_file.display())), "{stderr}");
    eprintln!("peak RSS: {rss_small:.1} MiB at 50k spans, {rss_large:.1} MiB at 200k spans ({file_mib:.1} MiB file)");
    // Four times the spans: the peak barely moves. (Read whole, the file and its spans
    // were all in memory: several times the file's size, growing with it.)
    assert!(rss_large < rss_small * 1.35, "{rss_small:.1} MiB -> {rss_large:.1} MiB");

    // The same spans from a database give the same report, exports included.
    let db = dir.path().join("large.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut config = tracewire_store::StoreConfig::default();
        config.full = tracewire_store::FullPolicy::Wait(std::time::Duration::from_secs(60));
        let store = tracewire_store::Store::open_with(&db, config).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        spans(200_000, 1, |chunk| tx.send(chunk).unwrap());
        drop(tx);
        while let Some(chunk) = rx.recv().await {
            store.append_spans(chunk).await.unwrap();
        }
        store.flush().await.unwrap();
    });
    report(&[std::ffi::OsStr::new("--db"), db.as_os_str()], &dir.path().join("db"), &tmp);
    let summary = |name: &str| -> serde_json::Value {
        serde_json::from_str(&read(&dir.path().join(name).join("summary.json"))).unwrap()
    };
    let from_db = summary("db");
    assert_eq!((from_db["spans"].as_u64(), from_db["traces"].as_u64()), (Some(200_000), Some(20_000)));
    assert_eq!(summary("large"), from_db);
    assert_eq!(read(&dir.path().join("large/traces.jaeger.json")), read(&dir.path().join("db/traces.jaeger.json")));
    // The temporary database the spans were gathered in is gone.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "left in TMPDIR");
}

#[test]
fn a_malformed_line_is_named_by_its_number() {
    let dir = tracewire_testkit::TempDir::new("tracewire-report-inputs-errors").unwrap();
    let mut lines = Vec::new();
    spans(100, 1, |chunk| {
        tracewire_collector::otlp_json::write_lines_per(&chunk, &mut lines, 10).unwrap();
    });
    let mut lines: Vec<String> = String::from_utf8(lines).unwrap().lines().map(str::to_owned).collect();
    let run = |lines: &[String]| {
        let file = dir.path().join("in.jsonl");
        std::fs::write(&file, lines.join("\n")).unwrap();
        let o = Command::new(BIN)
            .arg("report")
            .arg("--otlp-json")
            .arg(&file)
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        (file, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    lines[6] = lines[6].replacen("\"spanId\":\"", "\"spanId\":\"x", 1);
    let (file, stderr) = run(&lines);
    assert!(
        stderr.contains(&format!("{}:7: resourceSpans[0].scopeSpans[0].spans[0].spanId: \"x", file.display())),
        "{stderr}"
    );
    lines[6] = "{\"resourceSpans\":[}".to_owned();
    let (file, stderr) = run(&lines);
    assert!(
        stderr.contains(&format!("{}: not valid JSON: expected value at line 7 column 19", file.display())),
        "{stderr}"
    );
    assert!(!dir.path().join("out").exists(), "no report from a bad input");
}

/// A Jaeger JSON file alone is analyzed trace object by trace object; a trace in two
/// objects is named, not analyzed as two traces.
#[test]
fn a_jaeger_file_alone_with_a_trace_split_over_two_objects_is_analyzed_whole() {
    let dir = tracewire_testkit::TempDir::new("tracewire-report-inputs-jaeger").unwrap();
    let mut all = Vec::new();
    spans(30, 1, |chunk| all.extend(chunk));
    let doc = tracewire_collector::jaeger::to_jaeger(&all);
    let whole = dir.path().join("whole.json");
    std::fs::write(&whole, doc.to_string()).unwrap();
    // The same spans, one trace's split over two trace objects (its second half last).
    let mut split = doc.clone();
    let data = split["data"].as_array_mut().unwrap();
    let mut second = data[1].clone();
    let spans_of = data[1]["spans"].as_array_mut().unwrap();
    assert!(spans_of.len() >= 2, "{spans_of:?}");
    let rest = spans_of.split_off(spans_of.len() / 2);
    second["spans"] = serde_json::Value::Array(rest);
    data.push(second);
    let twice = dir.path().join("split.json");
    std::fs::write(&twice, split.to_string()).unwrap();
    let summary = |file: &std::path::Path, out: &str| -> serde_json::Value {
        let o = Command::new(BIN)
            .args(["report", "--quiet", "--jaeger-json"])
            .arg(file)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(out).join("summary.json")).unwrap()).unwrap()
    };
    let (a, b) = (summary(&whole, "whole"), summary(&twice, "split"));
    assert_eq!(a["traces"], b["traces"], "the split trace is one trace");
    assert_eq!(a["spans"], b["spans"]);
    assert_eq!(a["stages"], b["stages"]);
    assert_eq!(a["e2e"], b["e2e"]);
}
