//! OTLP/HTTP request bodies by content coding, over a real socket: every answer's status,
//! headers and `google.rpc.Status` body, and exactly what was kept.
//!
//! The OTLP specification (opentelemetry-proto `docs/specification.md`):
//! - "Protocol Details": "All server components MUST support the following transport
//!   compression options: No compression, denoted by `none`. Gzip compression, denoted by
//!   `gzip`."
//! - "OTLP/HTTP Request": "The client MAY gzip the content and in that case MUST include
//!   "Content-Encoding: gzip" request header." "The server MUST limit the size of the
//!   request body when parsing it, including after decompression [...] If the limit is
//!   exceeded, the server SHOULD respond with `HTTP 413 Content Too Large`."
//! - "Failures": "The response body for all `HTTP 4xx` and `HTTP 5xx` responses MUST be a
//!   Protobuf-encoded Status message"; "Bad Data": a body that "cannot be decoded" is
//!   `HTTP 400 Bad Request`; "OTLP/HTTP Response": "The server MUST use the same
//!   "Content-Type" in the response as it received in the request."
//!
//! Other codings: RFC 9110 section 15.5.16, "415 Unsupported Media Type": "If the problem
//! was caused by an unsupported content coding, the Accept-Encoding response header field
//! (Section 12.5.3) ought to be used to indicate which (if any) content codings would have
//! been accepted in the request."

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use common::{Answer, JSON, PROTOBUF, exchange, http_receiver_thread, post, request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tracewire_collector::receiver::{MAX_REQUEST_BYTES, SpanStore};

/// A receiver on its own runtime (the tests' clients are blocking sockets).
fn receiver() -> (Arc<SpanStore>, String) {
    let store = Arc::new(SpanStore::new(100_000));
    let addr = http_receiver_thread(&store);
    (store, addr)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn gzip_bodies_are_accepted_protobuf_and_json() {
    let (store, addr) = receiver();
    let mut kept = 0;
    // gzip under every name a sender may use; identity as it is.
    for (i, encodings) in
        [&["gzip"][..], &["GZIP"], &["x-gzip"], &["identity, gzip"], &["gzip", "identity"], &["identity"], &[]]
            .into_iter()
            .enumerate()
    {
        let trace = u8::try_from(i + 1).unwrap();
        let plain = request(trace, 3).encode_to_vec();
        let body = if encodings.iter().any(|e| e.to_ascii_lowercase().contains("gzip")) { gzip(&plain) } else { plain };
        let a = post(&addr, PROTOBUF, encodings, &body);
        assert_eq!(a.status, 200, "{encodings:?}: {a:?}");
        assert_eq!(a.header("content-type"), Some(PROTOBUF));
        assert_eq!(ExportTraceServiceResponse::decode(&a.body[..]).unwrap().partial_success, None);
        kept += 3;
        assert_eq!(store.received(), kept, "{encodings:?}");
    }

    // OTLP/JSON, gzip-compressed.
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-gz"}}]},
        "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "name":"rpc.dispatch","kind":2,"startTimeUnixNano":"1000","endTimeUnixNano":"3000",
        "attributes":[{"key":"rpc.method","value":{"stringValue":"Start"}}]}]}]}]}"#;
    let a = post(&addr, JSON, &["gzip"], &gzip(json.as_bytes()));
    assert_eq!((a.status, a.header("content-type"), &a.body[..]), (200, Some(JSON), &b"{}"[..]), "{a:?}");
    let got: Vec<_> = store.snapshot().into_iter().filter(|s| s.service == "json-gz").collect();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].name.as_str(), got[0].start_ns, got[0].end_ns), ("rpc.dispatch", 1000, 3000));
    assert_eq!(got[0].attributes.get("rpc.method").map(String::as_str), Some("Start"));
    kept += 1;

    // Two gzip members one after the other (RFC 1952 section 2.2: "A gzip file consists of a
    // series of members"): one body, whose two protobuf halves merge into one request.
    let mut body = gzip(&request(20, 2).encode_to_vec());
    body.extend(gzip(&request(21, 4).encode_to_vec()));
    assert_eq!(post(&addr, PROTOBUF, &["gzip"], &body).status, 200);
    kept += 6;

    // Chunked transfer coding (no Content-Length), in small chunks: inflated as they come.
    let body = gzip(&request(22, 5).encode_to_vec());
    let mut chunked = Vec::new();
    for c in body.chunks(7) {
        chunked.extend(format!("{:x}\r\n", c.len()).into_bytes());
        chunked.extend(c);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PROTOBUF}\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
    );
    assert_eq!(exchange(&addr, &head, &chunked).status, 200);
    kept += 5;

    assert_eq!((store.received(), store.snapshot().len() as u64), (kept, kept));
}

