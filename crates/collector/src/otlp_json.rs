//! OTLP JSON, both ways: writing spans as OTLP JSON lines, one `ExportTraceServiceRequest`
//! per line, as the OpenTelemetry Collector's file exporter writes them, and decoding one
//! request from its JSON.
//!
//! The encoding is the OTLP specification's "JSON Protobuf Encoding" (opentelemetry-proto
//! `docs/specification.md`): proto3's JSON mapping with trace and span ids as hex strings,
//! enums as integers and keys in lowerCamelCase. This module writes and reads it by hand
//! instead of through opentelemetry-proto's serde derives, which differ from that text:
//! they write `doubleValue` NaN and infinities as `null` (proto3 JSON: the strings `"NaN"`,
//! `"Infinity"`, `"-Infinity"`), write every default field (`"parentSpanId":""`,
//! `"status":null`), and refuse what the Collector writes or the mapping allows: an empty
//! `"arrayValue":{}` or `"kvlistValue":{}`, `null` for a field, a `KeyValue` without a key,
//! unpadded or URL-safe base64 for `bytesValue`.
//!
//! Writing omits default scalars (as the Collector does) and keeps a message that is present
//! even when empty (`"status":{}`), so what is read back equals what was written. Reading
//! accepts, beyond the encoding's own text: 64-bit integers as numbers or strings (the
//! proto3 mapping), ids in either hex case, ids in base64 when they have an id's length
//! there (what a generic protobuf JSON encoder writes), enum names (`"SPAN_KIND_SERVER"`),
//! the proto field names (`trace_id`; the Collector's reader takes them too) and `null` for
//! any field. Unknown fields are ignored, as the specification requires.
//!
//! ```
//! use tracewire_collector::{otlp_json, SpanRecord};
//!
//! let span = SpanRecord {
//!     trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
//!     span_id: "b7ad6b7169203331".into(),
//!     name: "GET /".into(),
//!     service: "api".into(),
//!     start_ns: 1_000,
//!     end_ns: 3_000,
//!     kind: 2,
//!     ..SpanRecord::default()
//! };
//! let mut out = Vec::new();
//! assert_eq!(otlp_json::write_lines(&[span.clone()], &mut out).unwrap(), 1);
//! let line = String::from_utf8(out).unwrap();
//! assert!(line.contains(r#""spanId":"b7ad6b7169203331""#));
//! assert!(line.contains(r#""kind":2"#) && line.contains(r#""startTimeUnixNano":"1000""#));
//!
//! let request = otlp_json::decode_slice(line.trim_end().as_bytes()).unwrap();
//! assert_eq!(SpanRecord::all_of(&request)[0].to_otlp(), span.to_otlp());
//! ```

use std::fmt;
use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Value};
use tracewire_store::{SpanRecord, hex, to_request};

/// Spans per line [`write_lines`] writes at most, so that a line stays bounded.
pub const SPANS_PER_LINE: usize = 1000;

/// Writing OTLP JSON failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The writer failed.
    #[error("writing OTLP JSON: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `records` as OTLP JSON lines: one `ExportTraceServiceRequest` per line, at most
/// [`SPANS_PER_LINE`] spans each, spans grouped under their resource and scope
/// ([`tracewire_store::to_request`]), each line ended by `\n`. Returns the number of lines
/// written (none for no records). The writer is not flushed.
///
/// # Errors
///
/// [`WriteError::Io`] when the writer fails.
pub fn write_lines<W: Write>(records: &[SpanRecord], out: W) -> Result<usize, WriteError> {
    write_lines_per(records, out, SPANS_PER_LINE)
}

/// [`write_lines`] with at most `spans_per_line` spans a line (at least one).
///
/// # Errors
///
/// [`WriteError::Io`] when the writer fails.
pub fn write_lines_per<W: Write>(
    records: &[SpanRecord],
    mut out: W,
    spans_per_line: usize,
) -> Result<usize, WriteError> {
    let mut lines = 0;
    let mut buf = Vec::new();
    for chunk in records.chunks(spans_per_line.max(1)) {
        buf.clear();
        encode_into(&to_request(chunk), &mut buf);
        buf.push(b'\n');
        out.write_all(&buf)?;
        lines += 1;
    }
    Ok(lines)
}

