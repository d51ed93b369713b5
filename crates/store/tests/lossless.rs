//! The store keeps spans whole: OTLP in -> store -> OTLP out is field-for-field equal
//! (protobuf bytes, and OTLP JSON through opentelemetry-proto's serde), a schema 3 database
//! migrates without losing a span, trace and time filters run in SQL, and realistic spans
//! take less room than schema 3's text while keeping everything.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message as _;
use tracewire_store::{
    FullPolicy, SCHEMA_VERSION, SpanFilter, SpanRecord, Store, StoreConfig, hex, kind, status, to_request,
};
use tracewire_testkit::TempDir;

use crate::common::{kv, runtime, schema_3, span_with, val};

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// One attribute of every value type OTLP has (`common.proto` `AnyValue`), edge values
/// included: NaN and both infinities, -0.0, integer extremes, empty strings and bytes,
/// nested arrays and key-value lists, an empty value and an absent one.
fn every_value() -> Vec<KeyValue> {
    let nested = Value::KvlistValue(KeyValueList {
        values: vec![
            kv("deep", Value::ArrayValue(ArrayValue { values: vec![val(Value::BoolValue(true)), val(s("x"))] })),
            kv("bytes", Value::BytesValue(Vec::new())),
        ],
    });
    vec![
        kv("string", s("héllo \"quoted\" \u{1f600}")),
        kv("string.empty", s("")),
        kv("bool.true", Value::BoolValue(true)),
        kv("bool.false", Value::BoolValue(false)),
        kv("int", Value::IntValue(-42)),
        kv("int.max", Value::IntValue(i64::MAX)),
        kv("int.min", Value::IntValue(i64::MIN)),
        kv("double", Value::DoubleValue(1.5)),
        kv("double.nan", Value::DoubleValue(f64::NAN)),
        kv("double.inf", Value::DoubleValue(f64::INFINITY)),
        kv("double.-inf", Value::DoubleValue(f64::NEG_INFINITY)),
        kv("double.-0", Value::DoubleValue(-0.0)),
        kv("bytes", Value::BytesValue(vec![0, 1, 0xfe, 0xff])),
        kv(
            "array",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    val(s("a")),
                    val(Value::IntValue(1)),
                    val(Value::DoubleValue(f64::NAN)),
                    val(Value::ArrayValue(ArrayValue::default())),
                    AnyValue::default(),
                ],
            }),
        ),
        kv(
            "kvlist",
            Value::KvlistValue(KeyValueList { values: vec![kv("nested", nested), kv("b", Value::BoolValue(false))] }),
        ),
        KeyValue { key: "value.empty".into(), value: Some(AnyValue::default()), ..KeyValue::default() },
        KeyValue { key: "value.absent".into(), value: None, ..KeyValue::default() },
    ]
}

fn id(n: u64, len: usize) -> Vec<u8> {
    n.to_be_bytes().iter().copied().cycle().take(len).collect()
}

