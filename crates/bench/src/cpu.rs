//! The process's CPU time, for the rows that count CPU on every thread.
#![allow(unsafe_code)] // clock_gettime is a C function; one call with a local out-parameter.

use std::time::Duration;

/// CPU time this process has used so far (user + system, every thread, those that have
/// ended included), from `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`; zero if it fails.
pub(crate) fn process_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// CPU time of the calling thread.
    fn thread_time() -> Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
        assert_eq!(rc, 0);
        Duration::new(u64::try_from(ts.tv_sec).unwrap(), u32::try_from(ts.tv_nsec).unwrap())
    }

    #[test]
    fn process_time_counts_work_on_other_threads() {
        let t0 = super::process_time();
        // The other thread spins until it has used 30 ms of CPU itself, however long a
        // loaded machine makes that take.
        let spun = std::thread::spawn(|| {
            let mut x = 0u64;
            while thread_time() < Duration::from_millis(30) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            thread_time()
        })
        .join()
        .unwrap();
        // Its CPU time, ended before the second reading, is counted.
        assert!(super::process_time().saturating_sub(t0) >= spun);
    }
}
