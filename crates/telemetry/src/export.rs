//! Export that never blocks the application, and counts every span it does not deliver.
//!
//! [`BoundedProcessor`] is an `opentelemetry_sdk` span processor. Ending a span only tries
//! to push it into a bounded lock-free queue: when the queue is full the span is dropped and
//! counted. One worker thread, with its own single-threaded tokio runtime, takes batches
//! from the queue and calls the exporter with a timeout; a batch that fails is dropped and
//! counted. Shutdown cuts an export in flight short at its deadline. So, at
//! any moment, `emitted == exported + dropped + spooled + pending`, and after shutdown
//! `pending == 0`: no span is ever lost without being counted.
//!
//! With a disk spool (`TRACEWIRE_SPOOL_DIR`, [`crate::SpoolConfig`]) the worker encodes each
//! batch into its OTLP request and sends it with its own client ([`crate::spool`]); a
//! request the collector does not take (no answer, a retryable status) is appended to the
//! spool instead of dropped, and the spool is replayed, oldest first, once the collector
//! answers again. While the spool holds spans, new batches queue behind them on disk.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, bounded, unbounded};
use crossbeam_queue::ArrayQueue;
use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use prost::Message;

use crate::config::{BatchConfig, Config, SpoolConfig};
use crate::spool::{SendError, Sender as OtlpSender, Spool};

#[derive(Debug, Default)]
struct Counters {
    emitted: AtomicU64,
    exported: AtomicU64,
    dropped_queue_full: AtomicU64,
    /// Spans shed at start (emitted and dropped at a full queue, both): one counter, so
    /// that shedding costs one atomic add.
    shed: AtomicU64,
    dropped_export_failed: AtomicU64,
    dropped_shutdown: AtomicU64,
    export_batches: AtomicU64,
    export_failures: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    evicted: AtomicU64,
    spool_rejected: AtomicU64,
    spool_torn: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::AcqRel);
        }
    }
}

/// A handle on the export counters of one pipeline. Cheap to clone; reads are lock-free.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    inner: Arc<Counters>,
}

/// A point-in-time copy of the export counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportSnapshot {
    /// Spans ended and handed to the pipeline.
    pub emitted: u64,
    /// Spans the exporter accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Spans dropped because their export failed or timed out.
    pub dropped_export_failed: u64,
    /// Spans dropped because shutdown's deadline passed, or ended after shutdown.
    pub dropped_shutdown: u64,
    /// Export calls made.
    pub export_batches: u64,
    /// Export calls that failed or timed out.
    pub export_failures: u64,
    /// Spans written to the disk spool because the collector did not take them (they
    /// leave `pending` without being exported or dropped here; a replay delivers them,
    /// maybe in a later process).
    pub spooled: u64,
    /// Spans sent from the disk spool and accepted by the collector (spooled by this
    /// process or an earlier one).
    pub replayed: u64,
    /// Spans deleted from the disk spool unsent to make room, oldest first.
    pub evicted: u64,
    /// Spans of the disk spool that the collector refused for good (a status that is not
    /// retryable) when replayed, and deleted.
    pub spool_rejected: u64,
    /// Records of the disk spool found torn or corrupt (a crash mid-write) and skipped.
    pub spool_torn: u64,
}

impl ExportSnapshot {
    /// Every span dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_export_failed + self.dropped_shutdown
    }

    /// Spans neither exported, dropped nor spooled yet (queued or being exported).
    pub fn pending(&self) -> u64 {
        self.emitted.saturating_sub(self.exported + self.dropped() + self.spooled)
    }
}

