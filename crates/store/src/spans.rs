//! Spans as the collector keeps them, and their table.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};

use crate::StoreError;

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
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 0xf)]));
    }
    s
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

/// The tables of schema 4.
///
/// - `resources` and `scopes` hold each distinct resource (with its schema URL, encoded as
///   a `ResourceSpans` without spans) and instrumentation scope (a `ScopeSpans` without
///   spans) once; `resources.service` is its `service.name`.
/// - `spans` holds the analysis's columns and `body`: the OTLP `Span` in protobuf without
///   the fields the columns hold (ids, name, times, kind, status code), rebuilt on load.
///   Ids are blobs (their bytes; an id that is not lowercase hex, which only a record
///   built by hand can have, stays text). Rows are appended in `rowid` order, so pages
///   fill completely; `spans_id` keys a span by (trace, span) id, so a batch an exporter
///   retries is stored once, and serves the trace filter; `spans_start` the time range and
///   the load order.
const SCHEMA_4: &str = "
     CREATE TABLE resources (
         id INTEGER PRIMARY KEY,
         service TEXT NOT NULL,
         body BLOB NOT NULL UNIQUE
     );
     CREATE TABLE scopes (
         id INTEGER PRIMARY KEY,
         body BLOB NOT NULL UNIQUE
     );
     CREATE TABLE spans (
         trace_id BLOB NOT NULL,
         span_id BLOB NOT NULL,
         parent_id BLOB,
         name TEXT NOT NULL,
         start_ns INTEGER NOT NULL,
         end_ns INTEGER NOT NULL,
         kind INTEGER NOT NULL,
         status_code INTEGER NOT NULL,
         resource_id INTEGER NOT NULL REFERENCES resources (id),
         scope_id INTEGER NOT NULL REFERENCES scopes (id),
         body BLOB NOT NULL
     );
     CREATE UNIQUE INDEX spans_id ON spans (trace_id, span_id);
     CREATE INDEX spans_start ON spans (start_ns);";

/// Creates the spans tables of schema 4 in a database of schema 2 (or older, brought to 2).
pub(crate) fn create_4(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(&format!("BEGIN; {SCHEMA_4} PRAGMA user_version = 4; COMMIT;"))?;
    Ok(())
}

/// Schema 3 -> 4 in one transaction: every span of the schema 3 table is rewritten in the
/// new tables as a record with the text attributes it was stored with (string attributes
/// in OTLP, a resource with its `service.name`), so it loads as it did. A row whose
/// attributes are not JSON fails the migration ([`StoreError::Corrupt`], naming it); the
/// database stays at schema 3.
pub(crate) fn migrate_3_to_4(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(&format!("ALTER TABLE spans RENAME TO spans_3; DROP INDEX spans_start; {SCHEMA_4}"))?;
    {
        let mut stmt = tx
            .prepare("SELECT trace_id, span_id, parent_id, name, service, start_ns, end_ns, attributes FROM spans_3")?;
        let mut rows = stmt.query([])?;
        let mut interned = Interned::default();
        let mut batch = Vec::with_capacity(1024);
        while let Some(row) = rows.next()? {
            let mut span = SpanRecord {
                trace_id: row.get(0)?,
                span_id: row.get(1)?,
                parent_id: row.get(2)?,
                name: row.get(3)?,
                service: row.get(4)?,
                start_ns: row.get(5)?,
                end_ns: row.get(6)?,
                ..SpanRecord::default()
            };
            let attributes: String = row.get(7)?;
            span.attributes = serde_json::from_str(&attributes).map_err(|e| {
                StoreError::Corrupt(format!(
                    "span {}/{}: attributes are not a JSON object: {e}",
                    span.trace_id, span.span_id
                ))
            })?;
            batch.push(span);
            if batch.len() == batch.capacity() {
                insert(&tx, &batch, &mut interned)?;
                batch.clear();
            }
        }
        insert(&tx, &batch, &mut interned)?;
    }
    tx.execute_batch("DROP TABLE spans_3; PRAGMA user_version = 4;")?;
    tx.commit()?;
    Ok(())
}

/// Resources and scopes the writer has stored, by their encoding: a request's resource is
/// looked up once, not once per span. Cleared when a write fails (its ids were rolled
/// back) and when it grows past [`Interned::MAX`].
#[derive(Debug, Default)]
pub(crate) struct Interned {
    resources: HashMap<Vec<u8>, i64>,
    scopes: HashMap<Vec<u8>, i64>,
}

impl Interned {
    /// Most entries kept (a sender that makes a resource per request cannot grow it).
    const MAX: usize = 4096;

