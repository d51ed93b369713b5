//! `tracewire export` as a real process: spans written into a database with the store API
//! (every OTLP field set), then written as OTLP JSON lines, and replayed over OTLP/HTTP and
//! OTLP/gRPC into a real rotel-agent, into a second `tracewire collect`, and into stub
//! servers that answer partial success, ask to retry, refuse, or are not there.
//!
//! The exporter's rules are the OTLP specification's (opentelemetry-proto
//! `docs/specification.md`): "Partial Success", "Failures" (OTLP/gRPC and OTLP/HTTP),
//! "OTLP/HTTP Throttling", "OTLP/gRPC Throttling".

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use prost::Message;
use tracewire_store::{OtlpSpan, SpanRecord, Store};
use tracewire_testkit::{HttpStub, Rotel, TempDir};

mod common;
use common::{BIN, CollectProcess, exit_within, signal};

/// 2026-01-01T00:00:00Z in Unix nanoseconds: trace A starts then, trace B an hour later.
const JAN_1_2026_NS: i64 = 1_767_225_600 * 1_000_000_000;
const TRACE_A: &str = "0af7651916cd43dd8448eb211c80319c";
const TRACE_B: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// Starts half an hour before the test runs.
const TRACE_C: &str = "5b8efff798038103d269b633813fc60c";
const SPANS_PER_TRACE: usize = 9;
const HOUR_NS: i64 = 3_600 * 1_000_000_000;

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..KeyValue::default() }
}

fn bytes_of(hex: &str) -> Vec<u8> {
    tracewire_store::unhex(hex).unwrap()
}

fn now_ns() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

/// One trace of `SPANS_PER_TRACE` spans from `service`, starting at `start_ns`, using every
/// field of OTLP's span, resource and scope (kinds, statuses, events, links, every attribute
/// value type, tracestate, flags, dropped counts).
fn trace(trace_hex: &str, start_ns: i64, service: &str) -> Vec<SpanRecord> {
    let resource = Arc::new(Resource {
        attributes: vec![
            kv("service.name", Value::StringValue(service.into())),
            kv("host.name", Value::StringValue("box-1".into())),
            kv("process.pid", Value::IntValue(4242)),
        ],
        dropped_attributes_count: 1,
        ..Resource::default()
    });
    let scope = Arc::new(InstrumentationScope {
        name: "tracewire.test".into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.flag", Value::BoolValue(true))],
        dropped_attributes_count: 4,
    });
    let trace_id = bytes_of(trace_hex);
    let span_id = |i: usize| vec![trace_id[0], u8::try_from(i).unwrap() + 1, 2, 3, 4, 5, 6, 7];
    (0..SPANS_PER_TRACE)
        .map(|i| {
            let start = u64::try_from(start_ns).unwrap() + u64::try_from(i).unwrap() * 1_000_000;
            let span = Span {
                trace_id: trace_id.clone(),
                span_id: span_id(i),
                trace_state: "congo=t61rcWkgMzE".into(),
                parent_span_id: if i == 0 { Vec::new() } else { span_id(0) },
                flags: 0x301,
                name: format!("stage.{i}"),
                kind: i32::try_from(i % 5 + 1).unwrap(),
                start_time_unix_nano: start,
                end_time_unix_nano: start + 750_000,
                attributes: vec![
                    kv("s", Value::StringValue(format!("value {i}"))),
                    kv("b", Value::BoolValue(i % 2 == 0)),
                    kv("i", Value::IntValue(-7 * i64::try_from(i).unwrap())),
                    kv("d", Value::DoubleValue(0.25 + f64::from(u32::try_from(i).unwrap()))),
                    kv("bytes", Value::BytesValue(vec![0, 1, 0xfe, 0xff])),
                    kv(
                        "array",
                        Value::ArrayValue(ArrayValue {
                            values: vec![
                                AnyValue { value: Some(Value::IntValue(1)) },
                                AnyValue { value: Some(Value::StringValue("two".into())) },
                            ],
                        }),
                    ),
                    kv(
                        "kvlist",
                        Value::KvlistValue(KeyValueList { values: vec![kv("nested", Value::DoubleValue(1.5))] }),
                    ),
                ],
                dropped_attributes_count: 2,
                events: vec![Event {
                    time_unix_nano: start + 100_000,
                    name: "retrying".into(),
                    attributes: vec![kv("attempt", Value::IntValue(2))],
                    dropped_attributes_count: 1,
                }],
                dropped_events_count: 5,
                links: vec![Link {
                    trace_id: bytes_of(TRACE_B),
                    span_id: vec![9; 8],
                    trace_state: "rojo=00f067aa0ba902b7".into(),
                    attributes: vec![kv("link.kind", Value::StringValue("batch".into()))],
                    dropped_attributes_count: 0,
                    flags: 0x101,
                }],
                dropped_links_count: 3,
                status: match i % 3 {
                    0 => None,
                    1 => Some(Status { code: 1, message: String::new() }),
                    _ => Some(Status { code: 2, message: format!("boom {i}") }),
                },
            };
            SpanRecord::from_otlp(OtlpSpan {
                resource: Arc::clone(&resource),
                resource_schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                scope: Arc::clone(&scope),
                scope_schema_url: "https://opentelemetry.io/schemas/1.25.0".into(),
                span,
            })
        })
        .collect()
}