impl ExportStats {
    /// The current counts.
    pub fn snapshot(&self) -> ExportSnapshot {
        let c = &self.inner;
        let l = |a: &AtomicU64| a.load(Ordering::Acquire);
        // Read the outcome counters before `emitted`, so that `pending` never underflows
        // from a span that finished between the loads.
        let exported = l(&c.exported);
        // A shed span is emitted and dropped at once: read once, it counts in both.
        let shed = l(&c.shed);
        let dropped_queue_full = l(&c.dropped_queue_full) + shed;
        let dropped_export_failed = l(&c.dropped_export_failed);
        let dropped_shutdown = l(&c.dropped_shutdown);
        let spooled = l(&c.spooled);
        ExportSnapshot {
            exported,
            dropped_queue_full,
            dropped_export_failed,
            dropped_shutdown,
            export_batches: l(&c.export_batches),
            export_failures: l(&c.export_failures),
            spooled,
            replayed: l(&c.replayed),
            evicted: l(&c.evicted),
            spool_rejected: l(&c.spool_rejected),
            spool_torn: l(&c.spool_torn),
            emitted: l(&c.emitted) + shed,
        }
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The exporter could not be built (bad endpoint, ...).
    #[error("cannot build the span exporter: {0}")]
    Exporter(String),
    /// The worker thread or its runtime could not start.
    #[error("cannot start the export worker: {0}")]
    Worker(String),
}

/// Lets shutdown cut short an export that is in flight, at the shutdown deadline.
#[derive(Debug, Default)]
struct Cancel {
    notify: tokio::sync::Notify,
    deadline: std::sync::Mutex<Option<Instant>>,
}

impl Cancel {
    fn request(&self, deadline: Instant) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = Some(deadline);
        }
        // A stored permit wakes the worker even if it is not waiting yet.
        self.notify.notify_one();
    }

    /// Resolves at the shutdown deadline, once shutdown has been requested.
    async fn at_deadline(&self) {
        self.notify.notified().await;
        let deadline = self.deadline.lock().ok().and_then(|d| *d).unwrap_or_else(Instant::now);
        tokio::time::sleep_until(deadline.into()).await;
        // Leave the permit for any later wait: shutdown stays requested.
        self.notify.notify_one();
    }
}

enum Control {
    Flush(Sender<OTelSdkResult>),
    Shutdown(Instant, Sender<OTelSdkResult>),
    SetResource(Resource),
}

/// A finished span waiting for export: from the OpenTelemetry SDK (spans made with its API,
/// such as [`crate::Queued`]'s), or a compact record from tracewire's `tracing` layer, which
/// the worker turns into `SpanData` off the application's threads.
// The compact record is the common case and stays inline: boxing it would cost an
// allocation per span on the emitting thread, freed on the worker.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Item {
    /// Boxed: `SpanData` is larger than a compact record, and every item moves twice.
    Sdk(Box<SpanData>),
    Compact(crate::layer::SpanRecord),
}

/// The queue between the application's threads and the export worker.
struct Shared {
    queue: ArrayQueue<Item>,
    stats: ExportStats,
    /// Set once the worker has stopped: what is still queued can never be exported.
    closed: AtomicBool,
    /// The worker has been woken for a full batch and has not looked yet.
    wake_pending: AtomicBool,
    /// Set when a push found the queue full, cleared by the worker once it has taken spans:
    /// load shedding reads this flag (rarely written, so it stays in every core's cache)
    /// rather than the queue's head and tail (written for every span).
    full: AtomicBool,
    batch_size: usize,
}

impl Shared {
    /// Counts everything left in the queue as dropped at shutdown.
    fn drop_rest(&self) {
        let mut n = 0;
        while self.queue.pop().is_some() {
            n += 1;
        }
        if n > 0 {
            self.stats.inner.dropped_shutdown.fetch_add(n, Ordering::AcqRel);
        }
    }
}

/// Load shedding at span start: while the export queue is full, a span that would only be
/// dropped at its end is not recorded at all, and is counted as dropped right away
/// ([`ExportSnapshot::dropped_queue_full`]). Asked by tracewire's span layer as a span
/// starts (see [`crate::Pipeline::layer`]); under overload the emit path costs the
/// registry's part of a span and a flag check instead of a whole span. "Full" means a push
/// has failed since the worker last took spans, and the queue is still full.
#[derive(Clone)]
pub struct Overload {
    shared: Arc<Shared>,
}

impl fmt::Debug for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overload").field("full", &self.shared.queue.is_full()).finish()
    }
}

