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
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{Link, Span as _, TraceContextExt, Tracer as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use rusqlite::{Connection, ErrorCode, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracewire_telemetry::{Queued, Stage, stage_span};
use tracing::Instrument;

mod retention;
mod spans;
pub mod wire;
pub use retention::{Pruned, Retention};
pub use spans::{OtlpSpan, SpanDetail, SpanFilter, SpanRecord, hex, kind, service_of, status, text, to_request, unhex};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 4;

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
    /// The queue is full (with [`FullPolicy::Error`], or after the wait bound).
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
    /// Bytes given as an OTLP export request are not one ([`Store::append_encoded`]).
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

/// What `append` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Wait up to this long for room, then fail with [`StoreError::Full`].
    Wait(Duration),
    /// Fail with [`StoreError::Full`] at once.
    Error,
}

/// Store settings.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Records queued before the [`FullPolicy`] applies.
    pub queue: usize,
    /// What `append` does when the queue is full.
    pub full: FullPolicy,
    /// Most process records in one transaction.
    pub max_batch: usize,
    /// Most spans in one transaction: while the queue is deep the writer commits this many
    /// at once (one sync per transaction), and as soon as it is empty what is there.
    pub max_span_batch: usize,
    /// Most spans queued and not yet committed; beyond it the [`FullPolicy`] applies, so
    /// the queue's memory is bounded in spans, whatever the size of a batch. A batch larger
    /// than this waits for the queue to be empty.
    pub max_queued_spans: usize,
    /// How long the writer waits for a lock before a write fails with `Locked`.
    pub busy_timeout: Duration,
    /// After a failed write, how long the writer waits before retrying its batch.
    pub retry_delay: Duration,
    /// Caps the database at this many pages (`PRAGMA max_page_count`); beyond it writes
    /// fail with [`StoreError::DiskFull`], as on a full disk. `None`: no cap.
    pub max_pages: Option<u64>,
    /// When a commit is on disk ([`Durability::Full`] by default).
    pub durability: Durability,
    /// The page size of a database the store creates (`PRAGMA page_size`, a power of two
    /// from 512 to 65,536); an existing database keeps its own. `None`: SQLite's, 4 KiB.
    /// Larger pages make fewer, larger B-tree pages to update and log per insert.
    pub page_size: Option<u32>,
}

/// When a committed transaction is on disk: SQLite's `synchronous` setting, in WAL mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is synced before it returns (one sync per
    /// transaction); a commit survives a crash of the process, of the operating system and
    /// a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the log is synced at checkpoints (made by a thread of the
    /// store's own, a few times a second while records arrive), not at each commit. A
    /// commit survives the process crashing or being killed (it is in the operating
    /// system's hands when the commit returns); an operating-system crash or a power loss
    /// may roll back the commits since the last checkpoint (the database stays consistent).
    Normal,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            queue: 4096,
            full: FullPolicy::Wait(Duration::from_millis(100)),
            max_batch: 512,
            max_span_batch: 16_384,
            max_queued_spans: 65_536,
            busy_timeout: Duration::from_millis(200),
            retry_delay: Duration::from_millis(50),
            max_pages: None,
            durability: Durability::Full,
            page_size: None,
        }
    }
}

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

struct Appended {
    record: ProcessRecord,
    context: opentelemetry::Context,
}

enum Cmd {
    Append(Queued<Appended>),
    Flush(oneshot::Sender<Result<(), StoreError>>),
    Recent(usize, oneshot::Sender<Result<Vec<ProcessRecord>, StoreError>>),
    Spans(Vec<SpanRecord>, OwnedSemaphorePermit),
    Request(Arc<ExportTraceServiceRequest>, usize, OwnedSemaphorePermit),
    Encoded(Box<wire::Rows>, usize, OwnedSemaphorePermit),
    LoadSpans(SpanFilter, oneshot::Sender<Result<Vec<SpanRecord>, StoreError>>),
    CountSpans(oneshot::Sender<Result<u64, StoreError>>),
    Prune(retention::Step, oneshot::Sender<Result<retention::StepDone, StoreError>>),
}

