//! [`Monitor`]: each [`Monitor::refresh`] joins an [`ExecServer::snapshot`] with a
//! [`ProcessSampler`]'s readings into [`Metrics`]; [`CpuTracker`] turns cumulative CPU
//! times into CPU% (one cached reading per pid, pruned when processes go away).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracewire_exec::{ExecServer, ProcessState};
use tracewire_telemetry::ExportStats;

use crate::AdminConfig;
use crate::metrics::{Metrics, ServerMetrics, WorkerMetrics, ZombieReason};
use crate::sampler::{ProcessSampler, SysinfoSampler};

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

/// Joins the exec-server's snapshot with OS readings into [`Metrics`]. Each
/// [`Monitor::refresh`] is one sample; CPU% compares it with the previous one.
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, Instant};
/// use tracewire_admin::{AdminConfig, Monitor, ProcessReading, ProcessSampler, Sample};
/// use tracewire_exec::{ExecConfig, ExecServer};
///
/// /// The server burns a quarter of a core per second of samples.
/// struct Fake { t0: Instant, n: u32 }
/// impl ProcessSampler for Fake {
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
    sampler: Box<dyn ProcessSampler>,
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
    pub fn with_sampler(exec: Arc<ExecServer>, config: AdminConfig, sampler: impl ProcessSampler) -> Self {
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