impl Overload {
    /// `true` (and the span counted as emitted and dropped) when the queue is full.
    pub fn shed(&self) -> bool {
        if self.shared.full.load(Ordering::Relaxed) && self.shared.queue.is_full() {
            self.shared.stats.inner.shed.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}

/// Whether this thread should look at the queue's length now: every `WAKE_CHECK` spans
/// (at most every batch), since reading the length touches the cache lines the worker
/// writes for every span it takes. A batch waits at most that many spans longer for its
/// wake-up (or the schedule delay, whichever comes first).
fn due_for_check(batch_size: usize) -> bool {
    const WAKE_CHECK: usize = 16;
    thread_local! {
        static SINCE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    SINCE.with(|since| {
        let n = since.get() + 1;
        if n >= WAKE_CHECK.min(batch_size) {
            since.set(0);
            true
        } else {
            since.set(n);
            false
        }
    })
}

/// Where finished spans go: a handle on the queue and the worker to wake. Shared by the
/// SDK span processor and tracewire's `tracing` layer.
#[derive(Clone)]
pub(crate) struct Sink {
    shared: Arc<Shared>,
    worker: std::thread::Thread,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink").field("queued", &self.shared.queue.len()).finish_non_exhaustive()
    }
}

impl Sink {
    /// Counts `item` as emitted and queues it without blocking, or counts it as dropped
    /// when the queue is full. Wakes the worker once a batch is waiting.
    pub(crate) fn submit(&self, item: Item) {
        let sh = &*self.shared;
        let c = &sh.stats.inner;
        c.emitted.fetch_add(1, Ordering::AcqRel);
        if sh.queue.push(item).is_err() {
            c.dropped_queue_full.fetch_add(1, Ordering::AcqRel);
            sh.full.store(true, Ordering::Relaxed);
            return;
        }
        if sh.closed.load(Ordering::SeqCst) {
            // The worker is gone; whoever pops a span counts it, exactly once.
            sh.drop_rest();
        } else if due_for_check(sh.batch_size)
            && sh.queue.len() >= sh.batch_size
            && !sh.wake_pending.swap(true, Ordering::AcqRel)
        {
            self.worker.unpark();
        }
    }
}

/// The bounded, non-blocking span processor. See the module documentation.
///
/// Ending a span costs one lock-free push; the worker is woken (unparked) only when a full
/// batch is waiting, so the application's threads never make a system call per span.
pub struct BoundedProcessor {
    sink: Sink,
    control: Sender<Control>,
    cancel: Arc<Cancel>,
    export_timeout: Duration,
    shut_down: AtomicBool,
    worker: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for BoundedProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedProcessor").field("stats", &self.sink.shared.stats.snapshot()).finish_non_exhaustive()
    }
}

/// Builds an exporter inside the worker's tokio runtime (gRPC channels need one).
pub type ExporterFactory<E> = Box<dyn FnOnce() -> Result<E, String> + Send>;

impl BoundedProcessor {
    /// Starts the worker thread, builds the exporter on it and returns the processor.
    /// `log` is the dispatcher the worker logs through (its own spans are never exported,
    /// so exporting cannot feed itself).
    ///
    /// # Errors
    /// When the exporter cannot be built or the worker cannot start.
    pub fn start<E: SpanExporter + 'static>(
        factory: ExporterFactory<E>,
        batch: BatchConfig,
        log: tracing::Dispatch,
    ) -> Result<Self, PipelineError> {
        Self::start_inner(factory, batch, log, None)
    }

    /// Starts the worker with the OTLP client of `config` and its disk spool
    /// (`config.spool`): see the module documentation.
    pub(crate) fn start_spooled(config: &Config, log: tracing::Dispatch) -> Result<Self, PipelineError> {
        let Some(spool) = config.spool.clone() else {
            return Err(PipelineError::Worker("no spool configured".into()));
        };
        let cfg = config.clone();
        let setup = SpoolSetup { config: spool, sender: Box::new(move || OtlpSender::new(&cfg)) };
        Self::start_inner(Box::new(|| Ok(NoExporter)), config.batch, log, Some(setup))
    }

