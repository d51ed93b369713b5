//! Spans stored straight from the protobuf bytes of an OTLP export request
//! ([`crate::Store::append_encoded`]).
//!
//! The request is never decoded into `opentelemetry_proto` structs nor re-encoded: its
//! bytes are walked (the protobuf wire format, with the request's schema down to the span
//! and its status) and each span's row is read from them in place. The columns (ids, name,
//! times, kind, status code) are slices of the request; the body is the span's other
//! fields copied as they came, in their order, its status without the code; a resource or
//! scope is copied once per `ResourceSpans` or `ScopeSpans`. For a request as prost encodes
//! one (each field once, in field order) the rows are byte for byte those
//! [`crate::Store::append_request`] writes for its decoding.
//!
//! A field that occurs more than once is read as prost decodes it: the last occurrence of
//! a column's field is its value, a status's code is the last one sent, and the body keeps
//! every occurrence of its fields in order (a repeated field's elements, a message merged
//! on decoding). Unknown fields of a span, its status, a scope list or a resource list are
//! left out, as decoding drops them.
//!
//! The walk runs when a request is queued, on the caller's thread ([`check`] is it alone):
//! it checks every part of the wire format this module reads (keys, varints, lengths, wire
//! types, the UTF-8 of names and schema URLs) and lays the rows out (each span's columns as
//! ranges of the request, its body copied), so the writer thread only binds and inserts.
//! What is copied without being read (attributes, events, links, resources and scopes) is
//! the caller's to have checked: the collector validates every request against prost's
//! decoding before it queues it.

use std::ops::Range;

use prost::Message as _;
use prost::bytes::Bytes;
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::StoreError;
use crate::spans::{Interned, service_of, status};

/// Wire type of a varint (protobuf encoding, "Message Structure").
pub const VARINT: u8 = 0;
/// Wire type of an 8-byte little-endian value.
pub const FIXED64: u8 = 1;
/// Wire type of a length-delimited value (bytes, strings, messages, packed repeats).
pub const LEN: u8 = 2;
/// Wire type of a group's start (deprecated; skipped).
pub const START_GROUP: u8 = 3;
/// Wire type of a group's end.
pub const END_GROUP: u8 = 4;
/// Wire type of a 4-byte little-endian value.
pub const FIXED32: u8 = 5;

/// How deep groups in unknown fields may nest (prost's recursion limit).
const RECURSION_LIMIT: u32 = 100;

/// Why bytes are not an `ExportTraceServiceRequest` the store can keep: what is wrong, and
/// at which byte of the request.
///
/// ```
/// use tracewire_store::wire::{WireError, WireProblem};
///
/// // A resource_spans field (key 0x0a) whose length runs past the end.
/// let e = tracewire_store::wire::check(&[0x0a, 0x05]).unwrap_err();
/// assert_eq!(e, WireError { at: 1, problem: WireProblem::Truncated });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed OTLP export request at byte {at}: {problem}")]
pub struct WireError {
    /// Offset of the key, length or value at fault.
    pub at: usize,
    /// What is wrong.
    pub problem: WireProblem,
}

/// What is wrong with a request's bytes ([`WireError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireProblem {
    /// A value or a length runs past the end of its message.
    #[error("truncated")]
    Truncated,
    /// A varint longer than 10 bytes or past 64 bits.
    #[error("invalid varint")]
    Varint,
    /// A key past 32 bits, with field number 0, or with wire type 6 or 7.
    #[error("invalid field key")]
    Key,
    /// A field of the schema with another wire type than the schema's.
    #[error("field {field} has wire type {found}, not {expected}")]
    WireType {
        /// Field number.
        field: u32,
        /// Wire type found.
        found: u8,
        /// Wire type of the schema.
        expected: u8,
    },
    /// An end of group without its start, or groups nested deeper than 100.
    #[error("unmatched or too deep group")]
    Group,
    /// A name or schema URL that is not UTF-8.
    #[error("string field {0} is not UTF-8")]
    Utf8(u32),
}

