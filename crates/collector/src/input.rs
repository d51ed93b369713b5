//! Reading traces users already have: OTLP JSON (as the OpenTelemetry Collector's file
//! exporter writes it) and Jaeger JSON (the Jaeger UI's download, the query API's answer).
//!
//! Both give [`SpanRecord`]s made by [`SpanRecord::from_otlp`], so the analysis, the store
//! and the writers see one model whatever the source. A Jaeger span becomes the OTLP span
//! the OpenTelemetry Collector's Jaeger translator would make of it, and the inverse of
//! [`crate::jaeger`]'s export: typed tags become typed attributes, `span.kind` the kind,
//! `otel.status_code`/`otel.status_description` (or `error=true`) the status, logs events
//! (`event` their name), the first `CHILD_OF` reference in the span's trace the parent and
//! the other references links (`opentracing.ref_type=child_of` on a `CHILD_OF` one),
//! process tags resource attributes (`serviceName` as `service.name`),
//! `otel.scope.name`/`otel.scope.version` (or `otel.library.*`) the scope, `w3c.tracestate`
//! the trace state, `otel.dropped_*_count` the dropped counts, flag 1 the sampled flag, and
//! microseconds nanoseconds. A span a clock-skew adjuster moved (Jaeger's own, or
//! tracewire's export) says so in `warnings` (`This span's timestamps were adjusted by
//! -5ms`); it is read at the times its service recorded, so that the analysis corrects it
//! once. What Jaeger's model has no place for stays lost: schema URLs, link attributes
//! and trace states, scope attributes (they come back as span attributes), nanoseconds.
//!
//! [`stream_otlp_json`] and [`stream_jaeger_json`] read a file piece by piece, handing
//! spans on as they are read (a request of JSON lines, a `resourceSpans` element of a long
//! request, a Jaeger trace), so that memory holds one piece, never the file; the `read_*`
//! and `parse_*` functions collect what they hand on. Files may be gzip-compressed
//! (inflated as they are read). Errors name the file, the line where the faulty request or
//! document starts, and the field
//! (`resourceSpans[0].scopeSpans[0].spans[3].traceId: "xyz" is not a hex id`), or, for
//! JSON that does not parse, the line and column of the fault in the file; no input makes
//! these functions panic.
//!
//! ```
//! use tracewire_collector::input::{parse_jaeger_json, parse_otlp_json};
//!
//! let otlp = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
//!   "scopeSpans":[{"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331",
//!   "name":"GET /","kind":2,"startTimeUnixNano":"1000","endTimeUnixNano":"5000","status":{"code":2}}]}]}]}"#;
//! let spans = parse_otlp_json(otlp, "traces.jsonl".as_ref()).unwrap();
//! assert_eq!((spans[0].service.as_str(), spans[0].kind, spans[0].status_code), ("api", 2, 2));
//!
//! let jaeger = br#"{"data":[{"traceID":"0af7651916cd43dd8448eb211c80319c","spans":[{
//!   "traceID":"0af7651916cd43dd8448eb211c80319c","spanID":"b7ad6b7169203331","operationName":"GET /",
//!   "references":[],"startTime":1,"duration":4,"processID":"p1",
//!   "tags":[{"key":"span.kind","type":"string","value":"server"},{"key":"error","type":"bool","value":true}],
//!   "logs":[]}],"processes":{"p1":{"serviceName":"api","tags":[]}}}]}"#;
//! let from_jaeger = parse_jaeger_json(jaeger, "trace.json".as_ref()).unwrap();
//! assert_eq!(from_jaeger[0].to_otlp().span, spans[0].to_otlp().span);
//!
//! let e = parse_otlp_json(b"{\"resourceSpans\":[]}\n{\"resourceSpans\":[{\"scopeSpans\":7}]}", "t.jsonl".as_ref());
//! assert_eq!(e.unwrap_err().to_string(), "t.jsonl:2: resourceSpans[0].scopeSpans: expected an array, found a number");
//! ```

use std::collections::HashMap;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use tracewire_store::{OtlpSpan, SpanRecord, kind, status};

use crate::otlp_json::{
    At, DecodeError, R, fail, field, kind_of, list, object, read_bool, read_bytes, read_f64, read_i64, read_string,
    read_u32, read_u64, with,
};

/// Reading a trace file failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The file could not be read (or inflated).
    #[error("{}: {error}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{}: not valid JSON: {} at line {line} column {column}", file.display(), without_position(error))]
    Json {
        /// The file.
        file: PathBuf,
        /// The line (from 1) of the fault.
        line: usize,
        /// Its column (from 1, in bytes; 0 at the end of the file after a newline).
        column: usize,
        /// The parser's error (its own line and column count from the value it was reading).
        error: serde_json::Error,
    },
    /// A request or trace in the file is not what the format allows.
    #[error("{}:{line}: {error}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The line (from 1) where the JSON value holding the fault starts.
        line: usize,
        /// The field and what is wrong with it.
        error: DecodeError,
    },
    /// The file holds something other than the expected format.
    #[error("{}:{line}: this is {found}, not {expected}", file.display())]
    WrongFormat {
        /// The file.
        file: PathBuf,
        /// The line where the JSON value starts.
        line: usize,
        /// What the file holds (`"Jaeger JSON"`, `"OTLP JSON logs"`, `"zstd-compressed data"`, ...).
        found: &'static str,
        /// What was expected (`"OTLP JSON traces"` or `"Jaeger JSON"`).
        expected: &'static str,
    },
}

