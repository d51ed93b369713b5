//! tracewire's own `tracing` layer: spans recorded compactly on the application's threads,
//! turned into OpenTelemetry `SpanData` on the export worker.
//!
//! Per span, the emitting thread only draws two random ids (or inherits the trace id),
//! takes two timestamps, records the span's fields as `KeyValue`s ([`fields`]) and, at
//! close, moves the record ([`CompactSpan`]) into the bounded export queue
//! ([`ExportQueue`]). Everything else a `tracing-opentelemetry` layer does on the emitting
//! thread (a `SpanBuilder`, the SDK's sampler and span processor chain, an OpenTelemetry
//! `Context` per span, the stage's `tracewire.stage` attribute and kind) happens on the
//! worker ([`CompactSpan::into_span_data`]), or not at all.
//!
//! Invariants (tests in `crates/telemetry/tests/layer.rs` unless named):
//! - A span's record lives in the registry's extensions from `on_new_span` to `on_close`;
//!   the context helpers ([`with_record`]) find it through the `Registry` the layer sits on
//!   (`a_remote_parent_and_its_baggage_pass_to_children_and_out_again`).
//! - Parents: an explicit parent, else the current span, else OpenTelemetry's current
//!   context (a span made with its API, or a context attached by hand), else a new trace
//!   (`a_span_tree_keeps_its_parents_fields_and_times`,
//!   `spans_made_with_the_opentelemetry_api_and_tracing_spans_nest_both_ways`).
//!   [`crate::set_parent_from`] may replace the parent before the span is entered.
//! - Sampling follows [`Sampler`]; unsampled spans carry valid ids (so their context still
//!   propagates, with the sampled flag off) and are never queued
//!   (`samplers_decide_what_is_exported_and_unsampled_spans_still_propagate`).
//! - Without an export ([`SpanLayer::export`] `None`, what [`crate::init`] installs when
//!   `OTEL_SDK_DISABLED=true`) spans are recorded and sampled the same way, so contexts,
//!   ids and flags propagate, but nothing is ever queued (nor are fields, events or links
//!   kept): the spans are non-recording in OpenTelemetry's terms, and there is no queue or
//!   export worker (`crates/telemetry/tests/sdk_disabled.rs`).
//! - A span started while the export queue is full gets no record (counted as emitted and
//!   dropped); whatever looks for a parent (child spans, events, queue spans, the context
//!   helpers) takes the nearest ancestor that has one
//!   (`while_the_queue_is_full_spans_are_shed_counted_and_skipped_by_their_children`,
//!   `inside_a_span_the_export_filter_leaves_out_the_nearest_recorded_span_is_the_parent`).
//! - Every record queued is counted once by [`ExportQueue::submit`], so the pipeline's
//!   `emitted == exported + dropped + pending` holds for layer and SDK spans alike
//!   (`the_provider_and_the_layer_share_one_queue_and_one_count`).

#[cfg(feature = "instrument")]
mod explicit;
mod fields;

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::SystemTime;

use opentelemetry::trace::{Event as OtelEvent, Status};
use opentelemetry::{Context as OtelContext, KeyValue};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

#[cfg(feature = "instrument")]
pub(crate) use explicit::{ResidenceSpan, emit_timed_span};
use fields::{EventFields, FieldTarget, OtelValues, RecordedValues, SpanFields};

use crate::config::Sampler;
use crate::export::{ExportQueue, FinishedSpan};
use crate::record::CompactSpan;

/// tracewire's `tracing` layer; see the module documentation. Made by
/// [`crate::Pipeline::layer`] and [`crate::init`].
#[derive(Debug, Clone)]
pub(crate) struct SpanLayer {
    /// Where sampled spans go when they end; `None`: nowhere (export disabled, contexts
    /// only).
    pub(crate) export: Option<Export>,
    pub(crate) sampler: Sampler,
    pub(crate) activation: bool,
}

/// The export side of a [`SpanLayer`].
#[derive(Debug, Clone)]
pub(crate) struct Export {
    pub(crate) queue: ExportQueue,
    /// Load shedding: while the export queue is full, a new span gets no record (it is
    /// counted as emitted and dropped right away); its children and events attach to the
    /// nearest recorded ancestor. Checked in `on_new_span` rather than in a layer's
    /// `enabled`, which would make every span callsite's interest "sometimes" and cost
    /// every span an extra call chain; the span stays visible to other layers (a log layer).
    pub(crate) overload: crate::export::Overload,
}

thread_local! {
    /// The OpenTelemetry contexts attached by entering spans (context activation), by span.
    static ACTIVE: RefCell<Vec<(Id, opentelemetry::ContextGuard)>> = const { RefCell::new(Vec::new()) };
}

