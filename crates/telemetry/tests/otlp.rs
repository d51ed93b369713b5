//! Export to a real OTLP collector (rotel-agent on loopback), over gRPC and HTTP/protobuf,
//! interop with the OpenTelemetry Python SDK, and faults: collector absent, started later,
//! stopped mid-run, and hanging.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracewire_context::TraceCarrier;
use tracewire_telemetry::{
    Config, ExportSnapshot, Pipeline, inject_current, set_parent_from, span_context, stage_span,
};
use tracewire_testkit::{ReceivedSpan, Rotel, free_port, run_python};
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(15);

fn config(vars: &[(&str, &str)]) -> Config {
    let mut all =
        vec![("OTEL_SERVICE_NAME", "tracewire-test"), ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci")];
    all.extend_from_slice(vars);
    let mut c = Config::from_vars(all).unwrap();
    c.batch.schedule_delay = Duration::from_millis(50);
    c
}

/// A pipeline exporting to `rotel` over gRPC, with `vars` besides.
fn grpc_pipeline(rotel: &Rotel, vars: &[(&str, &str)]) -> Pipeline {
    let endpoint = rotel.grpc_endpoint();
    let mut all = vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    all.extend_from_slice(vars);
    Pipeline::new(&config(&all)).unwrap()
}

/// Emits [`emit_tree`] through `pipeline`, shuts it down and checks what `rotel` received.
fn tree_arrives(pipeline: &Pipeline, rotel: &Rotel) {
    let trace_id = with_pipeline(pipeline, emit_tree);
    let stats = pipeline.shutdown().unwrap();
    assert_eq!((stats.emitted, stats.exported, stats.dropped()), (3, 3, 0));
    check_tree(rotel, &trace_id);
}

/// Runs `f` with `pipeline` as this thread's subscriber.
fn with_pipeline<R>(pipeline: &Pipeline, f: impl FnOnce() -> R) -> R {
    let layer = pipeline.layer();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f)
}

fn of_trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

/// Emits `exec -> rpc.dispatch -> process.spawn` and returns the trace id.
fn emit_tree() -> String {
    let _exec = stage_span!(Exec).entered();
    {
        let _d = stage_span!(RpcDispatch, rpc.system = "tracewire", rpc.method = "Start").entered();
        let _s = stage_span!(ProcessSpawn, process.executable.name = "true").entered();
    }
    span_context(&tracing::Span::current()).unwrap().trace_id.to_string()
}

fn check_tree(rotel: &Rotel, trace_id: &str) {
    let spans = rotel.wait_for(WAIT, |s| of_trace(s, trace_id).len() >= 3).unwrap();
    let spans = of_trace(&spans, trace_id);
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let find = |n: &str| *spans.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n}"));
    let (exec, dispatch, spawn) = (find("exec"), find("rpc.dispatch"), find("process.spawn"));
    assert_eq!(exec.parent_id, "");
    assert_eq!(dispatch.parent_id, exec.span_id);
    assert_eq!(spawn.parent_id, dispatch.span_id);
    assert_eq!(dispatch.kind, "SPAN_KIND_SERVER");
    assert_eq!(dispatch.attr("tracewire.stage"), Some("rpc.dispatch"));
    assert_eq!(dispatch.attr("rpc.method"), Some("Start"));
    assert_eq!(spawn.attr("process.executable.name"), Some("true"));
    assert!(spawn.start_ns >= dispatch.start_ns && spawn.end_ns <= dispatch.end_ns, "child within parent");
    for s in &spans {
        assert_eq!(s.resource_attr("service.name"), Some("tracewire-test"));
        assert_eq!(s.resource_attr("deployment.environment.name"), Some("ci"));
        assert_eq!(s.resource_attr("telemetry.sdk.name"), Some("tracewire"));
    }
}

#[test]
fn spans_arrive_over_grpc_with_names_parents_and_resource() {
    let rotel = Rotel::start().unwrap();
    tree_arrives(&grpc_pipeline(&rotel, &[]), &rotel);
}