#[test]
fn a_corrupt_gzip_body_is_400_and_nothing_is_kept() {
    let (store, addr) = receiver();
    let plain = request(1, 3).encode_to_vec();
    let good = gzip(&plain);
    let mut bad_crc = good.clone();
    let at = bad_crc.len() - 8;
    bad_crc[at] ^= 1;
    let mut bad_size = good.clone();
    let at = bad_size.len() - 1;
    bad_size[at] ^= 1;
    let mut bad_data = good.clone();
    bad_data[12] ^= 0xff;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"garbage");
    let cases: [(&str, Vec<u8>); 8] = [
        ("no trailer", good[..good.len() - 8].to_vec()),
        ("cut in the deflate data", good[..good.len() / 2].to_vec()),
        ("cut in the header", good[..5].to_vec()),
        ("wrong CRC-32", bad_crc),
        ("wrong size", bad_size),
        ("corrupt deflate data", bad_data),
        ("garbage after the member", trailing),
        ("not gzip at all", plain.clone()),
    ];
    for (what, body) in &cases {
        let a = post(&addr, PROTOBUF, &["gzip"], body);
        assert_eq!(a.status, 400, "{what}: {a:?}");
        let status = a.status();
        assert_eq!(status.code, 3, "INVALID_ARGUMENT; {what}");
        assert!(status.message.contains("gzip"), "{what}: {}", status.message);
        // The same for a JSON request, answered in JSON.
        let a = post(&addr, JSON, &["gzip"], body);
        assert_eq!((a.status, a.header("content-type")), (400, Some(JSON)), "{what}: {a:?}");
        assert!(a.status().message.contains("gzip"), "{what}");
    }
    // Valid gzip around a body that is not an ExportTraceServiceRequest.
    for (ctype, body) in [(PROTOBUF, &b"\x01\x02garbage"[..]), (JSON, b"not json")] {
        let a = post(&addr, ctype, &["gzip"], &gzip(body));
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.status().message.contains("cannot decode the export request"), "{a:?}");
    }
    assert_eq!((store.received(), store.snapshot().len()), (0, 0));
    // The receiver is unharmed.
    assert_eq!(post(&addr, PROTOBUF, &["gzip"], &good).status, 200);
    assert_eq!(store.received(), 3);
}

#[test]
fn an_unsupported_content_coding_is_415_with_accept_encoding() {
    let (store, addr) = receiver();
    let plain = request(1, 3).encode_to_vec();
    // deflate (which the Python SDK offers), zstd and br (which collectors offer), gzip
    // applied twice or under another coding, and unknown names.
    for encodings in [
        &["deflate"][..],
        &["zstd"],
        &["br"],
        &["compress"],
        &["snappy"],
        &["gzip, gzip"],
        &["gzip", "br"],
        &["x-unknown"],
    ] {
        for ctype in [PROTOBUF, JSON] {
            let a = post(&addr, ctype, encodings, &gzip(&plain));
            assert_eq!(a.status, 415, "{encodings:?}: {a:?}");
            assert_eq!(a.header("accept-encoding"), Some("gzip, identity"), "{encodings:?}");
            assert_eq!(a.header("content-type"), Some(ctype));
            let status = a.status();
            assert_eq!(status.code, 12, "UNIMPLEMENTED, as gRPC answers an unknown grpc-encoding");
            assert!(status.message.contains("Content-Encoding"), "{}", status.message);
        }
    }
    assert_eq!((store.received(), store.snapshot().len()), (0, 0));
}