/// One request as OTLP JSON (one line, no newline).
///
/// ```
/// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
///
/// assert_eq!(tracewire_collector::otlp_json::encode(&ExportTraceServiceRequest::default()), "{}");
/// ```
pub fn encode(request: &ExportTraceServiceRequest) -> String {
    let mut buf = Vec::new();
    encode_into(request, &mut buf);
    // Only UTF-8 is written: JSON punctuation, escaped strings, numbers.
    String::from_utf8(buf).unwrap_or_default()
}

/// Appends `request` as OTLP JSON to `out`.
pub fn encode_into(request: &ExportTraceServiceRequest, out: &mut Vec<u8>) {
    let mut o = Obj::new(out);
    o.list("resourceSpans", &request.resource_spans, resource_spans);
    o.end();
}

// ---------------------------------------------------------------------------------------
// Writing.

/// A JSON object being written: commas between fields, defaults left out by the callers.
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn string(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            let out = self.key(key);
            string(out, value);
        }
    }

    fn id(&mut self, key: &str, value: &[u8]) {
        if !value.is_empty() {
            let out = self.key(key);
            out.push(b'"');
            out.extend_from_slice(hex(value).as_bytes());
            out.push(b'"');
        }
    }

    /// A 64-bit integer: a decimal string (proto3 JSON).
    fn u64(&mut self, key: &str, value: u64) {
        if value != 0 {
            let out = self.key(key);
            out.extend_from_slice(format!("\"{value}\"").as_bytes());
        }
    }

    /// A 32-bit integer or an enum: a number.
    fn int(&mut self, key: &str, value: impl Into<i64>) {
        let value = value.into();
        if value != 0 {
            let out = self.key(key);
            out.extend_from_slice(value.to_string().as_bytes());
        }
    }

    fn list<T>(&mut self, key: &str, items: &[T], write: fn(&mut Vec<u8>, &T)) {
        if items.is_empty() {
            return;
        }
        let out = self.key(key);
        out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write(out, item);
        }
        out.push(b']');
    }

    /// A message field: written when present, even when empty (`{}`).
    fn message<T>(&mut self, key: &str, value: Option<&T>, write: fn(&mut Vec<u8>, &T)) {
        if let Some(value) = value {
            let out = self.key(key);
            write(out, value);
        }
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping of a str cannot fail into a Vec.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn resource_spans(out: &mut Vec<u8>, rs: &ResourceSpans) {
    let mut o = Obj::new(out);
    o.message("resource", rs.resource.as_ref(), resource);
    o.list("scopeSpans", &rs.scope_spans, scope_spans);
    o.string("schemaUrl", &rs.schema_url);
    o.end();
}

fn resource(out: &mut Vec<u8>, r: &Resource) {
    let mut o = Obj::new(out);
    o.list("attributes", &r.attributes, key_value);
    o.int("droppedAttributesCount", r.dropped_attributes_count);
    o.list("entityRefs", &r.entity_refs, entity_ref);
    o.end();
}

fn entity_ref(out: &mut Vec<u8>, e: &EntityRef) {
    let mut o = Obj::new(out);
    o.string("schemaUrl", &e.schema_url);
    o.string("type", &e.r#type);
    o.list("idKeys", &e.id_keys, |out, s: &String| string(out, s));
    o.list("descriptionKeys", &e.description_keys, |out, s: &String| string(out, s));
    o.end();
}

fn scope_spans(out: &mut Vec<u8>, ss: &ScopeSpans) {
    let mut o = Obj::new(out);
    o.message("scope", ss.scope.as_ref(), scope);
    o.list("spans", &ss.spans, span);
    o.string("schemaUrl", &ss.schema_url);
    o.end();
}

fn scope(out: &mut Vec<u8>, s: &InstrumentationScope) {
    let mut o = Obj::new(out);
    o.string("name", &s.name);
    o.string("version", &s.version);
    o.list("attributes", &s.attributes, key_value);
    o.int("droppedAttributesCount", s.dropped_attributes_count);
    o.end();
}

fn span(out: &mut Vec<u8>, s: &Span) {
    let mut o = Obj::new(out);
    o.id("traceId", &s.trace_id);
    o.id("spanId", &s.span_id);
    o.string("traceState", &s.trace_state);
    o.id("parentSpanId", &s.parent_span_id);
    o.int("flags", s.flags);
    o.string("name", &s.name);
    o.int("kind", s.kind);
    o.u64("startTimeUnixNano", s.start_time_unix_nano);
    o.u64("endTimeUnixNano", s.end_time_unix_nano);
    o.list("attributes", &s.attributes, key_value);
    o.int("droppedAttributesCount", s.dropped_attributes_count);
    o.list("events", &s.events, event);
    o.int("droppedEventsCount", s.dropped_events_count);
    o.list("links", &s.links, link);
    o.int("droppedLinksCount", s.dropped_links_count);
    o.message("status", s.status.as_ref(), status);
    o.end();
}

fn event(out: &mut Vec<u8>, e: &Event) {
    let mut o = Obj::new(out);
    o.u64("timeUnixNano", e.time_unix_nano);
    o.string("name", &e.name);
    o.list("attributes", &e.attributes, key_value);
    o.int("droppedAttributesCount", e.dropped_attributes_count);
    o.end();
}

fn link(out: &mut Vec<u8>, l: &Link) {
    let mut o = Obj::new(out);
    o.id("traceId", &l.trace_id);
    o.id("spanId", &l.span_id);
    o.string("traceState", &l.trace_state);
    o.list("attributes", &l.attributes, key_value);
    o.int("droppedAttributesCount", l.dropped_attributes_count);
    o.int("flags", l.flags);
    o.end();
}

fn status(out: &mut Vec<u8>, s: &Status) {
    let mut o = Obj::new(out);
    o.string("message", &s.message);
    o.int("code", s.code);
    o.end();
}

fn key_value(out: &mut Vec<u8>, kv: &KeyValue) {
    let mut o = Obj::new(out);
    // The key is written even when empty: it is what a KeyValue is for.
    let key = o.key("key");
    string(key, &kv.key);
    o.message("value", kv.value.as_ref(), any_value);
    o.int("keyStrindex", kv.key_strindex);
    o.end();
}

fn any_value(out: &mut Vec<u8>, v: &AnyValue) {
    use any_value::Value as V;
    let mut o = Obj::new(out);
    match &v.value {
        // A oneof member is written even when it holds its type's default.
        Some(V::StringValue(s)) => string(o.key("stringValue"), s),
        Some(V::BoolValue(b)) => o.key("boolValue").extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(V::IntValue(i)) => o.key("intValue").extend_from_slice(format!("\"{i}\"").as_bytes()),
        Some(V::DoubleValue(d)) => double(o.key("doubleValue"), *d),
        Some(V::ArrayValue(a)) => {
            let out = o.key("arrayValue");
            let mut inner = Obj::new(out);
            inner.list("values", &a.values, any_value);
            inner.end();
        }
        Some(V::KvlistValue(l)) => {
            let out = o.key("kvlistValue");
            let mut inner = Obj::new(out);
            inner.list("values", &l.values, key_value);
            inner.end();
        }
        Some(V::BytesValue(b)) => {
            let out = o.key("bytesValue");
            out.push(b'"');
            base64_encode(b, out);
            out.push(b'"');
        }
        Some(V::StringValueStrindex(i)) => o.key("stringValueStrindex").extend_from_slice(i.to_string().as_bytes()),
        None => {}
    }
    o.end();
}

/// A double: a JSON number, or the strings proto3 JSON uses for NaN and the infinities.
fn double(out: &mut Vec<u8>, d: f64) {
    if d.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if d.is_infinite() {
        out.extend_from_slice(if d > 0.0 { b"\"Infinity\"" } else { b"\"-Infinity\"" });
    } else {
        let _ = serde_json::to_writer(&mut *out, &d);
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4), what proto3 JSON writes for bytes.
fn base64_encode(bytes: &[u8], out: &mut Vec<u8>) {
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

/// Standard or URL-safe base64, padded or not (proto3 JSON accepts either), or `None`.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    }
    let s = s.as_bytes();
    let data = s.strip_suffix(b"==").or_else(|| s.strip_suffix(b"=")).unwrap_or(s);
    if data.len() % 4 == 1 || (data.len() != s.len() && s.len() % 4 != 0) {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------
// Reading.

/// What is wrong with an OTLP JSON request, and where in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {problem}")]
pub struct DecodeError {
    /// The field, as a path from the request (`resourceSpans[0].scopeSpans[0].spans[2].traceId`).
    pub at: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Decodes one `ExportTraceServiceRequest` (or `TracesData`, the same JSON) from its OTLP
/// JSON text.
///
/// # Errors
///
/// A [`DecodeError`] naming the field that is wrong (at `$` for JSON that does not parse).
///
/// ```
/// use tracewire_collector::otlp_json::decode_slice;
///
/// let r = decode_slice(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5B8EFFF798038103D269B633813FC60C",
///     "spanId":"EEE19B7EC3C1B174","name":"x","kind":2,"startTimeUnixNano":1544712660000000000,
///     "endTimeUnixNano":"1544712661000000000","attributes":[{"key":"a","value":{"arrayValue":{}}}]}]}]}]}"#).unwrap();
/// let span = &r.resource_spans[0].scope_spans[0].spans[0];
/// assert_eq!((span.span_id[0], span.kind, span.end_time_unix_nano), (0xee, 2, 1_544_712_661_000_000_000));
///
/// let e = decode_slice(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"xyz"}]}]}]}"#).unwrap_err();
/// assert_eq!(e.at, "resourceSpans[0].scopeSpans[0].spans[0].spanId");
/// ```
pub fn decode_slice(json: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| DecodeError { at: "$".into(), problem: format!("not valid JSON: {e}") })?;
    decode(&value)
}

/// Decodes one `ExportTraceServiceRequest` from a parsed JSON value.
///
/// # Errors
///
/// A [`DecodeError`] naming the field that is wrong.
pub fn decode(value: &Value) -> Result<ExportTraceServiceRequest, DecodeError> {
    let root = At::Root;
    let o = object(value, &root)?;
    Ok(ExportTraceServiceRequest {
        resource_spans: list(o, "resourceSpans", "resource_spans", &root, read_resource_spans)?,
    })
}

/// A place in the JSON, for error messages (built only when there is an error).
#[derive(Clone, Copy)]
pub(crate) enum At<'a> {
    Root,
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("$"),
            Self::Key(Self::Root, k) => f.write_str(k),
            Self::Key(parent, k) => write!(f, "{parent}.{k}"),
            Self::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

pub(crate) type R<T> = Result<T, DecodeError>;

pub(crate) fn fail<T>(at: &At<'_>, problem: impl Into<String>) -> R<T> {
    Err(DecodeError { at: at.to_string(), problem: problem.into() })
}

pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn object<'v>(v: &'v Value, at: &At<'_>) -> R<&'v Map<String, Value>> {
    match v {
        Value::Object(o) => Ok(o),
        other => fail(at, format!("expected an object, found {}", kind_of(other))),
    }
}

/// The field under its JSON name or its proto name; `null` counts as absent.
pub(crate) fn field<'v>(o: &'v Map<String, Value>, json: &str, proto: &str) -> Option<&'v Value> {
    o.get(json).filter(|v| !v.is_null()).or_else(|| o.get(proto).filter(|v| !v.is_null()))
}

/// Runs `read` on the field when it is present; the default otherwise.
pub(crate) fn with<T: Default>(
    o: &Map<String, Value>,
    json: &str,
    proto: &str,
    at: &At<'_>,
    read: impl FnOnce(&Value, &At<'_>) -> R<T>,
) -> R<T> {
    match field(o, json, proto) {
        Some(v) => read(v, &At::Key(at, json)),
        None => Ok(T::default()),
    }
}

pub(crate) fn list<T>(
    o: &Map<String, Value>,
    json: &str,
    proto: &str,
    at: &At<'_>,
    mut read: impl FnMut(&Value, &At<'_>) -> R<T>,
) -> R<Vec<T>> {
    with(o, json, proto, at, |v, at| match v {
        Value::Array(items) => items.iter().enumerate().map(|(i, item)| read(item, &At::Index(at, i))).collect(),
        other => fail(at, format!("expected an array, found {}", kind_of(other))),
    })
}

pub(crate) fn message<T>(
    o: &Map<String, Value>,
    json: &str,
    proto: &str,
    at: &At<'_>,
    read: impl FnOnce(&Value, &At<'_>) -> R<T>,
) -> R<Option<T>> {
    with(o, json, proto, at, |v, at| read(v, at).map(Some))
}

pub(crate) fn read_string(v: &Value, at: &At<'_>) -> R<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => fail(at, format!("expected a string, found {}", kind_of(other))),
    }
}

/// A trace or span id: hex (either case), or base64 when that gives an id's length.
pub(crate) fn read_id(v: &Value, at: &At<'_>) -> R<Vec<u8>> {
    let s = read_string(v, at)?;
    if let Some(bytes) = tracewire_store::unhex(&s) {
        return Ok(bytes);
    }
    match base64_decode(&s) {
        Some(bytes) if bytes.len() == 16 || bytes.len() == 8 => Ok(bytes),
        _ => fail(at, format!("{s:?} is not a hex id")),
    }
}

/// An unsigned 64-bit integer: a decimal string or a number.
// A number written with a fraction or an exponent (`1.5e18`) is taken when it is a
// whole number in range (checked before the cast).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub(crate) fn read_u64(v: &Value, at: &At<'_>) -> R<u64> {
    match v {
        Value::String(s) => s.trim().parse().or_else(|_| fail(at, format!("{s:?} is not an unsigned 64-bit integer"))),
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19).map(|f| f as u64))
            .map_or_else(|| fail(at, format!("{n} is not an unsigned 64-bit integer")), Ok),
        other => fail(at, format!("expected an integer, found {}", kind_of(other))),
    }
}

// A number written with a fraction or an exponent (`1.5e18`) is taken when it is a
// whole number in range (checked before the cast).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub(crate) fn read_i64(v: &Value, at: &At<'_>) -> R<i64> {
    match v {
        Value::String(s) => s.trim().parse().or_else(|_| fail(at, format!("{s:?} is not a 64-bit integer"))),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
            .map_or_else(|| fail(at, format!("{n} is not a 64-bit integer")), Ok),
        other => fail(at, format!("expected an integer, found {}", kind_of(other))),
    }
}

pub(crate) fn read_u32(v: &Value, at: &At<'_>) -> R<u32> {
    let n = read_u64(v, at)?;
    u32::try_from(n).or_else(|_| fail(at, format!("{n} is out of range for a 32-bit integer")))
}

fn read_i32(v: &Value, at: &At<'_>) -> R<i32> {
    let n = read_i64(v, at)?;
    i32::try_from(n).or_else(|_| fail(at, format!("{n} is out of range for a 32-bit integer")))
}

/// An enum: its integer (what OTLP JSON requires), or its name.
fn read_enum(v: &Value, at: &At<'_>, from_name: fn(&str) -> Option<i32>) -> R<i32> {
    match v {
        Value::String(s) if s.parse::<i64>().is_err() => {
            from_name(s).map_or_else(|| fail(at, format!("{s:?} is not a value of this enum")), Ok)
        }
        _ => read_i32(v, at),
    }
}

pub(crate) fn read_f64(v: &Value, at: &At<'_>) -> R<f64> {
    match v {
        Value::Number(n) => n.as_f64().map_or_else(|| fail(at, format!("{n} is not a double")), Ok),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            s => s.trim().parse().or_else(|_| fail(at, format!("{s:?} is not a double"))),
        },
        other => fail(at, format!("expected a number, found {}", kind_of(other))),
    }
}

