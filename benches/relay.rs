//! The relay against raw AEAD, in the same run: streaming 60 KiB records client -> relay
//! -> server (Noise over gRPC; both ends and the relay in this process) against a raw Noise
//! seal+open of the same record with the same suite (snow, ring resolver); and the
//! handshake (both ends attach, Noise IK). Set-up: `tracewire_bench::fixtures::{RelayStream,
//! RawAead}`.
//!
//! Run: `cargo bench -p tracewire-benches --bench relay`
//!
//! Latest results, 2026-11-23, `cargo bench -p tracewire-benches --bench relay`
//! (criterion's estimate per 60 KiB record), snow 0.10 (ring).
//! Machine: 2-core AMD EPYC VM, 23 GiB, rustc 1.95.0 (59807616e 2026-04-14), bench profile.
//! The machine was shared with other agents' builds (load average 6-8 on 2 cores): absolute
//! figures are about 2-3x those of an idle run; compare the rows of one run with each other.
//!
//! | measure                              | through the relay | raw seal+open | ratio |
//! |--------------------------------------|-------------------|---------------|-------|
//! | stream, AES-GCM, 60 KiB records      | 185 MiB/s         | 1.36 GiB/s    | 13%   |
//! | stream, ChaChaPoly, 60 KiB records   | 117 MiB/s         | 492 MiB/s     | 24%   |
//! | handshake (attach both ends, IK)     | 4.2 ms            |               |       |
//!
//! The 70% goal is not met. The streaming rows suffer most from the shared CPU: three
//! parties (client, relay, server) need the 2 cores at once; on the idle machine `compare`
//! measured 0.75 GB/s against 2.97 GB/s (AES-GCM, 25%) and 0.59 against 1.18 (ChaChaPoly,
//! 50%). Each record crosses two gRPC hops with protobuf framing and copies
//! (docs/benchmarks.md, "What limits the goals not met"). 256 KiB HTTP/2 frames and a codec
//! that copies each record once (issue [8/9]) cut the relay's CPU per byte by about 15-20% in
//! `tracewire-bench compare --only relay` A/B runs; this table predates them.

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
