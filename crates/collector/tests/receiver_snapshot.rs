//! `SpanStore::snapshot` of requests kept as protobuf bytes gives exactly the records
//! `SpanRecord::all_of` makes of the decoded requests: every `AnyValue` kind, events, links,
//! dropped counts, flags, statuses, several resources and scopes, unknown fields (dropped
//! by decoding, as prost drops them), and the front of the oldest request dropped at the
//! capacity; decoded on one thread and on several.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tracewire_collector::SpanRecord;
use tracewire_collector::otlp::EncodedRequest;
use tracewire_collector::receiver::SpanStore;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
}

/// Every kind of `AnyValue`, nested ones included, and a key without a value.
fn attributes(i: u64) -> Vec<KeyValue> {
    let mut out = vec![
        kv("tracewire.stage", Value::StringValue(format!("stage-{}", i % 5))),
        kv("bool", Value::BoolValue(i % 2 == 0)),
        kv("int", Value::IntValue(-i64::try_from(i).unwrap())),
        kv("double", Value::DoubleValue(f64::from(u32::try_from(i).unwrap()) / 3.0)),
        kv("bytes", Value::BytesValue(vec![0, 1, 0xff, u8::try_from(i % 256).unwrap()])),
        kv(
            "array",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue { value: Some(Value::StringValue("a".into())) },
                    AnyValue { value: Some(Value::IntValue(7)) },
                    AnyValue { value: None },
                ],
            }),
        ),
        kv(
            "kvlist",
            Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", Value::StringValue("x".into())), kv("n", Value::DoubleValue(f64::NAN))],
            }),
        ),
        kv("string_ref", Value::StringValueStrindex(3)),
        KeyValue { key: "none".into(), value: None, key_strindex: 2 },
    ];
    if i % 3 == 0 {
        out.push(kv("unicode", Value::StringValue("é \u{1f600}".into())));
    }
    out
}

fn span(seed: u64, i: u64) -> Span {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&seed.to_be_bytes());
    trace_id[8..].copy_from_slice(&(i / 4 + 1).to_be_bytes());
    Span {
        trace_id: trace_id.to_vec(),
        span_id: (i + 1).to_be_bytes().to_vec(),
        parent_span_id: if i % 4 == 0 { Vec::new() } else { (i / 4 * 4 + 1).to_be_bytes().to_vec() },
        trace_state: if i % 2 == 0 { "k=v".into() } else { String::new() },
        name: format!("span-{i}"),
        kind: i32::try_from(i % 6).unwrap(),
        start_time_unix_nano: 1_700_000_000_000_000_000 + i,
        // A time past i64::MAX nanoseconds for some.
        end_time_unix_nano: if i % 7 == 0 { u64::MAX - i } else { 1_700_000_000_000_001_000 + i },
        attributes: attributes(i),
        dropped_attributes_count: u32::try_from(i % 3).unwrap(),
        events: (0..i % 3)
            .map(|e| Event {
                time_unix_nano: 1_700_000_000_000_000_500 + e,
                name: format!("event-{e}"),
                attributes: vec![kv("e", Value::IntValue(i64::try_from(e).unwrap()))],
                dropped_attributes_count: u32::try_from(e).unwrap(),
            })
            .collect(),
        dropped_events_count: u32::try_from(i % 2).unwrap(),
        links: (0..i % 2)
            .map(|l| Link {
                trace_id: vec![9; 16],
                span_id: vec![u8::try_from(l + 1).unwrap(); 8],
                trace_state: "a=b".into(),
                attributes: vec![kv("l", Value::BoolValue(true))],
                dropped_attributes_count: 1,
                flags: 0x301,
            })
            .collect(),
        dropped_links_count: u32::try_from(i % 4).unwrap(),
        status: match i % 4 {
            0 => None,
            1 => Some(Status { message: String::new(), code: 0 }),
            2 => Some(Status { message: "failed".into(), code: 2 }),
            _ => Some(Status { message: String::new(), code: 1 }),
        },
        flags: u32::try_from(i % 0x400).unwrap(),
    }
}

