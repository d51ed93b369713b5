//! The WAL's checkpoints, on a thread of their own so that the writer does not wait for
//! them.
//!
//! Invariant: commits are checkpointed into the main database file soon after they are
//! made, by this thread rather than the writer (test: `tests/checkpoint.rs`
//! `commits_are_checkpointed_soon_and_off_the_writer`).

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::config::StoreConfig;
use crate::error::StoreError;
#[cfg(doc)]
use crate::schema::WAL_BOUND_BYTES;

/// Least time between two checkpoints of the [`Checkpointer`].
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// The WAL's checkpoints, off the writer thread: a thread with its own connection copies
/// committed pages from the log into the database (`PRAGMA wal_checkpoint(PASSIVE)`, which
/// never waits for the writer nor holds it up) after commits, at most every
/// [`CHECKPOINT_INTERVAL`], so the writer does not wait for those copies and their syncs. The
/// writer still checkpoints once the log reaches [`WAL_BOUND_BYTES`] (SQLite's automatic
/// checkpoint; little is left to copy by then), which bounds the log under sustained load:
/// SQLite starts the log over only after a checkpoint that copied all of it.
pub(crate) struct Checkpointer {
    kick: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path, config: &StoreConfig) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(config.busy_timeout)?;
        let (kick, kicked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tracewire-ckpt".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                while kicked.recv().is_ok() {
                    // Commits in the meantime (their kicks) are covered by this checkpoint.
                    if let Some(until) = last.and_then(|t| t.checked_add(CHECKPOINT_INTERVAL)) {
                        while let Some(wait) = until.checked_duration_since(Instant::now()).filter(|w| !w.is_zero()) {
                            if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = kicked.recv_timeout(wait) {
                                // Closing: the last connection closed checkpoints the whole log.
                                return;
                            }
                        }
                    }
                    last = Some(Instant::now());
                    // A failure (the disk) is the writer's to meet and report at its commits.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                }
            })
            .map_err(|e| StoreError::Other(e.to_string()))?;
        Ok(Self { kick, thread })
    }

    /// Asks for a checkpoint (soon: at most one every [`CHECKPOINT_INTERVAL`]).
    pub(crate) fn kick(&self) {
        let _ = self.kick.try_send(());
    }

    /// Stops the thread once its checkpoint in progress, if any, is done.
    pub(crate) fn stop(self) {
        drop(self.kick);
        let _ = self.thread.join();
    }
}