/// `MAX_REQUEST_BYTES` zero bytes as a body made of 1 MiB gzip members, then `extra` more
/// zero bytes in one more member: cheap to make for any size.
fn zeros_gzip(extra: usize) -> Vec<u8> {
    let mib = gzip(&vec![0; 1 << 20]);
    let mut body = Vec::new();
    for _ in 0..MAX_REQUEST_BYTES >> 20 {
        body.extend_from_slice(&mib);
    }
    if extra > 0 {
        body.extend(gzip(&vec![0; extra]));
    }
    body
}

#[test]
fn bodies_over_the_limit_are_413_as_sent_or_once_inflated() {
    let (store, addr) = receiver();
    assert_eq!(MAX_REQUEST_BYTES % (1 << 20), 0);
    // Exactly the limit once inflated is read whole (and then refused as what it is, zero
    // bytes: not a request); one byte more is 413, and so is a bomb.
    let a = post(&addr, PROTOBUF, &["gzip"], &zeros_gzip(0));
    assert_eq!(a.status, 400, "{a:?}");
    for extra in [1, 8 << 20] {
        let body = zeros_gzip(extra);
        assert!(body.len() < 1 << 20, "{} bytes compressed", body.len());
        for ctype in [PROTOBUF, JSON] {
            let a = post(&addr, ctype, &["gzip"], &body);
            assert_eq!((a.status, a.header("content-type")), (413, Some(ctype)), "{extra}: {a:?}");
            let status = a.status();
            assert_eq!(status.code, 8, "RESOURCE_EXHAUSTED");
            assert!(status.message.contains("once decompressed"), "{}", status.message);
        }
    }
    // Declared too large as sent, plain or gzip: refused before a byte of the body is read
    // (with `Expect: 100-continue`, the sender never sends it).
    for encoding in ["identity", "gzip"] {
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PROTOBUF}\r\nContent-Encoding: {encoding}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n",
            70 << 20
        );
        let a = exchange(&addr, &head, b"");
        assert_eq!(a.status, 413, "{encoding}: {a:?}");
        assert!(!a.status().message.contains("decompressed"), "{:?}", a.status());
    }
    assert_eq!((store.received(), store.snapshot().len()), (0, 0));
    assert_eq!(post(&addr, PROTOBUF, &["gzip"], &gzip(&request(1, 2).encode_to_vec())).status, 200);
    assert_eq!(store.received(), 2);
}

/// Reads one answer from a kept-alive connection (its body by `Content-Length`).
fn read_answer(s: &mut std::net::TcpStream) -> Answer {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let mut lines = head.trim_end().split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| l.split_once(':').unwrap())
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    Answer { status, headers, body }
}

/// A refused body is still read to its end, so the connection serves the sender's next
/// request (an OTLP exporter keeps its connection: "The client SHOULD keep the connection
/// alive between requests", "OTLP/HTTP Connection"; a connection closed under a request
/// looks like a reason to retry, "All Other Responses").
#[test]
fn after_a_refusal_the_connection_serves_the_next_request() {
    let (store, addr) = receiver();
    let good = gzip(&request(1, 3).encode_to_vec());
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let cases: [(&str, Vec<u8>, u16); 5] = [
        ("deflate", good.clone(), 415),
        ("gzip", good[..good.len() / 2].to_vec(), 400),
        ("gzip", zeros_gzip(1), 413),
        ("br", good.clone(), 415),
        ("gzip", good.clone(), 200),
    ];
    for (encoding, body, want) in &cases {
        write!(
            s,
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {PROTOBUF}\r\nContent-Encoding: {encoding}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let a = read_answer(&mut s);
        assert_eq!(a.status, *want, "{encoding}: {a:?}");
        assert_ne!(a.header("connection"), Some("close"), "{encoding}");
    }
    assert_eq!(store.received(), 3);
}