    /// Forgets every id (after a failed write, whose transaction was rolled back).
    pub(crate) fn clear(&mut self) {
        self.resources.clear();
        self.scopes.clear();
    }

    pub(crate) fn resource(&mut self, tx: &Connection, body: &[u8], service: &str) -> Result<i64, StoreError> {
        Self::id(&mut self.resources, tx, "resources", body, Some(service))
    }

    pub(crate) fn scope(&mut self, tx: &Connection, body: &[u8]) -> Result<i64, StoreError> {
        Self::id(&mut self.scopes, tx, "scopes", body, None)
    }

    fn id(
        map: &mut HashMap<Vec<u8>, i64>,
        tx: &Connection,
        table: &str,
        body: &[u8],
        service: Option<&str>,
    ) -> Result<i64, StoreError> {
        if let Some(id) = map.get(body) {
            return Ok(*id);
        }
        let found: Option<i64> = tx
            .prepare_cached(&format!("SELECT id FROM {table} WHERE body = ?1"))?
            .query_row([body], |r| r.get(0))
            .optional()?;
        let id = if let Some(id) = found {
            id
        } else {
            match service {
                Some(service) => {
                    tx.prepare_cached("INSERT INTO resources (service, body) VALUES (?1, ?2)")?
                        .execute(params![service, body])?;
                }
                None => {
                    tx.prepare_cached(&format!("INSERT INTO {table} (body) VALUES (?1)"))?.execute([body])?;
                }
            }
            tx.last_insert_rowid()
        };
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(body.to_vec(), id);
        Ok(id)
    }
}

/// An id as stored: its bytes when `text` is their lowercase hex, else the text.
fn id_sql<'a>(text: &'a str, raw: &'a [u8]) -> ToSqlOutput<'a> {
    if is_hex_of(text, raw) {
        return ToSqlOutput::Borrowed(ValueRef::Blob(raw));
    }
    match unhex(text) {
        Some(bytes) if is_hex_of(text, &bytes) => ToSqlOutput::Owned(rusqlite::types::Value::Blob(bytes)),
        _ => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
    }
}

/// Whether `text` is the lowercase hex of `bytes`.
fn is_hex_of(text: &str, bytes: &[u8]) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    text.len() == bytes.len() * 2
        && text
            .as_bytes()
            .chunks_exact(2)
            .zip(bytes)
            .all(|(p, b)| p[0] == DIGITS[usize::from(b >> 4)] && p[1] == DIGITS[usize::from(b & 0xf)])
}

/// A stored id back as the record's text (blobs as hex).
fn id_text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Blob(b) => hex(b),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        _ => String::new(),
    }
}

/// [`id_text`] written over `out`, keeping its allocation.
fn id_text_into(v: ValueRef<'_>, out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    match v {
        ValueRef::Blob(b) => {
            out.reserve(b.len() * 2);
            for x in b {
                out.push(char::from(DIGITS[usize::from(x >> 4)]));
                out.push(char::from(DIGITS[usize::from(x & 0xf)]));
            }
        }
        ValueRef::Text(t) => out.push_str(&String::from_utf8_lossy(t)),
        _ => {}
    }
}

