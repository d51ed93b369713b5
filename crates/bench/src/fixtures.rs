//! Set-up shared by the `compare` comparisons and the criterion benches under `benches/`:
//! span exporters and pipelines, a relay with exec-servers behind it, the relay stream and
//! raw AEAD, store records and the synchronous SQLite peer, the collector receiver and
//! rotel-agent, and the traceparent inputs. Everything here runs in this process, on
//! loopback, except rotel-agent (its own process, stopped by its pid).
//!
//! Fixtures return [`anyhow::Result`]: a bench that cannot set up stops with the reason.

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use tracewire_collector::receiver::SpanStore;
use tracewire_context::{TraceContext, TraceParent, otel};
use tracewire_exec::{ExecClient, ExecConfig, ExecServer, Start};
use tracewire_relay::framing::transports_for_tests;
use tracewire_relay::{
    Keypair, MAX_RECORD_PLAINTEXT, NoiseConfig, RelayConfig, RelayEndpoint, RelayLink, RelayServer, Suite,
};
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_rpc::{Client, ClientConfig, ServerConfig};
use tracewire_store::{ProcessRecord, Store, StoreConfig};
use tracewire_telemetry::{Config, Pipeline};
use tracing_subscriber::layer::SubscriberExt as _;

// ---------------------------------------------------------------------------------------
// Span exporters and pipelines.

/// A span exporter that counts what it is given and drops it.
#[derive(Debug, Clone, Default)]
pub struct CountingExporter(pub Arc<AtomicU64>);

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        black_box(batch);
        Ok(())
    }
}

/// A collector that is down: every export tries to connect to this loopback port, where
/// nothing listens, and fails.
#[derive(Debug, Clone)]
pub struct DownExporter(pub u16);

impl SpanExporter for DownExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        drop(batch);
        match std::net::TcpStream::connect(("127.0.0.1", self.0)) {
            Ok(_) => Ok(()),
            Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
        }
    }
}

/// fastrace's global reporter (set once per process): `fastrace-opentelemetry`'s
/// `OpenTelemetryReporter` into a [`CountingExporter`], so that fastrace's spans end as
/// `SpanData`, as tracewire's and the SDK's do. Returns the exporter's count.
pub fn fastrace_reported() -> &'static AtomicU64 {
    static COUNT: std::sync::OnceLock<Arc<AtomicU64>> = std::sync::OnceLock::new();
    COUNT.get_or_init(|| {
        let count = Arc::new(AtomicU64::new(0));
        let reporter = fastrace_opentelemetry::OpenTelemetryReporter::new(
            CountingExporter(Arc::clone(&count)),
            std::borrow::Cow::Owned(opentelemetry_sdk::Resource::builder().with_service_name("bench").build()),
            opentelemetry::InstrumentationScope::builder("bench").build(),
        );
        fastrace::set_reporter(reporter, fastrace::collector::Config::default());
        count
    })
}

/// The tracing-opentelemetry set-up a user would write: default layer, SDK batch processor.
pub fn sdk_provider(exporter: impl SpanExporter + 'static) -> SdkTracerProvider {
    SdkTracerProvider::builder().with_span_processor(BatchSpanProcessor::builder(exporter).build()).build()
}

/// As [`sdk_provider`], with a batch processor whose queue holds `queue` spans.
pub fn sdk_provider_with_queue(exporter: impl SpanExporter + 'static, queue: usize) -> SdkTracerProvider {
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(opentelemetry_sdk::trace::BatchConfigBuilder::default().with_max_queue_size(queue).build())
        .build();
    SdkTracerProvider::builder().with_span_processor(processor).build()
}

/// A tracing dispatcher with tracing-opentelemetry's default layer over `provider`: source
/// location, thread id and name, target, busy/idle times and context activation on.
pub fn sdk_dispatch(provider: &SdkTracerProvider) -> tracing::Dispatch {
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
    tracing::Dispatch::new(tracing_subscriber::registry().with(layer))
}

