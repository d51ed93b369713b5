//! Fuzz check of envelope decoding (`tracewire_rpc::decode_incoming`, what the server does
//! with every frame). Shared with `crates/rpc/tests/fuzz_corpus.rs`, which includes this file
//! by path.

use prost::Message;
use tracewire_context::{TraceParent, extract};
use tracewire_proto::v1::{Envelope, envelope::Body, response};
use tracewire_rpc::{Incoming, decode_incoming};

/// Any bytes: a request comes out with its method set and a carrier the propagation policy
/// turns into a valid context; anything else becomes an error response that encodes and
/// decodes back. The size limit is taken from the first byte, so that path is fuzzed too.
pub fn envelope(data: &[u8]) {
    let Some((limit, frame)) = data.split_first() else { return };
    let max = if *limit == 0 { 16 } else { 4 << 20 };
    match decode_incoming(bytes::Bytes::copy_from_slice(frame), max) {
        Incoming::Request { id, carrier, request } => {
            assert!(request.method.is_some());
            assert!(frame.len() <= max);
            let ex = extract(&carrier);
            assert!(TraceParent::parse(&ex.context.traceparent().encode()).is_ok());
            let again = Envelope::decode(frame).unwrap_or_else(|e| panic!("decoded once, not twice: {e}"));
            assert_eq!(again.id, id);
        }
        Incoming::Reject(env) => {
            let bytes = env.encode_to_vec();
            let back = Envelope::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("error envelope: {e}"));
            let Some(Body::Response(r)) = back.body else { panic!("not a response: {back:?}") };
            assert!(matches!(r.result, Some(response::Result::Error(_))), "{r:?}");
        }
        _ => {}
    }
}