/// The bytes a stored id stands for in OTLP: a blob's bytes, a text id's hex (empty when
/// it is not hex).
fn id_bytes(v: ValueRef<'_>) -> Vec<u8> {
    match v {
        ValueRef::Blob(b) => b.to_vec(),
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(unhex).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Encodes `span` without the fields the columns hold (ids, name, times, kind, status
/// code) into `buf`, as prost encodes such a `Span`, with `status` as its status. A time
/// is kept when the column cannot give it back (beyond `i64::MAX` nanoseconds).
fn encode_body(span: &Span, status: Option<&Status>, keep_times: (bool, bool), buf: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint, fixed64, message, string, uint32};
    buf.clear();
    if !span.trace_state.is_empty() {
        string::encode(3, &span.trace_state, buf);
    }
    if keep_times.0 && span.start_time_unix_nano != 0 {
        fixed64::encode(7, &span.start_time_unix_nano, buf);
    }
    if keep_times.1 && span.end_time_unix_nano != 0 {
        fixed64::encode(8, &span.end_time_unix_nano, buf);
    }
    message::encode_repeated(9, &span.attributes, buf);
    if span.dropped_attributes_count != 0 {
        uint32::encode(10, &span.dropped_attributes_count, buf);
    }
    message::encode_repeated(11, &span.events, buf);
    if span.dropped_events_count != 0 {
        uint32::encode(12, &span.dropped_events_count, buf);
    }
    message::encode_repeated(13, &span.links, buf);
    if span.dropped_links_count != 0 {
        uint32::encode(14, &span.dropped_links_count, buf);
    }
    if let Some(st) = status {
        // The status without its code (a column): only the message, if any.
        encode_key(15, WireType::LengthDelimited, buf);
        if st.message.is_empty() {
            encode_varint(0, buf);
        } else {
            encode_varint(string::encoded_len(2, &st.message) as u64, buf);
            string::encode(2, &st.message, buf);
        }
    }
    if span.flags != 0 {
        prost::encoding::fixed32::encode(16, &span.flags, buf);
    }
}

/// A protobuf string field (omitted when empty, as prost does).
fn str_field(tag: u32, value: &str, buf: &mut Vec<u8>) {
    use prost::encoding::{WireType, encode_key, encode_varint};
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

/// The status the record's view gives its OTLP span (as [`SpanRecord::to_otlp`]).
fn view_status<'a>(r: &SpanRecord, span: &'a Span, owned: &'a mut Option<Status>) -> Option<&'a Status> {
    let (code, message) = span.status.as_ref().map_or((status::UNSET, ""), |st| (st.code, st.message.as_str()));
    if (code, message) == (r.status_code, r.status_message.as_str()) {
        return span.status.as_ref();
    }
    *owned = (r.status_code != status::UNSET || !r.status_message.is_empty())
        .then(|| Status { code: r.status_code, message: r.status_message.clone() });
    owned.as_ref()
}

/// Writes `spans`; a span stored before (same trace and span id: an exporter's retry) is
/// kept as first stored, and its retry writes nothing.
pub(crate) fn insert(tx: &Connection, spans: &[SpanRecord], interned: &mut Interned) -> Result<(), StoreError> {
    use prost::encoding::message;
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO spans (trace_id, span_id, parent_id, name, start_ns, end_ns, kind, status_code, resource_id, scope_id, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    // The ids of this batch's resources and scopes, by their `Arc`s: the spans of one
    // request encode and look up their resource and scope once.
    let mut resources: HashMap<(usize, usize), i64> = HashMap::new();
    let mut scopes: HashMap<(usize, usize), i64> = HashMap::new();
    let mut buf = Vec::with_capacity(512);
    let mut body = Vec::with_capacity(512);
    for r in spans {
        let owned;
        let o: &OtlpSpan = if let Some(o) = &r.otlp {
            o
        } else {
            owned = r.to_otlp();
            &owned
        };
        let key = (Arc::as_ptr(&o.resource) as usize, Arc::as_ptr(&o.resource_schema_url).cast::<u8>() as usize);
        // (A record without OTLP has its own resource and scope, dropped after its row:
        // their addresses say nothing.)
        let resource_id = if let (Some(id), true) = (resources.get(&key), r.otlp.is_some()) {
            *id
        } else {
            buf.clear();
            message::encode(1, &*o.resource, &mut buf);
            str_field(3, &o.resource_schema_url, &mut buf);
            let id = interned.resource(tx, &buf, &service_of(&o.resource))?;
            if r.otlp.is_some() {
                resources.insert(key, id);
            }
            id
        };
        let key = (Arc::as_ptr(&o.scope) as usize, Arc::as_ptr(&o.scope_schema_url).cast::<u8>() as usize);
        let scope_id = if let (Some(id), true) = (scopes.get(&key), r.otlp.is_some()) {
            *id
        } else {
            buf.clear();
            message::encode(1, &*o.scope, &mut buf);
            str_field(3, &o.scope_schema_url, &mut buf);
            let id = interned.scope(tx, &buf)?;
            if r.otlp.is_some() {
                scopes.insert(key, id);
            }
            id
        };
        let s = &o.span;
        let mut status_owned = None;
        let status = view_status(r, s, &mut status_owned);
        // A time the column gives back is not repeated in the body.
        let kept =
            |t: u64, column: i64| i64::try_from(t).unwrap_or(i64::MAX) == column && u64::try_from(column) != Ok(t);
        encode_body(
            s,
            status,
            (kept(s.start_time_unix_nano, r.start_ns), kept(s.end_time_unix_nano, r.end_ns)),
            &mut body,
        );
        stmt.execute(params![
            id_sql(&r.trace_id, &s.trace_id),
            id_sql(&r.span_id, &s.span_id),
            r.parent_id.as_deref().map(|p| id_sql(p, &s.parent_span_id)),
            r.name,
            r.start_ns,
            r.end_ns,
            r.kind,
            r.status_code,
            resource_id,
            scope_id,
            body,
        ])?;
    }
    Ok(())
}

/// Writes the spans of `request` with the rows [`insert`] writes for
/// [`SpanRecord::all_of`] of it, read from the request's spans as they are (no records).
pub(crate) fn insert_request(
    tx: &Connection,
    request: &ExportTraceServiceRequest,
    interned: &mut Interned,
) -> Result<(), StoreError> {
    use prost::encoding::message;
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO spans (trace_id, span_id, parent_id, name, start_ns, end_ns, kind, status_code, resource_id, scope_id, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let (no_resource, no_scope) = (Resource::default(), InstrumentationScope::default());
    let mut buf = Vec::with_capacity(512);
    let mut body = Vec::with_capacity(512);
    for rs in &request.resource_spans {
        let resource = rs.resource.as_ref().unwrap_or(&no_resource);
        buf.clear();
        message::encode(1, resource, &mut buf);
        str_field(3, &rs.schema_url, &mut buf);
        let resource_id = interned.resource(tx, &buf, &service_of(resource))?;
        for ss in &rs.scope_spans {
            buf.clear();
            message::encode(1, ss.scope.as_ref().unwrap_or(&no_scope), &mut buf);
            str_field(3, &ss.schema_url, &mut buf);
            let scope_id = interned.scope(tx, &buf)?;
            for s in &ss.spans {
                let start_ns = i64::try_from(s.start_time_unix_nano).unwrap_or(i64::MAX);
                let end_ns = i64::try_from(s.end_time_unix_nano).unwrap_or(i64::MAX);
                // A time the column cannot give back (past `i64::MAX`) stays in the body.
                encode_body(
                    s,
                    s.status.as_ref(),
                    (
                        u64::try_from(start_ns) != Ok(s.start_time_unix_nano),
                        u64::try_from(end_ns) != Ok(s.end_time_unix_nano),
                    ),
                    &mut body,
                );
                let parent = (!s.parent_span_id.is_empty()).then_some(&s.parent_span_id);
                stmt.execute(params![
                    s.trace_id,
                    s.span_id,
                    parent,
                    s.name,
                    start_ns,
                    end_ns,
                    s.kind,
                    s.status.as_ref().map_or(status::UNSET, |st| st.code),
                    resource_id,
                    scope_id,
                    body,
                ])?;
            }
        }
    }
    Ok(())
}

pub(crate) fn count(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM spans", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Which stored spans to read ([`crate::Store::spans_matching`]); the default selects all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanFilter {
    /// Only these traces (hex ids, either case); empty: every trace.
    pub traces: Vec<String>,
    /// Only spans that start at or after this instant (Unix nanoseconds).
    pub since_ns: Option<i64>,
    /// Only spans that start before this instant (Unix nanoseconds).
    pub until_ns: Option<i64>,
}

impl SpanFilter {
    /// Whether the filter selects `span` (what the store's query selects).
    pub fn matches(&self, span: &SpanRecord) -> bool {
        (self.traces.is_empty() || self.traces.iter().any(|t| t.eq_ignore_ascii_case(&span.trace_id)))
            && self.since_ns.is_none_or(|t| span.start_ns >= t)
            && self.until_ns.is_none_or(|t| span.start_ns < t)
    }
}

/// How much of each span a trace stream reads ([`crate::Store::for_each_trace_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SpanDetail {
    /// Everything: each span as [`SpanRecord::from_otlp`] gives it, with its OTLP form.
    #[default]
    Full,
    /// The analysis's view, from the columns: ids, name, service, times, kind, status code
    /// and message, and of the attributes only the keys listed (as [`text`]); no
    /// [`SpanRecord::otlp`]. The body is scanned for those attributes, not decoded, so a
    /// span costs a few allocations instead of its whole OTLP form.
    Columns(Vec<String>),
}

/// Trace ids bound in one query at most (SQLite's variable limit is far above).
const TRACES_PER_QUERY: usize = 400;

/// Reads the spans `filter` selects, ordered by start (then trace and span id), each as
/// [`SpanRecord::from_otlp`] gives it, spans of one resource or scope sharing it.
pub(crate) fn load(conn: &Connection, filter: &SpanFilter) -> Result<Vec<SpanRecord>, StoreError> {
    let mut reader = Reader::default();
    if filter.traces.is_empty() {
        reader.query(conn, filter, &[])?;
        return Ok(reader.out);
    }
    // Each trace as its bytes (either case of hex) and as given (a text id).
    let mut ids: Vec<ToSqlOutput<'_>> = Vec::new();
    for t in &filter.traces {
        if let Some(bytes) = unhex(t) {
            ids.push(ToSqlOutput::Owned(rusqlite::types::Value::Blob(bytes)));
        }
        ids.push(ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())));
    }
    let chunks = ids.chunks(TRACES_PER_QUERY);
    let several = chunks.len() > 1;
    for chunk in chunks {
        reader.query(conn, filter, chunk)?;
    }
    if several {
        reader.out.sort_by(|a, b| (a.start_ns, &a.trace_id, &a.span_id).cmp(&(b.start_ns, &b.trace_id, &b.span_id)));
        reader.out.dedup_by(|a, b| (&a.trace_id, &a.span_id) == (&b.trace_id, &b.span_id));
    }
    Ok(reader.out)
}

/// The query of the spans `filter` selects (`traces`: the ids to bind, none for every
/// trace), in `order`, with its arguments.
fn select<'a>(
    filter: &'a SpanFilter,
    traces: &'a [ToSqlOutput<'_>],
    order: &str,
) -> (String, Vec<&'a dyn rusqlite::ToSql>) {
    let mut sql = String::from(
        "SELECT trace_id, span_id, parent_id, name, start_ns, end_ns, kind, status_code, resource_id, scope_id, body
         FROM spans WHERE 1",
    );
    let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
    if !traces.is_empty() {
        sql.push_str(" AND trace_id IN (");
        for (i, t) in traces.iter().enumerate() {
            sql.push_str(if i == 0 { "?" } else { ", ?" });
            args.push(t);
        }
        sql.push(')');
    }
    if let Some(t) = &filter.since_ns {
        sql.push_str(" AND start_ns >= ?");
        args.push(t);
    }
    if let Some(t) = &filter.until_ns {
        sql.push_str(" AND start_ns < ?");
        args.push(t);
    }
    sql.push_str(" ORDER BY ");
    sql.push_str(order);
    (sql, args)
}

