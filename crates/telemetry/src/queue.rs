//! Queue residence spans: waiting is a span of its own, never hidden in a parent's
//! self-time.

use std::time::SystemTime;

use crate::stage::Stage;

/// An item waiting in a queue. [`Queued::new`] records the enqueue instant and the current
/// trace context; [`Queued::into_inner`] (on any thread or task) emits the stage's span
/// from enqueue to dequeue, as a child of the context that enqueued.
///
/// ```
/// use tracewire_telemetry::{Queued, Stage};
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// tx.send(Queued::new(Stage::RpcQueue, "request")).unwrap();
/// // ... on a worker thread:
/// let item = rx.recv().unwrap().into_inner();
/// assert_eq!(item, "request");
/// ```
#[derive(Debug)]
pub struct Queued<T> {
    item: T,
    #[cfg(feature = "instrument")]
    meta: Option<Box<Meta>>,
}

#[cfg(feature = "instrument")]
#[derive(Debug)]
// Always boxed (`Queued::meta`), so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Meta {
    /// A child of a span of tracewire's layer: recorded by the layer's own path.
    Layer(crate::layer::ResidenceSpan),
    /// A child of an OpenTelemetry context: emitted through the global tracer provider.
    Otel { stage: Stage, enqueued: SystemTime, parent: opentelemetry::Context },
}

#[cfg(feature = "instrument")]
impl Meta {
    fn enqueued(&self) -> SystemTime {
        match self {
            Self::Layer(p) => p.start(),
            Self::Otel { enqueued, .. } => *enqueued,
        }
    }

    fn finish(self, attributes: &[opentelemetry::KeyValue]) {
        match self {
            Self::Layer(p) => p.finish(attributes),
            Self::Otel { stage, enqueued, parent } => {
                emit_stage_span(stage, enqueued, SystemTime::now(), &parent, attributes);
            }
        }
    }
}

impl<T> Queued<T> {
    /// Wraps `item` at the moment it is queued, under the current `tracing` span's context.
    pub fn new(stage: Stage, item: T) -> Self {
        #[cfg(feature = "instrument")]
        {
            match crate::layer::ResidenceSpan::child_of_current(stage.name()) {
                Some(p) => Self { item, meta: Some(Box::new(Meta::Layer(p))) },
                // Another layer's span (tracing-opentelemetry's), or none.
                None => Self::with_parent(stage, item, crate::context::current_context()),
            }
        }
        #[cfg(not(feature = "instrument"))]
        {
            let _ = stage;
            Self { item }
        }
    }

    /// Wraps `item` under an explicit parent context. When the parent has no valid span,
    /// no span is emitted (a queue span is only meaningful inside a trace).
    pub fn with_parent(stage: Stage, item: T, parent: opentelemetry::Context) -> Self {
        #[cfg(feature = "instrument")]
        {
            use opentelemetry::trace::TraceContextExt;
            let meta = parent
                .span()
                .span_context()
                .is_valid()
                .then(|| Box::new(Meta::Otel { stage, enqueued: SystemTime::now(), parent }));
            Self { item, meta }
        }
        #[cfg(not(feature = "instrument"))]
        {
            let _ = (stage, parent);
            Self { item }
        }
    }

    /// When the item was queued (if a span is being recorded for it).
    pub fn enqueued_at(&self) -> Option<SystemTime> {
        #[cfg(feature = "instrument")]
        {
            self.meta.as_ref().map(|m| m.enqueued())
        }
        #[cfg(not(feature = "instrument"))]
        {
            None
        }
    }

    /// The item, looked at without dequeuing it.
    pub fn get(&self) -> &T {
        &self.item
    }

    /// Converts the item, keeping the queue span's start and parent: for an item that
    /// moves from one queue to the next (decoded, routed) while waiting for the same
    /// consumer.
    ///
    /// ```
    /// use tracewire_telemetry::{Queued, Stage};
    ///
    /// let q = Queued::new(Stage::TerminalQueue, "42").map(|s| s.parse::<u64>());
    /// assert_eq!(q.into_inner(), Ok(42));
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Queued<U> {
        Queued {
            item: f(self.item),
            #[cfg(feature = "instrument")]
            meta: self.meta,
        }
    }

    /// Dequeues: emits the residence span (enqueue to now) and returns the item.
    ///
    /// (See also [`Queued::transpose`] for items that may turn out to be nothing.)
    pub fn into_inner(self) -> T {
        #[cfg(feature = "instrument")]
        if let Some(m) = self.meta {
            m.finish(&[]);
        }
        self.item
    }

    /// Dequeues like [`Queued::into_inner`], adding attributes to the span.
    pub fn into_inner_with(self, attributes: &[opentelemetry::KeyValue]) -> T {
        #[cfg(feature = "instrument")]
        if let Some(m) = self.meta {
            m.finish(attributes);
        }
        #[cfg(not(feature = "instrument"))]
        let _ = attributes;
        self.item
    }
}

impl<T> Queued<Option<T>> {
    /// `Some` item stays queued (same span); `None` is dropped without a span.
    ///
    /// ```
    /// use tracewire_telemetry::{Queued, Stage};
    ///
    /// assert!(Queued::new(Stage::TerminalQueue, "x").map(|s| s.parse::<u8>().ok()).transpose().is_none());
    /// assert_eq!(Queued::new(Stage::TerminalQueue, Some(1)).transpose().map(Queued::into_inner), Some(1));
    /// ```
    pub fn transpose(self) -> Option<Queued<T>> {
        let item = self.item?;
        Some(Queued {
            item,
            #[cfg(feature = "instrument")]
            meta: self.meta,
        })
    }
}

/// Emits a finished span of `stage` with explicit start and end times, as a child of
/// `parent`: through tracewire's layer when the current `tracing` dispatcher has one (the
/// span is recorded compactly and exported by the same queue and worker), else through the
/// global tracer provider. When `parent` has no valid span, nothing is emitted: a stage
/// recorded after the fact is part of a traced call, never a trace of its own.
#[cfg(feature = "instrument")]
pub fn emit_stage_span(
    stage: Stage,
    start: SystemTime,
    end: SystemTime,
    parent: &opentelemetry::Context,
    attributes: &[opentelemetry::KeyValue],
) {
    use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
    if !parent.span().span_context().is_valid()
        || crate::layer::emit_timed_span(stage.name(), start, end, parent, attributes)
    {
        return;
    }
    let tracer = opentelemetry::global::tracer(crate::TRACER_NAME);
    let mut attrs = Vec::with_capacity(attributes.len() + 1);
    attrs.push(opentelemetry::KeyValue::new(crate::stage::STAGE_ATTRIBUTE, stage.name()));
    attrs.extend_from_slice(attributes);
    let mut span = tracer
        .span_builder(stage.name())
        .with_kind(stage.kind())
        .with_start_time(start)
        .with_attributes(attrs)
        .start_with_context(&tracer, parent);
    span.end_with_timestamp(end);
}

/// With the `instrument` feature off, emitting does nothing.
#[cfg(not(feature = "instrument"))]
pub fn emit_stage_span(
    _stage: Stage,
    _start: SystemTime,
    _end: SystemTime,
    _parent: &opentelemetry::Context,
    _attributes: &[opentelemetry::KeyValue],
) {
}
