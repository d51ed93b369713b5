//! tracewire's own `tracing` layer: what it records and exports, span by span, through a
//! real pipeline to an in-memory exporter. Each test installs its own subscriber (scoped to
//! the test's thread) and pipeline.

use std::time::Duration;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tracewire_context::TraceCarrier;
use tracewire_telemetry::{
    Config, Pipeline, Sampler, current_context, inject_current, set_parent_from, span_context, stage_span,
};
use tracing_subscriber::layer::SubscriberExt;

/// Runs `f` under a fresh pipeline with `config`, and returns what was exported.
fn run(config: Config, f: impl FnOnce(&Pipeline)) -> Vec<SpanData> {
    let exporter = InMemorySpanExporter::default();
    let sink = exporter.clone();
    let mut config = config;
    config.batch.schedule_delay = Duration::from_millis(10);
    let pipeline = Pipeline::with_exporter(&config, Box::new(move || Ok(sink))).unwrap();
    let subscriber = tracing_subscriber::registry().with(pipeline.layer());
    tracing::subscriber::with_default(subscriber, || f(&pipeline));
    pipeline.provider().force_flush().unwrap();
    // (The in-memory exporter forgets its spans at shutdown.)
    let spans = exporter.get_finished_spans().unwrap();
    let stats = pipeline.shutdown().unwrap();
    assert_eq!((stats.emitted, stats.dropped()), (spans.len() as u64, 0), "{stats:?}");
    spans
}

fn by_name<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!("no span {name} in {:?}", spans.iter().map(|s| s.name.to_string()).collect::<Vec<_>>())
    })
}

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

