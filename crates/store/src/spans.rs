//! Spans as the collector keeps them: [`SpanRecord`] (the analysis's view, with the OTLP
//! span whole), its conversions from and to OTLP, and the OTLP value helpers. The tables
//! are in `table.rs` (schema 4, the migration from schema 3, the inserts), the id columns
//! in `ids.rs`, the reads in `read.rs` and the in-place scan of a stored body in `scan.rs`.
//!
//! Invariant: OTLP in, store, OTLP out is field for field equal (tests: `tests/lossless.rs`
//! `every_otlp_field_comes_back_field_for_field`, `generated_spans_come_back_field_for_field`).

use std::collections::BTreeMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

mod ids;
mod read;
mod scan;
mod table;

pub use read::{SpanDetail, SpanFilter};
pub(crate) use read::{for_each_trace, load};
pub(crate) use table::{Interned, count, create_4, insert, insert_request, migrate_3_to_4};

/// OTLP's `SpanKind` values (`opentelemetry.proto.trace.v1.Span.SpanKind`).
pub mod kind {
    /// `SPAN_KIND_UNSPECIFIED`.
    pub const UNSPECIFIED: i32 = 0;
    /// `SPAN_KIND_INTERNAL`.
    pub const INTERNAL: i32 = 1;
    /// `SPAN_KIND_SERVER`.
    pub const SERVER: i32 = 2;
    /// `SPAN_KIND_CLIENT`.
    pub const CLIENT: i32 = 3;
    /// `SPAN_KIND_PRODUCER`.
    pub const PRODUCER: i32 = 4;
    /// `SPAN_KIND_CONSUMER`.
    pub const CONSUMER: i32 = 5;
}

/// OTLP's `Status.StatusCode` values.
pub mod status {
    /// `STATUS_CODE_UNSET`.
    pub const UNSET: i32 = 0;
    /// `STATUS_CODE_OK`.
    pub const OK: i32 = 1;
    /// `STATUS_CODE_ERROR`.
    pub const ERROR: i32 = 2;
}

/// A span exactly as OTLP delivered it, with the resource and instrumentation scope it
/// came under: nothing a sender set is lost. Spans of one request share their resource
/// and scope ([`Arc`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtlpSpan {
    /// The resource (`ResourceSpans.resource`; default when absent).
    pub resource: Arc<Resource>,
    /// `ResourceSpans.schema_url`.
    pub resource_schema_url: Arc<str>,
    /// The instrumentation scope (`ScopeSpans.scope`; default when absent).
    pub scope: Arc<InstrumentationScope>,
    /// `ScopeSpans.schema_url`.
    pub scope_schema_url: Arc<str>,
    /// The span, every field as received.
    pub span: Span,
}

/// One span, as tracewire's collector receives, stores and analyzes it (any source: OTLP,
/// Jaeger, tests).
///
/// The first fields are the analysis's view (ids as hex, attribute values as text); a span
/// that came from OTLP (or from a format converted to it) also carries everything it
/// arrived with in [`SpanRecord::otlp`], which the store persists and the writers (OTLP
/// JSON, Jaeger JSON) render from. [`SpanRecord::from_otlp`] makes one from OTLP,
/// [`to_request`] turns records back into an OTLP request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRecord {
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; `None` for a root.
    pub parent_id: Option<String>,
    /// Span name.
    pub name: String,
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Start, Unix nanoseconds, in the sender's clock.
    pub start_ns: i64,
    /// End, Unix nanoseconds, in the sender's clock.
    pub end_ns: i64,
    /// Attributes, values as text ([`text`]).
    pub attributes: BTreeMap<String, String>,
    /// The span kind ([`kind`]).
    pub kind: i32,
    /// The status code ([`status`]).
    pub status_code: i32,
    /// The status message (OTLP sends one with an error status only).
    pub status_message: String,
    /// The span as OTLP delivered it, when it came from OTLP (or was converted to it).
    pub otlp: Option<Arc<OtlpSpan>>,
}

/// Lowercase hex of bytes (ids).
///
/// ```
/// assert_eq!(tracewire_store::hex(&[0x0a, 0xff]), "0aff");
/// ```
pub fn hex(b: &[u8]) -> String {
    tracewire_context::to_hex(b)
}

/// The bytes of a hex string (either case), or `None` when it is not hex.
///
/// ```
/// assert_eq!(tracewire_store::unhex("0aFF"), Some(vec![0x0a, 0xff]));
/// assert_eq!(tracewire_store::unhex("0g"), None);
/// assert_eq!(tracewire_store::unhex("abc"), None);
/// ```
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks_exact(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// An attribute value as text: strings as they are, numbers and booleans as Rust prints
/// them, bytes as hex, arrays and key-value lists as JSON.
///
/// ```
/// use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
///
/// let v = |v| AnyValue { value: Some(v) };
/// assert_eq!(tracewire_store::text(&v(Value::IntValue(7))), "7");
/// assert_eq!(tracewire_store::text(&v(Value::BoolValue(true))), "true");
/// assert_eq!(tracewire_store::text(&v(Value::StringValue("a".into()))), "a");
/// ```
pub fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)) => {
            serde_json::to_string(&json_of(v)).unwrap_or_default()
        }
        // A reference into a profiles dictionary (not used by traces): the index.
        Some(any_value::Value::StringValueStrindex(i)) => i.to_string(),
        None => String::new(),
    }
}