/// A tracing dispatcher with tracing-opentelemetry's layer over `provider` set up to do what
/// tracewire's layer does: no source location, thread, target or busy/idle attributes, and
/// context activation off (tracewire's default).
pub fn sdk_dispatch_tuned(provider: &SdkTracerProvider) -> tracing::Dispatch {
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("bench"))
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false);
    tracing::Dispatch::new(tracing_subscriber::registry().with(layer))
}

/// Shuts `provider` down and returns the drops its batch processor counted: with the SDK's
/// `internal-logs` feature, the processor logs its count (`dropped_span_count`) in a
/// `tracing` event at shutdown, read here from that event. `None`: no such event (nothing
/// dropped).
pub fn shutdown_reading_sdk_drops(provider: &SdkTracerProvider, timeout: Duration) -> Option<u64> {
    use tracing_subscriber::layer::Context;
    #[derive(Clone, Default)]
    struct Drops(Arc<std::sync::Mutex<Option<u64>>>);
    struct Visit<'a>(&'a mut Option<u64>);
    impl tracing::field::Visit for Visit<'_> {
        fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
            if field.name() == "dropped_span_count" {
                *self.0 = Some(value);
            }
        }
        fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
            self.record_u64(field, u64::try_from(value).unwrap_or(0));
        }
        fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Drops {
        fn on_event(&self, event: &tracing::Event<'_>, _cx: Context<'_, S>) {
            if let Ok(mut d) = self.0.lock() {
                event.record(&mut Visit(&mut d));
            }
        }
    }
    let drops = Drops::default();
    let subscriber = tracing_subscriber::registry().with(drops.clone());
    tracing::subscriber::with_default(subscriber, || {
        let _ = provider.shutdown_with_timeout(timeout);
    });
    drops.0.lock().ok().and_then(|d| *d)
}

/// tracewire's pipeline delivering to a [`CountingExporter`], and the exporter's count.
///
/// # Errors
/// When the pipeline cannot be built from `config`.
pub fn counting_pipeline(config: &Config) -> Result<(Pipeline, Arc<AtomicU64>)> {
    let delivered = Arc::new(AtomicU64::new(0));
    let exporter = CountingExporter(Arc::clone(&delivered));
    let pipeline = Pipeline::with_exporter(config, Box::new(move || Ok(exporter.clone())))?;
    Ok((pipeline, delivered))
}

/// A tracing dispatcher with tracewire's pipeline layer.
pub fn pipeline_dispatch(pipeline: &Pipeline) -> tracing::Dispatch {
    tracing::Dispatch::new(tracing_subscriber::registry().with(pipeline.layer()))
}

/// A loopback port where nothing listens (bound to port 0, then released).
///
/// # Errors
/// When no port can be bound.
pub fn closed_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The configuration of the collector-down comparison: OTLP/gRPC to `port` on loopback.
///
/// # Errors
/// When the variables are refused.
pub fn collector_down_config(port: u16) -> Result<Config> {
    let endpoint = format!("http://127.0.0.1:{port}");
    Ok(Config::from_vars([
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
    ])?)
}

/// tracewire's pipeline with its real OTLP/gRPC exporter pointed at `port` on loopback,
/// where nothing listens (see [`closed_port`]): the collector is down.
///
/// # Errors
/// When the pipeline cannot be built.
pub fn collector_down_pipeline(port: u16) -> Result<Pipeline> {
    Ok(Pipeline::new(&collector_down_config(port)?)?)
}

/// The peer's side of the collector-down comparison: the SDK's batch processor (defaults)
/// with the same OTLP/gRPC exporter (`opentelemetry-otlp`, tonic, the same endpoint and
/// timeout as [`collector_down_config`]), built inside `rt` as its documentation asks (the
/// exporter's channel lives on that runtime; the processor's own thread drives exports).
///
/// # Errors
/// When the exporter cannot be built.
pub fn collector_down_sdk_provider(rt: &tokio::runtime::Runtime, port: u16) -> Result<SdkTracerProvider> {
    let config = collector_down_config(port)?;
    let _guard = rt.enter();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.endpoint.clone())
        .with_timeout(config.timeout)
        .build()?;
    Ok(sdk_provider(exporter))
}

