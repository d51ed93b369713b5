//! Relay streaming throughput (client -> relay -> server, 60 KiB messages) against a raw
//! Noise seal+open of the same bytes with the same cipher suite. Set-up:
//! [`crate::fixtures::RelayStream`] and [`crate::fixtures::RawAead`], as in the criterion
//! bench `benches/relay.rs`.

use std::time::{Duration, Instant};

use anyhow::Result;
use tracewire_relay::Suite;

use crate::fixtures::{RawAead, RelayStream, runtime, start_relay};
use crate::{Row, Scale};

#[allow(clippy::cast_precision_loss)]
fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
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

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let bytes: usize = scale.pick(64 << 20, 256 << 20);
    let rt = runtime()?;
    rt.block_on(async {
        let relay = start_relay().await?;
        let mut rows = Vec::new();
        for (i, suite) in [Suite::AesGcm, Suite::ChaChaPoly].into_iter().enumerate() {
            let raw = raw_aead(suite, bytes)?;
            let mut stream = RelayStream::open(relay, &format!("bench-stream{i}"), suite).await?;
            let n = bytes / tracewire_relay::MAX_RECORD_PLAINTEXT;
            let t0 = Instant::now();
            let got = stream.stream(n).await?;
            let relayed = gbps(got, t0.elapsed());
            let mut r = Row::higher_is_better(
                &format!("relay_throughput.{suite:?}"),
                relayed,
                raw,
                "GB/s",
                0.7,
                "peer = raw Noise seal+open of the same 60 KiB records (snow, ring resolver)",
            );
            r.goal = ">= 70% of raw".into();
            rows.push(r);
        }
        Ok(rows)
    })
}
