//! What the collector's tests share: spans for the analysis, requests made of simple spans,
//! an OTLP/HTTP receiver on its own runtime for tests whose clients are blocking sockets,
//! and a tap that copies the bytes of every connection to a receiver.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tracewire_collector::receiver::{SpanStore, bind, serve_http};

/// A span of `trace` for the analysis: named `stage`, with its `tracewire.stage`
/// attribute, times in nanoseconds.
pub(crate) fn stage_span(
    trace: &str,
    id: &str,
    parent: Option<&str>,
    stage: &str,
    service: &str,
    (start_ns, end_ns): (i64, i64),
) -> tracewire_collector::SpanRecord {
    tracewire_collector::SpanRecord {
        trace_id: trace.into(),
        span_id: id.into(),
        parent_id: parent.map(Into::into),
        name: stage.into(),
        service: service.into(),
        start_ns,
        end_ns,
        attributes: std::collections::BTreeMap::from([("tracewire.stage".to_owned(), stage.to_owned())]),
        ..tracewire_collector::SpanRecord::default()
    }
}

/// Span `sid` of trace `t` (ids `{t:032x}` and `{t:08x}{sid:08x}`), the child of its span
/// `parent`, as [`stage_span`] makes it.
pub(crate) fn numbered_span(
    t: u32,
    sid: u32,
    parent: Option<u32>,
    stage: &str,
    service: &str,
    times: (i64, i64),
) -> tracewire_collector::SpanRecord {
    let parent = parent.map(|p| format!("{t:08x}{p:08x}"));
    stage_span(&format!("{t:032x}"), &format!("{t:08x}{sid:08x}"), parent.as_deref(), stage, service, times)
}

