//! The embedded OTLP trace receiver: gRPC (`TraceService/Export`) and HTTP
//! (`POST /v1/traces`, protobuf or JSON), each plain or gzip-compressed, into a bounded
//! in-memory store and, optionally, a SQLite database ([`SpanStore::with_db`]).
//!
//! With a database, a request is acknowledged only once its spans are queued for the
//! database; when the database queue stays full the exporter is told to retry (gRPC
//! `UNAVAILABLE`, HTTP 503), which OTLP exporters do, so nothing is lost silently. Stored
//! spans are keyed by (trace id, span id), so a retried batch is stored once.
//!
//! Protobuf requests (gRPC, and HTTP with `application/x-protobuf`) are not decoded on
//! arrival: their bytes are checked in one allocation-free pass ([`crate::otlp::validate`],
//! which accepts exactly what prost would decode, so malformed input is still refused, with
//! gRPC `INVALID_ARGUMENT` or HTTP 400) and kept as they came
//! ([`crate::otlp::EncodedRequest`]); they are decoded only when [`SpanStore::snapshot`]
//! asks for them. A database takes the same bytes
//! ([`tracewire_store::Store::append_encoded`]): its writer reads each span's columns from
//! them and copies the rest of the span as it came, so a request is never decoded to be
//! stored.
//!
//! Spans with invalid ids ([`crate::otlp::InvalidSpan`]) are rejected and the rest kept: the
//! answer is a success with `partial_success` saying how many were rejected and why (OTLP
//! specification, "Partial Success"), also when every span of the request was invalid.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::{Request, Response, Status};

use crate::SpanRecord;
use crate::google_rpc::{RetryInfo, Status as RpcStatus};
use crate::otlp::{EncodedRequest, Invalid};
use tracewire_store::OtlpSpan;

mod encoding;

/// Spans received, bounded: beyond the capacity the oldest are dropped (from memory) and
/// counted. With a database, every acknowledged span is also persisted.
///
/// Memory keeps each request as it came (its protobuf bytes, checked but not decoded; or,
/// from [`SpanStore::add`]/[`SpanStore::ingest`], the decoded request itself) and turns its
/// spans into [`SpanRecord`]s only when asked ([`SpanStore::snapshot`]): ingesting is
/// validating and queueing, nothing more. The capacity counts spans, exactly: when a
/// request overflows it, the oldest spans are dropped, whole requests or the front of one.
///
/// ```
/// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
/// use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
/// use prost::Message;
/// use tracewire_collector::otlp::EncodedRequest;
/// use tracewire_collector::receiver::SpanStore;
///
/// let span = |name: &str| Span { name: name.into(), span_id: vec![1; 8], ..Span::default() };
/// let request = ExportTraceServiceRequest {
///     resource_spans: vec![ResourceSpans {
///         scope_spans: vec![ScopeSpans { spans: vec![span("a"), span("b"), span("c")], ..Default::default() }],
///         ..Default::default()
///     }],
/// };
/// let store = SpanStore::new(2);
/// store.add_encoded(EncodedRequest::new(request.encode_to_vec().into()).unwrap());
/// let names: Vec<String> = store.snapshot().into_iter().map(|s| s.name).collect();
/// assert_eq!(names, ["b", "c"]);
/// assert_eq!((store.received(), store.dropped()), (3, 1));
/// ```
#[derive(Debug)]
pub struct SpanStore {
    spans: Mutex<Kept>,
    capacity: usize,
    received: AtomicU64,
    dropped: AtomicU64,
    refused: AtomicU64,
    invalid: AtomicU64,
    db: Option<tracewire_store::Store>,
}

/// What [`SpanStore::ingest`] made of one export request, and the answer it gets.
///
/// ```
/// use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
/// use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
/// use tracewire_collector::receiver::SpanStore;
///
/// let span = |trace: u8| Span { trace_id: vec![trace; 16], span_id: vec![1; 8], ..Span::default() };
/// let request = ExportTraceServiceRequest {
///     resource_spans: vec![ResourceSpans {
///         scope_spans: vec![ScopeSpans { spans: vec![span(1), span(0)], ..Default::default() }],
///         ..Default::default()
///     }],
/// };
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = SpanStore::new(10);
/// let ingested = store.ingest(request).await.unwrap();
/// assert_eq!((ingested.accepted, ingested.rejected), (1, 1));
/// let partial = ingested.response().partial_success.unwrap();
/// assert_eq!(partial.rejected_spans, 1);
/// assert!(partial.error_message.contains("trace_id is all zeros"));
/// assert_eq!((store.received(), store.invalid()), (1, 1));
/// # });
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Spans kept.
    pub accepted: usize,
    /// Spans rejected for their ids ([`crate::otlp::InvalidSpan`]); never kept.
    pub rejected: usize,
    /// Why, for the sender, when any span was rejected.
    pub message: Option<String>,
}