#[test]
fn a_span_tree_keeps_its_parents_fields_and_times() {
    let spans = run(Config::default(), |_| {
        let exec = stage_span!(Exec, process.pid = 7u32, ok = true, ratio = 0.5, big = u64::MAX);
        let _e = exec.enter();
        let call = stage_span!(RpcCall, rpc.method = "Start");
        call.in_scope(|| {
            let _spawn = stage_span!(ProcessSpawn, process.executable.name = "true").entered();
        });
        // An explicit parent wins over the current span.
        let _detached = tracing::info_span!(target: "tracewire", parent: &call, "late.child").entered();
    });
    assert_eq!(spans.len(), 4);
    let (exec, call, spawn, late) = (
        by_name(&spans, "exec"),
        by_name(&spans, "rpc.call"),
        by_name(&spans, "process.spawn"),
        by_name(&spans, "late.child"),
    );
    let trace = exec.span_context.trace_id();
    assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
    assert_eq!(exec.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert_eq!(call.parent_span_id, exec.span_context.span_id());
    assert_eq!(spawn.parent_span_id, call.span_context.span_id());
    assert_eq!(late.parent_span_id, call.span_context.span_id());
    assert!(!call.parent_span_is_remote);
    // Stage attribute and kind are added on export; fields become typed attributes.
    assert_eq!(attr(exec, "tracewire.stage").as_deref(), Some("exec"));
    assert_eq!(exec.span_kind, SpanKind::Client);
    assert_eq!(attr(late, "tracewire.stage"), None);
    assert_eq!(late.span_kind, SpanKind::Internal);
    let pid = exec.attributes.iter().find(|kv| kv.key.as_str() == "process.pid").unwrap();
    assert_eq!(pid.value, opentelemetry::Value::I64(7));
    assert_eq!(attr(exec, "ok").as_deref(), Some("true"));
    assert_eq!(attr(exec, "ratio").as_deref(), Some("0.5"));
    assert_eq!(attr(exec, "big").as_deref(), Some("18446744073709551615"));
    assert_eq!(attr(call, "rpc.method").as_deref(), Some("Start"));
    assert_eq!(spawn.instrumentation_scope.name(), "tracewire");
    // Times nest.
    assert!(exec.start_time <= call.start_time && call.start_time <= spawn.start_time);
    assert!(spawn.end_time <= call.end_time && call.end_time <= exec.end_time);
}

#[test]
fn every_span_of_a_batch_gets_its_own_stages_attribute_and_kind() {
    // Spans of several names interleaved in one export batch (a stage name on a span that is
    // not a `stage_span!` too): the worker gives each its own stage, or none.
    let spans = run(Config::default(), |_| {
        for _ in 0..3 {
            drop(stage_span!(ProcessSpawn));
            drop(stage_span!(ProcessSpawn));
            drop(tracing::info_span!(target: "tracewire", "not.a.stage"));
            drop(stage_span!(RpcCall));
            drop(tracing::info_span!(target: "tracewire", "process.spawn"));
            drop(stage_span!(RelaySend));
        }
    });
    assert_eq!(spans.len(), 18);
    for s in &spans {
        if let Some(stage) = tracewire_telemetry::Stage::from_name(&s.name) {
            assert_eq!(attr(s, "tracewire.stage").as_deref(), Some(stage.name()), "{}", s.name);
            assert_eq!(s.span_kind, stage.kind(), "{}", s.name);
        } else {
            assert_eq!(s.name, "not.a.stage");
            assert_eq!(attr(s, "tracewire.stage"), None);
            assert_eq!(s.span_kind, SpanKind::Internal);
        }
    }
    assert_eq!(spans.iter().filter(|s| s.span_kind == SpanKind::Producer).count(), 3, "relay.send");
}

#[test]
fn recorded_fields_events_links_and_otel_fields() {
    let spans = run(Config::default(), |_| {
        let first = tracing::info_span!("first");
        drop(first.clone().entered());
        let span = tracing::info_span!(
            "renamed.later",
            otel.name = tracing::field::Empty,
            otel.kind = "server",
            exit_code = tracing::field::Empty
        );
        span.follows_from(&first);
        span.record("otel.name", "GET /items");
        span.record("exit_code", 3);
        span.record("exit_code", 4);
        span.in_scope(|| {
            tracing::info!(bytes = 12u64, "output");
            tracing::error!("it broke");
        });
        let ok = tracing::info_span!("fine", otel.status_code = "ok");
        drop(ok);
        let failed = tracing::info_span!("failed", otel.status_code = "error", otel.status_description = "exit 2");
        drop(failed);
    });
    let first = by_name(&spans, "first");
    let s = by_name(&spans, "GET /items");
    assert_eq!(s.span_kind, SpanKind::Server);
    assert_eq!(attr(s, "exit_code").as_deref(), Some("4"), "a recorded field replaces the earlier value");
    assert_eq!(s.attributes.iter().filter(|kv| kv.key.as_str() == "exit_code").count(), 1);
    assert_eq!(s.links.links.len(), 1);
    assert_eq!(s.links.links[0].span_context.span_id(), first.span_context.span_id());
    let events = &s.events.events;
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].name, "output");
    assert!(events[0].attributes.contains(&KeyValue::new("level", "INFO")));
    assert!(events[0].attributes.contains(&KeyValue::new("bytes", 12i64)));
    assert_eq!(events[1].name, "it broke");
    assert_eq!(s.status, Status::error("it broke"), "an error event marks the span as failed");
    assert_eq!(by_name(&spans, "fine").status, Status::Ok);
    assert_eq!(by_name(&spans, "failed").status, Status::error("exit 2"));
}

