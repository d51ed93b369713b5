//! Set-up shared by the store's test files: OTLP values and spans, a runtime, the rows of
//! the span tables, released schemas to migrate from, and the crash child (`examples/crash_child.rs`) killed after its
//! barrier.
// Each test file uses some of these.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use rusqlite::types::Value as Sql;

/// A current-thread runtime, for the tests that are not `#[tokio::test]`s.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// An OTLP value.
pub(crate) fn val(v: Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

/// An OTLP attribute.
pub(crate) fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(val(v)), ..KeyValue::default() }
}

/// A span's identity: trace id, span id, parent span id, trace state, flags.
pub(crate) type Ids = (Vec<u8>, Vec<u8>, Vec<u8>, String, u32);

/// A span with these ids, name, kind and times, the rest empty (generated spans fill in
/// the rest with struct update syntax).
pub(crate) fn span_with(ids: Ids, name: String, kind: i32, start_time_unix_nano: u64, end_time_unix_nano: u64) -> Span {
    let (trace_id, span_id, parent_span_id, trace_state, flags) = ids;
    Span {
        trace_id,
        span_id,
        trace_state,
        parent_span_id,
        flags,
        name,
        kind,
        start_time_unix_nano,
        end_time_unix_nano,
        ..Span::default()
    }
}

/// Every row of the span tables (resources, scopes, then spans with their rowid), in
/// storage order, as SQLite has them.
pub(crate) fn span_table_rows(path: &Path) -> Vec<Vec<Sql>> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT * FROM resources ORDER BY id",
        "SELECT * FROM scopes ORDER BY id",
        "SELECT rowid, * FROM spans ORDER BY rowid",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        let rows = stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Sql>(i)).collect::<Result<Vec<_>, _>>()).unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

/// Schema 1's processes table, as released. The migration tests start from frozen copies
/// of released schemas (not from the store's migrations, which they test), so that a
/// database an older tracewire wrote keeps loading whatever the migrations become.
pub(crate) const PROCESSES_1: &str = "CREATE TABLE processes (
    process_id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, argv TEXT NOT NULL, cwd TEXT NOT NULL,
    started_unix_nanos INTEGER NOT NULL, ended_unix_nanos INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER, signal INTEGER);";

/// Schema 3's tables, as released (schema 1's processes table, schema 2's columns and
/// index, schema 3's spans table of text attributes), at `user_version` 3, in one
/// transaction.
pub(crate) fn schema_3() -> String {
    format!(
        "BEGIN;
         {PROCESSES_1}
         ALTER TABLE processes ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
         ALTER TABLE processes ADD COLUMN stdout_bytes INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE processes ADD COLUMN stderr_bytes INTEGER NOT NULL DEFAULT 0;
         CREATE INDEX processes_started ON processes (started_unix_nanos);
         CREATE TABLE spans (
             trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT, name TEXT NOT NULL,
             service TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
             attributes TEXT NOT NULL, PRIMARY KEY (trace_id, span_id)
         ) WITHOUT ROWID;
         CREATE INDEX spans_start ON spans (start_ns);
         PRAGMA user_version = 3;
         COMMIT;"
    )
}

/// How long the crash child may take to reach its barrier.
const CHILD_BARRIER_WITHIN: Duration = Duration::from_secs(60);

/// Runs `examples/crash_child.rs` in `mode` on the database at `path`, waits (with a
/// deadline) for it to report its barrier (`ACKED <n>`), kills it with SIGKILL by its own
/// pid, reaps it, and returns `n`, the records the barrier acknowledged.
pub(crate) fn kill_after_barrier(mode: &str, path: &Path) -> u64 {
    let exe = tracewire_testkit::example_binary("crash_child").unwrap();
    let mut child =
        Command::new(exe).arg(mode).arg(path).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, acked) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("ACKED ") {
                let _ = tx.send(n.trim().parse::<u64>().unwrap());
            }
        }
    });
    // The report, or the child's exit status if it ended first.
    let outcome = tracewire_testkit::eventually_some(CHILD_BARRIER_WITHIN, || match acked.try_recv() {
        Ok(n) => Some(Ok(n)),
        Err(_) => child.try_wait().unwrap().map(Err),
    });
    let acked = match outcome {
        Ok(Ok(n)) => n,
        Ok(Err(exited)) => panic!("the crash child ended before its barrier: {exited}"),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the crash child never reported its barrier: {e}")
        }
    };
    child.kill().unwrap(); // SIGKILL, by its own pid
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, it did not exit: {status}");
    acked
}
