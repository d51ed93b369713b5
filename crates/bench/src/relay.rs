//! Relay streaming throughput (client -> relay -> server, 60 KiB messages) against a raw
//! Noise seal+open of the same bytes with the same cipher suite.

use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use tracewire_relay::framing::pair_for_tests;
use tracewire_relay::{Keypair, MAX_RECORD_PLAINTEXT, NoiseConfig, RelayConfig, RelayEndpoint, RelayServer, Suite};

use crate::{Row, Scale};

#[allow(clippy::cast_precision_loss)]
fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn raw_aead(suite: Suite, bytes: usize) -> Result<f64> {
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig { suite, ..NoiseConfig::default() }, 64, bytes)?;
    let msg = vec![7u8; MAX_RECORD_PLAINTEXT];
    let t0 = Instant::now();
    let mut done = 0;
    while done < bytes {
        for f in seal.seal(&msg, "")? {
            std::hint::black_box(open.push(f)?);
        }
        done += msg.len();
    }
    Ok(gbps(done, t0.elapsed()))
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let bytes: usize = scale.pick(64 << 20, 256 << 20);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let (listener, addr) = RelayServer::bind("127.0.0.1:0".parse()?).await?;
        tokio::spawn(RelayServer::new(RelayConfig::default()).serve(listener, std::future::pending()));
        let mut rows = Vec::new();
        for (i, suite) in [Suite::AesGcm, Suite::ChaChaPoly].into_iter().enumerate() {
            let raw = raw_aead(suite, bytes)?;
            let mut ep = RelayEndpoint::new(addr.to_string(), format!("bench-stream{i}"));
            ep.noise.suite = suite;
            let kp = Keypair::generate()?;
            let key = kp.public;
            let server_ep = ep.clone();
            let server = tokio::spawn(async move { tracewire_relay::accept(&server_ep, &kp).await });
            tokio::time::sleep(Duration::from_millis(50)).await;
            let client = tracewire_relay::connect(&ep, &key).await?;
            let mut server = server.await??;
            let chunk = Bytes::from(vec![7u8; MAX_RECORD_PLAINTEXT]);
            let tx = client.link.tx.clone();
            let n = bytes / chunk.len();
            let t0 = Instant::now();
            let sender = tokio::spawn(async move {
                for _ in 0..n {
                    if tx.send(chunk.clone()).await.is_err() {
                        break;
                    }
                }
            });
            let mut got = 0;
            while got < n * MAX_RECORD_PLAINTEXT {
                match server.link.rx.recv().await {
                    Some(m) => got += m.len(),
                    None => anyhow::bail!("the relay stream ended after {got} bytes"),
                }
            }
            let relayed = gbps(got, t0.elapsed());
            sender.await?;
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
