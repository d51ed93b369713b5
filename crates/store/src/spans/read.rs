//! Reading spans back: whole loads ([`SpanFilter`]) and trace streams ([`SpanDetail`]),
//! rebuilding each OTLP span from its columns and body, or reading the columns and the
//! attributes asked for only.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::ids::{id_bytes, id_text, id_text_into};
use super::scan::scan_body;
use super::{OtlpSpan, SpanRecord, status, text, unhex};
use crate::StoreError;

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