pub(crate) fn read_bool(v: &Value, at: &At<'_>) -> R<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => fail(at, format!("expected true or false, found {}", kind_of(other))),
    }
}

pub(crate) fn read_bytes(v: &Value, at: &At<'_>) -> R<Vec<u8>> {
    let s = read_string(v, at)?;
    base64_decode(&s).map_or_else(|| fail(at, format!("{s:?} is not base64")), Ok)
}

pub(crate) fn read_resource_spans(v: &Value, at: &At<'_>) -> R<ResourceSpans> {
    let o = object(v, at)?;
    Ok(ResourceSpans {
        resource: message(o, "resource", "resource", at, read_resource)?,
        scope_spans: list(o, "scopeSpans", "scope_spans", at, read_scope_spans)?,
        schema_url: with(o, "schemaUrl", "schema_url", at, read_string)?,
    })
}

fn read_resource(v: &Value, at: &At<'_>) -> R<Resource> {
    let o = object(v, at)?;
    Ok(Resource {
        attributes: list(o, "attributes", "attributes", at, read_key_value)?,
        dropped_attributes_count: with(o, "droppedAttributesCount", "dropped_attributes_count", at, read_u32)?,
        entity_refs: list(o, "entityRefs", "entity_refs", at, |v, at| {
            let o = object(v, at)?;
            Ok(EntityRef {
                schema_url: with(o, "schemaUrl", "schema_url", at, read_string)?,
                r#type: with(o, "type", "type", at, read_string)?,
                id_keys: list(o, "idKeys", "id_keys", at, read_string)?,
                description_keys: list(o, "descriptionKeys", "description_keys", at, read_string)?,
            })
        })?,
    })
}

