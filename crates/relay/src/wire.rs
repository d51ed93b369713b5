//! The relay's gRPC stream (`tracewire.v1.Relay/Attach`, a bidirectional stream of
//! `RelayFrame`s), spoken directly over hyper's HTTP/2 by the relay and both ends.
//!
//! The bytes are gRPC's: each message is a 5-byte prefix (no compression, big-endian
//! length) and a protobuf `RelayFrame`; a response ends with `grpc-status` trailers. Any
//! gRPC peer (the tonic client generated in `tracewire_proto::relay_service`, say) can
//! attach. What differs from a generic gRPC library is where the bytes of a record live:
//!
//! - **Sending**, a `Data` frame is written with its record as the last field (protobuf
//!   fields may come in any order), as two body chunks: the prefix and the other fields,
//!   then the record itself. The record is never copied in user space: HTTP/2 writes it
//!   from the buffer it was sealed into.
//! - **Receiving**, HTTP/2 DATA payloads are kept as a list of buffers and a frame is
//!   decoded from them in place: a record that arrives in one payload (the normal case;
//!   relay connections use 256 KiB HTTP/2 frames) becomes a slice of that payload, not a
//!   copy.
//!
//! A generic gRPC stack copies every record into an encode buffer and again into a decode
//! buffer, at each end and at the relay: four copies of every byte on the way from one
//! end to the other, which this module avoids.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tokio::sync::mpsc;
use tracewire_proto::v1::{Data, RelayFrame, relay_frame::Kind};

use crate::RelayError;
use crate::outbound::Outbound;

/// The method's HTTP/2 path.
pub(crate) const PATH: &str = "/tracewire.v1.Relay/Attach";
/// gRPC's content type.
pub(crate) const CONTENT_TYPE: &str = "application/grpc";
/// The largest frame either side accepts (a sealed record with its framing is ~60 KiB).
pub(crate) const MAX_MESSAGE: usize = 1 << 20;
/// gRPC's length prefix: a compression flag and a big-endian `u32` length.
const PREFIX: usize = 5;
/// `RelayFrame.data`, `RelayFrame.stream` and `Data.record` (see
/// `proto/tracewire/v1/relay.proto`).
const FRAME_DATA_TAG: u32 = 3;
const FRAME_STREAM_TAG: u32 = 7;
const DATA_RECORD_TAG: u32 = 2;

/// Encodes `frame` as one gRPC message: the bytes to send first and, for a `Data` frame
/// with a record, the record itself (the same buffer, not a copy) to send right after.
pub(crate) fn encode(frame: RelayFrame) -> (Bytes, Option<Bytes>) {
    let stream = frame.stream;
    match frame.kind {
        Some(Kind::Data(Data { seq, record, last_fragment, traceparent })) if !record.is_empty() => {
            let others = Data { seq, record: Bytes::new(), last_fragment, traceparent };
            let record_field = key_len(DATA_RECORD_TAG) + encoded_len_varint(record.len() as u64);
            let data_len = others.encoded_len() + record_field + record.len();
            let stream_len = if stream == 0 { 0 } else { key_len(FRAME_STREAM_TAG) + encoded_len_varint(stream) };
            let frame_len = stream_len + key_len(FRAME_DATA_TAG) + encoded_len_varint(data_len as u64) + data_len;
            let mut head = BytesMut::with_capacity(PREFIX + frame_len - record.len());
            put_prefix(&mut head, frame_len);
            if stream != 0 {
                encode_key(FRAME_STREAM_TAG, WireType::Varint, &mut head);
                encode_varint(stream, &mut head);
            }
            encode_key(FRAME_DATA_TAG, WireType::LengthDelimited, &mut head);
            encode_varint(data_len as u64, &mut head);
            // A `BytesMut` grows as needed: encoding into it cannot fail.
            let _ = others.encode(&mut head);
            encode_key(DATA_RECORD_TAG, WireType::LengthDelimited, &mut head);
            encode_varint(record.len() as u64, &mut head);
            (head.freeze(), Some(record))
        }
        kind => {
            let frame = RelayFrame { kind, stream };
            let mut buf = BytesMut::with_capacity(PREFIX + frame.encoded_len());
            put_prefix(&mut buf, frame.encoded_len());
            let _ = frame.encode(&mut buf);
            (buf.freeze(), None)
        }
    }
}

