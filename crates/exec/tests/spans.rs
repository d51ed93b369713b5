//! The span tree of one remote exec, from the client's call to the delivery of Exited,
//! through a real pipeline (in-memory exporter) installed once for this test binary.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_sdk::trace::SpanData;
use tracewire_telemetry::testing::InMemoryTelemetry;
use tracewire_telemetry::{span_context, stage_span};
use tracing::Instrument;

use common::{argv, client, server, server_with};

fn harness() -> &'static InMemoryTelemetry {
    tracewire_telemetry::testing::install()
}

fn spans_of(trace_id: &str) -> Vec<SpanData> {
    harness().spans_of(trace_id)
}

/// The tree as indented names, children sorted by name: ids and times left out.
fn tree(spans: &[SpanData]) -> String {
    let by_id: HashMap<_, _> = spans.iter().map(|s| (s.span_context.span_id(), s)).collect();
    let mut children: HashMap<Option<opentelemetry::trace::SpanId>, Vec<&SpanData>> = HashMap::new();
    for s in spans {
        let parent = by_id.contains_key(&s.parent_span_id).then_some(s.parent_span_id);
        children.entry(parent).or_default().push(s);
    }
    fn walk(
        out: &mut String,
        children: &HashMap<Option<opentelemetry::trace::SpanId>, Vec<&SpanData>>,
        at: Option<opentelemetry::trace::SpanId>,
        depth: usize,
    ) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_remote_exec_span_tree() {
    harness();
    let s = server().await;
    let c = client(&s).await;
    let root = stage_span!(Exec);
    let trace_id = span_context(&root).unwrap().trace_id.to_string();
    let out = async { c.start(argv(&["sh", "-c", "echo hi"])).await.unwrap().wait_with_output().await.unwrap() }
        .instrument(root)
        .await;
    assert_eq!(out.stdout, b"hi\n");
    // The server's last spans end as Exited is delivered: give them a moment.
    let mut spans = Vec::new();
    for _ in 0..50 {
        spans = spans_of(&trace_id);
        if spans.iter().filter(|s| s.name == "terminal.deliver").count() == 2
            && spans.iter().any(|s| s.name == "process")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want = "\
exec
  rpc.call
    rpc.dispatch
      process
        process.exit
          terminal.queue
        process.spawn
        process.stderr
        process.stdout
          terminal.queue
        terminal.deliver
        terminal.deliver
        terminal.queue
        terminal.queue
    rpc.queue
";
    assert_eq!(tree(&spans), want, "{}", tree(&spans));
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_sees_a_traceparent_in_the_clients_trace() {
    harness();
    let s = server().await;
    let c = client(&s).await;
    let root = stage_span!(Exec);
    let trace_id = span_context(&root).unwrap().trace_id.to_string();
    let out =
        async { c.start(argv(&["sh", "-c", "echo $TRACEPARENT"])).await.unwrap().wait_with_output().await.unwrap() }
            .instrument(root)
            .await;
    let tp = String::from_utf8(out.stdout).unwrap();
    let tp = tp.trim();
    let parsed = tracewire_context::TraceParent::parse(tp).unwrap();
    assert_eq!(parsed.trace_id.to_string(), trace_id, "{tp}");
    // Its parent is the process span.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spans = spans_of(&trace_id);
    let process = spans.iter().find(|s| s.name == "process").unwrap();
    assert_eq!(process.span_context.span_id().to_string(), parsed.parent_id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_child_trace_context_off_the_child_gets_no_trace_variables() {
    harness();
    let mut config = tracewire_exec::ExecConfig::default();
    config.child_trace_context = false;
    let s = server_with(config, tracewire_rpc::ServerConfig::default()).await;
    let c = client(&s).await;
    let root = stage_span!(Exec);
    let trace_id = span_context(&root).unwrap().trace_id.to_string();
    // A variable the server's environment has still reaches the child: only the trace
    // variables are left out.
    let out = async {
        c.start(argv(&["sh", "-c", "echo \"tp=${TRACEPARENT-unset} ts=${TRACESTATE-unset} path=${PATH:+set}\""]))
            .await
            .unwrap()
            .wait_with_output()
            .await
            .unwrap()
    }
    .instrument(root)
    .await;
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "tp=unset ts=unset path=set");
    // The process and its spawn are still traced.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spans = spans_of(&trace_id);
    for name in ["process", "process.spawn", "process.exit"] {
        assert!(spans.iter().any(|s| s.name == name), "{name} missing: {}", tree(&spans));
    }
}