/// Loads spans, with the resources and scopes they refer to read once each.
#[derive(Default)]
struct Reader {
    resources: HashMap<i64, (Arc<Resource>, Arc<str>)>,
    scopes: HashMap<i64, (Arc<InstrumentationScope>, Arc<str>)>,
    /// `resources.service` by id ([`SpanDetail::Columns`]).
    services: HashMap<i64, String>,
    detail: SpanDetail,
    out: Vec<SpanRecord>,
    /// Traces the consumer handed back ([`crate::Store::for_each_trace_recycling`]).
    spare: Option<std::sync::mpsc::Receiver<Vec<SpanRecord>>>,
    /// Records of those traces, to be filled again ([`SpanDetail::Columns`]), the next last.
    records: Vec<SpanRecord>,
    /// Their emptied vectors, for the next traces.
    vectors: Vec<Vec<SpanRecord>>,
}

impl Reader {
    fn query(&mut self, conn: &Connection, filter: &SpanFilter, traces: &[ToSqlOutput<'_>]) -> Result<(), StoreError> {
        let (sql, args) = select(filter, traces, "start_ns, trace_id, span_id");
        // One statement per number of traces: only the unfiltered ones are worth caching.
        let (mut cached, mut fresh);
        let stmt: &mut rusqlite::Statement<'_> = if traces.is_empty() {
            cached = conn.prepare_cached(&sql)?;
            &mut cached
        } else {
            fresh = conn.prepare(&sql)?;
            &mut fresh
        };
        let mut rows = stmt.query(args.as_slice())?;
        while let Some(row) = rows.next()? {
            let span = self.row(conn, row)?;
            self.out.push(span);
        }
        Ok(())
    }