    fn start_inner<E: SpanExporter + 'static>(
        factory: ExporterFactory<E>,
        batch: BatchConfig,
        log: tracing::Dispatch,
        spool: Option<SpoolSetup>,
    ) -> Result<Self, PipelineError> {
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(batch.max_queue_size.max(1)),
            stats: ExportStats::default(),
            closed: AtomicBool::new(false),
            wake_pending: AtomicBool::new(false),
            full: AtomicBool::new(false),
            batch_size: batch.max_export_batch_size.max(1),
        });
        let (ctl_tx, ctl_rx) = unbounded();
        let (ready_tx, ready_rx) = bounded(1);
        let cancel = Arc::new(Cancel::default());
        let (worker_shared, worker_cancel) = (Arc::clone(&shared), Arc::clone(&cancel));
        let handle = std::thread::Builder::new()
            .name("tracewire-export".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&log);
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(PipelineError::Worker(e.to_string())));
                        return;
                    }
                };
                let built = {
                    let _enter = rt.enter();
                    factory().and_then(|exporter| match spool {
                        None => Ok((exporter, None)),
                        Some(SpoolSetup { config, sender }) => {
                            let retry_delay = crate::spool::retry_delay(batch.schedule_delay);
                            sender().map(|sender| {
                                let spooling = Spooling {
                                    config,
                                    spool: None,
                                    sender,
                                    resource: ResourceAttributesWithSchema::default(),
                                    retry_at: Instant::now(),
                                    retry_delay,
                                    warned_spool: false,
                                    warned_evicted: false,
                                };
                                (exporter, Some(spooling))
                            })
                        }
                    })
                };
                match built {
                    Ok((exporter, spooling)) => {
                        let _ = ready_tx.send(Ok(()));
                        let mut worker = Worker {
                            rt,
                            exporter,
                            shared: worker_shared,
                            control: ctl_rx,
                            batch,
                            cancel: worker_cancel,
                            scope: opentelemetry::InstrumentationScope::builder(crate::TRACER_NAME).build(),
                            clock: crate::layer::Clock::now(),
                            warned: false,
                            warned_full: false,
                            spooling,
                        };
                        worker.run();
                        // Nothing queued from now on can be exported: count it.
                        worker.shared.closed.store(true, Ordering::SeqCst);
                        worker.shared.drop_rest();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(PipelineError::Exporter(e)));
                    }
                }
            })
            .map_err(|e| PipelineError::Worker(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                sink: Sink { shared, worker: handle.thread().clone() },
                control: ctl_tx,
                cancel,
                export_timeout: batch.export_timeout,
                shut_down: AtomicBool::new(false),
                worker: std::sync::Mutex::new(Some(handle)),
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(PipelineError::Worker("the export worker exited during start-up".into())),
        }
    }

    /// The counters of this pipeline.
    pub fn stats(&self) -> ExportStats {
        self.sink.shared.stats.clone()
    }

    /// The load-shedding handle of this pipeline.
    pub fn overload(&self) -> Overload {
        Overload { shared: Arc::clone(&self.sink.shared) }
    }

    /// Where tracewire's `tracing` layer hands its finished spans.
    pub(crate) fn sink(&self) -> Sink {
        self.sink.clone()
    }

    fn send(&self, msg: Control) -> Result<(), OTelSdkError> {
        self.control.send(msg).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        self.sink.worker.unpark();
        Ok(())
    }

    fn request(&self, make: impl FnOnce(Sender<OTelSdkResult>) -> Control, wait: Duration) -> OTelSdkResult {
        let (tx, rx) = bounded(1);
        self.send(make(tx))?;
        match rx.recv_timeout(wait) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(wait)),
            Err(RecvTimeoutError::Disconnected) => Err(OTelSdkError::AlreadyShutdown),
        }
    }
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.sink.submit(Item::Sdk(Box::new(span)));
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.request(Control::Flush, self.export_timeout + Duration::from_millis(100))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let deadline = Instant::now() + timeout;
        // An export in flight is cut short at the deadline; the worker then counts what is
        // left and answers. A little slack covers that hand-back.
        self.cancel.request(deadline);
        let result = self.request(|tx| Control::Shutdown(deadline, tx), timeout + Duration::from_millis(250));
        if result.is_ok()
            && let Ok(mut guard) = self.worker.lock()
            && let Some(h) = guard.take()
        {
            let _ = h.join();
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.send(Control::SetResource(resource.clone()));
    }
}

