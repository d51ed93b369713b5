//! # tracewire-telemetry
//!
//! What a service calls at start-up to export tracewire's stage spans over OTLP, and what
//! every other tracewire crate uses to emit them.
//!
//! - [`init`] with [`Config::from_env`]: a `tracing` subscriber with a `RUST_LOG`-filtered
//!   log layer and tracewire's span layer (compact records on the emitting thread, turned
//!   into OpenTelemetry spans on the export worker), an OTLP exporter configured from the
//!   `OTEL_*` variables, and tracewire-context's propagator installed globally.
//! - [`Stage`] and [`stage_span!`]: the stage taxonomy (`docs/stages.md`).
//! - [`Queued`]: queue-residence spans, from enqueue to dequeue, across threads.
//! - [`set_parent_from`], [`inject_current`], [`in_remote_span`]: context helpers.
//! - Feature `tower`: `tower::ServerLayer` and `tower::ClientLayer`, middleware that
//!   continues and propagates traces for tonic, axum and hyper-util services.
//! - Export never blocks: a bounded queue, drops counted exactly ([`ExportSnapshot`]).
//! - An optional disk spool ([`SpoolConfig`], `TRACEWIRE_SPOOL_DIR`) keeps what the
//!   collector does not take and replays it, also in a later process.
//! - Shutdown is bounded ([`TelemetryGuard::shutdown`], default 2 s), also with the
//!   collector down and on a current-thread runtime.
//!
//! ```no_run
//! use tracewire_telemetry::{init, stage_span, Config};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let telemetry = init(Config::from_env()?)?;
//!     {
//!         let _span = stage_span!(ProcessSpawn, process.executable.name = "ls").entered();
//!         // ... work ...
//!     }
//!     let stats = telemetry.shutdown()?;
//!     eprintln!("exported {} spans, dropped {}", stats.exported, stats.dropped());
//!     Ok(())
//! }
//! ```
//!
//! With the default feature `instrument` off, [`stage_span!`] expands to a disabled span and
//! [`Queued`] records nothing: instrumentation compiles out.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
// `Error::Shutdown` carries the export counters by value, so that a caller can still read
// them from the error; it is returned at most once per pipeline, so its size costs nothing.
#![allow(clippy::result_large_err)]

mod clock;
mod config;
mod context;
mod export;
mod layer;
mod queue;
mod record;
mod sampling;
mod spool;
mod stage;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use config::{BatchConfig, Config, ConfigError, Propagators, Protocol, Sampler, SpoolConfig, VARIABLES};
pub use context::{
    current_context, current_trace_id, in_remote_span, inject_current, inject_span, propagation_stats, remote_context,
    set_parent_from, span_context,
};
pub use export::{
    BoundedProcessor, ExportSnapshot, ExportStats, ExporterError, ExporterFactory, Overload, PipelineError,
};
pub use queue::{Queued, emit_stage_span};
pub use stage::{STAGE_ATTRIBUTE, Stage, enrich};

/// The instrumentation scope name of tracewire's spans.
pub const TRACER_NAME: &str = "tracewire";

/// The export filter used when `TRACEWIRE_EXPORT_FILTER` is not set: `info` and above,
/// without the internals of the HTTP/gRPC stack.
pub const DEFAULT_EXPORT_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off";

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "tower")]
pub mod tower;

#[doc(hidden)]
pub mod __private {
    pub use tracing;
}

/// Why telemetry could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The export pipeline could not start.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A global `tracing` subscriber was already installed.
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInitialized(String),
    /// Shutdown did not finish within its deadline; undelivered spans were counted.
    #[error("telemetry shutdown did not finish within {timeout:?}: {reason}")]
    Shutdown {
        /// The deadline.
        timeout: Duration,
        /// What happened.
        reason: String,
        /// The counters at that point.
        stats: ExportSnapshot,
    },
}

impl Error {
    /// For a shutdown that ran out of time, the counters (what was not delivered is
    /// counted in them); any other error is given back. Lets a caller that only wants the
    /// final counts write `guard.shutdown().or_else(Error::into_stats)?`.
    ///
    /// # Errors
    /// `self`, when it is not [`Error::Shutdown`].
    pub fn into_stats(self) -> Result<ExportSnapshot, Self> {
        match self {
            Self::Shutdown { stats, .. } => Ok(stats),
            other => Err(other),
        }
    }
}

