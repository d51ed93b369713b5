//! # tracewire-store
//!
//! Persistence off the request path. [`Store::append`] returns at once: the record goes
//! into a bounded queue with the caller's trace context; a writer thread coalesces queued
//! records into one SQLite transaction per batch (WAL, `synchronous=FULL` unless
//! [`StoreConfig::durability`] says otherwise). [`Store::flush`] is a barrier: when it
//! resolves, every record appended before it is committed (and on disk, with
//! [`Durability::Full`]). When the queue is full the [`FullPolicy`] decides: wait up to a
//! bound, or fail with [`StoreError::Full`]; the queue is never unbounded and nothing is
//! dropped silently. A failed write keeps its batch and is retried; a barrier only succeeds
//! once everything before it is durable.
//!
//! The collector keeps received spans here too ([`Store::append_spans`], [`Store::spans`]);
//! those batches emit no spans of their own, so a collector that traces itself cannot feed
//! back into its own store.
//!
//! Spans: `store.enqueue` (caller), `store.queue` (residence, per record), `store.write`
//! (per batch, linked to every record's context), `store.flush` (caller).
//!
//! ```
//! use tracewire_store::{ProcessRecord, Store, StoreConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let dir = std::env::temp_dir().join(format!("tw-store-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let store = Store::open(dir.join("exec.db")).unwrap();
//! store.append(ProcessRecord { process_id: 1, argv: vec!["ls".into()], ..Default::default() }).await.unwrap();
//! store.flush().await.unwrap();
//! assert_eq!(store.recent(10).await.unwrap()[0].argv, ["ls"]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # });
//! ```
//!
//! ## Code map
//!
//! - `store.rs`: the [`Store`] handle: open, append (the queue), barriers, [`Store::recent`].
//! - `reads.rs`: the span reads ([`Store::spans_matching`], [`Store::for_each_trace`], ...).
//! - `writer.rs`: the writer thread: batching, one transaction per batch, retries.
//! - `checkpoint.rs`: the WAL checkpoint thread.
//! - `schema.rs`: connection settings and migrations ([`migrate`], [`SCHEMA_VERSION`]).
//! - `processes.rs`: process history ([`ProcessRecord`], [`upsert_process`]).
//! - `spans.rs`: [`SpanRecord`] and its OTLP conversions; `spans/`: the span tables and
//!   inserts (`table.rs`), id columns (`ids.rs`), reads (`read.rs`), the body scan (`scan.rs`).
//! - [`wire`]: spans stored from a request's protobuf bytes.
//! - `retention.rs`: [`Store::prune`]. `config.rs`: [`StoreConfig`]. `error.rs`: [`StoreError`].
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod checkpoint;
mod config;
mod error;
mod processes;
mod reads;
mod retention;
mod schema;
mod spans;
mod store;
pub mod wire;
mod writer;

pub use config::{Durability, FullPolicy, StoreConfig};
pub use error::StoreError;
pub use processes::{ProcessRecord, upsert_process};
pub use retention::{Pruned, Retention};
pub use schema::{SCHEMA_VERSION, migrate};
pub use spans::{OtlpSpan, SpanDetail, SpanFilter, SpanRecord, hex, kind, service_of, status, text, to_request, unhex};
pub use store::{Closed, Store};
