//! `Config::from_vars`: every variable, valid and invalid values side by side.
#![allow(clippy::type_complexity)]

use std::time::Duration;

use tracewire_telemetry::{Config, ConfigError, Propagators, Protocol, Sampler};

fn cfg(vars: &[(&str, &str)]) -> Config {
    Config::from_vars(vars.iter().copied()).unwrap_or_else(|e| panic!("{vars:?}: {e}"))
}

fn err_var(vars: &[(&str, &str)]) -> &'static str {
    match Config::from_vars(vars.iter().copied()) {
        Err(ConfigError::Invalid { var, .. }) => var,
        Ok(c) => panic!("{vars:?} should be rejected, got {c:?}"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn defaults_follow_the_specification() {
    let c = cfg(&[]);
    assert!(!c.disabled);
    assert_eq!(c.service_name, "unknown_service");
    assert_eq!(c.protocol, Protocol::HttpProtobuf);
    assert_eq!(c.endpoint, "http://localhost:4318/v1/traces");
    assert_eq!(c.timeout, Duration::from_secs(10));
    assert_eq!(c.sampler, Sampler::ParentBasedAlwaysOn);
    assert_eq!(c.propagators, Propagators { trace_context: true, baggage: true });
    assert_eq!(c.batch.max_queue_size, 2048);
    assert_eq!(c.batch.max_export_batch_size, 512);
    assert_eq!(c.batch.schedule_delay, Duration::from_secs(5));
    assert_eq!(c.batch.export_timeout, Duration::from_secs(30));
    assert_eq!(c.shutdown_timeout, Duration::from_secs(2));
    assert!(c.warnings.is_empty());
    assert_eq!(cfg(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).endpoint, "http://localhost:4317");
}

#[test]
fn endpoints_and_protocols() {
    let cases: &[(&[(&str, &str)], Protocol, &str)] = &[
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")],
            Protocol::HttpProtobuf,
            "http://127.0.0.1:4318/v1/traces",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")],
            Protocol::HttpProtobuf,
            "http://127.0.0.1:4318/v1/traces",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/base"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            Protocol::HttpJson,
            "http://c:4318/base/v1/traces",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
            Protocol::Grpc,
            "http://127.0.0.1:4317",
        ),
        // The signal-specific endpoint is used as is, and wins.
        (
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:1"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://b:2/custom"),
            ],
            Protocol::HttpProtobuf,
            "http://b:2/custom",
        ),
        // The signal-specific protocol wins.
        (
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")],
            Protocol::Grpc,
            "http://localhost:4317",
        ),
        // Empty values count as unset.
        (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")], Protocol::HttpProtobuf, "http://localhost:4318/v1/traces"),
    ];
    for (vars, protocol, endpoint) in cases {
        let c = cfg(vars);
        assert_eq!((c.protocol, c.endpoint.as_str()), (*protocol, *endpoint), "{vars:?}");
    }
}