/// An export pipeline (tracer provider, bounded processor, exporter) not yet installed
/// globally. [`init`] builds one from the configuration; tests and embedders can build
/// their own, with any exporter, and use it with [`Pipeline::layer`].
#[derive(Debug)]
pub struct Pipeline {
    provider: SdkTracerProvider,
    stats: ExportStats,
    overload: Overload,
    queue: export::ExportQueue,
    sampler: Sampler,
    shutdown_timeout: Duration,
    context_activation: bool,
}

fn resource(config: &Config) -> Resource {
    let attrs = config
        .resource_attributes
        .iter()
        .filter(|(k, _)| k != "service.name")
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()));
    Resource::builder_empty()
        .with_attributes([
            KeyValue::new("telemetry.sdk.name", "tracewire"),
            KeyValue::new("telemetry.sdk.language", "rust"),
            KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ])
        .with_attributes(attrs)
        .with_service_name(config.service_name.clone())
        .build()
}

fn sampler(s: Sampler) -> opentelemetry_sdk::trace::Sampler {
    use opentelemetry_sdk::trace::Sampler as S;
    match s {
        Sampler::AlwaysOn => S::AlwaysOn,
        Sampler::AlwaysOff => S::AlwaysOff,
        Sampler::TraceIdRatio(r) => S::TraceIdRatioBased(r),
        Sampler::ParentBasedAlwaysOff => S::ParentBased(Box::new(S::AlwaysOff)),
        Sampler::ParentBasedTraceIdRatio(r) => S::ParentBased(Box::new(S::TraceIdRatioBased(r))),
        // `ParentBasedAlwaysOn` and any later default.
        _ => S::ParentBased(Box::new(S::AlwaysOn)),
    }
}

fn log_dispatch(filter: &str) -> tracing::Dispatch {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter)),
    )
}

/// The OTLP exporter the configuration describes. Call it inside a tokio runtime.
fn otlp_exporter(config: &Config) -> Result<opentelemetry_otlp::SpanExporter, ExporterError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let built = match config.protocol {
        Protocol::Grpc => {
            let mut md = opentelemetry_otlp::tonic_types::metadata::MetadataMap::new();
            for (k, v) in &config.headers {
                tracewire_context::CarrierMut::set(&mut md, k, v)
                    .map_err(|e| ExporterError::Header { name: k.clone(), source: e.into() })?;
            }
            builder
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout)
                .with_metadata(md)
                .build()
        }
        Protocol::HttpProtobuf | Protocol::HttpJson => {
            let protocol = if config.protocol == Protocol::HttpJson {
                opentelemetry_otlp::Protocol::HttpJson
            } else {
                opentelemetry_otlp::Protocol::HttpBinary
            };
            builder
                .with_http()
                .with_endpoint(config.endpoint.clone())
                .with_protocol(protocol)
                .with_timeout(config.timeout)
                .with_headers(config.headers.iter().cloned().collect())
                .build()
        }
    };
    Ok(built?)
}

impl Pipeline {
    /// The OTLP pipeline the configuration describes. With [`Config::spool`] set, spans
    /// the collector does not take go to the disk spool (see [`SpoolConfig`]).
    ///
    /// # Errors
    /// When the exporter or its worker cannot start.
    pub fn new(config: &Config) -> Result<Self, Error> {
        if config.spool.is_some() {
            let log = log_dispatch(config.log_filter.as_deref().unwrap_or("warn"));
            return Ok(Self::with_processor(config, BoundedProcessor::start_spooled(config, log)?));
        }
        let cfg = config.clone();
        Self::with_exporter(config, Box::new(move || otlp_exporter(&cfg)))
    }

