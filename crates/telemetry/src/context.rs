//! Context helpers: connect `tracing` spans to tracewire-context carriers.

use std::future::Future;

use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::TraceContextExt;
use tracewire_context::otel::{from_otel_baggage, from_span_context, to_otel_baggage, to_otel_tracestate};
use tracewire_context::{
    Carrier, CarrierError, CarrierMut, Extracted, PropagationStats, StatsSnapshot, TraceContext, TraceId, extract,
};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static PROPAGATION: PropagationStats = PropagationStats::new();

/// Counts of incoming contexts continued or replaced by a new trace (with why), across
/// every call to [`set_parent_from`].
pub fn propagation_stats() -> StatsSnapshot {
    PROPAGATION.snapshot()
}

/// The OpenTelemetry context of the context in `carrier` (remote parent and baggage; an
/// empty context when there is no valid traceparent), with the extraction's outcome. Use it
/// as the parent of spans made with the OpenTelemetry API, such as [`crate::Queued`]'s.
/// Unlike [`set_parent_from`] it counts nothing.
pub fn remote_context<C: Carrier + ?Sized>(carrier: &C) -> (Context, Extracted) {
    let ex = extract(carrier);
    (otel_context_of(&ex), ex)
}

/// The OpenTelemetry context a valid incoming context becomes (remote parent + baggage).
fn otel_context_of(ex: &Extracted) -> Context {
    let mut cx = Context::new();
    if let Some(parent) = ex.remote_parent {
        let sc = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(ex.context.trace_id.to_bytes()),
            opentelemetry::trace::SpanId::from_bytes(parent.to_bytes()),
            opentelemetry::trace::TraceFlags::new(ex.context.flags.outgoing().bits()),
            true,
            to_otel_tracestate(&ex.context.tracestate),
        );
        cx = cx.with_remote_span_context(sc);
    }
    if !ex.baggage.is_empty() {
        cx = cx.with_baggage(to_otel_baggage(&ex.baggage));
    }
    cx
}

/// Makes the context in `carrier` the parent of `span`, by tracewire's propagation policy:
/// a valid context is continued; a missing or invalid one leaves `span` a new root, records
/// why on it (`tracewire.propagation.started`) and in [`propagation_stats`]. Never fails.
///
/// ```
/// use tracewire_telemetry::{set_parent_from, stage_span};
///
/// let headers = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")];
/// let span = stage_span!(RpcDispatch, rpc.method = "Start");
/// let ex = set_parent_from(&span, &headers);
/// assert!(ex.continued());
/// ```
pub fn set_parent_from<C: Carrier + ?Sized>(span: &tracing::Span, carrier: &C) -> Extracted {
    let ex = extract(carrier);
    PROPAGATION.record(&ex);
    let ours = crate::layer::with_record(span, |rec| {
        let cx = (ex.remote_parent.is_some() || !ex.baggage.is_empty()).then(|| otel_context_of(&ex));
        match (ex.started, cx) {
            (None, Some(cx)) => {
                rec.continue_context(&cx);
            }
            (Some(reason), cx) => {
                if let Some(cx) = cx {
                    rec.inherit(cx);
                }
                rec.set_attribute(opentelemetry::KeyValue::new("tracewire.propagation.started", reason.as_str()));
            }
            (None, None) => {}
        }
    });
    if ours.is_none() {
        // A span of another layer (tracing-opentelemetry's, see [`crate::otel_layer`]).
        match ex.started {
            None => {
                // Fails only for a span that is disabled or already entered; nothing to do then.
                let _ = span.set_parent(otel_context_of(&ex));
            }
            Some(reason) => {
                if !ex.baggage.is_empty() {
                    let _ = span.set_parent(otel_context_of(&ex));
                }
                span.set_attribute("tracewire.propagation.started", reason.as_str());
            }
        }
    }
    ex
}

/// The OpenTelemetry context of `span`: from tracewire's layer, else from
/// tracing-opentelemetry's (for a subscriber built with [`crate::otel_layer`]).
fn otel_context(span: &tracing::Span) -> Context {
    crate::layer::with_record(span, |rec| rec.context()).unwrap_or_else(|| span.context())
}

/// The tracewire context of `span`, when it is recording in a valid trace.
pub fn span_context(span: &tracing::Span) -> Option<TraceContext> {
    match crate::layer::with_record(span, |rec| rec.span_context()) {
        Some(sc) => from_span_context(&sc),
        None => from_span_context(span.context().span().span_context()),
    }
}

/// Writes `span`'s context (and the baggage of its context) into `carrier`.
/// Returns `Ok(false)`, writing nothing, when the span has no valid context.
///
/// # Errors
/// When the carrier refuses a value.
pub fn inject_span<C: CarrierMut + ?Sized>(span: &tracing::Span, carrier: &mut C) -> Result<bool, CarrierError> {
    inject_context(&otel_context(span), carrier)
}

fn inject_context<C: CarrierMut + ?Sized>(cx: &Context, carrier: &mut C) -> Result<bool, CarrierError> {
    let Some(ctx) = from_span_context(cx.span().span_context()) else { return Ok(false) };
    let baggage = from_otel_baggage(cx.baggage());
    ctx.inject(Some(&baggage), carrier)?;
    Ok(true)
}

/// Writes the current `tracing` span's context into `carrier`; see [`inject_span`].
///
/// # Errors
/// When the carrier refuses a value.
pub fn inject_current<C: CarrierMut + ?Sized>(carrier: &mut C) -> Result<bool, CarrierError> {
    inject_context(&current_context(), carrier)
}

/// The OpenTelemetry context of the current `tracing` span (to link to it, or to parent
/// spans made with the OpenTelemetry API). Works with or without context activation.
pub fn current_context() -> Context {
    crate::layer::with_current_record(|rec| rec.context()).unwrap_or_else(|| tracing::Span::current().context())
}

/// The trace id of the current `tracing` span, if it is in a valid trace.
pub fn current_trace_id() -> Option<TraceId> {
    span_context(&tracing::Span::current()).map(|c| c.trace_id)
}

/// Runs `fut` inside `span`, whose parent is taken from `carrier` first
/// (see [`set_parent_from`]): the server side of a call, in one line.
///
/// ```
/// use tracewire_telemetry::{in_remote_span, stage_span};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let headers = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")];
/// let out = in_remote_span(&headers, stage_span!(RpcDispatch), async { 40 + 2 }).await;
/// assert_eq!(out, 42);
/// # });
/// ```
pub fn in_remote_span<C, F>(carrier: &C, span: tracing::Span, fut: F) -> tracing::instrument::Instrumented<F>
where
    C: Carrier + ?Sized,
    F: Future,
{
    set_parent_from(&span, carrier);
    fut.instrument(span)
}
