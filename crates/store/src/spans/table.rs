//! The span tables of schema 4 (resources, scopes, spans), the migration from schema 3,
//! and the inserts: span records and decoded export requests.
//!
//! Invariants: a span is stored once per (trace, span) id, the first copy kept, and
//! resources and scopes once each (tests: `tests/lossless.rs`
//! `a_retried_request_is_stored_once_and_resources_once`); a stored span loads back field
//! for field (`every_otlp_field_comes_back_field_for_field`,
//! `generated_spans_come_back_field_for_field`); a request's rows are those of its records
//! (`tests/ingest.rs` `a_request_is_stored_as_its_records_are`).

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use rusqlite::{Connection, OptionalExtension, params};

use super::ids::id_sql;
use super::{OtlpSpan, SpanRecord, service_of, status};
use crate::StoreError;

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
