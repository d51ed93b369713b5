//! Tower middleware (feature `tower`): a server layer that continues the caller's trace and
//! a client layer that propagates the current one, for anything built on `tower` and `http`
//! (tonic 0.14 servers and channels, axum 0.8, hyper-util clients).
//!
//! - [`ServerLayer`]: reads `traceparent`, `tracestate` and `baggage` from the request
//!   headers (gRPC metadata are HTTP/2 headers) by tracewire's propagation policy
//!   ([`crate::set_parent_from`]), opens a SERVER span with the OpenTelemetry
//!   semantic-convention attributes, and runs the inner service's future inside it, so what
//!   the handler does is its child.
//! - [`ClientLayer`]: opens a CLIENT span as a child of the current span, writes its context
//!   (and the baggage of the current context) into the request headers, and runs the inner
//!   service's future inside it.
//!
//! A request whose `content-type` is `application/grpc` (or `application/grpc+...`) is a
//! gRPC call: the span is named `{rpc.service}/{rpc.method}` and carries `rpc.system`,
//! `rpc.service`, `rpc.method` and `rpc.grpc.status_code`, read from the `grpc-status`
//! header of a trailers-only response or from the trailers at the end of the response body.
//! Any other request is an HTTP call: `{method} {http.route}` (the route when known: axum's
//! `MatchedPath` with the feature `axum`) or `{method}` on a server, `{method}` on a client.
//!
//! Span status follows the semantic conventions: an HTTP server span is an error for a 5xx
//! response (a 4xx is the client's error, not the server's), an HTTP client span for a 4xx
//! or 5xx; a gRPC server span for `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`,
//! `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS`, a gRPC client span for any code but `OK`; both
//! for an error of the inner service. An error sets `error.type`.
//!
//! The span ends when the response body ends (or is dropped), so a streaming response is
//! timed whole; polling the body runs inside the span too.
//!
//! ```
//! use tracewire_telemetry::tower::{ClientLayer, ServerLayer};
//!
//! // tonic: `Server::builder().layer(ServerLayer::new())`,
//! //        `ServiceBuilder::new().layer(ClientLayer::new()).service(channel)`;
//! // axum:  `Router::new().route(...).layer(ServerLayer::new())`;
//! // hyper-util: `ServiceBuilder::new().layer(ClientLayer::new()).service(client)`.
//! let (_server, _client) = (ServerLayer::new(), ClientLayer::new());
//! ```

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tracing::Span;
use tracing::field::Empty;

/// Which end of a call a span describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// What the middleware learnt from the request that the response needs.
#[derive(Debug, Clone, Copy)]
struct Call {
    side: Side,
    grpc: bool,
}

/// The server layer: continues the incoming trace in a SERVER span around the inner
/// service. See the [module documentation](self).
///
/// With tonic (`Server::builder().layer(...)`):
///
/// ```no_run
/// use tracewire_telemetry::tower::ServerLayer;
///
/// # async fn run<S>(service: S) -> Result<(), tonic::transport::Error>
/// # where
/// #     S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
/// #         + tonic::server::NamedService + Clone + Send + Sync + 'static,
/// #     S::Response: axum::response::IntoResponse,
/// #     S::Future: Send + 'static,
/// # {
/// tonic::transport::Server::builder()
///     .layer(ServerLayer::new())
///     .add_service(service) // e.g. a generated `GreeterServer::new(...)`
///     .serve("127.0.0.1:50051".parse().unwrap())
///     .await
/// # }
/// ```
///
/// With axum (`Router::layer`, so that the route template is known):
///
/// ```no_run
/// use axum::Router;
/// use axum::routing::get;
/// use tracewire_telemetry::tower::ServerLayer;
///
/// # async fn run() -> std::io::Result<()> {
/// let app = Router::new()
///     .route("/users/{id}", get(|| async { "hello" }))
///     .layer(ServerLayer::new());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerLayer {
    _private: (),
}

impl ServerLayer {
    /// The server layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> ::tower::Layer<S> for ServerLayer {
    type Service = TraceServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceServer { inner }
    }
}