/// How draining the queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Everything was exported.
    Complete,
    /// Some export failed; its spans were dropped and counted.
    ExportFailed,
    /// The deadline passed; what was left was dropped and counted.
    DeadlinePassed,
}

struct Worker<E> {
    rt: tokio::runtime::Runtime,
    exporter: E,
    shared: Arc<Shared>,
    control: Receiver<Control>,
    batch: BatchConfig,
    cancel: Arc<Cancel>,
    /// The instrumentation scope of the spans of tracewire's `tracing` layer.
    scope: opentelemetry::InstrumentationScope,
    /// Makes the layer's timestamps wall-clock times.
    clock: crate::layer::Clock,
    warned: bool,
    warned_full: bool,
    /// The disk spool and the client that sends encoded requests, when configured.
    spooling: Option<Spooling>,
}

/// What the worker needs to build its spooling side on its own thread.
struct SpoolSetup {
    config: SpoolConfig,
    sender: Box<dyn FnOnce() -> Result<OtlpSender, String> + Send>,
}

/// The exporter type of a spooling worker, which sends with its own client instead.
#[derive(Debug)]
struct NoExporter;

impl SpanExporter for NoExporter {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Err(OTelSdkError::InternalFailure("a spooling worker sends with its own client".into()))
    }
}

/// The spooling side of the worker.
struct Spooling {
    config: SpoolConfig,
    /// `None` until opened (again): at start, and after its lock was found held or a
    /// file of it could not be read.
    spool: Option<Spool>,
    sender: OtlpSender,
    resource: ResourceAttributesWithSchema,
    /// After a failed attempt, no new one before this.
    retry_at: Instant,
    retry_delay: Duration,
    warned_spool: bool,
    warned_evicted: bool,
}

impl Spooling {
    /// The spool, opened if it is not yet.
    fn open(&mut self, c: &Counters) -> Option<&mut Spool> {
        if self.spool.is_none() {
            match Spool::open(&self.config.dir, self.config.max_bytes) {
                Ok(mut spool) => {
                    Counters::add(&c.spool_torn, spool.take_torn());
                    self.spool = Some(spool);
                }
                Err(e) => self.warn(&format!("the disk spool cannot be used ({e}); undelivered spans are dropped")),
            }
        }
        self.spool.as_mut()
    }

    fn warn(&mut self, what: &str) {
        if !self.warned_spool {
            self.warned_spool = true;
            tracing::warn!(target: "tracewire_telemetry", "{what}. Further drops are counted (ExportStats) without another warning.");
        }
    }

    /// Whether spans wait in the spool.
    fn backlog(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Appends a request of `n` spans to the spool, or counts them as dropped when it
    /// cannot.
    fn append(&mut self, c: &Counters, request: &[u8], n: u64) -> bool {
        let Some(spool) = self.open(c) else {
            Counters::add(&c.dropped_export_failed, n);
            return false;
        };
        match spool.append(request, n) {
            Ok(evicted) => {
                Counters::add(&c.spooled, n);
                Counters::add(&c.evicted, evicted);
                if evicted > 0 && !self.warned_evicted {
                    self.warned_evicted = true;
                    tracing::warn!(
                        target: "tracewire_telemetry",
                        "the disk spool is full (TRACEWIRE_SPOOL_MAX_BYTES={}); its oldest spans are evicted and \
                         counted (ExportStats) without another warning",
                        self.config.max_bytes
                    );
                }
                true
            }
            Err(e) => {
                Counters::add(&c.dropped_export_failed, n);
                self.warn(&format!("cannot write {n} spans to the disk spool ({e}); they were dropped"));
                false
            }
        }
    }
}

/// How one attempt to send an encoded request ended.
enum Sent {
    Accepted,
    /// Worth another attempt later.
    Retry(String),
    /// Refused for good.
    Refused(String),
    /// Cut short at the shutdown deadline.
    Cancelled,
}

/// How one replay attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// A record left the spool (delivered, or refused for good).
    Progress,
    /// Nothing was delivered: the spool is empty, or the attempt failed.
    Stalled,
}

