//! Jaeger JSON: the format the Jaeger UI opens through its JSON-file upload and the Jaeger
//! query API answers with (`{"data":[{"traceID","spans":[...],"processes":{...}}]}`).
//!
//! The model is Jaeger's UI model (`internal/uimodel/model.go` in jaegertracing/jaeger),
//! filled as its converter does (`internal/uimodel/converter/v1/json/from_domain.go`):
//! times in microseconds, typed tags, `int64` values beyond JavaScript's safe integers as
//! decimal strings, binary values in base64, one process id (`p1`, `p2`, ...) per distinct
//! process. Spans are translated from OTLP as the OpenTelemetry Collector's translator does
//! (`pkg/translator/jaeger/traces_to_jaegerproto.go` in opentelemetry-collector-contrib,
//! which Jaeger itself uses for OTLP data) and the OpenTelemetry specification's
//! "OpenTelemetry to Jaeger Transformation" and "Mapping to non-OTLP Formats" ask:
//!
//! - attributes as typed tags; arrays and key-value lists as JSON text in a `string` tag;
//! - `span.kind` (`client`, `server`, `producer`, `consumer`, `internal`), `otel.status_code`
//!   (`OK`/`ERROR`), `error=true` for ERROR, `otel.status_description`, `w3c.tracestate`;
//! - the instrumentation scope as `otel.scope.name`/`otel.scope.version` (and the aliases
//!   `otel.library.name`/`otel.library.version`, which the specification still requires
//!   and the Jaeger UI reads), its attributes as tags;
//! - `otel.dropped_attributes_count`, `otel.dropped_events_count` and
//!   `otel.dropped_links_count` when non-zero (on log fields and process tags too);
//! - events as logs (field `event` = the name, unless an attribute is called `event`);
//! - the parent as the first reference (`CHILD_OF`), links after it as `FOLLOWS_FROM`
//!   (`CHILD_OF` when the link says `opentracing.ref_type=child_of`);
//! - the resource as the process: `service.name` is `serviceName`, the other attributes
//!   are its tags; `flags` 1 for a sampled span.
//!
//! Clock skew: a trace is exported with the analysis's correction ([`correct_skew`]) applied,
//! and each moved span (its logs with it) says so in `warnings`, worded as Jaeger's own
//! adjuster words it (`cmd/jaeger/internal/extension/jaegerquery/internal/adjuster/clockskew.go`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as OtlpKeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::{Value, json};

use crate::SpanRecord;
use crate::analysis::{by_trace, correct_skew};
use tracewire_store::{hex, kind, status};

/// The service name of a process whose resource has no attributes (the translator's
/// `tracetranslator.ResourceNoServiceName`).
pub const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

/// The largest integer a JavaScript number holds exactly; Jaeger writes `int64` tags beyond
/// it (either sign) as decimal strings.
pub const JS_MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// One trace in Jaeger's JSON model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The trace id (Jaeger's hex: 16 digits when the upper 64 bits are zero, else 32).
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// Its spans, in the order given.
    pub spans: Vec<Span>,
    /// The processes the spans name by `processID`.
    pub processes: BTreeMap<String, Process>,
    /// Trace-level warnings (`null` when none).
    pub warnings: Option<Vec<String>>,
}

/// One span in Jaeger's JSON model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    /// The trace id.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// The span id (16 hex digits).
    #[serde(rename = "spanID")]
    pub span_id: String,
    /// Jaeger's flags: 1 (sampled) when the OTLP span's flags say sampled; omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub flags: u32,
    /// The span name.
    #[serde(rename = "operationName")]
    pub operation_name: String,
    /// The parent first (`CHILD_OF`), then the links.
    pub references: Vec<Reference>,
    /// Start, Unix microseconds.
    #[serde(rename = "startTime")]
    pub start_time: u64,
    /// Duration, microseconds.
    pub duration: u64,
    /// Tags.
    pub tags: Vec<KeyValue>,
    /// The span's events.
    pub logs: Vec<Log>,
    /// The key of its process in [`Trace::processes`].
    #[serde(rename = "processID")]
    pub process_id: String,
    /// Warnings (`null` when none), such as a clock-skew adjustment.
    pub warnings: Option<Vec<String>>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A reference from one span to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reference {
    /// `CHILD_OF` or `FOLLOWS_FROM`.
    #[serde(rename = "refType")]
    pub ref_type: RefType,
    /// The referenced span's trace.
    #[serde(rename = "traceID")]
    pub trace_id: String,
    /// The referenced span.
    #[serde(rename = "spanID")]
    pub span_id: String,
}