/// Checks `bytes` as [`crate::Store::append_encoded`] does before queueing them, and
/// returns how many spans they hold.
///
/// ```
/// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
/// use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
/// use prost::Message;
///
/// let request = ExportTraceServiceRequest {
///     resource_spans: vec![ResourceSpans {
///         scope_spans: vec![ScopeSpans { spans: vec![Span::default(); 3], ..Default::default() }],
///         ..Default::default()
///     }],
/// };
/// assert_eq!(tracewire_store::wire::check(&request.encode_to_vec()), Ok(3));
/// ```
///
/// # Errors
/// The first defect found.
pub fn check(bytes: &[u8]) -> Result<usize, WireError> {
    walk(bytes, |_| Ok::<(), WireError>(()))
}

/// One field of a message, as [`field`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Offset of its key.
    pub key_at: usize,
    /// Field number.
    pub tag: u32,
    /// Wire type ([`VARINT`], [`FIXED64`], [`LEN`], [`START_GROUP`], [`FIXED32`]).
    pub wire_type: u8,
    /// Start of a length-delimited field's content, or of any other's value.
    pub start: usize,
    /// Offset after the field (its content's end).
    pub stop: usize,
    /// A varint's or fixed value (a length-delimited field's length).
    pub value: u64,
}

fn fail(at: usize, problem: WireProblem) -> WireError {
    WireError { at, problem }
}

/// A varint at `at`, not past `end`: (value, offset after it). As prost: at most 10
/// bytes, the tenth 0 or 1.
///
/// ```
/// use tracewire_store::wire::varint;
/// assert_eq!(varint(&[0xac, 0x02], 0, 2), Ok((300, 2)));
/// assert!(varint(&[0xac, 0x02], 0, 1).is_err()); // runs past `end`
/// ```
///
/// # Errors
/// A varint that runs past `end`, is longer than 10 bytes or overflows 64 bits.
#[inline]
pub fn varint(buf: &[u8], at: usize, end: usize) -> Result<(u64, usize), WireError> {
    if at < end
        && let Some(&b) = buf.get(at)
        && b < 0x80
    {
        return Ok((u64::from(b), at + 1));
    }
    let bytes = buf.get(at..end).unwrap_or_default();
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            if i == 9 && b > 1 {
                break;
            }
            return Ok((value, at + i + 1));
        }
    }
    Err(fail(at, WireProblem::Varint))
}

/// A field key at `at`, not past `end`: (field number, wire type, offset after it). As
/// prost: at most 32 bits, a field number other than 0, a wire type of 0 to 5.
///
/// ```
/// use tracewire_store::wire::{LEN, key};
/// assert_eq!(key(&[0x2a], 0, 1), Ok((5, LEN, 1)));
/// assert!(key(&[0x07], 0, 1).is_err()); // field number 0
/// ```
///
/// # Errors
/// An invalid varint ([`WireProblem::Varint`]) or key ([`WireProblem::Key`]).
#[inline]
pub fn key(buf: &[u8], at: usize, end: usize) -> Result<(u32, u8, usize), WireError> {
    let (key, next) = varint(buf, at, end)?;
    let key = u32::try_from(key).map_err(|_| fail(at, WireProblem::Key))?;
    // The low 3 bits.
    #[allow(clippy::cast_possible_truncation)]
    let (tag, wire_type) = (key >> 3, (key & 7) as u8);
    if tag == 0 || wire_type > FIXED32 {
        return Err(fail(at, WireProblem::Key));
    }
    Ok((tag, wire_type, next))
}