/// Spans per trace in the stage-span comparisons: a root and 15 children.
pub const TRACE_SPANS: u64 = 16;

/// One trace through tracewire: `tracewire_telemetry::stage_span!(Process)` entered, and under it 15
/// `tracewire_telemetry::stage_span!(ProcessSpawn, process.pid)` entered and closed (the `tracewire.stage`
/// attribute is added on the export worker).
pub fn tracewire_trace() {
    let root = tracewire_telemetry::stage_span!(Process);
    let _r = root.enter();
    for _ in 1..TRACE_SPANS {
        let span = tracewire_telemetry::stage_span!(ProcessSpawn, process.pid = black_box(42u32));
        let _e = span.enter();
    }
}

/// The same trace through `tracing` for tracing-opentelemetry: the same names and target,
/// `process.pid` and the `tracewire.stage` attribute recorded as fields.
pub fn tracing_trace() {
    let root = tracing::info_span!(target: "tracewire", "process", tracewire.stage = "process");
    let _r = root.enter();
    for _ in 1..TRACE_SPANS {
        let span = tracing::info_span!(
            target: "tracewire",
            "process.spawn",
            process.pid = black_box(42u32),
            tracewire.stage = "process.spawn"
        );
        let _e = span.enter();
    }
}

/// The peer's twin of `stage_span!(TerminalDeliver, tracewire.bytes = bytes)`, for
/// tracing-opentelemetry: the same name, target and field, and the `tracewire.stage`
/// attribute (which tracewire adds on its export worker) recorded as a field.
#[inline]
pub fn tracing_deliver_span(bytes: u64) -> tracing::Span {
    tracing::info_span!(
        target: "tracewire",
        "terminal.deliver",
        tracewire.bytes = bytes,
        tracewire.stage = "terminal.deliver"
    )
}

/// The same trace through fastrace: a root span (with the stage property) set as the local
/// parent, and 15 `LocalSpan`s under it with `process.pid` and the stage as properties.
pub fn fastrace_trace() {
    let root = fastrace::Span::root("process", fastrace::collector::SpanContext::random())
        .with_property(|| ("tracewire.stage", "process"));
    let _g = root.set_local_parent();
    for _ in 1..TRACE_SPANS {
        let span = fastrace::local::LocalSpan::enter_with_local_parent("process.spawn")
            .with_properties(|| [("process.pid", "42"), ("tracewire.stage", "process.spawn")]);
        black_box(&span);
    }
}

// ---------------------------------------------------------------------------------------
// Runtimes, the relay and exec-servers.

/// A multi-threaded tokio runtime with 2 workers (the machines these run on have 2 cores).
///
/// # Errors
/// When the runtime cannot be built.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Starts a relay on a loopback port, serving until the runtime ends; returns its address.
///
/// # Errors
/// When it cannot bind.
pub async fn start_relay() -> Result<SocketAddr> {
    let (listener, addr) = RelayServer::bind("127.0.0.1:0".parse()?).await?;
    tokio::spawn(RelayServer::new(RelayConfig::default()).serve(listener, std::future::pending()));
    Ok(addr)
}

/// A [`Start`] of this command line, everything else default.
pub fn argv(a: &[&str]) -> Start {
    Start { argv: a.iter().map(|s| (*s).to_owned()).collect(), ..Start::default() }
}

/// Runs `true` through `client` and waits for it to exit.
///
/// # Errors
/// When the call fails, or `true` does not exit 0.
pub async fn exec_true(client: &ExecClient) -> Result<()> {
    let out = client.start(argv(&["true"])).await?.wait_with_output().await?;
    ensure!(out.status.code == Some(0), "`true` failed: {:?}", out.status);
    Ok(())
}

/// Spawns `true` locally (`tokio::process`) and waits for it: the peer of remote exec.
///
/// # Errors
/// When it cannot be spawned, or does not exit 0.
pub async fn spawn_true_locally() -> Result<()> {
    let status = tokio::process::Command::new("true").status().await?;
    ensure!(status.success(), "`true` failed: {status}");
    Ok(())
}

