//! The export worker under overload: threads emitting flat out into a pipeline whose
//! exporter is slower than they are. Every span is accounted for exactly (`emitted ==
//! exported + dropped`, `exported` equal to what the exporter received, shed spans
//! included), and once the overload ends the worker sleeps again instead of keeping a core
//! busy.
// The spans under test exist only with instrumentation compiled in.
#![cfg(feature = "instrument")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tracewire_telemetry::{Config, Pipeline, stage_span};
use tracing_subscriber::layer::SubscriberExt;

/// Counts what it is given, taking 2 ms per batch: far slower than the emitting threads.
#[derive(Debug, Clone)]
struct Slow(Arc<AtomicU64>);

impl SpanExporter for Slow {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // The slowness under test.
        std::thread::sleep(Duration::from_millis(2));
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// User + system CPU time of this process's export worker thread, in clock ticks.
#[cfg(target_os = "linux")]
fn worker_cpu_ticks() -> u64 {
    let mut found = None;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == "tracewire-expor" {
            assert!(found.is_none(), "one export worker in this test process");
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
            // Fields after the command name (in parentheses): state is field 3, utime 14,
            // stime 15 (proc(5)).
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            found = Some(fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap());
        }
    }
    found.expect("the export worker thread")
}

#[test]
fn flat_out_overload_is_counted_exactly_and_the_worker_sleeps_once_it_ends() {
    let received = Arc::new(AtomicU64::new(0));
    let exporter = Slow(Arc::clone(&received));
    let mut config = Config::default();
    config.batch.max_queue_size = 256;
    config.batch.max_export_batch_size = 64;
    let pipeline = Pipeline::with_exporter(&config, Box::new(move || Ok(exporter))).unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(pipeline.layer()));
    let per_thread = 20_000u64;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let dispatch = dispatch.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    for i in 0..per_thread {
                        drop(stage_span!(TerminalDeliver, tracewire.bytes = i));
                    }
                });
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = pipeline.stats();
    let during = stats.snapshot();
    assert_eq!(during.emitted, 2 * per_thread, "{during:?}");
    assert!(during.dropped_queue_full > 0, "32 spans per ms exported cannot keep up: {during:?}");

    // The overload is over: the worker exports what is queued, then goes to sleep.
    assert!(
        tracewire_testkit::eventually(Duration::from_secs(20), || stats.snapshot().pending() == 0).is_ok(),
        "the queue drains: {:?}",
        stats.snapshot()
    );
    #[cfg(target_os = "linux")]
    {
        // The behaviour under test is what the worker does over time: a settling pause, then
        // its CPU over one idle second.
        std::thread::sleep(Duration::from_millis(50));
        let before = worker_cpu_ticks();
        std::thread::sleep(Duration::from_secs(1));
        let used = worker_cpu_ticks() - before;
        // A worker still polling the queue would take several hundred ms of that second.
        assert!(used <= 15, "the idle worker used {used} ticks of CPU in 1 s");
    }

    let end = pipeline.shutdown().unwrap();
    assert_eq!(end.emitted, 2 * per_thread);
    assert_eq!(end.exported + end.dropped(), end.emitted, "every span accounted for: {end:?}");
    assert_eq!(end.exported, received.load(Ordering::Relaxed));
    assert_eq!(end.pending(), 0);
}
