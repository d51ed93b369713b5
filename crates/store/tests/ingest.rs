//! The collector's path into the store: whole OTLP requests (`Store::append_request`), the
//! queue bounded in spans, and readers of the database while the writer writes (WAL).

mod common;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use rusqlite::{Connection, OpenFlags};
use tracewire_store::{FullPolicy, SpanRecord, Store, StoreConfig, StoreError};
use tracewire_testkit::{TempDir, eventually, eventually_async};

use crate::common::{kv, span_table_rows};

/// A request with `n` spans per scope, of trace `seed`, with what the store treats apart:
/// roots and children, an error status with a message, an empty status, a time past
/// `i64::MAX`, events, trace state, flags, two resources (one absent) and schema URLs.
fn request(seed: u8, n: u8) -> ExportTraceServiceRequest {
    let spans = |scope: u8| -> Vec<Span> {
        (0..n)
            .map(|i| Span {
                trace_id: vec![seed; 16],
                span_id: vec![scope, i + 1, seed, 0, 0, 0, 0, 1],
                parent_span_id: if i == 0 { Vec::new() } else { vec![scope, i, seed, 0, 0, 0, 0, 1] },
                name: format!("stage {i}"),
                kind: i32::from(i % 6),
                start_time_unix_nano: if i == 3 { u64::MAX - 5 } else { 1_700_000_000_000_000_000 + u64::from(i) },
                end_time_unix_nano: 1_700_000_000_000_100_000,
                trace_state: if i == 1 { "k=v".into() } else { String::new() },
                attributes: vec![kv("tracewire.stage", any_value::Value::StringValue("rpc.queue".into()))],
                events: if i == 2 {
                    vec![span::Event { name: "exit".into(), time_unix_nano: 5, ..span::Event::default() }]
                } else {
                    Vec::new()
                },
                status: match i {
                    1 => Some(Status { code: 2, message: "boom".into() }),
                    2 => Some(Status::default()),
                    _ => None,
                },
                flags: u32::from(i % 2) * 0x100,
                ..Span::default()
            })
            .collect()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", any_value::Value::StringValue("api".into()))],
                    ..Resource::default()
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope { name: "tracewire".into(), ..Default::default() }),
                        spans: spans(1),
                        schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                    },
                    ScopeSpans { spans: spans(2), ..ScopeSpans::default() },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.29.0".into(),
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans { spans: spans(3), ..Default::default() }],
                ..Default::default()
            },
        ],
    }
}

#[tokio::test]
async fn a_request_is_stored_as_its_records_are() {
    let dir = TempDir::new("tw-store-request").unwrap();
    let (by_request, by_records) = (dir.path().join("request.db"), dir.path().join("records.db"));
    let requests = [request(1, 5), request(2, 5), request(1, 5)];
    let a = Store::open(&by_request).unwrap();
    let b = Store::open(&by_records).unwrap();
    for r in &requests {
        a.append_request(Arc::new(r.clone())).await.unwrap();
        b.append_spans(SpanRecord::all_of(r)).await.unwrap();
    }
    let (from_request, from_records) = (a.spans().await.unwrap(), b.spans().await.unwrap());
    assert_eq!(from_request.len(), 30, "the third request is the first one retried: stored once");
    assert_eq!(from_request, from_records);
    let expected: Vec<SpanRecord> = requests[..2].iter().flat_map(SpanRecord::all_of).collect();
    let mut sorted = expected.clone();
    sorted.sort_by(|x, y| (x.start_ns, &x.trace_id, &x.span_id).cmp(&(y.start_ns, &y.trace_id, &y.span_id)));
    assert_eq!(from_request, sorted, "every span loads back as it was sent");
    drop((a, b));
    assert_eq!(span_table_rows(&by_request), span_table_rows(&by_records), "the same rows, byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_in_spans() {
    let dir = TempDir::new("tw-store-bounded").unwrap();
    let path = dir.path().join("s.db");
    let mut config = StoreConfig::default();
    config.max_queued_spans = 20;
    config.full = FullPolicy::Error;
    config.busy_timeout = Duration::from_millis(10);
    config.retry_delay = Duration::from_millis(5);
    let store = Store::open_with(&path, config).unwrap();
    // Another connection holds the write lock: the writer cannot commit, its spans stay queued.
    let lock = Connection::open(&path).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    store.append_request(Arc::new(request(1, 5))).await.unwrap();
    // 15 spans queued; 15 more do not fit in 20, though the queue has room for thousands of
    // batches.
    assert_eq!(store.append_request(Arc::new(request(2, 5))).await, Err(StoreError::Full));
    assert_eq!(store.append_spans(SpanRecord::all_of(&request(3, 2))).await, Err(StoreError::Full));
    assert_eq!(store.backlog(), 15);
    lock.execute_batch("COMMIT").unwrap();
    // Once committed, the room is given back.
    eventually_async(Duration::from_secs(10), || async { store.backlog() == 0 })
        .await
        .expect("the writer did not commit");
    store.append_request(Arc::new(request(2, 5))).await.unwrap();
    assert_eq!(store.span_count().await.unwrap(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_reads_the_database_while_the_writer_writes() {
    let dir = TempDir::new("tw-store-wal-reader").unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open(&path).unwrap();
    store.append_request(Arc::new(request(0, 5))).await.unwrap();
    store.flush().await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for seed in 1..=200u8 {
                store.append_request(Arc::new(request(seed, 5))).await.unwrap();
            }
            store.flush().await.unwrap();
        })
    };
    // What `report` does: a read-only connection of its own, reading as the spans arrive.
    let reader = tokio::task::spawn_blocking(move || {
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let (mut reads, mut last) = (0, 0i64);
        let all = eventually(Duration::from_secs(30), || {
            let n: i64 = conn.query_row("SELECT count(*) FROM spans", [], |r| r.get(0)).unwrap();
            assert!(n >= last && n % 15 == 0, "a committed state, never a part of a request: {n} after {last}");
            // A whole read of the rows, not only the count.
            let names: i64 =
                conn.query_row("SELECT count(name) FROM spans WHERE body IS NOT NULL", [], |r| r.get(0)).unwrap();
            assert!(names >= n);
            (reads, last) = (reads + 1, n);
            last >= 201 * 15
        });
        assert!(all.is_ok(), "the reader saw {last} spans");
        reads
    });
    writer.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(reads >= 1);
    assert_eq!(store.span_count().await.unwrap(), 201 * 15);
}
