//! OTLP trace export requests kept as their protobuf bytes.
//!
//! The receiver does not decode a request into `opentelemetry_proto` structs when it
//! arrives (a `String` or `Vec` per attribute key, value, name and id: some twenty
//! allocations per span). It checks the bytes instead, in one pass that allocates nothing:
//! [`validate`] walks the protobuf wire format of an `ExportTraceServiceRequest` with its
//! schema, field by field and message by message, and accepts exactly the inputs
//! `prost::Message::decode` accepts (wire types, varints, lengths, nesting, UTF-8 of every
//! string field, prost's recursion limit, unknown fields and groups skipped as prost skips
//! them), counting the spans as it goes. An [`EncodedRequest`] is bytes that passed that
//! check; decoding it later ([`EncodedRequest::decode`]) cannot fail.
//!
//! The same pass counts the spans OTLP calls invalid ([`InvalidSpan`]: a trace id that is
//! not 16 bytes or is all zeros, a span id that is not 8 bytes or is all zeros, a parent
//! span id that is neither empty nor 8 bytes), which the receiver rejects and reports
//! (OTLP "Partial Success"); [`EncodedRequest::without_invalid`] drops them, re-encoding
//! the request only when there are any.
//!
//! ```
//! use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
//! use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
//! use prost::Message;
//! use tracewire_collector::otlp::{EncodedRequest, WireError, validate};
//!
//! let request = ExportTraceServiceRequest {
//!     resource_spans: vec![ResourceSpans {
//!         scope_spans: vec![ScopeSpans { spans: vec![Span::default(); 3], ..Default::default() }],
//!         ..Default::default()
//!     }],
//! };
//! let bytes = request.encode_to_vec();
//! assert_eq!(validate(&bytes), Ok(3));
//!
//! let encoded = EncodedRequest::new(bytes.clone().into()).unwrap();
//! assert_eq!(encoded.spans(), 3);
//! assert_eq!(encoded.decode(), request);
//!
//! // Truncated: rejected, as prost rejects it.
//! assert!(validate(&bytes[..bytes.len() - 1]).is_err());
//! assert!(ExportTraceServiceRequest::decode(&bytes[..bytes.len() - 1]).is_err());
//! // A resource_spans field whose length (at byte 1) runs past the end.
//! assert_eq!(validate(&[0x0a, 0x05]), Err(WireError::Truncated { at: 1 }));
//! ```

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracewire_store::wire::{END_GROUP, FIXED32, FIXED64, LEN, START_GROUP, VARINT};

/// prost's `RECURSION_LIMIT`: how many messages deep a request may nest.
const RECURSION_LIMIT: u32 = 100;

/// Why bytes are not a well-formed `ExportTraceServiceRequest`. `at` is the byte offset
/// (in the whole request) of the key, length or value at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A field's value, or a length, runs past the end of its message.
    #[error("truncated at byte {at}")]
    Truncated {
        /// Offset.
        at: usize,
    },
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("invalid varint at byte {at}")]
    InvalidVarint {
        /// Offset.
        at: usize,
    },
    /// A field key is larger than 32 bits, has field number 0, or wire type 6 or 7.
    #[error("invalid field key at byte {at}")]
    InvalidKey {
        /// Offset.
        at: usize,
    },
    /// A known field arrived with another wire type than its schema's.
    #[error("field {field} has wire type {wire_type}, not {expected}, at byte {at}")]
    WireType {
        /// Offset.
        at: usize,
        /// Field number.
        field: u32,
        /// Wire type found.
        wire_type: u8,
        /// Wire type of the schema.
        expected: u8,
    },
    /// An end-group key with no matching start group.
    #[error("unexpected end of group at byte {at}")]
    EndGroup {
        /// Offset.
        at: usize,
    },
    /// Messages (or groups) nested deeper than prost's recursion limit (100).
    #[error("nested too deep at byte {at}")]
    TooDeep {
        /// Offset.
        at: usize,
    },
    /// A string field is not UTF-8.
    #[error("string field {field} is not UTF-8 at byte {at}")]
    Utf8 {
        /// Offset.
        at: usize,
        /// Field number.
        field: u32,
    },
}

