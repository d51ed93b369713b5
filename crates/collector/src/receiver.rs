//! The embedded OTLP trace receiver: gRPC (`TraceService/Export`) and HTTP
//! (`POST /v1/traces`, protobuf or JSON), into a bounded in-memory store and, optionally,
//! a SQLite database ([`SpanStore::with_db`]).
//!
//! With a database, a request is acknowledged only once its spans are queued for the
//! database; when the database queue stays full the exporter is told to retry (gRPC
//! `UNAVAILABLE`, HTTP 503), which OTLP exporters do, so nothing is lost silently. Stored
//! spans are keyed by (trace id, span id), so a retried batch is stored once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::SpanRecord;

/// Spans received, bounded: beyond the capacity the oldest are dropped (from memory) and
/// counted. With a database, every acknowledged span is also persisted.
///
/// Memory keeps spans as they were decoded (moved, not copied) and turns them into
/// [`SpanRecord`]s only when asked ([`SpanStore::snapshot`]): ingesting is decoding and
/// queueing, nothing more.
#[derive(Debug)]
pub struct SpanStore {
    spans: Mutex<VecDeque<Kept>>,
    capacity: usize,
    received: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    db: Option<tracewire_store::Store>,
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(char::from(DIGITS[usize::from(x >> 4)]));
        s.push(char::from(DIGITS[usize::from(x & 0xf)]));
    }
    s
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// A span as decoded, with the service of the resource that sent it.
#[derive(Debug)]
struct Kept {
    service: Arc<str>,
    span: Span,
}

fn service_of(rs: &ResourceSpans) -> String {
    rs.resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .map(text)
        .unwrap_or_default()
}

fn record_of(service: &str, s: &Span) -> SpanRecord {
    SpanRecord {
        trace_id: hex(&s.trace_id),
        span_id: hex(&s.span_id),
        parent_id: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
        name: s.name.clone(),
        service: service.to_owned(),
        start_ns: i64::try_from(s.start_time_unix_nano).unwrap_or(i64::MAX),
        end_ns: i64::try_from(s.end_time_unix_nano).unwrap_or(i64::MAX),
        attributes: s
            .attributes
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default()))
            .collect(),
    }
}

/// The spans of one OTLP export request.
pub fn spans_of(request: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let service = service_of(rs);
        out.extend(rs.scope_spans.iter().flat_map(|ss| &ss.spans).map(|s| record_of(&service, s)));
    }
    out
}

/// The spans of a request, moved out of it.
fn kept_of(request: ExportTraceServiceRequest) -> Vec<Kept> {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let service: Arc<str> = service_of(&rs).into();
        for ss in rs.scope_spans {
            out.extend(ss.spans.into_iter().map(|span| Kept { service: Arc::clone(&service), span }));
        }
    }
    out
}

impl SpanStore {
    /// A store keeping at most `capacity` spans.
    pub fn new(capacity: usize) -> Self {
        Self {
            spans: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            db: None,
        }
    }

    /// Also persists every span in `db` (see [`SpanStore::ingest`]).
    #[must_use]
    pub fn with_db(mut self, db: tracewire_store::Store) -> Self {
        self.db = Some(db);
        self
    }

    /// The database, if any.
    pub fn db(&self) -> Option<&tracewire_store::Store> {
        self.db.as_ref()
    }

    /// Takes the spans of a request: queues them for the database (if any), then keeps
    /// them in memory. Returns how many spans the request held.
    ///
    /// # Errors
    /// The database refused the batch (full past its wait bound, or closed); nothing was
    /// kept, the spans are counted in [`SpanStore::refused`], and the sender should retry.
    pub async fn ingest(&self, request: ExportTraceServiceRequest) -> Result<usize, tracewire_store::StoreError> {
        if let Some(db) = &self.db {
            let records = spans_of(&request);
            let n = records.len();
            if let Err(e) = db.append_spans(records).await {
                self.refused.fetch_add(n as u64, Ordering::Relaxed);
                return Err(e);
            }
        }
        let kept = kept_of(request);
        let n = kept.len();
        self.keep(kept);
        Ok(n)
    }

    /// Keeps the spans of a request in memory (not in the database; see
    /// [`SpanStore::ingest`]).
    pub fn add(&self, request: ExportTraceServiceRequest) {
        self.keep(kept_of(request));
    }

    fn keep(&self, spans: Vec<Kept>) {
        self.received.fetch_add(spans.len() as u64, Ordering::Relaxed);
        let Ok(mut store) = self.spans.lock() else { return };
        for s in spans {
            if store.len() == self.capacity {
                store.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            store.push_back(s);
        }
    }

    /// The spans kept, as [`SpanRecord`]s.
    pub fn snapshot(&self) -> Vec<SpanRecord> {
        self.spans.lock().map(|s| s.iter().map(|k| record_of(&k.service, &k.span)).collect()).unwrap_or_default()
    }

    /// Spans received in all.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Spans dropped from memory because it was full (with a database, they remain there).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans refused because the database could not take them (their senders were told to
    /// retry).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

struct Grpc(Arc<SpanStore>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        match self.0.ingest(request.into_inner()).await {
            Ok(_) => Ok(Response::new(ExportTraceServiceResponse { partial_success: None })),
            Err(e) => Err(Status::unavailable(format!("the span database cannot take this batch now ({e}); retry"))),
        }
    }
}

/// Why the receiver could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// Binding or serving failed.
    #[error("receiver: {0}")]
    Io(String),
}

/// Binds a TCP address (port 0 picks a free port).
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ReceiverError> {
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| ReceiverError::Io(format!("bind {addr}: {e}")))?;
    let local = l.local_addr().map_err(|e| ReceiverError::Io(e.to_string()))?;
    Ok((l, local))
}

/// Serves OTLP/gRPC on `listener` until `shutdown`.
///
/// # Errors
/// When serving fails.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    store: Arc<SpanStore>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ReceiverError> {
    tonic::transport::Server::builder()
        // Export requests are often larger than HTTP/2's default 64 KiB window: with the
        // default, every request waits for window updates.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .tcp_nodelay(true)
        // Collectors (rotel-agent, the OpenTelemetry Collector) forward gzip-compressed.
        .add_service(
            TraceServiceServer::new(Grpc(store))
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .max_decoding_message_size(64 << 20),
        )
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| ReceiverError::Io(e.to_string()))
}

async fn http_export(
    axum::extract::State(store): axum::extract::State<Arc<SpanStore>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let request = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
    };
    match request {
        Ok(r) => {
            if let Err(e) = store.ingest(r).await {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    format!("the span database cannot take this batch now ({e}); retry"),
                )
                    .into_response();
            }
            let response = ExportTraceServiceResponse { partial_success: None };
            if json {
                ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
            } else {
                ([(header::CONTENT_TYPE, "application/x-protobuf")], response.encode_to_vec()).into_response()
            }
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("cannot decode the export request: {e}")).into_response(),
    }
}

/// Serves OTLP/HTTP (`POST /v1/traces`, `application/x-protobuf` or `application/json`)
/// on `listener` until `shutdown`.
///
/// # Errors
/// When serving fails.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    store: Arc<SpanStore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(http_export))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
        .with_state(store);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(|e| ReceiverError::Io(e.to_string()))
}
