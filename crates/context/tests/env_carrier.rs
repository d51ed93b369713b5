//! Environment variables as carriers, checked against the OpenTelemetry specification
//! ("Environment Variables as Context Propagation Carriers", `context/env-carriers.md`,
//! Release Candidate), section "Key Name Normalization", rule by rule; and against
//! propagators other than tracewire's own (opentelemetry_sdk's W3C trace context and baggage
//! propagators, and a B3-style multi-header propagator), since "the environment variable
//! carrier MUST be format-agnostic".
#![cfg(feature = "otel")]

use std::collections::HashMap;

use opentelemetry::propagation::text_map_propagator::FieldIter;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue, baggage::BaggageExt};
use tracewire_context::{CarrierMut, EnvCarrier, env_var_name, is_normalized_env_name};

/// (key as a propagator asks for it, the normalized variable name, the rule it exercises).
const TABLE: &[(&str, &str, &str)] = &[
    ("traceparent", "TRACEPARENT", "uppercase ASCII letters"),
    ("TRACEPARENT", "TRACEPARENT", "a normalized name is unchanged"),
    ("tracestate", "TRACESTATE", "uppercase ASCII letters"),
    ("baggage", "BAGGAGE", "uppercase ASCII letters"),
    ("x-b3-traceid", "X_B3_TRACEID", "the specification's own example"),
    ("uber-trace-id", "UBER_TRACE_ID", "'-' is not a letter, digit or underscore"),
    ("uberctx-tenant.id", "UBERCTX_TENANT_ID", "'.' too"),
    ("a b\tc", "A_B_C", "whitespace too"),
    ("key=value", "KEY_VALUE", "'=' too (it could not be in a name anyway)"),
    ("nul\0in", "NUL_IN", "NUL too"),
    ("clé", "CL_", "a non-ASCII letter is one character, replaced by one underscore"),
    ("日本", "__", "each non-ASCII character becomes one underscore"),
    ("ÀB", "_B", "non-ASCII uppercase is not an ASCII letter"),
    ("_private", "_PRIVATE", "underscores are kept"),
    ("1abc", "_1ABC", "a leading ASCII digit gets an underscore prefix"),
    ("9", "_9", "a lone digit too"),
    ("-1", "_1", "a leading non-digit replaced by '_' needs no prefix"),
    ("a1", "A1", "digits after the first character are kept"),
    ("", "_", "an empty key becomes a single underscore"),
    ("_", "_", "'_' is normalized"),
    ("mIxEd_Case-9", "MIXED_CASE_9", "all rules at once"),
];

#[test]
fn keys_normalize_as_the_specification_says() {
    for (key, expected, rule) in TABLE {
        assert_eq!(env_var_name(key), *expected, "{key:?}: {rule}");
        // "A normalized environment variable name is a non-empty environment variable name
        // that is unchanged by applying this normalization ... matches ^[A-Z_][A-Z0-9_]*$."
        assert!(is_normalized_env_name(expected), "{expected:?} is normalized");
        assert_eq!(env_var_name(expected), *expected, "normalizing is idempotent");
        let by_regex = !key.is_empty()
            && key.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
            && key.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        assert_eq!(is_normalized_env_name(key), by_regex, "{key:?}");
        assert_eq!(is_normalized_env_name(key), env_var_name(key) == *key && !key.is_empty(), "{key:?}");
    }
}

#[test]
fn get_reads_only_the_normalized_name() {
    // "if a propagator requests the key `x-b3-traceid`, the environment-specific `Get`
    // operation MUST normalize the requested key to `X_B3_TRACEID` and read the
    // `X_B3_TRACEID` environment variable. It MUST NOT read a non-normalized environment
    // variable named `x-b3-traceid`, even though that name normalizes to `X_B3_TRACEID`."
    let only_raw = EnvCarrier::from_vars([("x-b3-traceid", "raw")]);
    assert_eq!(EnvCarrier::get(&only_raw, "x-b3-traceid"), None);
    assert_eq!(only_raw.keys().count(), 0, "`Keys` MUST return only key names that are already normalized");
    let both = EnvCarrier::from_vars([("x-b3-traceid", "raw"), ("X_B3_TRACEID", "normalized")]);
    assert_eq!(EnvCarrier::get(&both, "x-b3-traceid"), Some("normalized"));
    assert_eq!(EnvCarrier::get(&both, "X-B3-TraceId"), Some("normalized"));
    for (key, expected, _) in TABLE {
        let env = EnvCarrier::from_vars([(*expected, "v")]);
        assert_eq!(EnvCarrier::get(&env, key), Some("v"), "{key:?} reads {expected}");
        assert_eq!(env.keys().collect::<Vec<_>>(), [*expected]);
    }
}

