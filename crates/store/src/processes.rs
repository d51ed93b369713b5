//! Process history: the exec-server's record of each process it ran (start, then end),
//! the one statement that writes it, and the query that reads the most recent back (what
//! the exec-server's `List` answers).
//!
//! Invariant: a process is one row, keyed by its `process_id`; appending it again (its
//! end) updates that row (test: `tests/store.rs` `appending_again_updates_the_record`).

use rusqlite::{Connection, params};

use crate::error::StoreError;

/// A process's metadata. Appending it again with the same `process_id` updates it (start,
/// then end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessRecord {
    /// The exec-server's process id.
    pub process_id: u64,
    /// The OS pid.
    pub pid: u32,
    /// The command.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Start, Unix nanoseconds.
    pub started_unix_nanos: i64,
    /// End, Unix nanoseconds (0 while running).
    pub ended_unix_nanos: i64,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal, if a signal ended it.
    pub signal: Option<i32>,
    /// The trace it ran in (hex), if any.
    pub trace_id: String,
    /// Bytes of stdout.
    pub stdout_bytes: u64,
    /// Bytes of stderr.
    pub stderr_bytes: u64,
}

/// Writes one process record (inserted, or its end filled in) with the statement the
/// store's writer runs for every record of a batch, on a connection to a database with the
/// store's schema. Public so that a comparison with a plain SQLite writer does the same
/// work per record (`tracewire-bench`).
///
/// # Errors
/// What SQLite reports.
pub fn upsert_process(conn: &Connection, r: &ProcessRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO processes (process_id, pid, argv, cwd, started_unix_nanos, ended_unix_nanos, exit_code, signal, trace_id, stdout_bytes, stderr_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (process_id) DO UPDATE SET
             pid = excluded.pid, ended_unix_nanos = excluded.ended_unix_nanos, exit_code = excluded.exit_code,
             signal = excluded.signal, stdout_bytes = excluded.stdout_bytes, stderr_bytes = excluded.stderr_bytes",
    )?
    .execute(params![
        i64::try_from(r.process_id).unwrap_or(i64::MAX),
        r.pid,
        r.argv.join("\u{1f}"),
        r.cwd,
        r.started_unix_nanos,
        r.ended_unix_nanos,
        r.exit_code,
        r.signal,
        r.trace_id,
        i64::try_from(r.stdout_bytes).unwrap_or(i64::MAX),
        i64::try_from(r.stderr_bytes).unwrap_or(i64::MAX),
    ])?;
    Ok(())
}

/// The `limit` most recently started processes, latest first (ties: the larger
/// `process_id` first).
pub(crate) fn recent(conn: &Connection, limit: usize) -> Result<Vec<ProcessRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT process_id, pid, argv, cwd, started_unix_nanos, ended_unix_nanos, exit_code, signal, trace_id, stdout_bytes, stderr_bytes
         FROM processes ORDER BY started_unix_nanos DESC, process_id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |row| {
        let argv: String = row.get(2)?;
        Ok(ProcessRecord {
            process_id: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
            pid: row.get(1)?,
            argv: if argv.is_empty() { Vec::new() } else { argv.split('\u{1f}').map(str::to_owned).collect() },
            cwd: row.get(3)?,
            started_unix_nanos: row.get(4)?,
            ended_unix_nanos: row.get(5)?,
            exit_code: row.get(6)?,
            signal: row.get(7)?,
            trace_id: row.get(8)?,
            stdout_bytes: u64::try_from(row.get::<_, i64>(9)?).unwrap_or(0),
            stderr_bytes: u64::try_from(row.get::<_, i64>(10)?).unwrap_or(0),
        })
    })?;
    rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::from)
}
