//! The export counters: exact per pipeline, read lock-free ([`ExportStats`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) emitted: AtomicU64,
    pub(super) exported: AtomicU64,
    pub(super) dropped_queue_full: AtomicU64,
    /// Spans shed at start (emitted and dropped at a full queue, both): one counter, so
    /// that shedding costs one atomic add.
    pub(super) shed: AtomicU64,
    pub(super) dropped_export_failed: AtomicU64,
    pub(super) dropped_shutdown: AtomicU64,
    pub(super) export_batches: AtomicU64,
    pub(super) export_failures: AtomicU64,
    pub(super) spooled: AtomicU64,
    pub(super) replayed: AtomicU64,
    pub(super) evicted: AtomicU64,
    pub(super) spool_rejected: AtomicU64,
    pub(super) spool_torn: AtomicU64,
}

impl Counters {
    pub(super) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::AcqRel);
        }
    }
}

/// A handle on the export counters of one pipeline. Cheap to clone; reads are lock-free.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    pub(super) inner: Arc<Counters>,
}

/// A point-in-time copy of the export counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportSnapshot {
    /// Spans ended and handed to the pipeline.
    pub emitted: u64,
    /// Spans the exporter accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Spans dropped because their export failed or timed out.
    pub dropped_export_failed: u64,
    /// Spans dropped because shutdown's deadline passed, or ended after shutdown.
    pub dropped_shutdown: u64,
    /// Export calls made.
    pub export_batches: u64,
    /// Export calls that failed or timed out.
    pub export_failures: u64,
    /// Spans written to the disk spool because the collector did not take them (they
    /// leave `pending` without being exported or dropped here; a replay delivers them,
    /// maybe in a later process).
    pub spooled: u64,
    /// Spans sent from the disk spool and accepted by the collector (spooled by this
    /// process or an earlier one).
    pub replayed: u64,
    /// Spans deleted from the disk spool unsent to make room, oldest first.
    pub evicted: u64,
    /// Spans of the disk spool that the collector refused for good (a status that is not
    /// retryable) when replayed, and deleted.
    pub spool_rejected: u64,
    /// Records of the disk spool found torn or corrupt (a crash mid-write) and skipped.
    pub spool_torn: u64,
}

impl ExportSnapshot {
    /// Every span dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_export_failed + self.dropped_shutdown
    }

    /// Spans neither exported, dropped nor spooled yet (queued or being exported).
    pub fn pending(&self) -> u64 {
        self.emitted.saturating_sub(self.exported + self.dropped() + self.spooled)
    }
}

impl ExportStats {
    /// The current counts.
    pub fn snapshot(&self) -> ExportSnapshot {
        let c = &self.inner;
        let l = |a: &AtomicU64| a.load(Ordering::Acquire);
        // Read the outcome counters before `emitted`, so that `pending` never underflows
        // from a span that finished between the loads.
        let exported = l(&c.exported);
        // A shed span is emitted and dropped at once: read once, it counts in both.
        let shed = l(&c.shed);
        let dropped_queue_full = l(&c.dropped_queue_full) + shed;
        let dropped_export_failed = l(&c.dropped_export_failed);
        let dropped_shutdown = l(&c.dropped_shutdown);
        let spooled = l(&c.spooled);
        ExportSnapshot {
            exported,
            dropped_queue_full,
            dropped_export_failed,
            dropped_shutdown,
            export_batches: l(&c.export_batches),
            export_failures: l(&c.export_failures),
            spooled,
            replayed: l(&c.replayed),
            evicted: l(&c.evicted),
            spool_rejected: l(&c.spool_rejected),
            spool_torn: l(&c.spool_torn),
            emitted: l(&c.emitted) + shed,
        }
    }
}
