//! HEADER
use std::hint::black_box;
use std::sync::atomic::Ordering;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use tracewire_bench::fixtures::{
    CountingExporter, counting_pipeline, fastrace_reported, pipeline_dispatch, sdk_dispatch, sdk_provider,
};
use tracewire_benches::timed_in_rounds;
use tracewire_telemetry::{Config, stage_span};
use tracing::Dispatch;

/// Spans per round: well under tracewire's queue (65,536 here), so that no measured span is
/// shed (a shed span is cheaper and would flatter the figure). Each round is drained
/// (untimed) before the next.
const ROUND: u64 = 16_384;

/// Benchmarks `emit` (one span) under `dispatch`, in rounds with `drain` between them.
fn per_span(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, dispatch: &Dispatch, emit: fn(), drain: impl Fn()) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            tracing::dispatcher::with_default(dispatch, || timed_in_rounds(iters, ROUND, emit, &drain))
        });
    });
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stage_span");

    // tracewire: stage_span! through the bounded pipeline.
    let mut config = Config::default();
    config.batch.max_queue_size = 65_536;
    let (pipeline, delivered) = counting_pipeline(&config).expect("tracewire pipeline");
    let emit = || {
        let span = stage_span!(ProcessSpawn, process.pid = black_box(42u32));
        let _e = span.enter();
    };
    per_span(&mut g, "tracewire/stage_span", &pipeline_dispatch(&pipeline), emit, || {
        let _ = pipeline.provider().force_flush();
    });
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats).expect("pipeline shutdown");
    eprintln!("tracewire pipeline: {stats:?}");
    assert_eq!(stats.exported + stats.dropped(), stats.emitted, "every span is counted");
    assert_eq!(stats.exported, delivered.load(Ordering::Relaxed), "the exporter got what was exported");
    assert_eq!(stats.dropped(), 0, "no measured span was shed");

    // Peer: tracing + tracing-opentelemetry defaults with the SDK's batch processor.
    let provider = sdk_provider(CountingExporter::default());
    let emit = || {
        let span = tracing::info_span!("process.spawn", process.pid = black_box(42u32));
        let _e = span.enter();
    };
    per_span(&mut g, "tracing_opentelemetry_default/info_span", &sdk_dispatch(&provider), emit, || {
        let _ = provider.force_flush();
    });
    let _ = provider.shutdown();

    // Peer: fastrace, a root span with one property per iteration, counting reporter.
    let reported = fastrace_reported();
    let emit = || {
        let span = fastrace::Span::root("process.spawn", fastrace::collector::SpanContext::random())
            .with_property(|| ("process.pid", "42"));
        black_box(&span);
    };
    per_span(&mut g, "fastrace/root_span", &Dispatch::none(), emit, fastrace::flush);
    fastrace::flush();
    eprintln!("fastrace reported {} spans", reported.load(Ordering::Relaxed));
    g.finish();
}

tracewire_benches::main!(bench);
