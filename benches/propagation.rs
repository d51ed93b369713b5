//! HEADER
use std::collections::HashMap;
use std::hint::black_box;

use criterion::Criterion;
use tracewire_bench::fixtures::{PropagationInputs, TRACEPARENT};
use tracewire_context::{TraceParent, extract};

fn parse(c: &mut Criterion) {
    let inputs = PropagationInputs::default();
    let mut g = c.benchmark_group("traceparent_parse");
    g.bench_function("tracewire/parse", |b| b.iter(|| TraceParent::parse(black_box(TRACEPARENT))));
    g.bench_function("tracewire/extract_policy", |b| b.iter(|| extract(black_box(&inputs.headers))));
    g.bench_function("otel_sdk/extract", |b| b.iter(|| inputs.sdk_extract()));
    g.finish();
}

fn format(c: &mut Criterion) {
    let inputs = PropagationInputs::default();
    let mut g = c.benchmark_group("traceparent_format");
    g.bench_function("tracewire/encode", |b| b.iter(|| black_box(&inputs.traceparent).encode()));
    g.bench_function("tracewire/inject_hashmap", |b| {
        let mut out: HashMap<String, String> = HashMap::with_capacity(4);
        b.iter(|| {
            out.clear();
            black_box(&inputs.context).inject(None, &mut out)
        });
    });
    g.bench_function("otel_sdk/inject", |b| {
        let mut out: HashMap<String, String> = HashMap::with_capacity(4);
        b.iter(|| inputs.sdk_inject(&mut out));
    });
    g.finish();
}

tracewire_benches::main!(parse, format);
