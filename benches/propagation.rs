//! traceparent parse/format: tracewire-context against opentelemetry_sdk's
//! `TraceContextPropagator` extract/inject through a `HashMap` carrier, in the same run.
//! Inputs: `tracewire_bench::fixtures::PropagationInputs`.
//!
//! Run: `cargo bench -p tracewire-benches --bench propagation` (add `-- --quick` for less).
//!
//! Latest results, 2026-11-23, `cargo bench -p tracewire-benches --bench propagation`
//! (criterion's estimate, 10 samples), opentelemetry_sdk 0.33.1.
//! Machine: 2-core AMD EPYC VM, 23 GiB, rustc 1.95.0 (59807616e 2026-04-14), bench profile.
//! The machine was shared with other agents' builds (load average 6-8 on 2 cores): absolute
//! figures are about 2-3x those of an idle run; compare the rows of one run with each other.
//!
//! | operation                               | tracewire | opentelemetry_sdk | ratio |
//! |-----------------------------------------|-----------|-------------------|-------|
//! | parse traceparent / `extract`           | 30.7 ns   | 629 ns            | 20.5x |
//! | format traceparent / `inject`           | 39.2 ns   | 674 ns            | 17.2x |
//! | full policy `extract` from a HashMap    | 199 ns    | 629 ns            | 3.2x  |
//! | `inject` into a HashMap                 | 229 ns    | 674 ns            | 2.9x  |
//!
//! Parsing and encoding allocate nothing (`crates/context/tests/alloc.rs`); the HashMap
//! rows include hashing, the fresh span id and the String values the map stores. On the
//! idle machine (`tracewire-bench compare`, docs/benchmarks.md) parse is 31x, format 21.5x.

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
