//! Cost of one stage span on the emitting thread, created, entered, closed and exported
//! through a batch pipeline to a counting no-op exporter: tracewire's `stage_span!` with its
//! bounded processor, against tracing + tracing-opentelemetry (default layer settings, the
//! SDK's batch processor) and fastrace (a root span with one property, counting reporter),
//! in the same run. Spans are timed in rounds of 16,384 with an untimed flush between, so
//! that no round measures the previous one's backlog and tracewire sheds nothing (checked).
//!
//! Run: `cargo bench -p tracewire-benches --bench stage_spans`
//!
//! Latest results, 2026-11-23 (after tracewire's own span layer, issue [8/9]), `cargo bench
//! -p tracewire-benches` (criterion's estimate per span), opentelemetry 0.33.1,
//! tracing-opentelemetry 0.34.0, fastrace 0.7.17.
//! Machine: 2-core AMD EPYC VM, 23 GiB, rustc 1.95.0 (59807616e 2026-04-14), bench profile,
//! otherwise idle.
//!
//! | set-up                                                         | per span | delivered                         |
//! |----------------------------------------------------------------|----------|-----------------------------------|
//! | tracewire `stage_span!` + `Pipeline::layer` (bounded queue)    | 348 ns   | 7,925,391 of 7,925,391, 0 dropped |
//! | tracing + tracing-opentelemetry defaults + SDK batch processor | 2.14 us  | not counted by the SDK            |
//! | fastrace root span + property                                  | 614 ns   | 2,189,522 reported                |
//!
//! Ratio 6.2x against tracing-opentelemetry, 1.8x against fastrace in this run (fastrace's
//! interval was wide, 365-868 ns: its reporter thread shares the second core with ours).
//! `tracewire-bench compare` over six runs: 3.4-5.2x and 0.62-2.15x (docs/benchmarks.md).
//! Before the layer (spans through tracing-opentelemetry's span builder, on a busy
//! machine): 1.41x and 0.63x.

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
