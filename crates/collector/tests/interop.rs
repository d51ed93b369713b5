//! Every field of a span sent by a real sender arrives: the OpenTelemetry Python SDK over
//! OTLP/gRPC and OTLP/HTTP (protobuf), each plain and gzip-compressed, straight to the
//! receiver and through rotel-agent; kept in memory (`SpanStore::snapshot`) and, as with
//! `tracewire collect --db`, in SQLite.
//!
//! The span (`tests/py/emit_full.py`) uses what users look for: kind SERVER, status ERROR
//! "boom", an event `retrying {attempt: 2}`, int, float, bool and array attributes, a link
//! with attributes and a tracestate, resource `service.name` and `host.name`, scope name and
//! version. The script also prints the `ExportTraceServiceRequest` the SDK's own encoder
//! makes of it (what its exporter sends); the span kept must equal it, field by field.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Forwarder, Tap};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use tracewire_collector::SpanRecord;
use tracewire_collector::receiver::{SpanStore, bind, serve_grpc, serve_http};

struct Receiver {
    store: Arc<SpanStore>,
    grpc: String,
    http: String,
    db: Option<(tracewire_testkit::TempDir, PathBuf)>,
}

/// A receiver on both protocols, with a database when `db`.
async fn receiver(db: bool) -> Receiver {
    let mut store = SpanStore::new(10_000);
    let db = db.then(|| {
        let dir = tracewire_testkit::TempDir::new("tw-interop-db").unwrap();
        let path = dir.path().join("spans.db");
        store = SpanStore::new(10_000).with_db(tracewire_store::Store::open(&path).unwrap());
        (dir, path)
    });
    let store = Arc::new(store);
    let (gl, ga) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (hl, ha) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    tokio::spawn(serve_grpc(gl, Arc::clone(&store), std::future::pending()));
    tokio::spawn(serve_http(hl, Arc::clone(&store), std::future::pending()));
    Receiver { store, grpc: format!("http://{ga}"), http: format!("http://{ha}"), db }
}

/// What `emit_full.py` sent: the trace and span ids, and the request its encoder made.
struct Sent {
    trace_id: String,
    span_id: String,
    request: ExportTraceServiceRequest,
}

fn emit_full(protocol: &str, endpoint: &str, service: &str, compression: &str) -> Sent {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/emit_full.py");
    // Unset for none (the gRPC exporter refuses the value "none").
    let env = [("OTEL_EXPORTER_OTLP_COMPRESSION", compression)];
    let env = if compression == "none" { &env[..0] } else { &env[..] };
    let out = tracewire_testkit::run_python(&script, &[protocol, endpoint, service], env).unwrap();
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let bytes = tracewire_store::unhex(v["request"].as_str().unwrap()).unwrap();
    Sent {
        trace_id: v["trace_id"].as_str().unwrap().to_owned(),
        span_id: v["span_id"].as_str().unwrap().to_owned(),
        request: ExportTraceServiceRequest::decode(&bytes[..]).unwrap(),
    }
}

async fn wait_for(store: &SpanStore, span_id: &str) -> SpanRecord {
    let find = || store.snapshot().into_iter().find(|s| s.span_id == span_id);
    tracewire_testkit::eventually_some_async(Duration::from_secs(15), || std::future::ready(find()))
        .await
        .unwrap_or_else(|e| panic!("span {span_id} never arrived: {e}"))
}

fn value(attributes: &[KeyValue], key: &str) -> Option<Value> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
}

fn strings(items: &[&str]) -> Value {
    let values = items.iter().map(|s| AnyValue { value: Some(Value::StringValue((*s).to_owned())) }).collect();
    Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue { values })
}

