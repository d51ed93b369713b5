//! The WAL's checkpoints: the store copies committed pages from the log into the database
//! on a thread of its own, soon after commits, not only once the log is long (SQLite's
//! automatic checkpoint, which the writer would run itself, after 1,000 pages by default).
//! With `synchronous=NORMAL` a checkpoint is also what puts commits on disk, so this is what
//! bounds what an operating-system crash can roll back.

mod common;

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tracewire_store::{Durability, SpanRecord, Store, StoreConfig};
use tracewire_testkit::{TempDir, eventually};

/// Spans in the database file itself, the log left aside: a copy of the file alone, opened
/// read-only. `None` while the file has no spans table yet (or is torn mid-checkpoint).
fn spans_in_main_file(db: &std::path::Path, scratch: &std::path::Path) -> Option<u64> {
    let copy = scratch.join("copy.db");
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(db, &copy).ok()?;
    let conn = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    conn.query_row("SELECT count(*) FROM spans", [], |r| r.get(0)).ok()
}

#[test]
fn commits_are_checkpointed_soon_and_off_the_writer() {
    let dir = TempDir::new("tw-store-checkpoint").unwrap();
    let scratch = TempDir::new("tw-store-checkpoint-copy").unwrap();
    let path = dir.path().join("traces.db");
    let rt = common::runtime();
    let mut config = StoreConfig::default();
    config.durability = Durability::Normal;
    let store = Store::open_with(&path, config).unwrap();
    // 400 spans of about 1 KiB: some 100 pages in the log, far below the 1,000 pages after
    // which SQLite's automatic checkpoint would copy them.
    let spans: Vec<SpanRecord> = (0..400u32)
        .map(|i| SpanRecord {
            trace_id: format!("{:032x}", u128::from(i / 4) + 1),
            span_id: format!("{:016x}", u64::from(i) + 1),
            name: "stage".into(),
            service: "svc".into(),
            start_ns: i64::from(i),
            end_ns: i64::from(i) + 10,
            attributes: [("payload".to_owned(), "x".repeat(1024))].into(),
            ..SpanRecord::default()
        })
        .collect();
    rt.block_on(async {
        store.append_spans(spans).await.unwrap();
        store.flush().await.unwrap();
    });
    let mut seen = None;
    let copied = eventually(Duration::from_secs(10), || {
        seen = spans_in_main_file(&path, scratch.path());
        seen == Some(400)
    });
    assert!(copied.is_ok(), "the committed spans were not copied into the database file: {seen:?}");
    // The store is whole, log and file together.
    assert_eq!(rt.block_on(store.span_count()).unwrap(), 400);
}

fn page_size(path: &std::path::Path) -> i64 {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap()
}

#[test]
fn a_new_database_takes_the_configured_page_size_an_existing_one_keeps_its_own() {
    let dir = TempDir::new("tw-store-page-size").unwrap();
    let rt = common::runtime();
    let span = |id: u64| SpanRecord {
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        span_id: format!("{id:016x}"),
        ..SpanRecord::default()
    };
    let mut large = StoreConfig::default();
    large.page_size = Some(16_384);

    let new = dir.path().join("new.db");
    let store = Store::open_with(&new, large).unwrap();
    rt.block_on(async {
        store.append_spans(vec![span(1)]).await.unwrap();
        store.flush().await.unwrap();
    });
    assert_eq!(page_size(&new), 16_384);

    let existing = dir.path().join("existing.db");
    drop(Store::open(&existing).unwrap());
    let store = Store::open_with(&existing, large).unwrap();
    rt.block_on(async {
        store.append_spans(vec![span(2)]).await.unwrap();
        assert_eq!(store.span_count().await.unwrap(), 1);
    });
    assert_eq!(page_size(&existing), 4096);
}