/// Every test's spans: traces A and B on 2026-01-01, C half an hour ago.
fn all_spans() -> Vec<SpanRecord> {
    let mut spans = trace(TRACE_A, JAN_1_2026_NS, "api");
    spans.extend(trace(TRACE_B, JAN_1_2026_NS + HOUR_NS, "worker"));
    spans.extend(trace(TRACE_C, now_ns() - HOUR_NS / 2, "api"));
    spans
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// Writes `spans` into a new database at `path` with the store API; returns them as the
/// store reads them back.
fn write_db(path: &Path, spans: Vec<SpanRecord>) -> Vec<SpanRecord> {
    runtime().block_on(async {
        let store = Store::open(path).unwrap();
        store.append_spans(spans).await.unwrap();
        store.flush().await.unwrap();
        store.spans().await.unwrap()
    })
}

fn read_db(path: &Path) -> Vec<SpanRecord> {
    runtime().block_on(async { Store::open(path).unwrap().spans().await.unwrap() })
}

/// (trace id, span id) of each span, sorted.
fn ids<'a>(spans: impl IntoIterator<Item = &'a SpanRecord>) -> BTreeSet<(String, String)> {
    spans.into_iter().map(|s| (s.trace_id.clone(), s.span_id.clone())).collect()
}

/// A database of [`all_spans`] in a fresh directory; the spans as stored.
fn fixture(prefix: &str) -> (TempDir, std::path::PathBuf, Vec<SpanRecord>) {
    let dir = TempDir::new(prefix).unwrap();
    let db = dir.path().join("traces.db");
    let stored = write_db(&db, all_spans());
    assert_eq!(stored.len(), 3 * SPANS_PER_TRACE);
    (dir, db, stored)
}

/// Runs `tracewire export --db DB ARGS...` to its end (within `limit`).
fn export(db: &Path, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .arg("export")
        .arg("--db")
        .arg(db)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        out.read_to_end(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        err.read_to_end(&mut s).unwrap();
        s
    });
    let status = exit_within(&mut child, limit, "tracewire export did not finish");
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The "exported to ..." summary line on stdout.
fn summary(out: &Output) -> String {
    text(&out.stdout).lines().find(|l| l.starts_with("exported to ")).unwrap_or_default().to_owned()
}

#[test]
fn export_over_http_and_grpc_into_rotel_agent_delivers_every_span() {
    let (_dir, db, stored) = fixture("tracewire-export-rotel");
    let want = ids(&stored);
    for (protocol, compression) in [("http", "none"), ("grpc", "none"), ("http", "gzip"), ("grpc", "gzip")] {
        let rotel = match Rotel::start() {
            Ok(r) => r,
            Err(e) => panic!("rotel-agent: {e}"),
        };
        let url = if protocol == "http" { rotel.http_endpoint() } else { rotel.grpc_endpoint() };
        let out = export(
            &db,
            &["--otlp-endpoint", &url, "--protocol", protocol, "--compression", compression, "--batch", "7"],
            Duration::from_secs(30),
        );
        let what = format!("{protocol}/{compression}: {}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{what}");
        // 27 spans in batches of 7: 4 requests.
        assert_eq!(
            summary(&out),
            format!(
                "exported to {url}{}: 27 spans, 4 requests, 27 accepted, 0 rejected",
                if protocol == "http" { "/v1/traces" } else { "" }
            ),
            "{what}"
        );
        let got = rotel.wait_for(Duration::from_secs(15), |s| s.len() >= want.len()).unwrap();
        let got_ids: BTreeSet<_> = got.iter().map(|s| (s.trace_id.clone(), s.span_id.clone())).collect();
        assert_eq!(got.len(), want.len(), "{what}: each span once");
        assert_eq!(got_ids, want, "{what}");
        // What rotel-agent printed is the stored span: name, kind, parent, times, attributes,
        // resource.
        for g in &got {
            let s = stored.iter().find(|s| s.span_id == g.span_id).unwrap();
            assert_eq!(g.name, s.name);
            assert_eq!(g.parent_id, s.parent_id.clone().unwrap_or_default());
            assert_eq!(
                (g.start_ns, g.end_ns),
                (u128::try_from(s.start_ns).unwrap(), u128::try_from(s.end_ns).unwrap())
            );
            assert_eq!(g.attr("s"), Some(s.attributes["s"].as_str()));
            assert_eq!(g.resource_attr("host.name"), Some("box-1"));
            assert_eq!(g.resource_attr("service.name"), Some(s.service.as_str()));
        }
    }
}