/// A reference's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RefType {
    /// The parent.
    #[serde(rename = "CHILD_OF")]
    ChildOf,
    /// A link.
    #[serde(rename = "FOLLOWS_FROM")]
    FollowsFrom,
}

/// The process (resource) that emitted spans.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Process {
    /// `service.name`.
    #[serde(rename = "serviceName")]
    pub service_name: String,
    /// The other resource attributes.
    pub tags: Vec<KeyValue>,
}

/// An event of a span.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Log {
    /// When, Unix microseconds.
    pub timestamp: u64,
    /// `event` (the name), then the attributes.
    pub fields: Vec<KeyValue>,
}

/// A typed tag or log field: serialized as `{"key", "type", "value"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The typed value.
    pub value: TagValue,
}

/// A tag's value, with Jaeger's value types.
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    /// `string`.
    String(String),
    /// `bool`.
    Bool(bool),
    /// `int64`: a JSON number, or a decimal string beyond ±[`JS_MAX_SAFE_INTEGER`].
    Int64(i64),
    /// `float64`: a JSON number; `"NaN"`, `"Infinity"` or `"-Infinity"` for what JSON has
    /// no number for.
    Float64(f64),
    /// `binary`: standard base64 with padding, as Go's `encoding/json` writes bytes.
    Binary(Vec<u8>),
}

impl TagValue {
    /// Jaeger's name of the value's type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::String(_) => "string",
            Self::Bool(_) => "bool",
            Self::Int64(_) => "int64",
            Self::Float64(_) => "float64",
            Self::Binary(_) => "binary",
        }
    }

    /// The value as it appears in Jaeger JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Self::String(s) => Value::from(s.as_str()),
            Self::Bool(b) => Value::from(*b),
            Self::Int64(i) if (-JS_MAX_SAFE_INTEGER..=JS_MAX_SAFE_INTEGER).contains(i) => Value::from(*i),
            Self::Int64(i) => Value::from(i.to_string()),
            Self::Float64(f) => {
                serde_json::Number::from_f64(*f).map_or_else(|| Value::from(non_finite(*f)), Value::Number)
            }
            Self::Binary(b) => Value::from(base64(b)),
        }
    }
}

fn non_finite(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

impl Serialize for KeyValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("key", &self.key)?;
        map.serialize_entry("type", self.value.type_name())?;
        map.serialize_entry("value", &self.value.to_json())?;
        map.end()
    }
}

impl KeyValue {
    fn new(key: &str, value: TagValue) -> Self {
        Self { key: key.to_owned(), value }
    }

    fn string(key: &str, value: &str) -> Self {
        Self::new(key, TagValue::String(value.to_owned()))
    }

    /// The tag of an OTLP attribute (the translator's `attributeToJaegerProtoTag`).
    pub fn from_otlp(kv: &OtlpKeyValue) -> Self {
        Self { key: kv.key.clone(), value: kv.value.as_ref().map_or(TagValue::String(String::new()), tag_value) }
    }
}

/// An OTLP value as a Jaeger value: primitives keep their type, arrays and key-value lists
/// become JSON text.
pub fn tag_value(v: &AnyValue) -> TagValue {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => TagValue::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => TagValue::Bool(*b),
        Some(any_value::Value::IntValue(i)) => TagValue::Int64(*i),
        Some(any_value::Value::DoubleValue(d)) => TagValue::Float64(*d),
        Some(any_value::Value::BytesValue(b)) => TagValue::Binary(b.clone()),
        Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)) => {
            TagValue::String(serde_json::to_string(&raw_json(v)).unwrap_or_default())
        }
        Some(any_value::Value::StringValueStrindex(i)) => TagValue::Int64(i64::from(*i)),
        None => TagValue::String(String::new()),
    }
}

/// A value as the JSON of its plain form, as pdata's `Value.AsString` writes arrays and maps
/// (Go's `encoding/json` over `AsRaw()`): map keys sorted, bytes in base64, integral
/// doubles without a fraction.
fn raw_json(v: &AnyValue) -> Value {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => Value::from(s.as_str()),
        Some(any_value::Value::BoolValue(b)) => Value::from(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) =>
        {
            #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
            if d.is_finite() && d.fract() == 0.0 && d.abs() < 1e15 {
                Value::from(*d as i64)
            } else {
                serde_json::Number::from_f64(*d).map_or_else(|| Value::from(non_finite(*d)), Value::Number)
            }
        }
        Some(any_value::Value::BytesValue(b)) => Value::from(base64(b)),
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(raw_json).collect()),
        Some(any_value::Value::KvlistValue(l)) => {
            let sorted: BTreeMap<&str, Value> =
                l.values.iter().map(|kv| (kv.key.as_str(), kv.value.as_ref().map_or(Value::Null, raw_json))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }
        Some(any_value::Value::StringValueStrindex(i)) => Value::from(*i),
        None => Value::Null,
    }
}

