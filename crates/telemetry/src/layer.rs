//! tracewire's own `tracing` layer: spans recorded compactly on the application's threads,
//! turned into OpenTelemetry `SpanData` on the export worker.
//!
//! Per span, the emitting thread only draws two random ids (or inherits the trace id),
//! takes two timestamps, records the span's fields as `KeyValue`s and, at close, moves the
//! record into the bounded export queue ([`crate::export::Sink`]). Everything else a
//! `tracing-opentelemetry` layer does on the emitting thread (a `SpanBuilder`, the SDK's
//! sampler and span processor chain, an OpenTelemetry `Context` per span, the stage's
//! `tracewire.stage` attribute and kind) happens on the worker, or not at all.
//!
//! Invariants:
//! - A span's record lives in the registry's extensions from `on_new_span` to `on_close`;
//!   the context helpers ([`with_record`]) find it through the `Registry` the layer sits on.
//! - Parents: an explicit parent, else the current span, else OpenTelemetry's current
//!   context (a span made with its API, or a context attached by hand), else a new trace.
//!   [`crate::set_parent_from`] may replace the parent before the span is entered.
//! - Sampling follows [`Sampler`]; unsampled spans carry valid ids (so their context still
//!   propagates, with the sampled flag off) and are never queued.
//! - Without an export ([`SpanLayer::export`] `None`, what [`crate::init`] installs when
//!   `OTEL_SDK_DISABLED=true`) spans are recorded and sampled the same way, so contexts,
//!   ids and flags propagate, but nothing is ever queued (nor are fields, events or links
//!   kept): the spans are non-recording in OpenTelemetry's terms, and there is no queue or
//!   export worker.
//! - A span started while the export queue is full gets no record (counted as emitted and
//!   dropped); whatever looks for a parent (child spans, events, queue spans, the context
//!   helpers) takes the nearest ancestor that has one.
//! - Every record queued is counted once by [`Sink::submit`], so the pipeline's
//!   `emitted == exported + dropped + pending` holds for layer and SDK spans alike.

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::SystemTime;

use opentelemetry::trace::{Event as OtelEvent, SpanContext, SpanKind, Status, TraceContextExt, TraceState};
use opentelemetry::{Context as OtelContext, Key, KeyValue, Value};
use smallvec::SmallVec;
use tracewire_context::{SpanId, TraceId};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::config::Sampler;
use crate::export::{Item, Sink};
use crate::stage::{STAGE_ATTRIBUTE, Stage};

/// One span as tracewire's layer records it: small, and free of allocations for a span
/// with up to [`INLINE_ATTRIBUTES`] fields, no events, links or remote context. (Memory
/// allocated on the emitting thread and freed on the export worker takes the allocator's
/// slow path on both sides.)
#[derive(Debug)]
pub(crate) struct SpanRecord {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    parent_remote: bool,
    sampled: bool,
    name: &'static str,
    /// Timestamps from the CPU's cycle counter where it is usable (a few nanoseconds, against
    /// tens for the system clock in a VM), made wall-clock times on the export worker.
    start: fastant::Instant,
    end: fastant::Instant,
    attributes: SmallVec<[KeyValue; INLINE_ATTRIBUTES]>,
    extra: Option<Box<Extra>>,
    /// The layer's sampler, for a parent set later ([`crate::set_parent_from`]).
    sampler: Sampler,
}

/// Fields that inline storage holds without an allocation.
const INLINE_ATTRIBUTES: usize = 2;

/// What few spans have.
#[derive(Debug, Default)]
struct Extra {
    tracestate: TraceState,
    /// The OpenTelemetry context the span continues (a remote parent's baggage, or one
    /// attached through OpenTelemetry's API); inherited by child spans.
    inherited: Option<OtelContext>,
    /// This span's own context, made on first entry when context activation is on.
    activated: Option<OtelContext>,
    /// `otel.name`.
    name: Option<Cow<'static, str>>,
    kind: Option<SpanKind>,
    status: Status,
    events: Vec<OtelEvent>,
    links: Vec<SpanContext>,
    /// Start and end given as wall-clock times (spans emitted after the fact, such as the
    /// relay's per-message stages), exported as they are.
    wall: Option<(SystemTime, SystemTime)>,
}