fn read_scope_spans(v: &Value, at: &At<'_>) -> R<ScopeSpans> {
    let o = object(v, at)?;
    Ok(ScopeSpans {
        scope: message(o, "scope", "scope", at, read_scope)?,
        spans: list(o, "spans", "spans", at, read_span)?,
        schema_url: with(o, "schemaUrl", "schema_url", at, read_string)?,
    })
}

fn read_scope(v: &Value, at: &At<'_>) -> R<InstrumentationScope> {
    let o = object(v, at)?;
    Ok(InstrumentationScope {
        name: with(o, "name", "name", at, read_string)?,
        version: with(o, "version", "version", at, read_string)?,
        attributes: list(o, "attributes", "attributes", at, read_key_value)?,
        dropped_attributes_count: with(o, "droppedAttributesCount", "dropped_attributes_count", at, read_u32)?,
    })
}

fn span_kind(name: &str) -> Option<i32> {
    opentelemetry_proto::tonic::trace::v1::span::SpanKind::from_str_name(name).map(|k| k as i32)
}

fn status_code(name: &str) -> Option<i32> {
    opentelemetry_proto::tonic::trace::v1::status::StatusCode::from_str_name(name).map(|c| c as i32)
}

fn read_span(v: &Value, at: &At<'_>) -> R<Span> {
    let o = object(v, at)?;
    Ok(Span {
        trace_id: with(o, "traceId", "trace_id", at, read_id)?,
        span_id: with(o, "spanId", "span_id", at, read_id)?,
        trace_state: with(o, "traceState", "trace_state", at, read_string)?,
        parent_span_id: with(o, "parentSpanId", "parent_span_id", at, read_id)?,
        flags: with(o, "flags", "flags", at, read_u32)?,
        name: with(o, "name", "name", at, read_string)?,
        kind: with(o, "kind", "kind", at, |v, at| read_enum(v, at, span_kind))?,
        start_time_unix_nano: with(o, "startTimeUnixNano", "start_time_unix_nano", at, read_u64)?,
        end_time_unix_nano: with(o, "endTimeUnixNano", "end_time_unix_nano", at, read_u64)?,
        attributes: list(o, "attributes", "attributes", at, read_key_value)?,
        dropped_attributes_count: with(o, "droppedAttributesCount", "dropped_attributes_count", at, read_u32)?,
        events: list(o, "events", "events", at, |v, at| {
            let o = object(v, at)?;
            Ok(Event {
                time_unix_nano: with(o, "timeUnixNano", "time_unix_nano", at, read_u64)?,
                name: with(o, "name", "name", at, read_string)?,
                attributes: list(o, "attributes", "attributes", at, read_key_value)?,
                dropped_attributes_count: with(o, "droppedAttributesCount", "dropped_attributes_count", at, read_u32)?,
            })
        })?,
        dropped_events_count: with(o, "droppedEventsCount", "dropped_events_count", at, read_u32)?,
        links: list(o, "links", "links", at, |v, at| {
            let o = object(v, at)?;
            Ok(Link {
                trace_id: with(o, "traceId", "trace_id", at, read_id)?,
                span_id: with(o, "spanId", "span_id", at, read_id)?,
                trace_state: with(o, "traceState", "trace_state", at, read_string)?,
                attributes: list(o, "attributes", "attributes", at, read_key_value)?,
                dropped_attributes_count: with(o, "droppedAttributesCount", "dropped_attributes_count", at, read_u32)?,
                flags: with(o, "flags", "flags", at, read_u32)?,
            })
        })?,
        dropped_links_count: with(o, "droppedLinksCount", "dropped_links_count", at, read_u32)?,
        status: message(o, "status", "status", at, |v, at| {
            let o = object(v, at)?;
            Ok(Status {
                message: with(o, "message", "message", at, read_string)?,
                code: with(o, "code", "code", at, |v, at| read_enum(v, at, status_code))?,
            })
        })?,
    })
}

