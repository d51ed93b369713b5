//! Spans stored from a request's protobuf bytes (`Store::append_encoded`, what
//! `tracewire collect --db` does): the same rows as the decoded request's
//! (`Store::append_request`), byte for byte; any encoding prost decodes (fields repeated,
//! out of order, unknown) loads as prost decodes it; malformed bytes are refused before
//! anything is queued.

mod common;

use std::path::Path;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message as _;
use tracewire_store::wire::{WireError, WireProblem};
use tracewire_store::{SpanRecord, Store, StoreError};
use tracewire_testkit::TempDir;

use crate::common::{kv, runtime, span_table_rows, span_with};

/// Stores `requests` at `path`, each by its bytes (`encoded`) or decoded.
fn store(path: &Path, requests: &[Vec<u8>], encoded: bool) -> Vec<SpanRecord> {
    runtime().block_on(async {
        let store = Store::open(path).unwrap();
        for bytes in requests {
            if encoded {
                store.append_encoded(bytes.clone().into()).await.unwrap();
            } else {
                let request = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
                store.append_request(Arc::new(request)).await.unwrap();
            }
        }
        store.spans().await.unwrap()
    })
}

/// By (trace, span) id, the first of each kept (as the store keeps a retry's first copy).
fn by_id(mut spans: Vec<SpanRecord>) -> Vec<SpanRecord> {
    spans.sort_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
    spans.dedup_by(|a, b| (&a.trace_id, &a.span_id) == (&b.trace_id, &b.span_id));
    spans
}

// ---------------------------------------------------------------------------------------
// Generated requests: what the store treats apart (ids of any length, times past
// `i64::MAX`, negative kinds and codes, statuses with and without a message, flags, trace
// state, events, absent resources and scopes, schema URLs, retried spans).

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![4 => prop::collection::vec(0..4u8, len..=len), 1 => prop::collection::vec(any::<u8>(), 0..=len + 2)]
}

fn span() -> impl Strategy<Value = Span> {
    let ids =
        (id(16), id(8), prop_oneof![Just(Vec::new()), id(8)], "[a-z=,]{0,6}", prop_oneof![Just(0u32), any::<u32>()]);
    let time = || prop_oneof![3 => 1_700_000_000_000_000_000..1_700_000_000_100_000_000u64, 1 => any::<u64>(), 1 => Just(0u64)];
    let view = ("\\PC{0,8}", -2..7i32, time(), time());
    let status = prop::option::of((-2..4i32, "\\PC{0,6}").prop_map(|(code, message)| Status { code, message }));
    let rest = (
        prop::collection::vec(("[a-z.]{1,8}", "\\PC{0,8}", any::<i64>()), 0..4),
        prop::collection::vec((any::<u64>(), "[a-z]{0,4}"), 0..2),
        prop_oneof![Just(0u32), any::<u32>()],
        status,
    );
    (ids, view, rest).prop_map(|(ids, (name, kind, start, end), (attributes, events, dropped, status))| Span {
        attributes: attributes
            .into_iter()
            .flat_map(|(k, s, i)| [kv(&k, Value::StringValue(s)), kv(&k, Value::IntValue(i))])
            .collect(),
        dropped_attributes_count: dropped,
        events: events
            .into_iter()
            .map(|(time_unix_nano, name)| Event { time_unix_nano, name, ..Event::default() })
            .collect(),
        dropped_events_count: dropped / 2,
        status,
        ..span_with(ids, name, kind, start, end)
    })
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = prop::option::of("[a-z]{0,6}".prop_map(|name| InstrumentationScope { name, ..Default::default() }));
    let scope_spans = (scope, "[a-z:/]{0,8}", prop::collection::vec(span(), 0..5))
        .prop_map(|(scope, schema_url, spans)| ScopeSpans { scope, schema_url, spans });
    let resource = prop::option::of("[a-z]{0,6}".prop_map(|service| Resource {
        attributes: vec![kv("service.name", Value::StringValue(service))],
        ..Resource::default()
    }));
    let resource_spans = (resource, "[a-z:/]{0,8}", prop::collection::vec(scope_spans, 0..3))
        .prop_map(|(resource, schema_url, scope_spans)| ResourceSpans { resource, scope_spans, schema_url });
    prop::collection::vec(resource_spans, 0..3).prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Stored from its bytes, a request (and a retry of part of it) gives the same rows as
    /// decoded, byte for byte, and loads back as its decoding.
    #[test]
    fn the_bytes_give_the_rows_of_the_decoded_request(request in request(), again in request()) {
        let retried = ExportTraceServiceRequest { resource_spans: request.resource_spans.iter().take(1).cloned().collect() };
        let requests = [request.encode_to_vec(), again.encode_to_vec(), retried.encode_to_vec()];
        let dir = TempDir::new("tw-wire-prop").unwrap();
        let (bytes, decoded) = (dir.path().join("bytes.db"), dir.path().join("decoded.db"));
        let from_bytes = store(&bytes, &requests, true);
        let from_decoded = store(&decoded, &requests, false);
        prop_assert_eq!(span_table_rows(&bytes), span_table_rows(&decoded));
        prop_assert_eq!(&from_bytes, &from_decoded);
        let mut all = SpanRecord::all_of(&request);
        all.extend(SpanRecord::all_of(&again));
        prop_assert_eq!(by_id(from_bytes), by_id(all));
    }
}

