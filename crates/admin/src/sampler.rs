//! The OS side: [`ProcessSampler`] (readings of the server, each worker and each worker's
//! process tree, as a [`Sample`]) and [`SysinfoSampler`], the real one, which reads
//! `/proc` (the tree scan and sums are in `proctree.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

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
pub trait ProcessSampler: Send + 'static {
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

impl ProcessSampler for SysinfoSampler {
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