/// Whether a span is sampled, given its trace id and, when it has one, its parent's flag.
fn decide(sampler: Sampler, trace_id: TraceId, parent_sampled: Option<bool>) -> bool {
    match sampler {
        Sampler::AlwaysOn => true,
        Sampler::AlwaysOff => false,
        Sampler::TraceIdRatio(r) => ratio(r, trace_id),
        Sampler::ParentBasedAlwaysOff => parent_sampled.unwrap_or(false),
        Sampler::ParentBasedTraceIdRatio(r) => parent_sampled.unwrap_or_else(|| ratio(r, trace_id)),
        // `ParentBasedAlwaysOn` and any later default.
        _ => parent_sampled.unwrap_or(true),
    }
}

/// The SDK's `TraceIdRatioBased` decision, bit for bit: the trace id's low 63 bits against
/// the ratio scaled to 2^63.
fn ratio(r: f64, trace_id: TraceId) -> bool {
    if r >= 1.0 {
        return true;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let bound = (r.max(0.0) * (1u64 << 63) as f64) as u64;
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

impl SpanRecord {
    /// A span starting now, in no trace yet: [`Self::child_of`] and the like give it its
    /// parent's, [`Self::new_trace`] a new one.
    fn new(name: &'static str, sampler: Sampler) -> Self {
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
    fn new_trace(&mut self) {
        self.trace_id = TraceId::random();
        self.sampled = decide(self.sampler, self.trace_id, None);
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Makes this span a child of a span of this layer.
    fn child_of(&mut self, parent: &SpanRecord) {
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
    fn child_of_span_context(&mut self, sc: &SpanContext) -> bool {
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

/// Turns the layer's timestamps into wall-clock times. The export worker reads both clocks
/// before each batch; a time between two readings is interpolated between them, so neither
/// the cycle counter's calibration error nor its drift against the (NTP-disciplined) system
/// clock accumulates: the error is that of reading two clocks, well under a microsecond.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    earlier: (SystemTime, fastant::Instant),
    latest: (SystemTime, fastant::Instant),
    /// Seconds of system time per second of counter time between the two readings (1 when
    /// they are too close together to tell).
    rate: f64,
    /// `earlier`'s system time in nanoseconds since the Unix epoch (`None` before it), so
    /// that a conversion is one multiplication and integer additions.
    base_nanos: Option<u64>,
}

impl Clock {
    /// Both clocks, now.
    pub(crate) fn now() -> Self {
        let reading = Self::reading();
        Self::from_readings(reading, reading)
    }

    /// One reading of both clocks. The system clock is read between two counter readings,
    /// three times; the tightest pair wins and the counter's midpoint stands for it. A
    /// thread preempted between its reads (a loaded machine) would otherwise pair the two
    /// clocks tens of microseconds apart.
    fn reading() -> (SystemTime, fastant::Instant) {
        let read = || {
            let before = fastant::Instant::now();
            let system = SystemTime::now();
            let gap = fastant::Instant::now().saturating_duration_since(before);
            (gap, system, before + gap / 2)
        };
        let (_, system, counter) = (0..2).map(|_| read()).fold(read(), |best, r| if r.0 < best.0 { r } else { best });
        (system, counter)
    }

    fn from_readings(earlier: (SystemTime, fastant::Instant), latest: (SystemTime, fastant::Instant)) -> Self {
        let counter = latest.1.saturating_duration_since(earlier.1).as_secs_f64();
        let system = latest.0.duration_since(earlier.0).map_or(0.0, |d| d.as_secs_f64());
        let rate = if counter > 0.005 && system > 0.0 { system / counter } else { 1.0 };
        let base_nanos =
            earlier.0.duration_since(SystemTime::UNIX_EPOCH).ok().and_then(|d| u64::try_from(d.as_nanos()).ok());
        Self { earlier, latest, rate, base_nanos }
    }

    /// Reads both clocks again, keeping the last reading (unless it is too recent to
    /// measure the counter's rate against the system clock with).
    pub(crate) fn advance(&mut self) {
        let reading = Self::reading();
        let earlier = if reading.1.saturating_duration_since(self.latest.1) >= std::time::Duration::from_millis(10) {
            self.latest
        } else {
            self.earlier
        };
        *self = Self::from_readings(earlier, reading);
    }

    /// The wall-clock time of `t`.
    pub(crate) fn system_time(&self, t: fastant::Instant) -> SystemTime {
        let (base, at) = self.earlier;
        let Some(base_nanos) = self.base_nanos else { return self.system_time_slow(t) };
        // Counter nanoseconds from the reading (signed), scaled to system time: exact in an
        // f64 for any span of time a clock reading covers (2^53 ns is 104 days).
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let scaled = match t.checked_duration_since(at) {
            Some(after) => (after.as_nanos() as f64 * self.rate) as i64,
            None => -((at.saturating_duration_since(t).as_nanos() as f64 * self.rate) as i64),
        };
        match base_nanos.checked_add_signed(scaled) {
            Some(nanos) => SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos),
            None => base,
        }
    }

    /// [`Self::system_time`] for a reading before the Unix epoch.
    fn system_time_slow(&self, t: fastant::Instant) -> SystemTime {
        let (base, at) = self.earlier;
        let converted = match t.checked_duration_since(at) {
            Some(after) => base.checked_add(after.mul_f64(self.rate)),
            None => base.checked_sub(at.saturating_duration_since(t).mul_f64(self.rate)),
        };
        converted.unwrap_or(base)
    }
}

fn is_empty(ts: &TraceState) -> bool {
    *ts == TraceState::NONE
}

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
    pub(crate) sink: Sink,
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
        let mut rec = SpanRecord::new(meta.name(), self.sampler);
        let mut continued = false;
        // The parent the registry has just resolved (explicit, or the current span), read
        // from the new span's data rather than looked up again.
        if let Some(parent) = span.parent() {
            // The nearest recorded ancestor, each looked at once.
            for ancestor in parent.scope() {
                if let Some(p) = ancestor.extensions().get::<SpanRecord>() {
                    rec.child_of(p);
                    continued = true;
                    break;
                }
            }
        }
        if !continued && attrs.is_contextual() {
            // A root in tracing's terms may still be inside a span made with OpenTelemetry's API.
            continued = OtelContext::map_current(|cx| rec.continue_context(cx));
        }
        if !continued {
            rec.new_trace();
        }
        // Fields, events and links only matter to the exported span.
        if self.export.is_some() {
            attrs.record(&mut Values(&mut Fields(&mut rec)));
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
        let mut collected = Collected::default();
        values.record(&mut Values(&mut collected));
        if let Some(rec) = span.extensions_mut().get_mut::<SpanRecord>() {
            let mut fields = Fields(rec);
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
        let Some(sc) = other.extensions().get::<SpanRecord>().map(SpanRecord::span_context) else { return };
        if let Some(span) = ctx.span(id)
            && let Some(rec) = span.extensions_mut().get_mut::<SpanRecord>()
        {
            rec.extra().links.push(sc);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.export.is_none() {
            return;
        }
        let Some(span) =
            Self::parent_of(event.parent(), event.is_contextual(), &ctx).and_then(|s| nearest_recorded(&s))
        else {
            return;
        };
        if !span.extensions().get::<SpanRecord>().is_some_and(|r| r.sampled) {
            return;
        }
        // Visited before the span's extensions are locked for writing: a value's `Debug`
        // may itself emit an event inside this span (tokio-rs/tracing#763).
        let meta = event.metadata();
        let mut visitor = EventFields {
            name: None,
            attributes: vec![KeyValue::new("level", meta.level().as_str()), KeyValue::new("target", meta.target())],
        };
        event.record(&mut Values(&mut visitor));
        let name = visitor.name.map_or(Cow::Borrowed(meta.name()), Cow::Owned);
        let mut ext = span.extensions_mut();
        let Some(rec) = ext.get_mut::<SpanRecord>() else { return };
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
            let Some(rec) = ext.get_mut::<SpanRecord>() else { return };
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
        let Some(mut rec) = span.extensions_mut().remove::<SpanRecord>() else { return };
        if rec.sampled
            && let Some(export) = &self.export
        {
            rec.end = fastant::Instant::now();
            if let Some(extra) = &mut rec.extra {
                extra.activated = None;
            }
            export.sink.submit(Item::Compact(rec));
        }
    }
}

/// Records a span's fields; `otel.name`, `otel.kind`, `otel.status_code` and
/// `otel.status_description` set the span's name, kind and status as in
/// tracing-opentelemetry.
struct Fields<'a>(&'a mut SpanRecord);

impl Fields<'_> {
    fn string(&mut self, field: &Field, value: String) {
        let rec = &mut *self.0;
        match field.name() {
            "otel.name" => rec.extra().name = Some(Cow::Owned(value)),
            "otel.kind" => rec.extra().kind = kind(&value),
            "otel.status_code" => {
                let extra = rec.extra();
                extra.status = match value.to_ascii_lowercase().as_str() {
                    "ok" => Status::Ok,
                    "error" => Status::error(status_description(&extra.status)),
                    _ => Status::Unset,
                };
            }
            "otel.status_description" => {
                let extra = rec.extra();
                if matches!(extra.status, Status::Error { .. } | Status::Unset) {
                    extra.status = Status::error(value);
                }
            }
            name => rec.set_attribute(KeyValue::new(Key::from_static_str(name), value)),
        }
    }
}

fn status_description(status: &Status) -> Cow<'static, str> {
    match status {
        Status::Error { description } => description.clone(),
        _ => Cow::Borrowed(""),
    }
}

fn kind(s: &str) -> Option<SpanKind> {
    Some(match s.to_ascii_lowercase().as_str() {
        "server" => SpanKind::Server,
        "client" => SpanKind::Client,
        "producer" => SpanKind::Producer,
        "consumer" => SpanKind::Consumer,
        "internal" => SpanKind::Internal,
        _ => return None,
    })
}

/// Records an event's fields: `message` names the event, the rest are its attributes.
struct EventFields {
    name: Option<String>,
    attributes: Vec<KeyValue>,
}

/// Where a visitor puts a field's value; one [`Visit`] implementation ([`Values`]) serves
/// spans and events.
trait Put {
    fn put(&mut self, field: &Field, value: Value);
}

impl Put for Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name.starts_with("otel.") {
            self.string(field, value.as_str().into_owned());
        } else {
            self.0.set_attribute(KeyValue::new(Key::from_static_str(name), value));
        }
    }
}

/// Values recorded later (`Span::record`), collected before the span is locked.
#[derive(Default)]
struct Collected(SmallVec<[(Field, Value); 2]>);

impl Put for Collected {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.push((field.clone(), value));
    }
}

