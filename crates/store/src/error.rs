//! The store's one error type, and how SQLite's errors map onto it.

use rusqlite::ErrorCode;

use crate::schema::SCHEMA_VERSION;
use crate::wire;

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is not a database, or is damaged.
    #[error("database is corrupt or not a database: {0}")]
    Corrupt(String),
    /// Another process holds a lock on the database.
    #[error("database is locked: {0}")]
    Locked(String),
    /// The disk (or the database's size limit) is full.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// The queue is full (with [`FullPolicy::Error`](crate::FullPolicy::Error), or after the
    /// wait bound).
    #[error("the store queue is full")]
    Full,
    /// The store is closed.
    #[error("the store is closed")]
    Closed,
    /// The database was written by a newer tracewire.
    #[error("schema version {0} is newer than this build's {SCHEMA_VERSION}")]
    NewerSchema(i32),
    /// Any other SQLite or I/O error.
    #[error("store error: {0}")]
    Other(String),
    /// Bytes given as an OTLP export request are not one
    /// ([`Store::append_encoded`](crate::Store::append_encoded)).
    #[error(transparent)]
    Malformed(#[from] wire::WireError),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let text = e.to_string();
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Self::Corrupt(text),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Self::Locked(text),
            Some(ErrorCode::DiskFull) => Self::DiskFull(text),
            _ => Self::Other(text),
        }
    }
}
