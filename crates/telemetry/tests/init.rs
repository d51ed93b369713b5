//! `init` installs everything globally: subscriber, provider, propagator. One test per
//! process, since it installs globals.

use std::time::Duration;

use tracewire_telemetry::{Config, Error, Queued, Stage, current_trace_id, init, stage_span};
use tracewire_testkit::Rotel;

#[test]
fn init_exports_stage_and_queue_spans_and_installs_the_propagator() {
    let rotel = Rotel::start().unwrap();
    let mut config = Config::from_vars([
        ("OTEL_SERVICE_NAME", "init-test"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.grpc_endpoint().as_str()),
        ("OTEL_PROPAGATORS", "tracecontext,baggage"),
        ("OTEL_BSP_SCHEDULE_DELAY", "nonsense"),
    ])
    .unwrap();
    config.batch.schedule_delay = Duration::from_millis(50);
    let guard = init(config.clone()).unwrap();

    // A second installation is refused with a typed error, not a panic.
    assert!(matches!(init(config), Err(Error::AlreadyInitialized(_))));

    let trace_id = {
        let _root = stage_span!(Exec).entered();
        let _d = stage_span!(RpcDispatch).entered();
        let q = Queued::new(Stage::RpcQueue, 1);
        std::thread::spawn(move || q.into_inner()).join().unwrap();
        // The global propagator injects the current span's context (current_context(), as
        // OpenTelemetry's own current context is left alone without context activation).
        let mut headers = std::collections::HashMap::new();
        let cx = tracewire_telemetry::current_context();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut headers));
        let id = current_trace_id().unwrap().to_string();
        assert!(headers["traceparent"].contains(&id), "{headers:?}");
        id
    };
    let stats = guard.shutdown().unwrap();
    assert_eq!((stats.emitted, stats.exported), (3, 3));

    let spans =
        rotel.wait_for(Duration::from_secs(15), |s| s.iter().filter(|x| x.trace_id == trace_id).count() >= 3).unwrap();
    let of: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let find = |n: &str| of.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n} in {of:#?}"));
    assert_eq!(find("rpc.dispatch").parent_id, find("exec").span_id);
    assert_eq!(find("rpc.queue").parent_id, find("rpc.dispatch").span_id);
    assert_eq!(find("rpc.queue").resource_attr("service.name"), Some("init-test"));
}