/// A request of two resources (one without a resource message), each with two scopes (one
/// without a scope message), `per_scope` spans in each.
fn request(seed: u64, per_scope: u64) -> ExportTraceServiceRequest {
    let mut next = 0;
    let mut spans = |n: u64| {
        let out: Vec<Span> = (next..next + n).map(|i| span(seed, i)).collect();
        next += n;
        out
    };
    let scopes = |spans: &mut dyn FnMut(u64) -> Vec<Span>| {
        vec![
            ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "scope".into(),
                    version: "1.0".into(),
                    attributes: vec![kv("s", Value::StringValue("v".into()))],
                    dropped_attributes_count: 2,
                }),
                spans: spans(per_scope),
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            },
            ScopeSpans { scope: None, spans: spans(per_scope), schema_url: String::new() },
        ]
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", Value::StringValue(format!("svc-{seed}")))],
                    dropped_attributes_count: 1,
                    entity_refs: Vec::new(),
                }),
                scope_spans: scopes(&mut spans),
                schema_url: "https://example.com/resource".into(),
            },
            ResourceSpans { resource: None, scope_spans: scopes(&mut spans), schema_url: String::new() },
        ],
    }
}

/// Unknown fields appended to a message: a varint, a fixed64, a length-delimited one and a
/// group, as field 99.
const UNKNOWN: &[u8] =
    &[0x98, 0x06, 0x01, 0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0x9a, 0x06, 0x02, 0xab, 0xcd, 0x9b, 0x06, 0x9c, 0x06];

/// The request's bytes with [`UNKNOWN`] fields in the request and in every span. (A span's
/// length grows, so the request is encoded by hand around the spans.)
fn with_unknown_fields(request: &ExportTraceServiceRequest) -> Vec<u8> {
    fn len_field(tag: u32, content: &[u8], out: &mut Vec<u8>) {
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
        prost::encoding::encode_varint(content.len() as u64, out);
        out.extend_from_slice(content);
    }
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let mut rs_bytes = Vec::new();
        if let Some(resource) = &rs.resource {
            len_field(1, &resource.encode_to_vec(), &mut rs_bytes);
        }
        for ss in &rs.scope_spans {
            let mut ss_bytes = Vec::new();
            if let Some(scope) = &ss.scope {
                len_field(1, &scope.encode_to_vec(), &mut ss_bytes);
            }
            for span in &ss.spans {
                let mut span_bytes = span.encode_to_vec();
                span_bytes.extend_from_slice(UNKNOWN);
                len_field(2, &span_bytes, &mut ss_bytes);
            }
            if !ss.schema_url.is_empty() {
                len_field(3, ss.schema_url.as_bytes(), &mut ss_bytes);
            }
            ss_bytes.extend_from_slice(UNKNOWN);
            len_field(2, &ss_bytes, &mut rs_bytes);
        }
        if !rs.schema_url.is_empty() {
            len_field(3, rs.schema_url.as_bytes(), &mut rs_bytes);
        }
        len_field(1, &rs_bytes, &mut out);
    }
    out.extend_from_slice(UNKNOWN);
    out
}

/// `requests` requests of `4 * per_scope` spans kept as bytes in a store of `capacity`
/// spans: its snapshot, and what `all_of` makes of the same requests decoded, the oldest
/// spans beyond the capacity left out.
fn both(requests: u64, per_scope: u64, capacity: usize) -> (Vec<SpanRecord>, Vec<SpanRecord>) {
    let store = SpanStore::new(capacity);
    let mut expected = Vec::new();
    for seed in 0..requests {
        let bytes = with_unknown_fields(&request(seed, per_scope));
        let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        // (Compared encoded: a NaN attribute is not equal to itself.)
        assert_eq!(
            decoded.encode_to_vec(),
            request(seed, per_scope).encode_to_vec(),
            "the unknown fields are dropped by decoding"
        );
        expected.extend(SpanRecord::all_of(&decoded));
        store.add_encoded(EncodedRequest::new(bytes.into()).unwrap());
    }
    let kept = expected.len().min(capacity);
    expected.drain(..expected.len() - kept);
    (store.snapshot(), expected)
}