#[test]
fn spans_arrive_over_http_protobuf_with_names_parents_and_resource() {
    let rotel = Rotel::start().unwrap();
    let pipeline = Pipeline::new(&config(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &rotel.http_endpoint()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=ci"),
    ]))
    .unwrap();
    tree_arrives(&pipeline, &rotel);
}

fn interop_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/interop.py")
}

#[test]
fn python_continues_a_trace_we_started() {
    let rotel = Rotel::start().unwrap();
    let pipeline = grpc_pipeline(&rotel, &[]);
    let (ours, carrier) = with_pipeline(&pipeline, || {
        let span = stage_span!(RpcCall, rpc.method = "Start");
        let _g = span.enter();
        let mut c = TraceCarrier::default();
        assert!(inject_current(&mut c).unwrap());
        (span_context(&span).unwrap(), c)
    });
    pipeline.shutdown().unwrap();
    let out = run_python(&interop_script(), &["continue", &carrier.traceparent, &rotel.grpc_endpoint()], &[]).unwrap();
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f[0], ours.trace_id.to_string(), "same trace id");
    assert_eq!(f[2], ours.span_id.to_string(), "python's parent is our span");
    let trace = ours.trace_id.to_string();
    let spans = rotel.wait_for(WAIT, |s| of_trace(s, &trace).len() >= 2).unwrap();
    let py = of_trace(&spans, &trace).into_iter().find(|s| s.name == "python.child").unwrap().clone();
    assert_eq!(py.parent_id, ours.span_id.to_string());
    assert_eq!(py.resource_attr("service.name"), Some("python-interop"));
}

#[test]
fn we_continue_a_trace_python_started() {
    let rotel = Rotel::start().unwrap();
    let out = run_python(&interop_script(), &["start", &rotel.grpc_endpoint()], &[]).unwrap();
    let f: Vec<&str> = out.split_whitespace().collect();
    let (py_trace, py_span, traceparent) = (f[0].to_owned(), f[1].to_owned(), f[3].to_owned());
    assert!(traceparent.starts_with(&format!("00-{py_trace}-{py_span}-")), "{traceparent}");

    let pipeline = grpc_pipeline(&rotel, &[]);
    with_pipeline(&pipeline, || {
        let span = stage_span!(RpcDispatch, rpc.method = "Start");
        assert!(set_parent_from(&span, &[("traceparent", traceparent.as_str())]).continued());
        let _g = span.enter();
    });
    pipeline.shutdown().unwrap();
    let spans = rotel.wait_for(WAIT, |s| of_trace(s, &py_trace).len() >= 2).unwrap();
    let ours = of_trace(&spans, &py_trace).into_iter().find(|s| s.name == "rpc.dispatch").unwrap().clone();
    assert_eq!(ours.parent_id, py_span, "our span's parent is python's span");
    assert_eq!(ours.resource_attr("service.name"), Some("tracewire-test"));
}

/// Emits `n` root spans and returns the trace ids of those recorded (a span shed while the
/// queue is full has none; it is counted as dropped).
fn emit_roots(pipeline: &Pipeline, n: usize) -> Vec<String> {
    with_pipeline(pipeline, || {
        (0..n)
            .filter_map(|_| {
                let s = stage_span!(TerminalDeliver);
                span_context(&s).map(|c| c.trace_id.to_string())
            })
            .collect()
    })
}

fn received(rotel: &Rotel, ids: &[String]) -> usize {
    rotel.spans().iter().filter(|s| ids.contains(&s.trace_id)).count()
}

fn shutdown_within(pipeline: &Pipeline, deadline: Duration) -> (ExportSnapshot, Duration) {
    let t0 = Instant::now();
    let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats).unwrap();
    let took = t0.elapsed();
    // Not a speed claim: shutdown must end at its deadline instead of hanging.
    assert!(took < deadline + Duration::from_secs(1), "shutdown took {took:?}, deadline {deadline:?}");
    (stats, took)
}

