//! Caller-side append latency of tracewire-store against a synchronous insert+commit per
//! record (same SQLite settings: WAL, synchronous=FULL).

use std::time::{Duration, Instant};

use crate::fixtures::{SyncDb, open_store, process_record};
use crate::{Row, Scale, percentile};
use anyhow::Result;

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let (n, sync_n) = scale.pick((5_000u64, 500u64), (20_000, 2_000));
    let dir = tracewire_testkit::TempDir::new("tw-bench-store")?;
    // Synchronous: one transaction per record.
    let db = SyncDb::open(&dir.path().join("sync.db"))?;
    let mut sync = Vec::with_capacity(usize::try_from(sync_n)?);
    for i in 0..sync_n {
        let t0 = Instant::now();
        db.insert(i)?;
        sync.push(t0.elapsed());
    }
    // tracewire-store: append queues; a barrier at the end.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (appends, flush) = rt.block_on(async {
        let store = open_store(&dir.path().join("store.db"), 65_536)?;
        let mut v = Vec::with_capacity(usize::try_from(n)?);
        for i in 0..n {
            let t0 = Instant::now();
            store.append(process_record(i)).await?;
            v.push(t0.elapsed());
        }
        let t0 = Instant::now();
        store.flush().await?;
        anyhow::Ok((v, t0.elapsed()))
    })?;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut appends = appends;
    let (ours, peer) = (us(percentile(&mut appends, 990)), us(percentile(&mut sync, 990)));
    Ok(vec![Row::lower_is_better(
        "store_append.p99",
        ours,
        peer,
        "us",
        50.0,
        &format!(
            "peer = synchronous insert+commit per record; {n} appends then a barrier of {:.1} ms",
            us(flush) / 1e3
        ),
    )])
}