/// A relay and three exec-servers in this process, each serving until the runtime ends:
/// two on loopback gRPC (the second with [`ExecConfig::child_trace_context`] off), one
/// attached behind the relay (Noise IK, AES-GCM, exposing the traceparent to the relay);
/// and a client of each.
#[derive(Clone)]
pub struct ExecFixture {
    /// The relay's address.
    pub relay: SocketAddr,
    /// A client of the exec-server on direct loopback gRPC.
    pub direct: ExecClient,
    /// A client of an exec-server on direct loopback gRPC that gives its children no
    /// trace variables.
    pub direct_no_child_context: ExecClient,
    /// A client of the exec-server behind the relay.
    pub relayed: ExecClient,
}

impl std::fmt::Debug for ExecFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecFixture").field("relay", &self.relay).finish_non_exhaustive()
    }
}

impl ExecFixture {
    /// Starts the relay and the three servers, and connects.
    ///
    /// # Errors
    /// When a server cannot bind or a client cannot connect.
    pub async fn start() -> Result<Self> {
        let relay = start_relay().await?;
        let direct = serve_direct(ExecConfig::default()).await?;
        let mut plain = ExecConfig::default();
        plain.child_trace_context = false;
        let direct_no_child_context = serve_direct(plain).await?;
        let mut ep = RelayEndpoint::new(relay.to_string(), "bench-exec");
        ep.expose_traceparent = true;
        let kp = Keypair::generate()?;
        let key = kp.public;
        tokio::spawn(tracewire_relay::serve_via_relay(
            ep.clone(),
            kp,
            Arc::new(ExecServer::new(ExecConfig::default())),
            ServerConfig::default(),
            std::future::pending(),
        ));
        // Let the server attach before the client does.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let relayed = ExecClient::new(Client::new(tracewire_relay::connect(&ep, &key).await?, ClientConfig::default()));
        Ok(Self { relay, direct, direct_no_child_context, relayed })
    }
}

/// Starts an exec-server with `config` on a loopback port, serving until the runtime ends,
/// and connects a client to it.
async fn serve_direct(config: ExecConfig) -> Result<ExecClient> {
    let bound = BoundServer::bind(&"127.0.0.1:0".parse::<Address>()?).await?;
    let addr = bound.local_address().to_string();
    tokio::spawn(bound.run(Arc::new(ExecServer::new(config)), ServerConfig::default(), std::future::pending()));
    Ok(ExecClient::connect(&addr).await?)
}

// ---------------------------------------------------------------------------------------
// The relay stream and raw AEAD.

/// Both ends of one session through the relay.
#[derive(Debug)]
pub struct RelayStream {
    /// The client end (sends).
    pub client: RelayLink,
    /// The server end (receives).
    pub server: RelayLink,
}

impl RelayStream {
    /// Attaches a server and a client to `relay` under `session` with `suite`, and completes
    /// the handshake (Noise IK: two messages).
    ///
    /// # Errors
    /// When either end fails to attach or the handshake fails.
    pub async fn open(relay: SocketAddr, session: &str, suite: Suite) -> Result<Self> {
        let mut ep = RelayEndpoint::new(relay.to_string(), session);
        ep.noise.suite = suite;
        let kp = Keypair::generate()?;
        let key = kp.public;
        let server_ep = ep.clone();
        // The relay holds whichever end attaches first until the other does.
        let server = tokio::spawn(async move { tracewire_relay::accept(&server_ep, &kp).await });
        let client = tracewire_relay::connect(&ep, &key).await?;
        let server = server.await??;
        Ok(Self { client, server })
    }

