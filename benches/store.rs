//! tracewire-store at its default settings (a 4,096-record queue) against SQLite on the
//! caller's thread with the same settings (WAL, `synchronous=FULL`), table, statement and
//! values, per record, in the same run: `append` (queueing; the writer commits in batches), a synchronous insert+commit per
//! record, and a batched commit (100 records per transaction); and appends made durable
//! (appends, then a flush barrier), the work of the batched peer. Set-up:
//! `tracewire_bench::fixtures::{open_store, SyncDb, process_record}`.
//!
//! Run: `cargo bench -p tracewire-benches --bench store`
//!
//! Criterion gives means, not tails: the goals are `tracewire-bench compare`'s rows
//! (docs/benchmarks.md, full run of 2026-12-06): `store.append_p99` 90x lower than a
//! per-record commit (goal 50x, met), `store.durable_per_s` 1.35x the batched peer (goal
//! 1x, met).

use std::time::{Duration, Instant};

use criterion::Criterion;
use tracewire_bench::fixtures::{SyncDb, open_store, process_record};
use tracewire_store::StoreConfig;

/// Records per round of `append` (the default queue's size: appends beyond it wait, as
/// they would in use); the writer catches up (a flush, untimed) between rounds.
const ROUND: u64 = 4_096;

fn bench(c: &mut Criterion) {
    let dir = tracewire_testkit::TempDir::new("tw-store-bench").expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut g = c.benchmark_group("store_per_record");

    let queue = StoreConfig::default().queue;
    let store = rt.block_on(async { open_store(&dir.path().join("store.db"), queue) }).expect("store");
    let mut next = 0u64;
    // tracewire-store: append returns once the record is queued; the writer batches.
    g.bench_function("tracewire/append", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(ROUND);
                    let t0 = Instant::now();
                    for _ in 0..n {
                        store.append(process_record(next)).await.expect("append");
                        next += 1;
                    }
                    total += t0.elapsed();
                    store.flush().await.expect("flush");
                    left -= n;
                }
                total
            })
        });
    });
    // tracewire-store: appends and the flush barrier that makes them durable, per record.
    g.bench_function("tracewire/append_durable", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    store.append(process_record(next)).await.expect("append");
                    next += 1;
                }
                store.flush().await.expect("flush");
                t0.elapsed()
            })
        });
    });

    // Peer: one transaction (and fsync) per record on the caller's thread, same settings.
    let db = SyncDb::open(&dir.path().join("sync.db")).expect("SQLite");
    let mut next = 0u64;
    g.bench_function("sqlite/insert_commit_each", |b| {
        b.iter(|| {
            db.insert(next).expect("insert");
            next += 1;
        });
    });
    // Peer: 100 records per transaction, per record.
    let batched = SyncDb::open(&dir.path().join("batched.db")).expect("SQLite");
    let mut next = 0u64;
    g.bench_function("sqlite/insert_commit_per_100", |b| {
        b.iter_custom(|iters| {
            let t0 = Instant::now();
            let mut left = iters;
            while left > 0 {
                let n = left.min(100);
                batched.insert_batch(next..next + n).expect("insert batch");
                next += n;
                left -= n;
            }
            t0.elapsed()
        });
    });
    g.finish();
    drop(store);
}

tracewire_benches::main!(bench);