/// Validates `buf` as a protobuf-encoded `ExportTraceServiceRequest` and returns how many
/// spans it holds: `Ok` exactly when `ExportTraceServiceRequest::decode(buf)` would be, with
/// as many spans as the decoded request. Allocates nothing.
///
/// ```
/// use tracewire_collector::otlp::validate;
/// assert_eq!(validate(&[]), Ok(0)); // an empty request is a valid one
/// assert!(validate(b"\x01\x02garbage").is_err());
/// ```
///
/// # Errors
/// The first defect found, as a [`WireError`].
pub fn validate(buf: &[u8]) -> Result<usize, WireError> {
    walk(buf).map(|w| w.spans)
}

/// The one pass of [`validate`], with the invalid spans counted.
fn walk(buf: &[u8]) -> Result<Walk<'_>, WireError> {
    let mut w = Walk { buf, spans: 0, invalid: Invalid::default() };
    w.message(0, buf.len(), Msg::Request, RECURSION_LIMIT)?;
    Ok(w)
}

/// Why OTLP calls a span invalid (`opentelemetry/proto/trace/v1/trace.proto`, `Span`:
/// "The ID is a 16-byte array. An ID with all zeroes OR of length other than 16 bytes is
/// considered invalid" for `trace_id`, the same with 8 bytes for `span_id`; `parent_span_id`
/// is empty for a root, else "an 8-byte array").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidSpan {
    /// `trace_id` is not 16 bytes long.
    #[error("trace_id is {0} bytes, not 16")]
    TraceIdLength(usize),
    /// `trace_id` is all zeros.
    #[error("trace_id is all zeros")]
    TraceIdZero,
    /// `span_id` is not 8 bytes long.
    #[error("span_id is {0} bytes, not 8")]
    SpanIdLength(usize),
    /// `span_id` is all zeros.
    #[error("span_id is all zeros")]
    SpanIdZero,
    /// `parent_span_id` is neither empty (a root) nor 8 bytes long.
    #[error("parent_span_id is {0} bytes, neither empty nor 8")]
    ParentSpanIdLength(usize),
}

/// What is wrong with a span's ids, if anything (see [`InvalidSpan`]).
///
/// ```
/// use tracewire_collector::otlp::{InvalidSpan, check_ids};
///
/// assert_eq!(check_ids(&[1; 16], &[2; 8], &[]), Ok(()));
/// assert_eq!(check_ids(&[1; 16], &[2; 8], &[3; 8]), Ok(()));
/// assert_eq!(check_ids(&[1; 15], &[2; 8], &[]), Err(InvalidSpan::TraceIdLength(15)));
/// assert_eq!(check_ids(&[0; 16], &[2; 8], &[]), Err(InvalidSpan::TraceIdZero));
/// assert_eq!(check_ids(&[1; 16], &[0; 8], &[]), Err(InvalidSpan::SpanIdZero));
/// assert_eq!(check_ids(&[1; 16], &[2; 8], &[3; 4]), Err(InvalidSpan::ParentSpanIdLength(4)));
/// ```
///
/// # Errors
/// The first problem found, trace id first, then span id, then parent.
pub fn check_ids(trace_id: &[u8], span_id: &[u8], parent_span_id: &[u8]) -> Result<(), InvalidSpan> {
    if trace_id.len() != 16 {
        return Err(InvalidSpan::TraceIdLength(trace_id.len()));
    }
    if trace_id.iter().all(|&b| b == 0) {
        return Err(InvalidSpan::TraceIdZero);
    }
    if span_id.len() != 8 {
        return Err(InvalidSpan::SpanIdLength(span_id.len()));
    }
    if span_id.iter().all(|&b| b == 0) {
        return Err(InvalidSpan::SpanIdZero);
    }
    if !parent_span_id.is_empty() && parent_span_id.len() != 8 {
        return Err(InvalidSpan::ParentSpanIdLength(parent_span_id.len()));
    }
    Ok(())
}

/// The invalid spans of a request ([`InvalidSpan`]), counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invalid {
    /// How many spans are invalid.
    pub spans: usize,
    /// The first: its index among the request's spans (in request order) and its problem.
    pub first: Option<(usize, InvalidSpan)>,
}

impl Invalid {
    fn add(&mut self, index: usize, problem: Result<(), InvalidSpan>) {
        if let Err(problem) = problem {
            self.spans += 1;
            self.first.get_or_insert((index, problem));
        }
    }

