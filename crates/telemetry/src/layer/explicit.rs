//! Spans with explicit times, recorded by tracewire's layer outside its callbacks: queue
//! residence spans ([`ResidenceSpan`], for [`crate::Queued`]) and finished spans emitted
//! after the fact ([`emit_timed_span`], for [`crate::emit_stage_span`]).

use std::time::SystemTime;

use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context as OtelContext, KeyValue};

use super::{SpanLayer, with_current};
use crate::clock::Clock;
use crate::export::{ExportQueue, FinishedSpan};
use crate::record::CompactSpan;

/// A span to be finished later with explicit times (a queue residence span): a child of
/// the current span of tracewire's layer, recorded without the OpenTelemetry SDK.
#[derive(Debug)]
pub(crate) struct ResidenceSpan {
    record: CompactSpan,
    /// `None` when the layer does not export: the span is then never queued.
    queue: Option<ExportQueue>,
}

impl ResidenceSpan {
    /// A span named `name` starting now, as a child of the current `tracing` span, when that
    /// span is recorded by tracewire's layer; `None` otherwise.
    pub(crate) fn child_of_current(name: &'static str) -> Option<Self> {
        with_current(|dispatch, parent| {
            let layer = dispatch.downcast_ref::<SpanLayer>()?;
            let mut record = CompactSpan::new(name, parent.sampler);
            record.child_of(parent);
            Some(Self { record, queue: layer.export.as_ref().map(|e| e.queue.clone()) })
        })
    }

    /// When the span started.
    pub(crate) fn start(&self) -> SystemTime {
        Clock::now().system_time(self.record.start)
    }

    /// Ends the span now, with `attributes`, and queues it for export (if sampled).
    pub(crate) fn finish(mut self, attributes: &[KeyValue]) {
        let Some(queue) = self.queue.take().filter(|_| self.record.sampled) else { return };
        self.record.end = fastant::Instant::now();
        self.record.attributes.extend(attributes.iter().cloned());
        queue.submit(FinishedSpan::Compact(self.record));
    }
}

/// Emits a finished span with explicit wall-clock times as a child of the span in `parent`
/// (nothing when it has none, or when the layer does not export), through tracewire's layer
/// when the current dispatcher has one: `false` when it has not (then the caller uses the
/// OpenTelemetry SDK).
pub(crate) fn emit_timed_span(
    name: &'static str,
    start: SystemTime,
    end: SystemTime,
    parent: &OtelContext,
    attributes: &[KeyValue],
) -> bool {
    tracing::dispatcher::get_default(|dispatch| {
        let Some(layer) = dispatch.downcast_ref::<SpanLayer>() else { return false };
        let Some(export) = &layer.export else { return true };
        let mut record = CompactSpan::new(name, layer.sampler);
        if record.child_of_span_context(parent.span().span_context()) && record.sampled {
            record.extra().wall = Some((start, end));
            record.attributes.extend(attributes.iter().cloned());
            export.queue.submit(FinishedSpan::Compact(record));
        }
        true
    })
}
