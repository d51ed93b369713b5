//! Span-tree tests (feature `testing`): a real pipeline (bounded processor, tuned layer)
//! exporting to memory, installed once per test binary as the global subscriber and tracer
//! provider, so spans from every thread and task are captured.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tracing_subscriber::layer::SubscriberExt;

use crate::{Config, Pipeline};

/// The installed in-memory pipeline.
#[derive(Debug)]
pub struct InMemoryTelemetry {
    pipeline: Pipeline,
    exporter: InMemorySpanExporter,
}

/// Installs (once) and returns the in-memory pipeline. Later calls return the same one.
///
/// # Panics
/// When another global subscriber was installed first (a test set-up error).
#[allow(clippy::expect_used, clippy::panic)]
pub fn install() -> &'static InMemoryTelemetry {
    static H: OnceLock<InMemoryTelemetry> = OnceLock::new();
    H.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let sink = exporter.clone();
        let mut config = Config::default();
        config.batch.schedule_delay = Duration::from_millis(20);
        let pipeline =
            Pipeline::with_exporter(&config, Box::new(move || Ok(sink))).expect("the in-memory pipeline starts");
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(pipeline.layer()))
            .expect("no other global subscriber");
        opentelemetry::global::set_tracer_provider(pipeline.provider().clone());
        InMemoryTelemetry { pipeline, exporter }
    })
}

impl InMemoryTelemetry {
    /// Every finished span so far (queued spans are flushed first).
    pub fn spans(&self) -> Vec<SpanData> {
        let _ = self.pipeline.provider().force_flush();
        self.exporter.get_finished_spans().unwrap_or_default()
    }

    /// The finished spans of one trace (hex trace id).
    pub fn spans_of(&self, trace_id: &str) -> Vec<SpanData> {
        self.spans().into_iter().filter(|s| s.span_context.trace_id().to_string() == trace_id).collect()
    }
}
