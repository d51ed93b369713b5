//! The record tracewire's layer keeps per span ([`CompactSpan`]) and its conversion to the
//! OpenTelemetry `SpanData` the exporter takes, made on the export worker.
//!
//! Invariant: unsampled records carry valid ids (their context still propagates, with the
//! sampled flag off) and are never queued (`crates/telemetry/tests/layer.rs`).

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{Event as OtelEvent, SpanContext, SpanKind, Status, TraceContextExt, TraceState};
use opentelemetry::{Context as OtelContext, KeyValue};
use smallvec::SmallVec;
use tracewire_context::{SpanId, TraceId};

use crate::clock::Clock;
use crate::config::Sampler;
use crate::sampling::decide;
use crate::stage::{STAGE_ATTRIBUTE, Stage};

/// One span as tracewire's layer records it: small, and free of allocations for a span
/// with up to [`INLINE_ATTRIBUTES`] fields, no events, links or remote context. (Memory
/// allocated on the emitting thread and freed on the export worker takes the allocator's
/// slow path on both sides.)
#[derive(Debug)]
pub(crate) struct CompactSpan {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent_id: Option<SpanId>,
    pub(crate) parent_remote: bool,
    pub(crate) sampled: bool,
    pub(crate) name: &'static str,
    /// Timestamps from the CPU's cycle counter where it is usable (a few nanoseconds, against
    /// tens for the system clock in a VM), made wall-clock times on the export worker.
    pub(crate) start: fastant::Instant,
    pub(crate) end: fastant::Instant,
    pub(crate) attributes: SmallVec<[KeyValue; INLINE_ATTRIBUTES]>,
    pub(crate) extra: Option<Box<Extra>>,
    /// The layer's sampler, for a parent set later ([`crate::set_parent_from`]).
    pub(crate) sampler: Sampler,
}

/// SpanFields that inline storage holds without an allocation.
const INLINE_ATTRIBUTES: usize = 2;

/// What few spans have.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    pub(crate) tracestate: TraceState,
    /// The OpenTelemetry context the span continues (a remote parent's baggage, or one
    /// attached through OpenTelemetry's API); inherited by child spans.
    pub(crate) inherited: Option<OtelContext>,
    /// This span's own context, made on first entry when context activation is on.
    pub(crate) activated: Option<OtelContext>,
    /// `otel.name`.
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) kind: Option<SpanKind>,
    pub(crate) status: Status,
    pub(crate) events: Vec<OtelEvent>,
    pub(crate) links: Vec<SpanContext>,
    /// Start and end given as wall-clock times (spans emitted after the fact, such as the
    /// relay's per-message stages), exported as they are.
    pub(crate) wall: Option<(SystemTime, SystemTime)>,
}

impl CompactSpan {
    /// A span starting now, in no trace yet: [`Self::child_of`] and the like give it its
    /// parent's, [`Self::new_trace`] a new one.
    pub(crate) fn new(name: &'static str, sampler: Sampler) -> Self {
        Self {
            trace_id: TraceId::from_bytes([0; 16]),
            span_id: SpanId::random(),
            parent_id: None,
            parent_remote: false,
            sampled: true,
            name,
            start: fastant::Instant::now(),
            end: fastant::Instant::ZERO,
            attributes: SmallVec::new(),
            extra: None,
            sampler,
        }
    }

    /// Makes this span the root of a new trace (sampled as the sampler says for a root).
    pub(crate) fn new_trace(&mut self) {
        self.trace_id = TraceId::random();
        self.sampled = decide(self.sampler, self.trace_id, None);
    }

    pub(crate) fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Makes this span a child of a span of this layer.
    pub(crate) fn child_of(&mut self, parent: &CompactSpan) {
        self.trace_id = parent.trace_id;
        self.parent_id = Some(parent.span_id);
        self.parent_remote = false;
        if let Some(p) = &parent.extra
            && (p.inherited.is_some() || !is_empty(&p.tracestate))
        {
            let extra = self.extra();
            extra.tracestate = p.tracestate.clone();
            extra.inherited.clone_from(&p.inherited);
        }
        self.sampled = decide(self.sampler, self.trace_id, Some(parent.sampled));
    }

    /// Makes this span a child of the span in an OpenTelemetry context (remote or made with
    /// OpenTelemetry's API); `false`, changing nothing, when it has no valid span.
    pub(crate) fn continue_context(&mut self, cx: &OtelContext) -> bool {
        if !self.child_of_span_context(cx.span().span_context()) {
            return false;
        }
        let extra = self.extra();
        extra.inherited = Some(cx.clone());
        extra.activated = None;
        true
    }