    fn row(&mut self, conn: &Connection, row: &rusqlite::Row<'_>) -> Result<SpanRecord, StoreError> {
        let (trace, id, parent) = (row.get_ref(0)?, row.get_ref(1)?, row.get_ref(2)?);
        let trace_id = id_text(trace);
        let span_id = id_text(id);
        let corrupt = |what: &str| StoreError::Corrupt(format!("span {trace_id}/{span_id}: {what}"));
        let body = row.get_ref(10)?.as_blob().map_err(|e| corrupt(&format!("body: {e}")))?;
        let mut span = Span::decode(body).map_err(|e| corrupt(&format!("body: {e}")))?;
        let (start_ns, end_ns): (i64, i64) = (row.get(4)?, row.get(5)?);
        span.trace_id = id_bytes(trace);
        span.span_id = id_bytes(id);
        span.parent_span_id = id_bytes(parent);
        span.name = row.get(3)?;
        if span.start_time_unix_nano == 0 {
            span.start_time_unix_nano = u64::try_from(start_ns).unwrap_or(0);
        }
        if span.end_time_unix_nano == 0 {
            span.end_time_unix_nano = u64::try_from(end_ns).unwrap_or(0);
        }
        span.kind = row.get(6)?;
        let code: i32 = row.get(7)?;
        match &mut span.status {
            Some(st) => st.code = code,
            None if code != status::UNSET => span.status = Some(Status { code, ..Status::default() }),
            None => {}
        }
        let (resource, resource_schema_url) = self.resource(conn, row.get(8)?).map_err(|e| corrupt(&e))?;
        let (scope, scope_schema_url) = self.scope(conn, row.get(9)?).map_err(|e| corrupt(&e))?;
        let mut r = SpanRecord::from_otlp(OtlpSpan { resource, resource_schema_url, scope, scope_schema_url, span });
        // The columns are the record's view (ids that are not hex, times out of OTLP's range).
        if matches!(trace, ValueRef::Text(_)) {
            r.trace_id = trace_id;
        }
        if matches!(id, ValueRef::Text(_)) {
            r.span_id = span_id;
        }
        if matches!(parent, ValueRef::Text(_)) {
            r.parent_id = Some(id_text(parent));
        }
        r.start_ns = start_ns;
        r.end_ns = end_ns;
        Ok(r)
    }

