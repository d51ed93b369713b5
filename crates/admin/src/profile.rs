//! CPU profiles of the server process with `pprof` (SIGPROF sampling; no perf counters
//! needed). One at a time: the profiler is process-wide.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::AdminError;

/// The output format of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The pprof protobuf (`go tool pprof`), uncompressed.
    Protobuf,
    /// A flame graph.
    Svg,
}

/// Samples per second (as Go's runtime/pprof: 100 Hz, but prime so it does not beat with
/// periodic work).
const FREQUENCY: i32 = 99;

/// Held while a profile runs; a second one is refused until it is dropped.
pub(crate) struct Busy(Arc<AtomicBool>);

impl Busy {
    pub(crate) fn acquire(flag: &Arc<AtomicBool>) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).ok().map(|_| Self(Arc::clone(flag)))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Profiles this process for `duration` (blocking: run it on a blocking thread) and
/// encodes the result. `busy` is released when this returns, whatever happens.
pub(crate) fn capture(busy: Busy, duration: Duration, format: Format) -> Result<Vec<u8>, AdminError> {
    let _busy = busy;
    let failed = |e: pprof::Error| AdminError::Profile(e.to_string());
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(failed)?;
    std::thread::sleep(duration);
    let report = guard.report().build().map_err(failed)?;
    drop(guard);
    match format {
        Format::Protobuf => {
            use pprof::protos::Message;
            Ok(report.pprof().map_err(failed)?.encode_to_vec())
        }
        Format::Svg => {
            let mut svg = Vec::new();
            report.flamegraph(&mut svg).map_err(failed)?;
            Ok(svg)
        }
    }
}
