//! HEADER
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