/// The spans of an OTLP JSON file: `ExportTraceServiceRequest`s (or `TracesData`, the same
/// JSON), one per line as the OpenTelemetry Collector's file exporter writes them, or
/// pretty-printed over several lines, one or more per file.
///
/// The whole file is in memory; [`stream_otlp_json`] reads it piece by piece instead.
///
/// # Errors
///
/// [`InputError`]: unreadable file, invalid JSON, a field the encoding does not allow, or
/// another format (Jaeger JSON, OTLP logs or metrics).
pub fn read_otlp_json(path: impl AsRef<Path>) -> Result<Vec<SpanRecord>, InputError> {
    let mut out = Vec::new();
    stream_otlp_json(path, |spans| {
        out.extend(spans);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// [`read_otlp_json`] from a reader; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`read_otlp_json`].
pub fn read_otlp_json_from(reader: impl Read, name: &Path) -> Result<Vec<SpanRecord>, InputError> {
    let mut out = Vec::new();
    stream_otlp_json_from(reader, name, |spans| {
        out.extend(spans);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// [`read_otlp_json`] of the bytes of a file; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`read_otlp_json`].
pub fn parse_otlp_json(bytes: &[u8], name: &Path) -> Result<Vec<SpanRecord>, InputError> {
    read_otlp_json_from(bytes, name)
}

/// Reads an OTLP JSON file (what [`read_otlp_json`] reads) piece by piece, handing the
/// spans on as they are read: `each` gets the spans of one request (a line of JSON lines),
/// or, for a request too long to hold at once (a line over [`LINE_BYTES`], or a request
/// spread over several lines), of one of its `resourceSpans` at a time. Memory holds one
/// such piece, never the file; the spans of a trace may come in several pieces. `each`
/// returning [`ControlFlow::Break`] stops the reading. Returns the number of spans handed on.
///
/// ```
/// use std::ops::ControlFlow;
/// use tracewire_collector::input::stream_otlp_json_from;
///
/// let line = |span: &str| format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"{span}"}}]}}]}}]}}"#);
/// let file = format!("{}\n{}\n", line("b7ad6b7169203331"), line("00f067aa0ba902b7"));
/// let mut pieces = Vec::new();
/// let n = stream_otlp_json_from(file.as_bytes(), "t.jsonl".as_ref(), |spans| {
///     pieces.push(spans.len());
///     ControlFlow::Continue(())
/// })
/// .unwrap();
/// assert_eq!((n, pieces), (2, vec![1, 1]));
/// ```
///
/// # Errors
///
/// As [`read_otlp_json`]; errors of the JSON syntax give the line and column
/// ([`InputError::Json`]), errors of content the line where the request starts and the
/// field. Spans handed on before an error stay handed on.
pub fn stream_otlp_json(
    path: impl AsRef<Path>,
    each: impl FnMut(Vec<SpanRecord>) -> ControlFlow<()>,
) -> Result<usize, InputError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|error| InputError::Io { file: path.to_owned(), error })?;
    stream_otlp_json_from(file, path, each)
}

/// [`stream_otlp_json`] from a reader; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`stream_otlp_json`].
pub fn stream_otlp_json_from(
    reader: impl Read,
    name: &Path,
    mut each: impl FnMut(Vec<SpanRecord>) -> ControlFlow<()>,
) -> Result<usize, InputError> {
    let mut ctx = Ctx { name, line: 1, each: &mut each, error: None, stopped: false, spans: 0 };
    read_values(reader, Format::Otlp, &mut ctx)?;
    Ok(ctx.spans)
}

/// The spans of a Jaeger JSON file: what the Jaeger UI downloads and the query API answers
/// (`{"data":[{"traceID", "spans", "processes"}, ...]}`), a bare trace object, or an array
/// of traces.
///
/// The whole file is in memory; [`stream_jaeger_json`] reads it trace by trace instead.
///
/// # Errors
///
/// [`InputError`]: unreadable file, invalid JSON, a span or tag that is not Jaeger's model
/// (an id that is not hex, a `processID` missing from `processes`, ...), or another format.
pub fn read_jaeger_json(path: impl AsRef<Path>) -> Result<Vec<SpanRecord>, InputError> {
    let mut out = Vec::new();
    stream_jaeger_json(path, |spans| {
        out.extend(spans);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// [`read_jaeger_json`] from a reader; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`read_jaeger_json`].
pub fn read_jaeger_json_from(reader: impl Read, name: &Path) -> Result<Vec<SpanRecord>, InputError> {
    let mut out = Vec::new();
    stream_jaeger_json_from(reader, name, |spans| {
        out.extend(spans);
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// [`read_jaeger_json`] of the bytes of a file; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`read_jaeger_json`].
pub fn parse_jaeger_json(bytes: &[u8], name: &Path) -> Result<Vec<SpanRecord>, InputError> {
    read_jaeger_json_from(bytes, name)
}

/// Reads a Jaeger JSON file (what [`read_jaeger_json`] reads) trace by trace: `each` gets
/// the spans of one trace object of `data` (or of the array, or the bare trace) as soon as
/// it is read, so memory holds one trace, never the file. A trace object's spans normally
/// share its trace id; a file may hold a trace in more than one object. `each` returning
/// [`ControlFlow::Break`] stops the reading. Returns the number of spans handed on.
///
/// ```
/// use std::ops::ControlFlow;
/// use tracewire_collector::input::stream_jaeger_json_from;
///
/// let trace = |id: &str| format!(r#"{{"traceID":"{id}","spans":[{{"traceID":"{id}","spanID":"b7ad6b7169203331","operationName":"x","startTime":1,"duration":2}}]}}"#);
/// let file = format!(r#"{{"data":[{},{}]}}"#, trace("01"), trace("02"));
/// let mut traces = Vec::new();
/// stream_jaeger_json_from(file.as_bytes(), "t.json".as_ref(), |spans| {
///     traces.push(spans[0].trace_id.clone());
///     ControlFlow::Continue(())
/// })
/// .unwrap();
/// assert_eq!(traces, ["00000000000000000000000000000001", "00000000000000000000000000000002"]);
/// ```
///
/// # Errors
///
/// As [`read_jaeger_json`]; as [`stream_otlp_json`] for where they point.
pub fn stream_jaeger_json(
    path: impl AsRef<Path>,
    each: impl FnMut(Vec<SpanRecord>) -> ControlFlow<()>,
) -> Result<usize, InputError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|error| InputError::Io { file: path.to_owned(), error })?;
    stream_jaeger_json_from(file, path, each)
}

/// [`stream_jaeger_json`] from a reader; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`stream_jaeger_json`].
pub fn stream_jaeger_json_from(
    reader: impl Read,
    name: &Path,
    mut each: impl FnMut(Vec<SpanRecord>) -> ControlFlow<()>,
) -> Result<usize, InputError> {
    let mut ctx = Ctx { name, line: 1, each: &mut each, error: None, stopped: false, spans: 0 };
    read_values(reader, Format::Jaeger, &mut ctx)?;
    Ok(ctx.spans)
}

// ---------------------------------------------------------------------------------------
// Reading JSON values one at a time.

/// The longest line read as one JSON value at once; a value on a longer line, or over
/// several lines, is read piece by piece (its `resourceSpans` or `data` one at a time).
pub const LINE_BYTES: usize = 1 << 20;

/// Bytes read from the file at a time.
const CHUNK: usize = 64 * 1024;

/// A reader with its own buffer that knows the line and column it is at.
struct Src<R> {
    inner: R,
    buf: Vec<u8>,
    /// The next byte to hand out, in `buf`.
    pos: usize,
    eof: bool,
    /// The line (from 1) of `buf[pos]`.
    line: usize,
    /// The offset in the file of `buf[0]`, and of the start of the current line.
    base: u64,
    line_start: u64,
}

impl<R: Read> Src<R> {
    fn new(inner: R) -> Self {
        Self { inner, buf: Vec::new(), pos: 0, eof: false, line: 1, base: 0, line_start: 0 }
    }

    /// Reads more bytes after those buffered (dropping those handed out); false at the end.
    fn more(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + CHUNK, 0);
        loop {
            match self.inner.read(&mut self.buf[old..]) {
                Ok(n) => {
                    self.buf.truncate(old + n);
                    self.eof = n == 0;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
    }

    /// Hands out `n` buffered bytes, counting lines.
    fn advance(&mut self, n: usize) {
        for (i, &b) in self.buf[self.pos..self.pos + n].iter().enumerate() {
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.base + (self.pos + i + 1) as u64;
            }
        }
        self.pos += n;
    }

    /// Bytes before `buf[pos]` on its line.
    fn column(&self) -> usize {
        usize::try_from(self.base + self.pos as u64 - self.line_start).unwrap_or(usize::MAX)
    }
}

impl<R: Read> Read for Src<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() && !self.more()? {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.advance(n);
        Ok(n)
    }
}

/// What the readers share while reading one file.
struct Ctx<'a, F> {
    name: &'a Path,
    /// The line where the value being read starts.
    line: usize,
    each: &'a mut F,
    /// The error that stopped the reading (the JSON parser's own error is then only a
    /// way out), or `None` when `each` stopped it or the parser failed.
    error: Option<InputError>,
    /// Whether `each` asked to stop.
    stopped: bool,
    /// Spans handed on.
    spans: usize,
}

/// Why a value could not be read to its end.
enum Stop {
    /// `each` asked to stop.
    Asked,
    Failed(InputError),
}

impl<F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> Ctx<'_, F> {
    fn emit(&mut self, spans: Vec<SpanRecord>) -> Result<(), Stop> {
        if spans.is_empty() {
            return Ok(());
        }
        self.spans += spans.len();
        match (self.each)(spans) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => {
                self.stopped = true;
                Err(Stop::Asked)
            }
        }
    }

    fn invalid(&self, error: DecodeError) -> Stop {
        Stop::Failed(InputError::Invalid { file: self.name.to_owned(), line: self.line, error })
    }

    fn wrong(&self, found: &'static str, expected: &'static str) -> Stop {
        Stop::Failed(InputError::WrongFormat { file: self.name.to_owned(), line: self.line, found, expected })
    }

    /// Ends a streamed read with `stop`: kept for the caller, the parser given a way out.
    fn stop<E: serde::de::Error>(&mut self, stop: Stop) -> E {
        if let Stop::Failed(e) = stop {
            self.error = Some(e);
        }
        E::custom("stopped")
    }

    /// One whole OTLP JSON request.
    fn otlp_value(&mut self, value: Value) -> Result<(), Stop> {
        if let Value::Object(o) = &value
            && field(o, "resourceSpans", "resource_spans").is_none()
            && let Some(found) = o.keys().find_map(|k| other_signal(k))
        {
            return Err(self.wrong(found, "OTLP JSON traces"));
        }
        let request = crate::otlp_json::decode(&value).map_err(|e| self.invalid(e))?;
        drop(value);
        self.emit(SpanRecord::all_of(&request))
    }

    /// One whole Jaeger JSON value: `{"data": [...]}`, an array of traces or a trace.
    fn jaeger_value(&mut self, value: &Value) -> Result<(), Stop> {
        let root = At::Root;
        match value {
            Value::Object(o) if o.contains_key("resourceSpans") || o.contains_key("resource_spans") => {
                Err(self.wrong("OTLP JSON", "Jaeger JSON"))
            }
            Value::Object(o) if o.contains_key("data") => match o.get("data") {
                None | Some(Value::Null) => Ok(()),
                Some(Value::Array(traces)) => {
                    let at = At::Key(&root, "data");
                    traces.iter().enumerate().try_for_each(|(i, v)| self.jaeger_trace(v, &At::Index(&at, i)))
                }
                Some(other) => Err(self.invalid(decode_error(
                    &At::Key(&root, "data"),
                    format!("expected an array, found {}", kind_of(other)),
                ))),
            },
            Value::Array(traces) => {
                traces.iter().enumerate().try_for_each(|(i, v)| self.jaeger_trace(v, &At::Index(&root, i)))
            }
            Value::Object(_) => self.jaeger_trace(value, &root),
            other => Err(self.invalid(not_jaeger(kind_of(other)))),
        }
    }

    /// Element `i` of an OTLP request's `resourceSpans`.
    fn otlp_resource_spans(&mut self, v: Value, i: usize) -> Result<(), Stop> {
        let list = At::Key(&At::Root, "resourceSpans");
        let rs = crate::otlp_json::read_resource_spans(&v, &At::Index(&list, i)).map_err(|e| self.invalid(e))?;
        drop(v);
        self.emit(SpanRecord::all_of(&ExportTraceServiceRequest { resource_spans: vec![rs] }))
    }

    fn jaeger_trace(&mut self, v: &Value, at: &At<'_>) -> Result<(), Stop> {
        let mut spans = Vec::new();
        jaeger_trace(v, at, &mut spans).map_err(|e| self.invalid(e))?;
        self.emit(spans)
    }
}

/// The format a top-level key other than `resourceSpans` says the file holds.
fn other_signal(key: &str) -> Option<&'static str> {
    Some(match key {
        "resourceLogs" => "OTLP JSON logs",
        "resourceMetrics" => "OTLP JSON metrics",
        "resourceProfiles" => "OTLP JSON profiles",
        "data" | "traceID" => "Jaeger JSON",
        _ => return None,
    })
}

fn decode_error(at: &At<'_>, problem: String) -> DecodeError {
    DecodeError { at: at.to_string(), problem }
}

fn not_jaeger(found: &str) -> DecodeError {
    decode_error(&At::Root, format!("expected Jaeger JSON ({{\"data\":[...]}} or a trace), found {found}"))
}

/// A JSON syntax error of a value that starts at `line` and `column` (bytes before it on
/// its line), which the parser counts from there.
fn syntax_error(file: &Path, error: serde_json::Error, line: usize, column: usize) -> InputError {
    if error.is_io() {
        return InputError::Io { file: file.to_owned(), error: error.into() };
    }
    let (l, c) = (error.line(), error.column());
    let (line, column) = if l <= 1 { (line, column + c) } else { (line + l - 1, c) };
    InputError::Json { file: file.to_owned(), line, column, error }
}

/// The parser's message without its position (given in [`InputError::Json`] for the file).
fn without_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(i) if error.line() > 0 => text[..i].to_owned(),
        _ => text,
    }
}

/// Reads the JSON values of `reader` one after another (whitespace between them: JSON
/// lines or pretty-printed values), inflating gzip. A value whose line fits in
/// [`LINE_BYTES`] is parsed whole and given to `whole`; a longer one is given to `stream`,
/// which reads it from the parser piece by piece.
fn read_values<R: Read, F>(reader: R, format: Format, ctx: &mut Ctx<'_, F>) -> Result<(), InputError>
where
    F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>,
{
    let name = ctx.name;
    let io = |error| InputError::Io { file: name.to_owned(), error };
    let mut head = Src::new(reader);
    while head.buf.len() < 4 && head.more().map_err(io)? {}
    let reader: Box<dyn Read + '_> = if head.buf.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(head))
    } else if head.buf.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(InputError::WrongFormat {
            file: name.to_owned(),
            line: 1,
            found: "zstd-compressed data (decompress it first: zstd -d)",
            expected: format.expected(),
        });
    } else {
        Box::new(head)
    };
    let mut src = Src::new(reader);
    // A UTF-8 byte order mark is not JSON; editors on some systems write one.
    while src.buf.len() < 3 && src.more().map_err(io)? {}
    if src.buf.starts_with(b"\xef\xbb\xbf") {
        src.pos = 3;
    }
    let mut piecewise = false;
    loop {
        // To the next value.
        loop {
            let ws = src.buf[src.pos..].iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')).count();
            src.advance(ws);
            if src.pos < src.buf.len() {
                break;
            }
            if !src.more().map_err(io)? {
                return Ok(());
            }
        }
        let (line, column) = (src.line, src.column());
        ctx.line = line;
        // Its line, when it fits.
        let mut scanned = 0;
        let end = loop {
            if piecewise {
                break None;
            }
            let from = src.pos + scanned;
            if let Some(i) = src.buf[from..].iter().position(|&b| b == b'\n') {
                break Some(from + i);
            }
            scanned = src.buf.len() - src.pos;
            if scanned > LINE_BYTES {
                break None;
            }
            if !src.more().map_err(io)? {
                break Some(src.buf.len());
            }
        };
        if let Some(end) = end {
            let mut values = serde_json::Deserializer::from_slice(&src.buf[src.pos..end]).into_iter::<Value>();
            let mut done = end - src.pos;
            loop {
                let at = values.byte_offset();
                match values.next() {
                    None => break,
                    Some(Ok(value)) => match format.whole(ctx, value) {
                        Ok(()) => {}
                        Err(Stop::Asked) => return Ok(()),
                        Err(Stop::Failed(e)) => return Err(e),
                    },
                    // The value goes on past this line: read it piece by piece.
                    Some(Err(e)) if e.is_eof() => {
                        done = at;
                        piecewise = true;
                        break;
                    }
                    Some(Err(e)) => return Err(syntax_error(name, e, line, column)),
                }
            }
            src.advance(done);
            continue;
        }
        piecewise = false;
        let mut de = serde_json::Deserializer::from_reader(&mut src);
        let result = match format {
            Format::Otlp => OtlpRequest(&mut *ctx).deserialize(&mut de),
            Format::Jaeger => JaegerDocument(&mut *ctx).deserialize(&mut de),
        };
        drop(de);
        if let Some(e) = ctx.error.take() {
            return Err(e);
        }
        if ctx.stopped {
            return Ok(());
        }
        result.map_err(|e| syntax_error(name, e, line, column))?;
    }
}

/// The two formats [`read_values`] reads.
#[derive(Clone, Copy)]
enum Format {
    Otlp,
    Jaeger,
}

impl Format {
    fn expected(self) -> &'static str {
        match self {
            Self::Otlp => "OTLP JSON traces",
            Self::Jaeger => "Jaeger JSON",
        }
    }

    fn whole<F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>>(
        self,
        ctx: &mut Ctx<'_, F>,
        value: Value,
    ) -> Result<(), Stop> {
        match self {
            Self::Otlp => ctx.otlp_value(value),
            Self::Jaeger => ctx.jaeger_value(&value),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading a value piece by piece: visitors that hand on each element of `resourceSpans`
// (OTLP) or `data` (Jaeger) as it is parsed.

/// The `visit_*` methods of the JSON values a visitor does not expect: `self.found(kind)`.
macro_rules! unexpected {
    () => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
            self.found("a boolean")
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
            self.found("a number")
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
            self.found("a number")
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
            self.found("a number")
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
            self.found("a string")
        }
    };
}

/// One OTLP JSON request, its `resourceSpans` handed on one at a time.
struct OtlpRequest<'c, 'a, F>(&'c mut Ctx<'a, F>);

impl<F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> OtlpRequest<'_, '_, F> {
    fn found<E: serde::de::Error>(self, kind: &str) -> Result<(), E> {
        let stop = self.0.invalid(decode_error(&At::Root, format!("expected an object, found {kind}")));
        Err(self.0.stop(stop))
    }
}

impl<'de, F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> DeserializeSeed<'de> for OtlpRequest<'_, '_, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> Visitor<'de> for OtlpRequest<'_, '_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an OTLP JSON request")
    }

    unexpected!();

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.found("null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.found("an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        let (mut spans, mut other) = (false, None);
        while let Some(key) = map.next_key::<String>()? {
            if key == "resourceSpans" || key == "resource_spans" {
                if spans {
                    let at = At::Key(&At::Root, "resourceSpans");
                    let stop = ctx.invalid(decode_error(&at, "given twice (resourceSpans and resource_spans)".into()));
                    return Err(ctx.stop(stop));
                }
                spans = map.next_value_seed(List { ctx: &mut *ctx, of: Of::ResourceSpans })?;
            } else {
                other = other.or_else(|| other_signal(&key));
                map.next_value::<IgnoredAny>()?;
            }
        }
        if let (false, Some(found)) = (spans, other) {
            let stop = ctx.wrong(found, "OTLP JSON traces");
            return Err(ctx.stop(stop));
        }
        Ok(())
    }
}

