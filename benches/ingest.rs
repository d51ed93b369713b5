//! Collector ingest: one OTLP/gRPC export request of 512 spans (6 attributes each, traces
//! of 16) sent and acknowledged by tracewire's embedded receiver (its own runtime, 2
//! workers) and by rotel-agent with its blackhole exporter (its own process), in the same
//! run; one sender, one request at a time. Not the same work: tracewire keeps the request's
//! bytes and decodes them when asked, rotel-agent decodes on arrival (see below). rotel-agent is measured when installed
//! (`./scripts/setup-test-deps.sh`). Set-up: `tracewire_bench::fixtures::{start_receiver,
//! RotelBlackhole, export_request}`.
//!
//! Run: `cargo bench -p tracewire-benches --bench ingest`
//!
//! Under load and with both sides decoding every request into their span model, the
//! figures are `tracewire-bench compare`'s (docs/benchmarks.md): `collector_ingest.decoded`
//! 0.85x rotel-agent (goal 1x, not met: tracewire decodes into `SpanRecord`s when asked,
//! after the load, 43% of its time, about 38 allocations per span); `collector_ingest.sqlite`
//! 153,302 spans/s stored (goal 100k/s, met; no peer). Full run of 2026-12-06.

use criterion::{Criterion, Throughput};
use tracewire_bench::fixtures::{INGEST_BATCH, RotelBlackhole, export_request, otlp_client, runtime, start_receiver};

fn bench(c: &mut Criterion) {
    let client_rt = runtime().expect("tokio runtime");
    // tracewire's receiver on its own runtime (2 workers), as in the collector.
    let server_rt = runtime().expect("tokio runtime");
    let (ours, store) = start_receiver(&server_rt, 500_000).expect("receiver");
    // rotel-agent when installed (./scripts/setup-test-deps.sh); else only ours is measured.
    let rotel = RotelBlackhole::start().map_err(|e| eprintln!("rotel-agent not measured: {e:#}")).ok();

    let request = export_request(0);
    let mut g = c.benchmark_group("collector_ingest_512_spans");
    g.throughput(Throughput::Elements(INGEST_BATCH as u64));
    let targets =
        [Some(("tracewire_receiver", ours.as_str())), rotel.as_ref().map(|r| ("rotel_agent_blackhole", r.endpoint()))];
    for (name, endpoint) in targets.into_iter().flatten() {
        let mut client = client_rt.block_on(otlp_client(endpoint)).expect("OTLP client");
        g.bench_function(name, |b| {
            b.iter(|| client_rt.block_on(client.export(request.clone())).expect("export"));
        });
    }
    g.finish();
    assert!(store.received() > 0, "the receiver kept nothing");
}

tracewire_benches::main!(bench);
