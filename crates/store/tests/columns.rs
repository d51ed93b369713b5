//! `SpanDetail::Columns`: a trace stream that reads the analysis's view only gives, for
//! every span, what the full read gives (ids, name, service, times, kind, status code and
//! message), with only the attributes asked for and no OTLP form.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tracewire_store::{SpanDetail, SpanFilter, SpanRecord, Store};
use tracewire_testkit::TempDir;

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..KeyValue::default() }
}

/// Spans of two resources (one without `service.name`), every attribute type, events,
/// links, status with and without a message, a repeated attribute key.
fn request() -> ExportTraceServiceRequest {
    let span = |n: u8, parent: Option<u8>, attributes: Vec<KeyValue>, status: Option<Status>| Span {
        trace_id: vec![n % 3 + 1; 16],
        span_id: vec![n; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("span {n}"),
        kind: i32::from(n % 6),
        start_time_unix_nano: 1_000 * u64::from(n),
        end_time_unix_nano: 1_000 * u64::from(n) + 500,
        attributes,
        events: vec![Event {
            name: "e".into(),
            attributes: vec![kv("tracewire.stage", Value::IntValue(1))],
            ..Event::default()
        }],
        links: vec![Link { trace_id: vec![9; 16], span_id: vec![9; 8], ..Link::default() }],
        status,
        ..Span::default()
    };
    let array = Value::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(Value::BoolValue(true)) }] });
    let spans = [
        span(
            1,
            None,
            vec![kv("tracewire.stage", Value::StringValue("exec".into())), kv("other", Value::IntValue(3))],
            None,
        ),
        span(
            2,
            Some(1),
            vec![
                kv("rpc.method", Value::StringValue("Start".into())),
                kv("tracewire.clock.offset_us", Value::IntValue(-25)),
                kv("tracewire.net.rtt_us", Value::DoubleValue(40.5)),
                kv("list", array.clone()),
            ],
            Some(Status { code: 2, message: "boom".into() }),
        ),
        span(
            3,
            Some(2),
            vec![
                kv("tracewire.event", array),
                kv("tracewire.stage", Value::StringValue("first".into())),
                kv("tracewire.stage", Value::StringValue("second".into())),
                KeyValue { key: "rpc.method".into(), value: None, ..KeyValue::default() },
            ],
            Some(Status { code: 1, message: String::new() }),
        ),
        span(4, Some(9), Vec::new(), Some(Status { code: 0, message: "unset, with a message".into() })),
    ];
    let resource = |attributes| Resource { attributes, ..Resource::default() };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(resource(vec![kv("service.name", Value::StringValue("api".into()))])),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "s".into(), ..InstrumentationScope::default() }),
                    spans: spans[..2].to_vec(),
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            },
            ResourceSpans {
                resource: Some(resource(vec![kv("host.name", Value::StringValue("h".into()))])),
                scope_spans: vec![ScopeSpans { spans: spans[2..].to_vec(), ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            },
        ],
    }
}

fn read(store: &Store, detail: SpanDetail) -> Vec<SpanRecord> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&out);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.for_each_trace_with(SpanFilter::default(), detail, move |t| into.lock().unwrap().extend(t)))
        .unwrap();
    std::mem::take(&mut *out.lock().unwrap())
}

#[test]
fn a_columns_read_gives_the_full_reads_view_with_the_attributes_asked_for() {
    let dir = TempDir::new("tracewire-columns").unwrap();
    let store = Store::open(dir.path().join("spans.db")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(store.append_request(Arc::new(request()))).unwrap();
    // Records without OTLP too, with an id that is not hex (stored as text).
    let by_hand = SpanRecord {
        trace_id: "not-hex".into(),
        span_id: "Z1".into(),
        parent_id: Some("Z0".into()),
        name: "by hand".into(),
        service: "cli".into(),
        start_ns: -5,
        end_ns: 7,
        attributes: BTreeMap::from([("tracewire.stage".into(), "x".into()), ("k".into(), "v".into())]),
        status_code: 2,
        status_message: "bad".into(),
        ..SpanRecord::default()
    };
    runtime.block_on(store.append_spans(vec![by_hand])).unwrap();
    runtime.block_on(store.flush()).unwrap();
    let wanted = [
        "tracewire.stage",
        "rpc.method",
        "tracewire.clock.offset_us",
        "tracewire.net.rtt_us",
        "tracewire.event",
        "absent",
    ];
    let full = read(&store, SpanDetail::Full);
    let columns = read(&store, SpanDetail::Columns(wanted.iter().map(|&w| w.to_owned()).collect()));
    assert_eq!(full.len(), 5);
    let expected: Vec<SpanRecord> = full
        .into_iter()
        .map(|mut r| {
            r.otlp = None;
            r.attributes.retain(|k, _| wanted.contains(&k.as_str()));
            r
        })
        .collect();
    assert_eq!(columns, expected);
    // The repeated key: the last, as a full decode keeps it; the value-less one: empty.
    let third = columns.iter().find(|r| r.name == "span 3").unwrap();
    assert_eq!((third.stage(), third.attributes["rpc.method"].as_str()), ("second", ""));
    assert_eq!(third.attributes["tracewire.event"], "[true]");
    let second = columns.iter().find(|r| r.name == "span 2").unwrap();
    assert_eq!((second.service.as_str(), second.status_message.as_str()), ("api", "boom"));
    assert_eq!(second.attributes["tracewire.clock.offset_us"], "-25");
}
