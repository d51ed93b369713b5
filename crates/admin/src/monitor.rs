//! Sampling: the [`Sampler`] trait (OS readings of each worker and of its process tree),
//! [`CpuTracker`] (CPU% from cumulative CPU time deltas, one cached reading per pid, pruned
//! when processes go away) and [`Monitor`], which joins an [`ExecServer::snapshot`] with the
//! readings into [`Metrics`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracewire_exec::{ExecServer, ProcessState};
use tracewire_telemetry::ExportStats;

use crate::AdminConfig;

/// What the OS says about one process at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ProcessReading {
    /// CPU time used since it started (user + system), cumulative.
    pub cpu_time: Duration,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
    /// The process has exited but its parent has not reaped it (state `Z`).
    pub unreaped: bool,
}

impl ProcessReading {
    /// A live process's reading.
    pub fn new(cpu_time: Duration, rss_bytes: u64) -> Self {
        Self { cpu_time, rss_bytes, unreaped: false }
    }

    /// The same reading, marked exited but not reaped (or not).
    #[must_use]
    pub fn with_unreaped(mut self, unreaped: bool) -> Self {
        self.unreaped = unreaped;
        self
    }
}

/// What the OS says about a worker's process tree (the worker and every process below it)
/// at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TreeReading {
    /// CPU time of the tree, cumulative: each member's own (user + system) plus that of
    /// the children it has reaped (`cutime + cstime`), so the CPU of a child that ran and
    /// was reaped between two samples is counted (docs/admin.md).
    pub cpu_time: Duration,
    /// Resident set size summed over the members, in bytes.
    pub rss_bytes: u64,
    /// Live processes below the worker (exited-but-unreaped ones excluded).
    pub descendants: usize,
}

impl TreeReading {
    /// A tree's reading.
    pub fn new(cpu_time: Duration, rss_bytes: u64, descendants: usize) -> Self {
        Self { cpu_time, rss_bytes, descendants }
    }
}

/// One round of readings: the server's own process and the children asked for, and each
/// child's process tree. A pid the sampler could not read (it is gone) is simply absent.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Sample {
    /// When the readings were taken (CPU% divides by the time between two samples).
    pub at: Instant,
    /// The server process itself.
    pub server: Option<ProcessReading>,
    /// The children, by pid.
    pub processes: HashMap<u32, ProcessReading>,
    /// The children's process trees, by the child's pid (absent: not known).
    pub trees: HashMap<u32, TreeReading>,
}

impl Sample {
    /// An empty sample taken `at`.
    pub fn new(at: Instant) -> Self {
        Self { at, server: None, processes: HashMap::new(), trees: HashMap::new() }
    }

    /// With the reading of a child's process tree.
    #[must_use]
    pub fn with_tree(mut self, pid: u32, reading: TreeReading) -> Self {
        self.trees.insert(pid, reading);
        self
    }

    /// With the server's own reading.
    #[must_use]
    pub fn with_server(mut self, reading: ProcessReading) -> Self {
        self.server = Some(reading);
        self
    }

    /// With a child's reading.
    #[must_use]
    pub fn with_process(mut self, pid: u32, reading: ProcessReading) -> Self {
        self.processes.insert(pid, reading);
        self
    }
}

/// Reads CPU time, RSS and state of processes. The real one is [`SysinfoSampler`]; tests
/// inject their own readings. Called on a blocking thread, never on the request path.
pub trait Sampler: Send + 'static {
    /// Reads the server process and each of `pids` (the children held now), and the
    /// process tree of each of `pids`.
    fn sample(&mut self, pids: &[u32]) -> Sample;
}

/// The real sampler, reading `/proc`: the server's CPU time, RSS and state through
/// `sysinfo`; the children and their process trees from one scan of every
/// `/proc/PID/stat` (parent pid, state, `utime`, `stime`, `cutime`, `cstime`, RSS), taken
/// only when there are children.
#[derive(Debug, Default)]
pub struct SysinfoSampler {
    _private: (),
}