impl<E: SpanExporter> Worker<E> {
    /// One warning when the queue first overflows; later drops are only counted.
    fn warn_queue_full(&mut self) {
        let c = &self.shared.stats.inner;
        if !self.warned_full && (c.dropped_queue_full.load(Ordering::Relaxed) > 0 || c.shed.load(Ordering::Relaxed) > 0)
        {
            self.warned_full = true;
            tracing::warn!(
                target: "tracewire_telemetry",
                "the span queue is full (OTEL_BSP_MAX_QUEUE_SIZE={}); new spans are dropped and counted \
                 (ExportStats) without another warning",
                self.batch.max_queue_size
            );
        }
    }

    /// Handles control messages; `false` once the worker must stop.
    fn control(&mut self) -> bool {
        loop {
            match self.control.try_recv() {
                Ok(Control::Flush(ack)) => {
                    let result = match self.drain(None) {
                        Drain::Complete => Ok(()),
                        Drain::ExportFailed | Drain::DeadlinePassed => Err(OTelSdkError::InternalFailure(
                            "an export failed; its spans were dropped and counted".into(),
                        )),
                    };
                    let _ = ack.send(result);
                }
                Ok(Control::Shutdown(deadline, ack)) => {
                    // Export failures are counted drops, not shutdown failures; only running
                    // out of time is.
                    let drained = self.drain(Some(deadline));
                    let _enter = self.rt.enter();
                    let _ = self.exporter.shutdown_with_timeout(deadline.saturating_duration_since(Instant::now()));
                    let _ = ack.send(match drained {
                        Drain::DeadlinePassed => Err(OTelSdkError::Timeout(self.batch.export_timeout)),
                        Drain::Complete | Drain::ExportFailed => Ok(()),
                    });
                    return false;
                }
                Ok(Control::SetResource(r)) => {
                    self.exporter.set_resource(&r);
                    if let Some(sp) = &mut self.spooling {
                        sp.resource = (&r).into();
                    }
                }
                Err(TryRecvError::Empty) => return true,
                // Every processor handle is gone: export what is left, then stop.
                Err(TryRecvError::Disconnected) => {
                    self.drain(Some(Instant::now() + self.batch.export_timeout));
                    return false;
                }
            }
        }
    }

    fn run(&mut self) {
        let mut next_export = Instant::now() + self.batch.schedule_delay;
        if let Some(sp) = &mut self.spooling {
            sp.open(&self.shared.stats.inner);
        }
        loop {
            self.warn_queue_full();
            if !self.control() {
                return;
            }
            let now = Instant::now();
            let len = self.shared.queue.len();
            if len >= self.shared.batch_size || (now >= next_export && len > 0) {
                self.export_one(None);
                if self.shared.queue.len() < self.shared.batch_size {
                    next_export = Instant::now() + self.batch.schedule_delay;
                }
                continue;
            }
            if now >= next_export {
                next_export = now + self.batch.schedule_delay;
            }
            // Replay the spool a record at a time, between batches.
            let mut wake_at = next_export;
            if let Some(sp) = &self.spooling
                && sp.backlog()
            {
                if now >= sp.retry_at {
                    self.replay_one(None);
                    continue;
                }
                wake_at = wake_at.min(sp.retry_at);
            }
            self.shared.wake_pending.store(false, Ordering::Release);
            // A batch may have filled while the flag was set: look again before sleeping.
            if self.shared.queue.len() >= self.shared.batch_size {
                continue;
            }
            std::thread::park_timeout(wake_at.saturating_duration_since(now));
        }
    }

    /// Exports everything queued. With a deadline, whatever could not be exported by then
    /// is dropped and counted.
    fn drain(&mut self, deadline: Option<Instant>) -> Drain {
        let mut outcome = Drain::Complete;
        while !self.shared.queue.is_empty() {
            // Past the deadline a spooling worker writes what is left to disk (no network)
            // instead of dropping it.
            if deadline.is_some_and(|d| Instant::now() >= d) && self.spooling.is_none() {
                self.shared.drop_rest();
                return Drain::DeadlinePassed;
            }
            if !self.export_one(deadline) {
                outcome = Drain::ExportFailed;
            }
        }
        if let Some(sp) = &self.spooling {
            // Then replay the spool, oldest first, until it is empty, an attempt fails or
            // the deadline passes; the rest stays on disk. Shutdown tries even right after
            // a failure (it is the last chance); a flush waits for the retry delay and
            // takes at most one export timeout.
            let now = Instant::now();
            let until = match deadline {
                Some(d) => Some(d),
                None if now >= sp.retry_at => Some(now + self.batch.export_timeout),
                None => None,
            };
            if let Some(until) = until {
                while Instant::now() < until && self.replay_one(Some(until)) == Replay::Progress {}
            }
        }
        outcome
    }

