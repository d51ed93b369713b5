//! The embedded receiver with real senders: the OpenTelemetry Python SDK over gRPC and
//! HTTP/protobuf (plain and gzip), OTLP/JSON, and rotel-agent forwarding over OTLP/gRPC and
//! OTLP/HTTP with gzip.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Forwarder, Tap, export_raw, request};
use tracewire_collector::SpanRecord;
use tracewire_collector::receiver::{SpanStore, bind, serve_grpc, serve_http};
use tracewire_testkit::run_python;

struct Receiver {
    store: Arc<SpanStore>,
    grpc: String,
    http: String,
}

async fn receiver() -> Receiver {
    receiver_with(SpanStore::new(10_000)).await
}

async fn receiver_with(store: SpanStore) -> Receiver {
    let store = Arc::new(store);
    let (gl, ga) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (hl, ha) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    tokio::spawn(serve_grpc(gl, Arc::clone(&store), std::future::pending()));
    tokio::spawn(serve_http(hl, Arc::clone(&store), std::future::pending()));
    Receiver { store, grpc: format!("http://{ga}"), http: format!("http://{ha}") }
}

fn emit(protocol: &str, endpoint: &str) -> Vec<serde_json::Value> {
    emit_with(protocol, endpoint, 1, &[])
}

/// Runs `emit.py`: a parent and `children` child spans with the Python SDK, its exporter
/// configured by `env`; returns what it sent.
fn emit_with(protocol: &str, endpoint: &str, children: usize, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/emit.py");
    let out = run_python(&script, &[protocol, endpoint, &children.to_string()], env).unwrap();
    serde_json::from_str(out.trim()).unwrap()
}

/// The spans of `trace` once there are `n` (what there is after 15 s, else).
async fn wait_for(store: &SpanStore, trace: &str, n: usize) -> Vec<SpanRecord> {
    let spans = || store.snapshot().into_iter().filter(|s| s.trace_id == trace).collect::<Vec<SpanRecord>>();
    tracewire_testkit::eventually_some_async(Duration::from_secs(15), || {
        let got = spans();
        std::future::ready((got.len() >= n).then_some(got))
    })
    .await
    .unwrap_or_else(|_| spans())
}

