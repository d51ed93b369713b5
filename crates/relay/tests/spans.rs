//! The span tree of one remote exec through the relay (relay.forward opted in), through a
//! real pipeline installed once for this test binary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::trace::SpanData;
use tracewire_exec::{ExecClient, ExecConfig, ExecServer, Start};
use tracewire_relay::{Keypair, RelayConfig, RelayEndpoint, RelayServer};
use tracewire_rpc::{Client, ClientConfig, ServerConfig};
use tracewire_telemetry::testing::InMemoryTelemetry;
use tracewire_telemetry::{span_context, stage_span};
use tracing::Instrument;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_remote_exec_through_the_relay_span_tree() {
    harness();
    let (listener, addr) = RelayServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    tokio::spawn(RelayServer::new(RelayConfig::default()).serve(listener, std::future::pending()));
    let mut ep = RelayEndpoint::new(addr.to_string(), "spans");
    ep.expose_traceparent = true;
    let kp = Keypair::generate().unwrap();
    let key = kp.public;
    tokio::spawn(tracewire_relay::serve_via_relay(
        ep.clone(),
        kp,
        Arc::new(ExecServer::new(ExecConfig::default())),
        ServerConfig::default(),
        std::future::pending(),
    ));
    let link = tracewire_relay::connect(&ep, &key).await.unwrap();
    let client = ExecClient::new(Client::new(link, ClientConfig::default()));
    let root = stage_span!(Exec);
    let trace_id = span_context(&root).unwrap().trace_id.to_string();
    let start = Start { argv: vec!["echo".into(), "hi".into()], ..Start::default() };
    let out = async { client.start(start).await.unwrap().wait_with_output().await.unwrap() }.instrument(root).await;
    assert_eq!(out.stdout, b"hi\n");

    let mut tree = HashMap::new();
    for _ in 0..100 {
        tree = children(&spans_of(&trace_id));
        if tree.get("process").is_some_and(|c| c.iter().filter(|n| *n == "relay.frame").count() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let get = |n: &str| tree.get(n).cloned().unwrap_or_default();
    assert_eq!(get("<root>"), ["exec"]);
    assert_eq!(get("exec"), ["rpc.call"]);
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
            "relay.reorder",
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
}
