//! tracewire-store at its default settings (a 4,096-record queue) against SQLite on the
//! caller's thread with the same settings (WAL, `synchronous=FULL`), table, statement and
//! values (`fixtures::SyncDb`): the caller's append
//! latency against a per-record commit, and records made durable per second (appends and
//! a flush barrier) against a per-record commit and a batched commit (100 records per
//! transaction). Rounds alternate, best of each.

use std::time::{Duration, Instant};

use crate::fixtures::{SyncDb, open_store, process_record};
use crate::{Row, Scale, percentile};
use anyhow::Result;
use tracewire_store::StoreConfig;

/// Records per transaction of the batched-commit peer.
const PEER_BATCH: u64 = 100;

#[allow(clippy::cast_precision_loss)]
fn per_s(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let (n, sync_n, rounds) = scale.pick((5_000u64, 300u64, 2u64), (20_000, 1_000, 3));
    let dir = tracewire_testkit::TempDir::new("tw-bench-store")?;
    let db = SyncDb::open(&dir.path().join("sync.db"))?;
    let batched = SyncDb::open(&dir.path().join("batched.db"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let queue = StoreConfig::default().queue;
    let store = rt.block_on(async { open_store(&dir.path().join("store.db"), queue) })?;

    let mut sync = Vec::new();
    let mut appends = Vec::new();
    let (mut best_sync, mut best_batched, mut best_ours) = (0.0f64, 0.0f64, 0.0f64);
    let (mut next_sync, mut next_batched, mut next_ours) = (0u64, 0u64, 0u64);
    for _ in 0..rounds {
        // Per-record commit: one transaction (and fsync) per record.
        let t0 = Instant::now();
        for _ in 0..sync_n {
            let t = Instant::now();
            db.insert(next_sync)?;
            sync.push(t.elapsed());
            next_sync += 1;
        }
        best_sync = best_sync.max(per_s(sync_n, t0.elapsed()));
        // Batched commit: PEER_BATCH records per transaction.
        let t0 = Instant::now();
        for _ in 0..n / PEER_BATCH {
            batched.insert_batch(next_batched..next_batched + PEER_BATCH)?;
            next_batched += PEER_BATCH;
        }
        best_batched = best_batched.max(per_s(n / PEER_BATCH * PEER_BATCH, t0.elapsed()));
        // tracewire-store: appends queue (and wait when the queue is full); a flush barrier
        // returns once everything appended is committed.
        let (durable, lat) = rt.block_on(async {
            let mut lat = Vec::with_capacity(usize::try_from(n)?);
            let t0 = Instant::now();
            for _ in 0..n {
                let t = Instant::now();
                store.append(process_record(next_ours)).await?;
                lat.push(t.elapsed());
                next_ours += 1;
            }
            store.flush().await?;
            anyhow::Ok((t0.elapsed(), lat))
        })?;
        best_ours = best_ours.max(per_s(n, durable));
        appends.extend(lat);
    }
    drop(store);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let (ours_p99, peer_p99) = (us(percentile(&mut appends, 990)), us(percentile(&mut sync, 990)));
    Ok(vec![
        Row::lower_is_better(
            "store.append_p99",
            ours_p99,
            peer_p99,
            "us",
            50.0,
            &format!(
                "default queue ({queue} records; append waits when it is full); peer = synchronous insert+commit per record (same table, statement and values; WAL, synchronous=FULL); p50 {:.1} vs {:.0} us; {} appends, {} commits",
                us(percentile(&mut appends, 500)),
                us(percentile(&mut sync, 500)),
                appends.len(),
                sync.len()
            ),
        ),
        Row::higher_is_better(
            "store.durable_per_s",
            best_ours,
            best_batched,
            "rec/s",
            1.0,
            &format!(
                "records made durable per second: {n} appends + flush barrier vs the same records inserted {PEER_BATCH} per transaction (commit = fsync, WAL, synchronous=FULL); per-record commit {best_sync:.0} rec/s; best of {rounds} alternating rounds"
            ),
        ),
    ])
}