/// The service [`ServerLayer`] makes.
#[derive(Debug, Clone)]
pub struct TraceServer<S> {
    inner: S,
}

impl<S, B, R> ::tower::Service<Request<B>> for TraceServer<S>
where
    S: ::tower::Service<Request<B>, Response = Response<R>>,
    S::Error: Display,
    R: Body,
{
    type Response = Response<TracedBody<R>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (span, call) = server_span(&request);
        crate::set_parent_from(&span, request.headers());
        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture { inner, span: Some(span), call }
    }
}

/// The client layer: a CLIENT span around the inner service, whose context goes out in the
/// request headers. See the [module documentation](self).
///
/// A tonic channel adds the server's scheme and authority to the URI only inside the
/// channel, so this layer, outside it, sees a path only: give it the server's address with
/// [`Self::with_server_address`] for `server.address` and `server.port`.
///
/// ```no_run
/// use tower::ServiceBuilder;
/// use tracewire_telemetry::tower::ClientLayer;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect().await?;
/// let traced = ServiceBuilder::new()
///     .layer(ClientLayer::new().with_server_address("127.0.0.1", 50051))
///     .service(channel);
/// let mut grpc = tonic::client::Grpc::new(traced); // or a generated `GreeterClient::new(traced)`
/// # let _ = &mut grpc;
/// # Ok(())
/// # }
/// ```
///
/// With a hyper-util client:
///
/// ```no_run
/// use http_body_util::{BodyExt, Empty};
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::{Service, ServiceBuilder, ServiceExt};
/// use tracewire_telemetry::tower::ClientLayer;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
/// let mut traced = ServiceBuilder::new().layer(ClientLayer::new()).service(client);
/// let request = http::Request::get("http://127.0.0.1:8080/hello").body(Empty::new())?;
/// let response = traced.ready().await?.call(request).await?;
/// let body = response.into_body().collect().await?.to_bytes();
/// # let _ = body;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientLayer {
    server: Option<(Arc<str>, u16)>,
}

impl ClientLayer {
    /// The client layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `server.address` and `server.port` of requests whose URI has no authority (as
    /// outside a tonic channel).
    #[must_use]
    pub fn with_server_address(mut self, host: impl Into<Arc<str>>, port: u16) -> Self {
        self.server = Some((host.into(), port));
        self
    }
}

impl<S> ::tower::Layer<S> for ClientLayer {
    type Service = TraceClient<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceClient { inner, server: self.server.clone() }
    }
}

/// The service [`ClientLayer`] makes.
#[derive(Debug, Clone)]
pub struct TraceClient<S> {
    inner: S,
    server: Option<(Arc<str>, u16)>,
}

