//! HEADER
use std::time::{Duration, Instant};

use criterion::Criterion;
use tracewire_bench::fixtures::{SyncDb, open_store, process_record};

/// Appends per round: well under the store's queue (65,536 here), so that `append` measures
/// queueing, not waiting for room; the writer catches up (a flush, untimed) between rounds.
const ROUND: u64 = 16_384;

fn bench(c: &mut Criterion) {
    let dir = tracewire_testkit::TempDir::new("tw-store-bench").expect("temp dir");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut g = c.benchmark_group("store_append");

    // tracewire-store: append returns once the record is queued; the writer batches.
    let store = rt.block_on(async { open_store(&dir.path().join("store.db"), 65_536) }).expect("store");
    let mut next = 0u64;
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

    // Peer: one transaction (and fsync) per record on the caller's thread, same settings.
    let db = SyncDb::open(&dir.path().join("sync.db")).expect("SQLite");
    let mut next = 0u64;
    g.bench_function("sqlite_sync/insert_commit", |b| {
        b.iter(|| {
            db.insert(next).expect("insert");
            next += 1;
        });
    });
    g.finish();
    drop(store);
}

tracewire_benches::main!(bench);