#[test]
fn export_into_tracewire_collect_keeps_every_field() {
    let (dir, db, stored) = fixture("tracewire-export-collect");
    // The store kept every field of what was written (the fixture's spans are rich).
    assert!(stored.iter().all(|s| s.otlp.as_ref().is_some_and(|o| !o.span.events.is_empty())));
    for (protocol, compression) in [("http", "gzip"), ("grpc", "none")] {
        let db2 = dir.path().join(format!("copy-{protocol}.db"));
        let collector = CollectProcess::start(&db2);
        let url = if protocol == "http" { collector.http.clone() } else { collector.grpc.clone() };
        let out = export(
            &db,
            &["--otlp-endpoint", &url, "--protocol", protocol, "--compression", compression, "--batch", "10"],
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
        let (status, _, err) = collector.stop();
        assert!(status.success(), "collect exited with {status}: {err}");
        let copied = read_db(&db2);
        assert_eq!(copied.len(), stored.len(), "{protocol}");
        // Record for record: the analysis's view and the OTLP span, resource and scope.
        for (a, b) in stored.iter().zip(&copied) {
            assert_eq!(a, b, "{protocol}: span {}", a.span_id);
        }
        let error = copied.iter().find(|s| s.span_id.starts_with("0a03")).unwrap();
        assert_eq!((error.kind, error.status_code, error.status_message.as_str()), (3, 2, "boom 2"));
    }
}

#[test]
fn otlp_json_output_parses_back_with_opentelemetry_proto_serde() {
    let (dir, db, stored) = fixture("tracewire-export-json");
    let file = dir.path().join("spans.otlp.jsonl");
    let out = export(&db, &["--otlp-json", file.to_str().unwrap(), "--batch", "10"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 3, "27 spans, 10 a line");
    let mut parsed = Vec::new();
    for line in &lines {
        // The OTLP JSON encoding: hex ids, 64-bit integers as decimal strings, enums as
        // integers, lowerCamelCase keys.
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        let span = &value["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert!(span["traceId"].as_str().is_some_and(|t| t.len() == 32), "{span}");
        assert!(span["startTimeUnixNano"].is_string() && span["kind"].is_number(), "{span}");
        let request: ExportTraceServiceRequest = serde_json::from_str(line).unwrap();
        parsed.extend(SpanRecord::all_of(&request));
    }
    assert_eq!(parsed.len(), stored.len());
    for (a, b) in stored.iter().zip(&parsed) {
        assert_eq!(a.to_otlp(), b.to_otlp(), "span {}", a.span_id);
    }
    // `-` is stdout, the same lines.
    let out = export(&db, &["--otlp-json", "-", "--batch", "10"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), json);
}

/// The span ids `export --otlp-json - ARGS` selects.
fn selected(db: &Path, args: &[&str]) -> BTreeSet<(String, String)> {
    let mut all = vec!["--otlp-json", "-"];
    all.extend_from_slice(args);
    let out = export(db, &all, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out.stderr));
    let mut spans = Vec::new();
    for line in text(&out.stdout).lines() {
        let request: ExportTraceServiceRequest = serde_json::from_str(line).unwrap();
        spans.extend(SpanRecord::all_of(&request));
    }
    ids(&spans)
}

#[test]
fn trace_since_and_until_select_the_right_spans() {
    let (_dir, db, stored) = fixture("tracewire-export-filter");
    let of = |traces: &[&str]| ids(stored.iter().filter(|s| traces.contains(&s.trace_id.as_str())));
    assert_eq!(selected(&db, &[]), of(&[TRACE_A, TRACE_B, TRACE_C]));
    assert_eq!(selected(&db, &["--trace", TRACE_A, "--trace", &TRACE_C.to_uppercase()]), of(&[TRACE_A, TRACE_C]));
    // A duration ago: only trace C started within the last hour.
    assert_eq!(selected(&db, &["--since", "1h"]), of(&[TRACE_C]));
    assert_eq!(selected(&db, &["--until", "1h"]), of(&[TRACE_A, TRACE_B]));
    // RFC 3339, with an offset: B started at 01:00Z = 02:00+01:00.
    assert_eq!(
        selected(&db, &["--since", "2026-01-01T00:30:00Z", "--until", "2026-01-01T03:00:00+01:00"]),
        of(&[TRACE_B])
    );
    // --until is exclusive on the start time: trace A's root starts at 00:00:00Z, its
    // children from 00:00:00.001Z.
    let a_root: BTreeSet<_> = ids(stored.iter().filter(|s| s.trace_id == TRACE_A && s.parent_id.is_none()));
    assert_eq!(selected(&db, &["--until", "2026-01-01T00:00:00.000000001Z"]), a_root);
    assert!(selected(&db, &["--trace", TRACE_A, "--since", "1h"]).is_empty());

    // Malformed values are refused before anything is read, naming the rule.
    for (args, says) in [
        (&["--trace", "0af7651916cd43dd8448eb211c80319"][..], "32 hex digits"),
        (&["--trace", "0af7651916cd43dd8448eb211c80319g"], "32 hex digits"),
        (&["--trace", "00000000000000000000000000000000"], "all-zero"),
        (&["--since", "yesterday"], "RFC 3339"),
        (&["--until", "2026-13-01T00:00:00Z"], "RFC 3339"),
    ] {
        let mut all = vec!["--otlp-json", "-"];
        all.extend_from_slice(args);
        let out = export(&db, &all, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty());
    }
}

fn partial_success(rejected: i64, message: &str) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess { rejected_spans: rejected, error_message: message.into() }),
    }
}

