//! The tower layers with a real tonic 0.14 server (`Server::builder().layer(ServerLayer)`)
//! and channel (`ServiceBuilder::new().layer(ClientLayer).service(channel)`) on loopback:
//! span trees across client and server, the semantic-convention attributes and status, and
//! the trace context the server received on the wire.
#![cfg(all(feature = "tower", feature = "testing"))]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::trace::SpanData;
use tonic::codegen::http;
use tower::ServiceBuilder;
use tracewire_telemetry::testing;
use tracewire_telemetry::tower::{ClientLayer, ServerLayer};

mod common;
use common::{attr, random_trace, spans_of};

#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
}

/// Trace context headers as the server's handler received them (from the wire).
#[derive(Debug, Clone, Default)]
struct Seen {
    traceparent: Option<String>,
    tracestate: Option<String>,
    baggage: Option<String>,
}

/// `test.Greeter`, written by hand as tonic-build would generate it. `SayHello` answers
/// `hello NAME`, or `INTERNAL` for `fail`, `NOT_FOUND` for `missing`; its handler records
/// the metadata it got and runs a `greeter.handle` span. `Count` streams two replies, then
/// ends with `UNAVAILABLE` (in the trailers, after the response has started).
#[derive(Clone, Default)]
struct Greeter {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl tonic::server::NamedService for Greeter {
    const NAME: &'static str = "test.Greeter";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Greeter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let seen = Arc::clone(&self.seen);
        if request.uri().path() == "/test.Greeter/Count" {
            return Box::pin(async move {
                let handler = tower::service_fn(|request: tonic::Request<HelloRequest>| {
                    let name = request.into_inner().name;
                    let replies = vec![
                        Ok(HelloReply { message: format!("{name} 1") }),
                        Ok(HelloReply { message: format!("{name} 2") }),
                        Err(tonic::Status::unavailable("gone")),
                    ];
                    std::future::ready(Ok(tonic::Response::new(futures_util::stream::iter(replies))))
                });
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<HelloReply, HelloRequest>::default());
                Ok(grpc.server_streaming(handler, request).await)
            });
        }
        Box::pin(async move {
            let handler = tower::service_fn(move |request: tonic::Request<HelloRequest>| {
                let md = request.metadata();
                let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
                seen.lock().unwrap().push(Seen {
                    traceparent: get("traceparent"),
                    tracestate: get("tracestate"),
                    baggage: get("baggage"),
                });
                let _work = tracing::info_span!("greeter.handle").entered();
                let name = request.into_inner().name;
                std::future::ready(match name.as_str() {
                    "fail" => Err(tonic::Status::internal("boom: 100%")),
                    "missing" => Err(tonic::Status::not_found("no such greeting")),
                    _ => Ok(tonic::Response::new(HelloReply { message: format!("hello {name}") })),
                })
            });
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<HelloReply, HelloRequest>::default());
            Ok(grpc.unary(handler, request).await)
        })
    }
}

/// A tonic server with the server layer on a free loopback port.
async fn start_server(greeter: Greeter) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(ServerLayer::new())
            .add_service(greeter)
            .serve_with_incoming(incoming),
    );
    addr
}

/// Calls `SayHello(name)` through a channel with the client layer, inside a root span that
/// continues `traceparent` with `tracestate` `vendor=x` and baggage `user=ada`.
async fn say_hello(addr: std::net::SocketAddr, traceparent: &str, name: &str) -> Result<String, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let traced =
        ServiceBuilder::new().layer(ClientLayer::new().with_server_address("127.0.0.1", addr.port())).service(channel);
    let mut grpc = tonic::client::Grpc::new(traced);
    let root = tracing::info_span!("test.root");
    tracewire_telemetry::set_parent_from(
        &root,
        &[("traceparent", traceparent), ("tracestate", "vendor=x"), ("baggage", "user=ada")],
    );
    let call = async {
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = http::uri::PathAndQuery::from_static("/test.Greeter/SayHello");
        let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
        grpc.unary(tonic::Request::new(HelloRequest { name: name.to_owned() }), path, codec).await
    };
    let reply = tracing::Instrument::instrument(call, root).await?;
    Ok(reply.into_inner().message)
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name} in {spans:#?}"))
}

