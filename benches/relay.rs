//! The relay against plain TCP forwarding, in the same run: streaming 60 KiB records client
//! -> relay -> server (Noise over gRPC; both ends and the relay in this process), per
//! suite, against the same bytes through the same two loopback hops with no encryption, no
//! framing and no HTTP/2 (a forwarding task between two TCP connections); a raw Noise
//! seal+open of the same record (snow, ring resolver) for reference; and the handshake
//! (both ends attach, Noise IK). Set-up: `tracewire_bench::fixtures::{RelayStream,
//! tcp_two_hops, RawAead}`.
//!
//! Run: `cargo bench -p tracewire-benches --bench relay`
//!
//! Latest results: `tracewire-bench compare` (full run of 2026-12-06, docs/benchmarks.md):
//! AES-GCM 44% and ChaChaPoly 32% of plain TCP forwarding (goal 80%, not met; CPU 2.57 and
//! 3.54 ns/B against 0.82; TCP's CPU plus raw seal+open's bounds any Noise relay here at
//! 50% and 30%).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tracewire_bench::fixtures::{RawAead, RelayStream, runtime, start_relay, tcp_two_hops};
use tracewire_relay::{MAX_RECORD_PLAINTEXT, Suite};

fn throughput(c: &mut Criterion) {
    let rt = runtime().expect("tokio runtime");
    let relay = rt.block_on(start_relay()).expect("relay");
    let mut g = c.benchmark_group("relay_stream");
    g.throughput(Throughput::Bytes(MAX_RECORD_PLAINTEXT as u64));
    g.bench_function("plain_tcp_two_hops", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let n = usize::try_from(iters).expect("iterations fit in usize");
                let t0 = Instant::now();
                tcp_two_hops(n).await.expect("TCP forwarding");
                t0.elapsed()
            })
        });
    });
    for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
        let mut aead = RawAead::new(suite).expect("Noise session");
        g.bench_function(format!("raw_aead_seal_open/{suite:?}"), |b| {
            b.iter(|| aead.seal_open().expect("seal and open"));
        });
        let mut stream =
            rt.block_on(RelayStream::open(relay, &format!("bench-stream-{suite:?}"), suite)).expect("relay stream");
        g.bench_function(format!("through_relay/{suite:?}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let n = usize::try_from(iters).expect("iterations fit in usize");
                    let t0 = Instant::now();
                    stream.stream(n).await.expect("relay stream");
                    t0.elapsed()
                })
            });
        });
    }
    g.finish();
}

fn handshake(c: &mut Criterion) {
    let rt = runtime().expect("tokio runtime");
    let relay = rt.block_on(start_relay()).expect("relay");
    let mut g = c.benchmark_group("relay_handshake");
    let mut session = 0u64;
    g.bench_function("attach_both_ends_ik/AesGcm", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    session += 1;
                    let t0 = Instant::now();
                    let stream = RelayStream::open(relay, &format!("bench-hs-{session}"), Suite::AesGcm)
                        .await
                        .expect("handshake");
                    total += t0.elapsed();
                    drop(stream);
                }
                total
            })
        });
    });
    g.finish();
}

tracewire_benches::main!(throughput, handshake);