    /// A row as [`SpanDetail::Columns`] reads it (`wanted`: the attributes kept), written
    /// over `r` (a record of an earlier row, or a new one): every field is set, and its
    /// strings keep their allocations.
    fn row_columns(
        &mut self,
        conn: &Connection,
        row: &rusqlite::Row<'_>,
        wanted: &[String],
        r: &mut SpanRecord,
    ) -> Result<(), StoreError> {
        let (trace, id, parent) = (row.get_ref(0)?, row.get_ref(1)?, row.get_ref(2)?);
        id_text_into(trace, &mut r.trace_id);
        id_text_into(id, &mut r.span_id);
        if matches!(parent, ValueRef::Null) {
            r.parent_id = None;
        } else {
            id_text_into(parent, r.parent_id.get_or_insert_with(String::new));
        }
        let name = row
            .get_ref(3)?
            .as_str()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e)))?;
        name.clone_into(&mut r.name);
        r.start_ns = row.get(4)?;
        r.end_ns = row.get(5)?;
        r.kind = row.get(6)?;
        r.status_code = row.get(7)?;
        r.otlp = None;
        let resource: i64 = row.get(8)?;
        if let Some(service) = self.services.get(&resource) {
            service.clone_into(&mut r.service);
        } else {
            let service: String = conn
                .prepare_cached("SELECT service FROM resources WHERE id = ?1")?
                .query_row([resource], |row| row.get(0))
                .map_err(|e| {
                    StoreError::Corrupt(format!("span {}/{}: resource {resource}: {e}", r.trace_id, r.span_id))
                })?;
            r.service.clone_from(&service);
            self.services.insert(resource, service);
        }
        let body = row
            .get_ref(10)?
            .as_blob()
            .map_err(|e| StoreError::Corrupt(format!("span {}/{}: body: {e}", r.trace_id, r.span_id)))?;
        if scan_body(body, wanted, &mut r.attributes, &mut r.status_message).is_none() {
            // Not the encoding the writer produces: decode it as protobuf (the same result,
            // or the error a full load gives).
            let span = Span::decode(body)
                .map_err(|e| StoreError::Corrupt(format!("span {}/{}: body: {e}", r.trace_id, r.span_id)))?;
            r.attributes = span
                .attributes
                .iter()
                .filter(|kv| wanted.contains(&kv.key))
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default()))
                .collect();
            r.status_message = span.status.map(|st| st.message).unwrap_or_default();
        }
        Ok(())
    }

    /// A record to fill: one of a trace handed back, else a new one.
    fn spare_record(&mut self) -> SpanRecord {
        if self.records.is_empty() {
            self.take_spare();
        }
        self.records.pop().unwrap_or_default()
    }

    /// A vector for the next trace's records: one handed back, else a new one.
    fn spare_vector(&mut self) -> Vec<SpanRecord> {
        self.vectors.pop().unwrap_or_default()
    }

    /// Moves the records of the traces handed back so far into [`Reader::records`].
    fn take_spare(&mut self) {
        /// Records kept at most (the consumer hands back what it was sent, which the
        /// channel to it bounds; this bounds a consumer that does otherwise).
        const MOST: usize = 1 << 16;
        let Some(spare) = &self.spare else { return };
        while let Ok(mut trace) = spare.try_recv() {
            // Reversed, so that records are taken again in the order they came.
            let room = MOST.saturating_sub(self.records.len());
            self.records.extend(trace.drain(..).rev().take(room));
            if self.vectors.len() < 1024 {
                trace.clear();
                self.vectors.push(trace);
            }
        }
    }

    fn resource(&mut self, conn: &Connection, id: i64) -> Result<(Arc<Resource>, Arc<str>), String> {
        if let Some(r) = self.resources.get(&id) {
            return Ok(r.clone());
        }
        let rs = ResourceSpans::decode(blob(conn, "resources", id)?.as_slice())
            .map_err(|e| format!("resource {id}: {e}"))?;
        let r = (Arc::new(rs.resource.unwrap_or_default()), Arc::from(rs.schema_url));
        self.resources.insert(id, r.clone());
        Ok(r)
    }

    fn scope(&mut self, conn: &Connection, id: i64) -> Result<(Arc<InstrumentationScope>, Arc<str>), String> {
        if let Some(s) = self.scopes.get(&id) {
            return Ok(s.clone());
        }
        let ss = ScopeSpans::decode(blob(conn, "scopes", id)?.as_slice()).map_err(|e| format!("scope {id}: {e}"))?;
        let s = (Arc::new(ss.scope.unwrap_or_default()), Arc::from(ss.schema_url));
        self.scopes.insert(id, s.clone());
        Ok(s)
    }
}