/// Standard base64 with padding (RFC 4648 section 4), as Go's `encoding/json` writes `[]byte`.
///
/// ```
/// use tracewire_collector::jaeger::base64;
///
/// assert_eq!(base64(&[0, 0, 0x30, 0x39]), "AAAwOQ==");
/// assert_eq!(base64(b"foobar"), "Zm9vYmFy");
/// ```
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A trace id as Jaeger writes it (`model.TraceID.String()`): the low 64 bits alone (16
/// digits) when the high 64 bits are zero, else all 32 digits. Other text passes through.
///
/// ```
/// use tracewire_collector::jaeger::trace_id;
///
/// assert_eq!(trace_id("0af7651916cd43dd8448eb211c80319c"), "0af7651916cd43dd8448eb211c80319c");
/// assert_eq!(trace_id("00000000000000008448eb211c80319c"), "8448eb211c80319c");
/// ```
pub fn trace_id(hex_id: &str) -> String {
    match hex_id.strip_prefix("0000000000000000") {
        Some(low) if hex_id.len() == 32 => low.to_owned(),
        _ => hex_id.to_owned(),
    }
}

/// A signed nanosecond count as Go's `time.Duration.String()` writes it (`5ms`, `-1.5µs`,
/// `1m30s`), the unit Jaeger's clock-skew warnings use.
///
/// ```
/// use tracewire_collector::jaeger::go_duration;
///
/// assert_eq!(go_duration(0), "0s");
/// assert_eq!(go_duration(-5_000_000), "-5ms");
/// assert_eq!(go_duration(1_500), "1.5µs");
/// assert_eq!(go_duration(90_000_000_000), "1m30s");
/// assert_eq!(go_duration(3_600_000_000_001), "1h0m0.000000001s");
/// ```
pub fn go_duration(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    // The fraction of `v` with `prec` digits, trailing zeros (and a bare point) dropped.
    let frac = |v: u64, prec: u32| -> (String, u64) {
        let scale = 10u64.pow(prec);
        let (whole, part) = (v / scale, v % scale);
        if part == 0 {
            return (String::new(), whole);
        }
        let digits = format!("{part:0width$}", width = prec as usize);
        (format!(".{}", digits.trim_end_matches('0')), whole)
    };
    if abs < 1_000_000_000 {
        return match abs {
            0 => "0s".to_owned(),
            1..1_000 => format!("{sign}{abs}ns"),
            1_000..1_000_000 => {
                let (fraction, whole) = frac(abs, 3);
                format!("{sign}{whole}{fraction}µs")
            }
            _ => {
                let (fraction, whole) = frac(abs, 6);
                format!("{sign}{whole}{fraction}ms")
            }
        };
    }
    let (fraction, secs) = frac(abs, 9);
    let mut out = String::from(sign);
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    if hours > 0 {
        let _ = write!(out, "{hours}h");
    }
    if hours > 0 || minutes > 0 {
        let _ = write!(out, "{minutes}m");
    }
    let _ = write!(out, "{seconds}{fraction}s");
    out
}

/// The warning on a span the clock-skew correction moved by `ns`, worded as Jaeger's adjuster
/// words it.
///
/// ```
/// assert_eq!(
///     tracewire_collector::jaeger::skew_warning(-5_000_000),
///     "This span's timestamps were adjusted by -5ms"
/// );
/// ```
pub fn skew_warning(ns: i64) -> String {
    format!("This span's timestamps were adjusted by {}", go_duration(ns))
}

/// The shift a clock-skew warning reports, in nanoseconds: the inverse of [`skew_warning`],
/// for readers of Jaeger JSON that want the times as recorded (a Jaeger download carries the
/// same warning for Jaeger's own adjustments). `None` for any other warning.
///
/// ```
/// use tracewire_collector::jaeger::{skew_adjustment, skew_warning};
///
/// assert_eq!(skew_adjustment("This span's timestamps were adjusted by -2.503s"), Some(-2_503_000_000));
/// for ns in [-5_000_000, 1, 1_500, 90_000_000_000, 3_600_000_000_001] {
///     assert_eq!(skew_adjustment(&skew_warning(ns)), Some(ns));
/// }
/// assert_eq!(skew_adjustment("duplicate span IDs; skipping clock skew adjustment"), None);
/// ```
pub fn skew_adjustment(warning: &str) -> Option<i64> {
    parse_go_duration(warning.strip_prefix("This span's timestamps were adjusted by ")?)
}

/// A duration as Go's `time.ParseDuration` reads it (`-1h2m3.5s`, `1.5µs`, `300ms`), in
/// nanoseconds; `None` when it is not one or does not fit.
///
/// ```
/// use tracewire_collector::jaeger::parse_go_duration;
///
/// assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
/// assert_eq!(parse_go_duration("-1.5us"), Some(-1_500));
/// assert_eq!(parse_go_duration("0"), Some(0));
/// assert_eq!(parse_go_duration("5"), None);
/// ```
pub fn parse_go_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let whole_len = digits(rest);
        let whole = &rest[..whole_len];
        rest = &rest[whole_len..];
        let fraction = if let Some(after) = rest.strip_prefix('.') {
            let n = digits(after);
            rest = &after[n..];
            &after[..n]
        } else {
            ""
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit: i128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let whole: i128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        total = total.checked_add(whole.checked_mul(unit)?)?;
        // The fraction, to the nanosecond (Go truncates the same way).
        let mut scale = unit;
        for d in fraction.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            total += i128::from(d - b'0') * scale;
        }
    }
    i64::try_from(if negative { -total } else { total }).ok()
}