    /// Sends `n` messages of [`MAX_RECORD_PLAINTEXT`] bytes from the client and waits until
    /// the server has received them all; returns the bytes received.
    ///
    /// # Errors
    /// When the stream ends early.
    pub async fn stream(&mut self, n: usize) -> Result<usize> {
        let chunk = Bytes::from(vec![7u8; MAX_RECORD_PLAINTEXT]);
        let tx = self.client.link.tx.clone();
        let sender = tokio::spawn(async move {
            for _ in 0..n {
                if tx.send(chunk.clone()).await.is_err() {
                    break;
                }
            }
        });
        let mut got = 0;
        while got < n * MAX_RECORD_PLAINTEXT {
            match self.server.link.rx.recv().await {
                Some(m) => got += m.len(),
                None => bail!("the relay stream ended after {got} bytes"),
            }
        }
        sender.await?;
        Ok(got)
    }
}

/// Both ends of a Noise session with `suite`, without a relay, a network or tracewire's
/// framing: the raw AEAD cost of a record. Each [`RawAead::seal_open`] seals one
/// [`MAX_RECORD_PLAINTEXT`]-byte message with snow into a reused buffer and opens it into
/// another, as the figures for snow were measured.
pub struct RawAead {
    initiator: Arc<snow::StatelessTransportState>,
    responder: Arc<snow::StatelessTransportState>,
    message: Vec<u8>,
    sealed: Vec<u8>,
    opened: Vec<u8>,
    nonce: u64,
}

impl std::fmt::Debug for RawAead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAead").field("nonce", &self.nonce).finish_non_exhaustive()
    }
}

impl RawAead {
    /// A session of `suite` whose messages are [`MAX_RECORD_PLAINTEXT`] bytes.
    ///
    /// # Errors
    /// When the handshake fails.
    pub fn new(suite: Suite) -> Result<Self> {
        let (initiator, responder) = transports_for_tests(NoiseConfig { suite, ..NoiseConfig::default() })?;
        Ok(Self {
            initiator,
            responder,
            message: vec![7u8; MAX_RECORD_PLAINTEXT],
            sealed: vec![0u8; MAX_RECORD_PLAINTEXT + 16],
            opened: vec![0u8; MAX_RECORD_PLAINTEXT + 16],
            nonce: 0,
        })
    }

    /// Seals one message and opens it again; returns its length.
    ///
    /// # Errors
    /// When sealing or opening fails.
    pub fn seal_open(&mut self) -> Result<usize> {
        let n = self.initiator.write_message(self.nonce, &self.message, &mut self.sealed)?;
        let sealed = self.sealed.get(..n).context("sealed record")?;
        let m = self.responder.read_message(self.nonce, sealed, &mut self.opened)?;
        self.nonce += 1;
        black_box(&self.opened);
        Ok(m)
    }
}

/// The floor of any relay over TCP on this machine: `n` messages of
/// [`MAX_RECORD_PLAINTEXT`] bytes from a client through a forwarding task to a server, over
/// two loopback TCP connections, with no encryption, framing or HTTP/2. Returns the bytes
/// the server read.
///
/// # Errors
/// When a socket fails.
pub async fn tcp_two_hops(n: usize) -> Result<usize> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (server_addr, relay_addr) = (server.local_addr()?, relay.local_addr()?);
    let forward = tokio::spawn(async move {
        let (mut inbound, _) = relay.accept().await?;
        let mut outbound = tokio::net::TcpStream::connect(server_addr).await?;
        outbound.set_nodelay(true)?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let k = inbound.read(&mut buf).await?;
            if k == 0 {
                return anyhow::Ok(());
            }
            outbound.write_all(buf.get(..k).context("read length")?).await?;
        }
    });
    let receive = tokio::spawn(async move {
        let (mut s, _) = server.accept().await?;
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0;
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                return anyhow::Ok(got);
            }
            got += k;
        }
    });
    let mut client = tokio::net::TcpStream::connect(relay_addr).await?;
    client.set_nodelay(true)?;
    let message = vec![7u8; MAX_RECORD_PLAINTEXT];
    for _ in 0..n {
        client.write_all(&message).await?;
    }
    drop(client);
    forward.await??;
    receive.await?
}

/// CPU time this process has used so far, user and system, on every thread, those that
/// have ended included (`CLOCK_PROCESS_CPUTIME_ID`, nanosecond resolution).
pub fn process_cpu() -> Duration {
    crate::cpu::process_time()
}