/// A protobuf varint from the front of `buf`.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The next field of a protobuf message at the front of `buf`: its number, and its bytes
/// when it is length-delimited. `None` at a wire type other than varint, fixed32, fixed64
/// and length-delimited, or at a truncated field.
fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u64, Option<&'a [u8]>)> {
    let key = varint(buf)?;
    let skip = |buf: &mut &'a [u8], n: usize| -> Option<&'a [u8]> {
        let (taken, rest) = buf.split_at_checked(n)?;
        *buf = rest;
        Some(taken)
    };
    let bytes = match key & 7 {
        0 => {
            varint(buf)?;
            None
        }
        1 => {
            skip(buf, 8)?;
            None
        }
        2 => {
            let len = usize::try_from(varint(buf)?).ok()?;
            Some(skip(buf, len)?)
        }
        5 => {
            skip(buf, 4)?;
            None
        }
        _ => return None,
    };
    Some((key >> 3, bytes))
}

/// Reads from a stored span body (the OTLP `Span` fields the columns do not hold) the
/// attributes named in `wanted`, as [`text`], and the status message, without decoding the
/// rest, into `attributes` and `message` (which may hold an earlier span's: they end up
/// holding this span's only, their strings reused where a key is found again). `None` when
/// the body is not as the writer encodes it (a field repeated inside an attribute, a wire
/// type it never writes): the caller decodes it whole then.
fn scan_body(
    mut body: &[u8],
    wanted: &[String],
    attributes: &mut BTreeMap<String, String>,
    message: &mut String,
) -> Option<()> {
    // The keys of `wanted` found (by index; with more than 64, the map starts empty).
    let mut found = 0u64;
    let tracked = wanted.len() <= 64;
    if !tracked {
        attributes.clear();
    }
    message.clear();
    while !body.is_empty() {
        match next_field(&mut body)? {
            // Span.attributes: KeyValue { key = 1, value = 2 }.
            (9, Some(mut kv)) => {
                let (mut key, mut value) = (None::<&[u8]>, None::<&[u8]>);
                while !kv.is_empty() {
                    match next_field(&mut kv)? {
                        (1, Some(k)) if key.is_none() => key = Some(k),
                        (2, Some(v)) if value.is_none() => value = Some(v),
                        (1 | 2, _) => return None,
                        _ => {}
                    }
                }
                let key = std::str::from_utf8(key.unwrap_or_default()).ok()?;
                if let Some(at) = wanted.iter().position(|w| w.as_str() == key) {
                    let slot = match attributes.get_mut(key) {
                        Some(slot) => slot,
                        None => attributes.entry(wanted[at].clone()).or_default(),
                    };
                    slot.clear();
                    if let Some(v) = value {
                        value_text(v, slot)?;
                    }
                    if tracked {
                        found |= 1 << at;
                    }
                }
            }
            // Span.status: Status { message = 2 }.
            (15, Some(mut st)) => {
                while !st.is_empty() {
                    if let (2, Some(m)) = next_field(&mut st)? {
                        std::str::from_utf8(m).ok()?.clone_into(message);
                    }
                }
            }
            (9 | 15, None) => return None,
            _ => {}
        }
    }
    if tracked {
        attributes.retain(|k, _| wanted.iter().position(|w| w == k).is_some_and(|at| found & (1 << at) != 0));
    }
    Some(())
}

