//! `tracewire report` on a database of over 100k spans: progress on stderr (none with
//! `--quiet`), a bounded traces.jaeger.json chosen with `--limit` and `--trace`, and what
//! it left out said on stdout and in summary.json.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use tracewire_collector::SpanRecord;

mod common;
use common::BIN;

/// 51,000 traces of 2 spans (102,000 spans): trace `t` lasts `t % 1000` µs more than the
/// base; every 1000th has an ERROR span.
fn write_db(db: &Path) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut config = tracewire_store::StoreConfig::default();
        config.full = tracewire_store::FullPolicy::Wait(std::time::Duration::from_secs(60));
        let store = tracewire_store::Store::open_with(db, config).unwrap();
        let mut batch = Vec::new();
        for t in 0..51_000u32 {
            let id = tid(t);
            let dur = 1_000_000 + i64::from(t % 1000) * 1_000;
            let span = |sid: u32, parent: Option<u32>, stage: &str, end: i64| SpanRecord {
                trace_id: id.clone(),
                span_id: format!("{t:08x}{sid:08x}"),
                parent_id: parent.map(|p| format!("{t:08x}{p:08x}")),
                name: stage.into(),
                service: "api".into(),
                start_ns: 1_000,
                end_ns: 1_000 + end,
                status_code: if t % 1000 == 7 && sid == 2 { 2 } else { 0 },
                attributes: BTreeMap::from([("tracewire.stage".into(), stage.into())]),
                ..SpanRecord::default()
            };
            batch.extend([span(1, None, "exec", dur), span(2, Some(1), "rpc.call", dur / 2)]);
            if batch.len() >= 2000 {
                store.append_spans(std::mem::take(&mut batch)).await.unwrap();
            }
        }
        store.append_spans(batch).await.unwrap();
        store.flush().await.unwrap();
    });
}

/// Trace `t`'s id (its high 64 bits not zero: Jaeger writes it whole).
fn tid(t: u32) -> String {
    format!("ff{t:030x}")
}

fn report(db: &Path, out: &Path, args: &[&str]) -> Output {
    let o = Command::new(BIN).arg("report").arg("--db").arg(db).arg("--out").arg(out).args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn exported(out: &Path) -> Vec<String> {
    let j = json(&out.join("traces.jaeger.json"));
    j["data"].as_array().unwrap().iter().map(|t| t["traceID"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn report_streams_a_large_database_with_progress_and_bounded_exports() {
    let dir = tracewire_testkit::TempDir::new("tracewire-report-scale").unwrap();
    let db = dir.path().join("big.db");
    write_db(&db);

    // Defaults but --limit 3: the 3 slowest, the median, the 51 traces with an error.
    let out = dir.path().join("limited");
    let o = report(&db, &out, &["--limit", "3"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(stderr.contains("read 100000 spans, analyzed 50000 traces"), "{stderr}");
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["spans"], 102_000);
    assert_eq!(summary["traces"], 51_000);
    // Stages of over 16,384 spans: estimated percentiles (docs/report.md).
    assert_eq!(summary["percentiles"], serde_json::json!({"ddsketch": {"relative_error": 0.005}}));
    let ids = exported(&out);
    assert!((54..=55).contains(&ids.len()), "{}", ids.len());
    assert_eq!(summary["jaeger_traces_written"], ids.len());
    assert_eq!(summary["jaeger_traces_omitted"], 51_000 - ids.len());
    assert!(
        stdout.contains(&format!("traces.jaeger.json: {} traces written, {} left out", ids.len(), 51_000 - ids.len())),
        "{stdout}"
    );
    // The slowest: t % 1000 == 999, the last three of them (ties go to the later trace).
    for t in [48_999u32, 49_999, 50_999] {
        assert!(ids.contains(&tid(t)), "slowest trace {t} missing");
    }
    for t in (7..51_000u32).step_by(1000) {
        assert!(ids.contains(&tid(t)), "error trace {t} missing");
    }
    assert!(std::fs::metadata(out.join("report.html")).unwrap().len() < 2 * 1024 * 1024);

    // --trace chooses exactly; --quiet: no progress.
    let out = dir.path().join("chosen");
    let o = report(&db, &out, &["--quiet", "--trace", &tid(1234).to_uppercase(), "--trace", &tid(42)]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("read "), "{stderr}");
    assert_eq!(exported(&out), [tid(42), tid(1234)]);
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary["jaeger_traces_omitted"], 50_998);
}
