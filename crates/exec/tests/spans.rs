//! The span tree of one remote exec, from the client's call to the delivery of Exited,
//! through a real pipeline (in-memory exporter) installed once for this test binary.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::SpanId;
use opentelemetry_sdk::trace::SpanData;
use tracewire_exec::{ExecClient, RemoteProcess};
use tracewire_telemetry::span_context;
use tracewire_telemetry::testing::InMemoryTelemetry;
use tracewire_testkit::eventually_some_async;
use tracing::Instrument;

use common::{TestServer, argv, client, server, server_with};

fn harness() -> &'static InMemoryTelemetry {
    tracewire_telemetry::testing::install()
}

fn spans_of(trace_id: &str) -> Vec<SpanData> {
    harness().spans_of(trace_id)
}

/// The tree as indented names, children sorted by name: ids and times left out.
fn tree(spans: &[SpanData]) -> String {
    let by_id: HashMap<_, _> = spans.iter().map(|s| (s.span_context.span_id(), s)).collect();
    let mut children: HashMap<Option<SpanId>, Vec<&SpanData>> = HashMap::new();
    for s in spans {
        let parent = by_id.contains_key(&s.parent_span_id).then_some(s.parent_span_id);
        children.entry(parent).or_default().push(s);
    }
    fn walk(out: &mut String, children: &HashMap<Option<SpanId>, Vec<&SpanData>>, at: Option<SpanId>, depth: usize) {
        let mut kids = children.get(&at).cloned().unwrap_or_default();
        kids.sort_by(|a, b| a.name.cmp(&b.name));
        for k in kids {
            out.push_str(&"  ".repeat(depth));
            out.push_str(&k.name);
            out.push('\n');
            walk(out, children, Some(k.span_context.span_id()), depth + 1);
        }
    }
    let mut out = String::new();
    walk(&mut out, &children, None, 0);
    out
}

/// How long a test waits for spans to be exported.
const WITHIN: Duration = Duration::from_secs(10);

/// The spans of `trace_id` once `done` holds for them; after [`WITHIN`], the spans there
/// are (the caller's assertions then say what is missing).
async fn wait_for_spans(trace_id: &str, done: impl Fn(&[SpanData]) -> bool) -> Vec<SpanData> {
    let done = &done;
    eventually_some_async(WITHIN, move || async move { Some(spans_of(trace_id)).filter(|s| done(s)) })
        .await
        .unwrap_or_else(|_| spans_of(trace_id))
}

/// The spans of `trace_id` once one of them is named `name`.
async fn spans_with(trace_id: &str, name: &str) -> Vec<SpanData> {
    wait_for_spans(trace_id, |s| has(s, name)).await
}

/// Whether a span is named `name`.
fn has(spans: &[SpanData], name: &str) -> bool {
    spans.iter().any(|s| s.name == name)
}

/// How many spans are named `name`.
fn count(spans: &[SpanData], name: &str) -> usize {
    spans.iter().filter(|s| s.name == name).count()
}

/// Asserts that `span` is a trace's root (no parent), showing the tree when not.
fn assert_root(span: &SpanData, spans: &[SpanData]) {
    assert_eq!(span.parent_span_id, SpanId::INVALID, "{} is not a root in\n{}", span.name, tree(spans));
}

/// The in-memory pipeline installed, an exec-server on loopback and a client of it.
async fn traced_server() -> (TestServer, ExecClient) {
    harness();
    let s = server().await;
    let c = client(&s).await;
    (s, c)
}

/// The spans of `trace_id` once its `exec` is exported; asserts that the exec continues
/// the remote parent `parent_id`.
async fn exec_continuing(trace_id: &str, parent_id: &str) -> Vec<SpanData> {
    let spans = spans_with(trace_id, "exec").await;
    let exec = named(&spans, "exec");
    assert_eq!(exec.parent_span_id.to_string(), parent_id);
    assert!(exec.parent_span_is_remote);
    spans
}

/// Starts `command` through `c`: the process and the trace id of its exec.
async fn start_traced(c: &ExecClient, command: &[&str]) -> (RemoteProcess, String) {
    let process = c.start(argv(command)).await.unwrap();
    let trace_id = span_context(process.span()).expect("the exec span is recording").trace_id.to_string();
    (process, trace_id)
}

fn attr_of(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} in\n{}", tree(spans)))
}

