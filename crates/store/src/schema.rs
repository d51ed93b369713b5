//! The database's schema: opening a connection with the store's settings (WAL,
//! `synchronous`, page size and cache, the size cap) and bringing its tables to
//! [`SCHEMA_VERSION`] with versioned migrations (`PRAGMA user_version`).
//!
//! Invariants: a database of a newer schema is refused ([`StoreError::NewerSchema`]) and
//! left as it is; a migration runs in a transaction, so one that fails leaves the database
//! at the version it had (tests: `tests/store.rs`
//! `a_version_1_database_is_migrated_with_its_data`, `tests/lossless.rs`
//! `a_schema_3_database_migrates_without_losing_a_span`,
//! `a_schema_3_row_that_does_not_parse_fails_the_migration_and_keeps_the_database`).

use std::path::Path;

use rusqlite::Connection;

use crate::config::{Durability, StoreConfig};
use crate::error::StoreError;
use crate::spans;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 4;

/// How large the WAL may grow before the writer checkpoints it itself (SQLite's automatic
/// checkpoint, set in pages: this over the page size); below it the
/// [`Checkpointer`](crate::checkpoint::Checkpointer) does.
pub(crate) const WAL_BOUND_BYTES: i64 = 64 << 20;

/// Opens (creating and migrating) a database connection.
pub(crate) fn connect(path: &Path, config: &StoreConfig) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(config.busy_timeout)?;
    // Before the log is in WAL mode: a new database takes it, an existing one keeps its own.
    if let Some(size) = config.page_size {
        conn.pragma_update(None, "page_size", size)?;
    }
    // WAL: readers do not block the writer; FULL: a commit is on disk when it returns,
    // NORMAL: once the next checkpoint is (`Durability`).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match config.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    // 16 MiB of page cache (SQLite's default is 2 MiB): the span indexes, keyed by random
    // ids, are written all over; cached, their pages are not read back for every batch.
    conn.pragma_update(None, "cache_size", -16 * 1024)?;
    // The log is checkpointed by the store's checkpoint thread (`Checkpointer`); SQLite's
    // automatic checkpoint, run by the writer after a commit, only bounds the log when that
    // thread falls behind.
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_BOUND_BYTES / page_size.max(512))?;
    migrate(&conn)?;
    if let Some(pages) = config.max_pages {
        let _: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| r.get(0))?;
    }
    Ok(conn)
}

/// Brings the database of `conn` to the store's schema with versioned migrations
/// (`PRAGMA user_version`): 0 -> 1 creates the table, 1 -> 2 adds the trace id and output
/// byte counts, 2 -> 3 adds the spans table (text attributes), 3 -> 4 keeps spans whole
/// (the OTLP span, resource and scope; a database of schema 2 or older gets the tables of 4
/// directly, one of schema 3 has its spans rewritten). [`Store::open`](crate::Store::open) runs it; it is public so that
/// a plain SQLite writer compared with the store (`tracewire-bench`) writes to the same
/// tables and indexes.
///
/// # Errors
/// [`StoreError::NewerSchema`] for a database of a newer version; what SQLite reports.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema(version));
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE processes (
                 process_id INTEGER PRIMARY KEY,
                 pid INTEGER NOT NULL,
                 argv TEXT NOT NULL,
                 cwd TEXT NOT NULL,
                 started_unix_nanos INTEGER NOT NULL,
                 ended_unix_nanos INTEGER NOT NULL DEFAULT 0,
                 exit_code INTEGER,
                 signal INTEGER
             );
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE processes ADD COLUMN trace_id TEXT NOT NULL DEFAULT '';
             ALTER TABLE processes ADD COLUMN stdout_bytes INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE processes ADD COLUMN stderr_bytes INTEGER NOT NULL DEFAULT 0;
             CREATE INDEX processes_started ON processes (started_unix_nanos);
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    if version < 3 {
        spans::create_4(conn)?;
    } else if version < 4 {
        spans::migrate_3_to_4(conn)?;
    }
    Ok(())
}