/// A handle on the store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Cmd>,
    config: StoreConfig,
    backlog: Arc<AtomicU64>,
    /// Room for queued spans ([`StoreConfig::max_queued_spans`] permits).
    room: Arc<Semaphore>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("backlog", &self.backlog()).finish_non_exhaustive()
    }
}

/// Opens (creating and migrating) a database connection.
fn connect(path: &Path, config: &StoreConfig) -> Result<Connection, StoreError> {
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

/// How large the WAL may grow before the writer checkpoints it itself (SQLite's automatic
/// checkpoint, set in pages: this over the page size); below it the [`Checkpointer`] does.
const WAL_BOUND_BYTES: i64 = 64 << 20;

/// Least time between two checkpoints of the [`Checkpointer`].
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// The WAL's checkpoints, off the writer thread: a thread with its own connection copies
/// committed pages from the log into the database (`PRAGMA wal_checkpoint(PASSIVE)`, which
/// never waits for the writer nor holds it up) after commits, at most every
/// [`CHECKPOINT_INTERVAL`], so the writer does not wait for those copies and their syncs. The
/// writer still checkpoints once the log reaches [`WAL_BOUND_BYTES`] (SQLite's automatic
/// checkpoint; little is left to copy by then), which bounds the log under sustained load:
/// SQLite starts the log over only after a checkpoint that copied all of it.
struct Checkpointer {
    kick: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start(path: &Path, config: &StoreConfig) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(config.busy_timeout)?;
        let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tracewire-ckpt".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                while kicked.recv().is_ok() {
                    // Commits in the meantime (their kicks) are covered by this checkpoint.
                    if let Some(until) = last.and_then(|t| t.checked_add(CHECKPOINT_INTERVAL)) {
                        while let Some(wait) = until.checked_duration_since(Instant::now()).filter(|w| !w.is_zero()) {
                            if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = kicked.recv_timeout(wait) {
                                // Closing: the last connection closed checkpoints the whole log.
                                return;
                            }
                        }
                    }
                    last = Some(Instant::now());
                    // A failure (the disk) is the writer's to meet and report at its commits.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .map_err(|e| StoreError::Other(e.to_string()))?;
        Ok(Self { kick, thread })
    }

    /// Asks for a checkpoint (soon: at most one every [`CHECKPOINT_INTERVAL`]).
    fn kick(&self) {
        let _ = self.kick.try_send(());
    }

    /// Stops the thread once its checkpoint in progress, if any, is done.
    fn stop(self) {
        drop(self.kick);
        let _ = self.thread.join();
    }
}

/// Brings the database of `conn` to the store's schema with versioned migrations
/// (`PRAGMA user_version`): 0 -> 1 creates the table, 1 -> 2 adds the trace id and output
/// byte counts, 2 -> 3 adds the spans table (text attributes), 3 -> 4 keeps spans whole
/// (the OTLP span, resource and scope; a database of schema 2 or older gets the tables of 4
/// directly, one of schema 3 has its spans rewritten). [`Store::open`] runs it; it is public so that
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