/// A request with every field of `trace.proto` set somewhere: two resources (several
/// attributes, a dropped count, a schema URL on one), scopes with name, version,
/// attributes, dropped count and schema URL (and an empty one), spans of every kind (and
/// an unknown one), every status (absent, empty, OK, ERROR with a message), trace state,
/// flags, events and links with attributes and dropped counts, dropped counts, a time
/// past `i64::MAX` nanoseconds. Start times rise in request order, so the store's order
/// (by start) gives the same request back.
fn full_request() -> ExportTraceServiceRequest {
    let mut n = 0u64;
    let mut span = |k: i32, status: Option<Status>, parent: bool| {
        n += 1;
        let start = 1_700_000_000_000_000_000 + n * 1_000_000;
        Span {
            trace_id: id(n / 3 + 1, 16),
            span_id: id(n, 8),
            trace_state: if n % 2 == 0 { "vendor=a,other=b".into() } else { String::new() },
            parent_span_id: if parent { id(n - 1, 8) } else { Vec::new() },
            flags: [0x101, 0x301, 0x1, 0][usize::try_from(n % 4).unwrap()],
            name: format!("operation {n}"),
            kind: k,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 5_000 * n,
            attributes: if n == 1 { every_value() } else { vec![kv("n", Value::IntValue(i64::try_from(n).unwrap()))] },
            dropped_attributes_count: u32::try_from(n % 3).unwrap(),
            events: (0..n % 3)
                .map(|e| Event {
                    time_unix_nano: start + e * 10,
                    name: format!("event {e}"),
                    attributes: if e == 0 { every_value() } else { vec![kv("attempt", Value::IntValue(2))] },
                    dropped_attributes_count: u32::try_from(e).unwrap(),
                })
                .collect(),
            dropped_events_count: u32::try_from(n % 2).unwrap() * 7,
            links: (0..n % 3)
                .map(|l| Link {
                    trace_id: id(99 + l, 16),
                    span_id: id(77 + l, 8),
                    trace_state: "k=v".into(),
                    attributes: vec![kv("link.double", Value::DoubleValue(f64::NAN)), kv("link", s("x"))],
                    dropped_attributes_count: 1,
                    flags: 0x301,
                })
                .collect(),
            dropped_links_count: u32::try_from(n % 2).unwrap() * 3,
            status,
        }
    };
    let error = || Some(Status { code: status::ERROR, message: "boom".into() });
    let spans_a1 = vec![
        span(kind::SERVER, error(), false),
        span(kind::INTERNAL, None, true),
        span(kind::CLIENT, Some(Status::default()), true),
        span(kind::UNSPECIFIED, Some(Status { code: status::OK, message: String::new() }), true),
    ];
    let spans_a2 = vec![span(kind::PRODUCER, None, false), span(kind::CONSUMER, error(), true)];
    let mut spans_b =
        vec![span(7, Some(Status { code: status::UNSET, message: "unset, with a message".into() }), false)];
    // Times past i64::MAX nanoseconds, last (the store orders by start).
    let mut late = span(kind::INTERNAL, None, true);
    late.start_time_unix_nano = u64::MAX - 10;
    late.end_time_unix_nano = u64::MAX;
    spans_b.push(late);
    let resource_a = Resource {
        attributes: {
            let mut a =
                vec![kv("service.name", s("api")), kv("host.name", s("h1")), kv("process.pid", Value::IntValue(4242))];
            a.extend(every_value());
            a
        },
        dropped_attributes_count: 2,
        ..Resource::default()
    };
    let resource_b = Resource { attributes: vec![kv("service.name", s("worker"))], ..Resource::default() };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(resource_a),
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "io.opentelemetry.flask".into(),
                            version: "1.2.3".into(),
                            attributes: vec![kv("scope.attr", Value::BoolValue(true))],
                            dropped_attributes_count: 1,
                        }),
                        schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                        spans: spans_a1,
                    },
                    ScopeSpans {
                        scope: Some(InstrumentationScope::default()),
                        schema_url: String::new(),
                        spans: spans_a2,
                    },
                ],
            },
            ResourceSpans {
                resource: Some(resource_b),
                schema_url: String::new(),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "tracewire".into(), ..InstrumentationScope::default() }),
                    schema_url: String::new(),
                    spans: spans_b,
                }],
            },
        ],
    }
}

/// Stores the spans of `request` in a new database at `path`, then reads them back with
/// another handle (as `tracewire report --db` does).
fn round_trip(path: &Path, request: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    runtime().block_on(async {
        {
            let store = Store::open(path).unwrap();
            store.append_spans(SpanRecord::all_of(request)).await.unwrap();
            store.flush().await.unwrap();
        }
        Store::open(path).unwrap().spans().await.unwrap()
    })
}

/// OTLP JSON of a message (opentelemetry-proto's serde: hex ids, 64-bit integers as
/// strings). Its doubles do not follow the protobuf JSON mapping for non-finite values
/// (NaN and infinities come out as `null`), so the protobuf bytes are compared too.
macro_rules! json {
    ($m:expr) => {
        serde_json::to_value($m).unwrap()
    };
}

