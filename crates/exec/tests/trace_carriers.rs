//! What the envelopes a server sends carry as trace context, for every kind of incoming
//! carrier: never a value the server refused, and the context the server used. A real
//! exec-server over gRPC, real processes, spans from a real pipeline (in-memory exporter)
//! installed once for this test binary.

mod common;

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tracewire_context::{TraceCarrier, TraceParent};
use tracewire_proto::v1::{Envelope, Request, Response, envelope::Body, request::Method, response};
use tracewire_rpc::Link;
use tracewire_rpc::grpc::{Address, connect};
use tracewire_testkit::eventually_async;

use common::{argv, server};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn carrier(traceparent: &str, tracestate: &str, baggage: &str) -> tracewire_proto::v1::TraceCarrier {
    TraceCarrier { traceparent: traceparent.into(), tracestate: tracestate.into(), baggage: baggage.into() }.into()
}

fn envelope(id: u64, trace: tracewire_proto::v1::TraceCarrier, method: Option<Method>) -> Bytes {
    Bytes::from(
        Envelope { id, trace: Some(trace), timing: None, body: Some(Body::Request(Request { method })) }
            .encode_to_vec(),
    )
}

/// Sends a Start of `echo hi` with `trace`; returns the response and the process's
/// notifications (through Exited).
async fn exec_with(link: &mut Link, id: u64, trace: tracewire_proto::v1::TraceCarrier) -> (Envelope, Vec<Envelope>) {
    link.tx.send(envelope(id, trace, Some(Method::Start(argv(&["sh", "-c", "echo hi"]))))).await.unwrap();
    let (mut reply, mut notes) = (None, Vec::new());
    let mut exited = false;
    while reply.is_none() || !exited {
        let frame = tokio::time::timeout(Duration::from_secs(10), link.rx.recv()).await.unwrap().unwrap();
        let env = Envelope::decode(frame).unwrap();
        match &env.body {
            Some(Body::Response(_)) => reply = Some(env),
            Some(Body::Notification(n)) => {
                exited |= matches!(n.event, Some(tracewire_proto::v1::notification::Event::Exited(_)));
                notes.push(env);
            }
            _ => panic!("unexpected {env:?}"),
        }
    }
    let reply = reply.unwrap();
    assert_eq!(reply.id, id);
    assert!(
        matches!(&reply.body, Some(Body::Response(Response { result: Some(response::Result::Started(_)) }))),
        "{reply:?}"
    );
    (reply, notes)
}

fn carrier_of(env: &Envelope) -> TraceCarrier {
    env.trace.clone().map(Into::into).unwrap_or_default()
}

/// Whether the `rpc.dispatch` span of request `id` is exported in trace `trace_id` (waits
/// 10 s at most).
async fn dispatch_span_in(trace_id: &str, id: u64) -> bool {
    let harness = tracewire_telemetry::testing::install();
    let id = id.to_string();
    let id = id.as_str();
    eventually_async(Duration::from_secs(10), move || async move {
        harness.spans_of(trace_id).iter().any(|s| {
            s.name == "rpc.dispatch"
                && s.attributes.iter().any(|kv| kv.key.as_str() == "rpc.request.id" && kv.value.to_string() == id)
        })
    })
    .await
    .is_ok()
}

