//! The writer: one thread that takes what [`Store`](crate::Store) queued, coalesces it into
//! one transaction per batch, and answers barriers and reads in queue order.
//!
//! Invariants, each with its test:
//! - A barrier's promise holds: a [`WriterCommand::Flush`] (and every read, which writes
//!   first) is answered only once everything queued before it is committed, for every
//!   reader of the file (`tests/store.rs`
//!   `barriers_under_concurrency_see_everything_appended_before_them`), and it survives a
//!   SIGKILL of the process right after (`crash_after_a_barrier_loses_nothing_acknowledged`;
//!   with [`Durability::Normal`](crate::Durability::Normal), `tests/wire.rs`
//!   `with_normal_durability_spans_committed_before_a_kill_survive_it`).
//! - A failed write keeps its batch and retries it; barriers report the error meanwhile
//!   (`a_locked_database_fails_the_barrier_keeps_the_queue_and_recovers`,
//!   `a_full_disk_fails_the_barrier_and_keeps_the_queue`).
//! - `store.write` is one span per batch, linked to the context of every process record in
//!   it; span batches emit none, so a collector tracing itself cannot feed its own store
//!   (`tests/spans.rs` `store_write_links_to_every_appending_context`).
//! - Spans are committed at most [`StoreConfig::max_span_batch`] per transaction, and their
//!   room in the queue is given back only once they are committed (`tests/ingest.rs`
//!   `the_queue_is_bounded_in_spans`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use opentelemetry::trace::{Link, Span as _, TraceContextExt, Tracer as _};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tracewire_telemetry::{Queued, Stage};

use crate::checkpoint::Checkpointer;
use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::processes::{self, ProcessRecord};
use crate::spans::{self, SpanFilter, SpanRecord};
use crate::{retention, wire};

/// A process record with the trace context of the caller that appended it.
pub(crate) struct QueuedProcess {
    pub(crate) record: ProcessRecord,
    pub(crate) context: opentelemetry::Context,
}

/// A queued OTLP export request: decoded ([`Store::append_request`](crate::Store::append_request))
/// or as its protobuf bytes, laid out as rows
/// ([`Store::append_encoded`](crate::Store::append_encoded)).
pub(crate) enum QueuedRequest {
    Decoded(Arc<ExportTraceServiceRequest>),
    Encoded(Box<wire::Rows>),
}

/// What [`Store`](crate::Store) sends the writer. Each answer goes back on its `oneshot`;
/// queued spans hold their room in the queue (a permit) until they are committed.
pub(crate) enum WriterCommand {
    /// A process record to write.
    Process(Queued<QueuedProcess>),
    /// A barrier.
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// The most recent processes, after a barrier.
    Recent(usize, oneshot::Sender<Result<Vec<ProcessRecord>, StoreError>>),
    /// Span records to write.
    Spans(Vec<SpanRecord>, OwnedSemaphorePermit),
    /// An export request to write, with its number of spans.
    Request(QueuedRequest, usize, OwnedSemaphorePermit),
    /// The spans a filter selects, after a barrier.
    LoadSpans(SpanFilter, oneshot::Sender<Result<Vec<SpanRecord>, StoreError>>),
    /// How many spans are stored, after a barrier.
    CountSpans(oneshot::Sender<Result<u64, StoreError>>),
    /// One step of a prune, after a barrier.
    Prune(retention::Step, oneshot::Sender<Result<retention::StepDone, StoreError>>),
}

/// What the writer has taken from the queue and not yet committed: its next transaction,
/// in the order it was queued.
#[derive(Default)]
struct Uncommitted {
    processes: Vec<QueuedProcess>,
    span_records: Vec<SpanRecord>,
    requests: Vec<QueuedRequest>,
    /// Spans in `span_records` and `requests`.
    spans: usize,
    /// The queue room the spans hold, given back once they are committed.
    room: Vec<OwnedSemaphorePermit>,
}

impl Uncommitted {
    /// Records (processes and spans) held.
    fn records(&self) -> usize {
        self.processes.len() + self.spans
    }