/// gRPC semantic conventions ("Semantic Conventions for gRPC", span attributes
/// `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`): one trace from the
/// caller's root through the CLIENT span to the SERVER span and the handler's span, the
/// server's parent being the client span (remote), and the client span's context being what
/// the server received on the wire (W3C Trace Context, "traceparent Header";
/// tracestate and baggage passed on unchanged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_is_one_trace_from_client_to_handler() {
    testing::install();
    let greeter = Greeter::default();
    let addr = start_server(greeter.clone()).await;
    let trace = random_trace();
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    assert_eq!(say_hello(addr, &traceparent, "ada").await.unwrap(), "hello ada");

    let spans = spans_of(&trace, 4).await;
    let root = named(&spans, "test.root");
    let client = named(&spans, "test.Greeter/SayHello");
    let handler = named(&spans, "greeter.handle");
    let server = spans
        .iter()
        .find(|s| s.name == "test.Greeter/SayHello" && s.span_kind == SpanKind::Server)
        .unwrap_or_else(|| panic!("no server span in {spans:#?}"));
    let client = if client.span_kind == SpanKind::Client {
        client
    } else {
        spans.iter().find(|s| s.name == "test.Greeter/SayHello" && s.span_kind == SpanKind::Client).unwrap()
    };

    assert_eq!(client.parent_span_id, root.span_context.span_id(), "the client span is the caller's child");
    assert_eq!(server.parent_span_id, client.span_context.span_id(), "the server continues the client span");
    assert!(server.parent_span_is_remote);
    assert_eq!(handler.parent_span_id, server.span_context.span_id(), "the handler runs in the server span");

    for span in [client, server] {
        assert_eq!(attr(span, "rpc.system").as_deref(), Some("grpc"));
        assert_eq!(attr(span, "rpc.service").as_deref(), Some("test.Greeter"));
        assert_eq!(attr(span, "rpc.method").as_deref(), Some("SayHello"));
        assert_eq!(attr(span, "rpc.grpc.status_code").as_deref(), Some("0"), "from the trailers: {span:#?}");
        assert_eq!(span.status, Status::Unset);
        assert_eq!(attr(span, "error.type"), None);
    }
    assert_eq!(attr(client, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr(client, "server.port"), Some(addr.port().to_string()));
    assert_eq!(attr(server, "network.protocol.version").as_deref(), Some("2"));
    // The server span continues the caller's tracestate; its baggage reached the server.
    assert_eq!(server.span_context.trace_state().header(), "vendor=x");

    let seen = greeter.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let expected = format!("00-{trace}-{}-01", client.span_context.span_id());
    assert_eq!(seen[0].traceparent.as_deref(), Some(expected.as_str()), "on the wire: the client span");
    assert_eq!(seen[0].tracestate.as_deref(), Some("vendor=x"));
    assert_eq!(seen[0].baggage.as_deref(), Some("user=ada"));
}

/// gRPC semantic conventions, "gRPC Status": a server span is an error only for the codes
/// that mean the server failed (`INTERNAL` is; `NOT_FOUND` is not), a client span for every
/// code but `OK`. These come back as trailers-only responses (`grpc-status` in the headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_codes_set_the_span_status_per_side() {
    testing::install();
    let addr = start_server(Greeter::default()).await;
    for (name, code, code_name, server_error) in [("fail", 13, "INTERNAL", true), ("missing", 5, "NOT_FOUND", false)] {
        let trace = random_trace();
        let status = say_hello(addr, &format!("00-{trace}-00f067aa0ba902b7-01"), name).await.unwrap_err();
        assert_eq!(status.code() as i32, code);
        let spans = spans_of(&trace, 4).await;
        let of_kind = |kind: SpanKind| {
            spans.iter().find(|s| s.span_kind == kind).unwrap_or_else(|| panic!("no {kind:?} span in {spans:#?}"))
        };
        let (client, server) = (of_kind(SpanKind::Client), of_kind(SpanKind::Server));
        assert_eq!(server.parent_span_id, client.span_context.span_id());
        for span in [client, server] {
            assert_eq!(attr(span, "rpc.grpc.status_code"), Some(code.to_string()), "{span:#?}");
        }
        assert!(matches!(client.status, Status::Error { .. }), "client, {name}: {:?}", client.status);
        assert_eq!(attr(client, "error.type").as_deref(), Some(code_name));
        if server_error {
            // The description is grpc-message, percent-decoded.
            assert_eq!(server.status, Status::error("boom: 100%"));
            assert_eq!(attr(server, "error.type").as_deref(), Some(code_name));
        } else {
            assert_eq!(server.status, Status::Unset, "a NOT_FOUND is not the server's failure");
            assert_eq!(attr(server, "error.type"), None);
        }
    }
}

