//! Span trees through a real pipeline (bounded processor + in-memory exporter:
//! `tracewire_telemetry::testing::install`), installed once for this test binary; each test
//! finds its own spans by trace id.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry_sdk::trace::SpanData;
use tracewire_context::{Carrier, TraceCarrier};
use tracewire_telemetry::testing::install;
use tracewire_telemetry::{
    Queued, STAGE_ATTRIBUTE, Stage, current_trace_id, inject_current, propagation_stats, set_parent_from, span_context,
    stage_span,
};

fn spans_of(trace_id: &str) -> Vec<SpanData> {
    install().spans_of(trace_id)
}

fn by_name<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name} in {:?}", names(spans)))
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

fn attr(s: &SpanData, key: &str) -> Option<String> {
    s.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

macro_rules! check_stage {
    ($($variant:ident),*) => {{
        let mut seen = Vec::new();
        $(
            let span = stage_span!($variant);
            let meta = span.metadata().expect("stage spans are enabled");
            assert_eq!(meta.name(), Stage::$variant.name());
            assert_eq!(meta.target(), "tracewire");
            seen.push(Stage::$variant);
        )*
        seen
    }};
}

#[test]
fn every_stage_has_a_macro_arm_with_its_name() {
    install();
    let seen = check_stage!(
        Exec,
        RpcConnect,
        RpcCall,
        RpcQueue,
        RpcDispatch,
        RelayFrame,
        RelayEncrypt,
        RelaySend,
        RelayForward,
        RelayRecv,
        RelayDecrypt,
        RelayDecode,
        Process,
        ProcessSpawn,
        ProcessRun,
        ProcessStdout,
        ProcessStderr,
        ProcessExit,
        TerminalQueue,
        TerminalDeliver,
        StoreEnqueue,
        StoreQueue,
        StoreWrite,
        StoreFlush
    );
    assert_eq!(seen, Stage::ALL, "the macro covers every stage, in order");
}

#[test]
fn docs_stages_md_documents_every_stage() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/stages.md")).unwrap();
    for s in Stage::ALL {
        assert!(doc.contains(&format!("| `{}` |", s.name())), "docs/stages.md lacks a row for {}", s.name());
    }
}

#[test]
fn stage_spans_carry_name_kind_stage_and_fields() {
    install();
    let trace_id = {
        let _root = stage_span!(Exec).entered();
        {
            let _call = stage_span!(RpcCall, rpc.system = "tracewire", rpc.method = "Start").entered();
        }
        current_trace_id().unwrap().to_string()
    };
    let spans = spans_of(&trace_id);
    let root = by_name(&spans, "exec");
    let call = by_name(&spans, "rpc.call");
    assert_eq!(call.parent_span_id, root.span_context.span_id());
    assert_eq!(call.span_kind, SpanKind::Client);
    assert_eq!(attr(call, STAGE_ATTRIBUTE).as_deref(), Some("rpc.call"));
    assert_eq!(attr(call, "rpc.method").as_deref(), Some("Start"));
    assert_eq!(attr(call, "rpc.system").as_deref(), Some("tracewire"));
}

