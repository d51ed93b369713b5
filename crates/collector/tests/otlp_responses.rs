//! How the receiver answers, over real sockets, as the OTLP specification says
//! (opentelemetry-proto `docs/specification.md`, sections named in each test): partial
//! success for spans with invalid ids, and the failures of OTLP/gRPC and OTLP/HTTP.
//!
//! Which spans are invalid is `opentelemetry/proto/trace/v1/trace.proto`'s `Span`:
//! `trace_id` "is a 16-byte array. An ID with all zeroes OR of length other than 16 bytes
//! is considered invalid"; `span_id` the same with 8 bytes; `parent_span_id` "If this is a
//! root span, then this field must be empty. The ID is an 8-byte array."

mod common;

use std::io::Write;
use std::sync::Arc;

use common::{
    JSON, PROTOBUF, ProtoDuration, RetryInfo, RpcStatus, exchange, export_raw, export_raw_with, full_db,
    http_receiver_thread, post, request,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tracewire_collector::SpanRecord;
use tracewire_collector::receiver::{MAX_REQUEST_BYTES, SpanStore, bind, serve_grpc};

/// An OTLP/gRPC receiver into `store` on the test's runtime; returns its endpoint.
async fn grpc_receiver(store: &Arc<SpanStore>) -> String {
    let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    tokio::spawn(serve_grpc(listener, Arc::clone(store), std::future::pending()));
    format!("http://{addr}")
}

fn span(name: &str, trace_id: Vec<u8>, span_id: Vec<u8>, parent: Vec<u8>) -> Span {
    Span { name: name.into(), trace_id, span_id, parent_span_id: parent, ..Span::default() }
}

/// Seven spans, two of them valid ("ok-root" and "ok-child"), one invalid for each reason.
fn mixed() -> ExportTraceServiceRequest {
    let spans = [
        span("ok-root", vec![7; 16], vec![1; 8], vec![]),
        span("trace-15-bytes", vec![7; 15], vec![2; 8], vec![]),
        span("trace-zero", vec![0; 16], vec![3; 8], vec![]),
        span("span-7-bytes", vec![7; 16], vec![4; 7], vec![]),
        span("span-zero", vec![7; 16], vec![0; 8], vec![]),
        span("parent-4-bytes", vec![7; 16], vec![5; 8], vec![1; 4]),
        span("ok-child", vec![7; 16], vec![6; 8], vec![1; 8]),
    ];
    // Split over two scopes, so that rejection works across them.
    let (a, b) = spans.split_at(3);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![
                ScopeSpans { spans: a.to_vec(), ..ScopeSpans::default() },
                ScopeSpans { spans: b.to_vec(), ..ScopeSpans::default() },
            ],
            ..ResourceSpans::default()
        }],
    }
}

fn names(spans: &[SpanRecord]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

/// What `partial_success` says for [`mixed`].
fn check_mixed_answer(p: &ExportTracePartialSuccess) {
    assert_eq!(p.rejected_spans, 5, "{p:?}");
    assert!(p.error_message.contains("rejected 5 of 7 spans"), "{}", p.error_message);
    assert!(
        p.error_message.contains("the span at index 1 of the request, trace_id is 15 bytes, not 16"),
        "{}",
        p.error_message
    );
}

/// "OTLP/gRPC Response", "Partial Success": "If the request is only partially accepted [...]
/// the server MUST initialize the `partial_success` field [...] and it MUST set the
/// respective `rejected_spans` [...] field with the number of spans [...] it rejected. The
/// server SHOULD populate the `error_message` field with a human-readable error message".
/// The valid spans are kept (also across the next requests); the invalid ones never are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_partial_success_keeps_the_valid_spans_and_counts_the_rejected() {
    let store = Arc::new(SpanStore::new(100));
    let mut client = TraceServiceClient::connect(grpc_receiver(&store).await).await.unwrap();
    let answer = client.export(mixed()).await.unwrap().into_inner();
    check_mixed_answer(&answer.partial_success.unwrap());
    // A valid request after it: a full success, "partial_success" unset ("Full Success").
    let answer = client.export(request(9, 2)).await.unwrap().into_inner();
    assert_eq!(answer, ExportTraceServiceResponse { partial_success: None });
    assert_eq!(names(&store.snapshot()), ["ok-root", "ok-child", "s0", "s1"]);
    assert_eq!((store.received(), store.invalid()), (4, 5));
}