/// The field at `at` (key and value), not past `end`; a group (of an unknown field) is
/// walked to its end. Keys, varints and lengths are checked as prost checks them (a key
/// of at most 32 bits with a field number and a wire type of 0 to 5; a varint of at most
/// 10 bytes, the tenth 0 or 1; a length within `end`).
///
/// ```
/// use tracewire_store::wire::{Field, LEN, field};
///
/// // Field 5 (a string), "ab", then the next field at offset 4.
/// let f = field(&[0x2a, 0x02, b'a', b'b', 0x08], 0, 5).unwrap();
/// assert_eq!(f, Field { key_at: 0, tag: 5, wire_type: LEN, start: 2, stop: 4, value: 2 });
/// assert!(field(&[0x2a, 0x03, b'a'], 0, 3).is_err());
/// ```
///
/// # Errors
/// The key, varint or length at fault, as a [`WireError`].
#[inline]
pub fn field(buf: &[u8], at: usize, end: usize) -> Result<Field, WireError> {
    let (tag, wire_type, next) = key(buf, at, end)?;
    let fixed = |n: usize| -> Result<(usize, u64), WireError> {
        let bytes = buf.get(next..next + n).filter(|_| end - next >= n).ok_or(fail(next, WireProblem::Truncated))?;
        let mut le = [0u8; 8];
        le[..n].copy_from_slice(bytes);
        Ok((next + n, u64::from_le_bytes(le)))
    };
    let (start, stop, value) = match wire_type {
        VARINT => {
            let (value, stop) = varint(buf, next, end)?;
            (next, stop, value)
        }
        FIXED64 => {
            let (stop, value) = fixed(8)?;
            (next, stop, value)
        }
        FIXED32 => {
            let (stop, value) = fixed(4)?;
            (next, stop, value)
        }
        LEN => {
            let (len, start) = varint(buf, next, end)?;
            match usize::try_from(len).ok().and_then(|len| start.checked_add(len)) {
                Some(stop) if stop <= end => (start, stop, len),
                _ => return Err(fail(next, WireProblem::Truncated)),
            }
        }
        START_GROUP => (next, skip_group(buf, tag, next, end, RECURSION_LIMIT)?, 0),
        _ => return Err(fail(at, WireProblem::Group)),
    };
    Ok(Field { key_at: at, tag, wire_type, start, stop, value })
}

/// Skips the rest of group `tag` from `at`: the offset after its end key.
fn skip_group(buf: &[u8], tag: u32, mut at: usize, end: usize, depth: u32) -> Result<usize, WireError> {
    if depth == 0 {
        return Err(fail(at, WireProblem::Group));
    }
    loop {
        let (inner, wire_type, next) = key(buf, at, end)?;
        at = match wire_type {
            END_GROUP if inner == tag => return Ok(next),
            END_GROUP => return Err(fail(at, WireProblem::Group)),
            START_GROUP => skip_group(buf, inner, next, end, depth - 1)?,
            _ => field(buf, at, end)?.stop,
        };
    }
}

/// Checks that `f` has the schema's wire type.
#[inline]
fn expect(f: &Field, expected: u8) -> Result<(), WireError> {
    if f.wire_type == expected {
        Ok(())
    } else {
        Err(fail(f.key_at, WireProblem::WireType { field: f.tag, found: f.wire_type, expected }))
    }
}

/// Checks that string field `f` is UTF-8.
fn utf8<'a>(buf: &'a [u8], f: &Field) -> Result<&'a str, WireError> {
    buf.get(f.start..f.stop).and_then(|b| std::str::from_utf8(b).ok()).ok_or(fail(f.key_at, WireProblem::Utf8(f.tag)))
}