/// A value as plain JSON (for arrays and lists in [`text`]).
fn json_of(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        Some(any_value::Value::StringValue(s)) => J::from(s.as_str()),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(J::from(d.to_string()), J::Number)
        }
        Some(any_value::Value::BoolValue(b)) => J::from(*b),
        Some(any_value::Value::BytesValue(b)) => J::from(hex(b)),
        Some(any_value::Value::ArrayValue(a)) => J::Array(a.values.iter().map(json_of).collect()),
        Some(any_value::Value::KvlistValue(l)) => {
            J::Object(l.values.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(J::Null, json_of))).collect())
        }
        Some(any_value::Value::StringValueStrindex(i)) => J::from(*i),
        None => J::Null,
    }
}

/// The `service.name` of a resource, as text (empty when it has none).
pub fn service_of(resource: &Resource) -> String {
    resource
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .map(text)
        .unwrap_or_default()
}

impl SpanRecord {
    /// The record of an OTLP span, keeping all of it ([`SpanRecord::otlp`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    /// use opentelemetry_proto::tonic::resource::v1::Resource;
    /// use opentelemetry_proto::tonic::trace::v1::{Span, Status};
    /// use tracewire_store::{OtlpSpan, SpanRecord, status};
    ///
    /// let kv = |k: &str, v| KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() };
    /// let resource = Resource { attributes: vec![kv("service.name", Value::StringValue("api".into()))], ..Default::default() };
    /// let span = Span {
    ///     trace_id: vec![1; 16], span_id: vec![2; 8], name: "GET /".into(), kind: 2,
    ///     start_time_unix_nano: 1_000, end_time_unix_nano: 3_000,
    ///     attributes: vec![kv("http.response.status_code", Value::IntValue(500))],
    ///     status: Some(Status { code: 2, message: "boom".into() }),
    ///     ..Default::default()
    /// };
    /// let r = SpanRecord::from_otlp(OtlpSpan { resource: Arc::new(resource), span, ..Default::default() });
    /// assert_eq!((r.service.as_str(), r.kind, r.status_code), ("api", 2, status::ERROR));
    /// assert_eq!(r.attributes["http.response.status_code"], "500");
    /// assert_eq!(r.span_id, "0202020202020202");
    /// assert!(r.is_error());
    /// ```
    pub fn from_otlp(otlp: OtlpSpan) -> Self {
        let s = &otlp.span;
        let status = s.status.as_ref();
        Self {
            trace_id: hex(&s.trace_id),
            span_id: hex(&s.span_id),
            parent_id: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
            name: s.name.clone(),
            service: service_of(&otlp.resource),
            start_ns: i64::try_from(s.start_time_unix_nano).unwrap_or(i64::MAX),
            end_ns: i64::try_from(s.end_time_unix_nano).unwrap_or(i64::MAX),
            attributes: s
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default()))
                .collect(),
            kind: s.kind,
            status_code: status.map_or(status::UNSET, |st| st.code),
            status_message: status.map(|st| st.message.clone()).unwrap_or_default(),
            otlp: Some(Arc::new(otlp)),
        }
    }

    /// The records of every span of an OTLP export request, in request order.
    pub fn all_of(request: &ExportTraceServiceRequest) -> Vec<Self> {
        let mut out = Vec::new();
        for rs in &request.resource_spans {
            let resource = Arc::new(rs.resource.clone().unwrap_or_default());
            let resource_schema_url: Arc<str> = Arc::from(rs.schema_url.as_str());
            for ss in &rs.scope_spans {
                let scope = Arc::new(ss.scope.clone().unwrap_or_default());
                let scope_schema_url: Arc<str> = Arc::from(ss.schema_url.as_str());
                out.extend(ss.spans.iter().map(|span| {
                    Self::from_otlp(OtlpSpan {
                        resource: Arc::clone(&resource),
                        resource_schema_url: Arc::clone(&resource_schema_url),
                        scope: Arc::clone(&scope),
                        scope_schema_url: Arc::clone(&scope_schema_url),
                        span: span.clone(),
                    })
                }));
            }
        }
        out
    }

    /// The span in OTLP: what it arrived with, with the analysis's view applied over it
    /// (ids, name, times, kind and status from the record's fields; the record's text
    /// attributes only for a span that has no OTLP form, as string attributes).
    pub fn to_otlp(&self) -> OtlpSpan {
        let mut o = self.otlp.as_deref().cloned().unwrap_or_else(|| {
            let mut resource = Resource::default();
            if !self.service.is_empty() {
                resource.attributes.push(string_kv("service.name", &self.service));
            }
            let mut o = OtlpSpan { resource: Arc::new(resource), ..OtlpSpan::default() };
            o.span.attributes = self.attributes.iter().map(|(k, v)| string_kv(k, v)).collect();
            o
        });
        let s = &mut o.span;
        s.trace_id = unhex(&self.trace_id).unwrap_or_default();
        s.span_id = unhex(&self.span_id).unwrap_or_default();
        s.parent_span_id = self.parent_id.as_deref().and_then(unhex).unwrap_or_default();
        s.name.clone_from(&self.name);
        // A time or status the record did not change stays exactly as received (a time past
        // `i64::MAX` nanoseconds, an empty status that was sent).
        let unchanged = |t: u64, view: i64| i64::try_from(t).unwrap_or(i64::MAX) == view;
        if !unchanged(s.start_time_unix_nano, self.start_ns) {
            s.start_time_unix_nano = u64::try_from(self.start_ns).unwrap_or(0);
        }
        if !unchanged(s.end_time_unix_nano, self.end_ns) {
            s.end_time_unix_nano = u64::try_from(self.end_ns).unwrap_or(0);
        }
        s.kind = self.kind;
        let received = s.status.as_ref().map_or((status::UNSET, ""), |st| (st.code, st.message.as_str()));
        if received != (self.status_code, self.status_message.as_str()) {
            s.status = (self.status_code != status::UNSET || !self.status_message.is_empty())
                .then(|| Status { code: self.status_code, message: self.status_message.clone() });
        }
        o
    }

    /// The stage: the `tracewire.stage` attribute, falling back to the span name.
    ///
    /// ```
    /// use tracewire_store::SpanRecord;
    ///
    /// let mut s = SpanRecord { name: "exec".into(), ..SpanRecord::default() };
    /// assert_eq!(s.stage(), "exec");
    /// s.attributes.insert("tracewire.stage".into(), "process.spawn".into());
    /// assert_eq!(s.stage(), "process.spawn");
    /// ```
    pub fn stage(&self) -> &str {
        self.attributes.get(tracewire_telemetry::STAGE_ATTRIBUTE).map_or(self.name.as_str(), String::as_str)
    }

    /// Duration in nanoseconds (0 for a span that ends before it starts).
    pub fn duration_ns(&self) -> i64 {
        (self.end_ns - self.start_ns).max(0)
    }

    /// Whether the span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.status_code == status::ERROR
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..KeyValue::default()
    }
}

