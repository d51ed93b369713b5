//! Spans as the collector keeps them, and their table.

use std::collections::BTreeMap;

use rusqlite::{Connection, Transaction, params};

use crate::StoreError;

/// One span, as tracewire's collector receives, stores and analyzes it (any source: OTLP,
/// Jaeger, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
}

impl SpanRecord {
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
}

/// Schema 2 -> 3: the spans table. `(trace_id, span_id)` is the key, so a batch an exporter
/// retries is stored once.
pub(crate) const MIGRATION_3: &str = "BEGIN;
     CREATE TABLE spans (
         trace_id TEXT NOT NULL,
         span_id TEXT NOT NULL,
         parent_id TEXT,
         name TEXT NOT NULL,
         service TEXT NOT NULL,
         start_ns INTEGER NOT NULL,
         end_ns INTEGER NOT NULL,
         attributes TEXT NOT NULL,
         PRIMARY KEY (trace_id, span_id)
     ) WITHOUT ROWID;
     CREATE INDEX spans_start ON spans (start_ns);
     PRAGMA user_version = 3;
     COMMIT;";

pub(crate) fn insert(tx: &Transaction<'_>, spans: &[SpanRecord]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO spans (trace_id, span_id, parent_id, name, service, start_ns, end_ns, attributes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for s in spans {
        let attributes = serde_json::to_string(&s.attributes).map_err(|e| StoreError::Other(e.to_string()))?;
        stmt.execute(params![s.trace_id, s.span_id, s.parent_id, s.name, s.service, s.start_ns, s.end_ns, attributes])?;
    }
    Ok(())
}

pub(crate) fn count(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM spans", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub(crate) fn load(conn: &Connection) -> Result<Vec<SpanRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT trace_id, span_id, parent_id, name, service, start_ns, end_ns, attributes
         FROM spans ORDER BY start_ns, trace_id, span_id",
    )?;
    let rows = stmt.query_map([], |row| {
        let attributes: String = row.get(7)?;
        Ok((
            SpanRecord {
                trace_id: row.get(0)?,
                span_id: row.get(1)?,
                parent_id: row.get(2)?,
                name: row.get(3)?,
                service: row.get(4)?,
                start_ns: row.get(5)?,
                end_ns: row.get(6)?,
                attributes: BTreeMap::new(),
            },
            attributes,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (mut span, attributes) = row?;
        span.attributes = serde_json::from_str(&attributes).map_err(|e| {
            StoreError::Corrupt(format!(
                "span {}/{}: attributes are not a JSON object: {e}",
                span.trace_id, span.span_id
            ))
        })?;
        out.push(span);
    }
    Ok(out)
}