impl Ingested {
    /// The answer to the export: `partial_success` set exactly when spans were rejected
    /// (OTLP specification, "Full Success": "The server MUST leave the `partial_success`
    /// field unset in case of a successful response"; "Partial Success": "the server MUST
    /// initialize the `partial_success` field [...] and it MUST set the respective
    /// `rejected_spans` [...] field with the number of spans [...] it rejected").
    pub fn response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(self.rejected).unwrap_or(i64::MAX),
                error_message: self.message.clone().unwrap_or_default(),
            }),
        }
    }

    /// [`Ingested::response`] in OTLP/JSON (the proto3 JSON mapping: `rejectedSpans`, an
    /// int64, as a decimal string; a full success is `{}`).
    pub fn json_response(&self) -> String {
        match self.response().partial_success {
            Some(p) => serde_json::json!({
                "partialSuccess": { "rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message }
            })
            .to_string(),
            None => "{}".to_owned(),
        }
    }
}

/// The requests kept, oldest first, and how many spans they hold in all.
#[derive(Debug, Default)]
struct Kept {
    batches: VecDeque<Batch>,
    spans: usize,
}

/// One request's spans: the first `skip` (in request order) were dropped, the next `live`
/// are kept (and there are no more).
#[derive(Debug, Clone)]
struct Batch {
    request: Held,
    skip: usize,
    live: usize,
}

#[derive(Debug, Clone)]
enum Held {
    Encoded(Bytes),
    Decoded(Arc<ExportTraceServiceRequest>),
}

/// The settings `tracewire collect --db` opens its database with: the store's defaults,
/// but [`tracewire_store::Durability::Normal`] (SQLite's `synchronous=NORMAL` in WAL mode:
/// the log is synced at checkpoints instead of at every commit) and 16 KiB pages for a new
/// database (fewer B-tree pages to update and log per span inserted).
///
/// The receiver acknowledges a span once it is queued for the database, before it is
/// committed, so a crash of the collector loses what was queued whatever the setting; with
/// `NORMAL` every commit still survives the process crashing or being killed, and only an
/// operating-system crash or a power loss can also roll back the commits since the last
/// checkpoint (the store checkpoints on a thread of its own, within about 200 ms of a commit).
/// In exchange the writer does not wait for the disk at each commit, which is most of its
/// time on a slow disk.
///
/// ```
/// use tracewire_store::Durability;
/// let config = tracewire_collector::receiver::db_config();
/// assert_eq!((config.durability, config.page_size), (Durability::Normal, Some(16_384)));
/// ```
pub fn db_config() -> tracewire_store::StoreConfig {
    let mut config = tracewire_store::StoreConfig::default();
    config.durability = tracewire_store::Durability::Normal;
    config.page_size = Some(16_384);
    config
}

/// The spans of one OTLP export request, whole ([`SpanRecord::from_otlp`]).
pub fn spans_of(request: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    SpanRecord::all_of(request)
}

fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

impl Batch {
    /// Appends the kept spans as records.
    fn records(&self, out: &mut Vec<SpanRecord>) {
        match &self.request {
            Held::Decoded(r) => borrowed_records(r, self.skip, self.live, out),
            // Validated on arrival: decoding does not fail (`EncodedRequest::decode`). The
            // request decoded here is this call's own, so its spans move into the records.
            Held::Encoded(bytes) => owned_records(
                ExportTraceServiceRequest::decode(bytes.clone()).unwrap_or_default(),
                self.skip,
                self.live,
                out,
            ),
        }
    }
}