/// The record holds everything the SDK encoded, field by field; and what it encoded is what
/// the script set (so that the comparison is not of two empty spans).
fn check(sent: &Sent, got: &SpanRecord, service: &str, how: &str) {
    let rs = &sent.request.resource_spans[0];
    let ss = &rs.scope_spans[0];
    let want = &ss.spans[0];
    let o = got.otlp.as_deref().unwrap_or_else(|| panic!("{how}: no OTLP form kept: {got:?}"));
    let s = &o.span;
    assert_eq!(s.trace_id, want.trace_id, "{how}: trace_id");
    assert_eq!(s.span_id, want.span_id, "{how}: span_id");
    assert_eq!(s.trace_state, want.trace_state, "{how}: trace_state");
    assert_eq!(s.parent_span_id, want.parent_span_id, "{how}: parent_span_id");
    assert_eq!(s.flags, want.flags, "{how}: flags");
    assert_eq!(s.name, want.name, "{how}: name");
    assert_eq!(s.kind, want.kind, "{how}: kind");
    assert_eq!(s.start_time_unix_nano, want.start_time_unix_nano, "{how}: start");
    assert_eq!(s.end_time_unix_nano, want.end_time_unix_nano, "{how}: end");
    assert_eq!(s.attributes, want.attributes, "{how}: attributes");
    assert_eq!(s.dropped_attributes_count, want.dropped_attributes_count, "{how}: dropped attributes");
    assert_eq!(s.events, want.events, "{how}: events");
    assert_eq!(s.dropped_events_count, want.dropped_events_count, "{how}: dropped events");
    assert_eq!(s.links, want.links, "{how}: links");
    assert_eq!(s.dropped_links_count, want.dropped_links_count, "{how}: dropped links");
    assert_eq!(s.status, want.status, "{how}: status");
    assert_eq!(s, want, "{how}: the whole span");
    assert_eq!(Some(&*o.resource), rs.resource.as_ref(), "{how}: resource");
    assert_eq!(*o.resource_schema_url, rs.schema_url, "{how}: resource schema url");
    assert_eq!(Some(&*o.scope), ss.scope.as_ref(), "{how}: scope");
    assert_eq!(*o.scope_schema_url, ss.schema_url, "{how}: scope schema url");

    // What the script set, on the record's analysis view and in OTLP.
    assert_eq!((got.trace_id.as_str(), got.span_id.as_str()), (sent.trace_id.as_str(), sent.span_id.as_str()));
    assert_eq!(got.parent_id.as_deref(), Some("b7ad6b7169203331"), "{how}");
    assert_eq!(got.service, service, "{how}");
    assert_eq!(got.kind, SpanKind::Server as i32, "{how}");
    assert_eq!((got.status_code, got.status_message.as_str()), (StatusCode::Error as i32, "boom"), "{how}");
    assert!(got.is_error(), "{how}");
    assert_eq!(s.trace_state, "vendor=opaque-1,other=x", "{how}");
    assert_eq!(value(&s.attributes, "http.response.status_code"), Some(Value::IntValue(500)), "{how}");
    assert_eq!(value(&s.attributes, "load"), Some(Value::DoubleValue(0.75)), "{how}");
    assert_eq!(value(&s.attributes, "cached"), Some(Value::BoolValue(false)), "{how}");
    assert_eq!(value(&s.attributes, "tags"), Some(strings(&["a", "b"])), "{how}");
    assert_eq!(s.events.len(), 1, "{how}");
    assert_eq!(s.events[0].name, "retrying", "{how}");
    assert_eq!(value(&s.events[0].attributes, "attempt"), Some(Value::IntValue(2)), "{how}");
    assert_eq!(s.links.len(), 1, "{how}");
    assert_eq!(tracewire_store::hex(&s.links[0].trace_id), "4bf92f3577b34da6a3ce929d0e0e4736", "{how}");
    assert_eq!(tracewire_store::hex(&s.links[0].span_id), "00f067aa0ba902b7", "{how}");
    assert_eq!(value(&s.links[0].attributes, "link.reason"), Some(Value::StringValue("retry-of".into())), "{how}");
    assert_eq!(value(&s.links[0].attributes, "link.n"), Some(Value::IntValue(3)), "{how}");
    assert_eq!(value(&o.resource.attributes, "host.name"), Some(Value::StringValue("build-7".into())), "{how}");
    assert_eq!((o.scope.name.as_str(), o.scope.version.as_str()), ("emit_full", "1.2.3"), "{how}");
}

/// Straight from the SDK, every protocol and compression, into memory and into SQLite (read
/// back from the file with a second handle, as `tracewire report --db` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_spans_keep_every_field_in_memory_and_in_the_database() {
    for db in [false, true] {
        let r = receiver(db).await;
        let tap = Tap::start(&r.http).await;
        let mut sent = Vec::new();
        for (protocol, compression) in [("grpc", "none"), ("grpc", "gzip"), ("http", "none"), ("http", "gzip")] {
            let service = format!("py-{protocol}-{compression}");
            let endpoint = if protocol == "grpc" { r.grpc.clone() } else { format!("{}/v1/traces", tap.url()) };
            let s = emit_full(protocol, &endpoint, &service, compression);
            let got = wait_for(&r.store, &s.span_id).await;
            check(&s, &got, &service, &format!("{protocol}/{compression} in memory"));
            sent.push((s, service, format!("{protocol}/{compression}")));
        }
        // The HTTP exporter compressed exactly when told to.
        assert_eq!(tap.sent().matches("content-encoding: gzip").count(), 1, "{:.600}", tap.sent());
        assert_eq!((r.store.received(), r.store.invalid()), (4, 0));
        if let Some((_dir, path)) = &r.db {
            r.store.db().unwrap().flush().await.unwrap();
            let stored = tracewire_store::Store::open(path).unwrap().spans().await.unwrap();
            assert_eq!(stored.len(), 4);
            for (s, service, how) in &sent {
                let got = stored.iter().find(|g| g.span_id == s.span_id).unwrap();
                check(s, got, service, &format!("{how} in the database"));
            }
        }
    }
}

/// Through rotel-agent (SDK -> rotel-agent over OTLP/gRPC -> the receiver over OTLP/gRPC or
/// OTLP/HTTP, gzip-compressed as collectors forward by default): nothing is lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_forwarded_by_rotel_agent_keep_every_field() {
    let r = receiver(true).await;
    for (protocol, target) in [("grpc", r.grpc.clone()), ("http", r.http.clone())] {
        let forwarder = Forwarder::start(&target, protocol, "gzip");
        let service = format!("via-rotel-{protocol}");
        let s = emit_full("grpc", &forwarder.grpc, &service, "none");
        let find = || r.store.snapshot().into_iter().find(|g| g.span_id == s.span_id);
        let got = tracewire_testkit::eventually_some_async(Duration::from_secs(15), || std::future::ready(find()))
            .await
            .unwrap_or_else(|e| panic!("not forwarded ({e}); rotel-agent log:\n{}", forwarder.log()));
        check(&s, &got, &service, &format!("rotel-agent over {protocol}"));
    }
    r.store.db().unwrap().flush().await.unwrap();
    let path = &r.db.as_ref().unwrap().1;
    let stored = tracewire_store::Store::open(path).unwrap().spans().await.unwrap();
    assert_eq!(stored.len(), 2);
    for got in &stored {
        assert!(got.otlp.is_some() && got.is_error() && got.kind == SpanKind::Server as i32, "{got:?}");
    }
}