/// One Jaeger JSON value (`{"data": [...]}`, an array of traces or a trace), its traces
/// handed on one at a time.
struct JaegerDocument<'c, 'a, F>(&'c mut Ctx<'a, F>);

impl<F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> JaegerDocument<'_, '_, F> {
    fn found<E: serde::de::Error>(self, kind: &str) -> Result<(), E> {
        let stop = self.0.invalid(not_jaeger(kind));
        Err(self.0.stop(stop))
    }
}

impl<'de, F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> DeserializeSeed<'de> for JaegerDocument<'_, '_, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> Visitor<'de> for JaegerDocument<'_, '_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jaeger JSON")
    }

    unexpected!();

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.found("null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        List { ctx: self.0, of: Of::Traces }.visit_seq(seq).map(|_| ())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.0;
        // The fields of a bare trace, or those beside `data` (`total`, `errors`, ...).
        let (mut rest, mut data) = (serde_json::Map::new(), false);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "data" => {
                    map.next_value_seed(List { ctx: &mut *ctx, of: Of::Data })?;
                    data = true;
                }
                "resourceSpans" | "resource_spans" => {
                    let stop = ctx.wrong("OTLP JSON", "Jaeger JSON");
                    return Err(ctx.stop(stop));
                }
                _ if data => {
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    rest.insert(key, map.next_value::<Value>()?);
                }
            }
        }
        if data {
            return Ok(());
        }
        ctx.jaeger_trace(&Value::Object(rest), &At::Root).map_err(|stop| ctx.stop(stop))
    }
}