impl SysinfoSampler {
    /// A sampler for this process and its children.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Sampler for SysinfoSampler {
    fn sample(&mut self, pids: &[u32]) -> Sample {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};
        let own = std::process::id();
        // A fresh `System` each round: CPU% is computed from cumulative times by
        // `CpuTracker`, so sysinfo needs no history, and nothing of a process that went
        // away (its cached entry, its open /proc file) outlives the round.
        let mut system = System::new();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[Pid::from_u32(own)]),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory().without_tasks(),
        );
        let server = system.process(Pid::from_u32(own)).map(|p| {
            ProcessReading::new(Duration::from_millis(p.accumulated_cpu_time()), p.memory())
                .with_unreaped(p.status() == ProcessStatus::Zombie)
        });
        // The children and their trees from one scan: a tree and its worker are read at
        // the same instant, so the tree's figures always include the worker's.
        let (mut processes, mut trees) = (HashMap::new(), HashMap::new());
        if !pids.is_empty() {
            let (tick, page) = crate::proctree::units();
            let stats = crate::proctree::scan(std::path::Path::new("/proc"));
            let wanted: std::collections::HashSet<u32> = pids.iter().copied().collect();
            for s in stats.iter().filter(|s| wanted.contains(&s.pid)) {
                processes.insert(s.pid, crate::proctree::reading(s, tick, page));
            }
            trees = crate::proctree::trees(&stats, pids, tick, page);
        }
        Sample { at: Instant::now(), server, processes, trees }
    }
}

/// CPU% from cumulative CPU time: `100 * (cpu_now - cpu_then) / (at_now - at_then)`, where
/// *then* is the previous reading of the same pid. One cached reading per pid; pids that
/// are gone are pruned with [`CpuTracker::retain`].
///
/// ```
/// use std::time::{Duration, Instant};
/// use tracewire_admin::CpuTracker;
///
/// let mut cpu = CpuTracker::default();
/// let t0 = Instant::now();
/// assert_eq!(cpu.observe(42, t0, Duration::from_millis(100)), None); // first reading
/// let pct = cpu.observe(42, t0 + Duration::from_secs(2), Duration::from_millis(1100));
/// assert_eq!(pct, Some(50.0)); // 1 s of CPU in 2 s of wall time
/// cpu.retain(|pid| pid != 42); // pid 42 went away
/// assert!(cpu.is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CpuTracker {
    last: HashMap<u32, (Instant, Duration)>,
}

impl CpuTracker {
    /// Records `pid`'s cumulative CPU time at `at` and returns its CPU% since the previous
    /// reading (100 = one core busy; may exceed 100 for several threads). `None` for the
    /// first reading, when no time passed, or when the CPU time went backwards (the pid
    /// was reused by a new process: the reading restarts the history).
    pub fn observe(&mut self, pid: u32, at: Instant, cpu_time: Duration) -> Option<f64> {
        let previous = self.last.insert(pid, (at, cpu_time));
        let (then, cpu_then) = previous?;
        let wall = at.checked_duration_since(then)?;
        if wall.is_zero() {
            return None;
        }
        let used = cpu_time.checked_sub(cpu_then)?;
        Some(100.0 * used.as_secs_f64() / wall.as_secs_f64())
    }

    /// Keeps only the pids for which `alive` is true.
    pub fn retain(&mut self, mut alive: impl FnMut(u32) -> bool) {
        self.last.retain(|&pid, _| alive(pid));
    }

    /// The pids with a cached reading, ascending.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.last.keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    /// Pids cached.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// Whether no pid is cached.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

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

/// Joins the exec-server's snapshot with OS readings into [`Metrics`]. Each
/// [`Monitor::refresh`] is one sample; CPU% compares it with the previous one.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use tracewire_admin::{AdminConfig, Monitor, ProcessReading, Sample, Sampler};
/// use tracewire_exec::{ExecConfig, ExecServer};
///
/// /// The server burns a quarter of a core per second of samples.
/// struct Fake { t0: Instant, n: u32 }
/// impl Sampler for Fake {
///     fn sample(&mut self, _pids: &[u32]) -> Sample {
///         self.n += 1;
///         let reading = ProcessReading::new(Duration::from_millis(250) * self.n, 1 << 20);
///         Sample::new(self.t0 + Duration::from_secs(self.n.into())).with_server(reading)
///     }
/// }
///
/// let exec = Arc::new(ExecServer::new(ExecConfig::default()));
/// let mut monitor = Monitor::with_sampler(exec, AdminConfig::default(), Fake { t0: Instant::now(), n: 0 });
/// assert_eq!(monitor.refresh().server.cpu_percent, None);
/// let m = monitor.refresh();
/// assert_eq!((m.server.cpu_percent, m.server.rss_bytes), (Some(25.0), Some(1 << 20)));
/// ```
pub struct Monitor {
    exec: Arc<ExecServer>,
    sampler: Box<dyn Sampler>,
    cpu: CpuTracker,
    tree_cpu: CpuTracker,
    config: AdminConfig,
    started: Instant,
    export: Option<ExportStats>,
    samples: u64,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").field("cpu", &self.cpu).field("samples", &self.samples).finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor of `exec` reading the OS with [`SysinfoSampler`].
    pub fn new(exec: Arc<ExecServer>, config: AdminConfig) -> Self {
        Self::with_sampler(exec, config, SysinfoSampler::new())
    }