/// "OTLP/HTTP Response", "Partial Success": "the server MUST respond with `HTTP 200 OK`. The
/// response body MUST be the same `ExportTraceServiceResponse` message as in the Full Success
/// case", in the request's encoding ("The server MUST use the same "Content-Type" in the
/// response as it received in the request"); in JSON, per "JSON Protobuf Encoding", the
/// int64 `rejectedSpans` is a decimal string and field names are lowerCamelCase.
#[test]
fn http_partial_success_in_protobuf_and_json() {
    let store = Arc::new(SpanStore::new(100));
    let addr = http_receiver_thread(&store);
    let a = post(&addr, PROTOBUF, &[], &mixed().encode_to_vec());
    assert_eq!((a.status, a.header("content-type")), (200, Some(PROTOBUF)), "{a:?}");
    check_mixed_answer(&ExportTraceServiceResponse::decode(&a.body[..]).unwrap().partial_success.unwrap());

    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"json-ok"},
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"","name":"json-no-span-id"}]}]}]}"#;
    let a = post(&addr, JSON, &[], json.as_bytes());
    assert_eq!((a.status, a.header("content-type")), (200, Some(JSON)), "{a:?}");
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["partialSuccess"]["rejectedSpans"], "1", "{v}");
    let message = v["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(message.contains("the span at index 1 of the request, span_id is 0 bytes, not 8"), "{message}");

    // A full success in JSON is an empty response ("partial_success" unset).
    let a = post(&addr, JSON, &[], br#"{"resourceSpans":[]}"#);
    assert_eq!((a.status, &a.body[..]), (200, &b"{}"[..]));
    assert_eq!(names(&store.snapshot()), ["ok-root", "ok-child", "json-ok"]);
    assert_eq!((store.received(), store.invalid()), (3, 6));
}

/// A request whose spans are all invalid is decodable, so it is not "Bad Data" (that is a
/// request "that cannot be decoded", "OTLP/HTTP Response", "Bad Data"): it is answered as
/// every request with rejected spans is, with `partial_success` counting all of them, which
/// the sender "MUST NOT retry" ("Partial Success") and can count as rejected; the
/// specification's `rejected_spans` has no upper bound short of the request's span count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_only_invalid_spans_is_a_success_with_every_span_rejected() {
    let store = Arc::new(SpanStore::new(100));
    let mut request = request(0, 3); // trace id all zeros
    request.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![5; 16];
    request.resource_spans[0].scope_spans[0].spans[1].span_id = vec![5; 9];
    let mut client = TraceServiceClient::connect(grpc_receiver(&store).await).await.unwrap();
    let p = client.export(request.clone()).await.unwrap().into_inner().partial_success.unwrap();
    assert_eq!(p.rejected_spans, 3);
    assert!(p.error_message.contains("rejected 3 of 3 spans"), "{}", p.error_message);
    assert!(
        p.error_message.contains("the span at index 0 of the request, trace_id is all zeros"),
        "{}",
        p.error_message
    );

    let addr = http_receiver_thread(&store);
    let a = post(&addr, PROTOBUF, &[], &request.encode_to_vec());
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(ExportTraceServiceResponse::decode(&a.body[..]).unwrap().partial_success.unwrap().rejected_spans, 3);
    assert_eq!((store.snapshot().len(), store.received(), store.invalid()), (0, 0, 6));
}

/// With a database (`tracewire collect --db`), what is stored is what was accepted: the
/// rejected spans are neither in memory nor in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_database_rejected_spans_are_not_stored() {
    let dir = tracewire_testkit::TempDir::new("tw-partial-db").unwrap();
    let path = dir.path().join("spans.db");
    let store = Arc::new(SpanStore::new(100).with_db(tracewire_store::Store::open(&path).unwrap()));
    let mut client = TraceServiceClient::connect(grpc_receiver(&store).await).await.unwrap();
    let p = client.export(mixed()).await.unwrap().into_inner().partial_success.unwrap();
    assert_eq!(p.rejected_spans, 5);
    // Over HTTP too (the valid spans again: stored once).
    let addr = http_receiver_thread(&store);
    assert_eq!(post(&addr, PROTOBUF, &[], &mixed().encode_to_vec()).status, 200);
    store.db().unwrap().flush().await.unwrap();
    let stored = tracewire_store::Store::open(&path).unwrap().spans().await.unwrap();
    let mut stored = names(&stored);
    stored.sort_unstable();
    assert_eq!(stored, ["ok-child", "ok-root"]);
}

