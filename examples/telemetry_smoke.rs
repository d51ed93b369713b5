//! Initialises tracewire telemetry from the `OTEL_*` environment, emits a small tree of
//! stage spans, prints the trace id, shuts down (bounded) and exits 0 — also when the
//! collector is down (the spans are then counted as dropped).
//!
//! ```text
//! OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
//!     cargo run --example telemetry_smoke
//! ```
//!
//! Tree: `exec` -> `rpc.dispatch` -> { `rpc.queue` (dequeued on another thread), `process.spawn` }.

use anyhow::Result;
use tracewire_telemetry::{Config, Queued, Stage, current_trace_id, init, stage_span};

fn main() -> Result<()> {
    let telemetry = init(Config::from_env()?)?;
    let trace_id = {
        let _exec = stage_span!(Exec, process.command = "smoke").entered();
        let trace_id = current_trace_id();
        {
            let _dispatch = stage_span!(RpcDispatch, rpc.system = "tracewire", rpc.method = "Start").entered();
            let queued = Queued::new(Stage::RpcQueue, "work item");
            let worker = std::thread::spawn(move || queued.into_inner());
            let _item = worker.join().map_err(|_| anyhow::anyhow!("worker thread panicked"))?;
            let _spawn = stage_span!(ProcessSpawn, process.executable.name = "true").entered();
        }
        trace_id
    };
    match trace_id {
        Some(id) => println!("trace_id={id}"),
        None => println!("trace_id=none (instrumentation compiled out or filtered)"),
    }
    // Shutdown is bounded; running out of time is reported, never a hang or a failure of
    // the program (what was not delivered is counted).
    let stats = match telemetry.shutdown() {
        Ok(stats) => stats,
        Err(tracewire_telemetry::Error::Shutdown { stats, reason, .. }) => {
            eprintln!("telemetry: shutdown deadline passed: {reason}");
            stats
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "telemetry: emitted={} exported={} dropped={} (queue full {}, export failed {}, shutdown {})",
        stats.emitted,
        stats.exported,
        stats.dropped(),
        stats.dropped_queue_full,
        stats.dropped_export_failed,
        stats.dropped_shutdown
    );
    Ok(())
}