    /// A monitor of `exec` with its own sampler (tests inject readings).
    pub fn with_sampler(exec: Arc<ExecServer>, config: AdminConfig, sampler: impl Sampler) -> Self {
        Self {
            exec,
            sampler: Box::new(sampler),
            cpu: CpuTracker::default(),
            tree_cpu: CpuTracker::default(),
            config,
            started: Instant::now(),
            export: None,
            samples: 0,
        }
    }

    /// Also reports the telemetry pipeline's dropped spans
    /// (`tracewire_telemetry::TelemetryGuard::export_stats`).
    #[must_use]
    pub fn with_export_stats(mut self, stats: ExportStats) -> Self {
        self.export = Some(stats);
        self
    }

    /// The settings it flags workers with.
    pub fn config(&self) -> &AdminConfig {
        &self.config
    }

    /// The pids in the CPU-time cache (the server's own and the children seen last).
    pub fn cached_pids(&self) -> Vec<u32> {
        self.cpu.pids()
    }

    /// Takes one sample: the exec-server's snapshot, then the OS readings. Blocking (reads
    /// `/proc`): call it on a blocking thread.
    pub fn refresh(&mut self) -> Metrics {
        let snapshot = self.exec.snapshot();
        let pids: Vec<u32> = snapshot.processes.iter().map(|p| p.pid).filter(|&p| p != 0).collect();
        let sample = self.sampler.sample(&pids);
        let at = sample.at;
        self.samples += 1;
        let own = std::process::id();

        // Prune first: a pid that left the server's table, or that the OS no longer has,
        // loses its cached reading (a new process reusing it starts afresh).
        self.cpu.retain(|pid| pid == own || sample.processes.contains_key(&pid));
        self.tree_cpu.retain(|pid| sample.trees.contains_key(&pid));

        let server_cpu = sample.server.and_then(|r| self.cpu.observe(own, at, r.cpu_time));
        let server = ServerMetrics {
            pid: own,
            uptime_seconds: at.saturating_duration_since(self.started).as_secs_f64(),
            rss_bytes: sample.server.map(|r| r.rss_bytes),
            cpu_percent: server_cpu,
            tokio_tasks_alive: tokio::runtime::Handle::try_current().ok().map(|h| h.metrics().num_alive_tasks()),
            connections: snapshot.connections,
            subscribers: snapshot.subscribers,
            processes: snapshot.processes.len(),
            dispatch_queue_depth: snapshot.dispatch_queue_depth,
            delivery_queue_depth: snapshot.delivery_queue_depth,
            dropped_spans: self.export.as_ref().map(|s| s.snapshot().dropped()),
            store_backlog: snapshot.store_backlog,
        };

        let ttl = self.config.reap_ttl;
        let workers = snapshot
            .processes
            .iter()
            .map(|p| {
                let reading = sample.processes.get(&p.pid).copied();
                let cpu_percent = reading.and_then(|r| self.cpu.observe(p.pid, at, r.cpu_time));
                let tree = sample.trees.get(&p.pid).copied();
                let tree_cpu_percent = tree.and_then(|t| self.tree_cpu.observe(p.pid, at, t.cpu_time));
                let busiest = match (cpu_percent, tree_cpu_percent) {
                    (Some(own), Some(tree)) => Some(own.max(tree)),
                    (own, tree) => own.or(tree),
                };
                let idle = p.idle(at);
                let zombie_reason = if reading.is_some_and(|r| r.unreaped) {
                    Some(ZombieReason::Unreaped)
                } else if idle > ttl {
                    Some(ZombieReason::IdlePastTtl)
                } else {
                    None
                };
                WorkerMetrics {
                    process_id: p.process_id,
                    pid: p.pid,
                    argv: p.argv.clone(),
                    state: match p.state {
                        ProcessState::Exited => "exited",
                        _ => "running",
                    },
                    cpu_percent,
                    rss_bytes: reading.map(|r| r.rss_bytes),
                    tree_cpu_percent,
                    tree_rss_bytes: tree.map(|t| t.rss_bytes),
                    descendants: tree.map(|t| t.descendants),
                    started_unix_ms: p.started_unix_nanos / 1_000_000,
                    idle_seconds: idle.as_secs_f64(),
                    zombie: zombie_reason.is_some(),
                    zombie_reason,
                    busy: busiest.is_some_and(|c| c >= self.config.busy_cpu_percent),
                }
            })
            .collect();
        Metrics {
            sample: self.samples,
            sampled_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            reap_ttl_seconds: ttl.as_secs_f64(),
            busy_cpu_percent: self.config.busy_cpu_percent,
            server,
            workers,
        }
    }
}

/// A worker metric: name, help, value (left out when `None`).
type Series = (&'static str, &'static str, fn(&WorkerMetrics) -> Option<f64>);

/// Escapes a Prometheus label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    /// The same figures in the Prometheus text exposition format (version 0.0.4). Unknown
    /// values (`null` in JSON) are left out. Worker series are labelled with `process_id`,
    /// `pid` and `command` (`argv[0]` only: arguments may hold secrets).
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, kind: &str, value: Option<f64>| {
            if let Some(v) = value {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
            }
        };
        #[allow(clippy::cast_precision_loss)]
        let f = |v: usize| Some(v as f64);
        #[allow(clippy::cast_precision_loss)]
        let g = |v: Option<u64>| v.map(|v| v as f64);
        let s = &self.server;
        gauge(
            "tracewire_exec_server_uptime_seconds",
            "Seconds since the server started.",
            "gauge",
            Some(s.uptime_seconds),
        );
        gauge(
            "tracewire_exec_server_resident_memory_bytes",
            "Resident set size of the server.",
            "gauge",
            g(s.rss_bytes),
        );
        gauge(
            "tracewire_exec_server_cpu_percent",
            "CPU% of the server since the previous sample.",
            "gauge",
            s.cpu_percent,
        );
        gauge(
            "tracewire_exec_server_tokio_tasks_alive",
            "Tokio tasks alive in the server's runtime.",
            "gauge",
            s.tokio_tasks_alive.and_then(f),
        );
        gauge("tracewire_exec_server_connections", "Client connections open.", "gauge", f(s.connections));
        gauge("tracewire_exec_server_subscribers", "Connections receiving pushed events.", "gauge", f(s.subscribers));
        gauge("tracewire_exec_server_processes", "Child processes held.", "gauge", f(s.processes));
        gauge(
            "tracewire_exec_server_dispatch_queue_depth",
            "Requests waiting for a worker.",
            "gauge",
            f(s.dispatch_queue_depth),
        );
        gauge(
            "tracewire_exec_server_delivery_queue_depth",
            "Responses and notifications waiting for the transport.",
            "gauge",
            f(s.delivery_queue_depth),
        );
        gauge(
            "tracewire_exec_server_dropped_spans_total",
            "Spans the telemetry pipeline dropped.",
            "counter",
            g(s.dropped_spans),
        );
        gauge("tracewire_exec_server_store_backlog", "Records queued for the store.", "gauge", g(s.store_backlog));