fn read_key_value(v: &Value, at: &At<'_>) -> R<KeyValue> {
    let o = object(v, at)?;
    Ok(KeyValue {
        key: with(o, "key", "key", at, read_string)?,
        value: message(o, "value", "value", at, read_any_value)?,
        key_strindex: with(o, "keyStrindex", "key_strindex", at, read_i32)?,
    })
}

/// The `AnyValue` members, by JSON and proto name.
const ANY_VALUE_FIELDS: [(&str, &str); 8] = [
    ("stringValue", "string_value"),
    ("boolValue", "bool_value"),
    ("intValue", "int_value"),
    ("doubleValue", "double_value"),
    ("arrayValue", "array_value"),
    ("kvlistValue", "kvlist_value"),
    ("bytesValue", "bytes_value"),
    ("stringValueStrindex", "string_value_strindex"),
];

fn read_any_value(v: &Value, at: &At<'_>) -> R<AnyValue> {
    use any_value::Value as V;
    let o = object(v, at)?;
    let mut set = ANY_VALUE_FIELDS.iter().filter_map(|(json, proto)| field(o, json, proto).map(|v| (*json, v)));
    let Some((name, v)) = set.next() else { return Ok(AnyValue { value: None }) };
    if let Some((other, _)) = set.next() {
        return fail(at, format!("sets both {name} and {other} (a oneof holds one)"));
    }
    let at = &At::Key(at, name);
    let value = match name {
        "stringValue" => V::StringValue(read_string(v, at)?),
        "boolValue" => V::BoolValue(read_bool(v, at)?),
        "intValue" => V::IntValue(read_i64(v, at)?),
        "doubleValue" => V::DoubleValue(read_f64(v, at)?),
        "arrayValue" => {
            let o = object(v, at)?;
            V::ArrayValue(ArrayValue { values: list(o, "values", "values", at, read_any_value)? })
        }
        "kvlistValue" => {
            let o = object(v, at)?;
            V::KvlistValue(KeyValueList { values: list(o, "values", "values", at, read_key_value)? })
        }
        "bytesValue" => V::BytesValue(read_bytes(v, at)?),
        _ => V::StringValueStrindex(read_i32(v, at)?),
    };
    Ok(AnyValue { value: Some(value) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        // RFC 4648, section 10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = Vec::new();
            base64_encode(plain.as_bytes(), &mut out);
            assert_eq!(out, encoded.as_bytes());
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
            assert_eq!(base64_decode(encoded.trim_end_matches('=')).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64_decode("_-8="), Some(vec![0xff, 0xef]));
        assert_eq!(base64_decode("Zg="), None);
        assert_eq!(base64_decode("Z"), None);
        assert_eq!(base64_decode("Z!=="), None);
    }
}
