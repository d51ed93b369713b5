//! Retention: `Store::prune` removes the oldest traces whole, by age or by a span count.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracewire_store::{Pruned, Retention, SpanRecord, Store};
use tracewire_testkit::TempDir;

const HOUR_NS: i64 = 3_600_000_000_000;

fn now_ns() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

fn trace_id(n: u64) -> String {
    format!("{n:032x}")
}

fn span(trace: u64, span: u64, start_ns: i64, end_ns: i64) -> SpanRecord {
    SpanRecord {
        trace_id: trace_id(trace),
        span_id: format!("{:016x}", span + 1),
        parent_id: (span > 0).then(|| format!("{:016x}", 1)),
        name: format!("s{span}"),
        service: "svc".into(),
        start_ns,
        end_ns,
        ..SpanRecord::default()
    }
}

/// Spans per trace id, of what the store holds.
async fn by_trace(store: &Store) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in store.spans().await.unwrap() {
        *out.entry(s.trace_id).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_removes_traces_that_ended_before_the_cut_and_keeps_a_straddling_trace_whole() {
    let dir = TempDir::new("tw-retain-age").unwrap();
    let store = Store::open(dir.path().join("t.db")).unwrap();
    let now = now_ns();
    let mut spans = Vec::new();
    // Trace 1: three spans, all ended two days ago.
    for i in 0..3 {
        spans.push(span(1, i, now - 50 * HOUR_NS, now - 48 * HOUR_NS));
    }
    // Trace 2 straddles the cut (24 h ago): its root began three days ago and its last
    // child ended an hour ago; its first two spans alone are past the cut.
    spans.push(span(2, 0, now - 72 * HOUR_NS, now - HOUR_NS));
    spans.push(span(2, 1, now - 72 * HOUR_NS, now - 71 * HOUR_NS));
    spans.push(span(2, 2, now - 2 * HOUR_NS, now - HOUR_NS));
    // Trace 3: recent.
    for i in 0..2 {
        spans.push(span(3, i, now - HOUR_NS, now - HOUR_NS / 2));
    }
    store.append_spans(spans).await.unwrap();

    let pruned = store.prune(Retention::default().max_age(Duration::from_secs(24 * 3600))).await.unwrap();
    assert_eq!(pruned, Pruned { traces: 1, spans: 3 });
    let left = by_trace(&store).await;
    assert_eq!(left, BTreeMap::from([(trace_id(2), 3), (trace_id(3), 2)]), "trace 2 kept whole");
    // Nothing more to do: a second run removes nothing.
    let again = store.prune(Retention::default().max_age(Duration::from_secs(24 * 3600))).await.unwrap();
    assert_eq!(again, Pruned::default());
    // A shorter age reaches trace 2 (ended an hour ago), whole.
    let pruned = store.prune(Retention::default().max_age(Duration::from_secs(2700))).await.unwrap();
    assert_eq!(pruned, Pruned { traces: 1, spans: 3 });
    assert_eq!(by_trace(&store).await, BTreeMap::from([(trace_id(3), 2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_spans_removes_the_oldest_traces_whole_until_at_most_n_are_left() {
    let dir = TempDir::new("tw-retain-count").unwrap();
    let store = Store::open(dir.path().join("t.db")).unwrap();
    let base = 1_000 * HOUR_NS;
    // Traces 1..=6, each with trace-number spans, trace n starting at hour n; the spans of
    // each trace interleave with the next one's in start order.
    let mut spans = Vec::new();
    for t in 1..=6u64 {
        let first = base + i64::try_from(t).unwrap() * HOUR_NS;
        for i in 0..t {
            let start = first + i64::try_from(i).unwrap() * (HOUR_NS / 2);
            spans.push(span(t, i, start, start + 1_000));
        }
    }
    store.append_spans(spans).await.unwrap();
    assert_eq!(store.span_count().await.unwrap(), 21);

    // At most 12: traces 1 (1), 2 (2), 3 (3), 4 (4) go: 21 - 6 = 15 > 12, so 4 goes too.
    let pruned = store.prune(Retention::default().max_spans(12)).await.unwrap();
    assert_eq!(pruned, Pruned { traces: 4, spans: 10 });
    let left = by_trace(&store).await;
    assert_eq!(left, BTreeMap::from([(trace_id(5), 5), (trace_id(6), 6)]));
    assert!(left.values().sum::<usize>() <= 12);
    // At or under the bound: nothing goes.
    assert_eq!(store.prune(Retention::default().max_spans(11)).await.unwrap(), Pruned::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_prune_runs_in_steps_and_ingest_goes_on_between_them() {
    let dir = TempDir::new("tw-retain-steps").unwrap();
    let store = Store::open(dir.path().join("t.db")).unwrap();
    // 4,000 traces of 3 spans (12,000 spans: several steps) and one trace of 7,000 spans,
    // more than a step's bound, which still goes whole.
    let mut batch = Vec::new();
    for t in 0..4_000u64 {
        for i in 0..3 {
            let start = i64::try_from(t * 10 + i).unwrap();
            batch.push(span(t + 1, i, start, start + 1));
        }
        if batch.len() >= 3_000 {
            store.append_spans(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    store.append_spans(batch).await.unwrap();
    let big: Vec<SpanRecord> = (0..7_000).map(|i| span(9_999, i, 50_000 + i64::try_from(i).unwrap(), 60_000)).collect();
    store.append_spans(big).await.unwrap();
    // Recent traces, kept.
    let now = now_ns();
    store.append_spans((0..4).map(|i| span(20_000 + i, 0, now, now + 1)).collect()).await.unwrap();

    let prune = {
        let store = store.clone();
        tokio::spawn(async move { store.prune(Retention::default().max_age(Duration::from_secs(3600))).await })
    };
    // Appends while the prune runs are written (between its steps).
    for i in 0..20u64 {
        store.append_spans(vec![span(30_000 + i, 0, now, now + 1)]).await.unwrap();
    }
    let pruned = prune.await.unwrap().unwrap();
    assert_eq!(pruned, Pruned { traces: 4_001, spans: 19_000 });
    let left: BTreeSet<String> = by_trace(&store).await.into_keys().collect();
    let expected: BTreeSet<String> = (20_000..20_004).chain(30_000..30_020).map(trace_id).collect();
    assert_eq!(left, expected);
}