#[test]
fn queue_residence_spans_cover_enqueue_to_dequeue_across_threads() {
    install();
    let (tx, rx) = std::sync::mpsc::channel::<Queued<u32>>();
    let worker = std::thread::spawn(move || {
        let mut out = Vec::new();
        for q in rx {
            let enqueued = q.enqueued_at().unwrap();
            // The residence under test: the item waits 30 ms in the queue.
            std::thread::sleep(Duration::from_millis(30));
            let before_dequeue = SystemTime::now();
            out.push((q.into_inner(), enqueued, before_dequeue));
        }
        out
    });
    let (trace_id, dispatch_id) = {
        let dispatch = stage_span!(RpcDispatch, rpc.method = "Start");
        let _g = dispatch.enter();
        for i in 0..3 {
            tx.send(Queued::new(Stage::RpcQueue, i)).unwrap();
        }
        let ctx = span_context(&dispatch).unwrap();
        (ctx.trace_id.to_string(), ctx.span_id)
    };
    drop(tx);
    let results = worker.join().unwrap();
    assert_eq!(results.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2]);

    let spans = spans_of(&trace_id);
    let queued: Vec<&SpanData> = spans.iter().filter(|s| s.name == "rpc.queue").collect();
    assert_eq!(queued.len(), 3, "{:?}", names(&spans));
    for (span, (_, enqueued, before_dequeue)) in queued.iter().zip(&results) {
        assert_eq!(span.parent_span_id.to_bytes(), dispatch_id.to_bytes(), "parent = the enqueuing context");
        // The same instant, read from the cycle counter and made a wall-clock time twice
        // (when asked, and on export): equal to well under a microsecond.
        let apart = span.start_time.duration_since(*enqueued).unwrap_or_else(|e| e.duration());
        assert!(apart < Duration::from_micros(20), "start = enqueue instant, {apart:?} apart");
        // The end is read from the cycle counter just after `before_dequeue` and made a
        // wall-clock time on export, so it may come out a little before it: the same
        // tolerance as for the start (items wait 30 ms, so an end at the enqueue instant
        // would still fail).
        let early = before_dequeue.duration_since(span.end_time).unwrap_or_default();
        assert!(early < Duration::from_micros(20), "end = dequeue instant, {early:?} early");
        assert!(span.end_time.duration_since(span.start_time).unwrap() >= Duration::from_millis(30));
        assert_eq!(attr(span, STAGE_ATTRIBUTE).as_deref(), Some("rpc.queue"));
    }
}

#[test]
fn a_queued_item_outside_any_trace_emits_nothing() {
    install();
    let q = Queued::new(Stage::RpcQueue, ());
    assert!(q.enqueued_at().is_none());
    q.into_inner();
}

#[test]
fn set_parent_from_continues_or_starts_and_inject_carries_the_span() {
    install();
    let headers =
        [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), ("baggage", "tenant=acme")];
    let before = propagation_stats();
    let span = stage_span!(RpcDispatch);
    let ex = set_parent_from(&span, &headers);
    assert!(ex.continued());
    let mut out = TraceCarrier::default();
    {
        let _g = span.enter();
        assert!(inject_current(&mut out).unwrap());
    }
    let sc = span_context(&span).unwrap();
    drop(span);
    assert_eq!(sc.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(out.traceparent, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", sc.span_id));
    assert_eq!(out.get("baggage"), Some("tenant=acme"), "baggage travels on");

    let spans = spans_of("4bf92f3577b34da6a3ce929d0e0e4736");
    let d = by_name(&spans, "rpc.dispatch");
    assert_eq!(d.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(d.parent_span_is_remote);
    assert_eq!(d.span_kind, SpanKind::Server);

    // Invalid: a new root, marked with the reason, counted.
    let span = stage_span!(RpcDispatch);
    let ex = set_parent_from(&span, &[("traceparent", "00-zz")]);
    assert!(!ex.continued());
    let root_trace = span_context(&span).unwrap().trace_id.to_string();
    drop(span);
    let spans = spans_of(&root_trace);
    let d = by_name(&spans, "rpc.dispatch");
    assert_eq!(d.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert_eq!(attr(d, "tracewire.propagation.started").as_deref(), Some("invalid"));
    let after = propagation_stats();
    assert!(after.continued > before.continued && after.invalid > before.invalid);
}

#[test]
fn context_of_a_span_is_visible_to_opentelemetry_apis_through_current_context() {
    install();
    let span = stage_span!(Exec);
    let _g = span.enter();
    let ours = tracewire_telemetry::current_context();
    assert_eq!(
        ours.span().span_context().span_id().to_bytes(),
        span_context(&span).unwrap().span_id.to_bytes(),
        "current_context() is the entered span's"
    );
    // Without TRACEWIRE_CONTEXT_ACTIVATION (the default), OpenTelemetry's own current
    // context is left alone.
    assert!(!opentelemetry::Context::current().span().span_context().is_valid());
}