#[test]
fn a_remote_parent_and_its_baggage_pass_to_children_and_out_again() {
    let spans = run(Config::default(), |_| {
        let incoming = [
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("tracestate", "vendor=x"),
            ("baggage", "user=alice"),
        ];
        let dispatch = stage_span!(RpcDispatch);
        assert!(set_parent_from(&dispatch, &incoming).continued());
        let _d = dispatch.enter();
        let _child = stage_span!(ProcessSpawn).entered();
        let mut out = TraceCarrier::default();
        assert!(inject_current(&mut out).unwrap());
        let tp = out.traceparent;
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"), "{tp}");
        assert_eq!(out.tracestate, "vendor=x");
        assert_eq!(out.baggage, "user=alice");
        let ctx = span_context(&tracing::Span::current()).unwrap();
        assert_eq!(tp, ctx.traceparent().to_string());
    });
    let d = by_name(&spans, "rpc.dispatch");
    assert_eq!(d.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(d.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(d.parent_span_is_remote);
    assert_eq!(d.span_kind, SpanKind::Server);
    assert_eq!(d.span_context.trace_state().header(), "vendor=x");
    let spawn = by_name(&spans, "process.spawn");
    assert_eq!(spawn.parent_span_id, d.span_context.span_id());
    assert_eq!(spawn.span_context.trace_state().header(), "vendor=x");
}

#[test]
fn spans_made_with_the_opentelemetry_api_and_tracing_spans_nest_both_ways() {
    let spans = run(Config::default(), |pipeline| {
        let tracer = pipeline.tracer();
        // An OpenTelemetry span made current by hand parents a tracing span.
        tracer.in_span("otel.outer", |_| {
            let tw = stage_span!(RpcCall);
            let _g = tw.enter();
            // current_context() gives the tracing span's context, for OpenTelemetry spans.
            let _inner = tracer.start_with_context("otel.inner", &current_context());
        });
    });
    let outer = by_name(&spans, "otel.outer");
    let call = by_name(&spans, "rpc.call");
    let inner = by_name(&spans, "otel.inner");
    assert_eq!(call.span_context.trace_id(), outer.span_context.trace_id());
    assert_eq!(call.parent_span_id, outer.span_context.span_id());
    assert!(!call.parent_span_is_remote);
    assert_eq!(inner.parent_span_id, call.span_context.span_id());
}

#[test]
fn context_activation_makes_the_entered_span_opentelemetrys_current_one() {
    for activation in [true, false] {
        let mut config = Config::default();
        config.context_activation = activation;
        run(config, |_| {
            let span = stage_span!(Exec);
            let id = span_context(&span).unwrap().span_id;
            {
                let _g = span.enter();
                let cx = Context::current();
                let sc = cx.span().span_context().clone();
                assert_eq!(sc.is_valid(), activation);
                if activation {
                    assert_eq!(sc.span_id().to_bytes(), id.to_bytes());
                    // Nested entries and exits restore the outer context.
                    let child = stage_span!(RpcCall);
                    drop(child.enter());
                    assert_eq!(Context::current().span().span_context().span_id(), sc.span_id());
                }
            }
            assert!(!Context::current().span().span_context().is_valid(), "exit restores the previous context");
        });
    }
}

#[test]
fn samplers_decide_what_is_exported_and_unsampled_spans_still_propagate() {
    let mut config = Config::default();
    config.sampler = Sampler::AlwaysOff;
    let spans = run(config, |_| {
        let span = stage_span!(Exec);
        let _g = span.enter();
        let mut out = TraceCarrier::default();
        assert!(inject_current(&mut out).unwrap(), "an unsampled span still has a context");
        assert!(out.traceparent.ends_with("-00"), "{}", out.traceparent);
        let _child = stage_span!(RpcCall).entered();
    });
    assert!(spans.is_empty(), "{spans:?}");

    // Parent-based: a sampled remote parent is followed even when new roots are not sampled.
    let mut config = Config::default();
    config.sampler = Sampler::ParentBasedAlwaysOff;
    let spans = run(config, |_| {
        drop(stage_span!(Exec));
        let span = stage_span!(RpcDispatch);
        set_parent_from(&span, &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]);
        let _g = span.enter();
        drop(stage_span!(ProcessSpawn));
        let unsampled = stage_span!(RpcDispatch);
        set_parent_from(&unsampled, &[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]);
    });
    let mut names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["process.spawn", "rpc.dispatch"]);
}

#[test]
fn spans_from_many_threads_are_all_exported_exactly_once() {
    let spans = run(Config::default(), |_| {
        let root = stage_span!(Exec);
        std::thread::scope(|s| {
            for t in 0..4 {
                let root = root.clone();
                let dispatch = tracing::dispatcher::get_default(Clone::clone);
                s.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        for i in 0..250 {
                            let _s = tracing::info_span!(target: "tracewire", parent: &root, "terminal.deliver", thread = t, i = i).entered();
                        }
                    });
                });
            }
        });
    });
    assert_eq!(spans.len(), 1001);
    let root = by_name(&spans, "exec");
    let mut ids: Vec<_> = spans.iter().map(|s| s.span_context.span_id().to_bytes()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1001, "span ids are unique");
    assert!(
        spans.iter().filter(|s| s.name == "terminal.deliver").all(|s| s.parent_span_id == root.span_context.span_id())
    );
}

