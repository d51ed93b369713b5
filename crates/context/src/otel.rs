//! OpenTelemetry interop (feature `otel`): a `TextMapPropagator` that applies tracewire's
//! rules to trace context and baggage, and conversions to and from `SpanContext`.
//!
//! ```
//! use std::collections::HashMap;
//! use opentelemetry::propagation::TextMapPropagator;
//! use opentelemetry::trace::TraceContextExt;
//! use tracewire_context::otel::TraceContextPropagator;
//!
//! let propagator = TraceContextPropagator::new();
//! let mut headers = HashMap::new();
//! headers.insert("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
//! let cx = propagator.extract(&headers);
//! let sc = cx.span().span_context().clone();
//! assert!(sc.is_remote() && sc.is_sampled());
//! assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
//!
//! let mut out = HashMap::new();
//! propagator.inject_context(&cx, &mut out);
//! assert_eq!(out["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! ```

use std::sync::OnceLock;

use opentelemetry::Context;
use opentelemetry::baggage::{Baggage as OtelBaggage, BaggageExt};
use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{self as ot, TraceContextExt};

use crate::baggage::Baggage;
use crate::carrier::{BAGGAGE, Carrier, CarrierError, CarrierMut, TRACEPARENT, TRACESTATE};
use crate::id::{SpanId, TraceFlags, TraceId};
use crate::propagation::{TraceContext, read_remote};
use crate::tracestate::TraceState;

/// A [`TextMapPropagator`] for `traceparent`, `tracestate` and `baggage` that follows
/// tracewire's parsing rules (W3C Trace Context Level 2, W3C Baggage). Install it with
/// `opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new())` in place
/// of opentelemetry_sdk's `TraceContextPropagator` and `BaggagePropagator`.
#[derive(Debug, Clone)]
pub struct TraceContextPropagator {
    trace_context: bool,
    baggage: bool,
}

impl Default for TraceContextPropagator {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceContextPropagator {
    /// The propagator, for trace context and baggage.
    pub fn new() -> Self {
        Self { trace_context: true, baggage: true }
    }

    /// A propagator for some of the fields only (as `OTEL_PROPAGATORS=tracecontext` or
    /// `=baggage` selects): `traceparent`/`tracestate`, `baggage`, both or neither.
    pub fn with_fields(trace_context: bool, baggage: bool) -> Self {
        Self { trace_context, baggage }
    }
}

fn fields(trace_context: bool, baggage: bool) -> &'static [String] {
    static FIELDS: OnceLock<[String; 3]> = OnceLock::new();
    let all = FIELDS.get_or_init(|| [TRACEPARENT.to_owned(), TRACESTATE.to_owned(), BAGGAGE.to_owned()]);
    match (trace_context, baggage) {
        (true, true) => &all[..],
        (true, false) => &all[..2],
        (false, true) => &all[2..],
        (false, false) => &[],
    }
}

/// An opentelemetry [`Extractor`] seen as a tracewire [`Carrier`].
#[derive(Clone, Copy)]
pub struct ExtractorCarrier<'a>(pub &'a dyn Extractor);

impl std::fmt::Debug for ExtractorCarrier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Carrier for ExtractorCarrier<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.get_all(name).unwrap_or_default().into_iter()
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().into_iter()
    }
}

/// An opentelemetry [`Injector`] seen as a tracewire [`CarrierMut`].
pub struct InjectorCarrier<'a>(pub &'a mut dyn Injector);

impl std::fmt::Debug for InjectorCarrier<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InjectorCarrier")
    }
}

impl CarrierMut for InjectorCarrier<'_> {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        self.0.set(name, value.to_owned());
        Ok(())
    }
}

/// Converts our tracestate into opentelemetry's (members that opentelemetry refuses make
/// it empty, as a discarded tracestate would be).
pub fn to_otel_tracestate(ts: &TraceState) -> ot::TraceState {
    if ts.is_empty() {
        return ot::TraceState::NONE;
    }
    ot::TraceState::from_key_value(ts.iter()).unwrap_or_default()
}

