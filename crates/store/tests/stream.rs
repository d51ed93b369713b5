//! `Store::for_each_trace`: every trace once, whole, in trace id order, its spans by start,
//! read on its own connection while the writer keeps writing.

use std::sync::{Arc, Mutex};

use tracewire_store::{SpanFilter, SpanRecord, Store};
use tracewire_testkit::TempDir;

fn span(trace: u32, id: u32, start: i64) -> SpanRecord {
    SpanRecord {
        trace_id: format!("{trace:032x}"),
        span_id: format!("{id:016x}"),
        name: "exec".into(),
        service: "api".into(),
        start_ns: start,
        end_ns: start + 10,
        ..SpanRecord::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_trace_gives_each_trace_whole_in_trace_order() {
    let dir = TempDir::new("tw-store-stream").unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    // 200 traces of 5 spans, interleaved in time and appended out of trace order.
    let mut batch = Vec::new();
    for round in 0..5u32 {
        for t in (0..200u32).rev() {
            batch.push(span(t, t * 10 + round, i64::from(1000 * (5 - round) + t)));
        }
    }
    store.append_spans(batch).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::<Vec<SpanRecord>>::new()));
    let sink = Arc::clone(&seen);
    store.for_each_trace(SpanFilter::default(), move |t| sink.lock().unwrap().push(t)).await.unwrap();
    let all = store.spans().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 200);
    for (i, t) in seen.iter().enumerate() {
        assert_eq!(t.len(), 5);
        assert!(t.iter().all(|s| s.trace_id == format!("{i:032x}")), "trace {i} in order, whole");
        assert!(t.windows(2).all(|w| w[0].start_ns <= w[1].start_ns), "spans by start");
        // Each span as spans_matching gives it.
        for s in t {
            assert!(all.contains(s));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_trace_reads_while_the_writer_writes_and_filters() {
    let dir = TempDir::new("tw-store-stream-rw").unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    store.append_spans((0..50u32).flat_map(|t| [span(t, t * 2, 1), span(t, t * 2 + 1, 2)]).collect()).await.unwrap();
    // The callback appends more spans on the writer and waits for them to be committed:
    // the read must not hold the writer's connection.
    let writer = store.clone();
    let handle = tokio::runtime::Handle::current();
    let count = Arc::new(Mutex::new(0usize));
    let counted = Arc::clone(&count);
    store
        .for_each_trace(SpanFilter::default(), move |t| {
            let id = u32::try_from(t.len()).unwrap() + 1000 + u32::try_from(*counted.lock().unwrap()).unwrap();
            let (writer, handle) = (writer.clone(), handle.clone());
            std::thread::spawn(move || {
                handle.block_on(async { writer.append_spans(vec![span(id, id, 5)]).await.unwrap() });
                handle.block_on(writer.flush()).unwrap();
            })
            .join()
            .unwrap();
            *counted.lock().unwrap() += 1;
        })
        .await
        .unwrap();
    // The read saw its snapshot: the 50 traces there were when it started.
    assert_eq!(*count.lock().unwrap(), 50);
    assert_eq!(store.span_count().await.unwrap(), 150);
    // A filter by trace (either case, repeated) and by time.
    let wanted = vec![format!("{:032X}", 7), format!("{:032x}", 7), format!("{:032x}", 9)];
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    store
        .for_each_trace(SpanFilter { traces: wanted, since_ns: Some(2), ..SpanFilter::default() }, move |t| {
            sink.lock().unwrap().push((t[0].trace_id.clone(), t.len()));
        })
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), [(format!("{:032x}", 7), 1), (format!("{:032x}", 9), 1)]);
}
