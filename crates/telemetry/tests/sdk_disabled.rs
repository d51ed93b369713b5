//! `init` with `OTEL_SDK_DISABLED=true`: nothing is recorded or exported, but trace contexts
//! still propagate, as OpenTelemetry's API behaves without an SDK: an incoming context is
//! continued (trace id, sampled flag, tracestate, baggage) and `inject_current` /
//! `inject_span` write it into carriers (envelopes, child environments); a trace started
//! here has ids too. `init` installs globals: every test of this binary shares one `init`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::OnceLock;

use tracewire_context::{SpanId, TraceParent};
use tracewire_telemetry::{
    Config, Queued, Stage, TelemetryGuard, current_trace_id, init, inject_current, inject_span, set_parent_from,
    span_context, stage_span,
};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// Telemetry installed with export disabled, and an endpoint that would see any export
/// attempt (nothing may connect to it).
struct Installed {
    guard: TelemetryGuard,
    endpoint: TcpListener,
}

fn installed() -> &'static Installed {
    static I: OnceLock<Installed> = OnceLock::new();
    I.get_or_init(|| {
        let endpoint = TcpListener::bind("127.0.0.1:0").unwrap();
        endpoint.set_nonblocking(true).unwrap();
        let url = format!("http://{}", endpoint.local_addr().unwrap());
        let config = Config::from_vars([
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", url.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ])
        .unwrap();
        assert!(config.disabled);
        Installed { guard: init(config).unwrap(), endpoint }
    })
}

/// The context a carrier received, parsed.
fn injected(headers: &HashMap<String, String>) -> TraceParent {
    TraceParent::parse(&headers["traceparent"]).unwrap_or_else(|e| panic!("{headers:?}: {e}"))
}

#[test]
fn an_incoming_context_is_continued_and_injected_with_export_disabled() {
    let telemetry = installed();
    for flags in ["01", "00"] {
        let incoming = [
            ("traceparent", format!("00-{TRACE}-{PARENT}-{flags}")),
            ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_owned()),
            ("baggage", "user=alice".to_owned()),
        ];
        let incoming: Vec<(&str, &str)> = incoming.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let dispatch = stage_span!(RpcDispatch, rpc.method = "Start");
        assert!(set_parent_from(&dispatch, incoming.as_slice()).continued());

        // The span continues the caller's trace with an id of its own (non-recording).
        let ctx = span_context(&dispatch).expect("a context with export disabled");
        assert_eq!(ctx.trace_id.to_string(), TRACE);
        assert_ne!(ctx.span_id.to_string(), PARENT);
        assert_eq!(ctx.flags.is_sampled(), flags == "01", "the caller's sampled flag is kept");

        dispatch.in_scope(|| {
            // What the RPC layer writes into a response or notification envelope.
            let mut envelope = HashMap::new();
            assert!(inject_current(&mut envelope).unwrap(), "nothing injected");
            let tp = injected(&envelope);
            assert_eq!((tp.trace_id.to_string(), tp.parent_id), (TRACE.to_owned(), ctx.span_id));
            assert_eq!(tp.flags.is_sampled(), flags == "01");
            assert_eq!(envelope["tracestate"], "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
            assert_eq!(envelope["baggage"], "user=alice");
            assert_eq!(current_trace_id().map(|t| t.to_string()).as_deref(), Some(TRACE));

            // A child span (the process a request starts): same trace, its own id; what a
            // child's environment gets.
            let process = stage_span!(ProcessSpawn);
            let mut env = HashMap::new();
            assert!(inject_span(&process, &mut env).unwrap());
            let child = injected(&env);
            assert_eq!(child.trace_id.to_string(), TRACE);
            assert_ne!(child.parent_id, ctx.span_id);
            assert_ne!(child.parent_id, SpanId::from_bytes([0; 8]));

            // Queue spans work and record nothing.
            let q = Queued::new(Stage::RpcQueue, 7);
            assert_eq!(std::thread::spawn(move || q.into_inner()).join().unwrap(), 7);
        });
    }
    assert_nothing_exported(telemetry);
}

#[test]
fn a_trace_started_here_has_ids_so_carriers_are_never_empty() {
    let telemetry = installed();
    let root = stage_span!(Exec);
    let mut request = HashMap::new();
    let trace_id = root.in_scope(|| {
        let call = stage_span!(RpcCall, rpc.method = "Start");
        assert!(inject_span(&call, &mut request).unwrap(), "a request envelope gets a context");
        current_trace_id().expect("a trace id with export disabled")
    });
    let tp = injected(&request);
    assert_eq!(tp.trace_id, trace_id);
    assert!(tp.flags.is_sampled(), "sampled as with export on (parentbased_always_on)");
    assert_nothing_exported(telemetry);
}

/// No counters moved, no export worker exists, and nothing connected to the endpoint.
fn assert_nothing_exported(telemetry: &Installed) {
    assert_eq!(telemetry.guard.stats(), tracewire_telemetry::ExportSnapshot::default());
    assert!(telemetry.guard.export_stats().is_none());
    telemetry.guard.flush().unwrap();
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    assert!(!threads.iter().any(|n| n.trim() == "tracewire-export"), "{threads:?}");
    match telemetry.endpoint.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected to the OTLP endpoint: {other:?}"),
    }
}
