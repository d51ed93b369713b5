//! Fuzz check of the receiver's OTLP request validation (`tracewire_collector::otlp`, what
//! the collector runs on every protobuf export request instead of decoding it). Shared with
//! `crates/collector/tests/fuzz_corpus.rs` and the property tests of
//! `crates/collector/tests/otlp_wire.rs`, which include this file by path.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracewire_collector::otlp::{EncodedRequest, validate};
use tracewire_collector::receiver::SpanStore;

/// Spans in a decoded request.
pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

/// Any bytes: `validate` accepts them exactly when `prost` decodes them, with the span
/// count of the decoded request; an accepted request decodes to what prost decodes, and a
/// store keeping it encoded yields the same spans as one keeping it decoded (also when the
/// store's capacity, taken from the first byte, drops the oldest).
pub fn otlp_export(data: &[u8]) {
    let (capacity, data) = match data.split_first() {
        Some((c, rest)) if *c >= 0xf0 => (usize::from(*c & 0x0f) + 1, rest),
        _ => (1 << 20, data),
    };
    let ours = validate(data);
    let theirs = ExportTraceServiceRequest::decode(data);
    match (&ours, theirs) {
        (Ok(n), Ok(request)) => {
            assert_eq!(*n, span_count(&request), "span count");
            let encoded = EncodedRequest::new(bytes::Bytes::copy_from_slice(data))
                .unwrap_or_else(|e| panic!("validated once, not twice: {e}"));
            assert_eq!(encoded.spans(), *n);
            // Compared encoded: a double attribute may be NaN, which is not equal to itself.
            assert_eq!(encoded.decode().encode_to_vec(), request.encode_to_vec());
            let (a, b) = (SpanStore::new(capacity), SpanStore::new(capacity));
            a.add(request);
            b.add_encoded(encoded);
            assert_eq!(a.snapshot(), b.snapshot(), "kept decoded vs kept encoded");
            assert_eq!((a.received(), a.dropped()), (b.received(), b.dropped()));
            assert_eq!(b.snapshot().len(), (*n).min(capacity));
        }
        (Err(_), Err(_)) => {}
        (_, theirs) => {
            panic!("validate says {ours:?}, prost says {:?}, on {data:02x?}", theirs.map(|r| span_count(&r)))
        }
    }
}