/// A plain user of `ExecClient`, who writes no span: the library makes the `exec` root,
/// and the first exec's root holds the connection's `rpc.connect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_remote_exec_span_tree() {
    let (s, c) = traced_server().await;
    let (process, trace_id) = start_traced(&c, &["sh", "-c", "echo hi"]).await;
    let out = process.wait_with_output().await.unwrap();
    assert_eq!(out.stdout, b"hi\n");
    // The server's last spans end as Exited is delivered.
    let spans = wait_for_spans(&trace_id, |s| count(s, "terminal.deliver") == 2 && has(s, "process")).await;
    let want = "\
exec
  rpc.call
    rpc.dispatch
      process
        process.exit
          terminal.queue
        process.run
        process.spawn
        process.stderr
        process.stdout
          terminal.queue
        terminal.deliver
        terminal.deliver
        terminal.queue
        terminal.queue
    rpc.queue
  rpc.connect
";
    // The HTTP/2 stack's own spans (`FramedWrite::buffer` under the connect), which the
    // export filter of `tracewire_telemetry::init` leaves out, are left out here too.
    let stages: Vec<SpanData> = spans.iter().filter(|s| !s.name.contains("::")).cloned().collect();
    assert_eq!(tree(&stages), want, "{}", tree(&stages));
    let attr = |name: &str, key: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.attributes.iter().find(|kv| kv.key.as_str() == key))
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("rpc.call", "rpc.method").as_deref(), Some("Start"));
    assert_eq!(attr("rpc.dispatch", "tracewire.stage").as_deref(), Some("rpc.dispatch"));
    assert_eq!(attr("process.exit", "process.exit.code").as_deref(), Some("0"));
    assert_eq!(attr("process.stdout", "tracewire.bytes").as_deref(), Some("3"));
    assert!(attr("rpc.call", "tracewire.net.rtt_us").is_some(), "clock correlation recorded");
    assert!(attr("rpc.call", "tracewire.clock.offset_us").is_some());
    assert_eq!(attr("process.spawn", "process.executable.name").as_deref(), Some("sh"));
    // The client's own delivery queue: each event from its decoding to the consumer taking
    // it, under the process the notification belongs to.
    let process = spans.iter().find(|s| s.name == "process").unwrap().span_context.span_id();
    let mut client_events: Vec<String> = spans
        .iter()
        .filter(|s| s.name == "terminal.queue" && s.parent_span_id == process)
        .filter_map(|s| s.attributes.iter().find(|kv| kv.key.as_str() == "tracewire.event"))
        .map(|kv| kv.value.to_string())
        .collect();
    client_events.sort();
    assert_eq!(client_events, ["Exited", "Output"]);
    let exec = named(&spans, "exec");
    assert_root(exec, &spans);
    assert_eq!(attr_of(exec, "process.command_args").as_deref(), Some("sh -c echo hi"));
    assert_eq!(attr_of(exec, "process.exit.code").as_deref(), Some("0"));
    // The exec ends when Exited is handed out, after the client took Output.
    let exited_taken = spans
        .iter()
        .filter(|s| s.name == "terminal.queue" && s.parent_span_id == process)
        .map(|s| s.end_time)
        .max()
        .unwrap();
    assert!(exec.end_time >= exited_taken);

    // The connection's span: in the first exec's trace (no span was current), naming the
    // server.
    let connect = named(&spans, "rpc.connect");
    assert_eq!(connect.parent_span_id, exec.span_context.span_id());
    assert_eq!(attr_of(connect, "server.address").as_deref(), Some(s.address.as_str()));
    assert_eq!(attr_of(connect, "tracewire.stage").as_deref(), Some("rpc.connect"));
    assert_eq!(connect.span_kind, opentelemetry::trace::SpanKind::Client);
}

/// The `rpc.connect` spans naming `address`, in every trace.
fn connects_to(address: &str) -> Vec<SpanData> {
    harness()
        .spans()
        .into_iter()
        .filter(|x| x.name == "rpc.connect" && attr_of(x, "server.address").as_deref() == Some(address))
        .collect()
}

fn since(a: std::time::SystemTime, b: std::time::SystemTime) -> Duration {
    b.duration_since(a).unwrap_or_default()
}

