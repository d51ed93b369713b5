//! [`SpanStore`]: the spans received, bounded in memory, and handed to the database.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::records::{KeptRequest, RequestBody, records_of};
use crate::SpanRecord;
use crate::otlp::{EncodedRequest, Invalid};

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
    spans: Mutex<KeptSpans>,
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
struct KeptSpans {
    requests: VecDeque<KeptRequest>,
    spans: usize,
}

fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

impl SpanStore {
    /// A store keeping at most `capacity` spans.
    pub fn new(capacity: usize) -> Self {
        Self {
            spans: Mutex::new(KeptSpans::default()),
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
        self.keep(RequestBody::Decoded(request), n);
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
        self.keep(RequestBody::Decoded(Arc::new(request)), n);
    }

    /// As [`SpanStore::add`], for a request still in its protobuf encoding.
    pub fn add_encoded(&self, request: EncodedRequest) {
        let n = request.spans();
        self.keep(RequestBody::Encoded(request.into_bytes()), n);
    }

    fn keep(&self, body: RequestBody, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        if n == 0 {
            return;
        }
        let Ok(mut kept) = self.spans.lock() else { return };
        kept.requests.push_back(KeptRequest { body, skip: 0, live: n });
        kept.spans += n;
        // Over capacity: drop the oldest spans, whole requests or the front of one.
        while kept.spans > self.capacity {
            let over = kept.spans - self.capacity;
            let Some(front) = kept.requests.front_mut() else { break };
            let k = over.min(front.live);
            front.skip += k;
            front.live -= k;
            if front.live == 0 {
                kept.requests.pop_front();
            }
            kept.spans -= k;
            self.dropped.fetch_add(k as u64, Ordering::Relaxed);
        }
    }

    /// The spans kept, as [`SpanRecord`]s, oldest first. Protobuf requests are decoded
    /// here (outside the store's lock: ingest goes on meanwhile), on several threads when
    /// there are many.
    pub fn snapshot(&self) -> Vec<SpanRecord> {
        let (requests, n) = match self.spans.lock() {
            Ok(kept) => (kept.requests.iter().cloned().collect::<Vec<KeptRequest>>(), kept.spans),
            Err(_) => return Vec::new(),
        };
        let mut out = Vec::with_capacity(n);
        records_of(&requests, n, &mut out);
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
