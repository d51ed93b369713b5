//! Relay streaming throughput (client -> relay -> server, 60 KiB messages, Noise with the
//! suite of the row) against plain TCP forwarding of the same bytes through the same two
//! loopback hops (a client, a forwarding task, a server; no encryption, no framing, no
//! HTTP/2): what any relay over TCP could at best move here. Rounds alternate (TCP, then
//! each suite), best of each; the CPU time of the process (every thread) per byte of both
//! sides and the raw Noise seal+open rate of the suite (one thread) are in the note, with
//! the CPU floor they give any Noise relay here (TCP's CPU per byte plus seal+open's) and so
//! the highest ratio reachable while the machine's CPU is the limit. Set-up:
//! [`crate::fixtures::RelayStream`], [`crate::fixtures::tcp_two_hops`] and
//! [`crate::fixtures::RawAead`], as in the criterion bench `benches/relay.rs`.

use std::time::{Duration, Instant};

use anyhow::Result;
use tracewire_relay::Suite;

use crate::fixtures::{RawAead, RelayStream, process_cpu, runtime, start_relay, tcp_two_hops};
use crate::{Row, Scale};

#[allow(clippy::cast_precision_loss)]
fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

/// Wall-clock GB/s of `work` and the CPU time (all threads) it used per byte, in ns.
#[allow(clippy::cast_precision_loss)]
async fn timed<F: std::future::Future<Output = Result<usize>>>(work: F) -> Result<(f64, f64)> {
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let bytes = work.await?;
    let wall = t0.elapsed();
    let cpu = process_cpu().saturating_sub(cpu0).as_secs_f64() * 1e9 / bytes as f64;
    Ok((gbps(bytes, wall), cpu))
}

/// The raw seal+open rate of `suite` on this thread, GB/s of wall-clock time, and its CPU
/// time per byte in ns (the process's: nothing else in it runs meanwhile), which does not
/// count the time the thread waited for a core on a loaded machine.
#[allow(clippy::cast_precision_loss)]
fn raw_aead(suite: Suite, bytes: usize) -> Result<(f64, f64)> {
    let mut aead = RawAead::new(suite)?;
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let mut done = 0;
    while done < bytes {
        done += aead.seal_open()?;
    }
    let cpu = process_cpu().saturating_sub(cpu0).as_secs_f64() * 1e9 / done as f64;
    Ok((gbps(done, t0.elapsed()), cpu))
}

/// The best (highest GB/s) of a side's rounds, and its CPU per byte.
#[derive(Clone, Copy)]
struct Best {
    gbps: f64,
    cpu: f64,
}

impl Best {
    fn keep(&mut self, (gbps, cpu): (f64, f64)) {
        if gbps > self.gbps {
            *self = Self { gbps, cpu };
        }
    }
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let bytes: usize = scale.pick(64 << 20, 256 << 20);
    let rounds = scale.pick(2, 3);
    let n = bytes / tracewire_relay::MAX_RECORD_PLAINTEXT;
    let suites = [Suite::AesGcm, Suite::ChaChaPoly];
    let rt = runtime()?;
    rt.block_on(async {
        let relay = start_relay().await?;
        let mut streams = Vec::new();
        for (i, suite) in suites.into_iter().enumerate() {
            streams.push(RelayStream::open(relay, &format!("bench-stream{i}"), suite).await?);
        }
        let zero = Best { gbps: 0.0, cpu: 0.0 };
        let (mut tcp, mut relayed) = (zero, [zero; 2]);
        for _ in 0..rounds {
            tcp.keep(timed(tcp_two_hops(n)).await?);
            for (best, stream) in relayed.iter_mut().zip(&mut streams) {
                best.keep(timed(stream.stream(n)).await?);
            }
        }
        let mut rows = Vec::new();
        for (suite, best) in suites.into_iter().zip(relayed) {
            let (raw, raw_cpu) = raw_aead(suite, bytes)?;
            // Any Noise relay over these hops does TCP's work and seals and opens every
            // byte: on the same CPU, at most TCP's rate times TCP's share of that sum.
            let floor = tcp.cpu + raw_cpu;
            let mut r = Row::higher_is_better(
                &format!("relay_throughput.{suite:?}.vs_tcp"),
                best.gbps,
                tcp.gbps,
                "GB/s",
                0.8,
                &format!(
                    "peer = plain TCP forwarding of the same 60 KiB messages through the same two loopback hops (no crypto, no framing); CPU {:.2} vs {:.2} ns/B (process, every thread); raw Noise seal+open of the suite on one thread {raw:.2} GB/s ({raw_cpu:.2} ns/B of CPU); CPU floor of any Noise relay here (TCP's + seal+open) {floor:.2} ns/B: at most {:.2}x TCP when CPU-bound; best of {rounds} alternating rounds of {} MiB",
                    best.cpu,
                    tcp.cpu,
                    tcp.cpu / floor,
                    bytes >> 20
                ),
            );
            r.goal = ">= 80% of TCP".into();
            rows.push(r);
        }
        Ok(rows)
    })
}
