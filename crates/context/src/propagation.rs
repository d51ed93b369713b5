//! The propagation policy, in one place: what to do with incoming context, what to send.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::baggage::Baggage;
use crate::carrier::{BAGGAGE, Carrier, CarrierError, CarrierMut, TRACEPARENT, TRACESTATE};
use crate::id::{SpanId, TraceFlags, TraceId};
use crate::traceparent::{TraceParent, TraceParentError};
use crate::tracestate::{TraceState, TraceStateError};

/// The context of one span: its trace, its own span id, flags and vendor tracestate.
///
/// ```
/// use tracewire_context::TraceContext;
///
/// let root = TraceContext::new_root(true);
/// assert!(root.flags.is_random() && root.flags.is_sampled());
/// let child = root.child();
/// assert_eq!(child.trace_id, root.trace_id);
/// assert_ne!(child.span_id, root.span_id);
/// // What a downstream service receives names this span as its parent.
/// assert_eq!(child.traceparent().parent_id, child.span_id);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id.
    pub trace_id: TraceId,
    /// This span's id.
    pub span_id: SpanId,
    /// Trace flags.
    pub flags: TraceFlags,
    /// Vendor tracestate, carried unchanged to children.
    pub tracestate: TraceState,
}

impl TraceContext {
    /// A new trace: random trace-id and span-id, the `random` flag set, `sampled` as given.
    pub fn new_root(sampled: bool) -> Self {
        Self {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            flags: TraceFlags::RANDOM.with_sampled(sampled),
            tracestate: TraceState::new(),
        }
    }

    /// A child of a received traceparent: same trace, a fresh span id, the known flags.
    pub fn child_of(parent: &TraceParent, tracestate: TraceState) -> Self {
        Self { trace_id: parent.trace_id, span_id: SpanId::random(), flags: parent.flags.outgoing(), tracestate }
    }

    /// A child span of this one: same trace, flags and tracestate, a fresh span id.
    #[must_use]
    pub fn child(&self) -> Self {
        Self { span_id: SpanId::random(), ..self.clone() }
    }

    /// The traceparent that tells a receiver this span is its parent.
    pub fn traceparent(&self) -> TraceParent {
        TraceParent::new(self.trace_id, self.span_id, self.flags)
    }

    /// Writes `traceparent`, and `tracestate` and `baggage` when not empty, into `carrier`.
    ///
    /// ```
    /// use tracewire_context::{Baggage, TraceCarrier, TraceContext};
    ///
    /// let ctx = TraceContext::new_root(true);
    /// let mut bag = Baggage::new();
    /// bag.insert("tenant", "acme corp").unwrap();
    /// let mut carrier = TraceCarrier::default();
    /// ctx.inject(Some(&bag), &mut carrier).unwrap();
    /// assert_eq!(carrier.traceparent, ctx.traceparent().to_string());
    /// assert_eq!(carrier.baggage, "tenant=acme%20corp");
    /// assert!(carrier.tracestate.is_empty());
    /// ```
    ///
    /// # Errors
    /// Only when the carrier refuses a value (see [`CarrierMut::set`]).
    pub fn inject<C: CarrierMut + ?Sized>(
        &self,
        baggage: Option<&Baggage>,
        carrier: &mut C,
    ) -> Result<(), CarrierError> {
        carrier.set(TRACEPARENT, &self.traceparent().encode())?;
        if !self.tracestate.is_empty() {
            carrier.set(TRACESTATE, &self.tracestate.header())?;
        }
        if let Some(b) = baggage.filter(|b| !b.is_empty()) {
            carrier.set(BAGGAGE, &b.header())?;
        }
        Ok(())
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.traceparent(), f)
    }
}

/// Why a new trace was started instead of continuing an incoming one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartReason {
    /// No traceparent was received.
    Missing,
    /// The traceparent was invalid (including [`TraceParentError::Multiple`]).
    Invalid(TraceParentError),
}

impl StartReason {
    /// A short, stable label for metrics: `missing`, `invalid` or `multiple`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid(TraceParentError::Multiple) => "multiple",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl fmt::Display for StartReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("no traceparent"),
            Self::Invalid(e) => write!(f, "{e}"),
        }
    }
}

/// A context read from a carrier, with nothing decided yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The received traceparent (its `parent_id` is the sender's span).
    pub parent: TraceParent,
    /// The received tracestate (empty when absent or discarded).
    pub tracestate: TraceState,
    /// Why the received tracestate was discarded, if it was.
    pub tracestate_error: Option<TraceStateError>,
}

/// Reads the remote parent out of `carrier`, without starting anything.
/// The tracestate is read only when the traceparent is valid.
///
/// # Errors
/// The [`StartReason`] when there is no valid traceparent.
pub fn read_remote<C: Carrier + ?Sized>(carrier: &C) -> Result<Remote, StartReason> {
    let parent = TraceParent::from_header_values(carrier.get_all(TRACEPARENT))
        .map_err(StartReason::Invalid)?
        .ok_or(StartReason::Missing)?;
    let (tracestate, tracestate_error) = match TraceState::from_header_values(carrier.get_all(TRACESTATE)) {
        Ok(ts) => (ts, None),
        Err(e) => (TraceState::new(), Some(e)),
    };
    Ok(Remote { parent, tracestate, tracestate_error })
}

