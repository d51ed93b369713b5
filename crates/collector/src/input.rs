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
//! Files may be gzip-compressed (read as they are otherwise). Errors name the file, the line
//! where the faulty request or document starts, and the field
//! (`resourceSpans[0].scopeSpans[0].spans[3].traceId: "xyz" is not a hex id`); no input
//! makes these functions panic.
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
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
    /// The file is not JSON (the error says at which line and column).
    #[error("{}: not valid JSON: {error}", file.display())]
    Json {
        /// The file.
        file: PathBuf,
        /// The parser's error, with line and column.
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
/// # Errors
///
/// [`InputError`]: unreadable file, invalid JSON, a field the encoding does not allow, or
/// another format (Jaeger JSON, OTLP logs or metrics).
pub fn read_otlp_json(path: impl AsRef<Path>) -> Result<Vec<SpanRecord>, InputError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|error| InputError::Io { file: path.to_owned(), error })?;
    parse_otlp_json(&bytes, path)
}

/// [`read_otlp_json`] from a reader; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`read_otlp_json`].
pub fn read_otlp_json_from(mut reader: impl Read, name: &Path) -> Result<Vec<SpanRecord>, InputError> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|error| InputError::Io { file: name.to_owned(), error })?;
    parse_otlp_json(&bytes, name)
}

/// [`read_otlp_json`] of the bytes of a file; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`read_otlp_json`].
pub fn parse_otlp_json(bytes: &[u8], name: &Path) -> Result<Vec<SpanRecord>, InputError> {
    let bytes = inflate(bytes, name, "OTLP JSON traces")?;
    let mut out = Vec::new();
    for_each_value(&bytes, name, |line, value| {
        let wrong =
            |found| InputError::WrongFormat { file: name.to_owned(), line, found, expected: "OTLP JSON traces" };
        if let Value::Object(o) = &value
            && field(o, "resourceSpans", "resource_spans").is_none()
        {
            let other = [
                ("resourceLogs", "OTLP JSON logs"),
                ("resourceMetrics", "OTLP JSON metrics"),
                ("resourceProfiles", "OTLP JSON profiles"),
                ("data", "Jaeger JSON"),
                ("traceID", "Jaeger JSON"),
            ];
            if let Some((_, found)) = other.iter().find(|(k, _)| o.contains_key(*k)) {
                return Err(wrong(found));
            }
        }
        let request = crate::otlp_json::decode(&value).map_err(|error| InputError::Invalid {
            file: name.to_owned(),
            line,
            error,
        })?;
        out.extend(SpanRecord::all_of(&request));
        Ok(())
    })?;
    Ok(out)
}

/// The spans of a Jaeger JSON file: what the Jaeger UI downloads and the query API answers
/// (`{"data":[{"traceID", "spans", "processes"}, ...]}`), a bare trace object, or an array
/// of traces.
///
/// # Errors
///
/// [`InputError`]: unreadable file, invalid JSON, a span or tag that is not Jaeger's model
/// (an id that is not hex, a `processID` missing from `processes`, ...), or another format.
pub fn read_jaeger_json(path: impl AsRef<Path>) -> Result<Vec<SpanRecord>, InputError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|error| InputError::Io { file: path.to_owned(), error })?;
    parse_jaeger_json(&bytes, path)
}

/// [`read_jaeger_json`] from a reader; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`read_jaeger_json`].
pub fn read_jaeger_json_from(mut reader: impl Read, name: &Path) -> Result<Vec<SpanRecord>, InputError> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|error| InputError::Io { file: name.to_owned(), error })?;
    parse_jaeger_json(&bytes, name)
}

/// [`read_jaeger_json`] of the bytes of a file; `name` stands for the file in errors.
///
/// # Errors
///
/// As [`read_jaeger_json`].
pub fn parse_jaeger_json(bytes: &[u8], name: &Path) -> Result<Vec<SpanRecord>, InputError> {
    let bytes = inflate(bytes, name, "Jaeger JSON")?;
    let mut out = Vec::new();
    for_each_value(&bytes, name, |line, value| {
        let root = At::Root;
        let converted = match &value {
            Value::Object(o) if o.contains_key("resourceSpans") || o.contains_key("resource_spans") => {
                return Err(InputError::WrongFormat {
                    file: name.to_owned(),
                    line,
                    found: "OTLP JSON",
                    expected: "Jaeger JSON",
                });
            }
            Value::Object(o) if o.contains_key("data") => list(o, "data", "data", &root, |v, at| {
                let mut spans = Vec::new();
                jaeger_trace(v, at, &mut spans)?;
                Ok(spans)
            })
            .map(|traces| traces.into_iter().flatten().collect()),
            Value::Array(traces) => traces.iter().enumerate().try_fold(Vec::new(), |mut spans, (i, v)| {
                jaeger_trace(v, &At::Index(&root, i), &mut spans).map(|()| spans)
            }),
            Value::Object(_) => {
                let mut spans = Vec::new();
                jaeger_trace(&value, &root, &mut spans).map(|()| spans)
            }
            other => {
                fail(&root, format!("expected Jaeger JSON ({{\"data\":[...]}} or a trace), found {}", kind_of(other)))
            }
        };
        let spans = converted.map_err(|error| InputError::Invalid { file: name.to_owned(), line, error })?;
        out.extend(spans);
        Ok(())
    })?;
    Ok(out)
}

/// The bytes, inflated when they are gzip; compressed data of other kinds is refused.
fn inflate<'b>(bytes: &'b [u8], name: &Path, expected: &'static str) -> Result<std::borrow::Cow<'b, [u8]>, InputError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(|error| InputError::Io { file: name.to_owned(), error })?;
        return Ok(out.into());
    }
    if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(InputError::WrongFormat {
            file: name.to_owned(),
            line: 1,
            found: "zstd-compressed data (decompress it first: zstd -d)",
            expected,
        });
    }
    Ok(bytes.into())
}

/// Calls `f` with every JSON value of `bytes` (whitespace-separated: JSON lines, or
/// pretty-printed values) and the line where it starts.
#[allow(clippy::naive_bytecount)] // once over the file: not worth a dependency
fn for_each_value(
    bytes: &[u8],
    name: &Path,
    mut f: impl FnMut(usize, Value) -> Result<(), InputError>,
) -> Result<(), InputError> {
    // A UTF-8 byte order mark is not JSON; editors on some systems write one.
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
    let (mut line, mut counted) = (1, 0);
    loop {
        let end = stream.byte_offset();
        let start = bytes[end..].iter().position(|b| !b.is_ascii_whitespace()).map_or(bytes.len(), |p| end + p);
        line += bytes[counted..start].iter().filter(|&&b| b == b'\n').count();
        counted = start;
        match stream.next() {
            None => return Ok(()),
            Some(Err(error)) => return Err(InputError::Json { file: name.to_owned(), error }),
            Some(Ok(value)) => f(line, value)?,
        }
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