/// What the walk meets, in request order.
enum RequestPart<'a, 'b> {
    /// A `ResourceSpans`'s resource and schema URL, as the `resources` table keeps them.
    Resource(&'b [u8]),
    /// A `ScopeSpans`'s scope and schema URL, as the `scopes` table keeps them.
    Scope(&'b [u8]),
    /// A span (of the last resource and scope met).
    Span(SpanRow<'a>),
}

/// One span's columns, read in place, and where it is.
#[derive(Debug, Clone, Copy)]
struct SpanRow<'a> {
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent_id: &'a [u8],
    name: &'a str,
    kind: i32,
    start: u64,
    end: u64,
    status_code: i32,
    /// The span's bytes (its content) in the request.
    at: usize,
    stop: usize,
}

/// Walks an `ExportTraceServiceRequest`, calling `on` for each resource, scope and span;
/// returns the number of spans.
fn walk<'a, E: From<WireError>>(
    buf: &'a [u8],
    mut on: impl FnMut(RequestPart<'a, '_>) -> Result<(), E>,
) -> Result<usize, E> {
    let mut spans = 0;
    let mut blob = Vec::with_capacity(256);
    let mut at = 0;
    while at < buf.len() {
        let f = field(buf, at, buf.len())?;
        at = f.stop;
        if f.tag == 1 {
            expect(&f, LEN)?;
            spans += list(List::Resource, buf, f.start, f.stop, &mut blob, &mut on)?;
        }
    }
    Ok(spans)
}

/// Writes a list's part to keep (`ResourceSpans` or `ScopeSpans` without its spans) into
/// `blob`: its field-1 messages as they came (an empty one when there is none, as prost
/// encodes an absent resource or scope), then its schema URL (the last one).
fn kept_part(buf: &[u8], mut at: usize, end: usize, blob: &mut Vec<u8>) -> Result<(), WireError> {
    blob.clear();
    let mut schema_url = None;
    while at < end {
        let f = field(buf, at, end)?;
        at = f.stop;
        match f.tag {
            1 => {
                expect(&f, LEN)?;
                blob.extend_from_slice(&buf[f.key_at..f.stop]);
            }
            2 => expect(&f, LEN)?,
            3 => {
                expect(&f, LEN)?;
                utf8(buf, &f)?;
                schema_url = Some(f);
            }
            _ => {}
        }
    }
    if blob.is_empty() {
        blob.extend_from_slice(&[0x0a, 0x00]);
    }
    if let Some(f) = schema_url.filter(|f| f.stop > f.start) {
        blob.push(0x1a);
        put_varint((f.stop - f.start) as u64, blob);
        blob.extend_from_slice(&buf[f.start..f.stop]);
    }
    Ok(())
}

/// The level of a list in the request: a `ResourceSpans` holds `ScopeSpans` (field 2), a
/// `ScopeSpans` holds spans (field 2). Both keep their field 1 (the resource, the scope)
/// and schema URL (field 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    Resource,
    Scope,
}

/// Walks the list (`ResourceSpans` or `ScopeSpans`) in `at..end`: its kept part to `on`,
/// then its field-2 elements; returns the number of spans.
fn list<'a, E: From<WireError>>(
    list: List,
    buf: &'a [u8],
    at: usize,
    end: usize,
    blob: &mut Vec<u8>,
    on: &mut impl FnMut(RequestPart<'a, '_>) -> Result<(), E>,
) -> Result<usize, E> {
    kept_part(buf, at, end, blob)?;
    on(match list {
        List::Resource => RequestPart::Resource(blob),
        List::Scope => RequestPart::Scope(blob),
    })?;
    let mut spans = 0;
    let mut at = at;
    while at < end {
        let f = field(buf, at, end)?;
        at = f.stop;
        if f.tag == 2 {
            spans += match list {
                List::Resource => self::list(List::Scope, buf, f.start, f.stop, blob, on)?,
                List::Scope => {
                    on(RequestPart::Span(span(buf, f.start, f.stop)?))?;
                    1
                }
            };
        }
    }
    Ok(spans)
}