fn put_prefix(buf: &mut BytesMut, len: usize) {
    buf.put_u8(0);
    // Frames are bounded far below 4 GiB (a record is at most 64 KiB).
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// An outgoing stream of frames: the request body of an end, or the response body of the
/// relay (which ends with `grpc-status: 0` trailers when its queue closes).
pub(crate) struct FrameBody {
    rx: mpsc::Receiver<Outbound>,
    record: Option<Bytes>,
    trailers: bool,
}

impl FrameBody {
    /// The request body of an end.
    pub(crate) fn request(rx: mpsc::Receiver<Outbound>) -> Self {
        Self { rx, record: None, trailers: false }
    }

    /// The response body of the relay.
    pub(crate) fn response(rx: mpsc::Receiver<Outbound>) -> Self {
        Self { rx, record: None, trailers: true }
    }
}

impl Body for FrameBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(record) = self.record.take() {
            return Poll::Ready(Some(Ok(Frame::data(record))));
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(outbound) => {
                // Taken for the wire: this ends the stage span the frame carries.
                let (head, record) = encode(outbound.take());
                self.record = record;
                Poll::Ready(Some(Ok(Frame::data(head))))
            }
            None if self.trailers => {
                self.trailers = false;
                Poll::Ready(Some(Ok(Frame::trailers(status_trailers(0, "")))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        // Lets a status-only response end with its headers.
        self.record.is_none() && !self.trailers && self.rx.is_closed() && self.rx.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// `grpc-status` (and `grpc-message`, when there is one) as trailers or headers.
pub(crate) fn status_trailers(code: u8, message: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(m) = HeaderValue::from_str(message)
        && !message.is_empty()
    {
        h.insert("grpc-message", m);
    }
    h
}

/// The gRPC status a header map carries, if any, as an error (`None` for `0`, OK).
pub(crate) fn status_error(headers: &HeaderMap) -> Option<RelayError> {
    let code = headers.get("grpc-status")?;
    if code == "0" {
        return None;
    }
    let code = code.to_str().unwrap_or("?");
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("");
    Some(RelayError::Transport(format!("the relay stream ended with gRPC status {code}: {message}")))
}

/// An incoming stream of frames, decoded from an HTTP/2 body in place.
pub(crate) struct FrameReader<B> {
    body: B,
    chunks: Rope,
    ended: bool,
}

impl<B> FrameReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    pub(crate) fn new(body: B) -> Self {
        Self { body, chunks: Rope::default(), ended: false }
    }

    /// The next complete frame in the buffered payloads, if there is one.
    fn decode_buffered(&mut self) -> Option<Result<RelayFrame, RelayError>> {
        let mut prefix = [0u8; PREFIX];
        if !self.chunks.peek(&mut prefix) {
            return None;
        }
        let [compressed, len @ ..] = prefix;
        let len = u32::from_be_bytes(len) as usize;
        if compressed != 0 {
            return Some(Err(RelayError::Transport("a compressed relay frame (not supported)".into())));
        }
        if len > MAX_MESSAGE {
            return Some(Err(RelayError::Transport(format!("a relay frame of {len} bytes (limit {MAX_MESSAGE})"))));
        }
        if self.chunks.remaining() < PREFIX + len {
            return None;
        }
        self.chunks.advance(PREFIX);
        let before = self.chunks.remaining();
        let decoded = RelayFrame::decode((&mut self.chunks).take(len));
        // A frame that failed to decode may have left some of its bytes.
        let left = len - (before - self.chunks.remaining());
        self.chunks.advance(left);
        Some(decoded.map_err(|e| RelayError::Transport(format!("a malformed relay frame: {e}"))))
    }
}

impl<B> tokio_stream::Stream for FrameReader<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Item = Result<RelayFrame, RelayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            if let Some(frame) = this.decode_buffered() {
                if frame.is_err() {
                    this.ended = true;
                }
                return Poll::Ready(Some(frame));
            }
            let error = match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.chunks.push(data);
                        continue;
                    }
                    Err(frame) => frame.trailers_ref().and_then(status_error),
                },
                Some(Err(e)) => Some(RelayError::Transport(e.to_string())),
                None => None,
            };
            // The body ended (with trailers, an error, or nothing more).
            this.ended = true;
            let error = error.or_else(|| {
                (this.chunks.remaining() > 0)
                    .then(|| RelayError::Transport("the relay stream ended inside a frame".into()))
            });
            return Poll::Ready(error.map(Err));
        }
    }
}