    /// Makes this span a child of `sc` (ids, sampled flag, tracestate), keeping nothing else
    /// of its context: for a span that will have no children. `false` when `sc` is invalid.
    pub(crate) fn child_of_span_context(&mut self, sc: &SpanContext) -> bool {
        if !sc.is_valid() {
            return false;
        }
        self.trace_id = TraceId::from_bytes(sc.trace_id().to_bytes());
        self.parent_id = Some(SpanId::from_bytes(sc.span_id().to_bytes()));
        self.parent_remote = sc.is_remote();
        self.sampled = decide(self.sampler, self.trace_id, Some(sc.is_sampled()));
        if !is_empty(sc.trace_state()) {
            self.extra().tracestate = sc.trace_state().clone();
        }
        true
    }

    /// Keeps the entries of `cx` (its baggage) for this span and its children, without
    /// changing the span's parent.
    pub(crate) fn inherit(&mut self, cx: OtelContext) {
        let extra = self.extra();
        extra.inherited = Some(cx);
        extra.activated = None;
    }

    /// This span's OpenTelemetry span context.
    pub(crate) fn span_context(&self) -> SpanContext {
        SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(self.trace_id.to_bytes()),
            opentelemetry::trace::SpanId::from_bytes(self.span_id.to_bytes()),
            if self.sampled {
                opentelemetry::trace::TraceFlags::SAMPLED
            } else {
                opentelemetry::trace::TraceFlags::default()
            },
            false,
            self.extra.as_ref().map_or(TraceState::NONE, |e| e.tracestate.clone()),
        )
    }

    /// The OpenTelemetry context of this span: its span context, with the entries (baggage)
    /// of the context it continues.
    pub(crate) fn context(&self) -> OtelContext {
        match self.extra.as_deref() {
            Some(Extra { activated: Some(cx), .. }) => cx.clone(),
            Some(Extra { inherited: Some(cx), .. }) => cx.with_remote_span_context(self.span_context()),
            _ => OtelContext::new().with_remote_span_context(self.span_context()),
        }
    }

    /// Sets an attribute, replacing an earlier value of the same key.
    pub(crate) fn set_attribute(&mut self, kv: KeyValue) {
        match self.attributes.iter_mut().find(|a| a.key == kv.key) {
            Some(a) => a.value = kv.value,
            None => self.attributes.push(kv),
        }
    }

    /// The exported form, built on the export worker. Adds the stage attribute and kind of a
    /// stage span. Everything is moved, not cloned: the worker's cost per span bounds how
    /// many spans a pipeline delivers when its threads emit flat out.
    pub(crate) fn into_span_data(
        self,
        scope: &opentelemetry::InstrumentationScope,
        clock: &Clock,
    ) -> opentelemetry_sdk::trace::SpanData {
        let stage = Stage::from_name(self.name);
        let add_stage = stage.filter(|_| !self.attributes.iter().any(|kv| kv.key.as_str() == STAGE_ATTRIBUTE));
        let mut attributes = Vec::with_capacity(self.attributes.len() + usize::from(add_stage.is_some()));
        if let Some(stage) = add_stage {
            attributes.push(KeyValue::new(STAGE_ATTRIBUTE, stage.name()));
        }
        for kv in self.attributes {
            attributes.push(kv);
        }
        let flags = if self.sampled {
            opentelemetry::trace::TraceFlags::SAMPLED
        } else {
            opentelemetry::trace::TraceFlags::default()
        };
        let mut events = opentelemetry_sdk::trace::SpanEvents::default();
        let mut links = opentelemetry_sdk::trace::SpanLinks::default();
        let mut tracestate = TraceState::NONE;
        let mut name = Cow::Borrowed(self.name);
        let mut span_kind = None;
        let mut status = Status::Unset;
        let mut wall = None;
        if let Some(extra) = self.extra {
            let Extra { tracestate: ts, name: n, kind, status: st, events: ev, links: ln, wall: w, .. } = *extra;
            tracestate = ts;
            if let Some(n) = n {
                name = n;
            }
            span_kind = kind;
            status = st;
            events.events = ev;
            if !ln.is_empty() {
                links.links = ln.into_iter().map(opentelemetry::trace::Link::with_context).collect();
            }
            wall = w;
        }
        let (start_time, end_time) =
            wall.unwrap_or_else(|| (clock.system_time(self.start), clock.system_time(self.end)));
        opentelemetry_sdk::trace::SpanData {
            span_context: SpanContext::new(
                opentelemetry::trace::TraceId::from_bytes(self.trace_id.to_bytes()),
                opentelemetry::trace::SpanId::from_bytes(self.span_id.to_bytes()),
                flags,
                false,
                tracestate,
            ),
            parent_span_id: self.parent_id.map_or(opentelemetry::trace::SpanId::INVALID, |p| {
                opentelemetry::trace::SpanId::from_bytes(p.to_bytes())
            }),
            parent_span_is_remote: self.parent_remote,
            span_kind: span_kind.or_else(|| stage.map(Stage::kind)).unwrap_or(SpanKind::Internal),
            name,
            start_time,
            end_time,
            attributes,
            dropped_attributes_count: 0,
            events,
            links,
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

pub(crate) fn is_empty(ts: &TraceState) -> bool {
    *ts == TraceState::NONE
}