#[test]
fn every_otlp_field_comes_back_field_for_field() {
    let dir = TempDir::new("tw-lossless").unwrap();
    let request = full_request();
    let stored = round_trip(&dir.path().join("t.db"), &request);
    assert_eq!(stored.len(), 8);
    let back = to_request(&stored);
    // Field for field: the same protobuf bytes (NaN payloads included) and the same JSON.
    assert!(back.encode_to_vec() == request.encode_to_vec(), "protobuf differs:\n{back:?}\n{request:?}");
    assert_eq!(json!(&back), json!(&request));
    // The analysis view is what OTLP says.
    let first = &stored[0];
    assert_eq!((first.service.as_str(), first.kind, first.status_code), ("api", kind::SERVER, status::ERROR));
    assert_eq!(first.status_message, "boom");
    assert_eq!(first.attributes["int"], "-42");
    assert_eq!(stored[7].start_ns, i64::MAX, "a time past i64::MAX is clamped in the view only");
    // Spans of one resource and scope share them.
    let (a, b) = (stored[0].otlp.as_ref().unwrap(), stored[1].otlp.as_ref().unwrap());
    assert!(Arc::ptr_eq(&a.resource, &b.resource) && Arc::ptr_eq(&a.scope, &b.scope));
    let c = stored[4].otlp.as_ref().unwrap();
    assert!(Arc::ptr_eq(&a.resource, &c.resource) && !Arc::ptr_eq(&a.scope, &c.scope));
}

#[test]
fn a_retried_request_is_stored_once_and_resources_once() {
    let dir = TempDir::new("tw-lossless-retry").unwrap();
    let path = dir.path().join("t.db");
    let request = full_request();
    runtime().block_on(async {
        let store = Store::open(&path).unwrap();
        for _ in 0..3 {
            store.append_spans(SpanRecord::all_of(&request)).await.unwrap();
            store.flush().await.unwrap();
        }
        assert_eq!(store.span_count().await.unwrap(), 8);
        // The same ids again with other content: the span first stored is kept.
        let mut changed = SpanRecord::all_of(&request).remove(0);
        changed.name = "changed".into();
        store.append_spans(vec![changed]).await.unwrap();
        assert_eq!(store.spans().await.unwrap()[0].name, "operation 1");
    });
    let c = rusqlite::Connection::open(&path).unwrap();
    let count = |t: &str| c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!((count("resources"), count("scopes")), (2, 3));
    assert!(to_request(&round_trip_again(&path)).encode_to_vec() == request.encode_to_vec());
}

fn round_trip_again(path: &Path) -> Vec<SpanRecord> {
    runtime().block_on(async { Store::open(path).unwrap().spans().await.unwrap() })
}

#[test]
fn trace_and_time_filters_select_what_the_filter_matches() {
    let dir = TempDir::new("tw-lossless-filter").unwrap();
    let stored = round_trip(&dir.path().join("t.db"), &full_request());
    let store = Store::open(dir.path().join("t.db")).unwrap();
    let ids = |spans: &[SpanRecord]| spans.iter().map(|s| s.span_id.clone()).collect::<Vec<_>>();
    let trace = stored[3].trace_id.clone();
    // Many absent traces too: more than one query's worth of ids.
    let mut many: Vec<String> = (0..1000u64).map(|n| hex(&id(n + 5000, 16))).collect();
    many.push(stored[6].trace_id.clone());
    let filters = [
        SpanFilter { traces: vec![trace.to_uppercase()], ..SpanFilter::default() },
        SpanFilter {
            traces: vec![trace.clone(), "not hex".into()],
            since_ns: Some(stored[4].start_ns),
            until_ns: None,
        },
        SpanFilter { since_ns: Some(stored[2].start_ns), until_ns: Some(stored[6].start_ns), ..SpanFilter::default() },
        SpanFilter { traces: many, ..SpanFilter::default() },
        SpanFilter { until_ns: Some(0), ..SpanFilter::default() },
    ];
    runtime().block_on(async {
        for f in filters {
            let want: Vec<SpanRecord> = stored.iter().filter(|s| f.matches(s)).cloned().collect();
            let got = store.spans_matching(f.clone()).await.unwrap();
            assert_eq!(ids(&got), ids(&want), "{f:?}");
        }
    });
}