/// The records of `take` spans of `request` after its first `skip`, each span cloned.
fn borrowed_records(request: &ExportTraceServiceRequest, mut skip: usize, mut take: usize, out: &mut Vec<SpanRecord>) {
    for rs in &request.resource_spans {
        if take == 0 {
            break;
        }
        let n: usize = rs.scope_spans.iter().map(|ss| ss.spans.len()).sum();
        if skip >= n {
            skip -= n;
            continue;
        }
        let resource = Arc::new(rs.resource.clone().unwrap_or_default());
        let resource_schema_url: Arc<str> = Arc::from(rs.schema_url.as_str());
        let spans = rs
            .scope_spans
            .iter()
            .flat_map(|ss| {
                let scope = Arc::new(ss.scope.clone().unwrap_or_default());
                let scope_schema_url: Arc<str> = Arc::from(ss.schema_url.as_str());
                ss.spans.iter().map(move |span| (Arc::clone(&scope), Arc::clone(&scope_schema_url), span))
            })
            .skip(skip)
            .take(take);
        let before = out.len();
        out.extend(spans.map(|(scope, scope_schema_url, span)| {
            SpanRecord::from_otlp(OtlpSpan {
                resource: Arc::clone(&resource),
                resource_schema_url: Arc::clone(&resource_schema_url),
                scope,
                scope_schema_url,
                span: span.clone(),
            })
        }));
        take -= out.len() - before;
        skip = 0;
    }
}

/// As [`borrowed_records`], taking `request` apart: its spans, resources and scopes move
/// into the records.
fn owned_records(request: ExportTraceServiceRequest, mut skip: usize, mut take: usize, out: &mut Vec<SpanRecord>) {
    for rs in request.resource_spans {
        if take == 0 {
            break;
        }
        let n: usize = rs.scope_spans.iter().map(|ss| ss.spans.len()).sum();
        if skip >= n {
            skip -= n;
            continue;
        }
        let resource = Arc::new(rs.resource.unwrap_or_default());
        let resource_schema_url: Arc<str> = Arc::from(rs.schema_url);
        for ss in rs.scope_spans {
            if take == 0 {
                break;
            }
            if skip >= ss.spans.len() {
                skip -= ss.spans.len();
                continue;
            }
            let scope = Arc::new(ss.scope.unwrap_or_default());
            let scope_schema_url: Arc<str> = Arc::from(ss.schema_url);
            let before = out.len();
            out.extend(ss.spans.into_iter().skip(skip).take(take).map(|span| {
                SpanRecord::from_otlp(OtlpSpan {
                    resource: Arc::clone(&resource),
                    resource_schema_url: Arc::clone(&resource_schema_url),
                    scope: Arc::clone(&scope),
                    scope_schema_url: Arc::clone(&scope_schema_url),
                    span,
                })
            }));
            take -= out.len() - before;
            skip = 0;
        }
    }
}

