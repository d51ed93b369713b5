//! Reading and writing the trace formats users already have: OTLP JSON (the OpenTelemetry
//! Collector's file exporter) and Jaeger JSON (the Jaeger UI's download, the query API).
//!
//! The OTLP JSON rules checked here are the OTLP specification's, section "JSON Protobuf
//! Encoding" (opentelemetry-proto `docs/specification.md`): hex trace and span ids (case
//! insensitive), enums as integers, lowerCamelCase keys, unknown fields ignored, and proto3's
//! JSON mapping for the rest (64-bit integers as decimal strings, numbers accepted; bytes as
//! base64; "NaN", "Infinity", "-Infinity" for doubles; `null` as the default).

use std::path::Path;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value as V,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;
use tracewire_collector::input::{InputError, parse_jaeger_json, parse_otlp_json, read_jaeger_json, read_otlp_json};
use tracewire_collector::{SpanRecord, analyze, otlp_json};
use tracewire_store::{OtlpSpan, kind, status};

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn kv(key: &str, v: V) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..KeyValue::default() }
}

fn s(v: &str) -> V {
    V::StringValue(v.into())
}

/// The attribute's value, from the span's OTLP form.
fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a V> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

/// Records compared field for field: the analysis view with `==`, the OTLP form by its
/// protobuf encoding (so that a NaN attribute equals itself).
fn assert_same(got: &[SpanRecord], want: &[SpanRecord]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let view = |r: &SpanRecord| SpanRecord { otlp: None, ..r.clone() };
        assert_eq!(view(g), view(w));
        let wire = |r: &SpanRecord| {
            let o = r.otlp.as_deref().cloned().unwrap_or_default();
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some((*o.resource).clone()),
                    schema_url: o.resource_schema_url.to_string(),
                    scope_spans: vec![ScopeSpans {
                        scope: Some((*o.scope).clone()),
                        schema_url: o.scope_schema_url.to_string(),
                        spans: vec![o.span],
                    }],
                }],
            };
            request.encode_to_vec()
        };
        assert_eq!(wire(g), wire(w), "span {}", g.span_id);
    }
}

/// A request using every field of OTLP's trace messages and every value type.
fn every_field() -> ExportTraceServiceRequest {
    let values = vec![
        kv("string", s("a \"quoted\" ü \u{1} line\nbreak")),
        kv("empty.string", s("")),
        kv("bool", V::BoolValue(true)),
        kv("false", V::BoolValue(false)),
        kv("int", V::IntValue(-42)),
        kv("int.max", V::IntValue(i64::MAX)),
        kv("int.min", V::IntValue(i64::MIN)),
        kv("zero", V::IntValue(0)),
        kv("double", V::DoubleValue(0.1)),
        kv("double.tiny", V::DoubleValue(5e-324)),
        kv("nan", V::DoubleValue(f64::NAN)),
        kv("inf", V::DoubleValue(f64::INFINITY)),
        kv("-inf", V::DoubleValue(f64::NEG_INFINITY)),
        kv("bytes", V::BytesValue(vec![0xde, 0xad, 0xbe, 0xef, 0])),
        kv("empty.bytes", V::BytesValue(vec![])),
        kv(
            "array",
            V::ArrayValue(ArrayValue {
                values: vec![AnyValue { value: Some(s("x")) }, AnyValue { value: Some(V::IntValue(1)) }],
            }),
        ),
        kv("empty.array", V::ArrayValue(ArrayValue::default())),
        kv(
            "kvlist",
            V::KvlistValue(KeyValueList {
                values: vec![kv(
                    "nested",
                    V::KvlistValue(KeyValueList { values: vec![kv("deep", V::DoubleValue(2.5))] }),
                )],
            }),
        ),
        kv("empty.kvlist", V::KvlistValue(KeyValueList::default())),
        KeyValue { key: "no.value".into(), value: None, ..KeyValue::default() },
        KeyValue { key: "empty.value".into(), value: Some(AnyValue { value: None }), ..KeyValue::default() },
    ];
    let span = Span {
        trace_id: vec![0x4b; 16],
        span_id: vec![0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08],
        trace_state: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into(),
        parent_span_id: vec![0xff; 8],
        flags: 0x301,
        name: "every field".into(),
        kind: kind::CONSUMER,
        start_time_unix_nano: u64::MAX - 1,
        end_time_unix_nano: u64::MAX,
        attributes: values.clone(),
        dropped_attributes_count: 1,
        events: vec![
            Event {
                time_unix_nano: 7,
                name: "retrying".into(),
                attributes: values.clone(),
                dropped_attributes_count: 2,
            },
            Event::default(),
        ],
        dropped_events_count: 3,
        links: vec![
            Link {
                trace_id: vec![9; 16],
                span_id: vec![8; 8],
                trace_state: "k=v".into(),
                attributes: vec![kv("link.kind", s("retry-of"))],
                dropped_attributes_count: 4,
                flags: 0x101,
            },
            Link::default(),
        ],
        dropped_links_count: 5,
        status: Some(Status { message: "boom".into(), code: status::ERROR }),
    };
    let root = Span {
        trace_id: vec![0x4b; 16],
        span_id: vec![0xff; 8],
        name: "root".into(),
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s("api")),
                        kv("host.name", s("web-1")),
                        kv("cpu.count", V::IntValue(8)),
                    ],
                    dropped_attributes_count: 6,
                    entity_refs: vec![EntityRef {
                        schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                        r#type: "service".into(),
                        id_keys: vec!["service.name".into()],
                        description_keys: vec!["host.name".into()],
                    }],
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "tracewire".into(),
                            version: "0.1.0".into(),
                            attributes: vec![kv("scope.attr", V::BoolValue(true))],
                            dropped_attributes_count: 7,
                        }),
                        spans: vec![root, span],
                        schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                    },
                    ScopeSpans {
                        scope: Some(InstrumentationScope::default()),
                        spans: vec![Span { trace_id: vec![1; 16], span_id: vec![2; 8], ..Span::default() }],
                        schema_url: String::new(),
                    },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
            },
            ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans: vec![Span {
                        trace_id: vec![3; 16],
                        span_id: vec![4; 8],
                        name: "bare".into(),
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            },
        ],
    }
}