/// Writes `spans` as schema 3's store did (its statement, text attributes as JSON).
fn insert_3(conn: &mut rusqlite::Connection, spans: &[SpanRecord]) {
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT OR REPLACE INTO spans (trace_id, span_id, parent_id, name, service, start_ns, end_ns, attributes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .unwrap();
        for s in spans {
            let attributes = serde_json::to_string(&s.attributes).unwrap();
            stmt.execute(rusqlite::params![
                s.trace_id,
                s.span_id,
                s.parent_id,
                s.name,
                s.service,
                s.start_ns,
                s.end_ns,
                attributes
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

#[test]
fn a_schema_3_database_migrates_without_losing_a_span() {
    let dir = TempDir::new("tw-lossless-migrate").unwrap();
    let path = dir.path().join("v3.db");
    let attrs = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let old = vec![
        SpanRecord {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            name: "exec".into(),
            service: "exec-client".into(),
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_050_000_000,
            attributes: attrs(&[("tracewire.stage", "exec"), ("quote", "a \"b\" \u{e9}"), ("n", "42")]),
            ..SpanRecord::default()
        },
        SpanRecord {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "00f067aa0ba902b7".into(),
            parent_id: Some("b7ad6b7169203331".into()),
            name: "rpc.dispatch".into(),
            service: "exec-server".into(),
            start_ns: 1_700_000_000_010_000_000,
            end_ns: 1_700_000_000_020_000_000,
            attributes: attrs(&[("tracewire.stage", "rpc.dispatch")]),
            ..SpanRecord::default()
        },
        // What only hand-built records have: ids that are not (lowercase) hex, no service,
        // no attributes, a negative time.
        SpanRecord {
            trace_id: "t1".into(),
            span_id: "A".into(),
            parent_id: Some("p".into()),
            name: String::new(),
            start_ns: -5,
            end_ns: 3,
            ..SpanRecord::default()
        },
        SpanRecord { trace_id: "ABCDEF".into(), span_id: "0A".into(), name: "upper".into(), ..SpanRecord::default() },
    ];
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(&schema_3()).unwrap();
        c.execute(
            "INSERT INTO processes (process_id, pid, argv, cwd, started_unix_nanos) VALUES (7, 70, 'ls', '/', 5)",
            [],
        )
        .unwrap();
        insert_3(&mut c, &old);
    }
    let rt = runtime();
    rt.block_on(async {
        let store = Store::open(&path).unwrap();
        let mut loaded = store.spans().await.unwrap();
        loaded.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        let mut want: Vec<SpanRecord> =
            old.iter().map(|r| SpanRecord { otlp: Some(Arc::new(r.to_otlp())), ..r.clone() }).collect();
        want.sort_by(|a, b| a.span_id.cmp(&b.span_id));
        // Every field of the analysis's view as stored; after loading, each span has its OTLP form.
        assert_eq!(loaded, want);
        assert_eq!(store.recent(10).await.unwrap()[0].argv, ["ls"], "processes are untouched");
        // New spans go in beside them, whole.
        store.append_spans(SpanRecord::all_of(&full_request())).await.unwrap();
        assert_eq!(store.span_count().await.unwrap(), 12);
    });
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i32 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["processes", "resources", "scopes", "spans"]);
    drop(c);
    // Reopening a migrated database changes nothing.
    let again = round_trip_again(&path);
    assert_eq!(again.len(), 12);
}

#[test]
fn a_schema_3_row_that_does_not_parse_fails_the_migration_and_keeps_the_database() {
    let dir = TempDir::new("tw-lossless-migrate-bad").unwrap();
    let path = dir.path().join("v3.db");
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(&schema_3()).unwrap();
        insert_3(&mut c, &[SpanRecord { trace_id: "t".into(), span_id: "s".into(), ..SpanRecord::default() }]);
        c.execute("UPDATE spans SET attributes = 'nope'", []).unwrap();
    }
    assert!(matches!(Store::open(&path), Err(tracewire_store::StoreError::Corrupt(m)) if m.contains("t/s")));
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i32 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    let n: i64 = c.query_row("SELECT count(*) FROM spans", [], |r| r.get(0)).unwrap();
    assert_eq!((v, n), (3, 1), "rolled back: still schema 3, the row kept");
}

/// Spans shaped like tracewire's own (`tracewire demo` through a relay, three services):
/// 17 spans per trace, 5 to 8 attributes each (stage names, ids, byte counts), a resource
/// per service as the SDK sends it, one scope. One request per service per trace.
fn realistic_requests(traces: u64) -> Vec<ExportTraceServiceRequest> {
    let resource = |service: &str| Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("telemetry.sdk.name", s("opentelemetry")),
            kv("telemetry.sdk.language", s("rust")),
            kv("telemetry.sdk.version", s("0.31.0")),
            kv("process.pid", Value::IntValue(31_337)),
            kv("host.name", s("build-7")),
        ],
        ..Resource::default()
    };
    let stages: [(&str, &[&str]); 3] = [
        ("exec-client", &["exec", "rpc.call", "relay.frame", "relay.encrypt", "relay.send", "terminal.deliver"]),
        ("relay", &["relay.forward", "relay.forward", "relay.forward"]),
        (
            "exec-server",
            &[
                "relay.recv",
                "relay.decrypt",
                "rpc.queue",
                "rpc.dispatch",
                "process.spawn",
                "process.stdout",
                "process.exit",
                "terminal.queue",
            ],
        ),
    ];
    let mut out = Vec::new();
    let mut n = 0u64;
    for t in 0..traces {
        let trace_id = id(t.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555, 16);
        for (service, names) in stages {
            let spans = names
                .iter()
                .map(|name| {
                    n += 1;
                    let start = 1_764_900_000_000_000_000 + n * 37_000;
                    let mut attributes = vec![
                        kv("tracewire.stage", s(name)),
                        kv("thread.id", Value::IntValue(i64::try_from(n % 8).unwrap())),
                        kv("code.namespace", s("tracewire_rpc::server")),
                        kv("tracewire.bytes", Value::IntValue(75 + i64::try_from(n % 100).unwrap())),
                        kv("rpc.method", s("Start")),
                    ];
                    if n % 2 == 0 {
                        attributes.push(kv("tracewire.seq.first", Value::IntValue(i64::try_from(n % 13).unwrap())));
                    }
                    if n % 3 == 0 {
                        attributes.push(kv("tracewire.clock.offset_us", Value::DoubleValue(12.5)));
                        attributes.push(kv("busy_ns", Value::IntValue(i64::try_from(n * 1_337 % 100_000).unwrap())));
                    }
                    Span {
                        trace_id: trace_id.clone(),
                        span_id: id(n.wrapping_mul(0xff51_afd7_ed55_8ccd), 8),
                        parent_span_id: if n % 17 == 1 {
                            Vec::new()
                        } else {
                            id((n - 1).wrapping_mul(0xff51_afd7_ed55_8ccd), 8)
                        },
                        flags: 0x101,
                        name: (*name).into(),
                        kind: if name.starts_with("rpc.") { kind::SERVER } else { kind::INTERNAL },
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 20_000 + n % 5_000,
                        attributes,
                        status: (n % 50 == 0).then(|| Status { code: status::ERROR, message: "exit 1".into() }),
                        ..Span::default()
                    }
                })
                .collect();
            out.push(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource(service)),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "tracewire".into(),
                            version: "0.1.0".into(),
                            ..InstrumentationScope::default()
                        }),
                        spans,
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                }],
            });
        }
    }
    out
}

