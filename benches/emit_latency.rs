//! Emit-path latency per stage span while the collector is down: the application must
//! never wait for telemetry. Exports go over OTLP/gRPC to a loopback port where nothing
//! listens; every span is timed from creation to close, and the counters must account for
//! every span (exported + dropped == emitted).
//!
//! Run: `cargo bench -p tracewire-benches --bench emit_latency`
//!
//! Latest results, 2026-11-23, 2-core AMD EPYC VM, rustc 1.95 (200,000 spans after 10,000
//! warm-up; queue 2048, batch 512):
//!
//! | run | p50    | p99    | p99.9  | emitted | exported | dropped (queue full / export failed / shutdown) |
//! |-----|--------|--------|--------|---------|----------|--------------------------------------------------|
//! | 1   | 201 ns | 270 ns | 381 ns | 210,000 | 0        | 210,000 (207,440 / 1,536 / 1,024)                |
//!
//! Goal p99 < 1 us: met. While the queue is full, spans are shed at start (one queue check,
//! counted as dropped) instead of being built and dropped at their end; before shedding
//! existed the same run measured p50 0.83-1.2 us, p99 1.2-1.5 us.

use std::time::{Duration, Instant};

use tracewire_telemetry::{Config, Pipeline, stage_span};
use tracing_subscriber::layer::SubscriberExt;

const SPANS: usize = 200_000;

fn spans() -> usize {
    std::env::var("EMIT_SPANS").ok().and_then(|v| v.parse().ok()).unwrap_or(SPANS)
}

/// The `per_mille`-th value of a sorted sample (nearest rank).
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    sorted[(sorted.len() - 1) * per_mille / 1000]
}

fn main() {
    // A port with nothing listening: connection refused on every export.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = Config::from_vars([
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
    ])
    .unwrap();
    let pipeline = Pipeline::new(&config).unwrap();
    let layer = pipeline.layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    let mut samples = Vec::with_capacity(spans());
    tracing::subscriber::with_default(subscriber, || {
        // Warm up.
        for _ in 0..10_000 {
            let _s = stage_span!(TerminalDeliver).entered();
        }
        for i in 0..spans() {
            let t0 = Instant::now();
            {
                let _s = stage_span!(TerminalDeliver, tracewire.bytes = i as u64).entered();
            }
            samples.push(t0.elapsed());
        }
    });
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats).unwrap();
    samples.sort_unstable();
    let (p50, p99, p999, max) =
        (percentile(&samples, 500), percentile(&samples, 990), percentile(&samples, 999), samples[samples.len() - 1]);
    println!("emit path with the collector down ({} spans, OTLP/gRPC to a closed port):", spans());
    println!("  p50 {p50:?}  p99 {p99:?}  p99.9 {p999:?}  max {max:?}");
    println!(
        "  emitted {}  exported {}  dropped {} (queue full {}, export failed {}, shutdown {})",
        stats.emitted,
        stats.exported,
        stats.dropped(),
        stats.dropped_queue_full,
        stats.dropped_export_failed,
        stats.dropped_shutdown
    );
    assert_eq!(stats.emitted, (spans() + 10_000) as u64, "every span reached the pipeline");
    assert_eq!(stats.exported + stats.dropped(), stats.emitted, "every span is accounted for");
    println!("  goal p99 < 1us: {}", if p99 < Duration::from_micros(1) { "met" } else { "NOT met" });
}
