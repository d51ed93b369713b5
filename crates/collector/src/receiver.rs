//! The embedded OTLP trace receiver: gRPC (`TraceService/Export`) and HTTP
//! (`POST /v1/traces`, protobuf or JSON), each plain or gzip-compressed, into a bounded
//! in-memory store and, optionally, a SQLite database ([`SpanStore::with_db`]).
//!
//! With a database, a request is acknowledged only once its spans are queued for the
//! database; when the database queue stays full the exporter is told to retry (gRPC
//! `UNAVAILABLE`, HTTP 503), which OTLP exporters do, so nothing is lost silently. Stored
//! spans are keyed by (trace id, span id), so a retried batch is stored once.
//!
//! Protobuf requests (gRPC, and HTTP with `application/x-protobuf`) are not decoded on
//! arrival: their bytes are checked in one allocation-free pass ([`crate::otlp::validate`],
//! which accepts exactly what prost would decode, so malformed input is still refused, with
//! gRPC `INVALID_ARGUMENT` or HTTP 400) and kept as they came
//! ([`crate::otlp::EncodedRequest`]); they are decoded only when [`SpanStore::snapshot`]
//! asks for them. A database takes the same bytes
//! ([`tracewire_store::Store::append_encoded`]): its writer reads each span's columns from
//! them and copies the rest of the span as it came, so a request is never decoded to be
//! stored.
//!
//! Spans with invalid ids ([`crate::otlp::InvalidSpan`]) are rejected and the rest kept: the
//! answer is a success with `partial_success` saying how many were rejected and why (OTLP
//! specification, "Partial Success"), also when every span of the request was invalid.
//!
//! Modules: `store` ([`SpanStore`]: bounded memory, the database hand-off), `records` (kept
//! requests into [`SpanRecord`](crate::SpanRecord)s), `grpc` and `http` (the two services),
//! `encoding` (OTLP/HTTP content codings).

use std::net::SocketAddr;

mod encoding;
mod grpc;
mod http;
mod records;
mod store;

pub use grpc::serve_grpc;
pub use http::serve_http;
pub use records::spans_of;
pub use store::{Ingested, SpanStore};

/// The settings `tracewire collect --db` opens its database with: the store's defaults,
/// but [`tracewire_store::Durability::Normal`] (SQLite's `synchronous=NORMAL` in WAL mode:
/// the log is synced at checkpoints instead of at every commit) and 16 KiB pages for a new
/// database (fewer B-tree pages to update and log per span inserted).
///
/// The receiver acknowledges a span once it is queued for the database, before it is
/// committed, so a crash of the collector loses what was queued whatever the setting; with
/// `NORMAL` every commit still survives the process crashing or being killed, and only an
/// operating-system crash or a power loss can also roll back the commits since the last
/// checkpoint (the store checkpoints on a thread of its own, within about 200 ms of a commit).
/// In exchange the writer does not wait for the disk at each commit, which is most of its
/// time on a slow disk.
///
/// ```
/// use tracewire_store::Durability;
/// let config = tracewire_collector::receiver::db_config();
/// assert_eq!((config.durability, config.page_size), (Durability::Normal, Some(16_384)));
/// ```
pub fn db_config() -> tracewire_store::StoreConfig {
    let mut config = tracewire_store::StoreConfig::default();
    config.durability = tracewire_store::Durability::Normal;
    config.page_size = Some(16_384);
    config
}

/// Why the receiver could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// Binding or serving failed.
    #[error("receiver: {0}")]
    Io(String),
}

/// Binds a TCP address (port 0 picks a free port).
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ReceiverError> {
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| ReceiverError::Io(format!("bind {addr}: {e}")))?;
    let local = l.local_addr().map_err(|e| ReceiverError::Io(e.to_string()))?;
    Ok((l, local))
}

/// How long a throttled sender should wait before retrying, in seconds: gRPC's `RetryInfo`
/// and HTTP's `Retry-After`.
const RETRY_AFTER_SECONDS: u64 = 1;

/// The largest export request taken, in bytes: the message of an OTLP/gRPC call, and an
/// OTLP/HTTP body both as sent and once decompressed (OTLP specification, "OTLP/HTTP
/// Request": "The server MUST limit the size of the request body when parsing it,
/// including after decompression"). Over it, OTLP/HTTP answers 413; OTLP/gRPC answers
/// tonic's `OUT_OF_RANGE` (as sent) or `RESOURCE_EXHAUSTED` (once decompressed).
pub const MAX_REQUEST_BYTES: usize = 64 << 20;