    /// One attempt to send an encoded request, within the export timeout (less before a
    /// deadline), cut short by shutdown's deadline.
    fn send(&mut self, request: &[u8], deadline: Option<Instant>) -> Sent {
        let Some(sp) = self.spooling.as_mut() else { return Sent::Refused("no spool".into()) };
        let mut timeout = self.batch.export_timeout;
        if let Some(d) = deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        let c = &self.shared.stats.inner;
        c.export_batches.fetch_add(1, Ordering::AcqRel);
        let (sender, cancel) = (&mut sp.sender, &self.cancel);
        let result = self.rt.block_on(async {
            tokio::select! {
                r = tokio::time::timeout(timeout, sender.send(request)) => Some(r),
                () = cancel.at_deadline() => None,
            }
        });
        let sent = match result {
            Some(Ok(Ok(()))) => return Sent::Accepted,
            Some(Ok(Err(SendError::Retryable(why)))) => Sent::Retry(why),
            Some(Ok(Err(SendError::Refused(why)))) => Sent::Refused(why),
            Some(Err(_)) => Sent::Retry(format!("no answer within {timeout:?}")),
            None => Sent::Cancelled,
        };
        c.export_failures.fetch_add(1, Ordering::AcqRel);
        if matches!(sent, Sent::Retry(_)) {
            sp.retry_at = Instant::now() + sp.retry_delay;
        }
        sent
    }