#[test]
fn set_writes_the_normalized_name_and_keeps_values_opaque() {
    let mut env = EnvCarrier::default();
    for (key, _, _) in TABLE {
        // "The environment variable carrier ... MUST treat values as opaque strings": a value
        // no propagation format would accept is carried as it is.
        env.set(key, "  not a traceparent; ünïcode = fine  ").unwrap();
    }
    let names: Vec<&str> = env.keys().collect();
    assert!(names.iter().all(|n| is_normalized_env_name(n)), "{names:?}");
    for (_, expected, _) in TABLE {
        assert_eq!(EnvCarrier::get(&env, expected), Some("  not a traceparent; ünïcode = fine  "));
    }
    // The one value no environment can hold.
    assert!(env.set("traceparent", "a\0b").is_err());
    let mut cmd = std::process::Command::new("true");
    assert!(cmd.set("x-b3-traceid", "a\0b").is_err());
}

/// A B3 multi-header propagator (the propagation format's own header names, lowercase with
/// dashes), small and independent of tracewire: the carrier must serve it as it serves W3C.
#[derive(Debug)]
struct B3Multi {
    fields: Vec<String>,
}

impl B3Multi {
    fn new() -> Self {
        Self { fields: ["x-b3-traceid", "x-b3-spanid", "x-b3-sampled"].map(String::from).to_vec() }
    }
}

impl TextMapPropagator for B3Multi {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        injector.set("x-b3-traceid", sc.trace_id().to_string());
        injector.set("x-b3-spanid", sc.span_id().to_string());
        injector.set("x-b3-sampled", if sc.is_sampled() { "1" } else { "0" }.to_owned());
    }
    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let parse = || {
            let trace = TraceId::from_hex(extractor.get("x-b3-traceid")?).ok()?;
            let span = SpanId::from_hex(extractor.get("x-b3-spanid")?).ok()?;
            let flags = if extractor.get("x-b3-sampled")? == "1" { TraceFlags::SAMPLED } else { TraceFlags::default() };
            Some(SpanContext::new(trace, span, flags, true, TraceState::NONE))
        };
        parse().map_or_else(|| cx.clone(), |sc| cx.with_remote_span_context(sc))
    }
    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

fn remote() -> Context {
    let sc = SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::from_key_value([("vendor", "v1")]).unwrap(),
    );
    Context::new().with_remote_span_context(sc).with_baggage([KeyValue::new("tenant", "acme")])
}

#[test]
fn any_text_map_propagator_round_trips_through_a_real_child_environment() {
    let propagators: Vec<(&str, Box<dyn TextMapPropagator>)> = vec![
        (
            "w3c trace context (opentelemetry_sdk)",
            Box::new(opentelemetry_sdk::propagation::TraceContextPropagator::new()),
        ),
        ("w3c baggage (opentelemetry_sdk)", Box::new(opentelemetry_sdk::propagation::BaggagePropagator::new())),
        ("b3 multi-header", Box::new(B3Multi::new())),
        ("tracewire", Box::new(tracewire_context::otel::TraceContextPropagator::new())),
    ];
    for (name, propagator) in propagators {
        let cx = remote();
        let mut env = EnvCarrier::default();
        propagator.inject_context(&cx, &mut env);
        assert!(env.keys().count() > 0, "{name}: injected nothing");
        assert!(env.keys().all(is_normalized_env_name), "{name}: {:?}", env.keys().collect::<Vec<_>>());
        // A real child gets exactly these variables (and nothing of the parent's: env_clear)
        // and prints its environment back; the parent extracts from what the child saw.
        let mut cmd = std::process::Command::new("env");
        cmd.env_clear();
        env.apply_to(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{name}");
        let seen: HashMap<String, String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let child = EnvCarrier::from_vars(&seen);
        assert_eq!(child, env, "{name}: the child saw what was set");
        let extracted = propagator.extract(&child);
        if name.contains("baggage") {
            assert_eq!(extracted.baggage().get("tenant").map(|v| v.as_str().to_owned()), Some("acme".to_owned()));
        } else {
            let span = extracted.span();
            let sc = span.span_context();
            assert_eq!(sc.trace_id(), cx.span().span_context().trace_id(), "{name}");
            assert_eq!(sc.span_id(), cx.span().span_context().span_id(), "{name}");
            assert!(sc.is_remote() && sc.is_sampled(), "{name}");
        }
    }
}
