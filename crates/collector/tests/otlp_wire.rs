//! `tracewire_collector::otlp::validate` against prost: everything prost encodes is
//! accepted with its span count, and on corrupt input (truncated, mutated, random fields
//! of any wire type, nested past the recursion limit) it accepts exactly what
//! `ExportTraceServiceRequest::decode` accepts. Every case also runs the fuzz target's
//! check (`fuzz/src/otlp.rs`), which compares a store keeping the request encoded with one
//! keeping it decoded.

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/otlp.rs"]
mod checks;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use proptest::prelude::*;
use prost::Message;
use tracewire_collector::otlp::{EncodedRequest, WireError, validate};

/// Both accept (with the same span count) or both reject; then the fuzz check.
fn agree(bytes: &[u8]) {
    let ours = validate(bytes);
    let theirs = ExportTraceServiceRequest::decode(bytes);
    match (&ours, &theirs) {
        (Ok(n), Ok(r)) => assert_eq!(*n, checks::span_count(r)),
        (Err(_), Err(_)) => {}
        _ => panic!("validate: {ours:?}, prost: {:?}, on {bytes:02x?}", theirs.map(|r| checks::span_count(&r))),
    }
    checks::otlp_export(bytes);
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z.]{1,12}", any::<String>()]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        text().prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        any::<f64>().prop_map(any_value::Value::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..9).prop_map(any_value::Value::BytesValue),
        any::<i32>().prop_map(any_value::Value::StringValueStrindex),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    let leaf = prop_oneof![1 => Just(AnyValue { value: None }), 8 => leaf];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|values| AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values })) }),
            proptest::collection::vec((text(), proptest::option::of(inner)), 0..4).prop_map(|kvs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kvs.into_iter().map(|(key, value)| KeyValue { key, value, key_strindex: 0 }).collect(),
                })),
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(
        (text(), proptest::option::of(any_value()), any::<i32>()).prop_map(|(key, value, key_strindex)| KeyValue {
            key,
            value,
            key_strindex,
        }),
        0..4,
    )
}

fn id(n: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), proptest::collection::vec(any::<u8>(), n..=n)]
}

fn a_span() -> impl Strategy<Value = Span> {
    (
        (id(16), id(8), id(8), text(), text(), any::<i32>(), any::<u64>(), any::<u64>()),
        (attributes(), any::<u32>(), any::<u32>(), any::<u32>()),
        proptest::collection::vec((any::<u64>(), text(), attributes(), any::<u32>()), 0..2),
        proptest::collection::vec((id(16), id(8), text(), attributes(), any::<u32>(), any::<u32>()), 0..2),
        proptest::option::of((text(), any::<i32>())),
    )
        .prop_map(
            |((trace_id, span_id, parent, trace_state, name, kind, start, end), more, events, links, status)| {
                let (attributes, dropped, flags, dropped_events) = more;
                Span {
                    trace_id,
                    span_id,
                    trace_state,
                    parent_span_id: parent,
                    flags,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    dropped_attributes_count: dropped,
                    events: events
                        .into_iter()
                        .map(|(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
                            time_unix_nano,
                            name,
                            attributes,
                            dropped_attributes_count,
                        })
                        .collect(),
                    dropped_events_count: dropped_events,
                    links: links
                        .into_iter()
                        .map(|(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
                            span::Link { trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags }
                        })
                        .collect(),
                    dropped_links_count: 0,
                    status: status.map(|(message, code)| Status { message, code }),
                }
            },
        )
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let entity = (text(), text(), proptest::collection::vec(text(), 0..2), proptest::collection::vec(text(), 0..2))
        .prop_map(|(schema_url, r#type, id_keys, description_keys)| EntityRef {
            schema_url,
            r#type,
            id_keys,
            description_keys,
        });
    let resource = (attributes(), any::<u32>(), proptest::collection::vec(entity, 0..2)).prop_map(
        |(attributes, dropped_attributes_count, entity_refs)| Resource {
            attributes,
            dropped_attributes_count,
            entity_refs,
        },
    );
    let scope = (text(), text(), attributes(), any::<u32>()).prop_map(
        |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count,
        },
    );
    let scope_spans = (proptest::option::of(scope), proptest::collection::vec(a_span(), 0..4), text())
        .prop_map(|(scope, spans, schema_url)| ScopeSpans { scope, spans, schema_url });
    let resource_spans = (proptest::option::of(resource), proptest::collection::vec(scope_spans, 0..3), text())
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans { resource, scope_spans, schema_url });
    proptest::collection::vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