/// Bytes the database at `path` takes (pages in use, after a checkpoint of the WAL).
fn db_bytes(path: &Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    let pages: i64 = c.pragma_query_value(None, "page_count", |r| r.get(0)).unwrap();
    let free: i64 = c.pragma_query_value(None, "freelist_count", |r| r.get(0)).unwrap();
    let size: i64 = c.pragma_query_value(None, "page_size", |r| r.get(0)).unwrap();
    (pages - free) * size
}

#[test]
fn realistic_spans_take_less_room_than_schema_3_text_while_kept_whole() {
    let dir = TempDir::new("tw-lossless-size").unwrap();
    let requests = realistic_requests(300);
    let records: Vec<SpanRecord> = requests.iter().flat_map(SpanRecord::all_of).collect();
    let n = i64::try_from(records.len()).unwrap();
    let v3 = dir.path().join("v3.db");
    {
        let mut c = rusqlite::Connection::open(&v3).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch(&schema_3()).unwrap();
        for batch in records.chunks(512) {
            insert_3(&mut c, batch);
        }
    }
    let v4 = dir.path().join("v4.db");
    runtime().block_on(async {
        let store = Store::open(&v4).unwrap();
        for r in &requests {
            store.append_spans(SpanRecord::all_of(r)).await.unwrap();
        }
        store.flush().await.unwrap();
        assert_eq!(store.span_count().await.unwrap(), 300 * 17);
    });
    let (before, after) = (db_bytes(&v3) / n, db_bytes(&v4) / n);
    println!("bytes per span: schema 3 {before}, schema {SCHEMA_VERSION} {after}");
    assert!(after < before, "schema {SCHEMA_VERSION}: {after} bytes per span, schema 3: {before}");
}

