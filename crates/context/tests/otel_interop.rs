//! Interop with opentelemetry_sdk's own `TraceContextPropagator`, in both directions.
#![cfg(feature = "otel")]

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator as SdkPropagator};
use tracewire_context::otel::{TraceContextPropagator, from_span_context, to_span_context};
use tracewire_context::{Baggage, TraceCarrier, TraceContext, extract};

fn sdk_extract(headers: &HashMap<String, String>) -> SpanContext {
    SdkPropagator::new().extract(headers).span().span_context().clone()
}

#[test]
fn what_we_format_the_sdk_extracts_identically() {
    for sampled in [true, false] {
        let mut ctx = TraceContext::new_root(sampled);
        ctx.tracestate.insert("rojo", "00f067aa0ba902b7").unwrap();
        ctx.tracestate.insert("congo", "t61rcWkgMzE").unwrap();
        let mut headers = HashMap::new();
        ctx.inject(None, &mut headers).unwrap();

        let sc = sdk_extract(&headers);
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(sc.trace_id().to_bytes(), ctx.trace_id.to_bytes());
        assert_eq!(sc.span_id().to_bytes(), ctx.span_id.to_bytes());
        assert_eq!(sc.is_sampled(), sampled);
        assert_eq!(sc.trace_state().header(), ctx.tracestate.header());
        // Our SpanContext conversion agrees (the SDK only keeps the sampled bit).
        let ours = to_span_context(&ctx, true);
        assert_eq!(ours.trace_id(), sc.trace_id());
        assert_eq!(ours.span_id(), sc.span_id());
        assert_eq!(ours.trace_flags() & TraceFlags::SAMPLED, sc.trace_flags());
        assert_eq!(ours.trace_state().header(), sc.trace_state().header());
    }
}

#[test]
fn what_the_sdk_injects_we_parse_identically() {
    for flags in [TraceFlags::SAMPLED, TraceFlags::NOT_SAMPLED] {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            flags,
            false,
            "a=1,b=2".parse::<TraceState>().unwrap(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut headers: HashMap<String, String> = HashMap::new();
        SdkPropagator::new().inject_context(&cx, &mut headers);

        let e = extract(&headers);
        assert!(e.continued());
        assert_eq!(e.context.trace_id.to_bytes(), sc.trace_id().to_bytes());
        assert_eq!(e.remote_parent.unwrap().to_bytes(), sc.span_id().to_bytes());
        assert_eq!(e.context.flags.is_sampled(), flags.is_sampled());
        assert_eq!(e.context.tracestate.header(), "a=1,b=2");
        let back = from_span_context(&sc).unwrap();
        assert_eq!(back.span_id.to_bytes(), sc.span_id().to_bytes());
        assert_eq!(back.tracestate.header(), "a=1,b=2");
    }
}

#[test]
fn our_propagator_replaces_the_sdk_ones() {
    let ours = TraceContextPropagator::new();
    assert_eq!(ours.fields().collect::<Vec<_>>(), ["traceparent", "tracestate", "baggage"]);

    // Inject through opentelemetry's API with baggage, read back with the SDK's propagators.
    let ctx = TraceContext::new_root(true);
    let mut bag = opentelemetry::baggage::Baggage::new();
    bag.insert("user", "alice smith");
    let cx = Context::new().with_remote_span_context(to_span_context(&ctx, true)).with_baggage(bag);
    let mut headers: HashMap<String, String> = HashMap::new();
    ours.inject_context(&cx, &mut headers);
    assert_eq!(headers["traceparent"], ctx.traceparent().to_string());
    assert_eq!(headers["baggage"], "user=alice%20smith");
    let sdk_bag = BaggagePropagator::new().extract(&headers);
    assert_eq!(sdk_bag.baggage().get("user").map(opentelemetry::StringValue::as_str), Some("alice smith"));

    // Extract: same span context as the SDK's, and our stricter rules where they differ.
    let cx = ours.extract(&headers);
    let (mine, sdk) = (cx.span().span_context().clone(), sdk_extract(&headers));
    assert_eq!((mine.trace_id(), mine.span_id(), mine.is_remote()), (sdk.trace_id(), sdk.span_id(), sdk.is_remote()));
    assert_eq!(mine.trace_flags() & TraceFlags::SAMPLED, sdk.trace_flags());
    // The Level 2 random flag survives with us; the SDK keeps only the sampled bit.
    assert_eq!(mine.trace_flags().to_u8(), 0x03);
    assert_eq!(cx.baggage().get("user").map(opentelemetry::StringValue::as_str), Some("alice smith"));
    let mut bad = headers.clone();
    bad.insert("traceparent".into(), ctx.traceparent().to_string().replace("-0", "-0 "));
    assert!(!ours.extract(&bad).span().span_context().is_valid());
}

#[test]
fn carriers_built_by_us_work_with_otel_injectors() {
    let e = extract(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]);
    let mut c = TraceCarrier::default();
    let mut b = Baggage::new();
    b.insert("k", "v").unwrap();
    e.context.inject(Some(&b), &mut c).unwrap();
    let map: HashMap<String, String> =
        [("traceparent".to_owned(), c.traceparent.clone()), ("baggage".to_owned(), c.baggage.clone())].into();
    let cx = TraceContextPropagator::new().extract(&map);
    assert_eq!(cx.span().span_context().span_id().to_bytes(), e.context.span_id.to_bytes());
    assert_eq!(cx.baggage().len(), 1);
}