impl Put for EventFields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.name = Some(value.as_str().into_owned());
        } else {
            self.attributes.push(KeyValue::new(Key::from_static_str(field.name()), value));
        }
    }
}

/// Turns `tracing` field values into OpenTelemetry values: integers stay integers (a `u64`
/// beyond `i64` becomes its decimal string), everything else that is not a number or a
/// boolean becomes a string.
struct Values<'a, P>(&'a mut P);

impl<P: Put> Visit for Values<'_, P> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.put(field, Value::Bool(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.put(field, Value::I64(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.put(field, i64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::I64));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.put(field, Value::F64(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.put(field, Value::from(value.to_owned()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.put(field, Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.put(field, Value::from(format!("{value:?}")));
    }
}

/// Runs `f` on the record of `span`, when `span` is recorded by tracewire's layer on a
/// `tracing_subscriber::Registry` (as [`crate::init`] and [`crate::Pipeline::layer`] set
/// up); `None` otherwise (a disabled span, or another set-up).
pub(crate) fn with_record<T>(span: &tracing::Span, f: impl FnOnce(&mut SpanRecord) -> T) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let mut ext = data.extensions_mut();
        ext.get_mut::<SpanRecord>().map(f)
    })
    .flatten()
}

/// A span to be finished later with explicit times (a queue residence span): a child of
/// the current span of tracewire's layer, recorded without the OpenTelemetry SDK.
#[derive(Debug)]
#[cfg(feature = "instrument")]
pub(crate) struct Pending {
    record: SpanRecord,
    /// `None` when the layer does not export: the span is then never queued.
    sink: Option<Sink>,
}