// ---------------------------------------------------------------------------------------
// The store and its synchronous peer.

/// The process record appended in the store comparisons: `echo hi` in `/tmp`.
pub fn process_record(id: u64) -> ProcessRecord {
    ProcessRecord {
        process_id: id,
        pid: 1,
        argv: vec!["echo".into(), "hi".into()],
        cwd: "/tmp".into(),
        ..ProcessRecord::default()
    }
}

/// Opens a tracewire store at `path` whose queue holds `queue` records. Call it inside a
/// tokio runtime.
///
/// # Errors
/// When the database cannot be opened.
pub fn open_store(path: &Path, queue: usize) -> Result<Store> {
    let mut config = StoreConfig::default();
    config.queue = queue;
    Ok(Store::open_with(path, config)?)
}

/// The store's peer: SQLite with the same settings (WAL, `synchronous=FULL`), the same
/// table (`processes`, its columns and index) and the same statement (an insert that
/// updates the process on conflict, as `Store::append` writes) with the same values, on the
/// caller's thread.
#[derive(Debug)]
pub struct SyncDb(rusqlite::Connection);

impl SyncDb {
    /// Creates the database and its table at `path`.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The store's own migrations: the same table, columns and index.
        tracewire_store::migrate(&conn)?;
        Ok(Self(conn))
    }

    /// Inserts and commits the record [`process_record`] makes for `id`.
    ///
    /// # Errors
    /// When SQLite fails.
    pub fn insert(&self, id: u64) -> Result<()> {
        self.insert_one(id)
    }

    fn insert_one(&self, id: u64) -> Result<()> {
        // The store's own statement and values: the peer does the same work per record.
        tracewire_store::upsert_process(&self.0, &process_record(id))?;
        Ok(())
    }

    /// Inserts the records of `ids` in one transaction, committed (and fsynced) once: the
    /// batched-commit peer.
    ///
    /// # Errors
    /// When SQLite fails; the transaction is rolled back.
    pub fn insert_batch(&self, ids: std::ops::Range<u64>) -> Result<()> {
        self.0.execute_batch("BEGIN")?;
        for id in ids {
            if let Err(e) = self.insert_one(id) {
                let _ = self.0.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        self.0.execute_batch("COMMIT")?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The collector receiver and rotel-agent.

/// Spans per export request in the ingest comparisons.
pub const INGEST_BATCH: usize = 512;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..KeyValue::default()
    }
}

/// An OTLP export request of [`INGEST_BATCH`] spans in traces of 16 (6 attributes per span,
/// as tracewire's stage spans carry); `seed` keeps the ids of different senders apart.
pub fn export_request(seed: u64) -> ExportTraceServiceRequest {
    let spans = (0..INGEST_BATCH as u64)
        .map(|i| Span {
            // Never all zero: OTLP receivers reject such a trace id.
            trace_id: (seed * 1000 + i / 16 + 1).to_be_bytes().repeat(2),
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

/// An OTLP/gRPC trace client of `endpoint` (`http://HOST:PORT`), taking answers up to
/// 64 MiB.
///
/// # Errors
/// When it cannot connect.
pub async fn otlp_client(endpoint: &str) -> Result<TraceServiceClient<tonic::transport::Channel>> {
    Ok(TraceServiceClient::connect(endpoint.to_owned()).await?.max_decoding_message_size(64 << 20))
}

/// Starts tracewire's embedded OTLP/gRPC receiver on `rt` (its own runtime, so that it has
/// its own workers), keeping up to `capacity` spans; returns its endpoint and its store.
///
/// # Errors
/// When it cannot bind.
pub fn start_receiver(rt: &tokio::runtime::Runtime, capacity: usize) -> Result<(String, Arc<SpanStore>)> {
    serve_store(rt, SpanStore::new(capacity))
}

/// As [`start_receiver`], with a SQLite database at `db` as `tracewire collect --db` sets
/// it up (`SpanStore::with_db(Store::open(..))`): a request is acknowledged once its spans
/// are queued for the database.
///
/// # Errors
/// When it cannot bind or the database cannot be opened.
pub fn start_receiver_with_db(
    rt: &tokio::runtime::Runtime,
    capacity: usize,
    db: &Path,
) -> Result<(String, Arc<SpanStore>)> {
    let store = rt.block_on(async { anyhow::Ok(SpanStore::new(capacity).with_db(Store::open(db)?)) })?;
    serve_store(rt, store)
}

fn serve_store(rt: &tokio::runtime::Runtime, store: SpanStore) -> Result<(String, Arc<SpanStore>)> {
    let store = Arc::new(store);
    let endpoint = rt.block_on(async {
        let (listener, addr) = tracewire_collector::receiver::bind("127.0.0.1:0".parse()?).await?;
        tokio::spawn(tracewire_collector::receiver::serve_grpc(listener, Arc::clone(&store), std::future::pending()));
        anyhow::Ok(format!("http://{addr}"))
    })?;
    Ok((endpoint, store))
}

/// rotel-agent with its blackhole exporter (it decodes and drops), in its own process on
/// loopback ports; stopped by its pid when dropped.
#[derive(Debug)]
pub struct RotelBlackhole {
    child: Child,
    endpoint: String,
    _dir: tracewire_testkit::TempDir,
}

impl RotelBlackhole {
    /// Starts it and waits (up to 10 s) until its gRPC port accepts connections.
    ///
    /// # Errors
    /// When rotel-agent is not installed (`./scripts/setup-test-deps.sh`), cannot start, or
    /// does not listen in time.
    pub fn start() -> Result<Self> {
        let agent = tracewire_testkit::rotel_agent().map_err(|e| anyhow!("rotel-agent: {e}"))?;
        let dir = tracewire_testkit::TempDir::new("tw-ingest-bench")?;
        let (gp, hp) = (tracewire_testkit::free_port(), tracewire_testkit::free_port());
        let child = Command::new(agent)
            .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{gp}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{hp}"), "--exporter", "blackhole"])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting rotel-agent")?;
        let rotel = Self { child, endpoint: format!("http://127.0.0.1:{gp}"), _dir: dir };
        let ready = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", gp)).is_err() {
            ensure!(Instant::now() < ready, "rotel-agent did not start listening on {gp}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(rotel)
    }

    /// Its OTLP/gRPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for RotelBlackhole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Propagation.

/// The traceparent of the propagation comparisons (the W3C specification's example).
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The tracestate of the propagation comparisons: three members (W3C Trace Context's
/// examples).
pub const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,vendor@tenant=opaque";

/// Inputs to the propagation comparisons, for tracewire and for opentelemetry_sdk's
/// `TraceContextPropagator`: the same `HashMap` carrier (a traceparent and a 3-member
/// tracestate) to extract from, and the same OpenTelemetry `Context` to inject.
#[derive(Debug)]
pub struct PropagationInputs {
    /// A carrier holding [`TRACEPARENT`] and [`TRACESTATE`].
    pub headers: HashMap<String, String>,
    /// The SDK's propagator.
    pub sdk: TraceContextPropagator,
    /// tracewire's `TextMapPropagator` for the same fields (`traceparent`, `tracestate`;
    /// baggage off, as the SDK's `TraceContextPropagator` has none).
    pub ours: otel::TraceContextPropagator,
    /// A sampled context with the 3-member tracestate.
    pub context: TraceContext,
    /// Its traceparent.
    pub traceparent: TraceParent,
    /// The same context as an OpenTelemetry remote span context.
    pub otel_context: opentelemetry::Context,
}

impl Default for PropagationInputs {
    fn default() -> Self {
        let mut context = TraceContext::new_root(true);
        context.tracestate = tracewire_context::TraceState::parse(TRACESTATE).unwrap_or_default();
        let otel_context =
            opentelemetry::Context::new().with_remote_span_context(otel::to_span_context(&context, false));
        Self {
            headers: [
                ("traceparent".to_owned(), TRACEPARENT.to_owned()),
                ("tracestate".to_owned(), TRACESTATE.to_owned()),
            ]
            .into(),
            sdk: TraceContextPropagator::new(),
            ours: otel::TraceContextPropagator::with_fields(true, false),
            traceparent: context.traceparent(),
            context,
            otel_context,
        }
    }
}

impl PropagationInputs {
    /// The SDK's `extract` from [`Self::headers`].
    pub fn sdk_extract(&self) -> opentelemetry::Context {
        self.sdk.extract(black_box(&self.headers))
    }

    /// tracewire's `extract` from [`Self::headers`].
    pub fn our_extract(&self) -> opentelemetry::Context {
        self.ours.extract(black_box(&self.headers))
    }

    /// The SDK's `inject` of [`Self::otel_context`] into `out` (cleared first).
    pub fn sdk_inject(&self, out: &mut HashMap<String, String>) {
        out.clear();
        self.sdk.inject_context(black_box(&self.otel_context), out);
    }

    /// tracewire's `inject` of [`Self::otel_context`] into `out` (cleared first).
    pub fn our_inject(&self, out: &mut HashMap<String, String>) {
        out.clear();
        self.ours.inject_context(black_box(&self.otel_context), out);
    }

    /// The floor of any extract through these types: the two `Extractor::get` calls of the
    /// `HashMap` carrier (each lowercases its key), opentelemetry's `TraceState` from the
    /// three members already split, and the `Context` with the remote span context; no
    /// parsing or validation at all.
    pub fn floor_extract(&self) -> opentelemetry::Context {
        use opentelemetry::propagation::Extractor;
        use opentelemetry::trace as ot;
        let headers = black_box(&self.headers);
        black_box(Extractor::get(headers, "traceparent"));
        black_box(Extractor::get(headers, "tracestate"));
        let ts = ot::TraceState::from_key_value([
            ("congo", "t61rcWkgMzE"),
            ("rojo", "00f067aa0ba902b7"),
            ("vendor@tenant", "opaque"),
        ])
        .unwrap_or_default();
        let sc = ot::SpanContext::new(
            ot::TraceId::from_bytes(self.context.trace_id.to_bytes()),
            ot::SpanId::from_bytes(self.context.span_id.to_bytes()),
            ot::TraceFlags::SAMPLED,
            true,
            ts,
        );
        opentelemetry::Context::current().with_remote_span_context(sc)
    }

    /// The floor of any inject through these types into `out` (cleared first): the
    /// traceparent copied from a ready string into the `String` the `Injector` takes,
    /// opentelemetry's `TraceState::header`, and the two `Injector::set` calls of the
    /// `HashMap` carrier (each lowercases its key); no encoding at all.
    pub fn floor_inject(&self, out: &mut HashMap<String, String>) {
        use opentelemetry::propagation::Injector as _;
        out.clear();
        let cx = black_box(&self.otel_context);
        let span = cx.span();
        let sc = span.span_context();
        out.set("traceparent", black_box(TRACEPARENT).to_owned());
        out.set("tracestate", sc.trace_state().header());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::trace::TraceContextExt as _;

    use super::PropagationInputs;

    #[test]
    fn both_propagators_extract_and_inject_the_same_context() {
        let inputs = PropagationInputs::default();
        let (ours, sdk) = (inputs.our_extract(), inputs.sdk_extract());
        assert_eq!(ours.span().span_context(), sdk.span().span_context());
        assert_eq!(ours.span().span_context().trace_state().header(), super::TRACESTATE);
        let (mut a, mut b) = (HashMap::new(), HashMap::new());
        inputs.our_inject(&mut a);
        inputs.sdk_inject(&mut b);
        assert_eq!(a.len(), 2, "{a:?}");
        assert_eq!(a["tracestate"], b["tracestate"]);
        // The same ids; the flags differ only in Level 2's `random` bit, which the SDK (a
        // Level 1 propagator) does not send.
        assert_eq!(a["traceparent"][..53], b["traceparent"][..53]);
        assert_eq!(&b["traceparent"][53..], "01");
        assert!(["01", "03"].contains(&&a["traceparent"][53..]), "{a:?}");
    }
}
