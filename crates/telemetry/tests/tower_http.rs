//! The tower layers over HTTP: an axum 0.8 app with the server layer (`Router::layer`),
//! hyper-util legacy clients with the client layer, a raw HTTP server that records the
//! headers it received, and a Python OpenTelemetry-instrumented client whose trace the app
//! continues.
#![cfg(all(feature = "tower", feature = "axum", feature = "testing"))]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry_sdk::trace::SpanData;
use tower::{ServiceBuilder, ServiceExt};
use tracewire_telemetry::testing;
use tracewire_telemetry::tower::{ClientLayer, ServerLayer, TraceClient};
use tracewire_testkit::HttpStub;

mod common;
use common::{attr, random_trace, spans_of};

type Traced = TraceClient<Client<HttpConnector, Empty<Bytes>>>;

fn traced_client() -> Traced {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    ServiceBuilder::new().layer(ClientLayer::new()).service(client)
}

/// GETs `url` through the client layer; the status and body.
async fn get_through(client: &Traced, url: &str) -> (u16, String) {
    let request = http::Request::get(url).body(Empty::new()).unwrap();
    let response = client.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[derive(Clone)]
struct App {
    client: Traced,
    downstream: Option<String>,
}

/// `GET /users/{id}`: an `app.work` span, a call to the downstream (when there is one)
/// through the client layer, and an answer naming the trace and baggage it ran in.
async fn user(Path(id): Path<String>, State(app): State<App>) -> String {
    drop(tracing::info_span!("app.work").entered());
    if let Some(url) = &app.downstream {
        let (status, _) = get_through(&app.client, url).await;
        assert_eq!(status, 200);
    }
    let trace = tracewire_telemetry::current_trace_id().map(|t| t.to_string()).unwrap_or_default();
    let cx = tracewire_telemetry::current_context();
    let tenant = cx.baggage().get("tenant").map(ToString::to_string).unwrap_or_default();
    format!("user {id} trace {trace} tenant {tenant}")
}

/// `GET /status/{code}`: answers with that status.
async fn status(Path(code): Path<u16>) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The axum app with the server layer, on a free loopback port.
async fn start_app(downstream: Option<String>) -> SocketAddr {
    let app = Router::new()
        .route("/users/{id}", get(user))
        .route("/status/{code}", get(status))
        .with_state(App { client: traced_client(), downstream })
        .layer(ServerLayer::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn find<'a>(spans: &'a [SpanData], what: &str, f: impl Fn(&SpanData) -> bool) -> &'a SpanData {
    spans.iter().find(|s| f(s)).unwrap_or_else(|| panic!("no {what} in {spans:#?}"))
}

/// HTTP semantic conventions (server and client spans: names `{method} {http.route}` and
/// `{method}`, `http.request.method`, `http.route`, `url.path`, `url.scheme`, `url.full`,
/// `server.address`, `server.port`, `http.response.status_code`): a caller's root, the
/// client span, the app's server span (its remote child), the handler's spans, the app's
/// own client span to a downstream, and on the downstream's wire a traceparent naming that
/// client span (W3C Trace Context, "traceparent Header").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_call_is_one_trace_through_axum_and_hyper_clients() {
    testing::install();
    let stub = HttpStub::start(Duration::ZERO, "text/plain", b"downstream").unwrap();
    let addr = start_app(Some(stub.url("/leaf?sig=secret"))).await;
    let trace = random_trace();
    let root = tracing::info_span!("test.root");
    tracewire_telemetry::set_parent_from(
        &root,
        &[("traceparent", format!("00-{trace}-00f067aa0ba902b7-01").as_str()), ("baggage", "tenant=acme")],
    );
    let client = traced_client();
    let url = format!("http://{addr}/users/7");
    let (status, body) = tracing::Instrument::instrument(get_through(&client, &url), root).await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("user 7 trace {trace} tenant acme"), "the handler ran in the continued context");

    let spans = spans_of(&trace, 5).await;
    let root = find(&spans, "root", |s| s.name == "test.root");
    let outer = find(&spans, "outer client span", |s| {
        s.span_kind == SpanKind::Client && s.parent_span_id == root.span_context.span_id()
    });
    let server = find(&spans, "server span", |s| s.span_kind == SpanKind::Server);
    let work = find(&spans, "app.work", |s| s.name == "app.work");
    let inner = find(&spans, "inner client span", |s| {
        s.span_kind == SpanKind::Client && s.parent_span_id == server.span_context.span_id()
    });

    assert_eq!(server.parent_span_id, outer.span_context.span_id(), "the server continues the client span");
    assert!(server.parent_span_is_remote);
    assert_eq!(work.parent_span_id, server.span_context.span_id(), "the handler runs in the server span");

    assert_eq!(server.name, "GET /users/{id}");
    assert_eq!(attr(server, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(server, "http.route").as_deref(), Some("/users/{id}"));
    assert_eq!(attr(server, "url.path").as_deref(), Some("/users/7"));
    assert_eq!(attr(server, "url.scheme").as_deref(), Some("http"));
    assert_eq!(attr(server, "network.protocol.version").as_deref(), Some("1.1"));
    assert_eq!(attr(server, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(server.status, Status::Unset);

    assert_eq!(outer.name, "GET");
    assert_eq!(attr(outer, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attr(outer, "url.full").as_deref(), Some(url.as_str()));
    assert_eq!(attr(outer, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr(outer, "server.port"), Some(addr.port().to_string()));
    assert_eq!(attr(outer, "http.response.status_code").as_deref(), Some("200"));
    // `url.full` redacts the values of signature parameters.
    assert_eq!(attr(inner, "url.full"), Some(stub.url("/leaf?sig=REDACTED")));

    // On the downstream's wire: exactly one traceparent, naming the app's client span, and
    // the baggage that came in with the request.
    let received = stub.received();
    assert_eq!(received.len(), 1);
    let expected = format!("00-{trace}-{}-01", inner.span_context.span_id());
    assert_eq!(received[0].header_values("traceparent"), [expected.as_str()]);
    assert_eq!(received[0].header_values("baggage"), ["tenant=acme"]);
}

/// HTTP semantic conventions, "Status": a server span is an error for 5xx only (a 4xx is
/// the client's error), a client span for 4xx and 5xx; `error.type` is the status code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_status_codes_set_the_span_status_per_side() {
    testing::install();
    let addr = start_app(None).await;
    for (code, server_error, client_error) in [(200u16, false, false), (404, false, true), (503, true, true)] {
        let trace = random_trace();
        let root = tracing::info_span!("test.root");
        tracewire_telemetry::set_parent_from(&root, &[("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))]);
        let url = format!("http://{addr}/status/{code}");
        let (status, _) = tracing::Instrument::instrument(get_through(&traced_client(), &url), root).await;
        assert_eq!(status, code);
        let spans = spans_of(&trace, 3).await;
        let client = find(&spans, "client span", |s| s.span_kind == SpanKind::Client);
        let server = find(&spans, "server span", |s| s.span_kind == SpanKind::Server);
        assert_eq!(server.name, "GET /status/{code}");
        for (span, error) in [(client, client_error), (server, server_error)] {
            assert_eq!(attr(span, "http.response.status_code"), Some(code.to_string()));
            if error {
                assert!(matches!(span.status, Status::Error { .. }), "{code}: {span:#?}");
                assert_eq!(attr(span, "error.type"), Some(code.to_string()));
            } else {
                assert_eq!(span.status, Status::Unset, "{code}: {span:#?}");
                assert_eq!(attr(span, "error.type"), None);
            }
        }
    }
}

/// A client that cannot connect: the client span is an error, named by the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_connection_is_an_error_on_the_client_span() {
    testing::install();
    // A port nothing listens on: bound, then closed.
    let port = tracewire_testkit::free_port();
    let trace = random_trace();
    let root = tracing::info_span!("test.root");
    tracewire_telemetry::set_parent_from(&root, &[("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))]);
    let request = http::Request::get(format!("http://127.0.0.1:{port}/x")).body(Empty::new()).unwrap();
    let result = tracing::Instrument::instrument(traced_client().oneshot(request), root).await;
    assert!(result.is_err());
    let spans = spans_of(&trace, 2).await;
    let client = find(&spans, "client span", |s| s.span_kind == SpanKind::Client);
    assert!(matches!(client.status, Status::Error { .. }), "{client:#?}");
    assert_eq!(attr(client, "error.type").as_deref(), Some("_OTHER"));
    assert_eq!(attr(client, "http.response.status_code"), None);
}

/// A path no route matches: the route is unknown, so the span is named by the method alone
/// and has no `http.route` (HTTP semantic conventions, `http.route`: only when known).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmatched_path_has_no_route() {
    testing::install();
    let addr = start_app(None).await;
    let trace = random_trace();
    let request = http::Request::get(format!("http://{addr}/nowhere"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 404);
    let spans = spans_of(&trace, 1).await;
    let server = find(&spans, "server span", |s| s.span_kind == SpanKind::Server);
    assert_eq!(server.name, "GET");
    assert_eq!(attr(server, "http.route"), None);
    assert_eq!(attr(server, "url.path").as_deref(), Some("/nowhere"));
    assert_eq!(server.status, Status::Unset);
}

fn python_client() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/tower_client.py")
}

/// A Python client instrumented with the OpenTelemetry SDK (its own span, injected with its
/// W3C trace-context and baggage propagators into urllib's headers) calls the axum app: the
/// app's server span continues Python's trace, with Python's span as its (remote) parent,
/// and the handler sees Python's baggage (W3C Trace Context, "traceparent Header"; W3C
/// Baggage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_layer_continues_a_python_opentelemetry_trace() {
    testing::install();
    let addr = start_app(None).await;
    let url = format!("http://{addr}/users/py");
    let out = tokio::task::spawn_blocking(move || tracewire_testkit::run_python(&python_client(), &[&url], &[]))
        .await
        .unwrap()
        .unwrap();
    let fields: Vec<&str> = out.trim().splitn(4, ' ').collect();
    let (trace, parent, status, body) = (fields[0], fields[1], fields[2], fields[3]);
    assert_eq!(status, "200");
    assert_eq!(body, format!("user py trace {trace} tenant acme"));

    let spans = spans_of(trace, 2).await;
    let server = find(&spans, "server span", |s| s.span_kind == SpanKind::Server);
    assert_eq!(server.span_context.trace_id().to_string(), trace, "python's trace id");
    assert_eq!(server.parent_span_id, SpanId::from_hex(parent).unwrap(), "python's span is the parent");
    assert!(server.parent_span_is_remote);
    assert_eq!(server.name, "GET /users/{id}");
}