    /// The invalid spans of a decoded request.
    pub fn of(request: &ExportTraceServiceRequest) -> Self {
        let mut invalid = Self::default();
        for (i, s) in request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).enumerate()
        {
            invalid.add(i, check_ids(&s.trace_id, &s.span_id, &s.parent_span_id));
        }
        invalid
    }

    /// Drops the invalid spans of a decoded request (keeping the order of the others) and
    /// returns what was dropped.
    pub fn remove_from(request: &mut ExportTraceServiceRequest) -> Self {
        let mut invalid = Self::default();
        let mut i = 0;
        for ss in request.resource_spans.iter_mut().flat_map(|rs| &mut rs.scope_spans) {
            ss.spans.retain(|s| {
                let problem = check_ids(&s.trace_id, &s.span_id, &s.parent_span_id);
                invalid.add(i, problem);
                i += 1;
                problem.is_ok()
            });
        }
        invalid
    }

    /// For the sender (OTLP `ExportTracePartialSuccess.error_message`), when any span is
    /// invalid: how many of `total`, and what is wrong with the first.
    pub fn message(&self, total: usize) -> Option<String> {
        let (index, problem) = self.first?;
        Some(format!(
            "rejected {} of {total} spans with invalid ids (the first: the span at index {index} of the request, {problem}); a span needs a 16-byte trace id and an 8-byte span id, neither all zeros, and an empty or 8-byte parent span id",
            self.spans
        ))
    }
}

/// A protobuf-encoded `ExportTraceServiceRequest` that [`validate`] accepted, with its span
/// count: what the receiver keeps in memory instead of the decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRequest {
    bytes: Bytes,
    spans: usize,
    invalid: Invalid,
}

impl EncodedRequest {
    /// Validates `bytes` (see [`validate`]).
    ///
    /// # Errors
    /// When they are not a well-formed `ExportTraceServiceRequest`.
    pub fn new(bytes: Bytes) -> Result<Self, WireError> {
        let Walk { spans, invalid, .. } = walk(&bytes)?;
        Ok(Self { bytes, spans, invalid })
    }

    /// Encodes a decoded request.
    pub fn from_request(request: &ExportTraceServiceRequest) -> Self {
        let spans = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        Self { bytes: request.encode_to_vec().into(), spans, invalid: Invalid::of(request) }
    }

    /// How many spans the request holds (invalid ones included).
    pub fn spans(&self) -> usize {
        self.spans
    }

    /// Its invalid spans ([`InvalidSpan`]), counted.
    pub fn invalid(&self) -> Invalid {
        self.invalid
    }

    /// The request without its invalid spans: the same bytes when it has none, else the
    /// rest re-encoded (the order of the spans kept).
    ///
    /// ```
    /// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    /// use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    /// use prost::Message;
    /// use tracewire_collector::otlp::{EncodedRequest, InvalidSpan};
    ///
    /// let span = |trace: u8, name: &str| Span { trace_id: vec![trace; 16], span_id: vec![1; 8], name: name.into(), ..Span::default() };
    /// let request = ExportTraceServiceRequest {
    ///     resource_spans: vec![ResourceSpans {
    ///         scope_spans: vec![ScopeSpans { spans: vec![span(1, "a"), span(0, "zero"), span(2, "b")], ..Default::default() }],
    ///         ..Default::default()
    ///     }],
    /// };
    /// let encoded = EncodedRequest::new(request.encode_to_vec().into()).unwrap();
    /// assert_eq!((encoded.spans(), encoded.invalid().spans), (3, 1));
    /// assert_eq!(encoded.invalid().first, Some((1, InvalidSpan::TraceIdZero)));
    /// let valid = encoded.without_invalid();
    /// assert_eq!((valid.spans(), valid.invalid().spans), (2, 0));
    /// let names: Vec<String> = valid.decode().resource_spans[0].scope_spans[0].spans.iter().map(|s| s.name.clone()).collect();
    /// assert_eq!(names, ["a", "b"]);
    /// ```
    #[must_use]
    pub fn without_invalid(self) -> Self {
        if self.invalid.spans == 0 {
            return self;
        }
        let mut request = self.decode();
        Invalid::remove_from(&mut request);
        Self::from_request(&request)
    }

    /// The protobuf bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The protobuf bytes, taken.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Decodes the request. The bytes were validated, so this does not fail (were prost to
    /// disagree with [`validate`], the result would be an empty request, never a panic; the
    /// tests and the `otlp_export` fuzz target check that they agree).
    pub fn decode(&self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(self.bytes.clone()).unwrap_or_default()
    }
}

/// The messages of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
}