#[allow(clippy::cast_possible_truncation)] // 7 bits at a time
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Protobuf-shaped bytes, not necessarily of the schema: fields numbered 1 to 17 (so known
/// fields come with every wire type), nested messages, groups (matched or not), invalid
/// UTF-8, overlong varints, junk.
fn fields(depth: u32) -> BoxedStrategy<Vec<u8>> {
    let key = |tag: u32, wire: u32, out: &mut Vec<u8>| varint(u64::from(tag << 3 | wire), out);
    let scalar = prop_oneof![
        (1..18u32, any::<u64>()).prop_map(move |(t, v)| {
            let mut o = Vec::new();
            key(t, 0, &mut o);
            varint(v, &mut o);
            o
        }),
        (1..18u32, any::<[u8; 4]>()).prop_map(move |(t, v)| {
            let mut o = Vec::new();
            key(t, 5, &mut o);
            o.extend(v);
            o
        }),
        (1..18u32, any::<[u8; 8]>()).prop_map(move |(t, v)| {
            let mut o = Vec::new();
            key(t, 1, &mut o);
            o.extend(v);
            o
        }),
        (1..18u32, prop_oneof![Just(b"ok".to_vec()), Just(vec![0xff, 0xfe]), Just(b"\xc3\xa9".to_vec())]).prop_map(
            move |(t, v)| {
                let mut o = Vec::new();
                key(t, 2, &mut o);
                varint(v.len() as u64, &mut o);
                o.extend(v);
                o
            }
        ),
        // An overlong (10- or 11-byte) varint.
        (1..18u32, 9..11usize, 0..4u8).prop_map(move |(t, n, last)| {
            let mut o = Vec::new();
            key(t, 0, &mut o);
            o.extend(std::iter::repeat_n(0x80, n));
            o.push(last);
            o
        }),
        proptest::collection::vec(any::<u8>(), 1..3),
    ];
    if depth == 0 {
        return proptest::collection::vec(scalar, 0..4).prop_map(|v| v.concat()).boxed();
    }
    let nested = (1..18u32, fields(depth - 1)).prop_map(move |(t, inner)| {
        let mut o = Vec::new();
        key(t, 2, &mut o);
        varint(inner.len() as u64, &mut o);
        o.extend(inner);
        o
    });
    let group =
        (1..18u32, fields(depth - 1), prop_oneof![4 => Just(0u32), 1 => 1..3u32]).prop_map(move |(t, inner, off)| {
            let mut o = Vec::new();
            key(t, 3, &mut o);
            o.extend(inner);
            key(t + off, 4, &mut o);
            o
        });
    proptest::collection::vec(prop_oneof![3 => scalar, 3 => nested, 1 => group], 0..5).prop_map(|v| v.concat()).boxed()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn everything_prost_encodes_is_accepted_with_its_span_count(request in request()) {
        let bytes = request.encode_to_vec();
        prop_assert_eq!(validate(&bytes), Ok(checks::span_count(&request)));
        let encoded = EncodedRequest::new(bytes.clone().into()).unwrap();
        // Compared encoded: a double attribute may be NaN, which is not equal to itself.
        prop_assert_eq!(encoded.decode().encode_to_vec(), bytes.clone());
        prop_assert_eq!(EncodedRequest::from_request(&request), encoded);
        agree(&bytes);
    }

    #[test]
    fn truncated_and_mutated_requests_are_judged_as_prost_judges_them(
        request in request(),
        cut in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
    ) {
        let bytes = request.encode_to_vec();
        for end in [cut.index(bytes.len() + 1), bytes.len().saturating_sub(1)] {
            agree(&bytes[..end]);
        }
        let mut mutated = bytes.clone();
        for (at, byte, op) in edits {
            let i = at.index(mutated.len() + 1);
            match op {
                0 if i < mutated.len() => mutated[i] = byte,
                1 if i < mutated.len() => { mutated.remove(i); }
                _ => mutated.insert(i, byte),
            }
            agree(&mutated);
        }
    }

    #[test]
    fn arbitrary_fields_are_judged_as_prost_judges_them(top in fields(4), inner in fields(3)) {
        agree(&top);
        // Inside a request's resource spans, scope spans and spans, where most of the
        // schema is.
        let wrap = |tag: u8, body: &[u8]| {
            let mut o = vec![tag << 3 | 2];
            varint(body.len() as u64, &mut o);
            o.extend_from_slice(body);
            o
        };
        agree(&wrap(1, &wrap(2, &wrap(2, &inner))));
        agree(&wrap(1, &wrap(2, &inner)));
        agree(&wrap(1, &inner));
    }

    #[test]
    fn random_bytes_are_judged_as_prost_judges_them(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        agree(&bytes);
    }
}

/// A request with one span whose one attribute is `depth` arrays deep.
fn nested(depth: usize) -> Vec<u8> {
    let mut v = AnyValue { value: Some(any_value::Value::StringValue("leaf".into())) };
    for _ in 0..depth {
        v = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })) };
    }
    let span =
        Span { attributes: vec![KeyValue { key: "k".into(), value: Some(v), key_strindex: 0 }], ..Span::default() };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