/// The records of `batches`, in order, appended to `out`: decoded on up to
/// [`std::thread::available_parallelism`] threads (at most 4) when there are at least
/// [`PARALLEL_SNAPSHOT`] spans, each thread a run of consecutive batches of about the same
/// number of spans.
fn records_of(batches: &[Batch], spans: usize, out: &mut Vec<SpanRecord>) {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(4);
    if threads < 2 || spans < PARALLEL_SNAPSHOT || batches.len() < 2 {
        for b in batches {
            b.records(out);
        }
        return;
    }
    let share = spans.div_ceil(threads);
    let mut runs: Vec<&[Batch]> = Vec::with_capacity(threads);
    let (mut from, mut count) = (0, 0);
    for (i, b) in batches.iter().enumerate() {
        count += b.live;
        if count >= share {
            runs.push(&batches[from..=i]);
            (from, count) = (i + 1, 0);
        }
    }
    if from < batches.len() {
        runs.push(&batches[from..]);
    }
    let (first, rest) = runs.split_first().map_or((&[][..], &[][..]), |(f, r)| (*f, r));
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .iter()
            .map(|run| {
                scope.spawn(move || {
                    let mut part = Vec::with_capacity(run.iter().map(|b| b.live).sum());
                    for b in *run {
                        b.records(&mut part);
                    }
                    part
                })
            })
            .collect();
        for b in first {
            b.records(out);
        }
        for h in handles {
            match h.join() {
                Ok(mut part) => out.append(&mut part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
}

/// Spans from which [`SpanStore::snapshot`] decodes on several threads.
const PARALLEL_SNAPSHOT: usize = 8192;

impl SpanStore {
    /// A store keeping at most `capacity` spans.
    pub fn new(capacity: usize) -> Self {
        Self {
            spans: Mutex::new(Kept::default()),
            capacity: capacity.max(1),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
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

    /// Takes the spans of a request: rejects those with invalid ids
    /// ([`crate::otlp::InvalidSpan`], counted in [`SpanStore::invalid`]), queues the others
    /// for the database (if any), then keeps them in memory.
    ///
    /// # Errors
    /// The database refused the batch (full past its wait bound, or closed); nothing was
    /// kept, the spans are counted in [`SpanStore::refused`], and the sender should retry.
    pub async fn ingest(
        &self,
        mut request: ExportTraceServiceRequest,
    ) -> Result<Ingested, tracewire_store::StoreError> {
        let total = span_count(&request);
        let invalid = Invalid::remove_from(&mut request);
        let request = Arc::new(request);
        let n = total - invalid.spans;
        self.persist(&request, n).await?;
        self.keep(Held::Decoded(request), n);
        Ok(self.rejecting(n, total, invalid))
    }

    /// As [`SpanStore::ingest`], for a request still in its protobuf encoding (what the
    /// receiver does with every protobuf request): nothing is decoded until
    /// [`SpanStore::snapshot`], and the database stores the spans from the bytes
    /// ([`tracewire_store::Store::append_encoded`]). The bytes are kept as they came unless
    /// spans are rejected (then the rest is re-encoded: [`EncodedRequest::without_invalid`]).
    ///
    /// # Errors
    /// As [`SpanStore::ingest`].
    pub async fn ingest_encoded(&self, request: EncodedRequest) -> Result<Ingested, tracewire_store::StoreError> {
        let (total, invalid) = (request.spans(), request.invalid());
        let request = request.without_invalid();
        let n = request.spans();
        if let Some(db) = &self.db
            && n > 0
        {
            db.append_encoded(request.bytes().clone()).await.inspect_err(|_| {
                self.refused.fetch_add(n as u64, Ordering::Relaxed);
            })?;
        }
        self.add_encoded(request);
        Ok(self.rejecting(n, total, invalid))
    }

    /// Counts the rejected spans of a request of `total` spans, `accepted` of them kept.
    fn rejecting(&self, accepted: usize, total: usize, invalid: Invalid) -> Ingested {
        self.invalid.fetch_add(invalid.spans as u64, Ordering::Relaxed);
        Ingested { accepted, rejected: invalid.spans, message: invalid.message(total) }
    }

    /// Queues the `n` spans of a request for the database; counts them as refused when it
    /// cannot take them.
    async fn persist(
        &self,
        request: &Arc<ExportTraceServiceRequest>,
        n: usize,
    ) -> Result<(), tracewire_store::StoreError> {
        let Some(db) = &self.db else { return Ok(()) };
        db.append_request(Arc::clone(request)).await.inspect_err(|_| {
            self.refused.fetch_add(n as u64, Ordering::Relaxed);
        })
    }

    /// Keeps the spans of a request in memory (not in the database; see
    /// [`SpanStore::ingest`]).
    pub fn add(&self, request: ExportTraceServiceRequest) {
        let n = span_count(&request);
        self.keep(Held::Decoded(Arc::new(request)), n);
    }

    /// As [`SpanStore::add`], for a request still in its protobuf encoding.
    pub fn add_encoded(&self, request: EncodedRequest) {
        let n = request.spans();
        self.keep(Held::Encoded(request.into_bytes()), n);
    }

    fn keep(&self, request: Held, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            return;
        }
        let Ok(mut kept) = self.spans.lock() else { return };
        kept.batches.push_back(Batch { request, skip: 0, live: n });
        kept.spans += n;
        // Over capacity: drop the oldest spans, whole requests or the front of one.
        while kept.spans > self.capacity {
            let over = kept.spans - self.capacity;
            let Some(front) = kept.batches.front_mut() else { break };
            let k = over.min(front.live);
            front.skip += k;
            front.live -= k;
            if front.live == 0 {
                kept.batches.pop_front();
            }
            kept.spans -= k;
            self.dropped.fetch_add(k as u64, Ordering::Relaxed);
        }
    }

    /// The spans kept, as [`SpanRecord`]s, oldest first. Protobuf requests are decoded
    /// here (outside the store's lock: ingest goes on meanwhile), on several threads when
    /// there are many.
    pub fn snapshot(&self) -> Vec<SpanRecord> {
        let (batches, n) = match self.spans.lock() {
            Ok(kept) => (kept.batches.iter().cloned().collect::<Vec<Batch>>(), kept.spans),
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::with_capacity(n);
        records_of(&batches, n, &mut out);
        out
    }

    /// Spans received and accepted in all (those rejected for invalid ids are
    /// [`SpanStore::invalid`]).
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

    /// Spans rejected for invalid ids (their senders were told, in `partial_success`, and
    /// do not retry them); not counted in [`SpanStore::received`].
    pub fn invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }
}

/// tonic codec of `TraceService/Export` that keeps the request's bytes: the message
/// (already reassembled and, if compressed, inflated by tonic) is validated
/// ([`EncodedRequest::new`]), not decoded; a malformed one is `INVALID_ARGUMENT`.
#[derive(Debug, Clone, Copy, Default)]
struct EncodedCodec;

#[derive(Debug)]
struct EncodedDecoder;

#[derive(Debug)]
struct ResponseEncoder;

impl Codec for EncodedCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = EncodedRequest;
    type Encoder = ResponseEncoder;
    type Decoder = EncodedDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedDecoder
    }
}

impl Decoder for EncodedDecoder {
    type Item = EncodedRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<EncodedRequest>, Status> {
        use bytes::Buf;
        // Zero-copy: tonic's buffer is split, not copied.
        let bytes = src.copy_to_bytes(src.remaining());
        EncodedRequest::new(bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed ExportTraceServiceRequest: {e}")))
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: ExportTraceServiceResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

/// The gRPC path of `TraceService/Export`.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// `TraceService` over [`EncodedCodec`] (what `TraceServiceServer` is over prost's codec).
#[derive(Debug, Clone)]
struct TraceServer {
    store: Arc<SpanStore>,
    accept: tonic::codec::EnabledCompressionEncodings,
}

#[derive(Debug, Clone)]
struct Export(Arc<SpanStore>);

impl tonic::server::UnaryService<EncodedRequest> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<ExportTraceServiceResponse>, Status>;

    fn call(&mut self, request: Request<EncodedRequest>) -> Self::Future {
        let store = Arc::clone(&self.0);
        Box::pin(async move {
            match store.ingest_encoded(request.into_inner()).await {
                Ok(ingested) => Ok(Response::new(ingested.response())),
                // (Not reached: the codec validated the request, more strictly than the store.)
                Err(tracewire_store::StoreError::Malformed(e)) => {
                    Err(Status::invalid_argument(format!("malformed ExportTraceServiceRequest: {e}")))
                }
                Err(e) => Err(throttled(format!("the span database cannot take this batch now ({e}); retry"))),
            }
        })
    }
}

impl<B> Service<http::Request<B>> for TraceServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("only TraceService/Export is served").into_http()) });
        }
        let export = Export(Arc::clone(&self.store));
        let accept = self.accept;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(EncodedCodec)
                .apply_compression_config(accept, tonic::codec::EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
            Ok(too_large_is_resource_exhausted(grpc.unary(export, req).await))
        })
    }
}