#[test]
fn collector_absent_at_start_drops_are_counted_and_shutdown_is_bounded() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let pipeline =
        Pipeline::new(&config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]))
            .unwrap();
    emit_roots(&pipeline, 50);
    let (stats, _) = shutdown_within(&pipeline, Duration::from_secs(2));
    assert_eq!(stats.emitted, 50);
    assert_eq!(stats.exported, 0);
    assert_eq!(stats.dropped(), 50, "{stats:?}");
    assert_eq!(stats.pending(), 0);
}

#[test]
fn collector_started_later_receives_what_is_emitted_after_it_is_up() {
    let (grpc, http) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let pipeline =
        Pipeline::new(&config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]))
            .unwrap();
    let before = emit_roots(&pipeline, 20);
    let _ = pipeline.provider().force_flush();
    let rotel = Rotel::start_on(grpc, http).unwrap();
    let after = emit_roots(&pipeline, 30);
    pipeline.provider().force_flush().unwrap();
    let stats = pipeline.shutdown().unwrap();
    rotel.wait_for(WAIT, |s| s.iter().filter(|x| after.contains(&x.trace_id)).count() == 30).unwrap();
    assert_eq!(received(&rotel, &before), 0, "no spool: spans emitted while down are dropped, not delivered");
    assert_eq!(stats.emitted, 50);
    assert_eq!(stats.exported, 30);
    assert_eq!(stats.dropped_export_failed, 20);
    assert_eq!(stats.pending(), 0);
}

#[test]
fn collector_stopped_mid_run_counts_exactly_what_it_missed() {
    let mut rotel = Rotel::start().unwrap();
    let pipeline = grpc_pipeline(&rotel, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "500")]);
    let first = emit_roots(&pipeline, 40);
    assert_eq!(first.len(), 40);
    pipeline.provider().force_flush().unwrap();
    rotel.wait_for(WAIT, |s| s.iter().filter(|x| first.contains(&x.trace_id)).count() == 40).unwrap();
    rotel.stop();
    let second = emit_roots(&pipeline, 25);
    assert!(pipeline.provider().force_flush().is_err(), "flushing to a stopped collector fails");
    let (stats, _) = shutdown_within(&pipeline, Duration::from_secs(2));
    assert_eq!(received(&rotel, &second), 0);
    assert_eq!(stats.emitted, 65);
    assert_eq!(stats.exported, 40, "exactly what the collector printed");
    assert_eq!(stats.dropped(), 25);
    assert_eq!(stats.pending(), 0);
}

/// A "collector" that accepts connections and never answers.
fn black_hole() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", l.local_addr().unwrap());
    (l, endpoint)
}

#[test]
fn a_hanging_collector_never_blocks_emit_and_shutdown_keeps_its_deadline() {
    let (_hole, endpoint) = black_hole();
    let mut c =
        config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint)]);
    c.batch.max_queue_size = 64;
    c.batch.max_export_batch_size = 16;
    c.shutdown_timeout = Duration::from_millis(800);
    let pipeline = Pipeline::new(&c).unwrap();
    let recorded = emit_roots(&pipeline, 1000);
    assert!(recorded.len() < 1000, "spans are shed while the queue is full");
    let (stats, _) = shutdown_within(&pipeline, c.shutdown_timeout);
    assert_eq!(stats.emitted, 1000);
    assert_eq!(stats.exported, 0);
    assert!(stats.dropped_queue_full > 0, "a full queue drops instead of blocking: {stats:?}");
    assert_eq!(stats.dropped(), 1000, "every span is accounted for: {stats:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_on_a_current_thread_runtime_with_the_collector_hanging_is_bounded() {
    let (_hole, endpoint) = black_hole();
    let mut c = config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]);
    c.shutdown_timeout = Duration::from_millis(500);
    let pipeline = Pipeline::new(&c).unwrap();
    emit_roots(&pipeline, 10);
    let (stats, _) = shutdown_within(&pipeline, c.shutdown_timeout);
    assert_eq!(stats.emitted, 10);
    assert_eq!(stats.exported + stats.dropped(), 10);
}