#[test]
fn otlp_to_otlp_json_lines_and_back_gives_equal_records() {
    let records = SpanRecord::all_of(&every_field());
    let mut out = Vec::new();
    let lines = otlp_json::write_lines(&records, &mut out).unwrap();
    assert_eq!(lines, 1);
    let text = String::from_utf8(out.clone()).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "one request per line, each ended by a newline");
    let back = parse_otlp_json(&out, Path::new("out.jsonl")).unwrap();
    assert_same(&back, &records);
    // Writing what was read gives the same bytes.
    let mut again = Vec::new();
    otlp_json::write_lines(&back, &mut again).unwrap();
    assert_eq!(String::from_utf8(again).unwrap(), text);

    // Lines stay bounded: a request per N spans, every span once.
    let mut out = Vec::new();
    assert_eq!(otlp_json::write_lines_per(&records, &mut out, 2).unwrap(), records.len().div_ceil(2));
    assert_same(&parse_otlp_json(&out, Path::new("out.jsonl")).unwrap(), &records);
    assert_eq!(otlp_json::write_lines(&[], &mut Vec::new()).unwrap(), 0);
}

/// What the writer puts on the line, per the specification's "JSON Protobuf Encoding" and
/// proto3's JSON mapping. opentelemetry-proto's serde derives write NaN as `null`, an
/// absent parent as `"parentSpanId":""` and an absent status as `null`, which this checks
/// the writer does not.
#[test]
fn the_writer_follows_the_otlp_json_encoding() {
    let line = otlp_json::encode(&every_field());
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
    // Ids as lowercase hex (not base64), keys in lowerCamelCase, enums as integers.
    assert_eq!(span["traceId"], "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b");
    assert_eq!(span["spanId"], "0102030405060708");
    assert_eq!(span["parentSpanId"], "ffffffffffffffff");
    assert_eq!(span["kind"], 5);
    assert_eq!(span["status"], serde_json::json!({"message": "boom", "code": 2}));
    assert_eq!(span["links"][0]["traceId"], "09090909090909090909090909090909");
    // fixed64 and int64 as decimal strings; fixed32 and uint32 as numbers.
    assert_eq!(span["startTimeUnixNano"], (u64::MAX - 1).to_string());
    assert_eq!(span["flags"], 0x301);
    assert_eq!(span["droppedLinksCount"], 5);
    let a =
        |key: &str| span["attributes"].as_array().unwrap().iter().find(|kv| kv["key"] == key).unwrap()["value"].clone();
    assert_eq!(a("int.min"), serde_json::json!({"intValue": i64::MIN.to_string()}));
    assert_eq!(a("nan"), serde_json::json!({"doubleValue": "NaN"}));
    assert_eq!(a("inf"), serde_json::json!({"doubleValue": "Infinity"}));
    assert_eq!(a("-inf"), serde_json::json!({"doubleValue": "-Infinity"}));
    assert_eq!(a("bytes"), serde_json::json!({"bytesValue": "3q2+7wA="}));
    assert_eq!(a("empty.array"), serde_json::json!({"arrayValue": {}}));
    assert_eq!(a("zero"), serde_json::json!({"intValue": "0"}), "a oneof member is written even when zero");
    assert_eq!(a("empty.value"), serde_json::json!({}));
    // Defaults are left out; a root has no parentSpanId at all.
    // Fields in the order of the .proto, as the Collector writes them.
    let root = r#"{"traceId":"4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b","spanId":"ffffffffffffffff","name":"root","startTimeUnixNano":"1","endTimeUnixNano":"2"}"#;
    assert!(line.contains(root), "{line}");
    assert!(!line.contains("null"), "{line}");
    assert!(!line.contains("trace_id") && !line.contains("parent_span_id"), "no proto field names");
}