fn write_batch(
    conn: &mut Connection,
    batch: &[Appended],
    span_batch: &[SpanRecord],
    requests: &[Request],
    interned: &mut spans::Interned,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    spans::insert(&tx, span_batch, interned)?;
    for request in requests {
        match request {
            Request::Decoded(request) => spans::insert_request(&tx, request, interned)?,
            Request::Encoded(rows) => wire::insert_encoded(&tx, rows, interned)?,
        }
    }
    for a in batch {
        upsert_process(&tx, &a.record)?;
    }
    tx.commit()?;
    Ok(())
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

fn recent(conn: &Connection, limit: usize) -> Result<Vec<ProcessRecord>, StoreError> {
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

/// Emits the `store.write` span of one batch, linked to every record's context.
fn write_span(start: SystemTime, batch: &[Appended], ok: bool) {
    let tracer = opentelemetry::global::tracer(tracewire_telemetry::TRACER_NAME);
    let links: Vec<Link> = batch
        .iter()
        .map(|a| a.context.span().span_context().clone())
        .filter(opentelemetry::trace::SpanContext::is_valid)
        .map(Link::with_context)
        .collect();
    if links.is_empty() {
        return;
    }
    let mut span = tracer
        .span_builder(Stage::StoreWrite.name())
        .with_start_time(start)
        .with_links(links)
        .with_attributes([
            opentelemetry::KeyValue::new(tracewire_telemetry::STAGE_ATTRIBUTE, Stage::StoreWrite.name()),
            opentelemetry::KeyValue::new("tracewire.store.records", i64::try_from(batch.len()).unwrap_or(i64::MAX)),
            opentelemetry::KeyValue::new("tracewire.store.ok", ok),
        ])
        .start(&tracer);
    span.end();
}

/// A queued OTLP export request: decoded ([`Store::append_request`]) or as its protobuf
/// bytes ([`Store::append_encoded`]).
enum Request {
    Decoded(Arc<ExportTraceServiceRequest>),
    Encoded(Box<wire::Rows>),
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Cmd>,
    config: StoreConfig,
    backlog: Arc<AtomicU64>,
    pending: Vec<Appended>,
    pending_spans: Vec<SpanRecord>,
    /// Export requests, in the order they were queued.
    pending_requests: Vec<Request>,
    /// How many spans are pending (records and requests).
    pending_span_count: usize,
    /// The queue room the pending spans hold, given back once they are committed.
    permits: Vec<OwnedSemaphorePermit>,
    interned: spans::Interned,
    checkpointer: Checkpointer,
}

impl Writer {
    fn pending_len(&self) -> usize {
        self.pending.len() + self.pending_span_count
    }

    /// Whether the batch is as large as a transaction takes.
    fn batch_full(&self) -> bool {
        self.pending.len() >= self.config.max_batch || self.pending_span_count >= self.config.max_span_batch
    }

    /// Writes `pending` in one transaction; on failure keeps it for the next attempt.
    fn write_pending(&mut self) -> Result<(), StoreError> {
        if self.pending_len() == 0 {
            return Ok(());
        }
        let start = SystemTime::now();
        let result =
            write_batch(&mut self.conn, &self.pending, &self.pending_spans, &self.pending_requests, &mut self.interned);
        write_span(start, &self.pending, result.is_ok());
        if result.is_err() {
            // The transaction was rolled back, with the resources and scopes it added.
            self.interned.clear();
        }
        if result.is_ok() {
            self.backlog.fetch_sub(self.pending_len() as u64, Ordering::AcqRel);
            self.pending.clear();
            self.pending_spans.clear();
            self.pending_requests.clear();
            self.pending_span_count = 0;
            self.permits.clear();
            self.checkpointer.kick();
        }
        result
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Append(q) => self.pending.push(q.into_inner()),
            Cmd::Flush(ack) => {
                let _ = ack.send(self.write_pending());
            }
            Cmd::Recent(limit, ack) => {
                let r = self.write_pending().and_then(|()| recent(&self.conn, limit));
                let _ = ack.send(r);
            }
            Cmd::Spans(batch, permit) => {
                self.pending_span_count += batch.len();
                self.pending_spans.extend(batch);
                self.permits.push(permit);
            }
            Cmd::Request(request, n, permit) => {
                self.pending_span_count += n;
                self.pending_requests.push(Request::Decoded(request));
                self.permits.push(permit);
            }
            Cmd::Encoded(rows, n, permit) => {
                self.pending_span_count += n;
                self.pending_requests.push(Request::Encoded(rows));
                self.permits.push(permit);
            }
            Cmd::LoadSpans(filter, ack) => {
                let _ = ack.send(self.write_pending().and_then(|()| spans::load(&self.conn, &filter)));
            }
            Cmd::CountSpans(ack) => {
                let _ = ack.send(self.write_pending().and_then(|()| spans::count(&self.conn)));
            }
            Cmd::Prune(step, ack) => {
                let _ = ack.send(self.write_pending().and_then(|()| retention::step(&mut self.conn, step)));
            }
        }
    }

    fn run(mut self) {
        let mut warned = false;
        loop {
            // Wait for work; with a failed batch pending, only look (it is retried below).
            let first = if self.pending_len() == 0 {
                match self.rx.blocking_recv() {
                    Some(c) => Some(c),
                    None => break,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            };
            if let Some(cmd) = first {
                self.handle(cmd);
                // Coalesce what is already queued into the same batch.
                while !self.batch_full() {
                    match self.rx.try_recv() {
                        Ok(cmd) => self.handle(cmd),
                        Err(_) => break,
                    }
                }
            }
            match self.write_pending() {
                Ok(()) => warned = false,
                Err(e) => {
                    // The batch is kept and retried; barriers report the error meanwhile.
                    if !warned {
                        tracing::warn!(target: "tracewire_store", "store write failed, retrying: {e}");
                        warned = true;
                    }
                    std::thread::sleep(self.config.retry_delay);
                }
            }
        }
        // All handles are gone: a last attempt for what is left.
        let _ = self.write_pending();
        // Then the connection closes last and checkpoints the log.
        self.checkpointer.stop();
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
        let writer = Writer {
            conn,
            rx,
            config,
            backlog: Arc::clone(&backlog),
            pending: Vec::new(),
            pending_spans: Vec::new(),
            pending_requests: Vec::new(),
            pending_span_count: 0,
            permits: Vec::new(),
            interned: spans::Interned::default(),
            checkpointer,
        };
        std::thread::Builder::new()
            .name("tracewire-store".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Other(e.to_string()))?;
        let room =
            Arc::new(Semaphore::new(config.max_queued_spans.clamp(1, usize::try_from(u32::MAX).unwrap_or(usize::MAX))));
        Ok(Self { tx, config, backlog, room, path: Arc::new(path) })
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
            let item = Queued::new(Stage::StoreQueue, Appended { record, context });
            self.enqueue(Cmd::Append(item), 1).await
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
    pub async fn append_spans(&self, batch: Vec<SpanRecord>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len();
        let permit = self.room(n).await?;
        self.enqueue(Cmd::Spans(batch, permit), n as u64).await
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
        let permit = self.room(n).await?;
        self.enqueue(Cmd::Request(request, n, permit), n as u64).await
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
        let permit = self.room(n).await?;
        self.enqueue(Cmd::Encoded(Box::new(rows), n, permit), n as u64).await?;
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

    /// Queues `cmd` (holding `records` records) per the [`FullPolicy`].
    async fn enqueue(&self, cmd: Cmd, records: u64) -> Result<(), StoreError> {
        let sent = match self.config.full {
            FullPolicy::Error => self.tx.try_send(cmd).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Full,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            }),
            FullPolicy::Wait(bound) => self.tx.send_timeout(cmd, bound).await.map_err(|e| match e {
                mpsc::error::SendTimeoutError::Timeout(_) => StoreError::Full,
                mpsc::error::SendTimeoutError::Closed(_) => StoreError::Closed,
            }),
        };
        if sent.is_ok() {
            self.backlog.fetch_add(records, Ordering::AcqRel);
        }
        sent
    }

    /// Every stored span, ordered by start, after a barrier.
    ///
    /// # Errors
    /// As [`Store::flush`]; [`StoreError::Corrupt`] for a row whose attributes do not parse.
    pub async fn spans(&self) -> Result<Vec<SpanRecord>, StoreError> {
        self.spans_matching(SpanFilter::default()).await
    }

    /// The stored spans that `filter` selects, ordered by start, after a barrier.
    ///
    /// # Errors
    /// As [`Store::spans`].
    pub async fn spans_matching(&self, filter: SpanFilter) -> Result<Vec<SpanRecord>, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Cmd::LoadSpans(filter, ack)).await.map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Calls `f` with each stored trace that `filter` selects, after a barrier: in trace id
    /// order, a trace's spans ordered by start (then span id), each span as
    /// [`Store::spans_matching`] gives it. The spans are read on a thread of their own with
    /// a read-only connection (WAL: the writer keeps writing meanwhile) one row at a time,
    /// so memory holds one trace, not the database.
    ///
    /// ```
    /// use tracewire_store::{SpanFilter, SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-each-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let span = |trace: &str, id: &str| SpanRecord { trace_id: trace.into(), span_id: id.into(), ..Default::default() };
    /// let (a, b) = ("0af7651916cd43dd8448eb211c80319c", "1af7651916cd43dd8448eb211c80319c");
    /// store.append_spans(vec![span(b, "0000000000000001"), span(a, "0000000000000002"), span(b, "0000000000000003")]).await.unwrap();
    /// let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let seen = std::sync::Arc::clone(&sizes);
    /// store.for_each_trace(SpanFilter::default(), move |t: Vec<SpanRecord>| {
    ///     seen.lock().unwrap().push((t[0].trace_id.clone(), t.len()));
    /// }).await.unwrap();
    /// assert_eq!(*sizes.lock().unwrap(), [(a.to_owned(), 1), (b.to_owned(), 2)]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Store::spans`].
    pub async fn for_each_trace<F>(&self, filter: SpanFilter, f: F) -> Result<(), StoreError>
    where
        F: FnMut(Vec<SpanRecord>) + Send + 'static,
    {
        self.for_each_trace_with(filter, SpanDetail::Full, f).await
    }

    /// [`Store::for_each_trace`], reading of each span what `detail` says: with
    /// [`SpanDetail::Columns`], the analysis's view only (no OTLP form, only the attributes
    /// named), which is several times cheaper than the whole span.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use tracewire_store::{SpanDetail, SpanFilter, SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-columns-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let attributes = BTreeMap::from([("tracewire.stage".into(), "exec".into()), ("host.name".into(), "h".into())]);
    /// let span = SpanRecord { trace_id: "0af7651916cd43dd8448eb211c80319c".into(), span_id: "b7ad6b7169203331".into(),
    ///     service: "api".into(), attributes, ..Default::default() };
    /// store.append_spans(vec![span]).await.unwrap();
    /// let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let into = std::sync::Arc::clone(&seen);
    /// let detail = SpanDetail::Columns(vec!["tracewire.stage".into()]);
    /// store.for_each_trace_with(SpanFilter::default(), detail, move |t| into.lock().unwrap().extend(t)).await.unwrap();
    /// let read = &seen.lock().unwrap()[0];
    /// assert_eq!((read.service.as_str(), read.stage(), read.attributes.len()), ("api", "exec", 1));
    /// assert!(read.otlp.is_none());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Store::spans`].
    pub async fn for_each_trace_with<F>(&self, filter: SpanFilter, detail: SpanDetail, f: F) -> Result<(), StoreError>
    where
        F: FnMut(Vec<SpanRecord>) + Send + 'static,
    {
        self.read_traces(filter, detail, None, f).await
    }

    /// [`Store::for_each_trace_with`], reusing the records of the traces `f` was given and
    /// hands back through `spare`: with [`SpanDetail::Columns`] each row is written over a
    /// record handed back (every field set: nothing of the span it held before remains,
    /// not even an attribute this span lacks), so reading allocates next to nothing once a
    /// few traces went round, and the consumer frees nothing. Traces need not all come
    /// back; the reader takes what is there when it needs a record.
    ///
    /// ```
    /// use tracewire_store::{SpanDetail, SpanFilter, SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-recycle-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let span = |trace: &str| SpanRecord { trace_id: trace.into(), span_id: "b7ad6b7169203331".into(), ..Default::default() };
    /// store.append_spans(vec![span("0af7651916cd43dd8448eb211c80319c"), span("4bf92f3577b34da6a3ce929d0e0e4736")]).await.unwrap();
    /// let (back, spare) = std::sync::mpsc::channel();
    /// let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let into = std::sync::Arc::clone(&seen);
    /// let detail = SpanDetail::Columns(vec!["tracewire.stage".into()]);
    /// store.for_each_trace_recycling(SpanFilter::default(), detail, spare, move |t: Vec<SpanRecord>| {
    ///     into.lock().unwrap().push(t[0].trace_id.clone());
    ///     back.send(t).unwrap(); // done with it: its records are filled again
    /// }).await.unwrap();
    /// assert_eq!(seen.lock().unwrap().len(), 2);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Store::spans`].
    pub async fn for_each_trace_recycling<F>(
        &self,
        filter: SpanFilter,
        detail: SpanDetail,
        spare: std::sync::mpsc::Receiver<Vec<SpanRecord>>,
        f: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(Vec<SpanRecord>) + Send + 'static,
    {
        self.read_traces(filter, detail, Some(spare), f).await
    }

    /// The read of [`Store::for_each_trace_with`] and [`Store::for_each_trace_recycling`].
    async fn read_traces<F>(
        &self,
        filter: SpanFilter,
        detail: SpanDetail,
        spare: Option<std::sync::mpsc::Receiver<Vec<SpanRecord>>>,
        mut f: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(Vec<SpanRecord>) + Send + 'static,
    {
        let (ack, done) = oneshot::channel();
        self.tx.send(Cmd::Flush(ack)).await.map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)??;
        let (path, busy_timeout) = (Arc::clone(&self.path), self.config.busy_timeout);
        let (ack, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("tracewire-store-read".into())
            .spawn(move || {
                let read = || -> Result<(), StoreError> {
                    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let conn = Connection::open_with_flags(path.as_path(), flags)?;
                    conn.busy_timeout(busy_timeout)?;
                    spans::for_each_trace(&conn, &filter, detail, spare, &mut f)
                };
                let _ = ack.send(read());
            })
            .map_err(|e| StoreError::Other(e.to_string()))?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// How many spans are stored, after a barrier.
    ///
    /// # Errors
    /// As [`Store::flush`].
    pub async fn span_count(&self) -> Result<u64, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Cmd::CountSpans(ack)).await.map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Removes the traces `retention` selects, each one whole (all its spans, by trace id),
    /// after a barrier. The work is done in steps of a bounded number of spans, each its own
    /// transaction, with the appends queued meanwhile written between them, so ingest is
    /// never held up for long. Resources and scopes no longer referenced stay (each is
    /// stored once, however many spans share it).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tracewire_store::{Retention, SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-prune-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let span = |trace: &str, id: &str, start_ns| SpanRecord {
    ///     trace_id: trace.into(), span_id: id.into(), start_ns, end_ns: start_ns + 1_000, ..Default::default()
    /// };
    /// let (old, new) = ("0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736");
    /// store.append_spans(vec![span(old, "b7ad6b7169203331", 1), span(old, "00f067aa0ba902b7", 2), span(new, "b7ad6b7169203331", 3)]).await.unwrap();
    /// // At most two spans: the oldest trace (two spans) goes whole.
    /// let pruned = store.prune(Retention::default().max_spans(2)).await.unwrap();
    /// assert_eq!((pruned.traces, pruned.spans), (1, 2));
    /// assert_eq!(store.spans().await.unwrap()[0].trace_id, new);
    /// // Everything here ended in 1970.
    /// assert_eq!(store.prune(Retention::default().max_age(Duration::from_secs(86_400))).await.unwrap().spans, 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Store::flush`]; what SQLite reports for a step (the steps before it stay done).
    pub async fn prune(&self, retention: Retention) -> Result<Pruned, StoreError> {
        let mut total = Pruned::default();
        if retention.is_empty() {
            return Ok(total);
        }
        let mut step = retention::Step::first(retention, SystemTime::now());
        loop {
            let (ack, done) = oneshot::channel();
            self.tx.send(Cmd::Prune(step, ack)).await.map_err(|_| StoreError::Closed)?;
            let done = done.await.map_err(|_| StoreError::Closed)??;
            total += done.pruned;
            match done.next {
                Some(next) => step = next,
                None => return Ok(total),
            }
        }
    }

    /// A barrier: resolves once every record appended before it is committed (and synced,
    /// with [`Durability::Full`]).
    ///
    /// # Errors
    /// The write error, when the batch could not be written (it is kept and retried).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let span = stage_span!(StoreFlush, tracewire.store.records = self.backlog());
        async {
            let (ack, done) = oneshot::channel();
            self.tx.send(Cmd::Flush(ack)).await.map_err(|_| StoreError::Closed)?;
            done.await.map_err(|_| StoreError::Closed)?
        }
        .instrument(span)
        .await
    }

    /// The most recent processes, after a barrier (so every earlier append is visible).
    ///
    /// # Errors
    /// As [`Store::flush`].
    pub async fn recent(&self, limit: usize) -> Result<Vec<ProcessRecord>, StoreError> {
        let span = stage_span!(StoreFlush, tracewire.store.records = self.backlog());
        async {
            let (ack, done) = oneshot::channel();
            self.tx.send(Cmd::Recent(limit, ack)).await.map_err(|_| StoreError::Closed)?;
            done.await.map_err(|_| StoreError::Closed)?
        }
        .instrument(span)
        .await
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