/// Inserts per second through the store (realistic spans, one request per service per
/// trace, then a barrier), for the figures of `docs/benchmarks.md`; run with `--release
/// --ignored`.
#[test]
#[ignore = "a measurement: cargo test --release -p tracewire-store --test lossless -- --ignored --nocapture"]
fn insert_rate() {
    let dir = TempDir::new("tw-lossless-rate").unwrap();
    let requests = realistic_requests(6000);
    let batches: Vec<Vec<SpanRecord>> = requests.iter().map(SpanRecord::all_of).collect();
    let n = batches.iter().map(Vec::len).sum::<usize>();
    let path = dir.path().join("rate.db");
    let elapsed = runtime().block_on(async {
        // The queue's bound is not measured here: appends wait for room as long as it takes.
        let mut config = StoreConfig::default();
        config.full = FullPolicy::Wait(Duration::from_secs(600));
        let store = Store::open_with(&path, config).unwrap();
        let t = Instant::now();
        for b in batches {
            store.append_spans(b).await.unwrap();
        }
        store.flush().await.unwrap();
        t.elapsed()
    });
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "{n} spans in {elapsed:?}: {rate:.0} spans/s, {} bytes per span",
        db_bytes(&path) / i64::try_from(n).unwrap()
    );
}

// ---------------------------------------------------------------------------------------
// Generated requests.

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        any::<String>().prop_map(Value::StringValue),
        any::<bool>().prop_map(Value::BoolValue),
        any::<i64>().prop_map(Value::IntValue),
        any::<f64>().prop_map(Value::DoubleValue),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)].prop_map(Value::DoubleValue),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Value::BytesValue),
    ]
    .prop_map(val);
    let leaf = prop_oneof![9 => leaf, 1 => Just(AnyValue::default())];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|values| val(Value::ArrayValue(ArrayValue { values }))),
            prop::collection::vec(("[a-z.]{0,8}", inner), 0..4).prop_map(|kvs| {
                let values =
                    kvs.into_iter().map(|(key, v)| KeyValue { key, value: Some(v), ..KeyValue::default() }).collect();
                val(Value::KvlistValue(KeyValueList { values }))
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(
        ("\\PC{0,12}", prop::option::weighted(0.95, any_value())).prop_map(|(key, value)| KeyValue {
            key,
            value,
            ..KeyValue::default()
        }),
        0..5,
    )
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => prop::collection::vec(any::<u8>(), max..=max), 1 => prop::collection::vec(any::<u8>(), 0..=max + 4)]
}

fn event() -> impl Strategy<Value = Event> {
    (any::<u64>(), any::<String>(), attributes(), any::<u32>()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    )
}

fn link() -> impl Strategy<Value = Link> {
    (bytes(16), bytes(8), "[a-z0-9=,]{0,16}", attributes(), any::<u32>(), any::<u32>()).prop_map(
        |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            dropped_attributes_count,
            flags,
        },
    )
}

