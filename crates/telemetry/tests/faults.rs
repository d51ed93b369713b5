//! Collector faults beyond `otlp.rs` (absent, started later, stopped, hanging): a slow
//! collector that delays every export, and a flapping one (a real rotel-agent stopped and
//! restarted on the same ports). In every case: emitting a span never blocks, shutdown keeps
//! its deadline, spans emitted while the collector is up are delivered (there is no spool:
//! those emitted while it is down are dropped), and every span is counted exactly
//! (`emitted == exported + dropped`, `exported` equal to what the collector received).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracewire_context::TraceId;
use tracewire_telemetry::{Config, ExportSnapshot, Pipeline, span_context, stage_span};
use tracewire_testkit::{HttpStub, Rotel, free_port};
use tracing_subscriber::layer::SubscriberExt;

/// Not a speed claim: "never blocks" means no emit waits for the collector.
const EMIT_BOUND: Duration = Duration::from_millis(50);

fn config(vars: &[(&str, &str)]) -> Config {
    let mut c = Config::from_vars(vars.iter().copied()).unwrap();
    c.batch.schedule_delay = Duration::from_millis(50);
    c
}

/// Emits `n` root spans, one at a time; returns the trace ids of those recorded and the
/// longest time one emit (start + end of a span) took.
fn emit(pipeline: &Pipeline, n: usize) -> (Vec<String>, Duration) {
    let layer = pipeline.layer();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let mut ids = Vec::new();
        let mut longest = Duration::ZERO;
        for _ in 0..n {
            let t0 = Instant::now();
            let span = stage_span!(TerminalDeliver);
            let id = span_context(&span).map(|c| c.trace_id.to_string());
            drop(span);
            longest = longest.max(t0.elapsed());
            ids.extend(id);
        }
        (ids, longest)
    })
}

fn shutdown_within(pipeline: &Pipeline, deadline: Duration) -> ExportSnapshot {
    let t0 = Instant::now();
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats).unwrap();
    let took = t0.elapsed();
    assert!(took < deadline + Duration::from_secs(1), "shutdown took {took:?}, deadline {deadline:?}");
    stats
}

/// A loopback OTLP/HTTP collector that waits `delay` before answering each export; what it
/// answered is read back as the trace ids of the spans it was sent.
struct SlowCollector(HttpStub);

impl SlowCollector {
    fn start(delay: Duration) -> Self {
        Self(HttpStub::start(delay, "application/x-protobuf", b"").unwrap())
    }

    /// The trace id of every span of every export answered so far.
    fn trace_ids(&self) -> Vec<String> {
        self.0
            .received()
            .iter()
            .flat_map(|r| ExportTraceServiceRequest::decode(r.body.as_slice()).unwrap().resource_spans)
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .map(|s| TraceId::from_bytes(<[u8; 16]>::try_from(s.trace_id.as_slice()).unwrap()).to_string())
            .collect()
    }

    fn count(&self) -> usize {
        self.trace_ids().len()
    }
}

#[test]
fn a_slow_collector_never_blocks_emit_and_every_span_is_counted_exactly() {
    let collector = SlowCollector::start(Duration::from_millis(250));
    let mut c = config(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.0.base_url()),
    ]);
    c.batch.max_queue_size = 64;
    c.batch.max_export_batch_size = 16;
    c.shutdown_timeout = Duration::from_millis(600);
    let pipeline = Pipeline::new(&c).unwrap();

    // Far faster than the collector takes them: the queue fills and spans are shed, the
    // application never waits.
    let (recorded, longest) = emit(&pipeline, 400);
    assert!(longest < EMIT_BOUND, "an emit took {longest:?}");
    let stats = pipeline.stats();
    assert!(
        tracewire_testkit::eventually(Duration::from_secs(20), || stats.snapshot().pending() == 0).is_ok(),
        "{:?}",
        stats.snapshot()
    );
    let s = stats.snapshot();
    assert_eq!(s.emitted, 400);
    assert!(s.dropped_queue_full > 0, "a slow collector makes the queue overflow: {s:?}");
    assert_eq!(s.dropped_export_failed, 0, "slow is not failed: {s:?}");
    assert_eq!(s.exported + s.dropped(), 400, "{s:?}");
    assert_eq!(s.exported, collector.count() as u64, "exported is exactly what the collector answered");
    let recorded: HashSet<&String> = recorded.iter().collect();
    assert!(collector.trace_ids().iter().all(|id| recorded.contains(id)));

    // A backlog longer than the shutdown deadline: shutdown ends at its deadline and counts
    // what it could not deliver.
    let (_, longest) = emit(&pipeline, 64);
    assert!(longest < EMIT_BOUND, "an emit took {longest:?}");
    let s = shutdown_within(&pipeline, c.shutdown_timeout);
    assert_eq!(s.emitted, 464);
    assert_eq!(s.pending(), 0);
    assert_eq!(s.exported + s.dropped(), 464, "{s:?}");
    assert!(s.dropped_shutdown > 0, "{s:?}");
    // An export cut short at the deadline may still have reached the collector: it is
    // counted as dropped, never as exported.
    assert!(collector.count() as u64 >= s.exported);
}

#[test]
fn a_flapping_collector_gets_what_is_emitted_while_it_is_up_and_drops_are_counted() {
    let (grpc, http) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let mut c = config(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
    ]);
    c.shutdown_timeout = Duration::from_secs(2);
    let pipeline = Pipeline::new(&c).unwrap();
    let stats = pipeline.stats();
    let (mut delivered, mut missed, mut longest) = (0u64, 0u64, Duration::ZERO);
    for cycle in 0..3 {
        let mut rotel = Rotel::start_on(grpc, http).unwrap();
        let (up, t) = emit(&pipeline, 20);
        longest = longest.max(t);
        pipeline.provider().force_flush().unwrap_or_else(|e| panic!("cycle {cycle}: {e}; {:?}", stats.snapshot()));
        rotel
            .wait_for(Duration::from_secs(15), |s| s.iter().filter(|x| up.contains(&x.trace_id)).count() == 20)
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        delivered += 20;
        assert_eq!(stats.snapshot().exported, delivered, "cycle {cycle}");
        rotel.stop();

        let (_, t) = emit(&pipeline, 15);
        longest = longest.max(t);
        assert!(pipeline.provider().force_flush().is_err(), "the collector is down");
        missed += 15;
        let s = stats.snapshot();
        assert_eq!((s.exported, s.dropped_export_failed, s.pending()), (delivered, missed, 0), "cycle {cycle}");
    }
    // Back once more: delivery resumes; shutdown is prompt.
    let rotel = Rotel::start_on(grpc, http).unwrap();
    let (last, t) = emit(&pipeline, 20);
    longest = longest.max(t);
    let s = shutdown_within(&pipeline, c.shutdown_timeout);
    rotel.wait_for(Duration::from_secs(15), |s| s.iter().filter(|x| last.contains(&x.trace_id)).count() == 20).unwrap();
    assert!(longest < EMIT_BOUND, "an emit took {longest:?}");
    assert_eq!(s.emitted, delivered + missed + 20);
    assert_eq!(s.exported, delivered + 20);
    assert_eq!(s.dropped(), missed);
    assert_eq!(s.dropped_export_failed, missed);
    assert_eq!(s.pending(), 0);
}