#[cfg(feature = "instrument")]
impl Pending {
    /// A span named `name` starting now, as a child of the current `tracing` span, when that
    /// span is recorded by tracewire's layer; `None` otherwise.
    pub(crate) fn child_of_current(name: &'static str) -> Option<Self> {
        with_current(|dispatch, parent| {
            let layer = dispatch.downcast_ref::<SpanLayer>()?;
            let mut record = SpanRecord::new(name, parent.sampler);
            record.child_of(parent);
            Some(Self { record, sink: layer.export.as_ref().map(|e| e.sink.clone()) })
        })
    }

    /// When the span started.
    pub(crate) fn start(&self) -> SystemTime {
        Clock::now().system_time(self.record.start)
    }

    /// Ends the span now, with `attributes`, and queues it for export (if sampled).
    pub(crate) fn finish(mut self, attributes: &[KeyValue]) {
        let Some(sink) = self.sink.take().filter(|_| self.record.sampled) else { return };
        self.record.end = fastant::Instant::now();
        self.record.attributes.extend(attributes.iter().cloned());
        sink.submit(Item::Compact(self.record));
    }
}

/// `span`, or its nearest ancestor, that has a record (an ancestor when `span` was shed).
fn nearest_recorded<'a, S>(span: &SpanRef<'a, S>) -> Option<SpanRef<'a, S>>
where
    S: Subscriber + for<'s> LookupSpan<'s>,
{
    span.scope().find(|s| s.extensions().get::<SpanRecord>().is_some())
}