/// The OpenTelemetry Collector's file exporter (`exporter/fileexporter`, format `json`)
/// writes one `ExportTraceServiceRequest` per line through pdata's JSON marshaler. The first
/// line of the fixture has the shape of the traces example of the specification's
/// `specification/protocol/file-exporter.md` (opentelemetry-specification, generated by the
/// Collector's test data): empty ids written as `""`, `"scope":{}`, `"status":{}`, dropped
/// counts, events without attributes. The second is what a current Collector writes for a
/// span with every value type (empty fields omitted, `"arrayValue":{}` for an empty array,
/// `"value":{}` for an empty value).
#[test]
fn reads_what_the_collector_file_exporter_writes() {
    let spans = read_otlp_json(data("collector-file-exporter.jsonl")).unwrap();
    assert_eq!(spans.len(), 3);
    let (a, b, c) = (&spans[0], &spans[1], &spans[2]);
    assert_eq!((a.trace_id.as_str(), a.span_id.as_str(), a.parent_id.as_deref()), ("", "", None));
    assert_eq!(
        (a.name.as_str(), a.start_ns, a.end_ns),
        ("checkout", 1_581_452_772_000_000_321, 1_581_452_773_000_000_789)
    );
    assert_eq!((a.status_code, a.status_message.as_str()), (status::ERROR, "card declined"));
    let oa = &a.otlp.as_ref().unwrap().span;
    assert_eq!((oa.dropped_attributes_count, oa.dropped_events_count), (3, 4));
    assert_eq!(oa.events[1].name, "priced");
    assert_eq!(attr(&oa.events[0].attributes, "cart.items"), Some(&s("three")));
    let ob = &b.otlp.as_ref().unwrap().span;
    assert_eq!(ob.status, Some(Status::default()), "\"status\":{{}} is a status that is present and empty");
    assert_eq!((ob.links.len(), ob.links[0].dropped_attributes_count, ob.dropped_links_count), (2, 5, 7));

    assert_eq!(c.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(c.parent_id.as_deref(), Some("eee19b7ec3c1b173"));
    assert_eq!((c.service.as_str(), c.kind, c.status_code), ("frontend", kind::SERVER, status::ERROR));
    let o = c.otlp.as_ref().unwrap();
    assert_eq!(attr(&o.resource.attributes, "host.name"), Some(&s("web-1")));
    assert_eq!((o.scope.name.as_str(), o.scope.version.as_str()), ("io.opentelemetry.http", "1.2.0"));
    assert_eq!(
        (&*o.resource_schema_url, &*o.scope_schema_url),
        ("https://opentelemetry.io/schemas/1.24.0", "https://opentelemetry.io/schemas/1.21.0")
    );
    let at = |k| attr(&o.span.attributes, k);
    assert_eq!(at("http.response.status_code"), Some(&V::IntValue(500)));
    assert_eq!(at("retry.ratio"), Some(&V::DoubleValue(0.25)));
    assert_eq!(at("cache.hit"), Some(&V::BoolValue(false)));
    assert_eq!(at("payload"), Some(&V::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])));
    assert_eq!(at("none"), Some(&V::ArrayValue(ArrayValue::default())));
    assert_eq!(at("nothing"), None);
    assert_eq!(c.attributes["tags"], r#"["a",2]"#);
    assert_eq!(
        (o.span.flags, o.span.links[0].trace_state.as_str(), o.span.links[0].flags),
        (769, "rojo=00f067aa0ba902b7", 1)
    );
    assert_eq!(o.span.events[0].name, "retrying");
}

/// One request per file (or several), pretty-printed over many lines, with what the mapping
/// lets a reader accept: uppercase hex ids, 64-bit integers as numbers, enum names.
#[test]
fn reads_pretty_printed_requests_over_many_lines() {
    let spans = read_otlp_json(data("otlp-pretty.json")).unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        (spans[0].kind, spans[0].duration_ns(), spans[0].attributes["db.rows"].as_str()),
        (kind::CLIENT, 2_500_000, "12")
    );
    assert_eq!(spans[1].parent_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(
        (spans[1].kind, spans[1].status_code, spans[1].start_ns),
        (kind::INTERNAL, status::OK, 1_700_000_000_000_100_000)
    );
    let summary = analyze(&spans, &[]);
    assert_eq!((summary.traces, summary.spans, summary.orphans), (1, 2, 0));
}

#[test]
fn zero_omitted_and_null_fields_are_defaults() {
    let text = br#"{}
{"resourceSpans":[]}
{"resourceSpans":[{}]}
{"resourceSpans":[{"scopeSpans":[{}]}]}
{"resourceSpans":[{"resource":null,"scopeSpans":[{"scope":null,"spans":[{"name":"only a name"},{"traceId":null,"kind":0,"status":null,"attributes":null,"unknownField":{"a":[1]}}]}]}]}
{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"b7ad6b7169203331","start_time_unix_nano":"5"}]}]}]}
{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"S/kvNXezTaajzpKdDg5HNg==","spanId":"APBnqgupArc="}]}]}]}
"#;
    let spans = parse_otlp_json(text, Path::new("sparse.jsonl")).unwrap();
    assert_eq!(spans.len(), 4);
    assert_eq!(spans[0].to_otlp().span, Span { name: "only a name".into(), ..Span::default() });
    assert_eq!(spans[1].otlp.as_ref().unwrap().span, Span::default(), "null and unknown fields are absent");
    assert_eq!(
        (spans[2].trace_id.as_str(), spans[2].start_ns),
        ("0af7651916cd43dd8448eb211c80319c", 5),
        "proto field names"
    );
    // Ids in base64 (a generic protobuf JSON encoder's output) when they have an id's length.
    assert_eq!(
        (spans[3].trace_id.as_str(), spans[3].span_id.as_str()),
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    );
    assert!(parse_otlp_json(b"", Path::new("empty")).unwrap().is_empty());
    assert!(parse_otlp_json(b"\n \n", Path::new("blank")).unwrap().is_empty());
}

