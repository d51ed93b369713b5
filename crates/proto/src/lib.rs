//! # tracewire-proto
//!
//! The protobuf messages of tracewire (`proto/tracewire/v1/*.proto`), generated at build
//! time with prost and protox (a pure-Rust protobuf compiler: no system `protoc`), and the
//! `Exec` gRPC service, whose frames stay raw bytes so that the RPC layer decodes each
//! envelope itself (a malformed one is answered with an error, the stream survives).
//!
//! ```
//! use prost::Message;
//! use tracewire_proto::v1::{envelope::Body, request::Method, Envelope, Request, Start};
//!
//! let env = Envelope {
//!     id: 7,
//!     body: Some(Body::Request(Request {
//!         method: Some(Method::Start(Start { argv: vec!["true".into()], ..Default::default() })),
//!     })),
//!     ..Default::default()
//! };
//! let bytes = env.encode_to_vec();
//! assert_eq!(Envelope::decode(bytes.as_slice()).unwrap(), env);
//! ```
#![deny(missing_docs)]

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Generated messages of package `tracewire.v1`.
#[allow(missing_docs, clippy::pedantic, clippy::all, unreachable_pub)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tracewire.v1.rs"));
}

/// The generated gRPC client and server of the `Exec` service (raw frames).
#[allow(missing_docs, clippy::pedantic, clippy::all, unreachable_pub, rust_2018_idioms, missing_debug_implementations)]
pub mod exec_service {
    include!(concat!(env!("OUT_DIR"), "/tracewire.v1.Exec.rs"));
}

/// The generated gRPC client and server of the `Relay` service.
#[allow(missing_docs, clippy::pedantic, clippy::all, unreachable_pub, rust_2018_idioms, missing_debug_implementations)]
pub mod relay_service {
    include!(concat!(env!("OUT_DIR"), "/tracewire.v1.Relay.rs"));
}

/// One gRPC message of the `Exec` stream: an encoded [`v1::Envelope`], not yet decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame(pub Bytes);

/// The tonic codec of [`Frame`]s: bytes in, bytes out.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

/// Encoder half of [`FrameCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameEncoder;

/// Decoder half of [`FrameCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameDecoder;

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;
    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.0);
        Ok(())
    }
}

impl Decoder for FrameDecoder {
    type Item = Frame;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Frame>, Status> {
        Ok(Some(Frame(src.copy_to_bytes(src.remaining()))))
    }
}

impl Codec for FrameCodec {
    type Encode = Frame;
    type Decode = Frame;
    type Encoder = FrameEncoder;
    type Decoder = FrameDecoder;
    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder
    }
    fn decoder(&mut self) -> FrameDecoder {
        FrameDecoder
    }
}

/// The tonic codec of the `Relay` stream: protobuf [`v1::RelayFrame`]s (the same bytes on
/// the wire as `tonic_prost::ProstCodec`), with buffers sized for 60 KiB records.
///
/// The encoder reserves a frame's whole encoded length before writing it, so a record is
/// copied into the outgoing buffer once: growing the buffer field by field made it
/// reallocate, and copy the record again, for the small fields after the record. Frames
/// are handed to HTTP/2 one by one (tonic's 32 KiB yield threshold): gathering several
/// into one buffer would grow, and copy, that buffer again.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayCodec;

/// Initial encode and decode buffers: one sealed record and its framing fit.
fn relay_buffer_settings() -> BufferSettings {
    BufferSettings::new(64 * 1024, 32 * 1024)
}

/// Encoder half of [`RelayCodec`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayEncoder;

impl Encoder for RelayEncoder {
    type Item = v1::RelayFrame;
    type Error = Status;
    fn encode(&mut self, item: v1::RelayFrame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        use prost::Message;
        dst.reserve(item.encoded_len());
        item.encode(dst).map_err(|e| Status::internal(format!("encoding a relay frame: {e}")))
    }
    fn buffer_settings(&self) -> BufferSettings {
        relay_buffer_settings()
    }
}

impl Codec for RelayCodec {
    type Encode = v1::RelayFrame;
    type Decode = v1::RelayFrame;
    type Encoder = RelayEncoder;
    type Decoder = tonic_prost::ProstDecoder<v1::RelayFrame>;
    fn encoder(&mut self) -> RelayEncoder {
        RelayEncoder
    }
    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::new(relay_buffer_settings())
    }
}

impl From<v1::TraceCarrier> for tracewire_context::TraceCarrier {
    fn from(c: v1::TraceCarrier) -> Self {
        Self { traceparent: c.traceparent, tracestate: c.tracestate, baggage: c.baggage }
    }
}

impl From<tracewire_context::TraceCarrier> for v1::TraceCarrier {
    fn from(c: tracewire_context::TraceCarrier) -> Self {
        Self { traceparent: c.traceparent, tracestate: c.tracestate, baggage: c.baggage }
    }
}