/// What a field holds, by its schema.
#[derive(Debug, Clone, Copy)]
enum FieldKind {
    Message(Msg),
    /// A (repeated or not) message field holding a span: counted.
    Span,
    Str,
    Bytes,
    Varint,
    Fixed32,
    Fixed64,
    Unknown,
}

/// The fields of `opentelemetry-proto`'s generated types (`opentelemetry.proto.*.v1`, as
/// `prost` decodes them), by message and field number. (One arm per message and kind, in
/// field order, so that it reads as the schema.)
#[allow(clippy::match_same_arms)]
fn field(msg: Msg, tag: u32) -> FieldKind {
    use FieldKind::{Bytes, Fixed32, Fixed64, Message as M, Str, Unknown, Varint};
    match (msg, tag) {
        (Msg::Request, 1) => M(Msg::ResourceSpans),
        (Msg::ResourceSpans, 1) => M(Msg::Resource),
        (Msg::ResourceSpans, 2) => M(Msg::ScopeSpans),
        (Msg::ResourceSpans | Msg::ScopeSpans, 3) => Str,
        (Msg::Resource, 1) => M(Msg::KeyValue),
        (Msg::Resource, 2) => Varint,
        (Msg::Resource, 3) => M(Msg::EntityRef),
        (Msg::EntityRef, 1..=4) => Str,
        (Msg::ScopeSpans, 1) => M(Msg::Scope),
        (Msg::ScopeSpans, 2) => FieldKind::Span,
        (Msg::Scope, 1 | 2) => Str,
        (Msg::Scope, 3) => M(Msg::KeyValue),
        (Msg::Scope, 4) => Varint,
        (Msg::Span, 1 | 2 | 4) => Bytes,
        (Msg::Span, 3 | 5) => Str,
        (Msg::Span, 6 | 10 | 12 | 14) => Varint,
        (Msg::Span, 7 | 8) => Fixed64,
        (Msg::Span, 9) => M(Msg::KeyValue),
        (Msg::Span, 11) => M(Msg::Event),
        (Msg::Span, 13) => M(Msg::Link),
        (Msg::Span, 15) => M(Msg::Status),
        (Msg::Span, 16) => Fixed32,
        (Msg::Event, 1) => Fixed64,
        (Msg::Event, 2) => Str,
        (Msg::Event, 3) => M(Msg::KeyValue),
        (Msg::Event, 4) => Varint,
        (Msg::Link, 1 | 2) => Bytes,
        (Msg::Link, 3) => Str,
        (Msg::Link, 4) => M(Msg::KeyValue),
        (Msg::Link, 5) => Varint,
        (Msg::Link, 6) => Fixed32,
        (Msg::Status, 2) => Str,
        (Msg::Status, 3) => Varint,
        (Msg::KeyValue, 1) => Str,
        (Msg::KeyValue, 2) => M(Msg::AnyValue),
        (Msg::KeyValue, 3) => Varint,
        (Msg::AnyValue, 1) => Str,
        (Msg::AnyValue, 2 | 3 | 8) => Varint,
        (Msg::AnyValue, 4) => Fixed64,
        (Msg::AnyValue, 5) => M(Msg::ArrayValue),
        (Msg::AnyValue, 6) => M(Msg::KvList),
        (Msg::AnyValue, 7) => Bytes,
        (Msg::ArrayValue, 1) => M(Msg::AnyValue),
        (Msg::KvList, 1) => M(Msg::KeyValue),
        _ => Unknown,
    }
}

/// The offset after a fixed-width value of `n` bytes at `at`.
#[inline]
fn fixed(at: usize, end: usize, n: usize) -> Result<usize, WireError> {
    if end - at >= n { Ok(at + n) } else { Err(WireError::Truncated { at }) }
}

struct Walk<'a> {
    buf: &'a [u8],
    /// Spans seen so far.
    spans: usize,
    /// Invalid spans seen so far.
    invalid: Invalid,
}