#[test]
fn the_recursion_limit_is_prosts() {
    let mut accepted = Vec::new();
    for depth in 40..55 {
        let bytes = nested(depth);
        agree(&bytes);
        accepted.push(validate(&bytes).is_ok());
    }
    // Both sides of the limit were reached.
    assert!(accepted.first() == Some(&true) && accepted.last() == Some(&false), "{accepted:?}");
    assert!(matches!(validate(&nested(60)), Err(WireError::TooDeep { .. })));
}

#[test]
fn unknown_groups_nest_against_the_same_limit() {
    // An unknown field (ScopeSpans field 9) holding `n` nested groups.
    for n in 90..102 {
        let mut inner = Vec::new();
        for _ in 0..n {
            inner.push(9 << 3 | 3);
        }
        for _ in 0..n {
            inner.push(9 << 3 | 4);
        }
        let mut scope_spans = vec![2 << 3 | 2];
        varint(inner.len() as u64, &mut scope_spans);
        scope_spans.extend(&inner);
        let mut bytes = vec![1 << 3 | 2];
        varint(scope_spans.len() as u64, &mut bytes);
        bytes.extend(scope_spans);
        agree(&bytes);
    }
}

#[test]
fn defects_prost_rejects_are_rejected() {
    let cases: &[(&[u8], &str)] = &[
        (&[0x0a], "length missing"),
        (&[0x0a, 0x01], "length past the end"),
        (&[0x00], "field number 0"),
        (&[0x0e, 0x00], "wire type 6"),
        (&[0x0f, 0x00], "wire type 7"),
        (&[0x08, 0x01], "resource_spans as a varint"),
        (&[0x0c], "an end group with no start"),
        (&[0x13, 0x1c], "a group closed by another field number"),
        (&[0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02], "a varint past 64 bits"),
        (&[0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], "an 11-byte varint"),
        (&[0x80, 0x80, 0x80, 0x80, 0x10], "a key past 32 bits"),
        // resource_spans { schema_url: "\xff" }
        (&[0x0a, 0x03, 0x1a, 0x01, 0xff], "a string that is not UTF-8"),
        // resource_spans { scope_spans { spans { start_time_unix_nano: 4 bytes } } }
        (&[0x0a, 0x09, 0x12, 0x07, 0x12, 0x05, 0x39, 0, 0, 0, 0], "a fixed64 cut short"),
    ];
    for (bytes, what) in cases {
        assert!(validate(bytes).is_err(), "{what}");
        assert!(ExportTraceServiceRequest::decode(*bytes).is_err(), "prost: {what}");
        agree(bytes);
    }
    // And what prost accepts though it looks odd: a 10-byte varint ending in 1, a
    // zero-padded key, unknown fields and groups, an empty request.
    let odd: &[&[u8]] = &[
        &[0x10, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        &[0x8a, 0x80, 0x00, 0x00],
        &[0x13, 0x08, 0x01, 0x14, 0x7d, 0, 0, 0, 0],
        &[],
    ];
    for bytes in odd {
        assert!(validate(bytes).is_ok(), "{bytes:02x?}");
        agree(bytes);
    }
}