    /// A pipeline with any exporter, built on the worker thread by `factory`.
    ///
    /// ```
    /// use opentelemetry::trace::{Tracer, TracerProvider};
    /// use opentelemetry_sdk::trace::InMemorySpanExporter;
    /// use tracewire_telemetry::{Config, Pipeline};
    ///
    /// let exporter = InMemorySpanExporter::default();
    /// let sink = exporter.clone();
    /// let pipeline = Pipeline::with_exporter(&Config::default(), Box::new(move || Ok(sink)))?;
    /// pipeline.tracer().in_span("work", |_| {});
    /// pipeline.provider().force_flush().unwrap();
    /// assert_eq!(exporter.get_finished_spans().unwrap()[0].name, "work");
    /// let stats = pipeline.shutdown()?;
    /// assert_eq!((stats.emitted, stats.exported, stats.dropped()), (1, 1, 0));
    /// # Ok::<(), tracewire_telemetry::Error>(())
    /// ```
    ///
    /// # Errors
    /// When the exporter or its worker cannot start.
    pub fn with_exporter<E: SpanExporter + 'static>(
        config: &Config,
        factory: ExporterFactory<E>,
    ) -> Result<Self, Error> {
        let log = log_dispatch(config.log_filter.as_deref().unwrap_or("warn"));
        let processor = BoundedProcessor::start(factory, config.batch, log)?;
        Ok(Self::with_processor(config, processor))
    }

    fn with_processor(config: &Config, processor: BoundedProcessor) -> Self {
        let stats = processor.stats();
        let overload = processor.overload();
        let queue = processor.queue();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler(config.sampler))
            .with_resource(resource(config))
            .build();
        Self {
            provider,
            stats,
            overload,
            queue,
            sampler: config.sampler,
            shutdown_timeout: config.shutdown_timeout,
            context_activation: config.context_activation,
        }
    }

    /// The tracer provider.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// tracewire's tracer.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer(TRACER_NAME)
    }

    /// The export counters.
    pub fn stats(&self) -> ExportStats {
        self.stats.clone()
    }

    /// tracewire's `tracing` layer for this pipeline, with load shedding (while the export
    /// queue is full, new spans are counted as dropped instead of recorded). Spans are
    /// recorded compactly and become OpenTelemetry spans on the export worker (see
    /// `docs/telemetry.md`); it must sit on a `tracing_subscriber::Registry`, as here.
    ///
    /// ```
    /// use opentelemetry_sdk::trace::InMemorySpanExporter;
    /// use tracing_subscriber::layer::SubscriberExt;
    /// use tracewire_telemetry::{stage_span, Config, Pipeline};
    ///
    /// let pipeline = Pipeline::with_exporter(&Config::default(), Box::new(|| Ok(InMemorySpanExporter::default())))?;
    /// let subscriber = tracing_subscriber::registry().with(pipeline.layer());
    /// tracing::subscriber::with_default(subscriber, || {
    ///     let _span = stage_span!(ProcessSpawn).entered();
    /// });
    /// assert_eq!(pipeline.shutdown()?.exported, 1);
    /// # Ok::<(), tracewire_telemetry::Error>(())
    /// ```
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        layer::SpanLayer {
            export: Some(layer::Export { queue: self.queue.clone(), overload: self.overload.clone() }),
            sampler: self.sampler,
            activation: self.context_activation,
        }
    }

    /// Exports what is queued and stops, within the configured shutdown timeout.
    ///
    /// # Errors
    /// [`Error::Shutdown`] when the deadline passed; what was not exported is counted in
    /// [`ExportSnapshot::dropped_shutdown`].
    pub fn shutdown(&self) -> Result<ExportSnapshot, Error> {
        let timeout = self.shutdown_timeout;
        match self.provider.shutdown_with_timeout(timeout) {
            Ok(()) | Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown) => Ok(self.stats.snapshot()),
            Err(e) => Err(Error::Shutdown { timeout, reason: e.to_string(), stats: self.stats.snapshot() }),
        }
    }
}

/// The `tracing-opentelemetry` layer, for a subscriber of your own built on it rather than
/// on [`Pipeline::layer`] (tracewire's context helpers work with both; stage spans cost
/// about three times as much through this one). Set up like tracewire's: no source
/// location, thread, target or busy/idle attributes on every span (they cost allocations on
/// the emit path and the stage name already says where a span comes from).
pub fn otel_layer<S>(tracer: SdkTracer) -> tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
}

/// Keeps telemetry running; shuts it down (bounded) when dropped or on [`Self::shutdown`].
#[derive(Debug)]
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    pipeline: Option<Pipeline>,
    done: bool,
}

impl TelemetryGuard {
    /// The export counters (all zero when export is disabled).
    pub fn stats(&self) -> ExportSnapshot {
        self.pipeline.as_ref().map(|p| p.stats.snapshot()).unwrap_or_default()
    }

    /// Exports what is queued now (waits up to the export timeout).
    ///
    /// # Errors
    /// [`Error::Shutdown`] when an export failed or timed out (its spans are counted).
    pub fn flush(&self) -> Result<(), Error> {
        let Some(p) = &self.pipeline else { return Ok(()) };
        p.provider.force_flush().map_err(|e| Error::Shutdown {
            timeout: p.shutdown_timeout,
            reason: e.to_string(),
            stats: p.stats.snapshot(),
        })
    }