impl<S, B, R> ::tower::Service<Request<B>> for TraceClient<S>
where
    S: ::tower::Service<Request<B>, Response = Response<R>>,
    S::Error: Display,
    R: Body,
{
    type Response = Response<TracedBody<R>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let (span, call) = client_span(&request, self.server.as_ref());
        // The client span is the caller's parent on the other side. A span without a context
        // (filtered out, or no tracewire subscriber) still passes the current one on.
        // Header values tracewire-context produces are always valid, so neither fails.
        if !matches!(crate::inject_span(&span, request.headers_mut()), Ok(true)) {
            let _ = crate::inject_current(request.headers_mut());
        }
        let inner = span.in_scope(|| self.inner.call(request));
        ResponseFuture { inner, span: Some(span), call }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`TraceServer`] and [`TraceClient`]: the inner service's future, polled
    /// inside the span; records the response status.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
        call: Call,
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    E: Display,
    R: Body,
{
    type Output = Result<Response<TracedBody<R>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.span.as_ref().map(Span::enter);
            ready!(this.inner.poll(cx))
        };
        let span = this.span.take().unwrap_or_else(Span::none);
        let call = *this.call;
        Poll::Ready(match result {
            Ok(response) => {
                record_head(&span, call, &response);
                let (parts, body) = response.into_parts();
                Ok(Response::from_parts(parts, TracedBody { inner: body, span: Some(span), call }))
            }
            Err(e) => {
                fail(&span, "_OTHER", &e);
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call's span open until it ends (or is dropped), polls
    /// inside it, and reads a gRPC status from its trailers.
    #[derive(Debug)]
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        span: Option<Span>,
        call: Call,
    }
}

impl<B> TracedBody<B> {
    /// The body without its span (which ends now).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for TracedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = {
            let _entered = this.span.as_ref().map(Span::enter);
            ready!(this.inner.poll_frame(cx))
        };
        match &polled {
            Some(Ok(frame)) => {
                if this.call.grpc
                    && let (Some(trailers), Some(span)) = (frame.trailers_ref(), this.span.as_ref())
                {
                    record_grpc_status(span, this.call.side, trailers);
                }
            }
            Some(Err(_)) => {
                if let Some(span) = this.span.take() {
                    fail(&span, "_OTHER", &"the response body failed");
                }
            }
            // The end of the body is the end of the call.
            None => drop(this.span.take()),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `headers` describe a gRPC call (`application/grpc`, `application/grpc+proto`,
/// ...; not gRPC-Web).
fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let ct = ct.as_bytes();
    ct.len() >= 16
        && ct[..16].eq_ignore_ascii_case(b"application/grpc")
        && matches!(ct.get(16), None | Some(b'+' | b';'))
}

/// `rpc.service` and `rpc.method` of a gRPC path (`/package.Service/Method`).
fn rpc_names(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

/// `http.request.method` and, for a method the semantic conventions do not know,
/// `http.request.method_original` (HTTP semantic conventions, "Common attributes").
fn method_name(method: &Method) -> (&'static str, Option<&str>) {
    let known = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ if method.as_str() == "QUERY" => "QUERY",
        _ => return ("_OTHER", Some(method.as_str())),
    };
    (known, None)
}

fn protocol_version(version: Version) -> Option<&'static str> {
    Some(match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

/// The route template of the request, when the router put it in the extensions.
#[cfg_attr(not(feature = "axum"), allow(unused_variables, clippy::unnecessary_wraps))]
fn route<B>(request: &Request<B>) -> Option<&str> {
    #[cfg(feature = "axum")]
    if let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() {
        return Some(matched.as_str());
    }
    None
}

fn server_span<B>(request: &Request<B>) -> (Span, Call) {
    let grpc = is_grpc(request.headers());
    let call = Call { side: Side::Server, grpc };
    let path = request.uri().path();
    let version = protocol_version(request.version());
    if grpc {
        let names = rpc_names(path);
        let name = names.map_or_else(|| path.to_owned(), |(s, m)| format!("{s}/{m}"));
        let span = tracing::info_span!(
            target: "tracewire_telemetry::tower",
            "rpc.server",
            otel.name = name.as_str(),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = names.map(|n| n.0),
            rpc.method = names.map(|n| n.1),
            rpc.grpc.status_code = Empty,
            network.protocol.version = version,
            "error.type" = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        return (span, call);
    }
    let (method, original) = method_name(request.method());
    let route = route(request);
    let shown = if original.is_some() { "HTTP" } else { method };
    let name = match route {
        Some(route) => format!("{shown} {route}"),
        None => shown.to_owned(),
    };
    let scheme = request.uri().scheme_str().unwrap_or("http");
    let span = tracing::info_span!(
        target: "tracewire_telemetry::tower",
        "http.server",
        otel.name = name.as_str(),
        otel.kind = "server",
        http.request.method = method,
        http.request.method_original = original,
        http.route = route,
        url.path = path,
        url.scheme = scheme,
        network.protocol.version = version,
        http.response.status_code = Empty,
        "error.type" = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    (span, call)
}

/// `server.address` and `server.port` of an outgoing request: its URI's, else the
/// configured ones, else its `Host` header's.
fn server_address<'a>(
    uri: &'a Uri,
    headers: &'a HeaderMap,
    configured: Option<&'a (Arc<str>, u16)>,
) -> Option<(&'a str, Option<u16>)> {
    if let Some(host) = uri.host() {
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("http") => Some(80),
            Some("https") => Some(443),
            _ => None,
        });
        return Some((host.trim_start_matches('[').trim_end_matches(']'), port));
    }
    if let Some((host, port)) = configured {
        return Some((host, Some(*port)));
    }
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let authority: http::uri::Authority = host.parse().ok()?;
    let port = authority.port_u16();
    let host = host.rsplit_once(':').filter(|_| port.is_some()).map_or(host, |(h, _)| h);
    Some((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Query parameters whose values `url.full` never shows (HTTP semantic conventions,
/// `url.full`: "sensitive content provided in query string SHOULD be redacted").
const REDACTED_QUERY_KEYS: [&str; 4] = ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"];

/// `url.full` of an absolute URI: credentials in the authority and the values of
/// [`REDACTED_QUERY_KEYS`] replaced by `REDACTED`; `None` for a URI without scheme and host.
fn url_full(uri: &Uri) -> Option<String> {
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str();
    let authority = authority
        .rsplit_once('@')
        .map_or_else(|| authority.to_owned(), |(_, host)| format!("REDACTED:REDACTED@{host}"));
    let mut full = format!("{scheme}://{authority}{}", uri.path());
    if let Some(query) = uri.query() {
        full.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                full.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if REDACTED_QUERY_KEYS.contains(&key) => {
                    full.push_str(key);
                    full.push_str("=REDACTED");
                }
                _ => full.push_str(pair),
            }
        }
    }
    Some(full)
}

fn client_span<B>(request: &Request<B>, configured: Option<&(Arc<str>, u16)>) -> (Span, Call) {
    let grpc = is_grpc(request.headers());
    let call = Call { side: Side::Client, grpc };
    let address = server_address(request.uri(), request.headers(), configured);
    let host = address.map(|a| a.0);
    let port = address.and_then(|a| a.1).map(i64::from);
    if grpc {
        let path = request.uri().path();
        let names = rpc_names(path);
        let name = names.map_or_else(|| path.to_owned(), |(s, m)| format!("{s}/{m}"));
        let span = tracing::info_span!(
            target: "tracewire_telemetry::tower",
            "rpc.client",
            otel.name = name.as_str(),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = names.map(|n| n.0),
            rpc.method = names.map(|n| n.1),
            rpc.grpc.status_code = Empty,
            server.address = host,
            server.port = port,
            "error.type" = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        return (span, call);
    }
    let (method, original) = method_name(request.method());
    let full = url_full(request.uri());
    let span = tracing::info_span!(
        target: "tracewire_telemetry::tower",
        "http.client",
        otel.name = if original.is_some() { "HTTP" } else { method },
        otel.kind = "client",
        http.request.method = method,
        http.request.method_original = original,
        server.address = host,
        server.port = port,
        url.full = full.as_deref(),
        http.response.status_code = Empty,
        "error.type" = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
    );
    (span, call)
}

/// Marks the span failed: `error.type` and an ERROR status with `description`.
fn fail(span: &Span, error_type: &str, description: &dyn Display) {
    span.record("error.type", error_type);
    span.record("otel.status_code", "error");
    let description = description.to_string();
    if !description.is_empty() {
        span.record("otel.status_description", description.as_str());
    }
}

/// Records what the response head says: the HTTP status, or a gRPC status sent in the
/// headers (a trailers-only response).
fn record_head<R>(span: &Span, call: Call, response: &Response<R>) {
    if call.grpc {
        if response.headers().contains_key("grpc-status") {
            record_grpc_status(span, call.side, response.headers());
        } else if let Some(code) = grpc_code_of_http_status(response.status()) {
            // No gRPC status and not a gRPC response (a proxy's error page, say).
            record_grpc_code(span, call.side, code, "");
        }
        return;
    }
    let status = response.status().as_u16();
    span.record("http.response.status_code", i64::from(status));
    // HTTP semantic conventions, "Status": a server span is an error for 5xx only, a client
    // span for 4xx and 5xx.
    let error = match call.side {
        Side::Server => status >= 500,
        Side::Client => status >= 400,
    };
    if error {
        span.record("error.type", status.to_string().as_str());
        span.record("otel.status_code", "error");
    }
}

/// The names of the gRPC status codes, by code.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Records `grpc-status` (and, for an error, `grpc-message`) from `headers`, when present.
fn record_grpc_status(span: &Span, side: Side, headers: &HeaderMap) {
    let Some(code) =
        headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u32>().ok())
    else {
        return;
    };
    let message = headers.get("grpc-message").map(|v| percent_decode(v.as_bytes())).unwrap_or_default();
    record_grpc_code(span, side, code, &message);
}

/// The gRPC code of a response without `grpc-status` whose HTTP status is not 200
/// ("HTTP to gRPC Status Code Mapping", grpc/doc/http-grpc-status-mapping.md).
fn grpc_code_of_http_status(status: http::StatusCode) -> Option<u32> {
    Some(match status.as_u16() {
        200 => return None,
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    })
}

/// Records a gRPC status code and, for an error, the span status with `message`.
fn record_grpc_code(span: &Span, side: Side, code: u32, message: &str) {
    span.record("rpc.grpc.status_code", i64::from(code));
    // gRPC semantic conventions, "gRPC Status": on a server, only the codes that mean the
    // server failed are errors; on a client, every code but OK.
    let error = match side {
        Side::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
        Side::Client => code != 0,
    };
    if error {
        let name = usize::try_from(code).ok().and_then(|c| GRPC_CODES.get(c)).copied().unwrap_or("_OTHER");
        fail(span, name, &message);
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Responses").
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            #[allow(clippy::cast_possible_truncation)]
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        let ct = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(v));
            is_grpc(&h)
        };
        assert!(ct("application/grpc"));
        assert!(ct("application/grpc+proto"));
        assert!(ct("Application/GRPC;charset=utf-8"));
        assert!(!ct("application/grpc-web"));
        assert!(!ct("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn rpc_names_from_paths() {
        assert_eq!(rpc_names("/helloworld.Greeter/SayHello"), Some(("helloworld.Greeter", "SayHello")));
        assert_eq!(rpc_names("/Greeter/"), None);
        assert_eq!(rpc_names("/a/b/c"), None);
        assert_eq!(rpc_names("nope"), None);
    }

    #[test]
    fn url_full_redacts_credentials_and_signatures() {
        let uri: Uri = "https://user:pw@example.com:8443/p?a=1&sig=secret&Signature=x".parse().unwrap();
        assert_eq!(
            url_full(&uri).as_deref(),
            Some("https://REDACTED:REDACTED@example.com:8443/p?a=1&sig=REDACTED&Signature=REDACTED")
        );
        assert_eq!(url_full(&"/path/only".parse().unwrap()), None);
    }

    #[test]
    fn server_address_from_uri_configuration_or_host() {
        let h = HeaderMap::new();
        assert_eq!(server_address(&"http://[::1]:81/x".parse().unwrap(), &h, None), Some(("::1", Some(81))));
        assert_eq!(
            server_address(&"https://example.com/".parse().unwrap(), &h, None),
            Some(("example.com", Some(443)))
        );
        let cfg = (Arc::from("10.0.0.1"), 50051);
        assert_eq!(server_address(&"/svc/M".parse().unwrap(), &h, Some(&cfg)), Some(("10.0.0.1", Some(50051))));
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, http::HeaderValue::from_static("example.org:8080"));
        assert_eq!(server_address(&"/x".parse().unwrap(), &h, None), Some(("example.org", Some(8080))));
    }

    #[test]
    fn http_statuses_of_grpc_responses_map_to_codes() {
        // grpc/doc/http-grpc-status-mapping.md
        let code = |s: u16| grpc_code_of_http_status(http::StatusCode::from_u16(s).unwrap());
        assert_eq!(code(200), None);
        assert_eq!(code(400), Some(13));
        assert_eq!(code(401), Some(16));
        assert_eq!(code(403), Some(7));
        assert_eq!(code(404), Some(12));
        assert_eq!(code(429), Some(14));
        assert_eq!(code(503), Some(14));
        assert_eq!(code(500), Some(2));
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"caf%C3%A9 %zz 100%"), "café %zz 100%");
    }

    #[test]
    fn unknown_methods_are_other() {
        assert_eq!(method_name(&Method::GET), ("GET", None));
        let m = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_name(&m), ("_OTHER", Some("PURGE")));
    }
}
