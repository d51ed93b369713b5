//! `tracewire collect --db --retain --max-spans`: a real collector process pruning its
//! database, whole traces at a time, while it runs and once more on exit.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{BIN, Service};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tracewire_store::Store;

const HOUR_NS: u64 = 3_600_000_000_000;

fn span(trace: u8, i: u8, start: u64, end: u64) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![trace, i + 1, 0, 0, 0, 0, 0, 1],
        parent_span_id: if i == 0 { Vec::new() } else { vec![trace, 1, 0, 0, 0, 0, 0, 1] },
        name: format!("s{i}"),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Span::default()
    }
}

/// One OTLP/HTTP protobuf export (HTTP/1.1, a fresh connection); returns the status line.
fn post(http: &str, spans: Vec<Span>) -> String {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("retained".into())) }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    };
    let body = request.encode_to_vec();
    let mut conn = TcpStream::connect(http).unwrap();
    write!(
        conn,
        "POST /v1/traces HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    conn.write_all(&body).unwrap();
    let mut answer = String::new();
    BufReader::new(conn).read_line(&mut answer).unwrap();
    answer.trim().to_owned()
}

/// Spans per trace (first id byte) in the database.
async fn traces_in(store: &Store) -> BTreeMap<u8, usize> {
    let mut out = BTreeMap::new();
    for s in store.spans().await.unwrap() {
        let first = u8::from_str_radix(&s.trace_id[..2], 16).unwrap();
        *out.entry(first).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_prunes_old_and_excess_traces_whole_while_running_and_counts_them() {
    let dir = tracewire_testkit::TempDir::new("tracewire-retain-test").unwrap();
    let db = dir.path().join("traces.db");
    let db_arg = db.display().to_string();
    let mut collect = Service::start(
        &[
            "collect",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--db",
            &db_arg,
            "--retain",
            "1h",
            "--max-spans",
            "10",
            "--prune-every",
            "1s",
        ],
        &[],
    );
    let mut line = String::new();
    collect.stdout.read_line(&mut line).unwrap();
    // "collecting OTLP/gRPC on A, OTLP/HTTP on http://B/v1/traces, storing in DB"
    let http = line
        .split("HTTP on http://")
        .nth(1)
        .and_then(|r| r.split("/v1").next())
        .unwrap_or_else(|| panic!("unexpected: {line:?}"))
        .to_owned();

    let now = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap();
    // Trace 1: three spans that ended two days ago (past --retain 1h).
    let mut spans: Vec<Span> = (0..3).map(|i| span(1, i, now - 50 * HOUR_NS, now - 48 * HOUR_NS)).collect();
    // Trace 2 straddles the age cut: its root began three hours ago, its child ended just
    // now (kept by --retain; the oldest by first start, so --max-spans takes it first).
    spans.push(span(2, 0, now - 3 * HOUR_NS, now));
    spans.push(span(2, 1, now - 3 * HOUR_NS, now - 2 * HOUR_NS));
    spans.push(span(2, 2, now - HOUR_NS / 2, now));
    spans.push(span(2, 3, now - HOUR_NS / 2, now));
    // Traces 3..=5: four recent spans each, started in that order a quarter hour ago.
    for t in 3..=5u8 {
        let start = now - HOUR_NS / 4 + u64::from(t) * 1_000_000_000;
        spans.extend((0..4).map(|i| span(t, i, start + u64::from(i), start + 1_000_000 + u64::from(i))));
    }
    // 3 + 4 + 12 = 19 spans.
    assert_eq!(post(&http, spans), "HTTP/1.1 200 OK");

    // The periodic prune: trace 1 by age (3), then over 10 the oldest by first start,
    // trace 2 (4; 12 left), then trace 3 (4; 8 left): traces 4 and 5 stay, whole.
    let store = Store::open(&db).unwrap();
    let kept = BTreeMap::from([(4, 4), (5, 4)]);
    let (store_ref, kept_ref) = (&store, &kept);
    let pruned = tracewire_testkit::eventually_async(Duration::from_secs(20), move || async move {
        traces_in(store_ref).await == *kept_ref
    })
    .await;
    assert!(pruned.is_ok(), "not pruned while running: {:?}", traces_in(&store).await);

    collect.signal("-TERM");
    let status = collect.exit_within(Duration::from_secs(15));
    let mut out = String::new();
    collect.stdout.read_to_string(&mut out).unwrap();
    assert!(status.success(), "collect exited with {status}: {out}");
    assert!(out.contains("received 19 spans"), "{out}");
    assert!(out.contains("; 8 spans stored in"), "{out}");
    assert!(out.contains("; pruned 11 spans (3 traces)"), "{out}");
    assert_eq!(traces_in(&store).await, BTreeMap::from([(4, 4), (5, 4)]));
}

#[test]
fn retention_needs_a_database_and_a_valid_duration() {
    let out = Command::new(BIN).args(["collect", "--retain", "7d"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--db"));
    let out = Command::new(BIN).args(["collect", "--db", "x.db", "--retain", "7 weeks"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a number and a unit, ms, s, m, h or d"));
}
