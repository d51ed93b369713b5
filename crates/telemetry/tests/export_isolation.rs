//! Architecture invariant: exporting cannot feed itself. The export worker logs through its
//! own subscriber, so the spans of the HTTP/gRPC stack it exports with (tonic, hyper, h2,
//! reqwest) never reach the application's subscriber, are never recorded by the pipeline's
//! layer and never exported.
//!
//! The application's subscriber here is the global one, enabled at every level (TRACE), so
//! the export stack's spans would be recorded if they could reach it; the control case
//! shows that h2 does emit spans in this build. The pipelines export to a real collector
//! (rotel-agent on loopback) over OTLP/gRPC and OTLP/HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tracewire_telemetry::{Config, Pipeline, stage_span};
use tracewire_testkit::{ReceivedSpan, Rotel};
use tracing::span;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry, reload};

const WAIT: Duration = Duration::from_secs(15);

/// Spans each protocol's pipeline emits (each trace `exec -> rpc.dispatch -> process.spawn`).
const TRACES: usize = 20;

/// Records the target of every span its subscriber opens.
#[derive(Clone, Debug, Default)]
struct Targets(Arc<Mutex<Vec<String>>>);

impl Targets {
    fn of_export_stack(&self) -> Vec<String> {
        let stack = ["h2", "hyper", "tonic", "tower", "reqwest", "opentelemetry"];
        let seen = self.0.lock().unwrap();
        seen.iter().filter(|t| stack.iter().any(|s| t.starts_with(s))).cloned().collect()
    }
}

impl<S: tracing::Subscriber> Layer<S> for Targets {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
        self.0.lock().unwrap().push(attrs.metadata().target().to_owned());
    }
}

fn pipeline(vars: &[(&str, &str)]) -> Pipeline {
    let mut all = vec![("OTEL_SERVICE_NAME", "tracewire-isolation")];
    all.extend_from_slice(vars);
    let mut config = Config::from_vars(all).unwrap();
    config.batch.schedule_delay = Duration::from_millis(20);
    // Small batches: many export requests, so many chances for the stack to emit spans.
    config.batch.max_export_batch_size = 4;
    Pipeline::new(&config).unwrap()
}

fn emit_traces() {
    for _ in 0..TRACES {
        let _exec = stage_span!(Exec).entered();
        let _dispatch = stage_span!(RpcDispatch, rpc.system = "tracewire", rpc.method = "Start").entered();
        let _spawn = stage_span!(ProcessSpawn, process.executable.name = "true").entered();
    }
}

/// The control: an HTTP/2 request made on the application's side does open h2 spans in
/// the subscriber it runs under, at the levels the global subscriber enables.
fn h2_opens_spans(rotel: &Rotel) -> Vec<String> {
    let targets = Targets::default();
    let subscriber = tracing_subscriber::registry().with(targets.clone());
    let uri = format!("{}/opentelemetry.proto.collector.trace.v1.TraceService/Export", rotel.grpc_endpoint());
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Empty<Bytes>>();
            let request = axum::http::Request::post(uri.as_str())
                .header("content-type", "application/grpc")
                .body(Empty::new())
                .unwrap();
            // The answer does not matter (an empty body is not an export request): the
            // HTTP/2 connection is what opens spans.
            let _ = client.request(request).await;
        });
    });
    targets.of_export_stack()
}

#[test]
fn the_export_stack_opens_no_span_the_pipeline_records() {
    let rotel = Rotel::start().unwrap();
    let control = h2_opens_spans(&rotel);
    assert!(control.iter().any(|t| t.starts_with("h2")), "h2 opens spans at TRACE level: {control:?}");

    let grpc_endpoint = rotel.grpc_endpoint();
    let http_endpoint = rotel.http_endpoint();
    let protocols = [("grpc", grpc_endpoint.as_str()), ("http/protobuf", http_endpoint.as_str())];
    let first =
        pipeline(&[("OTEL_EXPORTER_OTLP_PROTOCOL", protocols[0].0), ("OTEL_EXPORTER_OTLP_ENDPOINT", protocols[0].1)]);
    // The global subscriber, every level enabled; the pipeline's layer is swapped per
    // protocol (a global subscriber is set once per process).
    let (layer, swap) = reload::Layer::<_, Registry>::new(first.layer());
    let targets = Targets::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer).with(targets.clone())).unwrap();

    let mut expected = 0;
    let mut pipelines = vec![first];
    for (i, (protocol, endpoint)) in protocols.iter().enumerate() {
        if i > 0 {
            let next =
                pipeline(&[("OTEL_EXPORTER_OTLP_PROTOCOL", protocol), ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]);
            swap.reload(next.layer()).unwrap();
            pipelines.push(next);
        }
        let pipeline = pipelines.last().unwrap();
        emit_traces();
        // A pipeline fed by its own export stack overflows and misses its shutdown
        // deadline: its counts, not the error, say so.
        let stats = pipeline.shutdown().or_else(tracewire_telemetry::Error::into_stats).unwrap();
        let emitted = 3 * TRACES as u64;
        // The counts stay exact: what the application emitted, and nothing else, was
        // exported.
        assert_eq!(
            (stats.emitted, stats.exported, stats.dropped()),
            (emitted, emitted, 0),
            "{protocol}: only the application's spans are emitted and exported: {stats:?}"
        );
        expected += 3 * TRACES;
        let received = rotel.wait_for(WAIT, |s| s.len() >= expected).unwrap();
        let foreign: Vec<&ReceivedSpan> =
            received.iter().filter(|s| !["exec", "rpc.dispatch", "process.spawn"].contains(&s.name.as_str())).collect();
        assert!(foreign.is_empty(), "{protocol}: spans of the export stack were exported: {foreign:#?}");
        assert_eq!(received.len(), expected, "{protocol}: exactly the application's spans arrive");
        let stack = targets.of_export_stack();
        assert!(stack.is_empty(), "{protocol}: the export stack opened spans in the global subscriber: {stack:?}");
    }
}