/// How long a throttled sender should wait before retrying, in seconds: gRPC's `RetryInfo`
/// and HTTP's `Retry-After`.
const RETRY_AFTER_SECONDS: u64 = 1;

/// OTLP/gRPC backpressure (OTLP specification, "OTLP/gRPC Throttling": "the server SHOULD
/// return an error with code Unavailable and MAY supply additional details via status using
/// RetryInfo"): `UNAVAILABLE` whose details (`grpc-status-details-bin`, a `google.rpc.Status`,
/// as grpc-go, grpc-java and tonic-types read it) hold a `google.rpc.RetryInfo` of
/// [`RETRY_AFTER_SECONDS`], also sent alone as the `google.rpc.retryinfo-bin` trailer (where
/// the OpenTelemetry Python SDK's exporter reads it).
fn throttled(message: String) -> Status {
    let delay = std::time::Duration::from_secs(RETRY_AFTER_SECONDS);
    let retry = RetryInfo::after(delay);
    let details = RpcStatus::with_retry_info(tonic::Code::Unavailable as i32, &message, delay);
    let mut status = Status::with_details(tonic::Code::Unavailable, message, details.encode_to_vec().into());
    status
        .metadata_mut()
        .insert_bin("google.rpc.retryinfo-bin", tonic::metadata::MetadataValue::from_bytes(&retry.encode_to_vec()));
    status
}