fn span() -> impl Strategy<Value = Span> {
    let ids = (bytes(16), bytes(8), prop_oneof![Just(Vec::new()), bytes(8)], "[a-z0-9=,]{0,16}", any::<u32>());
    let body = (any::<String>(), -1..8i32, any::<u64>(), any::<u64>(), attributes(), any::<u32>());
    let rest = (
        prop::collection::vec(event(), 0..3),
        any::<u32>(),
        prop::collection::vec(link(), 0..3),
        any::<u32>(),
        prop::option::of((-1..4i32, any::<String>()).prop_map(|(code, message)| Status { code, message })),
    );
    (ids, body, rest).prop_map(
        |(
            ids,
            (name, kind, start, end, attributes, dropped_attributes_count),
            (events, dropped_events_count, links, dropped_links_count, status),
        )| Span {
            attributes,
            dropped_attributes_count,
            events,
            dropped_events_count,
            links,
            dropped_links_count,
            status,
            ..span_with(ids, name, kind, start, end)
        },
    )
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = (any::<String>(), any::<String>(), attributes(), any::<u32>()).prop_map(
        |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count,
        },
    );
    let scope_spans = (scope, "\\PC{0,10}", prop::collection::vec(span(), 1..4))
        .prop_map(|(scope, schema_url, spans)| ScopeSpans { scope: Some(scope), schema_url, spans });
    let resource = (attributes(), any::<u32>()).prop_map(|(attributes, dropped_attributes_count)| Resource {
        attributes,
        dropped_attributes_count,
        ..Resource::default()
    });
    let resource_spans = (resource, "\\PC{0,10}", prop::collection::vec(scope_spans, 1..3)).prop_map(
        |(resource, schema_url, scope_spans)| ResourceSpans { resource: Some(resource), scope_spans, schema_url },
    );
    prop::collection::vec(resource_spans, 1..3).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// Per span (by trace and span id; the first span with the same ids is kept, as the store
/// does): its resource (with schema URL), scope (with schema URL) and
/// the span, each as protobuf bytes and as OTLP JSON.
type Parts = (Vec<u8>, Vec<u8>, Vec<u8>, serde_json::Value);

fn parts(request: &ExportTraceServiceRequest) -> BTreeMap<(Vec<u8>, Vec<u8>), Parts> {
    let mut out = BTreeMap::new();
    for rs in &request.resource_spans {
        let resource = ResourceSpans { scope_spans: Vec::new(), ..rs.clone() };
        for ss in &rs.scope_spans {
            let scope = ScopeSpans { spans: Vec::new(), ..ss.clone() };
            for span in &ss.spans {
                let j = serde_json::json!([json!(&resource), json!(&scope), json!(span)]);
                out.entry((span.trace_id.clone(), span.span_id.clone())).or_insert((
                    resource.encode_to_vec(),
                    scope.encode_to_vec(),
                    span.encode_to_vec(),
                    j,
                ));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any request, every field and value type generated: each span comes back with its
    /// resource and scope, field for field.
    #[test]
    fn generated_spans_come_back_field_for_field(request in request()) {
        let dir = TempDir::new("tw-lossless-prop").unwrap();
        let stored = round_trip(&dir.path().join("t.db"), &request);
        let want = parts(&request);
        prop_assert_eq!(stored.len(), want.len());
        let got = parts(&to_request(&stored));
        prop_assert_eq!(got.len(), want.len());
        for (key, w) in &want {
            let g = &got[key];
            prop_assert_eq!(&g.0, &w.0, "resource of {:02x?}", key);
            prop_assert_eq!(&g.1, &w.1, "scope of {:02x?}", key);
            prop_assert_eq!(&g.2, &w.2, "span {:02x?}", key);
            prop_assert_eq!(&g.3, &w.3, "JSON of {:02x?}", key);
        }
        // Spans of one resource share it once loaded.
        let mut by_resource: HashMap<(Vec<u8>, String), Arc<Resource>> = HashMap::new();
        for r in &stored {
            let o = r.otlp.as_ref().unwrap();
            let key = (o.resource.encode_to_vec(), o.resource_schema_url.to_string());
            let shared = by_resource.entry(key).or_insert_with(|| Arc::clone(&o.resource));
            prop_assert!(Arc::ptr_eq(shared, &o.resource));
        }
    }
}