#[test]
fn the_provider_and_the_layer_share_one_queue_and_one_count() {
    let exporter = InMemorySpanExporter::default();
    let sink = exporter.clone();
    let pipeline = Pipeline::with_exporter(&Config::default(), Box::new(move || Ok(sink))).unwrap();
    let subscriber = tracing_subscriber::registry().with(pipeline.layer());
    tracing::subscriber::with_default(subscriber, || {
        drop(stage_span!(Exec));
        pipeline.provider().tracer("x").in_span("otel", |_| {});
    });
    pipeline.provider().force_flush().unwrap();
    assert_eq!(exporter.get_finished_spans().unwrap().len(), 2);
    let stats = pipeline.shutdown().unwrap();
    assert_eq!((stats.emitted, stats.exported), (2, 2));
}

#[test]
fn inside_a_span_the_export_filter_leaves_out_the_nearest_recorded_span_is_the_parent() {
    use tracing_subscriber::Layer as _;
    let exporter = InMemorySpanExporter::default();
    let sink = exporter.clone();
    let pipeline = Pipeline::with_exporter(&Config::default(), Box::new(move || Ok(sink))).unwrap();
    // As `init` with RUST_LOG=trace: the log layer enables HTTP/2 internals that the export
    // filter leaves out.
    let export = tracing_subscriber::EnvFilter::new(tracewire_telemetry::DEFAULT_EXPORT_FILTER);
    let subscriber = tracing_subscriber::registry()
        .with(pipeline.layer().with_filter(export))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink));
    let (trace, dispatch_id) = tracing::subscriber::with_default(subscriber, || {
        let dispatch = stage_span!(RpcDispatch);
        let _d = dispatch.enter();
        let internal = tracing::info_span!(target: "h2", "poll");
        let _i = internal.enter();
        tracewire_telemetry::Queued::new(tracewire_telemetry::Stage::RpcQueue, ()).into_inner();
        drop(stage_span!(ProcessSpawn));
        let mut out = TraceCarrier::default();
        assert!(inject_current(&mut out).unwrap());
        let ctx = span_context(&dispatch).unwrap();
        assert!(out.traceparent.contains(&ctx.span_id.to_string()), "{} vs {ctx:?}", out.traceparent);
        (ctx.trace_id.to_string(), ctx.span_id)
    });
    pipeline.provider().force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 3, "{spans:?}");
    for name in ["rpc.queue", "process.spawn"] {
        let s = by_name(&spans, name);
        assert_eq!(s.span_context.trace_id().to_string(), trace);
        assert_eq!(s.parent_span_id.to_bytes(), dispatch_id.to_bytes(), "{name}");
    }
    assert!(spans.iter().all(|s| s.name != "poll"));
}