#[test]
fn gzip_files_are_read_as_they_are() {
    use std::io::Write;
    let plain = std::fs::read(data("collector-file-exporter.jsonl")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    assert_same(
        &parse_otlp_json(&gz, Path::new("t.jsonl.gz")).unwrap(),
        &parse_otlp_json(&plain, Path::new("t.jsonl")).unwrap(),
    );
}

/// The Jaeger UI's download (`{"data":[trace]}`, the query API's shape), mapped as the
/// OpenTelemetry Collector's Jaeger translator maps it.
#[test]
fn reads_the_jaeger_ui_download_with_full_fidelity() {
    let spans = read_jaeger_json(data("jaeger-ui.json")).unwrap();
    assert_eq!(spans.len(), 2);
    let (root, child) = (&spans[0], &spans[1]);
    assert_eq!(
        (root.trace_id.as_str(), root.span_id.as_str(), root.parent_id.as_deref()),
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", None)
    );
    assert_eq!(
        (root.start_ns, root.end_ns),
        (1_700_000_000_000_000_000, 1_700_000_000_025_000_000),
        "microseconds to nanoseconds"
    );
    assert_eq!(
        (root.service.as_str(), root.kind, root.status_code, root.status_message.as_str()),
        ("orders", kind::SERVER, status::ERROR, "boom")
    );
    let o = root.otlp.as_ref().unwrap();
    assert_eq!((o.scope.name.as_str(), o.scope.version.as_str()), ("orders.http", "2.0.0"));
    assert_eq!(o.span.trace_state, "rojo=00f067aa0ba902b7");
    assert_eq!(o.span.flags, 1);
    let keys: Vec<&str> = o.span.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        ["http.response.status_code", "retry.ratio", "cached", "payload"],
        "the tags OTLP has fields for are gone"
    );
    assert_eq!(attr(&o.span.attributes, "http.response.status_code"), Some(&V::IntValue(500)));
    assert_eq!(attr(&o.span.attributes, "retry.ratio"), Some(&V::DoubleValue(0.5)));
    assert_eq!(attr(&o.span.attributes, "cached"), Some(&V::BoolValue(false)));
    assert_eq!(attr(&o.span.attributes, "payload"), Some(&V::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])));
    assert_eq!(o.span.events.len(), 1);
    assert_eq!(
        (o.span.events[0].name.as_str(), o.span.events[0].time_unix_nano),
        ("retrying", 1_700_000_000_010_000_000)
    );
    assert_eq!(o.span.events[0].attributes, vec![kv("attempt", V::IntValue(2))]);
    assert_eq!(
        o.resource.attributes,
        vec![kv("service.name", s("orders")), kv("host.name", s("web-1")), kv("process.pid", V::IntValue(4242))]
    );

    assert_eq!(child.parent_id.as_deref(), Some("b7ad6b7169203331"), "CHILD_OF in the same trace is the parent");
    let c = child.otlp.as_ref().unwrap();
    assert_eq!(c.span.links.len(), 1, "FOLLOWS_FROM is a link");
    assert_eq!((c.span.links[0].trace_id[0], c.span.links[0].span_id[7]), (0x4b, 0xb8));
    assert_eq!(
        (child.kind, child.status_code, child.service.as_str()),
        (kind::CLIENT, status::ERROR, "stock"),
        "error=true is status ERROR"
    );
    assert!(c.span.attributes.is_empty());
}

/// tracewire's own Jaeger export read back gives the spans it was written from, for all that
/// Jaeger's model carries: typed attributes, kind, status, trace state, flags, events,
/// links, dropped counts, the scope's name and version, the resource.
#[test]
fn the_jaeger_export_reads_back_as_the_spans_it_came_from() {
    let attributes = vec![
        kv("s", s("text")),
        kv("b", V::BoolValue(true)),
        kv("i", V::IntValue(i64::MIN)),
        kv("big", V::IntValue(9_007_199_254_740_993)),
        kv("d", V::DoubleValue(0.25)),
        kv("nan", V::DoubleValue(f64::NAN)),
        kv("bytes", V::BytesValue(vec![0, 1, 0xfe])),
    ];
    let root = Span {
        trace_id: vec![0x0a; 16],
        span_id: vec![1; 8],
        trace_state: "rojo=00f067aa0ba902b7".into(),
        flags: 1,
        name: "GET /".into(),
        kind: kind::SERVER,
        start_time_unix_nano: 1_700_000_000_000_001_000,
        end_time_unix_nano: 1_700_000_000_000_009_000,
        attributes: attributes.clone(),
        dropped_attributes_count: 2,
        events: vec![
            Event {
                time_unix_nano: 1_700_000_000_000_002_000,
                name: "retrying".into(),
                attributes: attributes.clone(),
                dropped_attributes_count: 3,
            },
            Event { time_unix_nano: 1_700_000_000_000_003_000, ..Event::default() },
        ],
        dropped_events_count: 4,
        links: vec![Link { trace_id: vec![0x4b; 16], span_id: vec![7; 8], ..Link::default() }],
        dropped_links_count: 5,
        status: Some(Status { code: status::ERROR, message: "boom".into() }),
        ..Span::default()
    };
    let child = Span {
        span_id: vec![2; 8],
        parent_span_id: vec![1; 8],
        name: "SELECT".into(),
        kind: kind::CLIENT,
        start_time_unix_nano: 1_700_000_000_000_002_000,
        end_time_unix_nano: 1_700_000_000_000_004_000,
        status: Some(Status { code: status::OK, message: String::new() }),
        ..Span { trace_id: vec![0x0a; 16], ..Span::default() }
    };
    let resource = Resource {
        attributes: vec![kv("service.name", s("api")), kv("host.name", s("h1")), kv("pid", V::IntValue(7))],
        dropped_attributes_count: 1,
        ..Resource::default()
    };
    let scope = InstrumentationScope { name: "http".into(), version: "1.0".into(), ..InstrumentationScope::default() };
    let spans: Vec<SpanRecord> = [root, child]
        .into_iter()
        .map(|span| {
            SpanRecord::from_otlp(OtlpSpan {
                resource: Arc::new(resource.clone()),
                scope: Arc::new(scope.clone()),
                span,
                ..OtlpSpan::default()
            })
        })
        .collect();
    let jaeger = serde_json::to_vec(&tracewire_collector::jaeger::to_jaeger(&spans)).unwrap();
    assert_same(&parse_jaeger_json(&jaeger, Path::new("export.json")).unwrap(), &spans);
}

