//! Process trees from `/proc`: every process's parent, state, CPU times and RSS
//! (`/proc/PID/stat`), and per worker the figures of the worker with its descendants.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use crate::sampler::{ProcessReading, TreeReading};

/// What `/proc/PID/stat` says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) pid: u32,
    pub(crate) ppid: u32,
    /// State `Z`: exited, not reaped yet.
    pub(crate) zombie: bool,
    /// `utime + stime`, clock ticks.
    pub(crate) own_ticks: u64,
    /// `cutime + cstime`: the CPU time of the children it has reaped (theirs and their own
    /// reaped children's, recursively), clock ticks.
    pub(crate) reaped_ticks: u64,
    /// Resident set size, pages.
    pub(crate) rss_pages: u64,
}

/// Parses one `/proc/PID/stat` line (proc(5)). The command name (field 2) is in
/// parentheses and may itself hold spaces and parentheses, so fields are counted after
/// the last `)`.
pub(crate) fn parse_stat(line: &str) -> Option<Stat> {
    let (head, rest) = line.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    // Field 3 (state) is index 0 here: field N is index N - 3.
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let num = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    // cutime and cstime are `long` in the kernel's format; never negative in practice.
    let signed = |field: usize| f.get(field - 3).and_then(|v| v.parse::<i64>().ok()).map(|v| v.max(0).unsigned_abs());
    Some(Stat {
        pid,
        ppid: u32::try_from(num(4)?).ok()?,
        zombie: *f.first()? == "Z",
        own_ticks: num(14)?.saturating_add(num(15)?),
        reaped_ticks: signed(16)?.saturating_add(signed(17)?),
        rss_pages: signed(24)?,
    })
}

/// Reads `/proc/*/stat` under `proc`: every process (thread-group leaders: threads are not
/// listed). Processes that go away during the scan are skipped.
pub(crate) fn scan(proc: &Path) -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir(proc) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|line| parse_stat(&line))
        .collect()
}

/// One process's own reading: `utime + stime`, RSS, state `Z`.
pub(crate) fn reading(s: &Stat, tick: Duration, page_bytes: u64) -> ProcessReading {
    let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX);
    ProcessReading::new(
        Duration::from_nanos(s.own_ticks.saturating_mul(tick_ns)),
        s.rss_pages.saturating_mul(page_bytes),
    )
    .with_unreaped(s.zombie)
}

/// The tree of each of `roots` that `stats` holds: the root and every process below it.
///
/// CPU time is the sum, over the members, of their own time and their reaped children's
/// (`utime + stime + cutime + cstime`): when a member reaps a child, the child's time moves
/// into the member's `cutime`/`cstime`, so the sum stays continuous across short-lived
/// children. RSS sums the live members'; `descendants` counts the members below the root
/// that have not exited (zombies excluded).
pub(crate) fn trees(stats: &[Stat], roots: &[u32], tick: Duration, page_bytes: u64) -> HashMap<u32, TreeReading> {
    let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX);
    let by_pid: HashMap<u32, &Stat> = stats.iter().map(|s| (s.pid, s)).collect();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for s in stats {
        if s.ppid != s.pid {
            children.entry(s.ppid).or_default().push(s.pid);
        }
    }
    let mut out = HashMap::new();
    for &root in roots {
        if !by_pid.contains_key(&root) {
            continue;
        }
        let mut seen: HashSet<u32> = HashSet::from([root]);
        let mut stack = vec![root];
        let (mut ticks, mut pages, mut descendants) = (0u64, 0u64, 0usize);
        while let Some(pid) = stack.pop() {
            let Some(s) = by_pid.get(&pid) else { continue };
            ticks = ticks.saturating_add(s.own_ticks).saturating_add(s.reaped_ticks);
            pages = pages.saturating_add(s.rss_pages);
            if pid != root && !s.zombie {
                descendants += 1;
            }
            for &c in children.get(&pid).map_or(&[][..], Vec::as_slice) {
                if seen.insert(c) {
                    stack.push(c);
                }
            }
        }
        let cpu_time = Duration::from_nanos(ticks.saturating_mul(tick_ns));
        out.insert(root, TreeReading::new(cpu_time, pages.saturating_mul(page_bytes), descendants));
    }
    out
}