/// A call without trace context starts a new trace at the server (counted, marked
/// `tracewire.propagation.started`), and the handler still runs in the server span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_without_context_starts_a_trace_at_the_server() {
    testing::install();
    let greeter = Greeter::default();
    let addr = start_server(greeter.clone()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/test.Greeter/SayHello");
    let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
    let mut request = tonic::Request::new(HelloRequest { name: "plain".into() });
    request.metadata_mut().insert("x-marker", "no-context".parse().unwrap());
    grpc.unary(request, path, codec).await.unwrap();
    assert_eq!(greeter.seen.lock().unwrap()[0].traceparent, None);

    let new_root = || async {
        let spans = testing::install().spans();
        let server = spans.iter().find(|s| {
            s.span_kind == SpanKind::Server
                && s.name == "test.Greeter/SayHello"
                && attr(s, "tracewire.propagation.started").is_some()
        })?;
        let handler = spans
            .iter()
            .find(|h| h.name == "greeter.handle" && h.span_context.trace_id() == server.span_context.trace_id())?;
        Some((server.clone(), handler.clone()))
    };
    let (server, handler) = tracewire_testkit::eventually_some_async(common::WAIT, new_root)
        .await
        .unwrap_or_else(|_| panic!("no new-root server span in {:#?}", testing::install().spans()));
    assert_eq!(server.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert_eq!(attr(&server, "tracewire.propagation.started").as_deref(), Some("missing"));
    assert_eq!(handler.parent_span_id, server.span_context.span_id());
}

/// A status in the trailers, after a streaming response has started (gRPC over HTTP/2,
/// "Responses": `Response-Headers *Length-Prefixed-Message Trailers`): both spans read it
/// there; `UNAVAILABLE` is an error on both sides (gRPC semantic conventions, "gRPC Status").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_in_the_trailers_of_a_stream_is_recorded() {
    testing::install();
    let addr = start_server(Greeter::default()).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let traced =
        ServiceBuilder::new().layer(ClientLayer::new().with_server_address("127.0.0.1", addr.port())).service(channel);
    let mut grpc = tonic::client::Grpc::new(traced);
    let trace = random_trace();
    let root = tracing::info_span!("test.root");
    tracewire_telemetry::set_parent_from(&root, &[("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))]);
    let call = async {
        grpc.ready().await.unwrap();
        let path = http::uri::PathAndQuery::from_static("/test.Greeter/Count");
        let codec = tonic_prost::ProstCodec::<HelloRequest, HelloReply>::default();
        let mut stream = grpc
            .server_streaming(tonic::Request::new(HelloRequest { name: "n".into() }), path, codec)
            .await?
            .into_inner();
        let mut got = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(reply)) => got.push(reply.message),
                Ok(None) => return Ok::<_, tonic::Status>((got, None)),
                Err(status) => return Ok((got, Some(status))),
            }
        }
    };
    let (got, status) = tracing::Instrument::instrument(call, root).await.unwrap();
    assert_eq!(got, ["n 1", "n 2"]);
    assert_eq!(status.map(|s| s.code()), Some(tonic::Code::Unavailable));

    let spans = spans_of(&trace, 3).await;
    for kind in [SpanKind::Client, SpanKind::Server] {
        let span = spans
            .iter()
            .find(|s| s.span_kind == kind && s.name == "test.Greeter/Count")
            .unwrap_or_else(|| panic!("no {kind:?} span in {spans:#?}"));
        assert_eq!(attr(span, "rpc.grpc.status_code").as_deref(), Some("14"), "{span:#?}");
        assert_eq!(span.status, Status::error("gone"), "{kind:?}");
        assert_eq!(attr(span, "error.type").as_deref(), Some("UNAVAILABLE"));
    }
}
