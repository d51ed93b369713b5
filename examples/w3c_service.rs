//! A service for the W3C Trace Context test suite (<https://github.com/w3c/trace-context/tree/main/test>).
//!
//! ```text
//! cargo run --example w3c_service -- --port 5000
//! python test/test.py http://127.0.0.1:5000/test      # in a checkout of w3c/trace-context
//! ```
//!
//! `POST /test` takes a JSON array of `{"url": string, "arguments": any}`. For each element,
//! in order, the service POSTs the JSON of `arguments` to `url`, propagating the incoming
//! trace context by the Level 2 rules, and answers 200 once every callback is done (the body
//! lists each callback's HTTP status or error).
//!
//! Propagation is tracewire's, with the normal telemetry set-up (`OTEL_*`; without a
//! collector the spans are dropped and counted, the service works the same):
//! - the incoming headers are read with `tracewire_context` (names in any case, several
//!   `tracestate` headers combined in order, a tracestate dropped whole when it breaks a rule
//!   or when the traceparent is invalid);
//! - the request is a server span (`w3c.test`) that continues a valid context or starts a new
//!   trace; each callback is a client span (`w3c.callback`), so it gets a new span id;
//! - each callback carries exactly one `traceparent` (version 00, the client span as parent)
//!   and at most one `tracestate` (the received one, unchanged, within 512 characters).
//!
//! The server binds 127.0.0.1 only and prints `listening on ADDR` (`--port 0` picks a free port).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use tracewire_context::{Extracted, TraceContext, TraceState};
use tracewire_telemetry::{Config, init, set_parent_from, span_context};
use tracing::Instrument;

mod support;
use support::{shutdown_telemetry, stop_signal};

/// Where the callbacks of one test request go.
#[derive(Debug)]
struct Callback {
    url: String,
    body: Vec<u8>,
}

/// Reads the request body: a JSON array of `{"url": string, "arguments": any}`.
fn parse_callbacks(body: &[u8]) -> Result<Vec<Callback>, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let items = value.as_array().ok_or("body is not a JSON array")?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let url = item.get("url").and_then(serde_json::Value::as_str).ok_or(format!("element {i} has no url"))?;
            let arguments = item.get("arguments").cloned().unwrap_or(serde_json::Value::Null);
            let body = serde_json::to_vec(&arguments).map_err(|e| format!("element {i}: {e}"))?;
            Ok(Callback { url: url.to_owned(), body })
        })
        .collect()
}

/// The context a callback carries: the client span's ids and sampled flag (a new span id per
/// callback) and the tracestate received, unchanged. Two things are taken from the
/// extraction rather than from the OpenTelemetry span context: the tracestate, whose keys the
/// OpenTelemetry API checks by the older Level 1 grammar (it would drop some Level 2 keys),
/// and the Level 2 `random` flag of a continued trace, which the SDK clears on spans it does
/// not sample. Where the span has no context (instrumentation compiled out), the policy of
/// `tracewire_context` alone gives the same.
fn outgoing_context(extracted: &Extracted, client_span: &tracing::Span) -> TraceContext {
    match span_context(client_span) {
        Some(ctx) => {
            let continued = extracted.continued() && ctx.trace_id == extracted.context.trace_id;
            let random = if continued { extracted.context.flags.is_random() } else { ctx.flags.is_random() };
            TraceContext {
                flags: ctx.flags.with_random(random),
                tracestate: if continued { extracted.context.tracestate.clone() } else { TraceState::new() },
                ..ctx
            }
        }
        None => extracted.context.child(),
    }
}

async fn callback(http: &reqwest::Client, extracted: &Extracted, cb: Callback) -> serde_json::Value {
    let span = tracing::info_span!(
        "w3c.callback",
        otel.kind = "client",
        http.request.method = "POST",
        url.full = %cb.url,
        http.response.status_code = tracing::field::Empty,
    );
    let ctx = outgoing_context(extracted, &span);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    // Values this crate produces are always valid header values; a refusal would be a bug,
    // reported in the answer rather than by sending the callback without context.
    if let Err(e) = ctx.inject(Some(&extracted.baggage), &mut headers) {
        return serde_json::json!({ "error": format!("cannot inject trace context: {e}") });
    }
    let sent = http.post(&cb.url).headers(headers).body(cb.body).send().instrument(span.clone()).await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            span.record("http.response.status_code", status);
            // Read the body so the callback is complete before the next one starts.
            let _ = response.bytes().await;
            serde_json::json!({ "status": status })
        }
        Err(e) => {
            tracing::warn!(url = %cb.url, error = %e, "callback failed");
            serde_json::json!({ "error": e.to_string() })
        }
    }
}

async fn test(State(http): State<reqwest::Client>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let callbacks = match parse_callbacks(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e),
    };
    let span = tracing::info_span!("w3c.test", otel.kind = "server", http.request.method = "POST", url.path = "/test");
    let extracted = set_parent_from(&span, &headers);
    let results = async {
        let mut results = Vec::with_capacity(callbacks.len());
        for cb in callbacks {
            results.push(callback(&http, &extracted, cb).await);
        }
        results
    }
    .instrument(span)
    .await;
    (StatusCode::OK, serde_json::Value::Array(results).to_string())
}

fn parse_port(mut args: impl Iterator<Item = String>) -> Result<u16> {
    let mut port = 5000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let v = args.next().context("--port needs a value")?;
                port = v.parse().with_context(|| format!("--port {v:?} is not a port number"))?;
            }
            other => bail!("unknown argument {other:?} (usage: w3c_service [--port PORT])"),
        }
    }
    Ok(port)
}

#[tokio::main]
async fn main() -> Result<()> {
    let port = parse_port(std::env::args().skip(1))?;
    let telemetry = init(Config::from_env()?)?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    let app = Router::new().route("/test", post(test)).with_state(http);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(stop_signal()).await?;
    shutdown_telemetry(telemetry)
}
