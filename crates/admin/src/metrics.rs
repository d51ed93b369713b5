//! The metrics model: what one sample says about the server and each worker, as
//! `GET /api/metrics` serves it (`docs/admin.md` has the JSON shape).

use serde::Serialize;

/// Why a worker is flagged as a zombie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ZombieReason {
    /// The process exited but was not reaped (OS state `Z`).
    Unreaped,
    /// It has produced no output for longer than the reap TTL.
    IdlePastTtl,
}

/// The server process's own figures.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ServerMetrics {
    /// The server's pid.
    pub pid: u32,
    /// Seconds since the admin monitor started (with the server).
    pub uptime_seconds: f64,
    /// Resident set size; `null` when it could not be read.
    pub rss_bytes: Option<u64>,
    /// CPU% since the previous sample; `null` on the first.
    pub cpu_percent: Option<f64>,
    /// Tokio tasks alive in the server's runtime; `null` outside a runtime.
    pub tokio_tasks_alive: Option<usize>,
    /// Client connections open.
    pub connections: usize,
    /// Connections receiving pushed events (with at least one process held).
    pub subscribers: usize,
    /// Processes held (running, or exited with output draining).
    pub processes: usize,
    /// Requests waiting for a worker, over all connections.
    pub dispatch_queue_depth: usize,
    /// Responses and notifications waiting for the transport, over all connections.
    pub delivery_queue_depth: usize,
    /// Spans dropped by the telemetry pipeline; `null` when export is disabled.
    pub dropped_spans: Option<u64>,
    /// Records queued for the store, not yet committed; `null` without `--db`.
    pub store_backlog: Option<u64>,
}

/// One child process.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct WorkerMetrics {
    /// The exec-server's id for it.
    pub process_id: u64,
    /// OS pid.
    pub pid: u32,
    /// Command line.
    pub argv: Vec<String>,
    /// `running` or `exited` (reaped, output draining).
    pub state: &'static str,
    /// CPU% since the previous sample; `null` on its first sample or when unreadable.
    pub cpu_percent: Option<f64>,
    /// Resident set size; `null` when unreadable.
    pub rss_bytes: Option<u64>,
    /// CPU% of the worker's process tree (the worker, its live descendants and the
    /// children they reaped) since the previous sample; `null` on the tree's first sample,
    /// when unreadable, or when the tree's CPU time went backwards (a descendant left the
    /// tree unreaped).
    pub tree_cpu_percent: Option<f64>,
    /// Resident set size summed over the worker and its live descendants; `null` when
    /// unreadable.
    pub tree_rss_bytes: Option<u64>,
    /// Live processes below the worker (children, grandchildren, ...); `null` when
    /// unreadable.
    pub descendants: Option<usize>,
    /// Spawn time, milliseconds since the Unix epoch.
    pub started_unix_ms: i64,
    /// Seconds without output (since the last chunk, or since the start).
    pub idle_seconds: f64,
    /// Exited but not reaped, or idle past the reap TTL.
    pub zombie: bool,
    /// Why it is a zombie; `null` when it is not.
    pub zombie_reason: Option<ZombieReason>,
    /// The tree's CPU% (or the worker's own, when higher or the tree is unknown) at or
    /// above the busy threshold.
    pub busy: bool,
}

/// Everything `GET /api/metrics` returns.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Increments with every sample (1 for the first).
    pub sample: u64,
    /// When the sample was taken, milliseconds since the Unix epoch.
    pub sampled_unix_ms: u64,
    /// The idle time after which a worker is flagged.
    pub reap_ttl_seconds: f64,
    /// The CPU% at which a worker is flagged busy.
    pub busy_cpu_percent: f64,
    /// The server process.
    pub server: ServerMetrics,
    /// Its children, by process id.
    pub workers: Vec<WorkerMetrics>,
}
