//! The admin HTTP listener: routes, the auth gate, the sampling loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::AdminError;
use crate::auth::{COOKIE, Token};
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::profile::{self, Busy, Format};

const PAGE: &str = include_str!("page/metrics.html");
const SCRIPT: &str = include_str!("page/metrics.js");
const STYLE: &str = include_str!("page/metrics.css");
const LOGIN: &str = include_str!("page/login.html");

/// No inline code, no other origin: the page's script and style are served by the
/// listener itself (behind the same auth), and it only fetches from it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

struct Shared {
    token: Token,
    latest: watch::Receiver<Arc<Metrics>>,
    profiling: Arc<AtomicBool>,
    max_profile: Duration,
}

type AppState = Arc<Shared>;

/// An admin listener bound to its address, ready to serve.
#[derive(Debug)]
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    token: Token,
}

impl AdminServer {
    /// Binds `addr` (port 0 picks a free port; see [`AdminServer::local_addr`]). The
    /// admin listener always requires a token, so `None` is refused before binding,
    /// whatever the address.
    ///
    /// # Errors
    /// [`AdminError::TokenRequired`] without a token; [`AdminError::Bind`] when the address
    /// cannot be bound.
    pub async fn bind(addr: SocketAddr, token: Option<Token>) -> Result<Self, AdminError> {
        let Some(token) = token else { return Err(AdminError::TokenRequired { addr }) };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError::Bind { addr, source })?;
        let local = listener.local_addr().map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Self { listener, local, token })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Samples with `monitor` every `config.sample_interval` (on a blocking thread) and
    /// serves the routes until `shutdown` resolves.
    ///
    /// # Errors
    /// [`AdminError::Serve`] when the listener fails.
    pub async fn serve(
        self,
        mut monitor: Monitor,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), AdminError> {
        let config = monitor.config().clone();
        let (first, back) = tokio::task::spawn_blocking(move || {
            let m = monitor.refresh();
            (m, monitor)
        })
        .await
        .map_err(|e| AdminError::Serve(std::io::Error::other(e.to_string())))?;
        let (tx, rx) = watch::channel(Arc::new(first));
        let sampler = AbortOnDrop(tokio::spawn(sample_loop(back, tx, config.sample_interval)));
        let shared = Arc::new(Shared {
            token: self.token,
            latest: rx,
            profiling: Arc::default(),
            max_profile: config.max_profile,
        });
        let result = axum::serve(self.listener, router(shared)).with_graceful_shutdown(shutdown).await;
        drop(sampler);
        result.map_err(AdminError::Serve)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sample_loop(mut monitor: Monitor, tx: watch::Sender<Arc<Metrics>>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now; the first sample was just taken
    loop {
        tick.tick().await;
        let round = tokio::task::spawn_blocking(move || {
            let m = monitor.refresh();
            (m, monitor)
        })
        .await;
        match round {
            Ok((m, back)) => {
                monitor = back;
                tx.send_replace(Arc::new(m));
            }
            Err(e) => {
                tracing::error!(target: "tracewire_admin", "the sampler failed; metrics are no longer updated: {e}");
                return;
            }
        }
    }
}

fn router(shared: AppState) -> Router {
    let gated = Router::new()
        .route("/metrics", get(page))
        .route("/metrics.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/metrics.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/api/metrics", get(metrics_json))
        .route("/api/metrics/prometheus", get(metrics_prometheus))
        .route("/api/debug/pprof/profile", get(pprof_profile))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), require_token));
    let open = Router::new().route("/login", get(login_form).post(login));
    gated.merge(open).with_state(shared)
}

/// Headers every answer carries: never cached, never framed, no sniffing.
fn harden(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(CSP));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// 401 with an empty body: nothing about the server leaks before the token is checked.
fn unauthorized() -> Response {
    let mut r = StatusCode::UNAUTHORIZED.into_response();
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"tracewire-admin\""));
    harden(r.headers_mut());
    r
}

async fn require_token(State(shared): State<AppState>, request: Request, next: Next) -> Response {
    if !shared.token.authorizes(request.headers()) {
        return unauthorized();
    }
    let mut response = next.run(request).await;
    harden(response.headers_mut());
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

async fn metrics_json(State(shared): State<AppState>) -> Response {
    let m = Arc::clone(&shared.latest.borrow());
    match serde_json::to_vec(&*m) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics_prometheus(State(shared): State<AppState>) -> Response {
    let m = Arc::clone(&shared.latest.borrow());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.to_prometheus()).into_response()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
}

async fn pprof_profile(State(shared): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let max = shared.max_profile.as_secs().max(1);
    let seconds = match q.get("seconds").map(|s| s.parse::<u64>()) {
        None => 30.min(max),
        Some(Ok(n)) if (1..=max).contains(&n) => n,
        Some(_) => return bad_request(format!("seconds must be a whole number from 1 to {max}\n")),
    };
    let format = match q.get("format").map(String::as_str) {
        None | Some("pb" | "proto" | "protobuf") => Format::Protobuf,
        Some("svg" | "flamegraph") => Format::Svg,
        Some(_) => return bad_request("format must be proto (default) or svg\n".to_owned()),
    };
    let Some(busy) = Busy::acquire(&shared.profiling) else {
        return (StatusCode::CONFLICT, "a profile is already running; try again when it is done\n").into_response();
    };
    // The profiler is process-wide; the busy flag is released when the capture ends,
    // even if the client went away in the meantime.
    let captured =
        tokio::task::spawn_blocking(move || profile::capture(busy, Duration::from_secs(seconds), format)).await;
    match captured {
        Ok(Ok(body)) => {
            let (content_type, disposition) = match format {
                Format::Protobuf => ("application/octet-stream", "attachment; filename=\"profile.pb\""),
                Format::Svg => ("image/svg+xml", "inline; filename=\"profile.svg\""),
            };
            let mut r = Response::new(Body::from(body));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r.headers_mut().insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(disposition));
            if format == Format::Svg {
                // The flame graph has its own inline script (zoom, search).
                r.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                    ),
                );
            }
            r
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the profiler failed: {e}\n")).into_response(),
    }
}

async fn login_form() -> Response {
    let mut r = asset("text/html; charset=utf-8", LOGIN);
    harden(r.headers_mut());
    r
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Exchanges the token for a session cookie (HttpOnly, SameSite=Strict) so that a browser
/// can open `/metrics`; the token never goes in a URL.
async fn login(State(shared): State<AppState>, axum::Form(form): axum::Form<LoginForm>) -> Response {
    if !shared.token.matches(form.token.as_bytes()) {
        return unauthorized();
    }
    let cookie = format!("{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict", shared.token.cookie_value());
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/metrics"));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    harden(r.headers_mut());
    r
}