#[test]
fn a_partial_success_over_http_is_reported_as_rejected_with_a_failing_status() {
    let (_dir, db, _) = fixture("tracewire-export-partial-http");
    let answer = partial_success(2, "2 spans had an invalid trace id").encode_to_vec();
    let stub = HttpStub::start(Duration::ZERO, "application/x-protobuf", &answer).unwrap();
    let out = export(&db, &["--otlp-endpoint", &stub.base_url()], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let url = stub.url("v1/traces");
    assert_eq!(summary(&out), format!("exported to {url}: 27 spans, 1 requests, 25 accepted, 2 rejected"));
    assert!(text(&out.stderr).contains("rejected: 2 spans had an invalid trace id"), "{}", text(&out.stderr));
    // What went on the wire: OTLP/HTTP binary protobuf to /v1/traces, every span.
    let got = stub.received();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].method.as_str(), got[0].path.as_str()), ("POST", "/v1/traces"));
    assert_eq!(got[0].header_values("content-type"), ["application/x-protobuf"]);
    let request = ExportTraceServiceRequest::decode(got[0].body.as_slice()).unwrap();
    assert_eq!(SpanRecord::all_of(&request).len(), 27);

    // A warning (partial_success with nothing rejected) is shown, and is no failure.
    let answer = partial_success(0, "slow down a little").encode_to_vec();
    let stub = HttpStub::start(Duration::ZERO, "application/x-protobuf", &answer).unwrap();
    let out = export(&db, &["--otlp-endpoint", &stub.url("v1/traces")], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning: slow down a little"));
}

/// A scripted OTLP/gRPC `TraceService`: call N gets `answers[N]` (the last one from then
/// on); every request is kept with its arrival time.
#[derive(Clone)]
struct GrpcStub {
    answers: Arc<Vec<Result<ExportTraceServiceResponse, tonic::Status>>>,
    received: Arc<Mutex<Vec<(Instant, ExportTraceServiceRequest)>>>,
}

#[tonic::async_trait]
impl TraceService for GrpcStub {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n = {
            let mut got = self.received.lock().unwrap();
            got.push((Instant::now(), request.into_inner()));
            got.len() - 1
        };
        self.answers[n.min(self.answers.len() - 1)].clone().map(tonic::Response::new)
    }
}

/// A [`GrpcStub`] served on a free loopback port; stops when dropped.
struct GrpcServer {
    stub: GrpcStub,
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
    _runtime: tokio::runtime::Runtime,
}

