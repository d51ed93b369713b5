//! Remote exec of `true`: direct gRPC and via the relay, with tracing on and off, against a
//! local spawn+wait. All variants interleave run by run, so they share the machine state.
//! "Tracing on" is the full instrumentation of client, server and relay exporting through
//! tracewire's pipeline (to a counting no-op exporter, so that what is measured is
//! tracewire's cost, not a collector's); "off" has no subscriber and a no-op tracer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracewire_telemetry::{Config, Pipeline};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;

use crate::fixtures::{ExecFixture, counting_pipeline, exec_true, runtime, spawn_true_locally};
use crate::{Row, Scale, percentile};

static TRACING: AtomicBool = AtomicBool::new(false);

/// The variants, by their index in a run's samples; index 0 is the local spawn+wait.
const DIRECT_OFF: usize = 1;
const RELAY_OFF: usize = 2;
const DIRECT_ON: usize = 3;
const RELAY_ON: usize = 4;
/// Direct, tracing on, to a server whose children get no trace variables
/// (`ExecConfig::child_trace_context` off): what those variables cost.
const DIRECT_ON_NO_CHILD_CONTEXT: usize = 5;
const VARIANTS: usize = 6;

/// Lets spans through only while [`TRACING`] is on (asked per span, never cached).
struct Toggle;

impl<S> tracing_subscriber::layer::Filter<S> for Toggle {
    fn enabled(&self, _meta: &tracing::Metadata<'_>, _cx: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        TRACING.load(Ordering::Relaxed)
    }

    fn callsite_enabled(&self, _meta: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
}

fn set_tracing(on: bool, pipeline: &Pipeline) {
    TRACING.store(on, Ordering::Relaxed);
    if on {
        opentelemetry::global::set_tracer_provider(pipeline.provider().clone());
    } else {
        opentelemetry::global::set_tracer_provider(opentelemetry::trace::noop::NoopTracerProvider::new());
    }
}

fn ms(mut v: Vec<Duration>) -> f64 {
    percentile(&mut v, 500).as_secs_f64() * 1e3
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let runs = scale.pick(150, 500);
    let mut config = Config::default();
    config.batch.max_queue_size = 65_536;
    let (pipeline, _delivered) = counting_pipeline(&config)?;
    // As `tracewire_telemetry::init` sets it up: the default export filter (no HTTP/2 or
    // gRPC internals), and the toggle.
    let export = tracing_subscriber::EnvFilter::new(tracewire_telemetry::DEFAULT_EXPORT_FILTER);
    let filter = tracing_subscriber::filter::FilterExt::and(Toggle, export);
    let subscriber = tracing_subscriber::registry().with(pipeline.layer().with_filter(filter));
    tracing::subscriber::set_global_default(subscriber).context("a global subscriber is already set")?;
    set_tracing(false, &pipeline);

    let rt = runtime()?;
    let samples = rt.block_on(async {
        let ExecFixture { direct, direct_no_child_context, relayed, .. } = ExecFixture::start().await?;
        // Each variant's client and whether tracing is on; `None`: the local spawn.
        let mut variants: [Option<(&tracewire_exec::ExecClient, bool)>; VARIANTS] = [None; VARIANTS];
        variants[DIRECT_OFF] = Some((&direct, false));
        variants[RELAY_OFF] = Some((&relayed, false));
        variants[DIRECT_ON] = Some((&direct, true));
        variants[RELAY_ON] = Some((&relayed, true));
        variants[DIRECT_ON_NO_CHILD_CONTEXT] = Some((&direct_no_child_context, true));
        let mut s: [Vec<Duration>; VARIANTS] = Default::default();
        for i in 0..runs + 20 {
            let mut one = [Duration::ZERO; VARIANTS];
            // The order rotates run by run, so that no variant always follows the same one
            // (an exec's tail work, such as the server reaping its child, overlaps the start
            // of the next).
            for j in 0..VARIANTS {
                let k = (i + j) % VARIANTS;
                let t0 = Instant::now();
                if let Some((client, on)) = variants[k] {
                    set_tracing(on, &pipeline);
                    // tracewire-exec makes the `exec` root of each trace.
                    exec_true(client).await?;
                } else {
                    spawn_true_locally().await?;
                }
                one[k] = t0.elapsed();
            }
            set_tracing(false, &pipeline);
            if i >= 20 {
                for (k, d) in one.into_iter().enumerate() {
                    s[k].push(d);
                }
            }
        }
        anyhow::Ok(s)
    })?;
    set_tracing(false, &pipeline);
    drop(rt);
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats)?;
    let [local, direct_off, relay_off, direct_on, relay_on, direct_on_no_child] = samples.map(ms);
    let vs_local = |name: &str, ours: f64, note: &str| {
        let mut r = Row::lower_is_better(name, ours, local, "ms p50", 1.0 / 1.5, note);
        r.goal = "<= 1.5x local".into();
        r
    };
    let overhead = |name: &str, on: f64, off: f64, extra: &str| {
        let mut r = Row::lower_is_better(
            name,
            on,
            off,
            "ms p50",
            0.97,
            &format!(
                "peer = the same with tracing off; {} spans exported, {} dropped{extra}",
                stats.exported,
                stats.dropped()
            ),
        );
        r.goal = "on <= 3% slower".into();
        r
    };
    Ok(vec![
        vs_local("remote_exec.direct_vs_local", direct_off, "peer = local spawn+wait of `true`; tracing off"),
        vs_local(
            "remote_exec.relay_vs_local",
            relay_off,
            "peer = local spawn+wait; through the Noise relay; tracing off",
        ),
        overhead(
            "remote_exec.direct_tracing_on_vs_off",
            direct_on,
            direct_off,
            &format!(
                "; with ExecConfig::child_trace_context off (no TRACEPARENT for the child) {:+.1}% ({direct_on_no_child:.3} ms)",
                (direct_on_no_child / direct_off - 1.0) * 100.0
            ),
        ),
        overhead("remote_exec.relay_tracing_on_vs_off", relay_on, relay_off, ""),
    ])
}