/// The outcome of [`extract`]: the context for the local span, and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// The context to use for the local span: a child of the remote one, or a new root.
    pub context: TraceContext,
    /// The remote parent span, when the trace was continued.
    pub remote_parent: Option<SpanId>,
    /// `Some` when a new trace was started, saying why.
    pub started: Option<StartReason>,
    /// Why the incoming tracestate was discarded, if it was.
    pub tracestate_error: Option<TraceStateError>,
    /// The incoming baggage (valid members only).
    pub baggage: Baggage,
    /// Baggage members dropped as invalid or beyond the limits.
    pub baggage_dropped: usize,
}

impl Extracted {
    /// Whether the incoming trace was continued.
    pub fn continued(&self) -> bool {
        self.started.is_none()
    }
}

/// Applies the propagation policy to an incoming carrier.
///
/// - a valid traceparent is continued: same trace-id and flags, a fresh span-id, the
///   tracestate kept (or discarded whole when invalid);
/// - a missing or invalid traceparent starts a new sampled trace (random trace-id, `random`
///   flag set), discards any tracestate and says why in [`Extracted::started`];
/// - baggage is read either way, keeping valid members.
///
/// ```
/// use tracewire_context::{extract, StartReason};
///
/// let headers = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")];
/// let e = extract(&headers);
/// assert!(e.continued());
/// assert_eq!(e.context.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert_eq!(e.remote_parent.unwrap().to_string(), "00f067aa0ba902b7");
///
/// let e = extract(&[("traceparent", "garbage"), ("tracestate", "a=1")]);
/// assert!(matches!(e.started, Some(StartReason::Invalid(_))));
/// assert!(e.context.tracestate.is_empty() && e.context.flags.is_random());
/// ```
pub fn extract<C: Carrier + ?Sized>(carrier: &C) -> Extracted {
    let parsed = Baggage::from_header_values(carrier.get_all(BAGGAGE));
    let (context, remote_parent, started, tracestate_error) = match read_remote(carrier) {
        Ok(r) => (TraceContext::child_of(&r.parent, r.tracestate), Some(r.parent.parent_id), None, r.tracestate_error),
        Err(reason) => (TraceContext::new_root(true), None, Some(reason), None),
    };
    Extracted {
        context,
        remote_parent,
        started,
        tracestate_error,
        baggage: parsed.baggage,
        baggage_dropped: parsed.dropped,
    }
}

/// Counters of propagation outcomes, for metrics. All methods are lock-free.
///
/// ```
/// use tracewire_context::{extract, PropagationStats};
///
/// static STATS: PropagationStats = PropagationStats::new();
/// STATS.record(&extract(&[("traceparent", "nope")]));
/// STATS.record(&extract(&Vec::<(String, String)>::new()));
/// let s = STATS.snapshot();
/// assert_eq!((s.continued, s.invalid, s.missing), (0, 1, 1));
/// ```
#[derive(Debug, Default)]
pub struct PropagationStats {
    continued: AtomicU64,
    missing: AtomicU64,
    invalid: AtomicU64,
    multiple: AtomicU64,
    tracestate_discarded: AtomicU64,
    baggage_dropped: AtomicU64,
}

/// A point-in-time copy of [`PropagationStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Incoming traces continued.
    pub continued: u64,
    /// New traces started because no traceparent was received.
    pub missing: u64,
    /// New traces started because the traceparent was invalid.
    pub invalid: u64,
    /// New traces started because several traceparent headers were received.
    pub multiple: u64,
    /// Incoming tracestates discarded as invalid.
    pub tracestate_discarded: u64,
    /// Incoming baggage members dropped.
    pub baggage_dropped: u64,
}

impl PropagationStats {
    /// Zeroed counters (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            continued: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            multiple: AtomicU64::new(0),
            tracestate_discarded: AtomicU64::new(0),
            baggage_dropped: AtomicU64::new(0),
        }
    }

    /// Counts one [`extract`] outcome.
    pub fn record(&self, e: &Extracted) {
        let counter = match e.started {
            None => &self.continued,
            Some(StartReason::Missing) => &self.missing,
            Some(StartReason::Invalid(TraceParentError::Multiple)) => &self.multiple,
            Some(StartReason::Invalid(_)) => &self.invalid,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if e.tracestate_error.is_some() {
            self.tracestate_discarded.fetch_add(1, Ordering::Relaxed);
        }
        if e.baggage_dropped > 0 {
            self.baggage_dropped.fetch_add(e.baggage_dropped as u64, Ordering::Relaxed);
        }
    }

    /// The current counts.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            continued: self.continued.load(Ordering::Relaxed),
            missing: self.missing.load(Ordering::Relaxed),
            invalid: self.invalid.load(Ordering::Relaxed),
            multiple: self.multiple.load(Ordering::Relaxed),
            tracestate_discarded: self.tracestate_discarded.load(Ordering::Relaxed),
            baggage_dropped: self.baggage_dropped.load(Ordering::Relaxed),
        }
    }
}