/// Protobuf's rule for a field that occurs more than once ("the last value wins" for a
/// singular field, as prost decodes it) decides which id is checked: the zero-copy check
/// judges the value the decoded span will have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_occurrence_of_an_id_field_is_the_one_checked() {
    // Span { trace_id (1) twice, span_id (2) }, the first trace id valid, the last not; and
    // the other way round.
    let encode = |first: &[u8], last: &[u8], name: &str| {
        let mut span = Vec::new();
        for id in [first, last] {
            span.push(0x0a);
            span.push(u8::try_from(id.len()).unwrap());
            span.extend_from_slice(id);
        }
        span.extend_from_slice(&[0x12, 8, 1, 1, 1, 1, 1, 1, 1, 1]);
        span.push(0x2a); // name (5)
        span.push(u8::try_from(name.len()).unwrap());
        span.extend_from_slice(name.as_bytes());
        span
    };
    let mut scope = Vec::new();
    for span in [encode(&[3; 16], &[3; 12], "last-invalid"), encode(&[0; 16], &[3; 16], "last-valid")] {
        scope.push(0x12); // ScopeSpans.spans (2)
        scope.push(u8::try_from(span.len()).unwrap());
        scope.extend(span);
    }
    let mut resource = vec![0x12, u8::try_from(scope.len()).unwrap()]; // ResourceSpans.scope_spans (2)
    resource.extend(scope);
    let mut body = vec![0x0a, u8::try_from(resource.len()).unwrap()]; // resource_spans (1)
    body.extend(resource);
    let decoded = ExportTraceServiceRequest::decode(&body[..]).unwrap();
    assert_eq!(decoded.resource_spans[0].scope_spans[0].spans[1].trace_id, vec![3; 16]);

    let store = Arc::new(SpanStore::new(100));
    export_raw(&grpc_receiver(&store).await, body).await.unwrap();
    assert_eq!(names(&store.snapshot()), ["last-valid"]);
    assert_eq!(store.snapshot()[0].trace_id, "03".repeat(16));
    assert_eq!(store.invalid(), 1);
}

/// "OTLP/HTTP Response", "Failures": "If the processing of the request fails, the server
/// MUST respond with appropriate HTTP 4xx or HTTP 5xx status code"; OTLP/HTTP bodies are
/// `application/x-protobuf` or `application/json` ("Binary Protobuf Encoding", "JSON
/// Protobuf Encoding"), so any other media type is RFC 9110's 415 (section 15.5.16: "the
/// content is in a format not supported by this method on the target resource"), with a
/// Protobuf-encoded `Status` ("Failures"). Media types are case-insensitive and take
/// parameters (RFC 9110 section 8.3.1). The connection serves the next request.
#[test]
fn an_unsupported_content_type_is_415() {
    let store = Arc::new(SpanStore::new(100));
    let addr = http_receiver_thread(&store);
    let body = request(1, 2).encode_to_vec();
    for ctype in ["text/plain", "application/xml", "application/protobuf", "application/octet-stream", "x"] {
        let a = post(&addr, ctype, &[], &body);
        assert_eq!((a.status, a.header("content-type")), (415, Some(PROTOBUF)), "{ctype}: {a:?}");
        assert_eq!(a.header("accept-encoding"), None, "not a content coding problem");
        let status = a.status();
        assert_eq!(status.code, 12, "UNIMPLEMENTED");
        assert!(status.message.contains("unsupported Content-Type"), "{}", status.message);
    }
    // No Content-Type at all.
    let head = format!("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n", body.len());
    let a = exchange(&addr, &head, &body);
    assert_eq!(a.status, 415, "{a:?}");
    assert!(a.status().message.contains("(none)"), "{:?}", a.status());
    assert_eq!(store.received(), 0);
    // Accepted with parameters, in any case.
    for ctype in ["Application/X-Protobuf", "application/x-protobuf; proto=opentelemetry"] {
        assert_eq!(post(&addr, ctype, &[], &body).status, 200, "{ctype}");
    }
    let json = br#"{"resourceSpans":[]}"#;
    assert_eq!(post(&addr, "application/json; charset=utf-8", &[], json).status, 200);
    assert_eq!(store.received(), 4);

    // Refused, then served, on one kept-alive connection.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    for (ctype, want) in [("text/plain", "415"), (PROTOBUF, "200")] {
        write!(
            s,
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(&body).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            std::io::Read::read_exact(&mut s, &mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {want}")), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap();
        std::io::Read::read_exact(&mut s, &mut vec![0; len]).unwrap();
    }
    assert_eq!(store.received(), 6);
}

/// "OTLP/HTTP Throttling": "If the server receives more requests than the client is allowed
/// or the server is overloaded, the server SHOULD respond with HTTP 429 Too Many Requests or
/// HTTP 503 Service Unavailable and MAY include "Retry-After" header with a recommended
/// time interval in seconds to wait before retrying." Here: a database that cannot take the
/// spans; every refusal counted, nothing acknowledged that was not kept.
#[test]
fn http_backpressure_is_503_with_retry_after() {
    let dir = tracewire_testkit::TempDir::new("tw-http-503").unwrap();
    let store = Arc::new(SpanStore::new(10_000).with_db(full_db(&dir.path().join("t.db"))));
    let addr = http_receiver_thread(&store);
    let (mut ok, mut throttled) = (0u64, 0u64);
    for i in 1..=20u8 {
        let mut req = request(i, 3);
        for s in req.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
            s.name = "x".repeat(16 << 10);
        }
        for ctype in [PROTOBUF, JSON] {
            let body = if ctype == JSON { serde_json::to_vec(&req).unwrap() } else { req.encode_to_vec() };
            let a = post(&addr, ctype, &[], &body);
            match a.status {
                200 => ok += 1,
                503 => {
                    assert_eq!(a.header("retry-after"), Some("1"), "{a:?}");
                    assert_eq!(a.header("content-type"), Some(ctype));
                    let status = a.status();
                    assert_eq!(status.code, 14, "UNAVAILABLE");
                    assert!(status.message.contains("retry"), "{}", status.message);
                    throttled += 1;
                }
                other => panic!("{other}: {a:?}"),
            }
        }
    }
    assert!(throttled > 0 && ok > 0, "ok {ok}, throttled {throttled}");
    assert_eq!(store.refused(), throttled * 3);
}

