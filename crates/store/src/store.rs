//! The [`Store`] handle: opening a database and starting its writer, and the append side
//! (records and spans queued with the caller's context, per the [`FullPolicy`]), barriers
//! and the process history read. The span reads are in `reads.rs`, pruning in
//! `retention.rs`.
//!
//! Invariant: appending never waits for the disk, only (per the [`FullPolicy`]) for room in
//! the bounded queue (tests: `tests/store.rs` `a_full_queue_is_an_error_not_a_silent_drop`,
//! `a_locked_database_fails_the_barrier_keeps_the_queue_and_recovers`, which appends while
//! the database is locked).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tracewire_telemetry::{Queued, Stage, stage_span};
use tracing::Instrument;

use crate::checkpoint::Checkpointer;
use crate::config::{FullPolicy, StoreConfig};
use crate::error::StoreError;
use crate::processes::ProcessRecord;
use crate::schema::connect;
use crate::spans::SpanRecord;
use crate::wire;
use crate::writer::{QueuedProcess, QueuedRequest, Writer, WriterCommand};
#[cfg(doc)]
use crate::{Durability, wire::check};

/// A handle on the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) tx: mpsc::Sender<WriterCommand>,
    pub(crate) config: StoreConfig,
    backlog: Arc<AtomicU64>,
    /// Room for queued spans ([`StoreConfig::max_queued_spans`] permits).
    room: Arc<Semaphore>,
    pub(crate) path: Arc<PathBuf>,
    /// Set once the writer has finished and closed the database ([`Store::closed`]).
    closed: Arc<watch::Sender<bool>>,
}

/// The end of a store's writer, from [`Store::closed`]: not a handle, so holding it does
/// not keep the writer running.
#[derive(Debug)]
pub struct Closed(watch::Receiver<bool>);

