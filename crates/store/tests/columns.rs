//! `SpanDetail::Columns`: a trace stream that reads the analysis's view only gives, for
//! every span, what the full read gives (ids, name, service, times, kind, status code and
//! message), with only the attributes asked for and no OTLP form.

mod common;

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

use crate::common::kv;

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

/// A read that fills the records of the traces handed back gives, trace by trace, what a
/// plain read gives: nothing of a record's previous span stays (an attribute the new span
/// lacks, a parent, a status message), whatever the attribute sets of the two.
#[test]
fn a_recycling_read_leaks_nothing_of_the_previous_spans() {
    let dir = TempDir::new("tracewire-recycle").unwrap();
    let store = Store::open(dir.path().join("spans.db")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(store.append_request(Arc::new(request()))).unwrap();
    // More traces, each span with another attribute set than the span whose record it gets.
    let span = |trace: usize, id: usize, attributes: &[(&str, &str)], parent: Option<usize>| SpanRecord {
        trace_id: format!("{:032x}", 0x100 + trace),
        span_id: format!("{:016x}", 1 + id),
        parent_id: parent.map(|p| format!("{:016x}", 1 + p)),
        name: format!("n{trace}.{id}"),
        service: if id % 2 == 0 { "api".into() } else { "db".into() },
        start_ns: i64::try_from(id).unwrap(),
        end_ns: 100,
        attributes: attributes.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect(),
        status_code: i32::try_from(id % 3).unwrap(),
        status_message: if id == 1 { "only here".into() } else { String::new() },
        ..SpanRecord::default()
    };
    let mut spans = Vec::new();
    for t in 0..6 {
        let sets: [&[(&str, &str)]; 3] = [
            &[("tracewire.stage", "exec"), ("rpc.method", "Start"), ("tracewire.event", "Output")],
            &[("tracewire.clock.offset_us", "12"), ("other", "x")],
            &[],
        ];
        for id in 0..3 {
            let set = sets[(id + t) % 3];
            spans.push(span(t, id, set, (id > 0 && t % 2 == 0).then(|| id - 1)));
        }
    }
    runtime.block_on(store.append_spans(spans)).unwrap();
    runtime.block_on(store.flush()).unwrap();
    let wanted: Vec<String> =
        ["tracewire.stage", "rpc.method", "tracewire.clock.offset_us", "tracewire.event"].map(String::from).to_vec();
    let plain = read(&store, SpanDetail::Columns(wanted.clone()));

    let out = Arc::new(Mutex::new((Vec::new(), 0usize)));
    let into = Arc::clone(&out);
    let (back, spare) = std::sync::mpsc::channel();
    // The string buffers handed back: a later record holding one was filled again.
    let mut handed_back = std::collections::HashSet::new();
    runtime
        .block_on(store.for_each_trace_recycling(SpanFilter::default(), SpanDetail::Columns(wanted), spare, move |t| {
            let mut into = into.lock().unwrap();
            into.1 += t.iter().filter(|r| handed_back.contains(&(r.name.as_ptr() as usize))).count();
            handed_back.extend(t.iter().map(|r| r.name.as_ptr() as usize));
            into.0.extend(t.iter().cloned());
            back.send(t).unwrap();
        }))
        .unwrap();
    let (recycled, reused) = std::mem::take(&mut *out.lock().unwrap());
    assert_eq!(recycled, plain);
    assert_eq!(plain.len(), 22);
    assert!(reused >= 15, "only {reused} records were filled again");
}
