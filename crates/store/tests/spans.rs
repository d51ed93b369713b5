//! Store spans through a real pipeline: store.enqueue, store.queue, store.flush, and
//! store.write linked to every appending context.

use opentelemetry_sdk::trace::SpanData;
use tracewire_store::{ProcessRecord, Store};
use tracewire_telemetry::testing::InMemoryTelemetry;
use tracewire_telemetry::{span_context, stage_span};
use tracewire_testkit::TempDir;
use tracing::Instrument;

fn harness() -> &'static InMemoryTelemetry {
    tracewire_telemetry::testing::install()
}

fn all_spans() -> Vec<SpanData> {
    harness().spans()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_write_links_to_every_appending_context() {
    harness();
    let dir = TempDir::new("tw-store-spans").unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    let mut traces = Vec::new();
    // Two requests append, then one barrier: one batch serves both traces.
    for id in [1u64, 2] {
        let root = stage_span!(RpcDispatch);
        traces.push(span_context(&root).unwrap().trace_id.to_string());
        let store = store.clone();
        async move { store.append(ProcessRecord { process_id: id, ..ProcessRecord::default() }).await.unwrap() }
            .instrument(root)
            .await;
    }
    store.flush().await.unwrap();
    let spans = all_spans();
    let enqueues: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "store.enqueue" && traces.contains(&s.span_context.trace_id().to_string()))
        .collect();
    assert_eq!(enqueues.len(), 2);
    let queued: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "store.queue" && traces.contains(&s.span_context.trace_id().to_string()))
        .collect();
    assert_eq!(queued.len(), 2, "a residence span per record");
    for q in &queued {
        assert!(
            enqueues.iter().any(|e| e.span_context.span_id() == q.parent_span_id),
            "store.queue is a child of store.enqueue"
        );
    }
    let writes: Vec<&SpanData> = spans.iter().filter(|s| s.name == "store.write").collect();
    for e in &enqueues {
        let linked = writes.iter().find(|w| {
            w.links.links.iter().any(|l| {
                l.span_context.span_id() == e.span_context.span_id()
                    && l.span_context.trace_id() == e.span_context.trace_id()
            })
        });
        let w = linked.unwrap_or_else(|| panic!("no store.write links to {}", e.span_context.span_id()));
        assert_ne!(w.span_context.trace_id(), e.span_context.trace_id(), "a batch is its own trace, linked to many");
    }

    // Many appends at once are coalesced: one store.write links to many traces.
    let mut handles = Vec::new();
    for id in 100..300u64 {
        let store = store.clone();
        handles.push(tokio::spawn(
            async move { store.append(ProcessRecord { process_id: id, ..ProcessRecord::default() }).await.unwrap() }
                .instrument(stage_span!(RpcDispatch)),
        ));
    }
    for h in handles {
        h.await.unwrap();
    }
    store.flush().await.unwrap();
    let most = all_spans().iter().filter(|s| s.name == "store.write").map(|s| s.links.links.len()).max().unwrap();
    assert!(most > 1, "batches coalesce records from several traces");
}
