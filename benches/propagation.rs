//! traceparent parse/format: tracewire-context against opentelemetry_sdk's
//! `TraceContextPropagator` extract/inject, in the same run.
//!
//! Run: `cargo bench -p tracewire-benches --bench propagation`
//!
//! Latest results, 2026-11-23, 2-core AMD EPYC VM (x86_64, SSE2 path), rustc 1.95,
//! opentelemetry_sdk 0.33.1 (median of criterion's estimate):
//!
//! | operation                               | tracewire | opentelemetry_sdk | ratio |
//! |-----------------------------------------|-----------|-------------------|-------|
//! | parse traceparent / `extract`           | 12.7 ns   | 266.7 ns          | 21.0x |
//! | format traceparent / `inject`           | 13.0 ns   | 292.5 ns          | 22.5x |
//! | full policy `extract` from a HashMap    | 102 ns    | 266.7 ns          | 2.6x  |
//! | `inject` into a HashMap                 | 90.7 ns   | 292.5 ns          | 3.2x  |
//!
//! Parsing and encoding allocate nothing (`crates/context/tests/alloc.rs`); the HashMap
//! rows include hashing, the fresh span id and the String values the map stores.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator as SdkPropagator;
use tracewire_context::{TraceContext, TraceParent, extract, otel};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("traceparent_parse");
    let headers: HashMap<String, String> = [("traceparent".to_owned(), TP.to_owned())].into();
    let sdk = SdkPropagator::new();
    g.bench_function("tracewire/parse", |b| b.iter(|| TraceParent::parse(black_box(TP))));
    g.bench_function("tracewire/extract_policy", |b| b.iter(|| extract(black_box(&headers))));
    g.bench_function("otel_sdk/extract", |b| b.iter(|| sdk.extract(black_box(&headers))));
    g.finish();
}

fn format(c: &mut Criterion) {
    let mut g = c.benchmark_group("traceparent_format");
    let ctx = TraceContext::new_root(true);
    let tp = ctx.traceparent();
    let cx = Context::new().with_remote_span_context(otel::to_span_context(&ctx, false));
    let sdk = SdkPropagator::new();
    g.bench_function("tracewire/encode", |b| b.iter(|| black_box(&tp).encode()));
    g.bench_function("tracewire/inject_hashmap", |b| {
        let mut out: HashMap<String, String> = HashMap::with_capacity(4);
        b.iter(|| {
            out.clear();
            black_box(&ctx).inject(None, &mut out)
        });
    });
    g.bench_function("otel_sdk/inject", |b| {
        let mut out: HashMap<String, String> = HashMap::with_capacity(4);
        b.iter(|| {
            out.clear();
            sdk.inject_context(black_box(&cx), &mut out);
        });
    });
    g.finish();
}

criterion_group!(benches, parse, format);
criterion_main!(benches);