/// Converts opentelemetry's tracestate into ours (invalid by our rules: empty).
pub fn from_otel_tracestate(ts: &ot::TraceState) -> TraceState {
    TraceState::parse(&ts.header()).unwrap_or_default()
}

/// The opentelemetry `SpanContext` of `ctx`.
pub fn to_span_context(ctx: &TraceContext, is_remote: bool) -> ot::SpanContext {
    ot::SpanContext::new(
        ot::TraceId::from_bytes(ctx.trace_id.to_bytes()),
        ot::SpanId::from_bytes(ctx.span_id.to_bytes()),
        ot::TraceFlags::new(ctx.flags.outgoing().bits()),
        is_remote,
        to_otel_tracestate(&ctx.tracestate),
    )
}

/// Our context of an opentelemetry `SpanContext`; `None` when it is invalid.
pub fn from_span_context(sc: &ot::SpanContext) -> Option<TraceContext> {
    if !sc.is_valid() {
        return None;
    }
    Some(TraceContext {
        trace_id: TraceId::from_bytes(sc.trace_id().to_bytes()),
        span_id: SpanId::from_bytes(sc.span_id().to_bytes()),
        flags: TraceFlags::from_bits(sc.trace_flags().to_u8()),
        tracestate: from_otel_tracestate(sc.trace_state()),
    })
}

impl From<&TraceContext> for ot::SpanContext {
    fn from(ctx: &TraceContext) -> Self {
        to_span_context(ctx, false)
    }
}

/// Converts our baggage into opentelemetry's.
pub fn to_otel_baggage(b: &Baggage) -> OtelBaggage {
    let mut out = OtelBaggage::new();
    for e in b {
        out.insert_with_metadata(e.key().to_owned(), e.value().to_owned(), e.properties().to_owned());
    }
    out
}

/// Converts opentelemetry's baggage into ours (entries our rules refuse are left out).
pub fn from_otel_baggage(b: &OtelBaggage) -> Baggage {
    let mut out = Baggage::new();
    for (k, (v, meta)) in b {
        // Entries that break the key grammar or the limits are not propagated.
        let _ = out.insert_with_properties(k.as_str(), v.as_str(), meta.as_str());
    }
    out
}

impl TextMapPropagator for TraceContextPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let mut carrier = InjectorCarrier(injector);
        let span = cx.span();
        let sc = span.span_context();
        let baggage = if self.baggage { from_otel_baggage(cx.baggage()) } else { Baggage::new() };
        let result = match from_span_context(sc).filter(|_| self.trace_context) {
            Some(ctx) => ctx.inject(Some(&baggage), &mut carrier),
            None if !baggage.is_empty() => carrier.set(BAGGAGE, &baggage.header()),
            None => Ok(()),
        };
        // An injector cannot refuse values: `InjectorCarrier::set` is infallible.
        debug_assert!(result.is_ok());
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let carrier = ExtractorCarrier(extractor);
        let remote = if self.trace_context { read_remote(&carrier).ok() } else { None };
        let mut out = match remote {
            Some(remote) => cx.with_remote_span_context(ot::SpanContext::new(
                ot::TraceId::from_bytes(remote.parent.trace_id.to_bytes()),
                ot::SpanId::from_bytes(remote.parent.parent_id.to_bytes()),
                ot::TraceFlags::new(remote.parent.flags.outgoing().bits()),
                true,
                to_otel_tracestate(&remote.tracestate),
            )),
            None => cx.clone(),
        };
        if !self.baggage {
            return out;
        }
        let baggage = Baggage::from_header_values(carrier.get_all(BAGGAGE)).baggage;
        if !baggage.is_empty() {
            out = out.with_baggage(to_otel_baggage(&baggage));
        }
        out
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(fields(self.trace_context, self.baggage))
    }
}