impl SpanLayer {
    /// The span of this layer an event or span belongs to.
    fn parent_of<'a, S>(explicit: Option<&Id>, contextual: bool, ctx: &'a Context<'_, S>) -> Option<SpanRef<'a, S>>
    where
        S: Subscriber + for<'s> LookupSpan<'s>,
    {
        match explicit {
            Some(id) => ctx.span(id),
            None if contextual => ctx.lookup_current(),
            None => None,
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(export) = &self.export
            && export.overload.shed()
        {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let meta = attrs.metadata();
        let mut rec = CompactSpan::new(meta.name(), self.sampler);
        let mut continued = false;
        // The parent the registry has just resolved (explicit, or the current span), read
        // from the new span's data rather than looked up again.
        if let Some(parent) = span.parent() {
            // The nearest recorded ancestor, each looked up once (`scope` would look the
            // parent up a second time: it starts from the span it is called on).
            let mut next = Some(parent);
            while let Some(ancestor) = next {
                if let Some(p) = ancestor.extensions().get::<CompactSpan>() {
                    rec.child_of(p);
                    continued = true;
                    break;
                }
                next = ancestor.parent();
            }
        }
        if !continued && attrs.is_contextual() {
            // A root in tracing's terms may still be inside a span made with OpenTelemetry's API.
            continued = OtelContext::map_current(|cx| rec.continue_context(cx));
        }
        if !continued {
            rec.new_trace();
        }
        // SpanFields, events and links only matter to the exported span.
        if self.export.is_some() {
            attrs.record(&mut OtelValues(&mut SpanFields(&mut rec)));
        }
        span.extensions_mut().insert(rec);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if self.export.is_none() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // Visited before the span's extensions are locked: a value's `Debug` may itself
        // emit an event inside this span (tokio-rs/tracing#763).
        let mut collected = RecordedValues::default();
        values.record(&mut OtelValues(&mut collected));
        if let Some(rec) = span.extensions_mut().get_mut::<CompactSpan>() {
            let mut fields = SpanFields(rec);
            for (field, value) in collected.0 {
                fields.put(&field, value);
            }
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        if self.export.is_none() {
            return;
        }
        let Some(other) = ctx.span(follows) else { return };
        let Some(sc) = other.extensions().get::<CompactSpan>().map(CompactSpan::span_context) else { return };
        if let Some(span) = ctx.span(id)
            && let Some(rec) = span.extensions_mut().get_mut::<CompactSpan>()
        {
            rec.extra().links.push(sc);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.export.is_none() {
            return;
        }
        let Some(span) = Self::parent_of(event.parent(), event.is_contextual(), &ctx).and_then(nearest_recorded) else {
            return;
        };
        if !span.extensions().get::<CompactSpan>().is_some_and(|r| r.sampled) {
            return;
        }
        // Visited before the span's extensions are locked for writing: a value's `Debug`
        // may itself emit an event inside this span (tokio-rs/tracing#763).
        let meta = event.metadata();
        let mut visitor = EventFields {
            name: None,
            attributes: vec![KeyValue::new("level", meta.level().as_str()), KeyValue::new("target", meta.target())],
        };
        event.record(&mut OtelValues(&mut visitor));
        let name = visitor.name.map_or(Cow::Borrowed(meta.name()), Cow::Owned);
        let mut ext = span.extensions_mut();
        let Some(rec) = ext.get_mut::<CompactSpan>() else { return };
        let extra = rec.extra();
        if *meta.level() == tracing::Level::ERROR && extra.status == Status::Unset {
            extra.status = Status::error(name.clone());
        }
        extra.events.push(OtelEvent::new(name, SystemTime::now(), visitor.attributes, 0));
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if !self.activation {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let cx = {
            let mut ext = span.extensions_mut();
            let Some(rec) = ext.get_mut::<CompactSpan>() else { return };
            // The context made on the first entry, or that one again.
            let cx = rec.context();
            rec.extra().activated = Some(cx.clone());
            cx
        };
        let guard = cx.attach();
        ACTIVE.with(|a| a.borrow_mut().push((id.clone(), guard)));
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        if !self.activation {
            return;
        }
        // Dropped outside the borrow: a guard's drop may run OpenTelemetry code.
        let guard = ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            let i = a.iter().rposition(|(g, _)| g == id)?;
            Some(a.remove(i))
        });
        drop(guard);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut rec) = span.extensions_mut().remove::<CompactSpan>() else { return };
        if rec.sampled
            && let Some(export) = &self.export
        {
            rec.end = fastant::Instant::now();
            if let Some(extra) = &mut rec.extra {
                extra.activated = None;
            }
            export.queue.submit(FinishedSpan::Compact(rec));
        }
    }
}

/// Runs `f` on the record of `span`, when `span` is recorded by tracewire's layer on a
/// `tracing_subscriber::Registry` (as [`crate::init`] and [`crate::Pipeline::layer`] set
/// up); `None` otherwise (a disabled span, or another set-up).
pub(crate) fn with_record<T>(span: &tracing::Span, f: impl FnOnce(&mut CompactSpan) -> T) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let mut ext = data.extensions_mut();
        ext.get_mut::<CompactSpan>().map(f)
    })
    .flatten()
}

/// `span`, or its nearest ancestor, that has a record (an ancestor when `span` was shed).
/// Each span is looked up once (`SpanRef::scope` would look `span` up again).
fn nearest_recorded<'a, S>(span: SpanRef<'a, S>) -> Option<SpanRef<'a, S>>
where
    S: Subscriber + for<'s> LookupSpan<'s>,
{
    let mut next = Some(span);
    while let Some(s) = next {
        if s.extensions().get::<CompactSpan>().is_some() {
            return Some(s);
        }
        next = s.parent();
    }
    None
}

/// Runs `f` with the current dispatcher and the record of the current span, or of its
/// nearest recorded ancestor (the current span may be one the export filter leaves out, such
/// as an HTTP/2 internal under `RUST_LOG=trace`, or one that was shed). Unlike
/// [`with_record`] it makes no `tracing::Span` handle, which would cost a reference count
/// taken and given back in the registry.
pub(super) fn with_current<T>(f: impl FnOnce(&tracing::Dispatch, &mut CompactSpan) -> Option<T>) -> Option<T> {
    let mut f = Some(f);
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = nearest_recorded(registry.span(current.id()?)?)?;
        let mut ext = data.extensions_mut();
        let rec = ext.get_mut::<CompactSpan>()?;
        (f.take()?)(dispatch, rec)
    })
}

/// [`with_record`] for the current span, or its nearest recorded ancestor.
pub(crate) fn with_current_record<T>(f: impl FnOnce(&mut CompactSpan) -> T) -> Option<T> {
    with_current(|_, rec| Some(f(rec)))
}
