//! An HTTP service traced with tracewire's tower layers: `GET /hello` is served through
//! `ServerLayer` (axum) and, with `--downstream`, first calls `GET {downstream}/hello`
//! through `ClientLayer` (a hyper-util client), so two instances make one trace.
//!
//! ```text
//! OTEL_SERVICE_NAME=leaf  cargo run --example tower_http -- --listen 127.0.0.1:8081
//! OTEL_SERVICE_NAME=front cargo run --example tower_http -- --listen 127.0.0.1:8080 \
//!     --downstream http://127.0.0.1:8081
//! curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \
//!     http://127.0.0.1:8080/hello
//! ```
//!
//! Spans are exported as the `OTEL_*` variables say (`tracewire_telemetry::init`). The
//! answer names the trace it ran in (`hello from ADDR in trace ID`, then the downstream's
//! answer on the next line). It prints `listening on ADDR` once bound (port 0 picks a free
//! port) and stops on SIGINT or SIGTERM, flushing telemetry.

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tracewire_telemetry::tower::{ClientLayer, ServerLayer, TraceClient};
use tracewire_telemetry::{Config, current_trace_id, init};

mod support;
use support::{shutdown_telemetry, stop_signal};

/// The command line.
#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    downstream: Option<String>,
}

const USAGE: &str = "usage: tower_http [--listen ADDR] [--downstream http://HOST:PORT]";

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let mut parsed = Args { listen: SocketAddr::from(([127, 0, 0, 1], 0)), downstream: None };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let v = args.next().context("--listen needs an address")?;
                parsed.listen = v.parse().with_context(|| format!("--listen {v:?} is not an address"))?;
            }
            "--downstream" => {
                let v = args.next().context("--downstream needs a URL")?;
                let uri: http::Uri = v.parse().with_context(|| format!("--downstream {v:?} is not a URL"))?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    bail!("--downstream {v:?}: expected http://HOST:PORT");
                }
                parsed.downstream = Some(v.trim_end_matches('/').to_owned());
            }
            other => bail!("unknown argument {other:?} ({USAGE})"),
        }
    }
    Ok(parsed)
}

#[derive(Clone)]
struct App {
    listen: SocketAddr,
    downstream: Option<String>,
    client: TraceClient<Client<HttpConnector, Empty<Bytes>>>,
}

async fn hello(State(app): State<App>) -> (StatusCode, String) {
    let trace = current_trace_id().map_or_else(|| "none".to_owned(), |t| t.to_string());
    let mut answer = format!("hello from {} in trace {trace}\n", app.listen);
    if let Some(downstream) = &app.downstream {
        match call(&app, &format!("{downstream}/hello")).await {
            Ok(body) => answer.push_str(&body),
            Err(e) => {
                tracing::warn!(error = %e, "downstream call failed");
                return (StatusCode::BAD_GATEWAY, format!("{answer}downstream: {e:#}\n"));
            }
        }
    }
    (StatusCode::OK, answer)
}

/// `GET url` through the client layer: a CLIENT span, its context in the request headers.
async fn call(app: &App, url: &str) -> Result<String> {
    let request = http::Request::get(url).body(Empty::new())?;
    let response = app.client.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let telemetry = init(Config::from_env()?)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let listen = listener.local_addr()?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let app = App {
        listen,
        downstream: args.downstream,
        client: ServiceBuilder::new().layer(ClientLayer::new()).service(client),
    };
    let router = Router::new().route("/hello", get(hello)).with_state(app).layer(ServerLayer::new());
    println!("listening on {listen}");
    axum::serve(listener, router).with_graceful_shutdown(stop_signal()).await?;
    shutdown_telemetry(telemetry)
}
