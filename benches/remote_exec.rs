//! Remote exec of `true` through tracewire's exec-server, on direct loopback gRPC and
//! through the Noise relay (both servers in this process, tracing off), against a local
//! spawn+wait of the same command, in the same run; and the time from the Start call to the
//! first Output event of `echo hi`. Set-up: `tracewire_bench::fixtures::ExecFixture`.
//!
//! Run: `cargo bench -p tracewire-benches --bench remote_exec`
//!
//! The goals are `tracewire-bench compare`'s rows (docs/benchmarks.md), p50 of all
//! variants interleaved, full run of 2026-12-06: direct 1.48x local (goal <= 1.5x, met) and
//! via the relay 1.68x (not met); tracing on against off, direct +4.8% and via the relay
//! +7.3% (goal <= 3%, not met).

use std::time::{Duration, Instant};

use criterion::Criterion;
use tracewire_bench::fixtures::{ExecFixture, argv, exec_true, runtime, spawn_true_locally};
use tracewire_exec::Event;

fn bench(c: &mut Criterion) {
    let rt = runtime().expect("tokio runtime");
    let fx = rt.block_on(ExecFixture::start()).expect("relay and exec-servers");
    let mut g = c.benchmark_group("remote_exec_true");
    g.bench_function("local_spawn_wait", |b| b.iter(|| rt.block_on(spawn_true_locally()).expect("local `true`")));
    g.bench_function("direct_grpc", |b| b.iter(|| rt.block_on(exec_true(&fx.direct)).expect("direct `true`")));
    g.bench_function("via_relay", |b| b.iter(|| rt.block_on(exec_true(&fx.relayed)).expect("relayed `true`")));
    g.finish();

    // From the Start call to the first Output event of `echo hi` (the rest drained, untimed).
    let mut g = c.benchmark_group("remote_exec_first_output");
    for (name, client) in [("direct_grpc", &fx.direct), ("via_relay", &fx.relayed)] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t0 = Instant::now();
                        let mut p = client.start(argv(&["echo", "hi"])).await.expect("start `echo hi`");
                        let mut first = None;
                        while let Some(e) = p.next_event().await {
                            if first.is_none() && matches!(e, Event::Output { .. }) {
                                first = Some(t0.elapsed());
                            }
                        }
                        total += first.expect("`echo hi` printed");
                    }
                    total
                })
            });
        });
    }
    g.finish();
}

tracewire_benches::main!(bench);