/// Buffered HTTP/2 payloads, read as one buffer. Taking bytes that lie within one payload
/// (`copy_to_bytes`, which protobuf decoding uses for `bytes` fields) slices it instead of
/// copying.
#[derive(Default)]
struct Rope {
    chunks: VecDeque<Bytes>,
    remaining: usize,
}

impl Rope {
    fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.remaining += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Copies the first `out.len()` bytes into `out` without consuming them; `false` when
    /// fewer are buffered.
    fn peek(&self, out: &mut [u8]) -> bool {
        if self.remaining < out.len() {
            return false;
        }
        let mut filled = 0;
        for chunk in &self.chunks {
            let k = chunk.len().min(out.len() - filled);
            out[filled..filled + k].copy_from_slice(&chunk[..k]);
            filled += k;
            if filled == out.len() {
                break;
            }
        }
        true
    }
}

impl Buf for Rope {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |c| c.as_ref())
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.chunks.front_mut() else { return };
            let k = cnt.min(front.len());
            front.advance(k);
            self.remaining -= k;
            cnt -= k;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }

    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        if let Some(front) = self.chunks.front_mut()
            && front.len() >= len
        {
            let taken = front.split_to(len);
            self.remaining -= len;
            if front.is_empty() {
                self.chunks.pop_front();
            }
            return taken;
        }
        // Spread over several payloads: gather (rare; and never more than is buffered).
        let len = len.min(self.remaining);
        let mut out = BytesMut::with_capacity(len);
        out.put(self.take(len));
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracewire_proto::v1::{Close, Handshake, Heartbeat, Reset};

    fn frames() -> Vec<RelayFrame> {
        let data = |seq, record: &[u8], last_fragment, traceparent: &str| RelayFrame {
            kind: Some(Kind::Data(Data {
                seq,
                record: Bytes::copy_from_slice(record),
                last_fragment,
                traceparent: traceparent.into(),
            })),
            stream: 0,
        };
        let on_stream = |stream, frame: RelayFrame| RelayFrame { stream, ..frame };
        vec![
            data(0, &[1, 2, 3], false, ""),
            data(7, &[9; 70_000], true, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            data(3, &[], true, ""),
            data(u64::MAX, &[0], false, "x"),
            on_stream(1, data(4, &[8; 300], true, "")),
            on_stream(u64::MAX, data(5, &[8; 70_000], false, "")),
            RelayFrame { kind: Some(Kind::Handshake(Handshake { message: Bytes::from_static(b"hs") })), stream: 0 },
            RelayFrame { kind: Some(Kind::Handshake(Handshake { message: Bytes::from_static(b"hs") })), stream: 9 },
            RelayFrame { kind: Some(Kind::Heartbeat(Heartbeat {})), stream: 0 },
            RelayFrame { kind: Some(Kind::Reset(Reset { reason: 3, detail: "why".into() })), stream: 0 },
            RelayFrame { kind: Some(Kind::Reset(Reset { reason: 2, detail: String::new() })), stream: 300 },
            RelayFrame { kind: Some(Kind::Close(Close {})), stream: 0 },
            RelayFrame { kind: Some(Kind::Close(Close {})), stream: 12 },
            RelayFrame { kind: None, stream: 0 },
        ]
    }

    fn wire(frame: &RelayFrame) -> Vec<u8> {
        let (head, record) = encode(frame.clone());
        let mut v = head.to_vec();
        v.extend_from_slice(record.as_deref().unwrap_or_default());
        v
    }

    #[test]
    fn every_frame_is_one_grpc_message_that_prost_decodes_back() {
        for frame in frames() {
            let bytes = wire(&frame);
            let [0, a, b, c, d, message @ ..] = bytes.as_slice() else { panic!("no prefix") };
            assert_eq!(u32::from_be_bytes([*a, *b, *c, *d]) as usize, message.len());
            assert_eq!(RelayFrame::decode(message).unwrap(), frame);
            // The same length as prost's own encoding (only the field order differs).
            assert_eq!(message.len(), frame.encoded_len());
        }
    }

    #[test]
    fn a_record_is_sent_from_its_own_buffer() {
        let record = Bytes::from(vec![5u8; 1000]);
        let frame = RelayFrame {
            kind: Some(Kind::Data(Data {
                seq: 1,
                record: record.clone(),
                last_fragment: true,
                traceparent: String::new(),
            })),
            stream: 3,
        };
        let (_, sent) = encode(frame);
        assert_eq!(sent.unwrap().as_ptr(), record.as_ptr());
    }

    struct Chunks(VecDeque<Result<Frame<Bytes>, String>>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = String;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, String>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn read_all(chunks: Vec<Result<Frame<Bytes>, String>>) -> Vec<Result<RelayFrame, RelayError>> {
        let mut reader = FrameReader::new(Chunks(chunks.into()));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(item)) = tokio_stream::Stream::poll_next(Pin::new(&mut reader), &mut cx) {
            out.push(item);
        }
        out
    }

    #[test]
    fn frames_decode_across_any_split_of_the_payloads() {
        let all: Vec<u8> = frames().iter().flat_map(wire).collect();
        for step in [1, 2, 5, 7, 1000, 61_440, all.len()] {
            let chunks = all.chunks(step).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
            let got: Vec<RelayFrame> = read_all(chunks).into_iter().map(Result::unwrap).collect();
            assert_eq!(got, frames(), "payloads of {step} bytes");
        }
    }

    #[test]
    fn a_record_within_one_payload_is_a_slice_of_it() {
        let frame = RelayFrame {
            kind: Some(Kind::Data(Data {
                seq: 2,
                record: Bytes::from(vec![1u8; 61_456]),
                last_fragment: true,
                traceparent: String::new(),
            })),
            stream: 0,
        };
        let (head, record) = encode(frame);
        let payload = record.unwrap().to_vec();
        let payload = Bytes::from(payload);
        let start = payload.as_ptr();
        let got = read_all(vec![Ok(Frame::data(head)), Ok(Frame::data(payload))]);
        let Ok(RelayFrame { kind: Some(Kind::Data(d)), .. }) = &got[0] else { panic!("{got:?}") };
        assert_eq!(d.record.as_ptr(), start, "the record was copied");
    }

    #[test]
    fn bad_streams_end_in_typed_errors() {
        let bytes = wire(&frames()[1]);
        let cut = Bytes::copy_from_slice(&bytes[..bytes.len() - 1]);
        let errors = [
            // Ends inside a frame.
            vec![Ok(Frame::data(cut))],
            // Compressed.
            vec![Ok(Frame::data(Bytes::from_static(&[1, 0, 0, 0, 0])))],
            // Too large.
            vec![Ok(Frame::data(Bytes::from_static(&[0, 0xff, 0xff, 0xff, 0xff])))],
            // Not protobuf.
            vec![Ok(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff])))],
            // A failed status.
            vec![Ok(Frame::trailers(status_trailers(14, "unavailable")))],
            // A broken connection.
            vec![Err("reset".to_string())],
        ];
        for chunks in errors {
            let got = read_all(chunks);
            assert!(matches!(got.as_slice(), [Err(RelayError::Transport(_))]), "{got:?}");
        }
        // A clean end: OK trailers, or nothing more.
        assert!(read_all(vec![Ok(Frame::trailers(status_trailers(0, "")))]).is_empty());
        assert!(read_all(vec![]).is_empty());
    }
}
