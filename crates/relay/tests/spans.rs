//! The span tree of one remote exec through the relay (relay.forward opted in), through a
//! real pipeline installed once for this test binary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::trace::SpanData;
use tracewire_exec::{ExecClient, ExecConfig, ExecServer, Start};
use tracewire_relay::{LoopbackRelay, RelayConfig, RelayEndpoint};
use tracewire_rpc::ServerConfig;
use tracewire_telemetry::span_context;
use tracewire_telemetry::testing::InMemoryTelemetry;
use tracewire_testkit::eventually_some_async;

fn harness() -> &'static InMemoryTelemetry {
    tracewire_telemetry::testing::install()
}

fn spans_of(trace_id: &str) -> Vec<SpanData> {
    harness().spans_of(trace_id)
}

/// Child names of each span name (sorted, with counts), ids and times left out.
fn children(spans: &[SpanData]) -> HashMap<String, Vec<String>> {
    let by_id: HashMap<_, _> = spans.iter().map(|s| (s.span_context.span_id(), s.name.to_string())).collect();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for s in spans {
        let parent = by_id.get(&s.parent_span_id).cloned().unwrap_or_else(|| "<root>".into());
        out.entry(parent).or_default().push(s.name.to_string());
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

/// A relay (relay.forward opted in) with an exec-server attached to session `session`,
/// and a client connected through it with no current span (the relay stops when the
/// returned [`LoopbackRelay`] is dropped).
async fn relayed(session: &str, config: ExecConfig) -> (LoopbackRelay, ExecClient) {
    let mut ep = RelayEndpoint::new("", session);
    ep.expose_traceparent = true;
    let handler = Arc::new(ExecServer::new(config));
    let relay = LoopbackRelay::start(RelayConfig::default(), ep, handler, ServerConfig::default()).await.unwrap();
    // The exec-server is attached: the client's connect succeeds at its first attempt.
    let client = ExecClient::connect_via(relay.connect()).await.unwrap();
    (relay, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_remote_exec_through_the_relay_span_tree() {
    harness();
    let (relay, client) = relayed("spans", ExecConfig::default()).await;
    // No span of the caller's: tracewire-exec makes the exec's root, which holds the
    // relay's connect.
    let start = Start { argv: vec!["echo".into(), "hi".into()], ..Start::default() };
    let process = client.start(start).await.unwrap();
    let trace_id = span_context(process.span()).unwrap().trace_id.to_string();
    let out = process.wait_with_output().await.unwrap();
    assert_eq!(out.stdout, b"hi\n");

    let trace = trace_id.as_str();
    let tree = eventually_some_async(Duration::from_secs(10), move || async move {
        let tree = children(&spans_of(trace));
        tree.get("process").is_some_and(|c| c.iter().filter(|n| *n == "relay.frame").count() == 2).then_some(tree)
    })
    .await
    .expect("the process span's two relay.frame children are exported");
    let get = |n: &str| tree.get(n).cloned().unwrap_or_default();
    assert_eq!(get("<root>"), ["exec"]);
    assert_eq!(get("exec"), ["rpc.call", "rpc.connect"]);
    // The request crosses the relay under the client's call: sender, relay, receiver stages.
    let hops = |n: usize| {
        let mut v = Vec::new();
        for s in [
            "relay.decode",
            "relay.decrypt",
            "relay.encrypt",
            "relay.forward",
            "relay.frame",
            "relay.recv",
            "relay.send",
        ] {
            v.extend(std::iter::repeat_n(s.to_owned(), n));
        }
        v
    };
    let mut want_call = hops(2); // the request, and the response (which carries the request's context)
    want_call.extend(["rpc.dispatch".to_owned(), "rpc.queue".to_owned()]);
    want_call.sort();
    assert_eq!(get("rpc.call"), want_call);
    assert_eq!(get("rpc.dispatch"), ["process"]);
    // Output and Exited cross the relay under the process span, then wait in the client's
    // delivery queue (terminal.queue) until the consumer takes them.
    let mut want_process = hops(2);
    want_process.extend(
        [
            "process.exit",
            "process.run",
            "process.spawn",
            "process.stderr",
            "process.stdout",
            "terminal.deliver",
            "terminal.deliver",
            "terminal.queue",
            "terminal.queue",
        ]
        .map(str::to_owned),
    );
    want_process.sort();
    assert_eq!(get("process"), want_process);

    // The relay's connect, in the exec's trace (no span was current), and no other.
    let connects: Vec<SpanData> = harness()
        .spans()
        .into_iter()
        .filter(|s| {
            s.name == "rpc.connect" && attr(s, "server.address").as_deref() == Some(relay.address.to_string().as_str())
        })
        .collect();
    assert_eq!(connects.len(), 1);
    assert_eq!(connects[0].span_context.trace_id().to_string(), trace_id);

    // `relay.recv` measures the receipt of each message: from its first record's arrival
    // until the RPC layer took it, so it holds that message's decrypt and decode.
    let spans = spans_of(&trace_id);
    let recvs: Vec<&SpanData> = spans.iter().filter(|s| s.name == "relay.recv").collect();
    assert_eq!(recvs.len(), 4, "request, response, Output, Exited");
    for recv in recvs {
        let same = |name: &str| {
            spans
                .iter()
                .filter(|s| s.name == name && s.parent_span_id == recv.parent_span_id)
                .filter(|s| s.span_context.trace_id() == recv.span_context.trace_id())
                .filter(|s| s.start_time >= recv.start_time && s.end_time <= recv.end_time)
                .count()
        };
        assert!(recv.end_time > recv.start_time, "relay.recv measures an interval");
        assert!(same("relay.decrypt") >= 1 && same("relay.decode") >= 1, "decrypt and decode lie within relay.recv");
        assert_eq!(attr(recv, "tracewire.fragments").as_deref(), Some("1"));
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

/// A message of several records: `relay.recv` runs from its first record's arrival,
/// through the wait for the others, to the RPC layer taking it; `relay.decrypt` (the last
/// record's opening) and `relay.decode` lie at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_recv_covers_the_wait_for_a_messages_records() {
    harness();
    let mut config = ExecConfig::default();
    config.chunk_size = 256 * 1024;
    let (_relay, client) = relayed("records", config).await;
    let start =
        Start { argv: vec!["head".into(), "-c".into(), "1000000".into(), "/dev/zero".into()], ..Start::default() };
    let process = client.start(start).await.unwrap();
    let trace_id = span_context(process.span()).unwrap().trace_id.to_string();
    let out = process.wait_with_output().await.unwrap();
    assert_eq!(out.stdout.len(), 1_000_000);
    let trace = trace_id.as_str();
    let (spans, many) = eventually_some_async(Duration::from_secs(10), move || async move {
        let spans = spans_of(trace);
        let many: Vec<SpanData> = spans
            .iter()
            .filter(|s| s.name == "relay.recv")
            .filter(|s| attr(s, "tracewire.fragments").and_then(|f| f.parse::<u64>().ok()).is_some_and(|f| f > 1))
            .cloned()
            .collect();
        (!many.is_empty()).then_some((spans, many))
    })
    .await
    .expect("an Output message of several records");
    for recv in &many {
        let within = |name: &str| {
            spans
                .iter()
                .filter(|s| s.name == name && s.parent_span_id == recv.parent_span_id)
                .filter(|s| s.start_time >= recv.start_time && s.end_time <= recv.end_time)
                .min_by_key(|s| s.start_time)
                .cloned()
                .unwrap_or_else(|| panic!("no {name} within relay.recv"))
        };
        let decrypt = within("relay.decrypt");
        within("relay.decode");
        // Before the last record was opened, relay.recv was waiting for the others.
        let waited = decrypt.start_time.duration_since(recv.start_time).unwrap_or_default();
        assert!(waited > Duration::ZERO, "relay.recv began at the first record's arrival");
        assert!(recv.end_time.duration_since(recv.start_time).unwrap_or_default() > waited);
    }
}
