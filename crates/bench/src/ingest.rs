//! Collector ingest: spans per second that tracewire's embedded OTLP/gRPC receiver accepts,
//! against rotel-agent (blackhole exporter: it decodes and drops) on the same machine, in
//! the same run, with the same load: 4 concurrent senders of 512-span requests (6
//! attributes per span, as tracewire's stage spans carry) over loopback, alternating, best
//! of two rounds each. Each receiver runs on its own 2 worker threads (rotel-agent in its
//! own process); the senders share the 2 cores with it, as a co-located collector would.

use anyhow::Result;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracewire_collector::receiver::{SpanStore, bind, serve_grpc};

use crate::{Row, Scale};

const BATCH: usize = 512;
const SENDERS: usize = 4;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..KeyValue::default()
    }
}

fn request(seed: u64) -> ExportTraceServiceRequest {
    let spans = (0..BATCH as u64)
        .map(|i| Span {
            trace_id: (seed * 1000 + i / 16).to_be_bytes().repeat(2),
            span_id: (seed * 100_000 + i + 1).to_be_bytes().to_vec(),
            parent_span_id: if i % 16 == 0 { Vec::new() } else { (seed * 100_000 + i).to_be_bytes().to_vec() },
            name: "rpc.dispatch".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i * 1000,
            end_time_unix_nano: 1_700_000_000_000_050_000 + i * 1000,
            attributes: vec![
                kv("tracewire.stage", "rpc.dispatch"),
                kv("rpc.system", "tracewire"),
                kv("rpc.method", "Start"),
                kv("rpc.request.id", "42"),
                kv("process.executable.name", "sh"),
                kv("tracewire.event", "Output"),
            ],
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "bench")], ..Resource::default() }),
            scope_spans: vec![ScopeSpans { spans, ..ScopeSpans::default() }],
            ..ResourceSpans::default()
        }],
    }
}

/// Spans per second acknowledged by the receiver at `endpoint`.
fn load(rt: &tokio::runtime::Runtime, endpoint: &str, seconds: f64) -> Result<f64> {
    rt.block_on(async {
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..SENDERS {
            let mut client = TraceServiceClient::connect(endpoint.to_owned()).await?;
            client = client.max_decoding_message_size(64 << 20);
            let sent = Arc::clone(&sent);
            let req = request(s as u64);
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    client.export(req.clone()).await?;
                    sent.fetch_add(BATCH as u64, Ordering::Relaxed);
                }
                Ok::<_, tonic::Status>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = sent.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
        Ok(rate)
    })
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let client_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    // tracewire's receiver, on its own runtime.
    let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let store = Arc::new(SpanStore::new(500_000));
    let ours = server_rt.block_on(async {
        let (listener, addr) = bind("127.0.0.1:0".parse()?).await?;
        tokio::spawn(serve_grpc(listener, Arc::clone(&store), std::future::pending()));
        anyhow::Ok(format!("http://{addr}"))
    })?;

    // rotel-agent, in its own process, stopped by its pid.
    let agent = tracewire_testkit::rotel_agent().map_err(|e| anyhow::anyhow!("rotel-agent: {e}"))?;
    let dir = tracewire_testkit::TempDir::new("tw-ingest-bench")?;
    let (gp, hp) = (tracewire_testkit::free_port(), tracewire_testkit::free_port());
    let mut rotel = Command::new(agent)
        .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{gp}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{hp}"), "--exporter", "blackhole"])
        .arg("--pid-file")
        .arg(dir.path().join("rotel.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| {
        let theirs = format!("http://127.0.0.1:{gp}");
        let ready = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", gp)).is_err() {
            anyhow::ensure!(Instant::now() < ready, "rotel-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let seconds = scale.pick(1.0, 3.0);
        load(&client_rt, &ours, 0.3)?;
        load(&client_rt, &theirs, 0.3)?;
        // Alternate, twice each, and keep each side's best.
        let (mut a, mut b) = (0.0f64, 0.0f64);
        for _ in 0..2 {
            a = a.max(load(&client_rt, &ours, seconds)?);
            b = b.max(load(&client_rt, &theirs, seconds)?);
        }
        anyhow::ensure!(store.received() > 0, "the receiver kept nothing");
        Ok((a, b))
    })();
    let _ = rotel.kill();
    let _ = rotel.wait();
    let (a, b) = result?;
    Ok(vec![Row::higher_is_better(
        "collector_ingest",
        a,
        b,
        "spans/s",
        1.0,
        &format!("peer = rotel-agent (blackhole exporter); OTLP/gRPC, {SENDERS} senders x {BATCH}-span requests"),
    )])
}
