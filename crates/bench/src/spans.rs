//! Stage spans, on equal work: every side emits the same trace shape (a root span entered,
//! 15 child spans entered and closed under it, each with `process.pid` and the
//! `tracewire.stage` attribute) and every side ends with OpenTelemetry `SpanData` handed to
//! the same counting exporter:
//!
//! - tracewire: `stage_span!` through `Pipeline::layer` and its bounded processor (the stage
//!   attribute is added on the export worker);
//! - tracing + tracing-opentelemetry 0.34 with the SDK's batch processor, *tuned* (no source
//!   location, thread, target or busy/idle attributes, context activation off, as
//!   tracewire's defaults) and with the layer's *defaults*;
//! - fastrace: `LocalSpan`s under a root span, reported through `fastrace-opentelemetry`.
//!
//! And the floor of both `tracing` sides: the same spans through a `Registry` with a layer
//! that does nothing, in the notes (what each side pays above it, and the most any layer on
//! the registry could gain).
//!
//! Two measures per side, from the same rounds: nanoseconds per span on the emitting thread,
//! and total CPU per exported span (process CPU time over the round and its flush, every
//! thread, divided by the spans the exporter got). And the emit path with the collector
//! down: the same real OTLP/gRPC exporter on both sides, pointed at the same closed port.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracewire_telemetry::{Config, ExportSnapshot, Pipeline, stage_span};

use crate::fixtures::{
    CountingExporter, TRACE_SPANS as GROUP, closed_port, collector_down_pipeline, collector_down_sdk_provider,
    counting_pipeline, fastrace_reported, fastrace_trace, pipeline_dispatch, process_cpu, runtime, sdk_dispatch,
    sdk_dispatch_tuned, sdk_provider_with_queue, shutdown_reading_sdk_drops, tracewire_trace, tracing_deliver_span,
    tracing_trace,
};
use crate::{Row, Scale, percentile};

/// Export queue of every side (tracewire's and the SDK's batch processor alike): larger than
/// a round, so that no measured span is shed or dropped (checked for tracewire, counted for
/// the SDK).
const QUEUE: usize = 65_536;

/// Traces per round: 49,152 spans, under every side's queue; rounds are flushed in between.
const TRACES: u64 = 3_072;

#[allow(clippy::cast_precision_loss)]
fn per(d: Duration, n: u64) -> f64 {
    if n == 0 { f64::INFINITY } else { d.as_nanos() as f64 / n as f64 }
}

/// One side of the stage-span comparison.
struct Side {
    /// The subscriber spans are emitted under (none for fastrace).
    dispatch: tracing::Dispatch,
    /// Emits one trace of [`GROUP`] spans.
    emit: fn(),
    /// Waits until everything emitted so far is exported.
    flush: Box<dyn Fn()>,
    /// Spans the exporter has been given so far.
    exported: Box<dyn Fn() -> u64>,
}

/// What one round of a side measured.
#[derive(Clone, Copy)]
struct Measured {
    /// Nanoseconds per span on the emitting thread.
    emit_ns: f64,
    /// Process CPU nanoseconds (every thread) per span exported, flush included.
    cpu_ns: f64,
}

impl Side {
    /// A side whose spans end in a [`CountingExporter`] counting into `count`, behind
    /// `provider`: a flush is the provider's `force_flush`.
    fn counted(dispatch: tracing::Dispatch, emit: fn(), provider: SdkTracerProvider, count: Arc<AtomicU64>) -> Self {
        Self {
            dispatch,
            emit,
            flush: Box::new(move || {
                let _ = provider.force_flush();
            }),
            exported: Box::new(move || count.load(Ordering::Relaxed)),
        }
    }

