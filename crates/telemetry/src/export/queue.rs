//! The bounded lock-free queue between the application's threads and the export worker
//! ([`ExportQueue`]), and load shedding at span start while it is full ([`Overload`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;
use opentelemetry_sdk::trace::SpanData;

use super::stats::ExportStats;

/// A finished span waiting for export: from the OpenTelemetry SDK (spans made with its API,
/// such as [`crate::Queued`]'s), or a compact record from tracewire's `tracing` layer, which
/// the worker turns into `SpanData` off the application's threads.
// The compact record is the common case and stays inline: boxing it would cost an
// allocation per span on the emitting thread, freed on the worker.
#[allow(clippy::large_enum_variant)]
pub(crate) enum FinishedSpan {
    /// Boxed: `SpanData` is larger than a compact record, and every item moves twice.
    Sdk(Box<SpanData>),
    Compact(crate::record::CompactSpan),
}

/// The queue between the application's threads and the export worker.
pub(super) struct Shared {
    pub(super) queue: ArrayQueue<FinishedSpan>,
    pub(super) stats: ExportStats,
    /// Set once the worker has stopped: what is still queued can never be exported.
    pub(super) closed: AtomicBool,
    /// The worker has been woken for a full batch and has not looked yet.
    pub(super) wake_pending: AtomicBool,
    /// Set when a push found the queue full, cleared by the worker once it has taken spans:
    /// load shedding reads this flag (rarely written, so it stays in every core's cache)
    /// rather than the queue's head and tail (written for every span).
    pub(super) full: AtomicBool,
    pub(super) batch_size: usize,
}

impl Shared {
    /// Counts everything left in the queue as dropped at shutdown.
    pub(super) fn drop_rest(&self) {
        let mut n = 0;
        while self.queue.pop().is_some() {
            n += 1;
        }
        if n > 0 {
            self.stats.inner.dropped_shutdown.fetch_add(n, Ordering::AcqRel);
        }
    }
}

/// Load shedding at span start: while the export queue is full, a span that would only be
/// dropped at its end is not recorded at all, and is counted as dropped right away
/// ([`ExportSnapshot::dropped_queue_full`]). Asked by tracewire's span layer as a span
/// starts (see [`crate::Pipeline::layer`]); under overload the emit path costs the
/// registry's part of a span and a flag check instead of a whole span. "Full" means a push
/// has failed since the worker last took spans, and the queue is still full.
#[derive(Clone)]
pub struct Overload {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for Overload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overload").field("full", &self.shared.queue.is_full()).finish()
    }
}

impl Overload {
    /// `true` (and the span counted as emitted and dropped) when the queue is full.
    pub fn shed(&self) -> bool {
        if self.shared.full.load(Ordering::Relaxed) && self.shared.queue.is_full() {
            self.shared.stats.inner.shed.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}

/// Whether this thread should look at the queue's length now: every `WAKE_CHECK` spans
/// (at most every batch), since reading the length touches the cache lines the worker
/// writes for every span it takes. A batch waits at most that many spans longer for its
/// wake-up (or the schedule delay, whichever comes first).
pub(super) fn due_for_check(batch_size: usize) -> bool {
    const WAKE_CHECK: usize = 16;
    thread_local! {
        static SINCE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    SINCE.with(|since| {
        let n = since.get() + 1;
        if n >= WAKE_CHECK.min(batch_size) {
            since.set(0);
            true
        } else {
            since.set(n);
            false
        }
    })
}

/// Where finished spans go: a handle on the queue and the worker to wake. Shared by the
/// SDK span processor and tracewire's `tracing` layer.
#[derive(Clone)]
pub(crate) struct ExportQueue {
    pub(super) shared: Arc<Shared>,
    pub(super) worker: std::thread::Thread,
}

impl fmt::Debug for ExportQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportQueue").field("queued", &self.shared.queue.len()).finish_non_exhaustive()
    }
}

impl ExportQueue {
    /// Counts `item` as emitted and queues it without blocking, or counts it as dropped
    /// when the queue is full. Wakes the worker once a batch is waiting.
    pub(crate) fn submit(&self, item: FinishedSpan) {
        let sh = &*self.shared;
        let c = &sh.stats.inner;
        c.emitted.fetch_add(1, Ordering::AcqRel);
        if sh.queue.push(item).is_err() {
            c.dropped_queue_full.fetch_add(1, Ordering::AcqRel);
            sh.full.store(true, Ordering::Relaxed);
            return;
        }
        if sh.closed.load(Ordering::SeqCst) {
            // The worker is gone; whoever pops a span counts it, exactly once.
            sh.drop_rest();
        } else if due_for_check(sh.batch_size)
            && sh.queue.len() >= sh.batch_size
            && !sh.wake_pending.swap(true, Ordering::AcqRel)
        {
            self.worker.unpark();
        }
    }
}