// ---------------------------------------------------------------------------------------
// Encodings prost decodes but does not write.

/// A protobuf length-delimited field.
fn len_field(tag: u32, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(content.len() as u64, &mut out);
    out.extend_from_slice(content);
    out
}

/// Unknown fields: a varint (tag 100), a group with a nested group inside (tags 101, 102).
fn unknown() -> Vec<u8> {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let mut out = Vec::new();
    encode_key(100, WireType::Varint, &mut out);
    encode_varint(7, &mut out);
    encode_key(101, WireType::StartGroup, &mut out);
    encode_key(102, WireType::StartGroup, &mut out);
    encode_key(1, WireType::ThirtyTwoBit, &mut out);
    out.extend_from_slice(&[1, 2, 3, 4]);
    encode_key(102, WireType::EndGroup, &mut out);
    encode_key(101, WireType::EndGroup, &mut out);
    out
}

/// A span sent as two messages back to back (which prost merges: each scalar and string
/// the last one sent, repeated fields appended, the status merged), with unknown fields
/// between and its fields in reverse order in the second part.
fn merged_span(n: u8) -> Vec<u8> {
    let first = Span {
        trace_id: vec![9; 16],
        span_id: vec![n; 8],
        parent_span_id: vec![3; 8],
        name: "first".into(),
        kind: 3,
        start_time_unix_nano: u64::MAX,
        end_time_unix_nano: 10,
        attributes: vec![kv("a", Value::IntValue(1))],
        status: Some(Status { code: 2, message: "kept".into() }),
        flags: 0x100,
        ..Span::default()
    };
    let mut bytes = first.encode_to_vec();
    bytes.extend(unknown());
    // The second part, fields in reverse order: a status with a code only (the message
    // stays "kept"), another attribute, a start in range, the name.
    bytes.extend(len_field(15, &Status { code: 1, message: String::new() }.encode_to_vec()));
    bytes.extend(len_field(9, &kv("b", Value::StringValue("two".into())).encode_to_vec()));
    bytes.push(0x39); // field 7, fixed64
    bytes.extend_from_slice(&1_700_000_000_000_000_000u64.to_le_bytes());
    bytes.extend(len_field(5, b"second"));
    bytes
}