/// With no current span, a connection and three execs are exactly three traces: the
/// first exec's root starts where the connect starts and holds `rpc.connect`, with no
/// uncovered time between the connect and the Start call; the others hold no connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_current_span_connect_and_three_execs_are_three_traces() {
    let (s, c) = traced_server().await;
    let mut traces = Vec::new();
    for _ in 0..3 {
        let (process, trace_id) = start_traced(&c, &["true"]).await;
        traces.push(trace_id);
        assert_eq!(process.wait_with_output().await.unwrap().status.code, Some(0));
    }
    drop(c);
    let mut distinct = traces.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "one trace per exec: {traces:?}");
    let connects = wait_for(|| Some(connects_to(&s.address)).filter(|c| !c.is_empty())).await;
    assert_eq!(connects.len(), 1, "one rpc.connect, and no trace of its own for it");
    let connect = &connects[0];
    assert_eq!(connect.span_context.trace_id().to_string(), traces[0], "the connect is in the first exec's trace");

    let first = spans_with(&traces[0], "exec").await;
    let root = named(&first, "exec");
    assert_root(root, &first);
    assert_eq!(connect.parent_span_id, root.span_context.span_id());
    assert_eq!(attr_of(root, "process.command_args").as_deref(), Some("true"));
    // The root starts at the connect's start (two readings of the clock apart).
    assert!(root.start_time <= connect.start_time);
    assert!(since(root.start_time, connect.start_time) < Duration::from_millis(1));
    // And it tiles: the Start call follows the connect with no uncovered time between.
    let call = first.iter().find(|x| x.name == "rpc.call" && x.parent_span_id == root.span_context.span_id()).unwrap();
    assert!(call.start_time >= connect.end_time);
    assert!(
        since(connect.end_time, call.start_time) < Duration::from_millis(5),
        "{:?}",
        since(connect.end_time, call.start_time)
    );
    for later in &traces[1..] {
        let spans = spans_with(later, "exec").await;
        assert_root(named(&spans, "exec"), &spans);
        assert!(!has(&spans, "rpc.connect"), "{}", tree(&spans));
    }
}

/// A connection whose root no exec adopted (the exec ran under a caller's span) ends
/// that root when the client is dropped: an `exec` root with the `rpc.connect` and no
/// command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_no_exec_adopted_ends_when_the_client_is_dropped() {
    let (s, c) = traced_server().await;
    let caller = tracing::info_span!("agent.step");
    let caller_trace = span_context(&caller).unwrap().trace_id.to_string();
    let out = async { c.start(argv(&["true"])).await.unwrap().wait_with_output().await.unwrap() }
        .instrument(caller.clone())
        .await;
    assert_eq!(out.status.code, Some(0));
    drop(caller);
    let spans = spans_with(&caller_trace, "exec").await;
    assert_eq!(named(&spans, "exec").parent_span_id, named(&spans, "agent.step").span_context.span_id());
    assert!(!has(&spans, "rpc.connect"), "the connect was not the caller's");
    // Still pending: the root has not ended, so its connect is all there is of its trace.
    let connect = wait_for(|| connects_to(&s.address).pop()).await;
    let pending = connect.span_context.trace_id().to_string();
    assert!(!has(&spans_of(&pending), "exec"), "the root ends only with the client");
    drop(c);
    let spans = spans_with(&pending, "exec").await;
    let root = named(&spans, "exec");
    assert_eq!(connect.parent_span_id, root.span_context.span_id());
    assert_root(root, &spans);
    assert_eq!(attr_of(root, "process.command_args"), None);
}

/// `connect_from` and `start_from` with the same carrier: one trace continuing it, the
/// exec's root holding the connect (W3C Trace Context, section 3.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_from_and_start_from_share_the_carriers_trace() {
    harness();
    let s = server().await;
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let parent_id = "10f067aa0ba902b8";
    let tp = format!("00-{trace_id}-{parent_id}-01");
    let carrier = [("traceparent", tp.as_str())];
    let c = tracewire_exec::ExecClient::connect_from(&s.address, &carrier).await.unwrap();
    let out = c.start_from(argv(&["true"]), &carrier).await.unwrap().wait_with_output().await.unwrap();
    assert_eq!(out.status.code, Some(0));
    let spans = exec_continuing(trace_id, parent_id).await;
    let exec = named(&spans, "exec");
    assert_eq!(named(&spans, "rpc.connect").parent_span_id, exec.span_context.span_id(), "{}", tree(&spans));
    assert_eq!(count(&spans, "exec"), 1);
}

/// Polls `get` until it yields; panics after [`WITHIN`].
async fn wait_for<T>(get: impl Fn() -> Option<T>) -> T {
    let get = &get;
    eventually_some_async(WITHIN, move || async move { get() }).await.unwrap()
}