        let workers: Vec<(String, &WorkerMetrics)> = self
            .workers
            .iter()
            .map(|w| {
                let command = w.argv.first().map_or("", String::as_str);
                (format!("process_id=\"{}\",pid=\"{}\",command=\"{}\"", w.process_id, w.pid, label(command)), w)
            })
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let series: [Series; 8] = [
            ("tracewire_exec_worker_cpu_percent", "CPU% of a child since the previous sample.", |w| w.cpu_percent),
            ("tracewire_exec_worker_resident_memory_bytes", "Resident set size of a child.", |w| {
                w.rss_bytes.map(|v| v as f64)
            }),
            (
                "tracewire_exec_worker_tree_cpu_percent",
                "CPU% of a child with its descendants (reaped ones included) since the previous sample.",
                |w| w.tree_cpu_percent,
            ),
            (
                "tracewire_exec_worker_tree_resident_memory_bytes",
                "Resident set size of a child and its live descendants.",
                |w| w.tree_rss_bytes.map(|v| v as f64),
            ),
            ("tracewire_exec_worker_descendants", "Live processes below a child.", |w| w.descendants.map(|v| v as f64)),
            ("tracewire_exec_worker_start_time_seconds", "Spawn time of a child, seconds since the Unix epoch.", |w| {
                Some(w.started_unix_ms as f64 / 1000.0)
            }),
            ("tracewire_exec_worker_idle_seconds", "Seconds since a child last wrote output.", |w| {
                Some(w.idle_seconds)
            }),
            ("tracewire_exec_worker_zombie", "1 when a child is exited-but-unreaped or idle past the reap TTL.", |w| {
                Some(if w.zombie { 1.0 } else { 0.0 })
            }),
        ];
        for (name, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, w) in &workers {
                if let Some(v) = value(w) {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        out
    }
}
