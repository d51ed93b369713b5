//! Collector ingest: spans per second that tracewire's embedded OTLP/gRPC receiver accepts,
//! against rotel-agent (blackhole exporter: it decodes and drops) on the same machine, in
//! the same run, with the same load: 4 concurrent senders of 512-span requests (6
//! attributes per span, as tracewire's stage spans carry) over loopback, alternating, best
//! of two rounds each. Each receiver runs on its own 2 worker threads (rotel-agent in its
//! own process); the senders share the 2 cores with it, as a co-located collector would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fixtures::{INGEST_BATCH as BATCH, RotelBlackhole, export_request, otlp_client, runtime, start_receiver};
use crate::{Row, Scale};
use anyhow::Result;

const SENDERS: usize = 4;

/// Spans per second acknowledged by the receiver at `endpoint`.
fn load(rt: &tokio::runtime::Runtime, endpoint: &str, seconds: f64) -> Result<f64> {
    rt.block_on(async {
        let sent = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for s in 0..SENDERS {
            let mut client = otlp_client(endpoint).await?;
            let sent = Arc::clone(&sent);
            let req = export_request(s as u64);
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    client.export(req.clone()).await?;
                    sent.fetch_add(BATCH as u64, Ordering::Relaxed);
                }
                Ok::<_, tonic::Status>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = sent.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
        Ok(rate)
    })
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let client_rt = runtime()?;

    // tracewire's receiver, on its own runtime.
    let server_rt = runtime()?;
    let (ours, store) = start_receiver(&server_rt, 500_000)?;

    // rotel-agent, in its own process, stopped by its pid (when dropped).
    let rotel = RotelBlackhole::start()?;
    let theirs = rotel.endpoint();
    let seconds = scale.pick(1.0, 3.0);
    load(&client_rt, &ours, 0.3)?;
    load(&client_rt, theirs, 0.3)?;
    // Alternate, twice each, and keep each side's best.
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for _ in 0..2 {
        a = a.max(load(&client_rt, &ours, seconds)?);
        b = b.max(load(&client_rt, theirs, seconds)?);
    }
    anyhow::ensure!(store.received() > 0, "the receiver kept nothing");
    drop(rotel);
    Ok(vec![Row::higher_is_better(
        "collector_ingest",
        a,
        b,
        "spans/s",
        1.0,
        &format!("peer = rotel-agent (blackhole exporter); OTLP/gRPC, {SENDERS} senders x {BATCH}-span requests"),
    )])
}