    fn round(&self, traces: u64) -> Measured {
        let e0 = (self.exported)();
        let cpu0 = process_cpu();
        let t0 = Instant::now();
        tracing::dispatcher::with_default(&self.dispatch, || {
            for _ in 0..traces {
                (self.emit)();
            }
        });
        let emit = t0.elapsed();
        (self.flush)();
        let cpu = process_cpu().saturating_sub(cpu0);
        let exported = (self.exported)() - e0;
        Measured { emit_ns: per(emit, traces * GROUP), cpu_ns: per(cpu, exported) }
    }
}

/// tracewire's pipeline to a counting exporter, with a queue of [`QUEUE`].
fn tracewire_side(context_activation: bool) -> Result<(Side, Pipeline, Arc<AtomicU64>)> {
    let mut config = Config::default();
    config.batch.max_queue_size = QUEUE;
    config.context_activation = context_activation;
    let (pipeline, delivered) = counting_pipeline(&config)?;
    let provider = pipeline.provider().clone();
    let side = Side::counted(pipeline_dispatch(&pipeline), tracewire_trace, provider, Arc::clone(&delivered));
    Ok((side, pipeline, delivered))
}

/// The SDK's batch processor (queue of [`QUEUE`], other settings default) to a counting
/// exporter, under `dispatch(provider)`.
fn sdk_side(dispatch: fn(&SdkTracerProvider) -> tracing::Dispatch) -> (Side, SdkTracerProvider) {
    let delivered = Arc::new(AtomicU64::new(0));
    let provider = sdk_provider_with_queue(CountingExporter(Arc::clone(&delivered)), QUEUE);
    let side = Side::counted(dispatch(&provider), tracing_trace, provider.clone(), delivered);
    (side, provider)
}

/// The floor both `tracing` sides pay: the same trace through a `tracing_subscriber`
/// `Registry` with a layer that does nothing (no record, no export). Its CPU per span is
/// the emitting thread's alone (there is no worker).
fn registry_floor_side() -> Side {
    struct Nothing;
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Nothing {}
    use tracing_subscriber::layer::SubscriberExt as _;
    let spans = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&spans);
    Side {
        dispatch: tracing::Dispatch::new(tracing_subscriber::registry().with(Nothing)),
        emit: tracewire_trace,
        flush: Box::new(move || {
            spans.fetch_add(TRACES * GROUP, Ordering::Relaxed);
        }),
        exported: Box::new(move || count.load(Ordering::Relaxed)),
    }
}

fn fastrace_side() -> Side {
    let reported = fastrace_reported();
    Side {
        dispatch: tracing::Dispatch::none(),
        emit: fastrace_trace,
        flush: Box::new(fastrace::flush),
        exported: Box::new(|| reported.load(Ordering::Relaxed)),
    }
}