/// What a [`List`] holds.
#[derive(Clone, Copy)]
enum Of {
    /// An OTLP request's `resourceSpans`.
    ResourceSpans,
    /// Jaeger's `data`.
    Data,
    /// A top-level array of Jaeger traces.
    Traces,
}

/// A list whose elements are handed on one at a time; `null` is an empty list (`false`).
struct List<'c, 'a, F> {
    ctx: &'c mut Ctx<'a, F>,
    of: Of,
}

impl<F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> List<'_, '_, F> {
    fn found<E: serde::de::Error>(self, kind: &str) -> Result<bool, E> {
        let key = match self.of {
            Of::ResourceSpans => "resourceSpans",
            Of::Data | Of::Traces => "data",
        };
        let stop = self.ctx.invalid(decode_error(&At::Key(&At::Root, key), format!("expected an array, found {kind}")));
        Err(self.ctx.stop(stop))
    }
}

impl<'de, F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> DeserializeSeed<'de> for List<'_, '_, F> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Vec<SpanRecord>) -> ControlFlow<()>> Visitor<'de> for List<'_, '_, F> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array")
    }

    unexpected!();

    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<bool, A::Error> {
        self.found("an object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let ctx = self.ctx;
        let mut i = 0;
        while let Some(v) = seq.next_element::<Value>()? {
            let done = match self.of {
                Of::ResourceSpans => ctx.otlp_resource_spans(v, i),
                Of::Data => ctx.jaeger_trace(&v, &At::Index(&At::Key(&At::Root, "data"), i)),
                Of::Traces => ctx.jaeger_trace(&v, &At::Index(&At::Root, i)),
            };
            done.map_err(|stop| ctx.stop(stop))?;
            i += 1;
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------------------
// Jaeger.

/// The resources and scopes of one trace, shared by its spans.
#[derive(Default)]
struct Shared {
    processes: HashMap<String, Arc<Resource>>,
    scopes: HashMap<(String, String), Arc<InstrumentationScope>>,
}

fn jaeger_trace(v: &Value, at: &At<'_>, out: &mut Vec<SpanRecord>) -> R<()> {
    let o = object(v, at)?;
    let mut shared = Shared::default();
    if let Some(processes) = field(o, "processes", "processes") {
        let at = At::Key(at, "processes");
        let Value::Object(processes) = processes else {
            return fail(&at, format!("expected an object, found {}", kind_of(processes)));
        };
        for (id, p) in processes {
            let resource = jaeger_process(p, &At::Key(&at, id))?;
            shared.processes.insert(id.clone(), Arc::new(resource));
        }
    }
    let trace_id = with(o, "traceID", "traceID", at, |v, at| jaeger_id(v, at, 16))?;
    let spans = list(o, "spans", "spans", at, |v, at| jaeger_span(v, at, &trace_id, &mut shared))?;
    out.extend(spans);
    Ok(())
}

fn jaeger_process(v: &Value, at: &At<'_>) -> R<Resource> {
    let o = object(v, at)?;
    let service = with(o, "serviceName", "serviceName", at, read_string)?;
    let mut tags = list(o, "tags", "tags", at, jaeger_tag)?;
    let dropped_attributes_count = take_count(&mut tags, "otel.dropped_attributes_count");
    let mut attributes = Vec::with_capacity(tags.len() + 1);
    attributes.push(string_kv("service.name", &service));
    // A `service.name` tag saying the same as serviceName is not kept twice.
    attributes.extend(tags.into_iter().filter(|kv| {
        kv.key != "service.name"
            || !matches!(&kv.value, Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) if *s == service)
    }));
    Ok(Resource { attributes, dropped_attributes_count, ..Resource::default() })
}

/// A Jaeger id: hex, left-padded with zeros to `bytes` bytes (Jaeger writes a 128-bit trace
/// id whose high half is zero with 16 digits, and older versions drop leading zeros).
fn jaeger_id(v: &Value, at: &At<'_>, bytes: usize) -> R<Vec<u8>> {
    let s = read_string(v, at)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if s.len() > bytes * 2 {
        return fail(at, format!("{s:?} is longer than {} hex digits", bytes * 2));
    }
    let padded = format!("{s:0>width$}", width = bytes * 2);
    tracewire_store::unhex(&padded).map_or_else(|| fail(at, format!("{s:?} is not a hex id")), Ok)
}

/// A Jaeger time or duration in microseconds, in nanoseconds.
fn micros(v: &Value, at: &At<'_>) -> R<u64> {
    let us = read_u64(v, at)?;
    us.checked_mul(1000).map_or_else(|| fail(at, format!("{us} us is out of range")), Ok)
}

fn jaeger_span(v: &Value, at: &At<'_>, trace_id: &[u8], shared: &mut Shared) -> R<SpanRecord> {
    let o = object(v, at)?;
    let mut span = Span {
        trace_id: with(o, "traceID", "traceID", at, |v, at| jaeger_id(v, at, 16))?,
        span_id: with(o, "spanID", "spanID", at, |v, at| jaeger_id(v, at, 8))?,
        name: with(o, "operationName", "operationName", at, read_string)?,
        // Jaeger's flag 1 is "sampled", W3C's too; its 2 ("debug") is not W3C's 2 ("random").
        flags: with(o, "flags", "flags", at, read_u32)? & 1,
        start_time_unix_nano: with(o, "startTime", "startTime", at, micros)?,
        ..Span::default()
    };
    if span.trace_id.is_empty() {
        span.trace_id = trace_id.to_vec();
    }
    let duration = with(o, "duration", "duration", at, micros)?;
    span.end_time_unix_nano = span.start_time_unix_nano.saturating_add(duration);
    // A span a clock-skew adjuster moved (Jaeger's, or tracewire's own export) says by how
    // much in `warnings`: it is read back at the times its service recorded, so that the
    // analysis corrects it once.
    let warnings = list(o, "warnings", "warnings", at, |v, _| Ok(v.as_str().map(str::to_owned)))?;
    let shift: i64 =
        warnings.iter().flatten().filter_map(|w| crate::jaeger::skew_adjustment(w)).fold(0, i64::saturating_add);
    let unshift = |t: u64| t.saturating_add_signed(shift.saturating_neg());
    span.start_time_unix_nano = unshift(span.start_time_unix_nano);
    span.end_time_unix_nano = unshift(span.end_time_unix_nano);

    // References: the first CHILD_OF in the span's own trace is the parent (as Jaeger's
    // `Span.ParentSpanID` picks it); the others are links.
    let references = list(o, "references", "references", at, |v, at| {
        let o = object(v, at)?;
        Ok((
            with(o, "refType", "refType", at, read_string)?,
            with(o, "traceID", "traceID", at, |v, at| jaeger_id(v, at, 16))?,
            with(o, "spanID", "spanID", at, |v, at| jaeger_id(v, at, 8))?,
        ))
    })?;
    let parent = references.iter().position(|(ty, t, _)| ty.eq_ignore_ascii_case("CHILD_OF") && *t == span.trace_id);
    if let Some(i) = parent {
        span.parent_span_id.clone_from(&references[i].2);
    } else {
        // The deprecated top-level field some versions still write.
        span.parent_span_id = with(o, "parentSpanID", "parentSpanID", at, |v, at| jaeger_id(v, at, 8))?;
    }
    span.links = references
        .into_iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != parent)
        .map(|(_, (ty, trace_id, span_id))| Link {
            trace_id,
            span_id,
            // What the OpenTelemetry Collector's translator keeps of a reference's type;
            // FOLLOWS_FROM is what a link is by default.
            attributes: if ty.eq_ignore_ascii_case("CHILD_OF") {
                vec![string_kv("opentracing.ref_type", "child_of")]
            } else {
                Vec::new()
            },
            ..Link::default()
        })
        .collect();

    span.events = list(o, "logs", "logs", at, |v, at| {
        let o = object(v, at)?;
        let mut attributes = list(o, "fields", "fields", at, jaeger_tag)?;
        let name = attributes.iter().position(|kv| kv.key == "event").map(|i| text_of(&attributes.remove(i)));
        let dropped_attributes_count = take_count(&mut attributes, "otel.dropped_attributes_count");
        Ok(Event {
            time_unix_nano: unshift(with(o, "timestamp", "timestamp", at, micros)?),
            name: name.unwrap_or_default(),
            attributes,
            dropped_attributes_count,
        })
    })?;

    let mut attributes = list(o, "tags", "tags", at, jaeger_tag)?;
    span.dropped_attributes_count = take_count(&mut attributes, "otel.dropped_attributes_count");
    span.dropped_events_count = take_count(&mut attributes, "otel.dropped_events_count");
    span.dropped_links_count = take_count(&mut attributes, "otel.dropped_links_count");
    let (mut scope_name, mut scope_version, mut code, mut description, mut error) = (None, None, None, None, false);
    attributes.retain(|kv| {
        let is_true = || match &kv.value {
            Some(AnyValue { value: Some(any_value::Value::BoolValue(b)) }) => *b,
            Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        match kv.key.as_str() {
            "span.kind" => match span_kind(&text_of(kv)) {
                Some(k) => span.kind = k,
                None => return true,
            },
            "otel.status_code" => match text_of(kv).to_ascii_uppercase().as_str() {
                "OK" => code = Some(status::OK),
                "ERROR" => code = Some(status::ERROR),
                "UNSET" => code = Some(status::UNSET),
                _ => return true,
            },
            "otel.status_description" => description = Some(text_of(kv)),
            "otel.scope.name" | "otel.library.name" => scope_name = Some(text_of(kv)),
            "otel.scope.version" | "otel.library.version" => scope_version = Some(text_of(kv)),
            "w3c.tracestate" => span.trace_state = text_of(kv),
            "error" if is_true() => error = true,
            _ => return true,
        }
        false
    });
    span.attributes = attributes;
    let code = code.or(error.then_some(status::ERROR));
    span.status = match (code, description) {
        (None, None) => None,
        (code, message) => Some(Status { code: code.unwrap_or(status::UNSET), message: message.unwrap_or_default() }),
    };

    let resource = match field(o, "processID", "processID") {
        Some(id) => {
            let at = At::Key(at, "processID");
            let id = read_string(id, &at)?;
            match shared.processes.get(&id) {
                Some(resource) => Arc::clone(resource),
                None => return fail(&at, format!("process {id:?} is not in the trace's processes")),
            }
        }
        None => match field(o, "process", "process") {
            Some(p) => Arc::new(jaeger_process(p, &At::Key(at, "process"))?),
            None => Arc::default(),
        },
    };
    let scope_key = (scope_name.unwrap_or_default(), scope_version.unwrap_or_default());
    let scope = Arc::clone(shared.scopes.entry(scope_key).or_insert_with_key(|(name, version)| {
        Arc::new(InstrumentationScope {
            name: name.clone(),
            version: version.clone(),
            ..InstrumentationScope::default()
        })
    }));
    Ok(SpanRecord::from_otlp(OtlpSpan { resource, scope, span, ..OtlpSpan::default() }))
}

/// The OTLP span kind of Jaeger's `span.kind` tag.
fn span_kind(tag: &str) -> Option<i32> {
    Some(match tag.to_ascii_lowercase().as_str() {
        "internal" => kind::INTERNAL,
        "server" => kind::SERVER,
        "client" => kind::CLIENT,
        "producer" => kind::PRODUCER,
        "consumer" => kind::CONSUMER,
        _ => return None,
    })
}

/// Takes the count a tag such as `otel.dropped_attributes_count` holds out of `tags` (0 when
/// there is none; a tag that is not a count stays).
fn take_count(tags: &mut Vec<KeyValue>, key: &str) -> u32 {
    let count = |kv: &KeyValue| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::IntValue(n)) => u32::try_from(*n).ok(),
        Some(any_value::Value::StringValue(s)) => s.parse().ok(),
        _ => None,
    };
    match tags.iter().position(|kv| kv.key == key).and_then(|i| Some((i, count(&tags[i])?))) {
        Some((i, n)) => {
            tags.remove(i);
            n
        }
        None => 0,
    }
}

