//! What a [`Store`](crate::Store) is opened with: the queue's bounds and what happens when
//! they are reached ([`FullPolicy`]), batch sizes, and when a commit is on disk
//! ([`Durability`]).
//!
//! Invariant: the queue is bounded, in records and in spans, and a full queue is an error
//! the caller sees ([`crate::StoreError::Full`]), never a silent drop (tests:
//! `tests/store.rs` `a_full_queue_is_an_error_not_a_silent_drop`,
//! `span_batches_obey_the_full_policy`; `tests/ingest.rs` `the_queue_is_bounded_in_spans`).

use std::time::Duration;

#[cfg(doc)]
use crate::StoreError;

/// What `append` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Wait up to this long for room, then fail with [`StoreError::Full`].
    Wait(Duration),
    /// Fail with [`StoreError::Full`] at once.
    Error,
}

/// Store settings.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Records queued before the [`FullPolicy`] applies.
    pub queue: usize,
    /// What `append` does when the queue is full.
    pub full: FullPolicy,
    /// Most process records in one transaction.
    pub max_batch: usize,
    /// Most spans in one transaction: while the queue is deep the writer commits this many
    /// at once (one sync per transaction), and as soon as it is empty what is there.
    pub max_span_batch: usize,
    /// Most spans queued and not yet committed; beyond it the [`FullPolicy`] applies, so
    /// the queue's memory is bounded in spans, whatever the size of a batch. A batch larger
    /// than this waits for the queue to be empty.
    pub max_queued_spans: usize,
    /// How long the writer waits for a lock before a write fails with `Locked`.
    pub busy_timeout: Duration,
    /// After a failed write, how long the writer waits before retrying its batch.
    pub retry_delay: Duration,
    /// Caps the database at this many pages (`PRAGMA max_page_count`); beyond it writes
    /// fail with [`StoreError::DiskFull`], as on a full disk. `None`: no cap.
    pub max_pages: Option<u64>,
    /// When a commit is on disk ([`Durability::Full`] by default).
    pub durability: Durability,
    /// The page size of a database the store creates (`PRAGMA page_size`, a power of two
    /// from 512 to 65,536); an existing database keeps its own. `None`: SQLite's, 4 KiB.
    /// Larger pages make fewer, larger B-tree pages to update and log per insert.
    pub page_size: Option<u32>,
}

/// When a committed transaction is on disk: SQLite's `synchronous` setting, in WAL mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is synced before it returns (one sync per
    /// transaction); a commit survives a crash of the process, of the operating system and
    /// a power loss.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the log is synced at checkpoints (made by a thread of the
    /// store's own, a few times a second while records arrive), not at each commit. A
    /// commit survives the process crashing or being killed (it is in the operating
    /// system's hands when the commit returns); an operating-system crash or a power loss
    /// may roll back the commits since the last checkpoint (the database stays consistent).
    Normal,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            queue: 4096,
            full: FullPolicy::Wait(Duration::from_millis(100)),
            max_batch: 512,
            max_span_batch: 16_384,
            max_queued_spans: 65_536,
            busy_timeout: Duration::from_millis(200),
            retry_delay: Duration::from_millis(50),
            max_pages: None,
            durability: Durability::Full,
            page_size: None,
        }
    }
}