    /// Writes everything held in one transaction.
    fn write(&self, conn: &mut Connection, interned: &mut spans::Interned) -> Result<(), StoreError> {
        let tx = conn.transaction()?;
        spans::insert(&tx, &self.span_records, interned)?;
        for request in &self.requests {
            match request {
                QueuedRequest::Decoded(request) => spans::insert_request(&tx, request, interned)?,
                QueuedRequest::Encoded(rows) => wire::insert_encoded(&tx, rows, interned)?,
            }
        }
        for process in &self.processes {
            processes::upsert_process(&tx, &process.record)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets everything held (once committed), giving its queue room back.
    fn clear(&mut self) {
        self.processes.clear();
        self.span_records.clear();
        self.requests.clear();
        self.spans = 0;
        self.room.clear();
    }
}

/// Emits the `store.write` span of one batch, linked to every process record's context.
fn write_span(start: SystemTime, processes: &[QueuedProcess], ok: bool) {
    let tracer = opentelemetry::global::tracer(tracewire_telemetry::TRACER_NAME);
    let links: Vec<Link> = processes
        .iter()
        .map(|p| p.context.span().span_context().clone())
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
            opentelemetry::KeyValue::new("tracewire.store.records", i64::try_from(processes.len()).unwrap_or(i64::MAX)),
            opentelemetry::KeyValue::new("tracewire.store.ok", ok),
        ])
        .start(&tracer);
    span.end();
}

/// The writer thread's state: its connection, the queue's receiving end, and the batch it
/// is building.
pub(crate) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<WriterCommand>,
    config: StoreConfig,
    /// Records queued and not yet committed, shared with every [`Store`](crate::Store) handle.
    backlog: Arc<AtomicU64>,
    uncommitted: Uncommitted,
    interned: spans::Interned,
    checkpointer: Checkpointer,
}

impl Writer {
    pub(crate) fn new(
        conn: Connection,
        rx: mpsc::Receiver<WriterCommand>,
        config: StoreConfig,
        backlog: Arc<AtomicU64>,
        checkpointer: Checkpointer,
    ) -> Self {
        Self {
            conn,
            rx,
            config,
            backlog,
            uncommitted: Uncommitted::default(),
            interned: spans::Interned::default(),
            checkpointer,
        }
    }

    /// Whether the batch is as large as a transaction takes.
    fn batch_full(&self) -> bool {
        self.uncommitted.processes.len() >= self.config.max_batch
            || self.uncommitted.spans >= self.config.max_span_batch
    }

    /// Writes what is uncommitted in one transaction; on failure keeps it for the next
    /// attempt.
    fn commit(&mut self) -> Result<(), StoreError> {
        if self.uncommitted.records() == 0 {
            return Ok(());
        }
        let start = SystemTime::now();
        let result = self.uncommitted.write(&mut self.conn, &mut self.interned);
        write_span(start, &self.uncommitted.processes, result.is_ok());
        if result.is_err() {
            // The transaction was rolled back, with the resources and scopes it added.
            self.interned.clear();
        }
        if result.is_ok() {
            self.backlog.fetch_sub(self.uncommitted.records() as u64, Ordering::AcqRel);
            self.uncommitted.clear();
            self.checkpointer.kick();
        }
        result
    }

    fn handle(&mut self, command: WriterCommand) {
        match command {
            WriterCommand::Process(queued) => self.uncommitted.processes.push(queued.into_inner()),
            WriterCommand::Flush(ack) => {
                let _ = ack.send(self.commit());
            }
            WriterCommand::Recent(limit, ack) => {
                let _ = ack.send(self.commit().and_then(|()| processes::recent(&self.conn, limit)));
            }
            WriterCommand::Spans(records, room) => {
                self.uncommitted.spans += records.len();
                self.uncommitted.span_records.extend(records);
                self.uncommitted.room.push(room);
            }
            WriterCommand::Request(request, spans, room) => {
                self.uncommitted.spans += spans;
                self.uncommitted.requests.push(request);
                self.uncommitted.room.push(room);
            }
            WriterCommand::LoadSpans(filter, ack) => {
                let _ = ack.send(self.commit().and_then(|()| spans::load(&self.conn, &filter)));
            }
            WriterCommand::CountSpans(ack) => {
                let _ = ack.send(self.commit().and_then(|()| spans::count(&self.conn)));
            }
            WriterCommand::Prune(step, ack) => {
                let _ = ack.send(self.commit().and_then(|()| retention::step(&mut self.conn, step)));
            }
        }
    }

    /// The thread's loop, until every [`Store`](crate::Store) handle is gone.
    pub(crate) fn run(mut self) {
        let mut warned = false;
        loop {
            // Wait for work; with a failed batch uncommitted, only look (it is retried below).
            let first = if self.uncommitted.records() == 0 {
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
            if let Some(command) = first {
                self.handle(command);
                // Coalesce what is already queued into the same batch.
                while !self.batch_full() {
                    match self.rx.try_recv() {
                        Ok(command) => self.handle(command),
                        Err(_) => break,
                    }
                }
            }
            match self.commit() {
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
        let _ = self.commit();
        // Then the connection closes last and checkpoints the log.
        self.checkpointer.stop();
    }
}
