//! Stage spans on equal work, per span on the emitting thread: one trace (a root and 15
//! children, each with `process.pid` and the `tracewire.stage` attribute) exported as
//! `SpanData` to a counting exporter, through tracewire's `stage_span!` and bounded
//! pipeline; tracing + tracing-opentelemetry with the SDK's batch processor, tuned (no
//! location, threads, target, busy/idle; context activation off) and with the layer's
//! defaults; and fastrace `LocalSpan`s under a root reported through
//! `fastrace-opentelemetry`. Every queue holds 65,536 spans; spans are timed in rounds of
//! 1,024 traces with an untimed flush between, so that no round measures the previous one's
//! backlog and tracewire sheds nothing (checked). Total CPU per exported span (every
//! thread) is `tracewire-bench compare`'s (rows `stage_span.cpu.*`).
//!
//! Run: `cargo bench -p tracewire-benches --bench stage_spans`
//!
//! Latest results: `tracewire-bench compare` (full run of 2026-12-06, docs/benchmarks.md):
//! on the emitting thread 2.44x tracing-opentelemetry tuned (goal 3x, not met) and 3.63x
//! with its defaults; total CPU per exported span 1.96x the tuned peer (goal 2x, not met)
//! and 1.12x fastrace (goal 1x, met); the `tracing` registry alone, which both sides pay,
//! is 232 ns of each span's cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use tracewire_bench::fixtures::{
    CountingExporter, TRACE_SPANS, counting_pipeline, fastrace_reported, fastrace_trace, pipeline_dispatch,
    sdk_dispatch, sdk_dispatch_tuned, sdk_provider_with_queue, tracewire_trace, tracing_trace,
};
use tracewire_benches::timed_in_rounds;
use tracewire_telemetry::Config;
use tracing::Dispatch;

/// Traces per round: 16,384 spans, well under every queue (65,536 here), so that no
/// measured span is shed (a shed span is cheaper and would flatter the figure). Each round
/// is drained (untimed) before the next.
const ROUND: u64 = 1_024;
const QUEUE: usize = 65_536;

/// Benchmarks `emit` (one trace) under `dispatch`, in rounds with `drain` between them.
fn per_trace(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, dispatch: &Dispatch, emit: fn(), drain: impl Fn()) {
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            tracing::dispatcher::with_default(dispatch, || timed_in_rounds(iters, ROUND, emit, &drain))
        });
    });
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("stage_span_trace");
    g.throughput(Throughput::Elements(TRACE_SPANS));

    // tracewire: stage_span! through the bounded pipeline.
    let mut config = Config::default();
    config.batch.max_queue_size = QUEUE;
    let (pipeline, delivered) = counting_pipeline(&config).expect("tracewire pipeline");
    per_trace(&mut g, "tracewire/stage_span", &pipeline_dispatch(&pipeline), tracewire_trace, || {
        let _ = pipeline.provider().force_flush();
    });
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats).expect("pipeline shutdown");
    eprintln!("tracewire pipeline: {stats:?}");
    assert_eq!(stats.exported + stats.dropped(), stats.emitted, "every span is counted");
    assert_eq!(stats.exported, delivered.load(Ordering::Relaxed), "the exporter got what was exported");
    assert_eq!(stats.dropped(), 0, "no measured span was shed");

    // Peers: tracing + tracing-opentelemetry, tuned and with defaults, SDK batch processor.
    for (name, dispatch) in [
        ("tracing_opentelemetry_tuned/info_span", sdk_dispatch_tuned as fn(&_) -> Dispatch),
        ("tracing_opentelemetry_defaults/info_span", sdk_dispatch),
    ] {
        let exported = Arc::new(AtomicU64::new(0));
        let provider = sdk_provider_with_queue(CountingExporter(Arc::clone(&exported)), QUEUE);
        per_trace(&mut g, name, &dispatch(&provider), tracing_trace, || {
            let _ = provider.force_flush();
        });
        let _ = provider.shutdown();
        eprintln!("{name}: {} spans exported", exported.load(Ordering::Relaxed));
    }

    // Peer: fastrace LocalSpans under a root, through fastrace-opentelemetry.
    let reported = fastrace_reported();
    per_trace(&mut g, "fastrace/local_spans", &Dispatch::none(), fastrace_trace, fastrace::flush);
    fastrace::flush();
    eprintln!("fastrace exported {} spans", reported.load(Ordering::Relaxed));
    g.finish();
}

tracewire_benches::main!(bench);