#[test]
fn fields_repeated_reordered_or_unknown_load_as_prost_decodes_them() {
    let resource =
        Resource { attributes: vec![kv("service.name", Value::StringValue("api".into()))], ..Resource::default() };
    let more = Resource { attributes: vec![kv("host.name", Value::StringValue("h".into()))], ..Resource::default() };
    // A scope list: the scope twice (merged), two spans, unknown fields, two schema URLs.
    let mut scope_spans =
        len_field(1, &InstrumentationScope { name: "s".into(), ..Default::default() }.encode_to_vec());
    scope_spans.extend(len_field(3, b"first-url"));
    scope_spans.extend(len_field(2, &merged_span(1)));
    scope_spans.extend(unknown());
    scope_spans
        .extend(len_field(1, &InstrumentationScope { version: "2".into(), ..Default::default() }.encode_to_vec()));
    scope_spans.extend(len_field(2, &merged_span(2)));
    scope_spans.extend(len_field(3, b"last-url"));
    // A resource list: its spans before its resource, the resource in two parts.
    let mut resource_spans = len_field(2, &scope_spans);
    resource_spans.extend(len_field(1, &resource.encode_to_vec()));
    resource_spans.extend(unknown());
    resource_spans.extend(len_field(1, &more.encode_to_vec()));
    let mut request = len_field(1, &resource_spans);
    request.extend(unknown());

    let decoded = ExportTraceServiceRequest::decode(request.as_slice()).unwrap();
    let span = &decoded.resource_spans[0].scope_spans[0].spans[0];
    // (What prost makes of it, so that the comparison below means something.)
    assert_eq!(
        (span.name.as_str(), span.start_time_unix_nano, span.attributes.len()),
        ("second", 1_700_000_000_000_000_000, 2)
    );
    assert_eq!(span.status, Some(Status { code: 1, message: "kept".into() }));
    assert_eq!(decoded.resource_spans[0].resource.as_ref().unwrap().attributes.len(), 2);
    assert_eq!(decoded.resource_spans[0].scope_spans[0].schema_url, "last-url");

    let dir = TempDir::new("tw-wire-merge").unwrap();
    let stored = store(&dir.path().join("t.db"), &[request], true);
    assert_eq!(by_id(stored), by_id(SpanRecord::all_of(&decoded)));
}

#[test]
fn malformed_bytes_are_refused_and_nothing_is_queued() {
    let good = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "n".into(), ..Span::default() }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    // A span name that is not UTF-8 (field 5 of the span, in place of "n").
    let mut not_utf8 = good.clone();
    let at = not_utf8.iter().rposition(|&b| b == b'n').unwrap();
    not_utf8[at] = 0xff;
    // The span's trace id (field 1, length-delimited) sent as a varint.
    let wrong_type = len_field(1, &len_field(2, &len_field(2, &[0x08, 0x01])));
    let cases: [(&[u8], WireProblem); 5] = [
        (&good[..good.len() - 1], WireProblem::Truncated),
        (&[0x0a, 0x01, 0x80], WireProblem::Varint),
        (&[0x0f], WireProblem::Key),
        (&not_utf8, WireProblem::Utf8(5)),
        (&wrong_type, WireProblem::WireType { field: 1, found: 0, expected: 2 }),
    ];
    let dir = TempDir::new("tw-wire-malformed").unwrap();
    runtime().block_on(async {
        let store = Store::open(dir.path().join("t.db")).unwrap();
        for (bytes, problem) in cases {
            match store.append_encoded(bytes.to_vec().into()).await {
                Err(StoreError::Malformed(WireError { problem: p, .. })) => assert_eq!(p, problem, "{bytes:02x?}"),
                other => panic!("{bytes:02x?}: {other:?}"),
            }
            assert!(ExportTraceServiceRequest::decode(bytes).is_err(), "prost refuses {bytes:02x?} too");
        }
        assert_eq!(store.backlog(), 0);
        assert_eq!(store.span_count().await.unwrap(), 0);
        assert_eq!(store.append_encoded(good.clone().into()).await.unwrap(), 1);
        assert_eq!(store.span_count().await.unwrap(), 1);
    });
}

// ---------------------------------------------------------------------------------------
// `Durability::Normal` (what `tracewire collect --db` uses): a commit survives the process.

/// A kill right after a barrier loses none of the spans it acknowledged, with
/// `Durability::Normal` too: a commit is in the operating system's hands when it returns.
#[test]
fn with_normal_durability_spans_committed_before_a_kill_survive_it() {
    let dir = TempDir::new("tw-wire-crash").unwrap();
    let path = dir.path().join("s.db");
    // The child stores 64 requests of 16 spans from their bytes, then a barrier.
    assert_eq!(common::kill_after_barrier("normal-spans", &path), 64 * 16, "the child reported its barrier");
    let stored = runtime().block_on(async { Store::open(&path).unwrap().span_count().await.unwrap() });
    assert_eq!(stored, 64 * 16);
}