#[test]
fn reads_the_query_api_answer_a_bare_trace_and_short_ids() {
    let trace = r#"{"traceID":"d269b633813fc60c","spans":[{"traceID":"d269b633813fc60c","spanID":"1b174","operationName":"op",
        "references":[],"startTime":"10","duration":5,"tags":[{"key":"n","type":"int64","value":"9007199254740993"}],
        "logs":[{"timestamp":12,"fields":[{"key":"message","type":"string","value":"no event field"}]}],
        "process":{"serviceName":"inline","tags":[]}}]}"#;
    let bare = parse_jaeger_json(trace.as_bytes(), Path::new("bare.json")).unwrap();
    // A 64-bit trace id (Jaeger writes 16 digits when the high half is zero) and a span id
    // without its leading zeros are padded.
    assert_eq!(
        (bare[0].trace_id.as_str(), bare[0].span_id.as_str()),
        ("0000000000000000d269b633813fc60c", "000000000001b174")
    );
    assert_eq!((bare[0].service.as_str(), bare[0].start_ns, bare[0].end_ns), ("inline", 10_000, 15_000));
    assert_eq!(bare[0].attributes["n"], "9007199254740993", "int64 as a string keeps every digit");
    assert_eq!(bare[0].otlp.as_ref().unwrap().span.events[0].name, "");
    let api = format!(r#"{{"data":[{trace}],"total":1,"limit":0,"offset":0,"errors":null}}"#);
    assert_same(&parse_jaeger_json(api.as_bytes(), Path::new("api.json")).unwrap(), &bare);
    let array = format!("[{trace}]");
    assert_same(&parse_jaeger_json(array.as_bytes(), Path::new("array.json")).unwrap(), &bare);
    assert!(
        parse_jaeger_json(br#"{"data":null,"errors":[{"code":404,"msg":"trace not found"}]}"#, Path::new("e.json"))
            .unwrap()
            .is_empty()
    );
}

/// A span with `error: true` and nothing else is status ERROR without a message; `otel.status_code`
/// wins over `error`; `otel.status_code=OK` is status OK.
#[test]
fn jaeger_status_tags_become_the_status() {
    let span = |tags: &str| {
        let doc = format!(
            r#"{{"traceID":"01","spans":[{{"spanID":"02","operationName":"x","startTime":1,"duration":1,"tags":[{tags}]}}]}}"#
        );
        let spans = parse_jaeger_json(doc.as_bytes(), Path::new("t.json")).unwrap();
        (spans[0].status_code, spans[0].status_message.clone(), spans[0].attributes.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(span(r#"{"key":"error","type":"bool","value":true}"#), (status::ERROR, String::new(), vec![]));
    assert_eq!(
        span(r#"{"key":"error","type":"bool","value":false}"#),
        (status::UNSET, String::new(), vec!["error".into()])
    );
    assert_eq!(span(r#"{"key":"otel.status_code","type":"string","value":"OK"}"#), (status::OK, String::new(), vec![]));
    assert_eq!(
        span(r#"{"key":"otel.status_code","value":"ERROR"},{"key":"otel.status_description","value":"bad"}"#),
        (status::ERROR, "bad".into(), vec![])
    );
    assert_eq!(
        span(r#"{"key":"span.kind","value":"sideways"}"#).2,
        vec!["span.kind".to_owned()],
        "an unknown kind stays a tag"
    );
}

/// The spans of execs as tracewire's stages make them, in whole microseconds (Jaeger carries
/// times in microseconds), with typed attributes and statuses, and the server's clock off:
/// 3 ms ahead and measured (`tracewire.clock.offset_us`) in even traces, 2 ms behind and
/// not measured (the analysis moves its spans inside their parent) in odd ones.
fn traces() -> Vec<SpanRecord> {
    let mut request = ExportTraceServiceRequest::default();
    for t in 0u8..5 {
        let skew: i64 = if t % 2 == 0 { 3_000 } else { -2_000 };
        let us = |x: i64| u64::try_from(1_700_000_000_000_000_000 + i64::from(t) * 1_000_000_000 + x * 1_000).unwrap();
        let span = |id: u8, parent: Option<u8>, name: &str, start: i64, end: i64, attributes: Vec<KeyValue>| Span {
            trace_id: vec![0xa0 | t; 16],
            span_id: vec![0, 0, 0, 0, 0, 0, t, id],
            parent_span_id: parent.map(|p| vec![0, 0, 0, 0, 0, 0, t, p]).unwrap_or_default(),
            name: name.into(),
            kind: if parent.is_none() { kind::CLIENT } else { kind::INTERNAL },
            start_time_unix_nano: us(start),
            end_time_unix_nano: us(end),
            attributes,
            ..Span::default()
        };
        let stage = |s: &str| kv("tracewire.stage", self::s(s));
        let extra = i64::from(t) * 370;
        let mut call = vec![stage("rpc.call"), kv("rpc.method", s("Start"))];
        if t % 2 == 0 {
            call.push(kv("tracewire.clock.offset_us", V::IntValue(skew)));
        }
        let client = vec![
            span(1, None, "exec", 0, 9_000 + extra, vec![stage("exec")]),
            span(2, Some(1), "rpc.call", 100, 8_500 + extra, call),
        ];
        let server = |id, parent, name, start: i64, end: i64, attributes| {
            span(id, parent, name, start + skew, end + skew, attributes)
        };
        let mut spawn = server(
            4,
            Some(3),
            "process.spawn",
            1_300,
            2_100 + extra / 2,
            vec![stage("process.spawn"), kv("process.pid", V::IntValue(4000 + i64::from(t)))],
        );
        if t == 3 {
            spawn.status = Some(Status { code: status::ERROR, message: "no such file".into() });
        }
        let server = vec![
            server(3, Some(2), "rpc.dispatch", 1_200, 8_000 + extra, vec![stage("rpc.dispatch")]),
            spawn,
            server(
                5,
                Some(3),
                "terminal.deliver",
                2_500 + extra,
                2_700 + extra,
                vec![stage("terminal.deliver"), kv("tracewire.event", s("Output")), kv("ratio", V::DoubleValue(0.5))],
            ),
        ];
        for (service, spans) in [("client", client), ("server", server)] {
            request.resource_spans.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s(service)), kv("host.name", s("h1"))],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope { name: "tracewire".into(), ..InstrumentationScope::default() }),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            });
        }
    }
    SpanRecord::all_of(&request)
}

/// The same traces as a database, as OTLP JSON and as Jaeger JSON give the same summary.
/// What a format cannot carry is kept out of the traces: Jaeger has microsecond times (the
/// spans are in whole microseconds), and Jaeger's model has no place for schema URLs, link
/// attributes or the scope's attributes apart from the span's (the traces have none; the
/// summary does not read them). The Jaeger file has the spans moved by the clock-skew
/// correction, with warnings saying by how much: read back at their recorded times, they
/// are corrected once, as from the other sources.
#[tokio::test]
async fn the_same_traces_as_a_database_otlp_json_and_jaeger_json_give_identical_summaries() {
    let spans = traces();
    let slos = [
        tracewire_collector::Slo::parse("e2e.p90<=9ms").unwrap(),
        tracewire_collector::Slo::parse("process.spawn.p50<=1ms").unwrap(),
    ];
    let want = serde_json::to_value(analyze(&spans, &slos)).unwrap();
    assert_eq!(
        (want["traces"].as_u64(), want["spans"].as_u64(), want["orphans"].as_u64()),
        (Some(5), Some(25), Some(0))
    );

    let dir = tracewire_testkit::TempDir::new("tracewire-formats").unwrap();
    let store = tracewire_store::Store::open(dir.path().join("traces.db")).unwrap();
    store.append_spans(spans.clone()).await.unwrap();
    store.flush().await.unwrap();
    let from_db = store.spans().await.unwrap();

    let mut otlp = Vec::new();
    otlp_json::write_lines_per(&spans, &mut otlp, 7).unwrap();
    let from_otlp = parse_otlp_json(&otlp, Path::new("traces.jsonl")).unwrap();
    // Lines group spans by resource and scope: the same spans, in another order.
    let sorted = |spans: &[SpanRecord]| {
        let mut v = spans.to_vec();
        v.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
        v
    };
    assert_same(&sorted(&from_otlp), &sorted(&spans));

    let jaeger = serde_json::to_vec(&tracewire_collector::jaeger::to_jaeger(&spans)).unwrap();
    assert!(String::from_utf8_lossy(&jaeger).contains("This span's timestamps were adjusted by -3ms"));
    let from_jaeger = parse_jaeger_json(&jaeger, Path::new("traces.jaeger.json")).unwrap();
    assert_eq!(from_jaeger.len(), spans.len());

    for (source, got) in [("database", &from_db), ("OTLP JSON", &from_otlp), ("Jaeger JSON", &from_jaeger)] {
        assert_eq!(serde_json::to_value(analyze(got, &slos)).unwrap(), want, "the summary from {source}");
    }
}

#[test]
fn errors_name_the_file_the_line_and_what_is_wrong() {
    let err = |text: &str| parse_otlp_json(text.as_bytes(), Path::new("in.jsonl")).unwrap_err().to_string();
    let ok = r#"{"resourceSpans":[]}"#;
    assert_eq!(
        err(&format!(
            "{ok}\n{ok}\n{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{{}},{{\"traceId\":\"xyz\"}}]}}]}}]}}\n"
        )),
        r#"in.jsonl:3: resourceSpans[0].scopeSpans[0].spans[1].traceId: "xyz" is not a hex id"#
    );
    assert_eq!(
        err(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"-1"}]}]}]}"#),
        r#"in.jsonl:1: resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: "-1" is not an unsigned 64-bit integer"#
    );
    assert_eq!(
        err(
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"intValue":"1","stringValue":"1"}}]}]}]}]}"#
        ),
        "in.jsonl:1: resourceSpans[0].scopeSpans[0].spans[0].attributes[0].value: sets both stringValue and intValue (a oneof holds one)"
    );
    assert_eq!(
        err(&format!("{ok}\n{{\"resourceSpans\": [\n")),
        "in.jsonl: not valid JSON: EOF while parsing a list at line 3 column 0"
    );
    assert_eq!(err("{\"data\":[]}"), "in.jsonl:1: this is Jaeger JSON, not OTLP JSON traces");
    assert_eq!(err("\n\n{\"resourceLogs\":[]}"), "in.jsonl:3: this is OTLP JSON logs, not OTLP JSON traces");
    assert!(err("\u{28}\u{b5}\u{2f}\u{fd}").contains("JSON"), "not zstd's magic in UTF-8, so a JSON error");
    let zstd = parse_otlp_json(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0], Path::new("t.zst")).unwrap_err();
    assert!(matches!(zstd, InputError::WrongFormat { found, .. } if found.starts_with("zstd")), "{zstd}");
    let missing = read_otlp_json("/nonexistent/traces.jsonl").unwrap_err();
    assert!(
        matches!(&missing, InputError::Io { file, .. } if file == Path::new("/nonexistent/traces.jsonl")),
        "{missing}"
    );

    let jerr = |text: &str| parse_jaeger_json(text.as_bytes(), Path::new("j.json")).unwrap_err().to_string();
    assert_eq!(
        jerr(
            r#"{"data":[{"traceID":"01","spans":[{"spanID":"02","processID":"p9"}],"processes":{"p1":{"serviceName":"a"}}}]}"#
        ),
        r#"j.json:1: data[0].spans[0].processID: process "p9" is not in the trace's processes"#
    );
    assert_eq!(
        jerr(r#"{"data":[{"traceID":"0af7651916cd43dd8448eb211c80319c00","spans":[]}]}"#),
        r#"j.json:1: data[0].traceID: "0af7651916cd43dd8448eb211c80319c00" is longer than 32 hex digits"#
    );
    assert_eq!(
        jerr("{\"data\":[{\"spans\":[{\"tags\":[{\"key\":\"n\",\"type\":\"int64\",\"value\":1.5}]}]}]}"),
        "j.json:1: data[0].spans[0].tags[0].value: 1.5 is not a 64-bit integer"
    );
    assert_eq!(jerr(r#"{"resourceSpans":[]}"#), "j.json:1: this is OTLP JSON, not Jaeger JSON");
    assert_eq!(jerr("\n  7"), "j.json:2: $: expected Jaeger JSON ({\"data\":[...]} or a trace), found a number");
}

/// Values built from the formats' own vocabulary, so that generated documents reach deep
/// into the readers (random bytes mostly stop at the JSON parser).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as J;
    const KEYS: &[&str] = &[
        "resourceSpans",
        "scopeSpans",
        "spans",
        "resource",
        "scope",
        "attributes",
        "key",
        "value",
        "stringValue",
        "intValue",
        "doubleValue",
        "boolValue",
        "bytesValue",
        "arrayValue",
        "kvlistValue",
        "values",
        "traceId",
        "spanId",
        "parentSpanId",
        "startTimeUnixNano",
        "endTimeUnixNano",
        "kind",
        "status",
        "code",
        "events",
        "links",
        "flags",
        "entityRefs",
        "data",
        "traceID",
        "spanID",
        "processes",
        "processID",
        "process",
        "serviceName",
        "tags",
        "type",
        "logs",
        "fields",
        "timestamp",
        "references",
        "refType",
        "startTime",
        "duration",
        "p1",
    ];
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        any::<u64>().prop_map(J::from),
        any::<f64>().prop_map(J::from),
        prop::sample::select(vec![
            "",
            "NaN",
            "-Infinity",
            "zz",
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331",
            "3q2+7w==",
            "-1",
            "18446744073709551616",
            "int64",
            "float64",
            "binary",
            "bool",
            "string",
            "CHILD_OF",
            "FOLLOWS_FROM",
            "p1",
            "SPAN_KIND_SERVER",
            "span.kind",
            "error",
            "otel.status_code",
            "ERROR",
            "event",
            "1e400",
        ])
        .prop_map(J::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..5)
                .prop_map(|kvs| J::Object(kvs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// Doubles the round trip keeps bit for bit: the special values, and decimals of up to 14
/// digits scaled by 10^-22 to 1. serde_json without its `float_roundtrip` feature (which
/// this workspace does not enable) parses a number exactly only when its digits fit in 53
/// bits and its exponent is within 10^±22; otherwise to within one ULP: it reads
/// `-1.3106586928951447e-230` and `8197831319845060.0`, what serde_json writes for two
/// doubles, as their neighbours.
fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            5e-324
        ]),
        (-99_999_999_999_999i64..=99_999_999_999_999, -22i32..=0)
            .prop_map(|(m, e)| format!("{m}e{e}").parse::<f64>().unwrap_or_default()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No input makes either reader panic: arbitrary bytes, and documents made of the
    /// formats' own keys and values.
    #[test]
    fn arbitrary_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256), doc in json_value()) {
        let _ = parse_otlp_json(&bytes, Path::new("fuzz"));
        let _ = parse_jaeger_json(&bytes, Path::new("fuzz"));
        let text = doc.to_string();
        let _ = parse_otlp_json(text.as_bytes(), Path::new("fuzz"));
        let _ = parse_jaeger_json(text.as_bytes(), Path::new("fuzz"));
        let _ = otlp_json::decode(&doc);
    }

    /// Fixtures with a few bytes changed: errors, never a panic.
    #[test]
    fn damaged_files_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        for name in ["collector-file-exporter.jsonl", "otlp-pretty.json", "jaeger-ui.json"] {
            let mut bytes = std::fs::read(data(name)).unwrap();
            for (at, b) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *b;
            }
            let _ = parse_otlp_json(&bytes, Path::new(name));
            let _ = parse_jaeger_json(&bytes, Path::new(name));
        }
    }

    /// Generated spans round-trip through OTLP JSON lines: ids, times, names, kinds,
    /// statuses and attributes of every scalar type.
    #[test]
    fn generated_spans_round_trip(
        spans in prop::collection::vec(
            (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u64>(), ".{0,12}", 0..6i32, 0..3i32, any::<i64>(), double(), any::<bool>(), prop::collection::vec(any::<u8>(), 0..9)),
            1..6,
        )
    ) {
        let records: Vec<SpanRecord> = spans
            .into_iter()
            .map(|(trace, span, start, name, k, code, i, d, b, bytes)| {
                SpanRecord::from_otlp(OtlpSpan {
                    resource: Arc::new(Resource { attributes: vec![kv("service.name", s(&name))], ..Resource::default() }),
                    span: Span {
                        trace_id: trace.to_vec(),
                        span_id: span.to_vec(),
                        name: name.clone(),
                        kind: k,
                        start_time_unix_nano: start,
                        end_time_unix_nano: start.saturating_add(1),
                        attributes: vec![kv("i", V::IntValue(i)), kv("d", V::DoubleValue(d)), kv("b", V::BoolValue(b)), kv("bytes", V::BytesValue(bytes)), kv(&name, s(&name))],
                        status: (code != 0).then_some(Status { code, message: name }),
                        ..Span::default()
                    },
                    ..OtlpSpan::default()
                })
            })
            .collect();
        let mut out = Vec::new();
        otlp_json::write_lines_per(&records, &mut out, 2).unwrap();
        let back = parse_otlp_json(&out, Path::new("gen.jsonl")).unwrap();
        // The records as written: two a line, grouped by resource and scope in each.
        let written: Vec<SpanRecord> =
            records.chunks(2).flat_map(|chunk| SpanRecord::all_of(&tracewire_store::to_request(chunk))).collect();
        assert_same(&back, &written);
    }
}