/// Emits a finished span with explicit wall-clock times as a child of the span in `parent`
/// (nothing when it has none, or when the layer does not export), through tracewire's layer
/// when the current dispatcher has one: `false` when it has not (then the caller uses the
/// OpenTelemetry SDK).
#[cfg(feature = "instrument")]
pub(crate) fn emit(
    name: &'static str,
    start: SystemTime,
    end: SystemTime,
    parent: &OtelContext,
    attributes: &[KeyValue],
) -> bool {
    tracing::dispatcher::get_default(|dispatch| {
        let Some(layer) = dispatch.downcast_ref::<SpanLayer>() else { return false };
        let Some(export) = &layer.export else { return true };
        let mut record = SpanRecord::new(name, layer.sampler);
        if record.child_of_span_context(parent.span().span_context()) && record.sampled {
            record.extra().wall = Some((start, end));
            record.attributes.extend(attributes.iter().cloned());
            export.sink.submit(Item::Compact(record));
        }
        true
    })
}

/// Runs `f` with the current dispatcher and the record of the current span, or of its
/// nearest recorded ancestor (the current span may be one the export filter leaves out, such
/// as an HTTP/2 internal under `RUST_LOG=trace`, or one that was shed). Unlike
/// [`with_record`] it makes no `tracing::Span` handle, which would cost a reference count
/// taken and given back in the registry.
fn with_current<T>(f: impl FnOnce(&tracing::Dispatch, &mut SpanRecord) -> Option<T>) -> Option<T> {
    let mut f = Some(f);
    tracing::dispatcher::get_default(|dispatch| {
        let current = dispatch.current_span();
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = nearest_recorded(&registry.span(current.id()?)?)?;
        let mut ext = data.extensions_mut();
        let rec = ext.get_mut::<SpanRecord>()?;
        (f.take()?)(dispatch, rec)
    })
}