/// The traces in Jaeger's JSON model, in first-seen order, each corrected for clock skew.
pub fn traces(spans: &[SpanRecord]) -> Vec<Trace> {
    by_trace(spans).into_iter().map(trace).collect()
}

/// The traces as the Jaeger query API answers and the UI's JSON upload reads them:
/// `{"data": [trace, ...], "total": 0, "limit": 0, "offset": 0, "errors": null}`.
///
/// ```
/// use tracewire_collector::{jaeger::to_jaeger, SpanRecord};
///
/// let s = SpanRecord { trace_id: "ab".into(), span_id: "01".into(), name: "exec".into(),
///     service: "client".into(), start_ns: 2_000, end_ns: 5_000, status_code: 2, ..Default::default() };
/// let j = to_jaeger(&[s]);
/// let span = &j["data"][0]["spans"][0];
/// assert_eq!(span["duration"], 3);
/// assert_eq!(span["tags"][1], serde_json::json!({"key": "error", "type": "bool", "value": true}));
/// assert_eq!(j["data"][0]["processes"]["p1"]["serviceName"], "client");
/// ```
pub fn to_jaeger(spans: &[SpanRecord]) -> Value {
    json!({"data": traces(spans), "total": 0, "limit": 0, "offset": 0, "errors": null})
}

fn trace(mut records: Vec<SpanRecord>) -> Trace {
    let mut shift = vec![0i64; records.len()];
    for (i, ns) in correct_skew(&mut records) {
        shift[i] += ns;
    }
    let mut processes: Vec<(String, Process)> = Vec::new();
    let spans: Vec<Span> = records.iter().zip(shift).map(|(r, ns)| span(r, ns, &mut processes)).collect();
    Trace {
        trace_id: records.first().map(|s| trace_id(&s.trace_id)).unwrap_or_default(),
        spans,
        processes: processes.into_iter().enumerate().map(|(i, (_, p))| (format!("p{}", i + 1), p)).collect(),
        warnings: None,
    }
}

/// The process of a resource (the translator's `resourceToJaegerProtoProcess`).
fn process(resource: &Resource) -> Process {
    let service = resource.attributes.iter().find(|kv| kv.key == "service.name");
    let service_name = match service {
        _ if resource.attributes.is_empty() => NO_SERVICE_NAME.to_owned(),
        Some(kv) => kv.value.as_ref().map(tracewire_store::text).unwrap_or_default(),
        None => String::new(),
    };
    let mut tags: Vec<KeyValue> =
        resource.attributes.iter().filter(|kv| kv.key != "service.name").map(KeyValue::from_otlp).collect();
    dropped(&mut tags, "otel.dropped_attributes_count", resource.dropped_attributes_count);
    Process { service_name, tags }
}

fn dropped(tags: &mut Vec<KeyValue>, key: &str, count: u32) {
    if count > 0 {
        tags.push(KeyValue::new(key, TagValue::Int64(i64::from(count))));
    }
}

fn micros(ns: i64) -> u64 {
    u64::try_from(ns / 1000).unwrap_or(0)
}