/// Shuts tracewire's pipeline down; fails if a span went uncounted, or was shed (a shed
/// span is cheaper and would flatter the figures).
fn finish(pipeline: &Pipeline, delivered: &AtomicU64) -> Result<ExportSnapshot> {
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats)?;
    if stats.exported + stats.dropped() != stats.emitted || stats.exported != delivered.load(Ordering::Relaxed) {
        bail!("tracewire lost spans without counting them: {stats:?}");
    }
    if stats.dropped() > 0 {
        bail!("spans were shed during the measurement, which would flatter it: {stats:?}");
    }
    Ok(stats)
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let traces = TRACES;
    let rounds: u64 = scale.pick(5, 12);

    let (ours, ours_pipeline, ours_delivered) = tracewire_side(Config::default().context_activation)?;
    // With TRACEWIRE_CONTEXT_ACTIVATION=true: in the note, not the ratio.
    let (activation, act_pipeline, act_delivered) = tracewire_side(true)?;
    let (tuned, tuned_provider) = sdk_side(sdk_dispatch_tuned);
    let (defaults, defaults_provider) = sdk_side(sdk_dispatch);
    let fast = fastrace_side();
    fastrace::flush();
    let floor = registry_floor_side();

    // Rounds interleave the six set-ups, best of each (emit and CPU separately): every one
    // meets the same machine states.
    let sides = [&ours, &activation, &tuned, &defaults, &fast, &floor];
    let mut best = [Measured { emit_ns: f64::INFINITY, cpu_ns: f64::INFINITY }; 6];
    for _ in 0..rounds {
        for (b, side) in best.iter_mut().zip(sides) {
            let m = side.round(traces);
            b.emit_ns = b.emit_ns.min(m.emit_ns);
            b.cpu_ns = b.cpu_ns.min(m.cpu_ns);
        }
    }
    let [ours_m, act_m, tuned_m, defaults_m, fast_m, floor_m] = best;
    let stats = finish(&ours_pipeline, &ours_delivered)?;
    finish(&act_pipeline, &act_delivered)?;
    let tuned_drops = shutdown_reading_sdk_drops(&tuned_provider, Duration::from_secs(10)).unwrap_or(0);
    let defaults_drops = shutdown_reading_sdk_drops(&defaults_provider, Duration::from_secs(10)).unwrap_or(0);
    let fast_exported = (fast.exported)();

    let total = traces * GROUP * rounds;
    let shape = "traces of a root + 15 children, process.pid and tracewire.stage on each, ending as SpanData in a counting exporter";
    // What both `tracing` sides pay before their layer does anything, and the most a layer
    // on the registry could gain against the peer.
    let floor = |base: f64, ours: f64, peer: f64, what: &str| {
        format!(
            "registry floor (the same spans through a Registry with a layer that does nothing): {base:.0} {what} per span; above it tracewire {:.0}, peer {:.0} ({:.2}x); at most {:.2}x reachable by a layer on the registry",
            ours - base,
            peer - base,
            (peer - base) / (ours - base),
            peer / base,
        )
    };
    Ok(vec![
        Row::lower_is_better(
            "stage_span.emit.vs_tracing_opentelemetry_tuned",
            ours_m.emit_ns,
            tuned_m.emit_ns,
            "ns/span",
            3.0,
            &format!(
                "emitting thread only; {shape}; peer: tracing-opentelemetry 0.34 without location, threads, target, busy/idle, context activation off, SDK batch (queue {QUEUE}; {tuned_drops} dropped, its own count); tracewire delivered {} of {} (none shed); {:.0} ns with TRACEWIRE_CONTEXT_ACTIVATION=true; {}",
                stats.exported,
                stats.emitted,
                act_m.emit_ns,
                floor(floor_m.emit_ns, ours_m.emit_ns, tuned_m.emit_ns, "ns on the emitting thread")
            ),
        ),
        {
            let mut r = Row::lower_is_better(
                "stage_span.emit.vs_tracing_opentelemetry_defaults",
                ours_m.emit_ns,
                defaults_m.emit_ns,
                "ns/span",
                0.0,
                &format!(
                    "no goal: what a user gets by default (location, thread id/name, target, busy/idle, context activation); emitting thread only; {shape}; {defaults_drops} dropped (SDK's count); total CPU {:.0} ns per exported span",
                    defaults_m.cpu_ns
                ),
            );
            r.goal = "none".into();
            r.met = true;
            r
        },
        Row::lower_is_better(
            "stage_span.cpu.vs_tracing_opentelemetry_tuned",
            ours_m.cpu_ns,
            tuned_m.cpu_ns,
            "cpu ns/span",
            2.0,
            &format!(
                "process CPU time (every thread: emitting, export worker / batch thread) per exported span; {shape}; peer tuned as in the emit row; {}",
                floor(floor_m.cpu_ns, ours_m.cpu_ns, tuned_m.cpu_ns, "CPU ns")
            ),
        ),
        Row::lower_is_better(
            "stage_span.cpu.vs_fastrace_local",
            ours_m.cpu_ns,
            fast_m.cpu_ns,
            "cpu ns/span",
            1.0,
            &format!(
                "process CPU time per exported span, every thread; fastrace {} LocalSpans under a root, reported through fastrace-opentelemetry into the same counting exporter ({fast_exported} of {total} exported in all); fastrace emit {:.0} ns/span on the emitting thread; the registry floor alone: {:.0} CPU ns per span",
                GROUP - 1,
                fast_m.emit_ns,
                floor_m.cpu_ns
            ),
        ),
    ])
}

