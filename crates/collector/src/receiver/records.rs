//! Kept requests into [`SpanRecord`]s: each request decoded once (prost), its spans,
//! resources and scopes moved into the records; on several threads for a large snapshot.
//!
//! Requests are decoded here, when a snapshot asks, not on arrival: records kept instead
//! of bytes would be cloned by every snapshot (a record's strings, about half the
//! allocations of decoding it) and take several times the memory of the bytes. Decoding
//! costs about 37 allocations per span of the `collector_ingest` load (6 string attributes:
//! prost's `Span` and the record's text view each own every key and value); a
//! one-pass reader that builds each `Span` from the bytes in place saves one of them and
//! measured no faster, so prost decodes.

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tracewire_store::OtlpSpan;

use crate::SpanRecord;

/// The spans of one OTLP export request, whole ([`SpanRecord::from_otlp`]).
pub fn spans_of(request: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    SpanRecord::all_of(request)
}

/// A request as the store keeps it.
#[derive(Debug, Clone)]
pub(super) enum RequestBody {
    /// Its protobuf bytes, validated on arrival ([`crate::otlp::EncodedRequest`]).
    Encoded(Bytes),
    /// Decoded (an OTLP/JSON request, or one given decoded to [`super::SpanStore::add`]).
    Decoded(Arc<ExportTraceServiceRequest>),
}

/// One request's spans in the store: the first `skip` (in request order) were dropped, the
/// next `live` are kept (and there are no more).
#[derive(Debug, Clone)]
pub(super) struct KeptRequest {
    pub(super) body: RequestBody,
    pub(super) skip: usize,
    pub(super) live: usize,
}

impl KeptRequest {
    /// Appends the kept spans as records.
    fn records(&self, out: &mut Vec<SpanRecord>) {
        let request = match &self.body {
            // Validated on arrival: decoding does not fail (`EncodedRequest::decode`).
            RequestBody::Encoded(bytes) => ExportTraceServiceRequest::decode(bytes.clone()).unwrap_or_default(),
            // Shared with the store: a copy to take apart (of the whole request: only the
            // oldest kept request has spans dropped).
            RequestBody::Decoded(request) => ExportTraceServiceRequest::clone(request),
        };
        window_records(request, self.skip, self.live, out);
    }
}

/// The records of `take` spans of `request` after its first `skip` (in request order),
/// appended to `out`, taking `request` apart: its spans, resources and scopes move into the
/// records.
fn window_records(request: ExportTraceServiceRequest, mut skip: usize, mut take: usize, out: &mut Vec<SpanRecord>) {
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

/// The records of `requests`, in order, appended to `out`: decoded on up to
/// [`std::thread::available_parallelism`] threads (at most 4) when there are at least
/// [`PARALLEL_SNAPSHOT`] spans, each thread a run of consecutive requests of about the same
/// number of spans.
pub(super) fn records_of(requests: &[KeptRequest], spans: usize, out: &mut Vec<SpanRecord>) {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(4);
    if threads < 2 || spans < PARALLEL_SNAPSHOT || requests.len() < 2 {
        for r in requests {
            r.records(out);
        }
        return;
    }
    let share = spans.div_ceil(threads);
    let mut runs: Vec<&[KeptRequest]> = Vec::with_capacity(threads);
    let (mut from, mut count) = (0, 0);
    for (i, r) in requests.iter().enumerate() {
        count += r.live;
        if count >= share {
            runs.push(&requests[from..=i]);
            (from, count) = (i + 1, 0);
        }
    }
    if from < requests.len() {
        runs.push(&requests[from..]);
    }
    let (first, rest) = runs.split_first().map_or((&[][..], &[][..]), |(f, r)| (*f, r));
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .iter()
            .map(|run| {
                scope.spawn(move || {
                    let mut part = Vec::with_capacity(run.iter().map(|r| r.live).sum());
                    for r in *run {
                        r.records(&mut part);
                    }
                    part
                })
            })
            .collect();
        for r in first {
            r.records(out);
        }
        for h in handles {
            match h.join() {
                Ok(mut part) => out.append(&mut part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
}

/// Spans from which [`super::SpanStore::snapshot`] decodes on several threads.
const PARALLEL_SNAPSHOT: usize = 8192;