#[test]
fn spans_emitted_after_the_fact_keep_their_times_parent_and_attributes() {
    use std::time::{Duration, SystemTime};
    use tracewire_telemetry::{Stage, emit_stage_span, remote_context};
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_800_000_000_123_456_789);
    let end = start + Duration::from_micros(42);
    let spans = run(Config::default(), |_| {
        let (remote, _) = remote_context(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]);
        emit_stage_span(Stage::RelayDecrypt, start, end, &remote, &[KeyValue::new("tracewire.bytes", 7i64)]);
        // Without a parent: nothing (a stage recorded after the fact is part of a trace).
        emit_stage_span(Stage::RelayFrame, start, end, &Context::new(), &[]);
        // Under a local span.
        let send = stage_span!(RelaySend);
        let _g = send.enter();
        emit_stage_span(Stage::RelayEncrypt, start, end, &current_context(), &[]);
    });
    let decrypt = by_name(&spans, "relay.decrypt");
    assert_eq!((decrypt.start_time, decrypt.end_time), (start, end), "wall-clock times exported as given");
    assert_eq!(decrypt.span_context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(decrypt.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(decrypt.parent_span_is_remote);
    assert_eq!(attr(decrypt, "tracewire.bytes").as_deref(), Some("7"));
    assert_eq!(attr(decrypt, "tracewire.stage").as_deref(), Some("relay.decrypt"));
    assert!(spans.iter().all(|s| s.name != "relay.frame"), "{spans:?}");
    let (send, encrypt) = (by_name(&spans, "relay.send"), by_name(&spans, "relay.encrypt"));
    assert_eq!(encrypt.parent_span_id, send.span_context.span_id());
    assert!(!encrypt.parent_span_is_remote);
    assert_eq!(send.span_kind, SpanKind::Producer);
}

/// An exporter that holds each export until released (a stuck collector), counting spans.
#[derive(Debug)]
struct Held {
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    got: std::sync::Arc<std::sync::Mutex<Vec<SpanData>>>,
}

impl opentelemetry_sdk::trace::SpanExporter for Held {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        if let Ok(rx) = self.release.lock() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
        self.got.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[test]
fn while_the_queue_is_full_spans_are_shed_counted_and_skipped_by_their_children() {
    let (release, held) = std::sync::mpsc::channel();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let exporter = Held { release: std::sync::Mutex::new(held), got: std::sync::Arc::clone(&got) };
    let mut config = Config::default();
    config.batch.max_queue_size = 4;
    config.batch.max_export_batch_size = 1;
    let pipeline = Pipeline::with_exporter(&config, Box::new(move || Ok(exporter))).unwrap();
    let subscriber = tracing_subscriber::registry().with(pipeline.layer());
    let root_id = tracing::subscriber::with_default(subscriber, || {
        let root = stage_span!(Exec);
        let _r = root.enter();
        let root_ctx = span_context(&root).unwrap();
        // The collector takes the first span and holds its export...
        drop(stage_span!(TerminalDeliver));
        let stats = pipeline.stats();
        tracewire_testkit::eventually(Duration::from_secs(10), || stats.snapshot().export_batches > 0)
            .expect("the worker starts exporting the first span");
        // ... so the queue (4 spans) fills and stays full.
        for _ in 0..49 {
            drop(stage_span!(TerminalDeliver));
        }
        let shed = stage_span!(RpcCall);
        assert!(span_context(&shed).is_none(), "a span started while the queue is full is shed");
        // Exact books while the export is held: 51 spans ended or shed (the root is still
        // open), 1 in the export, 4 queued, the other 46 dropped at the full queue (the
        // first by a failed push, the rest shed at their start).
        let held = stats.snapshot();
        assert_eq!((held.emitted, held.pending(), held.dropped_queue_full), (51, 5, 46), "{held:?}");
        let entered = shed.enter();
        // Inside the shed span: the nearest recorded ancestor is the parent.
        let mut out = TraceCarrier::default();
        assert!(inject_current(&mut out).unwrap());
        assert!(out.traceparent.contains(&root_ctx.span_id.to_string()), "{}", out.traceparent);
        tracing::info!("inside the shed span");
        drop(entered);
        // The collector comes back: the queue drains, and the root is recorded at its close.
        for _ in 0..100 {
            let _ = release.send(());
        }
        pipeline.provider().force_flush().unwrap();
        root_ctx.span_id
    });
    let stats = pipeline.shutdown().unwrap();
    let got = got.lock().unwrap();
    assert_eq!(stats.emitted, 52, "{stats:?}");
    assert!(stats.dropped_queue_full > 0, "{stats:?}");
    assert_eq!(stats.exported + stats.dropped(), stats.emitted, "every span is accounted for: {stats:?}");
    assert_eq!(stats.exported, got.len() as u64);
    let root = by_name(&got, "exec");
    assert_eq!(root.span_context.span_id().to_bytes(), root_id.to_bytes());
    assert_eq!(root.events.events.len(), 1, "the shed span's event went to its recorded parent");
    assert!(got.iter().all(|s| s.name != "rpc.call"));
}

/// A value whose `Debug` emits an event of its own, inside whatever span is current.
struct Noisy;

impl std::fmt::Debug for Noisy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        tracing::info!("formatting");
        f.write_str("noisy")
    }
}

#[test]
fn a_field_whose_debug_emits_an_event_does_not_deadlock_the_span() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let spans = run(Config::default(), |_| {
            let span = tracing::info_span!("outer", value = tracing::field::Empty);
            let _g = span.enter();
            span.record("value", tracing::field::debug(Noisy));
            tracing::info!(what = ?Noisy, "after");
        });
        let _ = done.send(spans);
    });
    let spans = finished.recv_timeout(Duration::from_secs(20)).expect("no deadlock");
    let outer = by_name(&spans, "outer");
    assert_eq!(attr(outer, "value").as_deref(), Some("noisy"));
    let names: Vec<_> = outer.events.events.iter().map(|e| e.name.to_string()).collect();
    // The event inside `record` reaches the span (which is not locked while its values are
    // visited); the one inside the event's own field is dropped by tracing's dispatcher,
    // which does not dispatch re-entrantly.
    assert_eq!(names, ["formatting", "after"]);
}