impl Walk<'_> {
    /// A varint at `at`, not past `end`: (value, offset after it)
    /// ([`tracewire_store::wire::varint`]).
    #[inline]
    fn varint(&self, at: usize, end: usize) -> Result<(u64, usize), WireError> {
        tracewire_store::wire::varint(self.buf, at, end).map_err(|_| WireError::InvalidVarint { at })
    }

    /// A length-delimited value's bounds: (start, end).
    #[inline]
    fn delimited(&self, at: usize, end: usize) -> Result<(usize, usize), WireError> {
        let (len, start) = self.varint(at, end)?;
        match usize::try_from(len).ok().and_then(|len| start.checked_add(len)) {
            Some(stop) if stop <= end => Ok((start, stop)),
            _ => Err(WireError::Truncated { at }),
        }
    }

    /// A field key at `at`: (field number, wire type, offset after it)
    /// ([`tracewire_store::wire::key`]).
    #[inline]
    fn key(&self, at: usize, end: usize) -> Result<(u32, u8, usize), WireError> {
        tracewire_store::wire::key(self.buf, at, end).map_err(|e| match e.problem {
            tracewire_store::wire::WireProblem::Varint => WireError::InvalidVarint { at },
            _ => WireError::InvalidKey { at },
        })
    }

    /// The fields of one message in `at..end`; `depth` is what is left of the recursion
    /// limit for them (prost's `DecodeContext`).
    fn message(&mut self, mut at: usize, end: usize, msg: Msg, depth: u32) -> Result<(), WireError> {
        // A span's trace, span and parent ids, as (start, stop): the last occurrence of a
        // field is its value, as prost decodes it.
        let mut ids = [(0, 0); 3];
        while at < end {
            let (tag, wire_type, next) = self.key(at, end)?;
            let expect = |expected: u8| {
                if wire_type == expected {
                    Ok(())
                } else {
                    Err(WireError::WireType { at, field: tag, wire_type, expected })
                }
            };
            at = match field(msg, tag) {
                kind @ (FieldKind::Message(_) | FieldKind::Span) => {
                    expect(LEN)?;
                    if depth == 0 {
                        return Err(WireError::TooDeep { at });
                    }
                    let (start, stop) = self.delimited(next, end)?;
                    let inner = if let FieldKind::Message(m) = kind {
                        m
                    } else {
                        self.spans += 1;
                        Msg::Span
                    };
                    self.message(start, stop, inner, depth - 1)?;
                    stop
                }
                FieldKind::Str => {
                    expect(LEN)?;
                    let (start, stop) = self.delimited(next, end)?;
                    let text = self.buf.get(start..stop).ok_or(WireError::Truncated { at })?;
                    if std::str::from_utf8(text).is_err() {
                        return Err(WireError::Utf8 { at, field: tag });
                    }
                    stop
                }
                FieldKind::Bytes => {
                    expect(LEN)?;
                    let (start, stop) = self.delimited(next, end)?;
                    if msg == Msg::Span {
                        match tag {
                            1 => ids[0] = (start, stop),
                            2 => ids[1] = (start, stop),
                            _ => ids[2] = (start, stop),
                        }
                    }
                    stop
                }
                FieldKind::Varint => {
                    expect(VARINT)?;
                    self.varint(next, end)?.1
                }
                FieldKind::Fixed32 => {
                    expect(FIXED32)?;
                    fixed(next, end, 4)?
                }
                FieldKind::Fixed64 => {
                    expect(FIXED64)?;
                    fixed(next, end, 8)?
                }
                FieldKind::Unknown => self.skip(tag, wire_type, next, end, depth)?,
            };
        }
        if msg == Msg::Span {
            let id = |(start, stop): (usize, usize)| self.buf.get(start..stop).unwrap_or_default();
            let problem = check_ids(id(ids[0]), id(ids[1]), id(ids[2]));
            // This span is the last one counted (spans do not nest).
            self.invalid.add(self.spans.saturating_sub(1), problem);
        }
        Ok(())
    }

    /// Skips an unknown field (value at `at`) as prost's `skip_field` does: groups are
    /// walked to their matching end, each level counting against the recursion limit.
    fn skip(&self, tag: u32, wire_type: u8, at: usize, end: usize, depth: u32) -> Result<usize, WireError> {
        if depth == 0 {
            return Err(WireError::TooDeep { at });
        }
        match wire_type {
            VARINT => Ok(self.varint(at, end)?.1),
            FIXED64 => fixed(at, end, 8),
            LEN => Ok(self.delimited(at, end)?.1),
            FIXED32 => fixed(at, end, 4),
            START_GROUP => {
                let mut at = at;
                loop {
                    let (inner, inner_type, next) = self.key(at, end)?;
                    if inner_type == END_GROUP {
                        if inner != tag {
                            return Err(WireError::EndGroup { at });
                        }
                        return Ok(next);
                    }
                    at = self.skip(inner, inner_type, next, end, depth - 1)?;
                }
            }
            _ => Err(WireError::EndGroup { at }),
        }
    }
}
