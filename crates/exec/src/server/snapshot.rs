//! What [`ExecServer::snapshot`] reports: the processes the server holds, its connections
//! and queue depths. The readers and the waiter record each process's activity with atomic
//! stores; a snapshot reads them under two short lock holds (no I/O, no await).
//!
//! Invariant: recording activity never takes a lock on the output path (test:
//! `crates/exec/tests/exec.rs` `snapshot_lists_processes_connections_and_last_output`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracewire_store::Store;

use super::ExecServer;

/// What the readers and the waiter record for [`ExecServer::snapshot`]: cheap atomic
/// stores, never a lock on the output path.
#[derive(Default)]
pub(super) struct ProcessActivity {
    /// Milliseconds from the start to the latest output chunk, plus one (0: no output yet).
    last_output_ms: AtomicU64,
    /// The child has exited (waited for); its entry stays while its output drains.
    exited: AtomicBool,
}

impl ProcessActivity {
    /// Records an output chunk read now, for a process started at `started`.
    pub(super) fn output_at(&self, started: Instant) {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_output_ms.store(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// Records that the child was waited for.
    pub(super) fn exited(&self) {
        self.exited.store(true, Ordering::Release);
    }

    fn state(&self) -> ProcessState {
        if self.exited.load(Ordering::Acquire) { ProcessState::Exited } else { ProcessState::Running }
    }

    fn last_output(&self, started: Instant) -> Option<Instant> {
        let last = self.last_output_ms.load(Ordering::Relaxed);
        (last > 0).then(|| started + Duration::from_millis(last - 1))
    }
}

/// A process's state in a [`ServerSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessState {
    /// The child is running (not yet waited for).
    Running,
    /// The child has exited and was reaped; its output is still draining (a grandchild
    /// may hold a pipe open, up to `drain_grace`) before Exited is sent.
    Exited,
}

impl ProcessState {
    /// `"running"` or `"exited"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
        }
    }
}

/// One process the server holds, in a [`ServerSnapshot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessSnapshot {
    /// The server's id for the process (unique in this server).
    pub process_id: u64,
    /// The OS pid.
    pub pid: u32,
    /// The command line.
    pub argv: Vec<String>,
    /// Running, or exited with output still draining.
    pub state: ProcessState,
    /// When it was spawned (monotonic).
    pub started: Instant,
    /// When it was spawned, in nanoseconds since the Unix epoch.
    pub started_unix_nanos: i64,
    /// When it last wrote to stdout or stderr; `None`: never.
    pub last_output: Option<Instant>,
    /// The id of the connection that started it.
    pub connection: u64,
}

impl ProcessSnapshot {
    /// How long it has produced no output at `now`: since its last output, or since its
    /// start when it never wrote anything.
    pub fn idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_output.unwrap_or(self.started))
    }
}

/// A read-only view of an [`ExecServer`] at one instant, for metrics and dashboards.
/// Taking one locks the process and connection maps briefly (no I/O, no await).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServerSnapshot {
    /// The processes held now (running, or exited with output draining), by process id.
    pub processes: Vec<ProcessSnapshot>,
    /// Connections open now.
    pub connections: usize,
    /// Connections subscribed to pushed events now: those with at least one process held.
    pub subscribers: usize,
    /// Requests waiting for a worker, summed over the connections.
    pub dispatch_queue_depth: usize,
    /// Responses and notifications waiting for the transport, summed over the connections.
    pub delivery_queue_depth: usize,
    /// Process records queued for the store and not yet committed; `None` without a store.
    pub store_backlog: Option<u64>,
}

impl ExecServer {
    /// What the server holds now: its processes (pid, argv, state, start, last output),
    /// open connections, subscribers, queue depths and the store's backlog. Cheap: two
    /// short lock holds and atomic reads; never waits on a process or the network.
    ///
    /// ```
    /// use tracewire_exec::{ExecConfig, ExecServer};
    ///
    /// let server = ExecServer::new(ExecConfig::default());
    /// let snap = server.snapshot();
    /// assert!(snap.processes.is_empty());
    /// assert_eq!((snap.connections, snap.subscribers, snap.store_backlog), (0, 0, None));
    /// ```
    pub fn snapshot(&self) -> ServerSnapshot {
        let mut processes: Vec<ProcessSnapshot> = self
            .processes
            .lock()
            .map(|processes| {
                processes
                    .iter()
                    .map(|(&process_id, p)| ProcessSnapshot {
                        process_id,
                        pid: p.pid,
                        argv: p.argv.clone(),
                        state: p.activity.state(),
                        started: p.started,
                        started_unix_nanos: p.started_unix_nanos,
                        last_output: p.activity.last_output(p.started),
                        connection: p.connection,
                    })
                    .collect()
            })
            .unwrap_or_default();
        processes.sort_by_key(|p| p.process_id);
        let mut subscribed: Vec<u64> = processes.iter().map(|p| p.connection).collect();
        subscribed.sort_unstable();
        subscribed.dedup();
        let (connections, dispatch_queue_depth, delivery_queue_depth) = self
            .connections
            .lock()
            .map(|c| {
                c.values().fold((c.len(), 0, 0), |(n, d, q), open| {
                    (n, d + open.conn.dispatch_queue_depth(), q + open.conn.delivery_queue_depth())
                })
            })
            .unwrap_or_default();
        ServerSnapshot {
            processes,
            connections,
            subscribers: subscribed.len(),
            dispatch_queue_depth,
            delivery_queue_depth,
            store_backlog: self.store.as_ref().map(Store::backlog),
        }
    }
}
