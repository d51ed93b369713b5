//! Emit-path cost per stage span while the collector is down: the application must never
//! wait for telemetry. tracewire's pipeline exports over OTLP/gRPC to a loopback port where
//! nothing listens; the peer is tracing-opentelemetry (defaults, SDK batch processor) with
//! an exporter whose every export fails to connect. After the run every tracewire span must
//! be accounted for (exported + dropped == emitted; checked).
//!
//! Run: `cargo bench -p tracewire-benches --bench emit_latency`
//!
//! Latest results, 2026-11-23 (after tracewire's own span layer), `cargo bench -p
//! tracewire-benches` (criterion's estimate per span, create + enter + close).
//! Machine: 2-core AMD EPYC VM, 23 GiB, rustc 1.95.0 (59807616e 2026-04-14), bench profile,
//! otherwise idle.
//!
//! | set-up                                              | per span | spans counted                                              |
//! |-----------------------------------------------------|----------|------------------------------------------------------------|
//! | tracewire, OTLP/gRPC to a closed port               | 117 ns   | 20,946,313 emitted = 20,942,217 shed at start (queue full) + 3,072 export failed + 1,024 at shutdown |
//! | tracing-opentelemetry + SDK batch, exports failing  | 1.83 us  | not counted by the SDK                                     |
//!
//! Ratio 15.6x. While the queue is full tracewire sheds a span at its start (no record,
//! counted as dropped; the registry still makes the span, so a log layer keeps seeing it:
//! 32 ns before, when shedding disabled the span for the whole subscriber) instead of
//! building it and dropping it at its end. Criterion reports means, not tails: the p99 goal
//! (< 1 us) is `tracewire-bench compare`'s row `emit_collector_down.p99` (190 ns on the idle
//! machine, docs/benchmarks.md).

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use tracewire_bench::fixtures::{
    DownExporter, closed_port, collector_down_pipeline, pipeline_dispatch, sdk_dispatch, sdk_provider,
};
use tracewire_telemetry::stage_span;
use tracing::Dispatch;

/// Benchmarks `emit` (one span, given a running count) under `dispatch`.
fn per_span(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, dispatch: &Dispatch, emit: fn(u64)) {
    tracing::dispatcher::with_default(dispatch, || {
        let mut i = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                emit(i);
            });
        });
    });
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("emit_collector_down");
    // A port with nothing listening: connection refused on every export.
    let port = closed_port().expect("a loopback port");

    // tracewire: the real OTLP/gRPC exporter, pointed at the closed port.
    let pipeline = collector_down_pipeline(port).expect("tracewire pipeline");
    per_span(&mut g, "tracewire/stage_span", &pipeline_dispatch(&pipeline), |i| {
        let _s = stage_span!(TerminalDeliver, tracewire.bytes = i).entered();
    });
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats).expect("pipeline shutdown");
    eprintln!("tracewire pipeline, collector down: {stats:?}");
    assert_eq!(stats.exported + stats.dropped(), stats.emitted, "every span is counted");

    // Peer: tracing-opentelemetry defaults, SDK batch processor, every export failing.
    let provider = sdk_provider(DownExporter(port));
    per_span(&mut g, "tracing_opentelemetry_default/info_span", &sdk_dispatch(&provider), |i| {
        let _s = tracing::info_span!("terminal.deliver", tracewire.bytes = i).entered();
    });
    let _ = provider.shutdown_with_timeout(Duration::from_secs(2));
    g.finish();
}

tracewire_benches::main!(bench);
