//! Caller-side append latency of tracewire-store against a synchronous insert+commit per
//! record (same SQLite settings: WAL, synchronous=FULL).

use std::time::{Duration, Instant};

use anyhow::Result;
use tracewire_store::{ProcessRecord, Store, StoreConfig};

use crate::{Row, Scale, percentile};

fn record(id: u64) -> ProcessRecord {
    ProcessRecord {
        process_id: id,
        pid: 1,
        argv: vec!["echo".into(), "hi".into()],
        cwd: "/tmp".into(),
        ..ProcessRecord::default()
    }
}

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let (n, sync_n) = scale.pick((5_000u64, 500u64), (20_000, 2_000));
    let dir = tracewire_testkit::TempDir::new("tw-bench-store")?;
    // Synchronous: one transaction per record.
    let conn = rusqlite::Connection::open(dir.path().join("sync.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE processes (process_id INTEGER PRIMARY KEY, pid INTEGER, argv TEXT, cwd TEXT)")?;
    let mut sync = Vec::with_capacity(usize::try_from(sync_n)?);
    for i in 0..sync_n {
        let t0 = Instant::now();
        conn.execute(
            "INSERT INTO processes (process_id, pid, argv, cwd) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![i64::try_from(i)?, 1, "echo\u{1f}hi", "/tmp"],
        )?;
        sync.push(t0.elapsed());
    }
    // tracewire-store: append queues; a barrier at the end.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (appends, flush) = rt.block_on(async {
        let mut config = StoreConfig::default();
        config.queue = 65_536;
        let store = Store::open_with(dir.path().join("store.db"), config)?;
        let mut v = Vec::with_capacity(usize::try_from(n)?);
        for i in 0..n {
            let t0 = Instant::now();
            store.append(record(i)).await?;
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