#[test]
fn unusable_endpoint_protocol_or_headers_are_errors_naming_the_variable() {
    assert_eq!(err_var(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")]), "OTEL_EXPORTER_OTLP_PROTOCOL");
    assert_eq!(err_var(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "GRPC")]), "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL");
    assert_eq!(err_var(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317")]), "OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_eq!(err_var(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://")]), "OTEL_EXPORTER_OTLP_ENDPOINT");
    assert_eq!(err_var(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://x:1")]), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    assert_eq!(err_var(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]), "OTEL_EXPORTER_OTLP_HEADERS");
    assert_eq!(err_var(&[("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "=x")]), "OTEL_EXPORTER_OTLP_TRACES_HEADERS");
    assert_eq!(err_var(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=%zz")]), "OTEL_EXPORTER_OTLP_HEADERS");
    let msg = Config::from_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "udp")]).unwrap_err().to_string();
    assert!(msg.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && msg.contains("udp"), "{msg}");
}

#[test]
fn headers_are_decoded_and_signal_specific_ones_win() {
    let c = cfg(&[
        ("OTEL_EXPORTER_OTLP_HEADERS", "Api-Key=secret%20one, x-tenant = acme"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=two"),
    ]);
    assert_eq!(c.headers, [("x-tenant".to_owned(), "acme".to_owned()), ("api-key".to_owned(), "two".to_owned())]);
}

#[test]
fn resource_and_service_name() {
    let c = cfg(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment.name=dev%2C1")]);
    assert_eq!(c.service_name, "from-attrs");
    assert_eq!(c.resource_attributes[1], ("deployment.environment.name".to_owned(), "dev,1".to_owned()));
    let c = cfg(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"), ("OTEL_SERVICE_NAME", "b")]);
    assert_eq!(c.service_name, "b", "OTEL_SERVICE_NAME wins");
    let c = cfg(&[("OTEL_RESOURCE_ATTRIBUTES", "ok=1,broken")]);
    assert!(c.resource_attributes.is_empty(), "an invalid list is discarded whole");
    assert!(c.warnings[0].starts_with("OTEL_RESOURCE_ATTRIBUTES"));
}

#[test]
fn invalid_numbers_warn_and_use_defaults() {
    let c = cfg(&[
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ("OTEL_BSP_SCHEDULE_DELAY", "-1"),
        ("OTEL_BSP_EXPORT_TIMEOUT", "250"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100"),
        ("TRACEWIRE_SHUTDOWN_TIMEOUT_MS", "1.5"),
    ]);
    assert_eq!(c.timeout, Duration::from_secs(10));
    assert_eq!(c.batch.schedule_delay, Duration::from_secs(5));
    assert_eq!(c.batch.export_timeout, Duration::from_millis(250));
    assert_eq!(c.batch.max_queue_size, 2048);
    assert_eq!(c.batch.max_export_batch_size, 100);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(2));
    let vars: Vec<&str> = c.warnings.iter().map(|w| w.split(':').next().unwrap()).collect();
    assert_eq!(
        vars,
        [
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_BSP_SCHEDULE_DELAY",
            "TRACEWIRE_SHUTDOWN_TIMEOUT_MS",
            "OTEL_BSP_MAX_QUEUE_SIZE"
        ]
    );
    let c = cfg(&[("OTEL_BSP_MAX_QUEUE_SIZE", "10"), ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "20")]);
    assert_eq!(c.batch.max_export_batch_size, 10, "a batch never exceeds the queue");
    assert_eq!(cfg(&[("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "1500")]).timeout, Duration::from_millis(1500));
}

#[test]
fn samplers() {
    let cases: &[(&[(&str, &str)], Sampler, usize)] = &[
        (&[("OTEL_TRACES_SAMPLER", "always_on")], Sampler::AlwaysOn, 0),
        (&[("OTEL_TRACES_SAMPLER", "always_off")], Sampler::AlwaysOff, 0),
        (
            &[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0.25")],
            Sampler::TraceIdRatio(0.25),
            0,
        ),
        (&[("OTEL_TRACES_SAMPLER", "traceidratio")], Sampler::TraceIdRatio(1.0), 0),
        (
            &[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "1.5")],
            Sampler::ParentBasedTraceIdRatio(1.0),
            1,
        ),
        (&[("OTEL_TRACES_SAMPLER", "parentbased_always_off")], Sampler::ParentBasedAlwaysOff, 0),
        (&[("OTEL_TRACES_SAMPLER", "xray")], Sampler::ParentBasedAlwaysOn, 1),
    ];
    for (vars, want, warnings) in cases {
        let c = cfg(vars);
        assert_eq!(c.sampler, *want, "{vars:?}");
        assert_eq!(c.warnings.len(), *warnings, "{vars:?}: {:?}", c.warnings);
    }
}

#[test]
fn propagators_and_disabled() {
    let p = |v: &str| cfg(&[("OTEL_PROPAGATORS", v)]).propagators;
    assert_eq!(p("tracecontext"), Propagators { trace_context: true, baggage: false });
    assert_eq!(p("baggage, tracecontext"), Propagators { trace_context: true, baggage: true });
    assert_eq!(p("none"), Propagators { trace_context: false, baggage: false });
    let c = cfg(&[("OTEL_PROPAGATORS", "b3,tracecontext")]);
    assert!(c.propagators.trace_context && c.warnings[0].contains("b3"));

    assert!(cfg(&[("OTEL_SDK_DISABLED", "TRUE")]).disabled);
    assert!(!cfg(&[("OTEL_SDK_DISABLED", "false")]).disabled);
    let c = cfg(&[("OTEL_SDK_DISABLED", "yes")]);
    assert!(!c.disabled && c.warnings[0].starts_with("OTEL_SDK_DISABLED"));
}

#[test]
fn unknown_variables_are_ignored() {
    assert_eq!(cfg(&[("PATH", "/bin"), ("OTEL_SOMETHING_NEW", "1")]), cfg(&[]));
}

#[test]
fn context_activation_is_off_unless_turned_on() {
    assert!(!cfg(&[]).context_activation);
    assert!(!cfg(&[("TRACEWIRE_CONTEXT_ACTIVATION", "false")]).context_activation);
    assert!(cfg(&[("TRACEWIRE_CONTEXT_ACTIVATION", "TRUE")]).context_activation);
    let c = cfg(&[("TRACEWIRE_CONTEXT_ACTIVATION", "sometimes")]);
    assert!(!c.context_activation);
    assert!(c.warnings.iter().any(|w| w.contains("TRACEWIRE_CONTEXT_ACTIVATION")), "{:?}", c.warnings);
}

#[test]
fn without_context_activation_only_the_otel_current_context_is_left_alone() {
    use opentelemetry::trace::TraceContextExt;
    use tracing_subscriber::layer::SubscriberExt;
    for activation in [true, false] {
        let mut config = Config::default();
        config.context_activation = activation;
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let sink = exporter.clone();
        let pipeline = tracewire_telemetry::Pipeline::with_exporter(&config, Box::new(move || Ok(sink))).unwrap();
        let subscriber = tracing_subscriber::registry().with(pipeline.layer());
        tracing::subscriber::with_default(subscriber, || {
            let _s = tracewire_telemetry::stage_span!(RpcDispatch).entered();
            let ours = tracewire_telemetry::current_context();
            assert!(ours.span().span_context().is_valid(), "tracewire's helper sees the span");
            let otel = opentelemetry::Context::current();
            assert_eq!(otel.span().span_context().is_valid(), activation, "activation {activation}");
        });
        assert_eq!(pipeline.shutdown().unwrap().exported, 1);
    }
}

/// An exporter that cannot be built is a typed error: a header gRPC metadata cannot carry
/// (here a newline in its name, which `OTEL_EXPORTER_OTLP_HEADERS` percent-decodes) names
/// the header.
#[test]
fn a_header_the_exporter_cannot_send_is_a_typed_error_naming_it() {
    use tracewire_telemetry::{Error, ExporterError, Pipeline, PipelineError};
    let config =
        Config::from_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_HEADERS", "x-bad%0Aname=1")])
            .unwrap();
    match Pipeline::new(&config) {
        Err(Error::Pipeline(PipelineError::Exporter(ExporterError::Header { name, .. }))) => {
            assert_eq!(name, "x-bad\nname");
        }
        other => panic!("{other:?}"),
    }
}