/// A request of `spans` spans (`s0`, `s1`, ...) of the trace whose id repeats `trace`.
pub(crate) fn request(trace: u8, spans: u8) -> ExportTraceServiceRequest {
    let spans = (0..spans)
        .map(|i| Span { trace_id: vec![trace; 16], span_id: vec![i + 1; 8], name: format!("s{i}"), ..Span::default() })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

/// An OTLP/HTTP receiver into `store` on a thread of its own (one worker), serving until
/// the test process ends; returns its `host:port`.
pub(crate) fn http_receiver_thread(store: &Arc<SpanStore>) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let serving = Arc::clone(store);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async move {
            let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tx.send(addr).unwrap();
            serve_http(listener, serving, std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap().to_string()
}

/// A loopback TCP relay in front of a receiver that keeps a copy of every byte each way: what
/// a sender put on the wire (its `Content-Encoding`) and what it was answered.
pub(crate) struct Tap {
    addr: SocketAddr,
    pub(crate) up: Arc<Mutex<Vec<u8>>>,
    pub(crate) down: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    pub(crate) async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = target.trim_start_matches("http://").to_owned();
        let (up, down) = (Arc::default(), Arc::default());
        let (u, d) = (Arc::clone(&up), Arc::clone(&down));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Self::pipe(client_read, server_write, Arc::clone(&u)));
                tokio::spawn(Self::pipe(server_read, client_write, Arc::clone(&d)));
            }
        });
        Self { addr, up, down }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        copy: Arc<Mutex<Vec<u8>>>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0; 64 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            copy.lock().unwrap().extend_from_slice(&buf[..n]);
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything senders wrote, lowercased (header names are case-insensitive).
    pub(crate) fn sent(&self) -> String {
        String::from_utf8_lossy(&self.up.lock().unwrap()).to_ascii_lowercase()
    }

    /// The status lines of every answer (each answer's body runs into the next status line).
    pub(crate) fn answers(&self) -> Vec<String> {
        let down = String::from_utf8_lossy(&self.down.lock().unwrap()).into_owned();
        down.match_indices("HTTP/1.1 ")
            .map(|(at, _)| down[at..].split("\r\n").next().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Sends `body` as the protobuf message of `TraceService/Export`, byte for byte.
pub(crate) async fn export_raw(endpoint: &str, body: Vec<u8>) -> Result<(), tonic::Status> {
    export_raw_with(endpoint, body, &[]).await
}

/// As [`export_raw`], with these request metadata (header fields).
pub(crate) async fn export_raw_with(
    endpoint: &str,
    body: Vec<u8>,
    metadata: &[(&'static str, &'static str)],
) -> Result<(), tonic::Status> {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    struct Raw;
    struct Enc;
    struct Dec;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = ();
        type Encoder = Enc;
        type Decoder = Dec;
        fn encoder(&mut self) -> Enc {
            Enc
        }
        fn decoder(&mut self) -> Dec {
            Dec
        }
    }
    impl Encoder for Enc {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }
    impl Decoder for Dec {
        type Item = ();
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
            bytes::Buf::advance(src, bytes::Buf::remaining(src));
            Ok(Some(()))
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let mut request = tonic::Request::new(body);
    for (k, v) in metadata {
        request.metadata_mut().insert(*k, tonic::metadata::MetadataValue::from_static(v));
    }
    grpc.unary(request, path, Raw).await.map(|_| ())
}

/// A database that cannot keep up: capped at its own size, so that every write of large
/// spans (each too large for the free space of the existing pages) fails as on a full disk,
/// with a one-slot queue that stays full and refuses at once.
pub(crate) fn full_db(path: &std::path::Path) -> tracewire_store::Store {
    let mut config = tracewire_store::StoreConfig::default();
    config.queue = 1;
    config.full = tracewire_store::FullPolicy::Error;
    config.max_pages = Some(1);
    config.retry_delay = std::time::Duration::from_secs(1);
    tracewire_store::Store::open_with(path, config).unwrap()
}

/// rotel-agent forwarding what it receives on its own OTLP/gRPC port to `target` over
/// `protocol` (`grpc` or `http`) with `compression` (`none` or `gzip`); stopped by its pid
/// when dropped.
pub(crate) struct Forwarder {
    child: std::process::Child,
    pub(crate) grpc: String,
    dir: tracewire_testkit::TempDir,
}

impl Forwarder {
    pub(crate) fn start(target: &str, protocol: &str, compression: &str) -> Self {
        let (gp, hp) = (tracewire_testkit::free_port(), tracewire_testkit::free_port());
        let agent = tracewire_testkit::rotel_agent().unwrap();
        let dir = tracewire_testkit::TempDir::new("tw-rotel-forward").unwrap();
        let child = std::process::Command::new(agent)
            .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{gp}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{hp}")])
            .args(["--exporter", "otlp", "--otlp-exporter-endpoint", target])
            .args(["--otlp-exporter-protocol", protocol, "--otlp-exporter-compression", compression])
            .args(["--batch-timeout", "100ms"])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .stdout(std::fs::File::create(dir.path().join("rotel.out")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("rotel.log")).unwrap())
            .spawn()
            .unwrap();
        let forwarder = Self { child, grpc: format!("http://127.0.0.1:{gp}"), dir };
        tracewire_testkit::eventually(std::time::Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", gp)).is_ok()
        })
        .unwrap_or_else(|e| panic!("rotel-agent did not listen on {gp} ({e}); its log:\n{}", forwarder.log()));
        forwarder
    }

    /// What it printed.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rotel.log")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.path().join("rotel.out")).unwrap_or_default()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) const PROTOBUF: &str = "application/x-protobuf";
pub(crate) const JSON: &str = "application/json";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub(crate) code: i32,
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoAny {
    #[prost(string, tag = "1")]
    pub(crate) type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub(crate) retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub(crate) seconds: i64,
    #[prost(int32, tag = "2")]
    pub(crate) nanos: i32,
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `google.rpc.Status` of a failure, decoded from protobuf or JSON as its
    /// `Content-Type` says.
    pub(crate) fn status(&self) -> RpcStatus {
        match self.header("content-type") {
            Some("application/json") => {
                let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
                RpcStatus {
                    code: i32::try_from(v["code"].as_i64().unwrap()).unwrap(),
                    message: v["message"].as_str().unwrap().to_owned(),
                    details: Vec::new(),
                }
            }
            Some("application/x-protobuf") => RpcStatus::decode(&self.body[..]).unwrap(),
            other => panic!("content-type {other:?}"),
        }
    }
}

/// Sends `head` (request line and header fields, without the blank line) and `body`, then
/// reads the whole answer (the connection is closed after it).
pub(crate) fn exchange(addr: &str, head: &str, body: &[u8]) -> Answer {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "{head}Connection: close\r\n\r\n").unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no answer: {raw:?}"));
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| l.split_once(':').unwrap())
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer { status, headers, body: raw[split + 4..].to_vec() }
}

/// POSTs `body` to `/v1/traces` with a `Content-Length`, these content codings (one
/// `Content-Encoding` field each) and content type.
pub(crate) fn post(addr: &str, ctype: &str, encodings: &[&str], body: &[u8]) -> Answer {
    use std::fmt::Write as _;
    let mut head = format!("POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n");
    for e in encodings {
        write!(head, "Content-Encoding: {e}\r\n").unwrap();
    }
    write!(head, "Content-Length: {}\r\n", body.len()).unwrap();
    exchange(addr, &head, body)
}