/// "OTLP/gRPC Throttling": "To signal backpressure when using gRPC transport, the server
/// SHOULD return an error with code Unavailable and MAY supply additional details via status
/// using RetryInfo." The details are a `google.rpc.Status` in `grpc-status-details-bin`
/// (as grpc-go's `status.WithDetails` in the specification's example sends them), and the
/// `RetryInfo` also alone in `google.rpc.retryinfo-bin`, the trailer the OpenTelemetry
/// Python SDK's exporter reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_backpressure_is_unavailable_with_retry_info() {
    let dir = tracewire_testkit::TempDir::new("tw-grpc-unavailable").unwrap();
    let store = Arc::new(SpanStore::new(10_000).with_db(full_db(&dir.path().join("t.db"))));
    let mut client = TraceServiceClient::connect(grpc_receiver(&store).await).await.unwrap();
    let mut refused = None;
    for i in 1..=20u8 {
        let mut req = request(i, 3);
        for s in req.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
            s.name = "x".repeat(16 << 10);
        }
        if let Err(status) = client.export(req).await {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("the database never pushed back");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
    let details = RpcStatus::decode(status.details()).unwrap();
    assert_eq!(details.code, 14);
    assert_eq!(details.details.len(), 1, "{details:?}");
    assert_eq!(details.details[0].type_url, "type.googleapis.com/google.rpc.RetryInfo");
    let retry = RetryInfo::decode(&details.details[0].value[..]).unwrap();
    assert_eq!(retry.retry_delay, Some(ProtoDuration { seconds: 1, nanos: 0 }));
    let alone = status.metadata().get_bin("google.rpc.retryinfo-bin").unwrap().to_bytes().unwrap();
    assert_eq!(RetryInfo::decode(alone).unwrap(), retry);
}

/// "OTLP/gRPC Request": "The server MUST enforce a message size limit [...] If the limit is
/// exceeded, the client MUST treat the error as not-retryable. Note that in such a scenario,
/// the gRPC server implementations return a `RESOURCE_EXHAUSTED` status code". Over the
/// limit as sent (tonic's own answer, `OUT_OF_RANGE`, is retryable in the table of
/// "Failures"), and once decompressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_the_size_limit_is_resource_exhausted() {
    let store = Arc::new(SpanStore::new(100));
    let endpoint = grpc_receiver(&store).await;
    let mut big = request(1, 1);
    big.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(MAX_REQUEST_BYTES);
    // As sent.
    let status = export_raw(&endpoint, big.encode_to_vec()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("larger than"), "{status}");
    assert!(status.details().is_empty(), "no RetryInfo: not to be retried");
    // Once decompressed: a small gzip message.
    let mut client = TraceServiceClient::connect(endpoint.clone())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_encoding_message_size(usize::MAX);
    let status = client.export(big).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    // Just under the limit is taken.
    let mut fits = request(2, 1);
    fits.resource_spans[0].scope_spans[0].spans[0].name = "x".repeat(MAX_REQUEST_BYTES - 100);
    client.export(fits).await.unwrap();
    assert_eq!(store.received(), 1);
}