/// Per-span latencies of `n` spans emitted one by one under `dispatch`.
fn latencies(dispatch: &tracing::Dispatch, n: u64, ours: bool, out: &mut Vec<Duration>) {
    tracing::dispatcher::with_default(dispatch, || {
        for i in 0..n {
            let t0 = Instant::now();
            if ours {
                let _s = stage_span!(TerminalDeliver, tracewire.bytes = i).entered();
            } else {
                let _s = tracing_deliver_span(i).entered();
            }
            out.push(t0.elapsed());
        }
    });
}

pub(crate) fn run_collector_down(scale: Scale) -> Result<Vec<Row>> {
    let per_round: u64 = 20_000;
    let rounds: u64 = scale.pick(5, 10);
    let port = closed_port()?;
    // Both: the real OTLP/gRPC exporter (opentelemetry-otlp, tonic), same endpoint, same
    // timeout. tracewire: its pipeline; peer: the SDK's batch processor, tuned layer.
    let pipeline = collector_down_pipeline(port)?;
    let ours_dispatch = pipeline_dispatch(&pipeline);
    let rt = runtime()?;
    let provider = collector_down_sdk_provider(&rt, port)?;
    let peer_dispatch = sdk_dispatch_tuned(&provider);
    // Warm-up, then rounds interleaved.
    let mut scratch = Vec::with_capacity(10_000);
    latencies(&ours_dispatch, 10_000, true, &mut scratch);
    latencies(&peer_dispatch, 10_000, false, &mut scratch);
    let cap = usize::try_from(per_round * rounds)?;
    let (mut ours, mut peer) = (Vec::with_capacity(cap), Vec::with_capacity(cap));
    for _ in 0..rounds {
        latencies(&ours_dispatch, per_round, true, &mut ours);
        latencies(&peer_dispatch, per_round, false, &mut peer);
    }
    drop(ours_dispatch);
    drop(peer_dispatch);
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats)?;
    if stats.exported + stats.dropped() != stats.emitted {
        bail!("tracewire lost spans without counting them: {stats:?}");
    }
    let peer_drops = shutdown_reading_sdk_drops(&provider, Duration::from_secs(2));
    drop(rt);
    let peer_emitted = (per_round * rounds) + 10_000;
    let ns = |d: Duration| d.as_secs_f64() * 1e9;
    let (o50, o99) = (ns(percentile(&mut ours, 500)), ns(percentile(&mut ours, 990)));
    let (p50, p99) = (ns(percentile(&mut peer, 500)), ns(percentile(&mut peer, 990)));
    let mut row = Row::lower_is_better(
        "emit_collector_down.p99",
        o99,
        p99,
        "ns/span",
        5.0,
        &format!(
            "both: opentelemetry-otlp gRPC exporter to the same closed port, {rounds} interleaved rounds of {per_round}; peer: tracing-opentelemetry (tuned) + SDK batch; p50 {o50:.0} vs {p50:.0} ns; tracewire: {} emitted, {} shed at start (queue full), {} export failed, {} at shutdown, {} exported; SDK: {peer_emitted} emitted, {} dropped at a full queue (its own count; spans whose export failed are not counted), 0 exported",
            stats.emitted,
            stats.dropped_queue_full,
            stats.dropped_export_failed,
            stats.dropped_shutdown,
            stats.exported,
            peer_drops.map_or_else(|| "none logged".to_owned(), |d| d.to_string()),
        ),
    );
    row.goal = "p99 < 1000 ns, >= 5x".into();
    row.met = o99 < 1000.0 && row.ratio >= 5.0;
    Ok(vec![row])
}