fn text_of(kv: &KeyValue) -> String {
    kv.value.as_ref().map(tracewire_store::text).unwrap_or_default()
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..KeyValue::default()
    }
}

/// A Jaeger tag (or log field) as a typed attribute: `{"key", "type", "value"}` with type
/// `string`, `bool`, `int64`, `float64` or `binary` (base64, as Go's JSON writes bytes);
/// without a known type, the JSON value's own.
fn jaeger_tag(v: &Value, at: &At<'_>) -> R<KeyValue> {
    use any_value::Value as V;
    let o = object(v, at)?;
    let key = with(o, "key", "key", at, read_string)?;
    let ty = with(o, "type", "type", at, read_string)?.to_ascii_lowercase();
    let Some(value) = field(o, "value", "value") else {
        return Ok(KeyValue { key, value: None, ..KeyValue::default() });
    };
    let at = &At::Key(at, "value");
    let value = match (ty.as_str(), value) {
        ("string", Value::String(s)) => V::StringValue(s.clone()),
        ("string", other) => V::StringValue(other.to_string()),
        ("bool" | "boolean", Value::String(s)) if s == "true" || s == "false" => V::BoolValue(s == "true"),
        ("bool" | "boolean", v) => V::BoolValue(read_bool(v, at)?),
        ("int64" | "int", v) => V::IntValue(read_i64(v, at)?),
        ("float64" | "float" | "double", v) => V::DoubleValue(read_f64(v, at)?),
        ("binary", v) => V::BytesValue(read_bytes(v, at)?),
        (_, Value::Bool(b)) => V::BoolValue(*b),
        (_, Value::Number(n)) => n.as_i64().map_or_else(|| V::DoubleValue(n.as_f64().unwrap_or(f64::NAN)), V::IntValue),
        (_, Value::String(s)) => V::StringValue(s.clone()),
        (_, other) => V::StringValue(other.to_string()),
    };
    Ok(KeyValue { key, value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() })
}