/// Records as one OTLP export request: spans grouped under their resource and scope (equal
/// resources and scopes share one `ResourceSpans`/`ScopeSpans`), in first-seen order.
///
/// ```
/// use tracewire_store::{SpanRecord, to_request};
///
/// let span = |id: &str, service: &str| SpanRecord {
///     trace_id: "0af7651916cd43dd8448eb211c80319c".into(), span_id: id.into(),
///     service: service.into(), name: "s".into(), ..SpanRecord::default()
/// };
/// let request = to_request(&[span("b7ad6b7169203331", "a"), span("00f067aa0ba902b7", "b"), span("00f067aa0ba902b8", "a")]);
/// assert_eq!(request.resource_spans.len(), 2);
/// assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 2);
/// assert_eq!(SpanRecord::all_of(&request)[1].span_id, "00f067aa0ba902b8");
/// ```
pub fn to_request(records: &[SpanRecord]) -> ExportTraceServiceRequest {
    // The resources and scopes of `out`, in its order: the same `Arc` is the same resource
    // even when `==` says otherwise (a NaN attribute is not equal to itself).
    let mut seen: Vec<(Arc<Resource>, Vec<Arc<InstrumentationScope>>)> = Vec::new();
    let mut out = ExportTraceServiceRequest::default();
    for r in records {
        let o = r.to_otlp();
        let at = seen.iter().zip(&out.resource_spans).position(|((resource, _), rs)| {
            (Arc::ptr_eq(resource, &o.resource) || **resource == *o.resource) && rs.schema_url == *o.resource_schema_url
        });
        let i = at.unwrap_or_else(|| {
            out.resource_spans.push(ResourceSpans {
                resource: Some((*o.resource).clone()),
                schema_url: o.resource_schema_url.to_string(),
                scope_spans: Vec::new(),
            });
            seen.push((Arc::clone(&o.resource), Vec::new()));
            seen.len() - 1
        });
        let (rs, scopes) = (&mut out.resource_spans[i], &mut seen[i].1);
        let at = scopes.iter().zip(&rs.scope_spans).position(|(scope, ss)| {
            (Arc::ptr_eq(scope, &o.scope) || **scope == *o.scope) && ss.schema_url == *o.scope_schema_url
        });
        let j = at.unwrap_or_else(|| {
            rs.scope_spans.push(ScopeSpans {
                scope: Some((*o.scope).clone()),
                schema_url: o.scope_schema_url.to_string(),
                spans: Vec::new(),
            });
            scopes.push(Arc::clone(&o.scope));
            scopes.len() - 1
        });
        rs.scope_spans[j].spans.push(o.span);
    }
    out
}