/// tonic answers a message over its size limit (as sent) with `OUT_OF_RANGE`, which OTLP
/// clients retry ("OTLP/gRPC Response", "Failures": `OUT_OF_RANGE` is retryable); OTLP says
/// otherwise ("OTLP/gRPC Request": "If the limit is exceeded, the client MUST treat the error
/// as not-retryable. Note that in such a scenario, the gRPC server implementations return a
/// `RESOURCE_EXHAUSTED` status code"). The export itself never answers `OUT_OF_RANGE`, so
/// that answer is tonic's size check, made `RESOURCE_EXHAUSTED` (without `RetryInfo`: not to
/// be retried, as a message too large once decompressed already is).
fn too_large_is_resource_exhausted(response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let out_of_range = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .is_some_and(|code| code == tonic::Code::OutOfRange as i32);
    if !out_of_range {
        return response;
    }
    Status::resource_exhausted(format!(
        "the export request is larger than {MAX_REQUEST_BYTES} bytes; split it into smaller batches"
    ))
    .into_http()
}

impl tonic::server::NamedService for TraceServer {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
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
    // Collectors (rotel-agent, the OpenTelemetry Collector) forward gzip-compressed.
    let mut accept = tonic::codec::EnabledCompressionEncodings::default();
    accept.enable(tonic::codec::CompressionEncoding::Gzip);
    tonic::transport::Server::builder()
        // Export requests are often larger than HTTP/2's default 64 KiB window: with the
        // default, every request waits for window updates.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .tcp_nodelay(true)
        .add_service(TraceServer { store, accept })
        .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| ReceiverError::Io(e.to_string()))
}

/// The largest export request taken, in bytes: the message of an OTLP/gRPC call, and an
/// OTLP/HTTP body both as sent and once decompressed (OTLP specification, "OTLP/HTTP
/// Request": "The server MUST limit the size of the request body when parsing it,
/// including after decompression"). Over it, OTLP/HTTP answers 413; OTLP/gRPC answers
/// tonic's `OUT_OF_RANGE` (as sent) or `RESOURCE_EXHAUSTED` (once decompressed).
pub const MAX_REQUEST_BYTES: usize = 64 << 20;

/// Why an OTLP/HTTP export failed, as its status code says it (OTLP specification,
/// "OTLP/HTTP Response", "Failures").
#[derive(Debug)]
enum Failure {
    /// 400: the body cannot be decoded ("Bad Data"; not to be retried).
    BadData(String),
    /// 413: the body is over [`MAX_REQUEST_BYTES`], as sent or decompressed ("OTLP/HTTP
    /// Request"; not to be retried).
    TooLarge(String),
    /// 415: a content coding the receiver does not decode; the answer's `Accept-Encoding`
    /// lists those it does (RFC 9110 sections 15.5.16 and 12.5.3).
    UnsupportedEncoding(String),
    /// 415: a media type other than OTLP's two ("Binary Protobuf Encoding",
    /// "JSON Protobuf Encoding"), or none.
    UnsupportedMediaType(String),
    /// 503 with `Retry-After`: the database cannot take the batch now ("OTLP/HTTP
    /// Throttling"; to be retried).
    Unavailable(String),
}

impl From<encoding::BodyError> for Failure {
    fn from(e: encoding::BodyError) -> Self {
        match e {
            encoding::BodyError::Unsupported(_) => Self::UnsupportedEncoding(e.to_string()),
            encoding::BodyError::TooLarge { .. } => Self::TooLarge(e.to_string()),
            encoding::BodyError::Corrupt(_) | encoding::BodyError::Read(_) => Self::BadData(e.to_string()),
        }
    }
}

impl Failure {
    /// The answer, its body a `Status` in the request's encoding (protobuf, or JSON for a
    /// JSON request: "The server MUST use the same "Content-Type" in the response as it
    /// received in the request").
    fn respond(self, json: bool) -> axum::response::Response {
        let coding = matches!(self, Self::UnsupportedEncoding(_));
        let (status, code, message) = match self {
            Self::BadData(m) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, m),
            Self::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::ResourceExhausted, m),
            Self::UnsupportedEncoding(m) | Self::UnsupportedMediaType(m) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, tonic::Code::Unimplemented, m)
            }
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable, m),
        };
        let body = RpcStatus { code: code as i32, message, details: Vec::new() };
        let mut response = if json {
            let text = serde_json::json!({ "code": body.code, "message": body.message }).to_string();
            (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
        } else {
            (status, [(header::CONTENT_TYPE, "application/x-protobuf")], body.encode_to_vec()).into_response()
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        if coding {
            response
                .headers_mut()
                .insert(header::ACCEPT_ENCODING, header::HeaderValue::from_static(encoding::ACCEPTED));
        }
        response
    }
}

