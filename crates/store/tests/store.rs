//! The store: barriers under concurrency, crash durability, migration, typed errors.

mod common;

use tracewire_store::{FullPolicy, ProcessRecord, SCHEMA_VERSION, Store, StoreConfig, StoreError};
use tracewire_testkit::TempDir;

fn record(id: u64) -> ProcessRecord {
    ProcessRecord {
        process_id: id,
        pid: u32::try_from(id % 100_000).unwrap(),
        argv: vec!["echo".into(), format!("{id}")],
        cwd: "/tmp".into(),
        started_unix_nanos: i64::try_from(id).unwrap(),
        ..ProcessRecord::default()
    }
}

fn count(path: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("SELECT COUNT(*) FROM processes", [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barriers_under_concurrency_see_everything_appended_before_them() {
    let dir = TempDir::new("tw-store-barrier").unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open(&path).unwrap();
    let writers: Vec<_> = (0..8u64)
        .map(|w| {
            let store = store.clone();
            let path = path.clone();
            tokio::spawn(async move {
                for i in 0..200u64 {
                    store.append(record(w * 1000 + i)).await.unwrap();
                    if i % 50 == 49 {
                        store.flush().await.unwrap();
                        // Read with an independent connection: the barrier's promise holds
                        // for every reader, not just the store's own.
                        let c = rusqlite::Connection::open(&path).unwrap();
                        let mine: i64 = c
                            .query_row(
                                "SELECT COUNT(*) FROM processes WHERE process_id >= ?1 AND process_id < ?2",
                                [i64::try_from(w * 1000).unwrap(), i64::try_from(w * 1000 + 1000).unwrap()],
                                |r| r.get(0),
                            )
                            .unwrap();
                        assert!(mine >= i64::try_from(i + 1).unwrap(), "writer {w}: {mine} of {} visible", i + 1);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    store.flush().await.unwrap();
    assert_eq!(count(&path), 1600);
    assert_eq!(store.backlog(), 0);
    let recent = store.recent(3).await.unwrap();
    assert_eq!(recent.len(), 3);
    assert_eq!(recent[0].process_id, 7199, "most recent first");
    assert_eq!(recent[0].argv, ["echo", "7199"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_again_updates_the_record() {
    let dir = TempDir::new("tw-store-update").unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    store.append(record(1)).await.unwrap();
    let mut done = record(1);
    done.ended_unix_nanos = 99;
    done.exit_code = Some(3);
    done.stdout_bytes = 12;
    store.append(done.clone()).await.unwrap();
    assert_eq!(store.recent(10).await.unwrap(), vec![done]);
}

/// The invariant "a barrier's promise holds" (docs/architecture.md): every record a
/// barrier acknowledged is in the database after the process is killed right after it.
#[test]
fn crash_after_a_barrier_loses_nothing_acknowledged() {
    let dir = TempDir::new("tw-store-crash").unwrap();
    let path = dir.path().join("s.db");
    // The child appends 500 records, acknowledges them with a barrier, queues 100 more.
    assert_eq!(common::kill_after_barrier("processes", &path), 500, "the child reported its barrier");
    let store = Store::open(&path).unwrap();
    drop(store);
    let n = count(&path);
    assert!(n >= 500, "records acknowledged by the barrier survive a crash: {n}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let missing: i64 =
        c.query_row("SELECT 500 - COUNT(*) FROM processes WHERE process_id < 500", [], |r| r.get(0)).unwrap();
    assert_eq!(missing, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_is_migrated_with_its_data() {
    let dir = TempDir::new("tw-store-migrate").unwrap();
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(&format!(
            "{}
             INSERT INTO processes VALUES (7, 70, 'old', '/', 5, 6, 0, NULL);
             PRAGMA user_version = 1;",
            common::PROCESSES_1
        ))
        .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let rows = store.recent(10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].process_id, rows[0].argv.clone(), rows[0].trace_id.clone(), rows[0].stdout_bytes),
        (7, vec!["old".to_owned()], String::new(), 0)
    );
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: i32 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    // A database from the future is refused, not damaged.
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(store);
    assert_eq!(Store::open(&path).unwrap_err(), StoreError::NewerSchema(99));
}

#[test]
fn a_corrupt_file_is_a_typed_error() {
    let dir = TempDir::new("tw-store-corrupt").unwrap();
    let path = dir.path().join("bad.db");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    assert!(matches!(Store::open(&path), Err(StoreError::Corrupt(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_fails_the_barrier_keeps_the_queue_and_recovers() {
    let dir = TempDir::new("tw-store-locked").unwrap();
    let path = dir.path().join("s.db");
    let store = Store::open(&path).unwrap();
    store.append(record(1)).await.unwrap();
    store.flush().await.unwrap();
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE; INSERT INTO processes (process_id, pid, argv, cwd, started_unix_nanos) VALUES (999, 1, 'x', '/', 0);").unwrap();
    store.append(record(2)).await.unwrap();
    assert!(matches!(store.flush().await, Err(StoreError::Locked(_))));
    assert_eq!(store.backlog(), 1, "the record is kept");
    locker.execute_batch("ROLLBACK;").unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.backlog(), 0);
    assert_eq!(count(&path), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_barrier_and_keeps_the_queue() {
    let dir = TempDir::new("tw-store-full").unwrap();
    let path = dir.path().join("s.db");
    // A size-capped database: SQLite reports SQLITE_FULL exactly as for a full disk.
    let mut config = StoreConfig::default();
    config.max_pages = Some(16);
    let store = Store::open_with(&path, config).unwrap();
    store.append(record(1)).await.unwrap();
    store.flush().await.unwrap();
    let big = |id| ProcessRecord { argv: vec!["x".repeat(256 * 1024)], ..record(id) };
    store.append(big(2)).await.unwrap();
    assert!(matches!(store.flush().await, Err(StoreError::DiskFull(_))), "a full disk is a typed error");
    assert_eq!(store.backlog(), 1, "the writer keeps the record");
    assert!(matches!(store.flush().await, Err(StoreError::DiskFull(_))), "still full: still reported");
    // What was acknowledged before is intact.
    assert_eq!(count(&path), 1);
    drop(store);
    // With room again, the same write succeeds.
    let store = Store::open(&path).unwrap();
    store.append(big(2)).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(count(&path), 2);
}

#[tokio::test]
async fn a_full_queue_is_an_error_not_a_silent_drop() {
    let dir = TempDir::new("tw-store-queue").unwrap();
    let path = dir.path().join("s.db");
    let mut config = StoreConfig::default();
    config.queue = 1;
    config.full = FullPolicy::Error;
    let store = Store::open_with(&path, config).unwrap();
    // Hold the writer with a lock so the queue fills.
    let locker = rusqlite::Connection::open(&path).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..200 {
        match store.append(record(i)).await {
            Ok(()) => accepted += 1,
            Err(StoreError::Full) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "a bounded queue refuses when full");
    locker.execute_batch("ROLLBACK;").unwrap();
    store.flush().await.unwrap();
    assert_eq!(count(&path), accepted, "every accepted record is written; refused ones were reported");
}

fn span(trace: &str, id: &str, parent: Option<&str>, start: i64) -> tracewire_store::SpanRecord {
    tracewire_store::SpanRecord {
        trace_id: trace.into(),
        span_id: id.into(),
        parent_id: parent.map(Into::into),
        name: format!("n-{id}"),
        service: "svc".into(),
        start_ns: start,
        end_ns: start + 10,
        attributes: [("tracewire.stage".to_owned(), "rpc.call".to_owned()), ("k".to_owned(), "v \"q\"".to_owned())]
            .into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn spans_persist_across_reopen_once_each_in_start_order() {
    let dir = TempDir::new("tw-store-spans").unwrap();
    let path = dir.path().join("traces.db");
    let a = span("t1", "a", None, 30);
    let b = span("t1", "b", Some("a"), 10);
    let c = span("t2", "c", None, 20);
    {
        let store = Store::open(&path).unwrap();
        store.append_spans(vec![a.clone(), b.clone()]).await.unwrap();
        // An exporter's retry of the same batch, plus one new span.
        store.append_spans(vec![a.clone(), b.clone(), c.clone()]).await.unwrap();
        store.append_spans(Vec::new()).await.unwrap();
        assert_eq!(store.span_count().await.unwrap(), 3);
        assert_eq!(store.backlog(), 0);
    }
    let store = Store::open(&path).unwrap();
    // Each back with the OTLP form it is stored as.
    let stored = |r: tracewire_store::SpanRecord| tracewire_store::SpanRecord { otlp: Some(r.to_otlp().into()), ..r };
    assert_eq!(store.spans().await.unwrap(), [stored(b), stored(c), stored(a)]);
}

#[tokio::test]
async fn span_batches_obey_the_full_policy() {
    let dir = TempDir::new("tw-store-spans-full").unwrap();
    let mut config = StoreConfig::default();
    config.queue = 1;
    config.full = FullPolicy::Error;
    let store = Store::open_with(dir.path().join("t.db"), config).unwrap();
    // Fill the one-slot queue faster than the writer drains it: some batch must be refused
    // with Full, and every accepted span must be stored.
    let (mut accepted, mut refused) = (0u64, 0u64);
    for i in 0..2000 {
        match store.append_spans(vec![span("t", &format!("s{i}"), None, i)]).await {
            Ok(()) => accepted += 1,
            Err(StoreError::Full) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "a one-slot queue never filled");
    assert_eq!(store.span_count().await.unwrap(), accepted);
}

#[test]
fn a_corrupt_span_body_is_a_typed_error() {
    let dir = TempDir::new("tw-store-spans-corrupt").unwrap();
    let path = dir.path().join("t.db");
    let rt = common::runtime();
    rt.block_on(async {
        let store = Store::open(&path).unwrap();
        store.append_spans(vec![span("t", "s", None, 1)]).await.unwrap();
        store.flush().await.unwrap();
    });
    // Not protobuf: a length-delimited field that runs past the end.
    rusqlite::Connection::open(&path).unwrap().execute("UPDATE spans SET body = x'1aff'", []).unwrap();
    rt.block_on(async {
        let store = Store::open(&path).unwrap();
        assert!(matches!(store.spans().await, Err(StoreError::Corrupt(m)) if m.contains("t/s")));
    });
}