/// The columns of the span in `at..end`, its fields checked.
fn span(buf: &[u8], at: usize, end: usize) -> Result<SpanRow<'_>, WireError> {
    let mut row = SpanRow {
        trace_id: &[],
        span_id: &[],
        parent_id: &[],
        name: "",
        kind: 0,
        start: 0,
        end: 0,
        status_code: status::UNSET,
        at,
        stop: end,
    };
    let mut next = at;
    while next < end {
        let f = field(buf, next, end)?;
        next = f.stop;
        let bytes = || &buf[f.start..f.stop];
        match f.tag {
            1 | 2 | 4 => {
                expect(&f, LEN)?;
                match f.tag {
                    1 => row.trace_id = bytes(),
                    2 => row.span_id = bytes(),
                    _ => row.parent_id = bytes(),
                }
            }
            5 => {
                expect(&f, LEN)?;
                row.name = utf8(buf, &f)?;
            }
            3 | 9 | 11 | 13 => expect(&f, LEN)?,
            // prost reads an `int32` (an enum) as the varint's low 32 bits.
            #[allow(clippy::cast_possible_truncation)]
            6 => {
                expect(&f, VARINT)?;
                row.kind = f.value as i32;
            }
            10 | 12 | 14 => expect(&f, VARINT)?,
            7 | 8 => {
                expect(&f, FIXED64)?;
                if f.tag == 7 {
                    row.start = f.value;
                } else {
                    row.end = f.value;
                }
            }
            15 => {
                expect(&f, LEN)?;
                let mut inner = f.start;
                while inner < f.stop {
                    let g = field(buf, inner, f.stop)?;
                    inner = g.stop;
                    match g.tag {
                        2 => {
                            expect(&g, LEN)?;
                            utf8(buf, &g)?;
                        }
                        #[allow(clippy::cast_possible_truncation)]
                        3 => {
                            expect(&g, VARINT)?;
                            row.status_code = g.value as i32;
                        }
                        _ => {}
                    }
                }
            }
            16 => expect(&f, FIXED32)?,
            _ => {}
        }
    }
    Ok(row)
}

/// Whether a time stays in the body: the column (an `i64`) cannot give it back.
fn kept(t: u64) -> bool {
    i64::try_from(t).is_err()
}

/// The column of a time.
fn column(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

#[allow(clippy::cast_possible_truncation)]
fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl SpanRow<'_> {
    /// The span's body appended to `out`: its fields but the columns', as they came, the status
    /// without its code, a time only when its column cannot give it back. The fields were
    /// checked by [`span`].
    #[allow(clippy::cast_possible_truncation)]
    fn body(&self, buf: &[u8], out: &mut Vec<u8>) {
        let (keep_start, keep_end) = (kept(self.start), kept(self.end));
        let mut at = self.at;
        while at < self.stop {
            let Ok(f) = field(buf, at, self.stop) else { return };
            at = f.stop;
            match f.tag {
                3 | 9..=14 | 16 => out.extend_from_slice(&buf[f.key_at..f.stop]),
                7 if keep_start => out.extend_from_slice(&buf[f.key_at..f.stop]),
                8 if keep_end => out.extend_from_slice(&buf[f.key_at..f.stop]),
                15 => {
                    // The status without its code (a column): its message, if sent.
                    out.push(0x7a);
                    let len_at = out.len();
                    out.push(0);
                    let mut inner = f.start;
                    while inner < f.stop {
                        let Ok(g) = field(buf, inner, f.stop) else { break };
                        inner = g.stop;
                        if g.tag == 2 {
                            out.extend_from_slice(&buf[g.key_at..g.stop]);
                        }
                    }
                    let len = out.len() - len_at - 1;
                    if len >= 0x80 {
                        let mut prefix = Vec::with_capacity(10);
                        put_varint(len as u64, &mut prefix);
                        out.splice(len_at..=len_at, prefix);
                    } else {
                        out[len_at] = len as u8;
                    }
                }
                _ => {}
            }
        }
    }
}

/// A checked export request laid out for the writer ([`rows`]): its resources, scopes and
/// spans in request order, each span's columns as ranges of the request's bytes and its
/// body built.
#[derive(Debug)]
pub(crate) struct Rows {
    bytes: Bytes,
    /// Resource and scope rows' bodies, back to back.
    parts: Vec<u8>,
    /// Span bodies, back to back.
    bodies: Vec<u8>,
    entries: Vec<Entry>,
    spans: usize,
}

#[derive(Debug)]
enum Entry {
    /// A resource row (`parts[range]`) and its `service.name`.
    Resource(Range<usize>, String),
    /// A scope row (`parts[range]`).
    Scope(Range<usize>),
    /// A span of the last resource and scope.
    Span(Row),
}