fn check(sent: &[serde_json::Value], got: &[SpanRecord], service: &str) {
    assert_eq!(got.len(), sent.len(), "{got:#?}");
    for s in sent {
        let r = got.iter().find(|g| g.span_id == s["span_id"].as_str().unwrap()).unwrap();
        assert_eq!(r.trace_id, s["trace_id"].as_str().unwrap());
        assert_eq!(r.parent_id.as_deref(), s["parent_id"].as_str());
        assert_eq!(r.name, s["name"].as_str().unwrap());
        assert_eq!(r.start_ns, s["start_ns"].as_i64().unwrap());
        assert_eq!(r.end_ns, s["end_ns"].as_i64().unwrap());
        assert_eq!(r.service, service);
        for (key, value) in s["attributes"].as_object().unwrap() {
            assert_eq!(r.attributes.get(key).map(String::as_str), value.as_str(), "{key} of {r:?}");
        }
    }
    let parent = got.iter().find(|g| g.name == "parent").unwrap();
    assert_eq!(parent.attributes.get("n").map(String::as_str), Some("7"));
    assert_eq!(parent.stage(), "exec");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_spans_arrive_intact_over_grpc_and_http() {
    let r = receiver().await;
    let sent = emit("grpc", &r.grpc);
    let got = wait_for(&r.store, sent[0]["trace_id"].as_str().unwrap(), 2).await;
    check(&sent, &got, "py-grpc");
    let sent = emit("http", &format!("{}/v1/traces", r.http));
    let got = wait_for(&r.store, sent[0]["trace_id"].as_str().unwrap(), 2).await;
    check(&sent, &got, "py-http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_database_python_sdk_spans_are_persisted_intact() {
    let dir = tracewire_testkit::TempDir::new("tw-receiver-db").unwrap();
    let path = dir.path().join("traces.db");
    let r = receiver_with(SpanStore::new(10_000).with_db(tracewire_store::Store::open(&path).unwrap())).await;
    let sent_grpc = emit("grpc", &r.grpc);
    let sent_http = emit("http", &format!("{}/v1/traces", r.http));
    wait_for(&r.store, sent_http[0]["trace_id"].as_str().unwrap(), 2).await;
    r.store.db().unwrap().flush().await.unwrap();
    // A second handle on the file, as `tracewire report --db` opens it.
    let stored = tracewire_store::Store::open(&path).unwrap().spans().await.unwrap();
    for (sent, service) in [(&sent_grpc, "py-grpc"), (&sent_http, "py-http")] {
        let trace = sent[0]["trace_id"].as_str().unwrap();
        let got: Vec<SpanRecord> = stored.iter().filter(|s| s.trace_id == trace).cloned().collect();
        check(sent, &got, service);
    }
    assert_eq!((r.store.received(), r.store.refused()), (4, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_keep_up_makes_senders_retry_and_counts_it() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let dir = tracewire_testkit::TempDir::new("tw-receiver-full").unwrap();
    let db = common::full_db(&dir.path().join("t.db"));
    let r = receiver_with(SpanStore::new(10_000).with_db(db)).await;
    let mut client = TraceServiceClient::connect(r.grpc.clone()).await.unwrap();
    let (mut ok, mut unavailable) = (0u64, 0u64);
    for i in 1..=20u8 {
        let mut req = request(i, 3);
        for s in req.resource_spans.iter_mut().flat_map(|r| &mut r.scope_spans).flat_map(|s| &mut s.spans) {
            s.name = "x".repeat(16 << 10);
        }
        match client.export(req).await {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
                assert!(status.message().contains("retry"), "{status}");
                unavailable += 1;
            }
        }
    }
    assert!(unavailable > 0 && ok > 0, "ok {ok}, unavailable {unavailable}");
    // Every span is either acknowledged (and kept) or refused (and counted): none vanish.
    assert_eq!((r.store.received(), r.store.refused()), (ok * 3, unavailable * 3));
    assert_eq!(r.store.snapshot().len() as u64, ok * 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotel_agent_forwards_to_the_receiver_intact() {
    let r = receiver().await;
    // rotel-agent's OTLP exporter compresses with gzip by default.
    let forwarder = Forwarder::start(&r.grpc, "grpc", "gzip");
    let sent = emit("grpc", &forwarder.grpc);
    let got = wait_for(&r.store, sent[0]["trace_id"].as_str().unwrap(), 2).await;
    let log = forwarder.log();
    drop(forwarder);
    assert_eq!(got.len(), 2, "rotel-agent log:\n{log}");
    check(&sent, &got, "py-grpc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_is_accepted_and_garbage_is_a_400() {
    let r = receiver().await;
    let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-svc"}}]},
        "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "parentSpanId":"","name":"rpc.dispatch","kind":2,"startTimeUnixNano":"1000","endTimeUnixNano":"3000",
        "attributes":[{"key":"rpc.method","value":{"stringValue":"Start"}}]}]}]}]}"#;
    let addr = r.http.trim_start_matches("http://").to_owned();
    let post = |body: &str, ctype: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    };
    let resp = post(body, "application/json");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let got = wait_for(&r.store, "5b8efff798038103d269b633813fc60c", 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].span_id.as_str(), got[0].parent_id.as_deref(), got[0].start_ns, got[0].end_ns),
        ("eee19b7ec3c1b174", None, 1000, 3000)
    );
    assert_eq!(got[0].service, "json-svc");
    assert_eq!(got[0].attributes.get("rpc.method").map(String::as_str), Some("Start"));
    let resp = post("not json", "application/json");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    let resp = post("\u{1}\u{2}garbage", "application/x-protobuf");
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

#[test]
fn the_store_is_bounded_and_counts_what_it_drops() {
    let store = SpanStore::new(3);
    store.add(request(1, 5));
    assert_eq!((store.received(), store.dropped(), store.snapshot().len()), (5, 2, 3));
    assert_eq!(store.snapshot()[0].name, "s2", "the oldest are dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_refused_as_invalid_and_counts_nothing() {
    use prost::Message;
    let r = receiver().await;
    let good = request(9, 4).encode_to_vec();
    export_raw(&r.grpc, good.clone()).await.unwrap();
    assert_eq!(r.store.received(), 4);
    let mut bad_utf8 = good.clone();
    let at = bad_utf8.windows(2).position(|w| w == b"s0").unwrap();
    bad_utf8[at] = 0xff;
    for body in [good[..good.len() - 1].to_vec(), bad_utf8.clone(), b"\x01\x02garbage".to_vec()] {
        let status = export_raw(&r.grpc, body).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    }
    // Over HTTP: 400, also for a request that is well-formed but for one string.
    let addr = r.http.trim_start_matches("http://").to_owned();
    for body in [&good[..good.len() - 1], &bad_utf8[..]] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    }
    assert_eq!((r.store.received(), r.store.snapshot().len()), (4, 4));
    let names: Vec<String> = r.store.snapshot().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["s0", "s1", "s2", "s3"]);
}