/// "Protocol Details": servers support `none` and `gzip`; another `grpc-encoding` is
/// answered `UNIMPLEMENTED` (gRPC's compression document: "If a server receives a message
/// compressed with an unsupported algorithm, it MUST respond with an UNIMPLEMENTED status
/// code"), with the encodings it accepts in `grpc-accept-encoding`; not retried
/// ("Failures": UNIMPLEMENTED is not retryable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_with_an_unsupported_compression_is_unimplemented() {
    let store = Arc::new(SpanStore::new(100));
    let endpoint = grpc_receiver(&store).await;
    for encoding in ["deflate", "zstd", "snappy"] {
        let status = export_raw_with(&endpoint, request(1, 2).encode_to_vec(), &[("grpc-encoding", encoding)])
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{encoding}: {status}");
        let accepted = status.metadata().get("grpc-accept-encoding").and_then(|v| v.to_str().ok());
        assert_eq!(accepted, Some("gzip,identity"), "{encoding}");
    }
    assert_eq!(store.received(), 0);
    export_raw_with(&endpoint, request(1, 2).encode_to_vec(), &[("grpc-encoding", "identity")]).await.unwrap();
    assert_eq!(store.received(), 2);
}

/// "OTLP/gRPC Response", "Failures": "To indicate not-retryable errors, the server is
/// recommended to use code InvalidArgument", as for a request that cannot be decoded ("this
/// can happen, when the request contains bad data and cannot be deserialized").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_undecodable_is_invalid_argument() {
    let store = Arc::new(SpanStore::new(100));
    let endpoint = grpc_receiver(&store).await;
    let good = request(1, 2).encode_to_vec();
    for body in [good[..good.len() - 1].to_vec(), b"\x01\x02garbage".to_vec()] {
        let status = export_raw(&endpoint, body).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
        assert!(status.message().contains("malformed ExportTraceServiceRequest"), "{status}");
    }
    assert_eq!(store.received(), 0);
}

mod properties {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;
    use proptest::prelude::*;
    use prost::Message;
    use tracewire_collector::otlp::{EncodedRequest, Invalid};

    /// Ids of every length around the valid ones, often all zeros.
    fn id() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0..18usize).prop_map(|n| vec![0; n]),
            proptest::collection::vec(any::<u8>(), 0..18),
            Just(vec![9; 16]),
            Just(vec![9; 8]),
            Just(Vec::new()),
        ]
    }

    fn span() -> impl Strategy<Value = Span> {
        (id(), id(), id()).prop_map(|(trace_id, span_id, parent_span_id)| Span {
            trace_id,
            span_id,
            parent_span_id,
            ..Span::default()
        })
    }

    /// `ExportTraceServiceRequest { resource_spans: [{ scope_spans: [{ spans }] }] }` whose
    /// spans are each the concatenation of the encodings of `parts` (protobuf merges them:
    /// the last occurrence of an id field wins).
    fn request(spans: &[Vec<Span>]) -> Vec<u8> {
        fn field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
            out.push(tag << 3 | 2);
            prost::encoding::encode_varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        }
        let mut scope = Vec::new();
        for parts in spans {
            let merged: Vec<u8> = parts.iter().flat_map(Message::encode_to_vec).collect();
            field(2, &merged, &mut scope);
        }
        let mut resource = Vec::new();
        field(2, &scope, &mut resource);
        let mut out = Vec::new();
        field(1, &resource, &mut out);
        out
    }

    proptest! {
        /// The zero-copy check ([`EncodedRequest::new`]) finds the invalid spans that the
        /// decoded request holds, the first of them included, and dropping them leaves
        /// exactly the valid ones.
        #[test]
        fn the_zero_copy_check_judges_ids_as_the_decoded_request_has_them(
            spans in proptest::collection::vec(proptest::collection::vec(span(), 1..3), 0..6)
        ) {
            let bytes = request(&spans);
            let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
            let encoded = EncodedRequest::new(bytes.into()).unwrap();
            prop_assert_eq!(encoded.invalid(), Invalid::of(&decoded));
            let mut valid = decoded.clone();
            let removed = Invalid::remove_from(&mut valid);
            prop_assert_eq!(removed, encoded.invalid());
            let kept = encoded.without_invalid();
            prop_assert_eq!(kept.invalid(), Invalid::default());
            prop_assert_eq!(kept.decode(), valid);
        }
    }
}