/// A span's columns (ranges of the request) and body (a range of [`Rows::bodies`]).
#[derive(Debug)]
struct Row {
    trace_id: Range<usize>,
    span_id: Range<usize>,
    parent_id: Range<usize>,
    name: Range<usize>,
    kind: i32,
    start: u64,
    end: u64,
    status_code: i32,
    body: Range<usize>,
}

impl Rows {
    /// How many spans.
    pub(crate) fn spans(&self) -> usize {
        self.spans
    }
}

/// The offsets of `part` in `whole` (a slice of it).
fn range_in(whole: &[u8], part: &[u8]) -> Range<usize> {
    if part.is_empty() {
        return 0..0;
    }
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    start..start + part.len()
}

/// Checks `bytes` (as [`check`]) and lays their rows out for the writer.
pub(crate) fn rows(bytes: Bytes) -> Result<Rows, WireError> {
    use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
    let mut parts = Vec::new();
    let mut bodies = Vec::with_capacity(bytes.len());
    let mut entries = Vec::new();
    let spans = walk(&bytes, |item| -> Result<(), WireError> {
        match item {
            RequestPart::Resource(blob) => {
                // Decoded once per resource list, for its `service.name` column.
                let service = ResourceSpans::decode(blob)
                    .map(|rs| service_of(&rs.resource.unwrap_or_default()))
                    .unwrap_or_default();
                let at = parts.len();
                parts.extend_from_slice(blob);
                entries.push(Entry::Resource(at..parts.len(), service));
            }
            RequestPart::Scope(blob) => {
                let at = parts.len();
                parts.extend_from_slice(blob);
                entries.push(Entry::Scope(at..parts.len()));
            }
            RequestPart::Span(row) => {
                let at = bodies.len();
                row.body(&bytes, &mut bodies);
                entries.push(Entry::Span(Row {
                    trace_id: range_in(&bytes, row.trace_id),
                    span_id: range_in(&bytes, row.span_id),
                    parent_id: range_in(&bytes, row.parent_id),
                    name: range_in(&bytes, row.name.as_bytes()),
                    kind: row.kind,
                    start: row.start,
                    end: row.end,
                    status_code: row.status_code,
                    body: at..bodies.len(),
                }));
            }
        }
        Ok(())
    })?;
    Ok(Rows { bytes, parts, bodies, entries, spans })
}

/// Writes the rows of a request laid out by [`rows`], with the statement and tables of
/// [`crate::spans::insert_request`].
pub(crate) fn insert_encoded(tx: &Connection, rows: &Rows, interned: &mut Interned) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO spans (trace_id, span_id, parent_id, name, start_ns, end_ns, kind, status_code, resource_id, scope_id, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let (mut resource_id, mut scope_id) = (0i64, 0i64);
    let bytes = |r: &Range<usize>| rows.bytes.get(r.clone()).unwrap_or_default();
    for entry in &rows.entries {
        match entry {
            Entry::Resource(blob, service) => {
                resource_id = interned.resource(tx, rows.parts.get(blob.clone()).unwrap_or_default(), service)?;
            }
            Entry::Scope(blob) => scope_id = interned.scope(tx, rows.parts.get(blob.clone()).unwrap_or_default())?,
            Entry::Span(row) => {
                let parent =
                    (!row.parent_id.is_empty()).then(|| ToSqlOutput::Borrowed(ValueRef::Blob(bytes(&row.parent_id))));
                stmt.execute(rusqlite::params![
                    ToSqlOutput::Borrowed(ValueRef::Blob(bytes(&row.trace_id))),
                    ToSqlOutput::Borrowed(ValueRef::Blob(bytes(&row.span_id))),
                    parent,
                    ToSqlOutput::Borrowed(ValueRef::Text(bytes(&row.name))),
                    column(row.start),
                    column(row.end),
                    row.kind,
                    row.status_code,
                    resource_id,
                    scope_id,
                    ToSqlOutput::Borrowed(ValueRef::Blob(rows.bodies.get(row.body.clone()).unwrap_or_default())),
                ])?;
            }
        }
    }
    Ok(())
}