#[test]
fn the_bound_is_exact_across_requests_and_within_one() {
    use prost::Message;
    use tracewire_collector::otlp::EncodedRequest;
    // Requests of 3, 4 and 2 spans into 5 places: the first request goes, and the first
    // span of the second; the same whether kept encoded or decoded.
    let encoded = SpanStore::new(5);
    let decoded = SpanStore::new(5);
    for (t, n) in [(1, 3), (2, 4), (3, 2)] {
        let req = request(t, n);
        encoded.add_encoded(EncodedRequest::new(req.encode_to_vec().into()).unwrap());
        decoded.add(req);
    }
    for store in [&encoded, &decoded] {
        let got: Vec<(String, String)> = store.snapshot().into_iter().map(|s| (s.trace_id, s.name)).collect();
        let want: Vec<(String, String)> = [(2, "s1"), (2, "s2"), (2, "s3"), (3, "s0"), (3, "s1")]
            .into_iter()
            .map(|(t, n)| (format!("{t:02x}").repeat(16), n.to_owned()))
            .collect();
        assert_eq!(got, want);
        assert_eq!((store.received(), store.dropped()), (9, 4));
    }
}

/// OTLP specification, "Protocol Details": "All server components MUST support the following
/// transport compression options: No compression [...] Gzip compression"; "OTLP/HTTP
/// Request": "The client MAY gzip the content and in that case MUST include
/// "Content-Encoding: gzip" request header". The Python SDK's HTTP exporter, as configured by
/// OTEL_EXPORTER_OTLP_COMPRESSION, plain and gzip: every span arrives, exactly once, with its
/// attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_http_exporter_with_and_without_gzip_delivers_every_span() {
    for compression in ["none", "gzip"] {
        let r = receiver().await;
        let tap = Tap::start(&r.http).await;
        let env = [("OTEL_EXPORTER_OTLP_COMPRESSION", compression)];
        let sent = emit_with("http", &format!("{}/v1/traces", tap.url()), 9, &env);
        assert_eq!(sent.len(), 10);
        let got = wait_for(&r.store, sent[0]["trace_id"].as_str().unwrap(), sent.len()).await;
        check(&sent, &got, "py-http");
        // The exporter exported span by span, and has exited: nothing more is coming.
        assert_eq!((r.store.received(), r.store.snapshot().len()), (10, 10), "{compression}");
        let wire = tap.sent();
        assert_eq!(wire.contains("content-encoding: gzip"), compression == "gzip", "{compression}: {wire:.400}");
        assert!(tap.answers().iter().all(|a| a.starts_with("HTTP/1.1 200")), "{:?}", tap.answers());
    }
}

/// An encoding OTLP does not list (the Python SDK also offers `deflate`) is refused with 415
/// (RFC 9110 section 15.5.16, "415 Unsupported Media Type": "If the problem was caused by an
/// unsupported content coding, the Accept-Encoding response header field ought to be
/// used"), which the exporter does not retry (OTLP specification, "Retryable Response
/// Codes"), and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_with_deflate_is_answered_415_and_nothing_is_stored() {
    let r = receiver().await;
    let tap = Tap::start(&r.http).await;
    let env = [("OTEL_EXPORTER_OTLP_COMPRESSION", "deflate")];
    let sent = emit_with("http", &format!("{}/v1/traces", tap.url()), 1, &env);
    assert_eq!(sent.len(), 2);
    assert!(tap.sent().contains("content-encoding: deflate"), "{:.400}", tap.sent());
    // One request per span (the SDK's simple processor), each refused once, not retried.
    assert_eq!(tap.answers(), ["HTTP/1.1 415 Unsupported Media Type"; 2]);
    let down = String::from_utf8_lossy(&tap.down.lock().unwrap()).to_ascii_lowercase();
    assert!(down.contains("accept-encoding: gzip, identity"), "{down}");
    assert_eq!((r.store.received(), r.store.snapshot().len()), (0, 0));
}

/// rotel-agent forwarding over OTLP/HTTP with `--otlp-exporter-compression gzip` (what
/// collectors send by default): every span the SDK sent arrives once, with its attributes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotel_agent_forwards_over_otlp_http_with_gzip_intact() {
    let r = receiver().await;
    let tap = Tap::start(&r.http).await;
    let forwarder = Forwarder::start(&tap.url(), "http", "gzip");
    let sent = emit_with("grpc", &forwarder.grpc, 29, &[]);
    assert_eq!(sent.len(), 30);
    let got = wait_for(&r.store, sent[0]["trace_id"].as_str().unwrap(), sent.len()).await;
    let log = forwarder.log();
    drop(forwarder);
    assert_eq!(got.len(), sent.len(), "answers {:?}; rotel-agent log:\n{log}", tap.answers());
    check(&sent, &got, "py-grpc");
    assert_eq!(r.store.received(), 30, "each span once");
    assert!(tap.sent().contains("content-encoding: gzip"), "{:.400}", tap.sent());
    assert!(tap.answers().iter().all(|a| a.starts_with("HTTP/1.1 200")), "{:?}", tap.answers());
}