impl Closed {
    /// Resolves once every [`Store`] handle is gone and the writer has committed what was
    /// queued and closed the database: the last connection checkpoints its write-ahead log
    /// into the file, and SQLite removes the `-wal` and `-shm` files. A process that exits
    /// without waiting may leave them (nothing is lost: SQLite replays the log at the next
    /// open). Resolves too if the writer ended without closing cleanly (its thread died).
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|closed| *closed).await;
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("backlog", &self.backlog()).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the database at `path` with the default settings; see
    /// [`Store::open_with`].
    ///
    /// # Errors
    /// As [`Store::open_with`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, StoreConfig::default())
    }

    /// Opens (or creates) the database at `path`, migrates it, and starts the writer.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], [`StoreError::Locked`], [`StoreError::NewerSchema`], ...
    pub fn open_with(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = connect(&path, &config)?;
        let checkpointer = Checkpointer::start(&path, &config)?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let backlog = Arc::new(AtomicU64::new(0));
        let writer = Writer::new(conn, rx, config, Arc::clone(&backlog), checkpointer);
        let closed = Arc::new(watch::Sender::new(false));
        let writer_closed = Arc::clone(&closed);
        std::thread::Builder::new()
            .name("tracewire-store".into())
            .spawn(move || {
                // `run` returns once every handle is gone; the writer and its connection
                // are dropped (the database closed) before this says so.
                writer.run();
                writer_closed.send_replace(true);
            })
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let room =
            Arc::new(Semaphore::new(config.max_queued_spans.clamp(1, usize::try_from(u32::MAX).unwrap_or(usize::MAX))));
        Ok(Self { tx, config, backlog, room, path: Arc::new(path), closed })
    }

    /// What resolves once the writer has closed the database, after every handle is
    /// dropped: a program that opened a store waits on it before it exits.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-closed-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("s.db");
    /// let store = tracewire_store::Store::open(&path).unwrap();
    /// store.flush().await.unwrap();
    /// let closed = store.closed();
    /// drop(store);
    /// closed.wait().await;
    /// assert!(!dir.join("s.db-wal").exists(), "the log is checkpointed and removed");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    pub fn closed(&self) -> Closed {
        Closed(self.closed.subscribe())
    }

    /// Records (processes and spans) appended and not yet committed.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Acquire)
    }

    /// Queues `record` with the caller's trace context and returns: it never waits for the
    /// disk. A `store.enqueue` span covers the call.
    ///
    /// # Errors
    /// [`StoreError::Full`] per the [`FullPolicy`]; [`StoreError::Closed`].
    pub async fn append(&self, record: ProcessRecord) -> Result<(), StoreError> {
        let span = stage_span!(StoreEnqueue);
        async {
            let context = tracewire_telemetry::current_context();
            let queued = Queued::new(Stage::StoreQueue, QueuedProcess { record, context });
            self.enqueue(WriterCommand::Process(queued), 1).await
        }
        .instrument(span)
        .await
    }

    /// Queues a batch of received spans and returns without waiting for the disk; the
    /// [`FullPolicy`] applies as for [`Store::append`], and also when the spans queued
    /// would exceed [`StoreConfig::max_queued_spans`].
    /// A span stored twice (an exporter's retry) is kept once. Everything a span arrived
    /// with is kept ([`SpanRecord::otlp`]); a record without it is stored as
    /// [`SpanRecord::to_otlp`] gives it (string attributes, a resource with its
    /// `service.name`), and loads back as that.
    ///
    /// ```
    /// use tracewire_store::{SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-spans-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let span = SpanRecord {
    ///     trace_id: "0af7651916cd43dd8448eb211c80319c".into(), span_id: "b7ad6b7169203331".into(),
    ///     name: "exec".into(), service: "api".into(), ..Default::default()
    /// };
    /// store.append_spans(vec![span.clone(), span.clone()]).await.unwrap();
    /// // Back as the OTLP span it stands for.
    /// assert_eq!(store.spans().await.unwrap(), [SpanRecord::from_otlp(span.to_otlp())]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`StoreError::Full`] per the [`FullPolicy`]; [`StoreError::Closed`].
    pub async fn append_spans(&self, records: Vec<SpanRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let n = records.len();
        let room = self.room(n).await?;
        self.enqueue(WriterCommand::Spans(records, room), n as u64).await
    }

    /// Queues the spans of an OTLP export request, as [`Store::append_spans`] does with
    /// [`SpanRecord::all_of`] of it and with the same rows as a result, without making
    /// records: the writer reads the request's spans as they are.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    /// use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    /// use tracewire_store::{SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-request-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let span = Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "exec".into(), ..Default::default() };
    /// let request = ExportTraceServiceRequest {
    ///     resource_spans: vec![ResourceSpans {
    ///         scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
    ///         ..Default::default()
    ///     }],
    /// };
    /// store.append_request(Arc::new(request.clone())).await.unwrap();
    /// assert_eq!(store.spans().await.unwrap(), SpanRecord::all_of(&request));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Store::append_spans`].
    pub async fn append_request(&self, request: Arc<ExportTraceServiceRequest>) -> Result<(), StoreError> {
        let n: usize = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        if n == 0 {
            return Ok(());
        }
        let room = self.room(n).await?;
        self.enqueue(WriterCommand::Request(QueuedRequest::Decoded(request), n, room), n as u64).await
    }

    /// Queues the spans of an OTLP export request given as its protobuf bytes, with the
    /// rows [`Store::append_request`] writes for its decoding, without decoding it: each
    /// span's columns are read from the bytes and its other fields copied as they are
    /// ([`wire`]). The bytes are checked ([`wire::check`]) and the rows laid out here, on
    /// the caller's thread, so the writer thread only inserts; what is copied unread
    /// (attributes, events, links, resources, scopes) must decode, as a request that passed
    /// the collector's validation does.
    /// Returns the number of spans queued.
    ///
    /// ```
    /// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    /// use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    /// use prost::Message;
    /// use tracewire_store::{SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-encoded-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let span = Span { trace_id: vec![1; 16], span_id: vec![2; 8], name: "exec".into(), ..Default::default() };
    /// let request = ExportTraceServiceRequest {
    ///     resource_spans: vec![ResourceSpans {
    ///         scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
    ///         ..Default::default()
    ///     }],
    /// };
    /// assert_eq!(store.append_encoded(request.encode_to_vec().into()).await.unwrap(), 1);
    /// assert_eq!(store.spans().await.unwrap(), SpanRecord::all_of(&request));
    /// // Not a request: refused before anything is queued.
    /// assert!(store.append_encoded(vec![0x0a, 0x05].into()).await.is_err());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`StoreError::Malformed`] when the bytes are not a request; else as
    /// [`Store::append_spans`].
    pub async fn append_encoded(&self, bytes: prost::bytes::Bytes) -> Result<usize, StoreError> {
        let rows = wire::rows(bytes)?;
        let n = rows.spans();
        if n == 0 {
            return Ok(0);
        }
        let room = self.room(n).await?;
        self.enqueue(WriterCommand::Request(QueuedRequest::Encoded(Box::new(rows)), n, room), n as u64).await?;
        Ok(n)
    }

    /// Room in the queue for `n` spans ([`StoreConfig::max_queued_spans`]), per the
    /// [`FullPolicy`].
    async fn room(&self, n: usize) -> Result<OwnedSemaphorePermit, StoreError> {
        let want = u32::try_from(n.clamp(1, self.config.max_queued_spans.max(1))).unwrap_or(u32::MAX);
        let room = Arc::clone(&self.room);
        match self.config.full {
            FullPolicy::Error => room.try_acquire_many_owned(want).map_err(|e| match e {
                tokio::sync::TryAcquireError::NoPermits => StoreError::Full,
                tokio::sync::TryAcquireError::Closed => StoreError::Closed,
            }),
            FullPolicy::Wait(bound) => match tokio::time::timeout(bound, room.acquire_many_owned(want)).await {
                Ok(Ok(permit)) => Ok(permit),
                Ok(Err(_)) => Err(StoreError::Closed),
                Err(_) => Err(StoreError::Full),
            },
        }
    }

    /// Queues `command` (holding `records` records) per the [`FullPolicy`].
    async fn enqueue(&self, command: WriterCommand, records: u64) -> Result<(), StoreError> {
        let sent = match self.config.full {
            FullPolicy::Error => self.tx.try_send(command).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Full,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            }),
            FullPolicy::Wait(bound) => self.tx.send_timeout(command, bound).await.map_err(|e| match e {
                mpsc::error::SendTimeoutError::Timeout(_) => StoreError::Full,
                mpsc::error::SendTimeoutError::Closed(_) => StoreError::Closed,
            }),
        };
        if sent.is_ok() {
            self.backlog.fetch_add(records, Ordering::AcqRel);
        }
        sent
    }

    /// Sends the writer the command `command` makes of an answer's sender, and waits for
    /// the answer.
    pub(crate) async fn ask_writer<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriterCommand,
    ) -> Result<T, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(command(ack)).await.map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// with [`Durability::Full`]).
    ///
    /// # Errors
    /// The write error, when the batch could not be written (it is kept and retried).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let span = stage_span!(StoreFlush, tracewire.store.records = self.backlog());
        self.ask_writer(WriterCommand::Flush).instrument(span).await
    }

    /// The most recent processes, after a barrier (so every earlier append is visible).
    ///
    /// # Errors
    /// As [`Store::flush`].
    pub async fn recent(&self, limit: usize) -> Result<Vec<ProcessRecord>, StoreError> {
        let span = stage_span!(StoreFlush, tracewire.store.records = self.backlog());
        self.ask_writer(|ack| WriterCommand::Recent(limit, ack)).instrument(span).await
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