/// Why the codec is written by hand: opentelemetry-proto's serde derives (its `with-serde`
/// feature) differ from the encoding. If a new version of the crate fixes these, the
/// derives may do instead.
#[test]
fn opentelemetry_proto_serde_differs_from_the_encoding() {
    // proto3 JSON writes a NaN double as "NaN"; the derives write null, which reads back as
    // an error.
    let nan = AnyValue { value: Some(V::DoubleValue(f64::NAN)) };
    assert_eq!(serde_json::to_string(&nan).unwrap(), r#"{"doubleValue":null}"#);
    // What the Collector writes for an empty array and what the mapping allows for an
    // absent field are refused.
    for collector_writes in [r#"{"arrayValue":{}}"#, r#"{"kvlistValue":{}}"#] {
        assert!(serde_json::from_str::<AnyValue>(collector_writes).is_err(), "{collector_writes}");
    }
    assert!(serde_json::from_str::<Span>(r#"{"parentSpanId":null}"#).is_err());
    // Defaults are all written: a root's parent as "", an absent status as null.
    let root = serde_json::to_string(&Span::default()).unwrap();
    assert!(root.contains(r#""parentSpanId":"""#) && root.contains(r#""status":null"#), "{root}");
    // The hand-written codec: all of these as the encoding says.
    let line = otlp_json::encode(&ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span { attributes: vec![kv("nan", V::DoubleValue(f64::NAN))], ..Span::default() }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    });
    assert_eq!(
        line,
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"nan","value":{"doubleValue":"NaN"}}]}]}]}]}"#
    );
    let read = otlp_json::decode_slice(
        br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"parentSpanId":null,"attributes":[{"key":"a","value":{"arrayValue":{}}},{"key":"k","value":{"kvlistValue":{}}}]}]}]}]}"#,
    )
    .unwrap();
    let span = &read.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(attr(&span.attributes, "a"), Some(&V::ArrayValue(ArrayValue::default())));
    assert_eq!(attr(&span.attributes, "k"), Some(&V::KvlistValue(KeyValueList::default())));
}
