//! Span delivery under load, two threads emitting: at a steady 200k spans/s in total, and
//! flat out. tracewire's bounded pipeline (defaults) against tracing-opentelemetry (tuned
//! as tracewire's layer: the same attributes) with the SDK's default batch processor, and
//! fastrace (root spans through `fastrace-opentelemetry`); each delivering to a counting
//! exporter. The rows compare the share delivered on both sides; the drops each side counts
//! itself are read (tracewire's `ExportSnapshot`, the SDK's `dropped_span_count`, logged at
//! shutdown with its `internal-logs` feature) and shown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tracewire_telemetry::{Config, stage_span};

use crate::fixtures::{
    CountingExporter, counting_pipeline, fastrace_reported, pipeline_dispatch, sdk_dispatch_tuned, sdk_provider,
    shutdown_reading_sdk_drops, tracing_deliver_span,
};
use crate::{Row, Scale};

const THREADS: u64 = 2;

/// How spans are emitted: `rate` per second per thread for `duration`, or `count` per
/// thread as fast as possible.
#[derive(Clone, Copy)]
enum Load {
    Steady { per_thread_per_s: u64, duration: Duration },
    FlatOut { per_thread: u64 },
}

/// Runs `emit` on two threads under `load`; returns how many spans were emitted.
fn drive(load: Load, emit: impl Fn() + Send + Sync + 'static) -> u64 {
    let emit = Arc::new(emit);
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let emit = Arc::clone(&emit);
            std::thread::spawn(move || match load {
                Load::FlatOut { per_thread } => {
                    for _ in 0..per_thread {
                        emit();
                    }
                    per_thread
                }
                Load::Steady { per_thread_per_s, duration } => {
                    // 1 ms ticks, each emitting its share.
                    let per_tick = per_thread_per_s / 1000;
                    let t0 = Instant::now();
                    let mut sent = 0;
                    let mut tick = 0u32;
                    while t0.elapsed() < duration {
                        for _ in 0..per_tick {
                            emit();
                        }
                        sent += per_tick;
                        tick += 1;
                        let next = t0 + Duration::from_millis(u64::from(tick));
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    sent
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
}

struct Outcome {
    emitted: u64,
    delivered: u64,
    /// Drops the system counted (None: it does not count them).
    counted_drops: Option<u64>,
}

fn tracewire(load: Load) -> Result<Outcome> {
    let (pipeline, delivered) = counting_pipeline(&Config::default())?;
    let dispatch = pipeline_dispatch(&pipeline);
    let emitted = drive(load, move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let _s = stage_span!(TerminalDeliver, tracewire.bytes = 42u64).entered();
        });
    });
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats)?;
    // The pipeline's own books must agree with the exporter and the emitters.
    anyhow::ensure!(stats.emitted == emitted, "pipeline saw {} of {emitted} spans", stats.emitted);
    anyhow::ensure!(stats.exported == delivered.load(Ordering::Relaxed), "exporter count differs: {stats:?}");
    Ok(Outcome { emitted, delivered: stats.exported, counted_drops: Some(stats.dropped()) })
}

fn tracing_otel(load: Load) -> Outcome {
    let delivered = Arc::new(AtomicU64::new(0));
    let provider = sdk_provider(CountingExporter(Arc::clone(&delivered)));
    let dispatch = sdk_dispatch_tuned(&provider);
    let emitted = drive(load, move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let _s = tracing_deliver_span(42u64).entered();
        });
    });
    let dropped = shutdown_reading_sdk_drops(&provider, Duration::from_secs(10)).unwrap_or(0);
    Outcome { emitted, delivered: delivered.load(Ordering::Relaxed), counted_drops: Some(dropped) }
}

fn fastrace_run(load: Load) -> Outcome {
    let reported = fastrace_reported();
    fastrace::flush();
    let before = reported.load(Ordering::Relaxed);
    let emitted = drive(load, || {
        let _s = fastrace::Span::root("terminal.deliver", fastrace::collector::SpanContext::random())
            .with_properties(|| [("tracewire.bytes", "42"), ("tracewire.stage", "terminal.deliver")]);
    });
    fastrace::flush();
    Outcome { emitted, delivered: reported.load(Ordering::Relaxed) - before, counted_drops: None }
}

#[allow(clippy::cast_precision_loss)]
fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let steady = Load::Steady {
        per_thread_per_s: 100_000,
        duration: scale.pick(Duration::from_secs(1), Duration::from_secs(3)),
    };
    let flat = Load::FlatOut { per_thread: scale.pick(300_000, 1_000_000) };
    let mut rows = Vec::new();
    for (name, load) in [("delivery.steady_200k_per_s", steady), ("delivery.flat_out", flat)] {
        let ours = tracewire(load)?;
        let sdk = tracing_otel(load);
        let fast = fastrace_run(load);
        let dropped = ours.counted_drops.unwrap_or(0);
        let sdk_dropped = sdk.counted_drops.unwrap_or(0);
        let accounted = ours.delivered + dropped == ours.emitted;
        let (ours_pct, sdk_pct) = (pct(ours.delivered, ours.emitted), pct(sdk.delivered, sdk.emitted));
        let steady_row = matches!(load, Load::Steady { .. });
        let (goal, met) = if steady_row {
            ("100% delivered".to_owned(), ours.delivered == ours.emitted)
        } else {
            (">= SDK's share, delivered+dropped == emitted".to_owned(), accounted && ours_pct >= sdk_pct)
        };
        rows.push(Row {
            name: name.into(),
            ours: ours_pct,
            peer: sdk_pct,
            unit: "% deliv".into(),
            ratio: if sdk_pct > 0.0 { ours_pct / sdk_pct } else { f64::INFINITY },
            goal,
            met,
            note: format!(
                "delivered share vs delivered share, 2 threads, both queues 2,048 (defaults); tracewire {}/{} delivered, {dropped} dropped and counted ({}); SDK batch + tuned tracing-opentelemetry {}/{} delivered, {sdk_dropped} dropped by its own count (internal-logs; delivered+dropped {} emitted); fastrace via fastrace-opentelemetry {}/{} delivered (counts no drops)",
                ours.delivered,
                ours.emitted,
                if accounted { "exact" } else { "NOT exact" },
                sdk.delivered,
                sdk.emitted,
                if sdk.delivered + sdk_dropped == sdk.emitted { "==" } else { "!=" },
                fast.delivered,
                fast.emitted,
            ),
        });
    }
    Ok(rows)
}
