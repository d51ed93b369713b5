//! Relay streaming throughput (client -> relay -> server, 60 KiB messages) against a raw
//! Noise seal+open of the same bytes with the same cipher suite. Set-up:
//! [`crate::fixtures::RelayStream`] and [`crate::fixtures::RawAead`], as in the criterion
//! bench `benches/relay.rs`.

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
async fn timed<F: std::future::Future<Output = Result<usize>>>(work: F) -> Result<(f64, Option<f64>)> {
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let bytes = work.await?;
    let wall = t0.elapsed();
    let cpu = process_cpu().zip(cpu0).map(|(b, a)| (b.saturating_sub(a)).as_secs_f64() * 1e9 / bytes as f64);
    Ok((gbps(bytes, wall), cpu))
}

fn raw_aead(suite: Suite, bytes: usize) -> Result<f64> {
    let mut aead = RawAead::new(suite)?;
    let t0 = Instant::now();
    let mut done = 0;
    while done < bytes {
        done += aead.seal_open()?;
    }
    Ok(gbps(done, t0.elapsed()))
}

fn cpu_note(cpu: Option<f64>) -> String {
    cpu.map_or_else(|| "n/a".into(), |c| format!("{c:.2}"))
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let bytes: usize = scale.pick(64 << 20, 256 << 20);
    let n = bytes / tracewire_relay::MAX_RECORD_PLAINTEXT;
    let rt = runtime()?;
    rt.block_on(async {
        let relay = start_relay().await?;
        // What two loopback TCP hops alone move here: the ceiling of any relay over TCP.
        let (floor, floor_cpu) = timed(tcp_two_hops(n)).await?;
        let mut rows = Vec::new();
        for (i, suite) in [Suite::AesGcm, Suite::ChaChaPoly].into_iter().enumerate() {
            let raw = raw_aead(suite, bytes)?;
            let mut stream = RelayStream::open(relay, &format!("bench-stream{i}"), suite).await?;
            let (relayed, cpu) = timed(stream.stream(n)).await?;
            let mut r = Row::higher_is_better(
                &format!("relay_throughput.{suite:?}"),
                relayed,
                raw,
                "GB/s",
                0.7,
                &format!(
                    "peer = raw Noise seal+open of the same 60 KiB records (snow, ring resolver, reused buffers); \
                     CPU {} ns/B through the relay; two plain TCP hops, the ceiling of any relay over TCP, move \
                     {floor:.2} GB/s here ({} ns/B; {:.0}% of raw)",
                    cpu_note(cpu),
                    cpu_note(floor_cpu),
                    floor / raw * 100.0,
                ),
            );
            r.goal = ">= 70% of raw".into();
            rows.push(r);
        }
        Ok(rows)
    })
}