/// W3C Trace Context Level 2, section "traceparent Header": an invalid value (not the
/// format, version `ff`, an all-zero trace-id or parent-id) is not continued, and section
/// "Mutating the traceparent Field" / "tracestate Header": the tracestate of an invalid
/// traceparent is discarded. The response then names the new trace the server ran the
/// request in, and never repeats what it refused; so do the process's notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_is_never_echoed_and_the_response_names_the_servers_trace() {
    tracewire_telemetry::testing::install();
    let s = server().await;
    let mut link = connect(&s.address.parse::<Address>().unwrap()).await.unwrap();
    let invalid = [
        "garbage".to_owned(),
        format!("ff-{TRACE}-{PARENT}-01"),
        format!("00-{}-{PARENT}-01", "0".repeat(32)),
        format!("00-{TRACE}-{}-01", "0".repeat(16)),
        format!("00-{TRACE}-{PARENT}-01-too-long-for-version-00"),
    ];
    for (i, bad) in invalid.iter().enumerate() {
        let id = i as u64 + 1;
        let (reply, notes) = exec_with(&mut link, id, carrier(bad, "vendor=1", "=not a member")).await;
        let got = carrier_of(&reply);
        let parsed = TraceParent::parse(&got.traceparent).unwrap_or_else(|e| panic!("{bad:?} -> {got:?}: {e}"));
        assert_ne!(got.traceparent, *bad);
        assert_ne!(parsed.trace_id.to_string(), TRACE, "{bad:?}: a new trace");
        assert_eq!((got.tracestate.as_str(), got.baggage.as_str()), ("", ""), "{bad:?}: nothing refused comes back");
        let trace_id = parsed.trace_id.to_string();
        assert!(dispatch_span_in(&trace_id, id).await, "{bad:?}: the response names the rpc.dispatch span's trace");
        assert!(!notes.is_empty());
        for n in &notes {
            let c = carrier_of(n);
            let p = TraceParent::parse(&c.traceparent).unwrap_or_else(|e| panic!("{bad:?}: notification {c:?}: {e}"));
            assert_eq!(p.trace_id.to_string(), trace_id, "{bad:?}: notifications are in the same trace");
            assert_eq!((c.tracestate.as_str(), c.baggage.as_str()), ("", ""));
        }
    }
}

/// A valid context is the caller's, as the server read it: a higher version's traceparent
/// comes back as version `00` (section "Versioning of traceparent"), an invalid tracestate
/// is dropped whole, invalid baggage members are dropped (W3C Baggage, "Limits": a
/// receiver may drop what it cannot parse), valid ones kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_context_comes_back_as_the_server_read_it() {
    tracewire_telemetry::testing::install();
    let s = server().await;
    let mut link = connect(&s.address.parse::<Address>().unwrap()).await.unwrap();
    let exact = format!("00-{TRACE}-{PARENT}-01");
    for (id, (traceparent, tracestate, baggage), want) in [
        ((exact.as_str(), "vendor=1,other=2", "k=v"), (exact.as_str(), "vendor=1,other=2", "k=v")),
        ((&*format!("01-{TRACE}-{PARENT}-01-future"), "", ""), (exact.as_str(), "", "")),
        ((exact.as_str(), "bad key=1", "k=v,=nope"), (exact.as_str(), "", "k=v")),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (input, want))| (i as u64 + 1, input, want))
    {
        let (reply, _) = exec_with(&mut link, id, carrier(traceparent, tracestate, baggage)).await;
        let got = carrier_of(&reply);
        assert_eq!(
            (got.traceparent.as_str(), got.tracestate.as_str(), got.baggage.as_str()),
            want,
            "{traceparent:?} {tracestate:?} {baggage:?}"
        );
    }
}

/// An error answered before dispatch (here `UNKNOWN_METHOD`) started no span: it carries
/// the caller's context when valid, and nothing when not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_before_dispatch_never_echoes_an_invalid_context() {
    let s = server().await;
    let mut link = connect(&s.address.parse::<Address>().unwrap()).await.unwrap();
    let exact = format!("00-{TRACE}-{PARENT}-01");
    for (id, traceparent, want) in [(1, "garbage", ""), (2, exact.as_str(), exact.as_str())] {
        link.tx.send(envelope(id, carrier(traceparent, "vendor=1", ""), None)).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(10), link.rx.recv()).await.unwrap().unwrap();
        let reply = Envelope::decode(frame).unwrap();
        assert_eq!(reply.id, id);
        let got = carrier_of(&reply);
        assert_eq!(got.traceparent, want, "{traceparent:?}");
        let tracestate = if want.is_empty() { "" } else { "vendor=1" };
        assert_eq!(got.tracestate, tracestate, "{traceparent:?}");
    }
}