/// An encoded `AnyValue` as [`text`] appended to `out`: a string value as it is, anything
/// else decoded. `None` when it does not decode.
fn value_text(v: &[u8], out: &mut String) -> Option<()> {
    // AnyValue.string_value = 1, alone in the message: what the writer encodes for a string.
    let mut rest = v;
    if let Some((1, Some(s))) = next_field(&mut rest)
        && rest.is_empty()
        && let Ok(s) = std::str::from_utf8(s)
    {
        out.push_str(s);
        return Some(());
    }
    out.push_str(&text(&opentelemetry_proto::tonic::common::v1::AnyValue::decode(v).ok()?));
    Some(())
}

/// The body of row `id` of `table` (`resources` or `scopes`).
fn blob(conn: &Connection, table: &str, id: i64) -> Result<Vec<u8>, String> {
    conn.prepare_cached(&format!("SELECT body FROM {table} WHERE id = ?1"))
        .and_then(|mut s| s.query_row([id], |r| r.get(0)))
        .map_err(|e| format!("{table} {id}: {e}"))
}

/// Calls `f` with each trace that `filter` selects, in trace id order, its spans ordered by
/// start (then span id), reading one row at a time: memory holds one trace, not the
/// selection. A trace id listed twice in the filter is read once.
/// With `spare`, the records of the traces received there (traces `f` was given, handed
/// back) are filled again rather than new ones allocated ([`SpanDetail::Columns`] only).
pub(crate) fn for_each_trace(
    conn: &Connection,
    filter: &SpanFilter,
    detail: SpanDetail,
    spare: Option<std::sync::mpsc::Receiver<Vec<SpanRecord>>>,
    f: &mut dyn FnMut(Vec<SpanRecord>),
) -> Result<(), StoreError> {
    let mut reader = Reader { detail, spare, ..Reader::default() };
    if filter.traces.is_empty() {
        return reader.each(conn, filter, &[], f);
    }
    let mut ids: Vec<ToSqlOutput<'_>> = Vec::new();
    for t in &filter.traces {
        if let Some(bytes) = unhex(t) {
            ids.push(ToSqlOutput::Owned(rusqlite::types::Value::Blob(bytes)));
        }
        ids.push(ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())));
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(format!("{id:?}")));
    for chunk in ids.chunks(TRACES_PER_QUERY) {
        reader.each(conn, filter, chunk, f)?;
    }
    Ok(())
}

impl Reader {
    /// [`for_each_trace`] for one query (`traces`: ids to bind, none for every trace).
    fn each(
        &mut self,
        conn: &Connection,
        filter: &SpanFilter,
        traces: &[ToSqlOutput<'_>],
        f: &mut dyn FnMut(Vec<SpanRecord>),
    ) -> Result<(), StoreError> {
        // The (trace_id, span_id) index gives this order without sorting the table.
        let (sql, args) = select(filter, traces, "trace_id");
        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(args.as_slice())?;
        let mut current: Option<Vec<u8>> = None;
        let mut trace: Vec<SpanRecord> = self.spare_vector();
        let detail = self.detail.clone();
        let mut emit = |mut trace: Vec<SpanRecord>| {
            if !trace.is_empty() {
                trace.sort_by(|a, b| (a.start_ns, &a.span_id).cmp(&(b.start_ns, &b.span_id)));
                f(trace);
            }
        };
        while let Some(row) = rows.next()? {
            let key = match row.get_ref(0)? {
                ValueRef::Blob(b) => b,
                ValueRef::Text(t) => t,
                _ => &[],
            };
            if current.as_deref() != Some(key) {
                match &mut current {
                    Some(c) => {
                        c.clear();
                        c.extend_from_slice(key);
                    }
                    None => current = Some(key.to_vec()),
                }
                let next = if trace.is_empty() { Vec::new() } else { self.spare_vector() };
                emit(std::mem::replace(&mut trace, next));
            }
            let span = match &detail {
                SpanDetail::Full => self.row(conn, row)?,
                SpanDetail::Columns(wanted) => {
                    let mut r = self.spare_record();
                    self.row_columns(conn, row, wanted, &mut r)?;
                    r
                }
            };
            trace.push(span);
        }
        emit(trace);
        Ok(())
    }
}
