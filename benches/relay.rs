//! The relay against raw AEAD, in the same run: streaming 60 KiB records client -> relay
//! -> server (Noise over gRPC; both ends and the relay in this process) against a raw Noise
//! seal+open of the same record with the same suite (snow, ring resolver); and the
//! handshake (both ends attach, Noise IK). Set-up: `tracewire_bench::fixtures::{RelayStream,
//! RawAead}`.
//!
//! Run: `cargo bench -p tracewire-benches --bench relay`
//!
//! Latest results, 2026-12-02 (the relay and both ends speak gRPC over hyper directly,
//! `crates/relay/src/wire.rs`), `cargo bench -p tracewire-benches --bench relay`
//! (criterion's estimate per 60 KiB record), snow 0.10 (ring).
//! Machine: 2-core AMD EPYC VM, 23 GiB, rustc 1.95.0 (59807616e 2026-04-14), bench profile,
//! otherwise idle.
//!
//! | measure                              | through the relay | raw seal+open | ratio |
//! |--------------------------------------|-------------------|---------------|-------|
//! | stream, AES-GCM, 60 KiB records      | 1.20 GiB/s        | 3.63 GiB/s    | 33%   |
//! | stream, ChaChaPoly, 60 KiB records   | 821 MiB/s         | 1.01 GiB/s    | 79%   |
//! | handshake (attach both ends, IK)     | 1.96 ms           |               |       |
//!
//! ChaChaPoly meets the 70% goal; AES-GCM cannot over TCP here: two plain loopback TCP
//! hops with no encryption and no framing move about 1.9 GB/s on this machine
//! (`compare`'s note), under half of raw AES-GCM, and the relay reaches 50-70% of that
//! ceiling (docs/benchmarks.md, "What limits the goals not met"). Before the direct hyper
//! wire: 750 MiB/s and 563 MiB/s.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tracewire_bench::fixtures::{RawAead, RelayStream, runtime, start_relay};
use tracewire_relay::{MAX_RECORD_PLAINTEXT, Suite};

fn throughput(c: &mut Criterion) {
    let rt = runtime().expect("tokio runtime");
    let relay = rt.block_on(start_relay()).expect("relay");
    let mut g = c.benchmark_group("relay_stream");
    g.throughput(Throughput::Bytes(MAX_RECORD_PLAINTEXT as u64));
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