/// The kernel's clock tick (`sysconf(_SC_CLK_TCK)`, 100 Hz on every common platform) and
/// page size, with the usual values when they cannot be read.
pub(crate) fn units() -> (Duration, u64) {
    use nix::unistd::{SysconfVar, sysconf};
    let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten().and_then(|v| u64::try_from(v).ok()).filter(|&v| v > 0);
    let page = sysconf(SysconfVar::PAGE_SIZE).ok().flatten().and_then(|v| u64::try_from(v).ok()).filter(|&v| v > 0);
    (Duration::from_nanos(1_000_000_000 / hz.unwrap_or(100)), page.unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: u32, ppid: u32, own: u64, reaped: u64, rss: u64, zombie: bool) -> Stat {
        Stat { pid, ppid, zombie, own_ticks: own, reaped_ticks: reaped, rss_pages: rss }
    }

    #[test]
    fn parses_proc_pid_stat_with_a_command_holding_spaces_and_parentheses() {
        // proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime priority nice num_threads itrealvalue
        // starttime vsize rss ...
        let line = "4242 (a b) (c)) S 4000 4242 4242 0 -1 4194304 100 0 0 0 7 3 250 50 20 0 1 0 123 1000 33 18446744073709551615";
        assert_eq!(parse_stat(line), Some(stat(4242, 4000, 10, 300, 33, false)));
        let zombie = "7 (sh) Z 6 7 7 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(zombie), Some(stat(7, 6, 2, 0, 0, true)));
        for bad in ["", "12 sh S 1", "12 (sh) S", "x (sh) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21"] {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tree_sums_members_and_their_reaped_children_and_counts_live_descendants() {
        // 10 -> 11 -> 12 (zombie), 10 -> 13; 20 is another tree; 1 is init.
        let stats = [
            stat(1, 0, 1000, 5000, 100, false),
            stat(10, 1, 1, 40, 10, false),
            stat(11, 10, 5, 20, 20, false),
            stat(12, 11, 3, 0, 0, true),
            stat(13, 10, 2, 0, 30, false),
            stat(20, 1, 7, 0, 40, false),
        ];
        let t = trees(&stats, &[10, 20, 99], Duration::from_millis(10), 4096);
        let ten = t[&10];
        assert_eq!(ten.cpu_time, Duration::from_millis(10 * (1 + 40 + 5 + 20 + 3 + 2)));
        assert_eq!((ten.rss_bytes, ten.descendants), (60 * 4096, 2), "the zombie is not live");
        assert_eq!((t[&20].descendants, t[&20].rss_bytes), (0, 40 * 4096));
        assert!(!t.contains_key(&99), "a pid the scan does not have has no tree");
    }

    #[test]
    fn a_process_reading_is_its_own_time_rss_and_state() {
        let r = reading(&stat(3, 1, 250, 9000, 5, true), Duration::from_millis(10), 4096);
        assert_eq!(r, ProcessReading::new(Duration::from_millis(2500), 5 * 4096).with_unreaped(true));
    }

    #[test]
    fn a_parent_cycle_does_not_loop() {
        let stats = [stat(5, 6, 1, 0, 1, false), stat(6, 5, 1, 0, 1, false)];
        let t = trees(&stats, &[5], Duration::from_millis(10), 1);
        assert_eq!((t[&5].descendants, t[&5].cpu_time), (1, Duration::from_millis(20)));
    }

    #[test]
    fn this_process_is_in_the_scan() {
        let own = std::process::id();
        let all = scan(Path::new("/proc"));
        let me = all.iter().find(|s| s.pid == own).expect("this process in /proc");
        assert!(!me.zombie && me.rss_pages > 0);
        let (tick, page) = units();
        assert!(tick > Duration::ZERO && page >= 4096, "{tick:?} {page}");
    }
}