fn assert_same(got: &[SpanRecord], expected: &[SpanRecord]) {
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        // NaN attribute values differ from themselves: compare their encodings.
        let encode = |r: &SpanRecord| r.otlp.as_ref().map(|o| (o.span.encode_to_vec(), o.resource.encode_to_vec()));
        assert_eq!(encode(g), encode(e), "span {i}: OTLP form");
        let strip = |r: &SpanRecord| SpanRecord { otlp: None, ..r.clone() };
        assert_eq!(strip(g), strip(e), "span {i}: analysis view");
        let (go, eo) = (g.otlp.as_deref().unwrap(), e.otlp.as_deref().unwrap());
        assert_eq!(
            (&go.scope, &go.scope_schema_url, &go.resource_schema_url),
            (&eo.scope, &eo.scope_schema_url, &eo.resource_schema_url),
            "span {i}: scope and schema URLs"
        );
    }
}

#[test]
fn snapshot_of_bytes_is_all_of_the_decoded_requests() {
    // A few spans: decoded on the calling thread.
    let (got, expected) = both(3, 5, 1_000);
    assert_eq!(got.len(), 60);
    assert_same(&got, &expected);
}

#[test]
fn snapshot_on_several_threads_keeps_the_order_and_the_capacity() {
    // 24 requests of 400 spans, 8,950 kept: decoded on several threads, the oldest request
    // dropped whole and the next one's first 250 spans (into its second resource's first
    // scope).
    let (got, expected) = both(24, 100, 8_950);
    assert_eq!(got.len(), 8_950);
    assert_same(&got, &expected);
}

/// Protobuf's merge rules (Protocol Buffers encoding guide, "Last One Wins" and
/// "Concatenated messages"): a scalar that occurs twice takes its last value, a message
/// field that occurs twice is merged, a repeated one appends. A snapshot of bytes that
/// repeat fields (a resource, a scope, schema URLs, and every span followed by a second
/// encoding that renames it, adds an attribute and merges a status message into its status)
/// gives what prost's decoding does; the resource comes after its scope lists.
#[test]
fn repeated_fields_are_read_as_prost_merges_them() {
    fn len_field(tag: u32, content: &[u8], out: &mut Vec<u8>) {
        prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
        prost::encoding::encode_varint(content.len() as u64, out);
        out.extend_from_slice(content);
    }
    let later = |i: u64| Span {
        name: format!("renamed-{i}"),
        trace_id: vec![7; 16],
        attributes: vec![kv("added", Value::IntValue(1))],
        status: Some(Status { message: "merged".into(), code: 0 }),
        ..Span::default()
    };
    let resource = |name: &str| Resource { attributes: vec![kv(name, Value::BoolValue(true))], ..Resource::default() };
    let scope = |name: &str| InstrumentationScope { name: name.into(), ..InstrumentationScope::default() };
    let mut scope_list = Vec::new();
    len_field(1, &scope("first").encode_to_vec(), &mut scope_list);
    for i in 0..6 {
        let mut bytes = span(1, i).encode_to_vec();
        bytes.extend_from_slice(&later(i).encode_to_vec());
        len_field(2, &bytes, &mut scope_list);
    }
    len_field(3, b"https://example.com/scope-1", &mut scope_list);
    len_field(1, &scope("second").encode_to_vec(), &mut scope_list);
    len_field(3, b"https://example.com/scope-2", &mut scope_list);
    let mut resource_list = Vec::new();
    len_field(2, &scope_list, &mut resource_list);
    len_field(3, b"https://example.com/resource-1", &mut resource_list);
    len_field(1, &resource("service.name").encode_to_vec(), &mut resource_list);
    len_field(1, &resource("second").encode_to_vec(), &mut resource_list);
    len_field(3, b"https://example.com/resource-2", &mut resource_list);
    let mut bytes = Vec::new();
    len_field(1, &resource_list, &mut bytes);

    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    let expected = SpanRecord::all_of(&decoded);
    assert_eq!(expected[2].name, "renamed-2");
    assert_eq!((expected[2].status_code, expected[2].status_message.as_str()), (2, "merged"));
    let store = SpanStore::new(100);
    store.add_encoded(EncodedRequest::new(bytes.into()).unwrap());
    let got = store.snapshot();
    assert_same(&got, &expected);
    // The front of the request dropped: the rest read the same.
    let store = SpanStore::new(4);
    store.add_encoded(EncodedRequest::new(with_unknown_fields(&decoded).into()).unwrap());
    assert_same(&store.snapshot(), &expected[2..]);
}
