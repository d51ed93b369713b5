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
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender, bounded, unbounded};
use crossbeam_queue::ArrayQueue;
use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};

use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;

use crate::config::{BatchConfig, Config};
use crate::spool::Sender as OtlpSender;

mod queue;
mod spooling;
mod stats;
mod worker;

pub use queue::Overload;
use queue::Shared;
pub(crate) use queue::{ExportQueue, FinishedSpan};
use spooling::{NoExporter, SpoolSetup, Spooling};
pub use stats::{ExportSnapshot, ExportStats};
use worker::{Cancel, Worker, WorkerRequest};

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The exporter could not be built (bad endpoint, ...).
    #[error("cannot build the span exporter: {0}")]
    Exporter(#[source] ExporterError),
    /// The worker thread or its runtime could not start.
    #[error("cannot start the export worker: {0}")]
    Worker(String),
}

/// Why an [`ExporterFactory`] (or the disk spool's OTLP client) could not build its
/// exporter.
///
/// ```
/// use opentelemetry_sdk::trace::InMemorySpanExporter;
/// use tracewire_telemetry::{Config, Error, ExporterError, Pipeline, PipelineError};
///
/// let refused = Pipeline::with_exporter::<InMemorySpanExporter>(
///     &Config::default(),
///     Box::new(|| Err(ExporterError::Other("no credentials".into()))),
/// );
/// assert!(matches!(refused, Err(Error::Pipeline(PipelineError::Exporter(ExporterError::Other(_))))));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExporterError {
    /// The OTLP exporter refused its configuration (endpoint, protocol, TLS, ...).
    #[error(transparent)]
    Otlp(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The endpoint is not a usable URI.
    #[error("endpoint {endpoint}: {source}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// Why it is not usable.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A configured header (`OTEL_EXPORTER_OTLP_HEADERS`) cannot be sent: its name or value
    /// is not valid for the protocol.
    #[error("header {name}: {source}")]
    Header {
        /// The header's name.
        name: String,
        /// Why it cannot be sent.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Any other failure, such as an exporter of your own that cannot start.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// The bounded, non-blocking span processor. See the module documentation.
///
/// Ending a span costs one lock-free push; the worker is woken (unparked) only when a full
/// batch is waiting, so the application's threads never make a system call per span.
pub struct BoundedProcessor {
    queue: ExportQueue,
    control: Sender<WorkerRequest>,
    cancel: Arc<Cancel>,
    export_timeout: Duration,
    shut_down: AtomicBool,
    worker: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for BoundedProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedProcessor").field("stats", &self.queue.shared.stats.snapshot()).finish_non_exhaustive()
    }
}

/// Builds an exporter inside the worker's tokio runtime (gRPC channels need one).
pub type ExporterFactory<E> = Box<dyn FnOnce() -> Result<E, ExporterError> + Send>;

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
                            clock: crate::clock::Clock::now(),
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
                queue: ExportQueue { shared, worker: handle.thread().clone() },
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
        self.queue.shared.stats.clone()
    }

    /// The load-shedding handle of this pipeline.
    pub fn overload(&self) -> Overload {
        Overload { shared: Arc::clone(&self.queue.shared) }
    }

    /// Where tracewire's `tracing` layer hands its finished spans.
    pub(crate) fn queue(&self) -> ExportQueue {
        self.queue.clone()
    }

    fn send(&self, msg: WorkerRequest) -> Result<(), OTelSdkError> {
        self.control.send(msg).map_err(|_| OTelSdkError::AlreadyShutdown)?;
        self.queue.worker.unpark();
        Ok(())
    }

    fn request(&self, make: impl FnOnce(Sender<OTelSdkResult>) -> WorkerRequest, wait: Duration) -> OTelSdkResult {
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
        self.queue.submit(FinishedSpan::Sdk(Box::new(span)));
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.request(WorkerRequest::Flush, self.export_timeout + Duration::from_millis(100))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let deadline = Instant::now() + timeout;
        // An export in flight is cut short at the deadline; the worker then counts what is
        // left and answers. A little slack covers that hand-back.
        self.cancel.request(deadline);
        let result = self.request(|tx| WorkerRequest::Shutdown(deadline, tx), timeout + Duration::from_millis(250));
        if result.is_ok()
            && let Ok(mut guard) = self.worker.lock()
            && let Some(h) = guard.take()
        {
            let _ = h.join();
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.send(WorkerRequest::SetResource(resource.clone()));
    }
}