/// One span; `shift` is what the skew correction added to its times (ns), which its events
/// get too.
fn span(r: &SpanRecord, shift: i64, processes: &mut Vec<(String, Process)>) -> Span {
    let o = r.to_otlp();
    let s = &o.span;
    let tid = trace_id(&r.trace_id);

    let proc = process(&o.resource);
    // Processes are told apart by everything they render as (Jaeger's processHashtable).
    let key = serde_json::to_string(&proc).unwrap_or_default();
    let pid = if let Some(i) = processes.iter().position(|(k, _)| *k == key) {
        i
    } else {
        processes.push((key, proc));
        processes.len() - 1
    };

    // References: the parent first, then the links (makeJaegerProtoReferences).
    let mut references: Vec<Reference> = r
        .parent_id
        .iter()
        .map(|p| Reference { ref_type: RefType::ChildOf, trace_id: tid.clone(), span_id: p.clone() })
        .collect();
    for link in &s.links {
        let ref_type = match link.attributes.iter().find(|kv| kv.key == "opentracing.ref_type") {
            Some(kv) if kv.value.as_ref().map(tracewire_store::text).as_deref() == Some("child_of") => RefType::ChildOf,
            _ => RefType::FollowsFrom,
        };
        let (link_trace, link_span) = (trace_id(&hex(&link.trace_id)), hex(&link.span_id));
        if r.parent_id.is_some()
            && references.first().is_some_and(|p| p.span_id == link_span && p.trace_id == link_trace)
        {
            // A link to the parent itself only sets the parent reference's type.
            references[0].ref_type = ref_type;
            continue;
        }
        references.push(Reference { ref_type, trace_id: link_trace, span_id: link_span });
    }

    // Tags, in the translator's order (getJaegerProtoSpanTags), then what it leaves out.
    let mut tags = Vec::with_capacity(s.attributes.len() + 8);
    let scope = &o.scope;
    for (key, alias, value) in [
        ("otel.scope.name", "otel.library.name", &scope.name),
        ("otel.scope.version", "otel.library.version", &scope.version),
    ] {
        if !value.is_empty() {
            tags.push(KeyValue::string(key, value));
            tags.push(KeyValue::string(alias, value));
        }
    }
    tags.extend(scope.attributes.iter().map(KeyValue::from_otlp));
    tags.extend(s.attributes.iter().map(KeyValue::from_otlp));
    let kind_name = match r.kind {
        kind::CLIENT => Some("client"),
        kind::SERVER => Some("server"),
        kind::PRODUCER => Some("producer"),
        kind::CONSUMER => Some("consumer"),
        kind::INTERNAL => Some("internal"),
        _ => None,
    };
    if let Some(k) = kind_name {
        tags.push(KeyValue::string("span.kind", k));
    }
    match r.status_code {
        status::OK => tags.push(KeyValue::string("otel.status_code", "OK")),
        status::ERROR => {
            tags.push(KeyValue::string("otel.status_code", "ERROR"));
            tags.push(KeyValue::new("error", TagValue::Bool(true)));
        }
        _ => {}
    }
    if !r.status_message.is_empty() {
        tags.push(KeyValue::string("otel.status_description", &r.status_message));
    }
    if !s.trace_state.is_empty() {
        tags.push(KeyValue::string("w3c.tracestate", &s.trace_state));
    }
    dropped(&mut tags, "otel.dropped_attributes_count", s.dropped_attributes_count);
    dropped(&mut tags, "otel.dropped_events_count", s.dropped_events_count);
    dropped(&mut tags, "otel.dropped_links_count", s.dropped_links_count);

    // Events (spanEventsToJaegerProtoLogs), moved with the span.
    let logs = s
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 2);
            if !e.name.is_empty() && !e.attributes.iter().any(|kv| kv.key == "event") {
                fields.push(KeyValue::string("event", &e.name));
            }
            fields.extend(e.attributes.iter().map(KeyValue::from_otlp));
            dropped(&mut fields, "otel.dropped_attributes_count", e.dropped_attributes_count);
            let at = i64::try_from(e.time_unix_nano).unwrap_or(i64::MAX).saturating_add(shift);
            Log { timestamp: micros(at), fields }
        })
        .collect();

    Span {
        trace_id: tid,
        span_id: r.span_id.clone(),
        flags: s.flags & 1,
        operation_name: r.name.clone(),
        references,
        start_time: micros(r.start_ns),
        duration: micros(r.duration_ns()),
        tags,
        logs,
        process_id: format!("p{}", pid + 1),
        warnings: (shift != 0).then(|| vec![skew_warning(shift)]),
    }
}