/// The encodings of an OTLP/HTTP body, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    /// `application/x-protobuf` ("Binary Protobuf Encoding").
    Protobuf,
    /// `application/json` ("JSON Protobuf Encoding").
    Json,
}

/// The media type of a request: its `Content-Type`'s type and subtype, case-insensitive,
/// parameters (`; charset=utf-8`) ignored (RFC 9110 section 8.3.1); `None` for any other,
/// or none (RFC 9110 section 8.3: then "application/octet-stream" may be assumed, which
/// OTLP is not).
fn media_type(headers: &HeaderMap) -> Option<MediaType> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/x-protobuf") {
        Some(MediaType::Protobuf)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Some(MediaType::Json)
    } else {
        None
    }
}

async fn http_export(
    axum::extract::State(store): axum::extract::State<Arc<SpanStore>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> axum::response::Response {
    let Some(media) = media_type(&headers) else {
        // Read to its end all the same, so that the connection serves the next request.
        encoding::discard(body, MAX_REQUEST_BYTES).await;
        let given = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let message = format!(
            "unsupported Content-Type {} (OTLP/HTTP takes application/x-protobuf or application/json)",
            given.map_or_else(|| "(none)".to_owned(), |g| format!("{g:?}"))
        );
        return Failure::UnsupportedMediaType(message).respond(false);
    };
    let json = media == MediaType::Json;
    match export_body(&store, &headers, body, json).await {
        Ok(ingested) if json => {
            ([(header::CONTENT_TYPE, "application/json")], ingested.json_response()).into_response()
        }
        Ok(ingested) => {
            ([(header::CONTENT_TYPE, "application/x-protobuf")], ingested.response().encode_to_vec()).into_response()
        }
        Err(failure) => failure.respond(json),
    }
}

/// Reads, decodes and ingests one OTLP/HTTP body.
async fn export_body(
    store: &SpanStore,
    headers: &HeaderMap,
    body: axum::body::Body,
    json: bool,
) -> Result<Ingested, Failure> {
    let body = encoding::read(headers, body, MAX_REQUEST_BYTES).await?;
    let bad = |e: &dyn std::fmt::Display| Failure::BadData(format!("cannot decode the export request: {e}"));
    let ingested = if json {
        let request = crate::otlp_json::decode_slice(&body).map_err(|e| bad(&e))?;
        store.ingest(request).await
    } else {
        store.ingest_encoded(EncodedRequest::new(body).map_err(|e| bad(&e))?).await
    };
    ingested.map_err(|e| match e {
        tracewire_store::StoreError::Malformed(e) => bad(&e),
        e => Failure::Unavailable(format!("the span database cannot take this batch now ({e}); retry")),
    })
}

/// Serves OTLP/HTTP (`POST /v1/traces`, `application/x-protobuf` or `application/json`,
/// as it is or gzip-compressed: `Content-Encoding: gzip`) on `listener` until `shutdown`.
///
/// Answers as the OTLP specification says ("OTLP/HTTP Response"): 200 with an
/// `ExportTraceServiceResponse` (with `partial_success` when spans with invalid ids were
/// rejected); 400 for a body that cannot be decoded (corrupt gzip included); 413 for a body
/// over [`MAX_REQUEST_BYTES`] as sent or once decompressed (a compressed body is inflated as
/// it arrives and abandoned at the limit); 415 for a `Content-Type` other than
/// `application/x-protobuf` and `application/json`, and (with `Accept-Encoding`) for any
/// content coding other than gzip and identity; 503 with `Retry-After` when the database
/// cannot take the batch. Responses are in the request's encoding (failures: a
/// `google.rpc.Status`; protobuf when the content type is not supported).
///
/// # Errors
/// When serving fails.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    store: Arc<SpanStore>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverError> {
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(http_export)).with_state(store);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(|e| ReceiverError::Io(e.to_string()))
}