/// [`with_record`] for the current span, or its nearest recorded ancestor.
pub(crate) fn with_current_record<T>(f: impl FnOnce(&mut SpanRecord) -> T) -> Option<T> {
    with_current(|_, rec| Some(f(rec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_sampling_matches_the_sdk() {
        use opentelemetry::trace::{SpanKind, TraceId as OtelTraceId};
        use opentelemetry_sdk::trace::{Sampler as Sdk, SamplingDecision, ShouldSample};
        for r in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let sdk = Sdk::TraceIdRatioBased(r);
            for _ in 0..2000 {
                let id = TraceId::random();
                let theirs = sdk
                    .should_sample(None, OtelTraceId::from_bytes(id.to_bytes()), "x", &SpanKind::Internal, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample;
                assert_eq!(ratio(r, id), theirs, "ratio {r}, trace {id}");
            }
        }
    }

    #[test]
    fn clock_interpolates_between_readings_at_the_measured_rate() {
        use std::time::Duration;
        let at = |ms: u64| fastant::Instant::ZERO + Duration::from_secs(1000) + Duration::from_millis(ms);
        let wall = |us: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_micros(us);
        // The counter runs 0.1% slow against the system clock: 1000 ms of counter time are
        // 1001 ms of system time.
        let clock = Clock::from_readings((wall(0), at(0)), (wall(1_001_000), at(1000)));
        let close = |a: SystemTime, b: SystemTime| {
            let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
            assert!(d < Duration::from_micros(1), "{a:?} vs {b:?}");
        };
        close(clock.system_time(at(0)), wall(0));
        close(clock.system_time(at(500)), wall(500_500));
        close(clock.system_time(at(1000)), wall(1_001_000));
        // Before the earlier reading and after the latest: extrapolated at the same rate.
        close(clock.system_time(at(0) - Duration::from_millis(100)), wall(0) - Duration::from_micros(100_100));
        close(clock.system_time(at(1100)), wall(1_101_100));
        // Readings too close together to measure a rate: the counter's own rate.
        let fresh = Clock::from_readings((wall(0), at(0)), (wall(1000), at(1)));
        close(fresh.system_time(at(2)), wall(2000));
    }

    #[test]
    fn the_clocks_integer_conversion_agrees_with_durations_scaled_by_the_rate() {
        use std::time::Duration;
        let at = |ns: u64| fastant::Instant::ZERO + Duration::from_secs(5000) + Duration::from_nanos(ns);
        let base = SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
        for rate_ppm in [-500i64, -3, 0, 7, 1000] {
            let system = Duration::from_secs(1) + Duration::from_nanos(rate_ppm.unsigned_abs() * 1000);
            let later = if rate_ppm < 0 { base + Duration::from_secs(2) - system } else { base + system };
            let clock = Clock::from_readings((base, at(0)), (later, at(1_000_000_000)));
            assert!(clock.base_nanos.is_some());
            for ns in [0u64, 1, 999, 1_000_000, 987_654_321, 3_600_000_000_000] {
                for t in [at(0) + Duration::from_nanos(ns), at(0).checked_sub(Duration::from_nanos(ns)).unwrap()] {
                    let fast = clock.system_time(t);
                    let slow = clock.system_time_slow(t);
                    let d = fast.duration_since(slow).unwrap_or_else(|e| e.duration());
                    assert!(d < Duration::from_micros(1), "rate {rate_ppm} ppm, {ns} ns: {fast:?} vs {slow:?}");
                }
            }
        }
        // A reading before the Unix epoch takes the general path.
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        let clock = Clock::from_readings((before, at(0)), (before, at(0)));
        assert!(clock.base_nanos.is_none());
        let t = clock.system_time(at(1_000));
        let d = t.duration_since(before + Duration::from_micros(1)).unwrap_or_else(|e| e.duration());
        assert!(d < Duration::from_micros(1), "{t:?}");
    }

    #[test]
    fn parent_based_samplers_follow_the_parent() {
        let id = TraceId::random();
        for s in [Sampler::ParentBasedAlwaysOn, Sampler::ParentBasedAlwaysOff, Sampler::ParentBasedTraceIdRatio(0.5)] {
            assert!(decide(s, id, Some(true)));
            assert!(!decide(s, id, Some(false)));
        }
        assert!(decide(Sampler::ParentBasedAlwaysOn, id, None));
        assert!(!decide(Sampler::ParentBasedAlwaysOff, id, None));
        assert!(decide(Sampler::AlwaysOn, id, Some(false)));
        assert!(!decide(Sampler::AlwaysOff, id, Some(true)));
    }
}