impl GrpcServer {
    fn start(answers: Vec<Result<ExportTraceServiceResponse, tonic::Status>>) -> Self {
        let stub = GrpcStub { answers: Arc::new(answers), received: Arc::default() };
        let runtime = runtime();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = TraceServiceServer::new(stub.clone()).accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        runtime.spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        ));
        Self { stub, addr, _stop: stop, _runtime: runtime }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> Vec<(Instant, ExportTraceServiceRequest)> {
        self.stub.received.lock().unwrap().clone()
    }
}

/// `google.rpc.Status` with a `google.rpc.RetryInfo` detail asking for `delay`, encoded as
/// gRPC carries it in `grpc-status-details-bin`.
fn retry_info_details(code: i32, delay: Duration) -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![tag << 3 | 2, u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }
    fn varint(tag: u8, mut v: u64) -> Vec<u8> {
        let mut out = vec![tag << 3];
        loop {
            let byte = u8::try_from(v & 0x7f).unwrap();
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
    // google.protobuf.Duration { seconds = 1, nanos = 2 }
    let mut duration = varint(1, delay.as_secs());
    duration.extend(varint(2, u64::from(delay.subsec_nanos())));
    let retry_info = field(1, &duration);
    // google.protobuf.Any { type_url = 1, value = 2 }
    let mut any = field(1, b"type.googleapis.com/google.rpc.RetryInfo");
    any.extend(field(2, &retry_info));
    // google.rpc.Status { code = 1, message = 2, details = 3 }
    let mut status = varint(1, u64::try_from(code).unwrap());
    status.extend(field(2, b"over quota"));
    status.extend(field(3, &any));
    status
}

#[test]
fn a_partial_success_over_grpc_is_reported_as_rejected_with_a_failing_status() {
    let (_dir, db, _) = fixture("tracewire-export-partial-grpc");
    let server = GrpcServer::start(vec![Ok(partial_success(3, "3 spans too old"))]);
    let out = export(
        &db,
        &["--otlp-endpoint", &server.url(), "--protocol", "grpc", "--batch", "20"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // Two batches (20 + 7), each with 3 rejected.
    assert_eq!(summary(&out), format!("exported to {}: 27 spans, 2 requests, 21 accepted, 6 rejected", server.url()));
    assert!(text(&out.stderr).contains("rejected: 3 spans too old"));
    let sent: usize = server.received().iter().map(|(_, r)| SpanRecord::all_of(r).len()).sum();
    assert_eq!(sent, 27);
}

#[test]
fn a_refused_batch_is_counted_as_rejected_and_the_export_goes_on() {
    let (_dir, db, _) = fixture("tracewire-export-refused");
    // gRPC INVALID_ARGUMENT is not retryable ("Failures"): the batch is rejected, the next
    // one is sent.
    let server = GrpcServer::start(vec![
        Err(tonic::Status::invalid_argument("bad span")),
        Ok(ExportTraceServiceResponse::default()),
    ]);
    let out = export(
        &db,
        &["--otlp-endpoint", &server.url(), "--protocol", "grpc", "--batch", "10"],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(
        summary(&out),
        format!("exported to {}: 27 spans, 3 requests, 17 accepted, 10 rejected (1 batches refused)", server.url())
    );
    assert!(text(&out.stderr).contains("bad span"), "{}", text(&out.stderr));
    assert_eq!(server.received().len(), 3, "no retry of a refused batch");
}

/// A loopback HTTP/1.1 server answering request N with `answers[N]` (a whole response; the
/// last one from then on), recording when each request arrived.
struct ScriptedHttp {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl ScriptedHttp {
    fn start(answers: Vec<String>, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (log, answers) = (Arc::clone(&arrivals), Arc::new(answers));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (log, answers) = (Arc::clone(&log), Arc::clone(&answers));
                std::thread::spawn(move || serve_scripted(stream, &log, &answers, delay));
            }
        });
        Self { addr, arrivals }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

fn serve_scripted(stream: TcpStream, log: &Mutex<Vec<Instant>>, answers: &[String], delay: Duration) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = {
            let mut log = log.lock().unwrap();
            log.push(Instant::now());
            log.len() - 1
        };
        // The backend's latency is what the tests exercise: a sleep by design.
        std::thread::sleep(delay);
        if writer.write_all(answers[n.min(answers.len() - 1)].as_bytes()).is_err() {
            return;
        }
    }
}

fn http_answer(status: &str, headers: &str) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n{headers}\r\n")
}

#[test]
fn retryable_failures_are_retried_after_the_delay_the_server_asks_for() {
    let (_dir, db, _) = fixture("tracewire-export-retry");
    // OTLP/HTTP Throttling: 503 with Retry-After: 1 (seconds), then 429 with an HTTP-date
    // in the past (retry at once), then success.
    let server = ScriptedHttp::start(
        vec![
            http_answer("503 Service Unavailable", "retry-after: 1\r\n"),
            http_answer("429 Too Many Requests", "retry-after: Sun, 06 Nov 1994 08:49:37 GMT\r\n"),
            http_answer("200 OK", ""),
        ],
        Duration::ZERO,
    );
    let out = export(&db, &["--otlp-endpoint", &server.url()], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(summary(&out).ends_with(": 27 spans, 1 requests, 27 accepted, 0 rejected"), "{}", summary(&out));
    let at = server.arrivals();
    assert_eq!(at.len(), 3);
    assert!(at[1] - at[0] >= Duration::from_millis(950), "Retry-After: 1 honoured: {:?}", at[1] - at[0]);
    assert!(text(&out.stderr).contains("HTTP 503 Service Unavailable"), "{}", text(&out.stderr));

    // OTLP/gRPC: UNAVAILABLE (retryable, backoff), then RESOURCE_EXHAUSTED with a
    // RetryInfo of 600 ms (OTLP/gRPC Throttling), then success.
    let server = GrpcServer::start(vec![
        Err(tonic::Status::unavailable("restarting")),
        Err(tonic::Status::with_details(
            tonic::Code::ResourceExhausted,
            "over quota",
            retry_info_details(8, Duration::from_millis(600)).into(),
        )),
        Ok(ExportTraceServiceResponse::default()),
    ]);
    let out = export(&db, &["--otlp-endpoint", &server.url(), "--protocol", "grpc"], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let at: Vec<Instant> = server.received().iter().map(|(t, _)| *t).collect();
    assert_eq!(at.len(), 3);
    assert!(at[2] - at[1] >= Duration::from_millis(580), "RetryInfo honoured: {:?}", at[2] - at[1]);
}

#[test]
fn an_unreachable_endpoint_fails_with_a_clear_error_in_bounded_time() {
    let (_dir, db, _) = fixture("tracewire-export-unreachable");
    for protocol in ["http", "grpc"] {
        // A port nothing listens on.
        let url = format!("http://127.0.0.1:{}", tracewire_testkit::free_port());
        let t0 = Instant::now();
        let out = export(
            &db,
            &["--otlp-endpoint", &url, "--protocol", protocol, "--retry-for", "1500ms"],
            Duration::from_secs(15),
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{protocol}: {err}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{protocol}: {:?}", t0.elapsed());
        assert!(err.contains("cannot reach http://127.0.0.1:"), "{protocol}: {err}");
        assert!(err.to_lowercase().contains("connection refused"), "{protocol}: {err}");
        assert!(err.contains("27 spans not sent"), "{protocol}: {err}");
        assert!(
            summary(&out).ends_with(": 27 spans, 0 requests, 0 accepted, 0 rejected, 27 not sent"),
            "{}",
            summary(&out)
        );
    }
    // Not http://: refused at once.
    let out = export(&db, &["--otlp-endpoint", "https://127.0.0.1:4318"], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("plain http only"));
}

#[test]
fn sigterm_stops_an_export_between_batches_and_reports() {
    let (_dir, db, _) = fixture("tracewire-export-sigterm");
    // One span a request, each answered after 200 ms: 27 requests would take 5 s.
    let server = ScriptedHttp::start(vec![http_answer("200 OK", "")], Duration::from_millis(200));
    let mut child = Command::new(BIN)
        .args(["export", "--db"])
        .arg(&db)
        .args(["--otlp-endpoint", &server.url(), "--batch", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let arrived = tracewire_testkit::eventually(Duration::from_secs(10), || server.arrivals().len() >= 2);
    assert!(arrived.is_ok(), "no request arrived");
    signal(&child, "-TERM");
    let status = exit_within(&mut child, Duration::from_secs(5), "tracewire export did not finish");
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(3), "{out}{err}");
    let sent = server.arrivals().len();
    assert!(sent < 27, "{sent}");
    // Each request that was sent was answered and counted; the rest were not sent.
    assert!(
        out.contains(&format!("27 spans, {sent} requests, {sent} accepted, 0 rejected, {} not sent", 27 - sent)),
        "{out}"
    );
    assert!(err.contains("stopped by a signal"), "{err}");
}