    /// A handle on the export counters, for metrics endpoints; `None` when export is
    /// disabled (there is no pipeline to count).
    pub fn export_stats(&self) -> Option<ExportStats> {
        self.pipeline.as_ref().map(Pipeline::stats)
    }

    /// Exports what is queued and stops, within `TRACEWIRE_SHUTDOWN_TIMEOUT_MS`.
    ///
    /// # Errors
    /// [`Error::Shutdown`] when the deadline passed (nothing hangs; drops are counted).
    pub fn shutdown(mut self) -> Result<ExportSnapshot, Error> {
        self.done = true;
        match &self.pipeline {
            Some(p) => p.shutdown(),
            None => Ok(ExportSnapshot::default()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if !self.done
            && let Some(p) = &self.pipeline
        {
            let _ = p.shutdown();
        }
    }
}

/// Installs telemetry for the process: a global `tracing` subscriber (a log layer filtered
/// by `RUST_LOG`, default `warn`, and the OpenTelemetry layer filtered by
/// `TRACEWIRE_EXPORT_FILTER`, default [`DEFAULT_EXPORT_FILTER`]), the global tracer provider
/// and tracewire-context's propagator. Configuration warnings are logged once installed.
///
/// With [`Config::disabled`] (`OTEL_SDK_DISABLED=true`) nothing is exported: no tracer
/// provider, queue, export worker or connection, and [`TelemetryGuard::stats`] stays zero.
/// Contexts still propagate, as with OpenTelemetry's API without an SDK: spans are
/// non-recording but have ids, an incoming context is continued (its trace id, flags,
/// tracestate and baggage), and [`inject_current`] writes the current span's context. A
/// trace started here gets ids and a sampled flag as with export on.
///
/// # Errors
/// [`Error::AlreadyInitialized`] when a global subscriber exists; [`Error::Pipeline`] when
/// export cannot start.
pub fn init(mut config: Config) -> Result<TelemetryGuard, Error> {
    let mut warnings = std::mem::take(&mut config.warnings);
    let log_filter = config.log_filter.as_deref().unwrap_or("warn");
    let log = EnvFilter::try_new(log_filter).unwrap_or_else(|e| {
        warnings.push(format!("RUST_LOG: {e}; using warn"));
        EnvFilter::new("warn")
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(log);

    let propagator = tracewire_context::otel::TraceContextPropagator::with_fields(
        config.propagators.trace_context,
        config.propagators.baggage,
    );

    let export_filter = config.export_filter.as_deref().unwrap_or(DEFAULT_EXPORT_FILTER);
    let export = EnvFilter::try_new(export_filter).unwrap_or_else(|e| {
        warnings.push(format!("TRACEWIRE_EXPORT_FILTER: {e}; using {DEFAULT_EXPORT_FILTER}"));
        EnvFilter::new(DEFAULT_EXPORT_FILTER)
    });
    let guard = if config.disabled {
        // As OpenTelemetry's API without an SDK: nothing is recorded or exported (no queue,
        // no worker, no connection), but spans still carry contexts, so an incoming context
        // is continued and propagated to envelopes and children.
        let contexts_only =
            layer::SpanLayer { export: None, sampler: config.sampler, activation: config.context_activation };
        tracing_subscriber::registry()
            .with(fmt)
            .with(contexts_only.with_filter(export))
            .try_init()
            .map_err(|e| Error::AlreadyInitialized(e.to_string()))?;
        TelemetryGuard { pipeline: None, done: false }
    } else {
        let pipeline = Pipeline::new(&config)?;
        let otel = pipeline.layer().with_filter(export);
        if let Err(e) = tracing_subscriber::registry().with(fmt).with(otel).try_init() {
            let _ = pipeline.shutdown();
            return Err(Error::AlreadyInitialized(e.to_string()));
        }
        opentelemetry::global::set_tracer_provider(pipeline.provider().clone());
        TelemetryGuard { pipeline: Some(pipeline), done: false }
    };
    opentelemetry::global::set_text_map_propagator(propagator);
    for w in &warnings {
        tracing::warn!(target: "tracewire_telemetry", "{w}");
    }
    Ok(guard)
}

/// `docs/stages.md`'s code blocks are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/stages.md")]
struct StagesDoc;

/// `docs/telemetry.md`'s code blocks are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/telemetry.md")]
struct TelemetryDoc;

/// The README's code blocks are compiled (and run, where not `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