/// A caller with a span of its own: the connection and the exec are its children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_and_rpc_connect_are_children_of_the_callers_span() {
    harness();
    let s = server().await;
    let caller = tracing::info_span!("agent.step");
    let trace_id = span_context(&caller).unwrap().trace_id.to_string();
    let out = async {
        let c = client(&s).await;
        c.start(argv(&["true"])).await.unwrap().wait_with_output().await.unwrap()
    }
    .instrument(caller.clone())
    .await;
    assert_eq!(out.status.code, Some(0));
    drop(caller);
    let spans = wait_for_spans(&trace_id, |s| has(s, "agent.step") && count(s, "terminal.deliver") == 1).await;
    let step = named(&spans, "agent.step").span_context.span_id();
    assert_eq!(named(&spans, "exec").parent_span_id, step, "{}", tree(&spans));
    assert_eq!(named(&spans, "rpc.connect").parent_span_id, step, "{}", tree(&spans));
    let exec = named(&spans, "exec").span_context.span_id();
    assert!(spans.iter().any(|x| x.name == "rpc.call" && x.parent_span_id == exec));
}

/// `start_from` continues the trace in a carrier (W3C Trace Context, section 3.2:
/// `traceparent` names the trace id and the parent id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_continues_the_carriers_trace() {
    let (_server, c) = traced_server().await;
    let (trace_id, parent_id) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let tp = format!("00-{trace_id}-{parent_id}-01");
    let carrier = [("traceparent", tp.as_str())];
    let out = c.start_from(argv(&["true"]), &carrier).await.unwrap().wait_with_output().await.unwrap();
    assert_eq!(out.status.code, Some(0));
    exec_continuing(trace_id, parent_id).await;
}

/// `process.run` is the child's running time: a child that closes its output at once and
/// runs on has its pipe readers end early, and `process.run` lasts until it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_run_covers_the_childs_running_time_not_its_pipes() {
    let (_server, c) = traced_server().await;
    let (process, trace_id) = start_traced(&c, &["sh", "-c", "exec >&- 2>&-; sleep 0.5"]).await;
    let out = process.wait_with_output().await.unwrap();
    assert_eq!(out.status.code, Some(0));
    let spans = spans_with(&trace_id, "process").await;
    let (spawn, run, exit, stdout, proc_span) = (
        named(&spans, "process.spawn"),
        named(&spans, "process.run"),
        named(&spans, "process.exit"),
        named(&spans, "process.stdout"),
        named(&spans, "process"),
    );
    assert_eq!(run.parent_span_id, proc_span.span_context.span_id());
    assert!(
        since(run.start_time, run.end_time) >= Duration::from_millis(480),
        "{:?}",
        since(run.start_time, run.end_time)
    );
    // It starts once the pipe readers are set up, just after the spawn, hence the 20 ms of
    // slack on the 0.5 s the child sleeps.
    assert!(run.start_time >= spawn.end_time, "run starts after the spawn");
    // process.exit takes over as the run ends (two readings of the clock apart).
    assert!(run.end_time >= exit.start_time && since(exit.start_time, run.end_time) < Duration::from_millis(1));
    assert!(stdout.end_time < run.end_time, "the stdout reader ended before the child did");
    assert_eq!(attr_of(run, "process.pid"), attr_of(proc_span, "process.pid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_sees_a_traceparent_in_the_clients_trace() {
    let (_server, c) = traced_server().await;
    let (process, trace_id) = start_traced(&c, &["sh", "-c", "echo $TRACEPARENT"]).await;
    let out = process.wait_with_output().await.unwrap();
    let tp = String::from_utf8(out.stdout).unwrap();
    let tp = tp.trim();
    let parsed = tracewire_context::TraceParent::parse(tp).unwrap();
    assert_eq!(parsed.trace_id.to_string(), trace_id, "{tp}");
    // Its parent is the process span.
    let spans = spans_with(&trace_id, "process").await;
    let process = named(&spans, "process");
    assert_eq!(process.span_context.span_id().to_string(), parsed.parent_id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_child_trace_context_off_the_child_gets_no_trace_variables() {
    harness();
    let mut config = tracewire_exec::ExecConfig::default();
    config.child_trace_context = false;
    let s = server_with(config, tracewire_rpc::ServerConfig::default()).await;
    let c = client(&s).await;
    // A variable the server's environment has still reaches the child: only the trace
    // variables are left out.
    let (process, trace_id) =
        start_traced(&c, &["sh", "-c", "echo \"tp=${TRACEPARENT-unset} ts=${TRACESTATE-unset} path=${PATH:+set}\""])
            .await;
    let out = process.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "tp=unset ts=unset path=set");
    // The process and its spawn are still traced.
    let names = ["process", "process.spawn", "process.exit"];
    let spans = wait_for_spans(&trace_id, |s| names.iter().all(|name| has(s, name))).await;
    for name in names {
        assert!(has(&spans, name), "{name} missing: {}", tree(&spans));
    }
}