    /// Delivers a batch through the spool: sent when the spool is empty and the collector
    /// is not known to be down, else (or when that fails with a retryable error, or at the
    /// shutdown deadline) appended to the spool. Returns whether no span was dropped.
    fn deliver_spooled(&mut self, batch: Vec<SpanData>, n: u64, deadline: Option<Instant>) -> bool {
        let Some(sp) = self.spooling.as_mut() else { return false };
        let request =
            ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(batch, &sp.resource) }
                .encode_to_vec();
        let now = Instant::now();
        let shared = Arc::clone(&self.shared);
        let c = &shared.stats.inner;
        // Oldest first: while spans wait on disk, new ones queue behind them.
        if sp.backlog() || (sp.spool.is_some() && now < sp.retry_at) || deadline.is_some_and(|d| now >= d) {
            return sp.append(c, &request, n);
        }
        match self.send(&request, deadline) {
            Sent::Accepted => {
                c.exported.fetch_add(n, Ordering::AcqRel);
                true
            }
            Sent::Retry(why) => {
                let spooled = self.spooling.as_mut().is_some_and(|sp| sp.append(c, &request, n));
                if spooled {
                    self.warn_spooling(&why);
                }
                spooled
            }
            // The request may have reached the collector: spooled, it can arrive twice.
            Sent::Cancelled => self.spooling.as_mut().is_some_and(|sp| sp.append(c, &request, n)),
            Sent::Refused(why) => {
                c.dropped_export_failed.fetch_add(n, Ordering::AcqRel);
                self.warn_failed(n, &why);
                false
            }
        }
    }

    /// One warning the first time the collector does not take a batch that is spooled.
    fn warn_spooling(&mut self, why: &str) {
        if !self.warned {
            self.warned = true;
            let dir = self.spooling.as_ref().map(|sp| sp.config.dir.display().to_string()).unwrap_or_default();
            tracing::warn!(
                target: "tracewire_telemetry",
                "span export failed ({why}); spans go to the disk spool in {dir} and are sent when the collector \
                 answers again. Further failures are counted (ExportStats) without another warning."
            );
        }
    }

    /// Sends the oldest record of the spool once.
    fn replay_one(&mut self, deadline: Option<Instant>) -> Replay {
        let shared = Arc::clone(&self.shared);
        let c = &shared.stats.inner;
        let Some(sp) = self.spooling.as_mut() else { return Replay::Stalled };
        let Some(spool) = sp.spool.as_mut() else { return Replay::Stalled };
        let head = spool.head();
        Counters::add(&c.spool_torn, spool.take_torn());
        let head = match head {
            Ok(Some(head)) => head,
            Ok(None) => return Replay::Stalled,
            Err(e) => {
                // Opened again (and rescanned) at the next attempt.
                sp.spool = None;
                sp.retry_at = Instant::now() + sp.retry_delay;
                sp.warn(&format!("cannot read the disk spool ({e})"));
                return Replay::Stalled;
            }
        };
        let sent = self.send(&head.request, deadline);
        let Some(sp) = self.spooling.as_mut() else { return Replay::Stalled };
        let rejected = match sent {
            Sent::Accepted => false,
            Sent::Refused(why) => {
                sp.warn(&format!("the collector refused {} spooled spans ({why}); they were deleted", head.spans));
                true
            }
            Sent::Retry(_) | Sent::Cancelled => return Replay::Stalled,
        };
        Counters::add(if rejected { &c.spool_rejected } else { &c.replayed }, head.spans);
        if let Some(spool) = sp.spool.as_mut()
            && let Err(e) = spool.pop_head()
        {
            sp.warn(&format!("cannot record replay progress in the disk spool ({e}); a restart may send spans twice"));
        }
        Replay::Progress
    }

    /// Exports up to one batch from the queue within the export timeout, or less before a
    /// deadline. Returns whether it was exported.
    fn export_one(&mut self, deadline: Option<Instant>) -> bool {
        self.clock.advance();
        let clock = self.clock;
        let mut batch = Vec::with_capacity(self.shared.batch_size.min(self.shared.queue.len()));
        while batch.len() < self.shared.batch_size {
            match self.shared.queue.pop() {
                Some(Item::Sdk(mut span)) => {
                    crate::stage::enrich(&mut span);
                    batch.push(*span);
                }
                Some(Item::Compact(record)) => batch.push(record.into_span_data(&self.scope, &clock)),
                None => break,
            }
        }
        if batch.is_empty() {
            return true;
        }
        if self.shared.full.load(Ordering::Relaxed) {
            self.shared.full.store(false, Ordering::Relaxed);
        }
        let n = batch.len() as u64;
        if self.spooling.is_some() {
            return self.deliver_spooled(batch, n, deadline);
        }
        let mut timeout = self.batch.export_timeout;
        if let Some(d) = deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        let c = &self.shared.stats.inner;
        c.export_batches.fetch_add(1, Ordering::AcqRel);
        let (exporter, cancel) = (&self.exporter, &self.cancel);
        let result = self.rt.block_on(async {
            tokio::select! {
                r = tokio::time::timeout(timeout, exporter.export(batch)) => Some(r),
                () = cancel.at_deadline() => None,
            }
        });
        match result {
            Some(Ok(Ok(()))) => {
                c.exported.fetch_add(n, Ordering::AcqRel);
                true
            }
            Some(Ok(Err(e))) => {
                self.failed(n, &e.to_string());
                false
            }
            Some(Err(_)) => {
                self.failed(n, &format!("timed out after {timeout:?}"));
                false
            }
            None => {
                c.export_failures.fetch_add(1, Ordering::AcqRel);
                c.dropped_shutdown.fetch_add(n, Ordering::AcqRel);
                false
            }
        }
    }

    fn failed(&mut self, n: u64, why: &str) {
        let c = &self.shared.stats.inner;
        c.export_failures.fetch_add(1, Ordering::AcqRel);
        c.dropped_export_failed.fetch_add(n, Ordering::AcqRel);
        self.warn_failed(n, why);
    }

    /// One warning the first time spans are dropped for a failed export.
    fn warn_failed(&mut self, n: u64, why: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                target: "tracewire_telemetry",
                "span export failed ({why}); {n} spans dropped. Further drops are counted \
                 (ExportStats) without another warning."
            );
        }
    }
}
