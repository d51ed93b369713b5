//! The process the store's crash tests kill: it opens a store, appends records, waits for a
//! barrier, prints `ACKED <n>` (the records the barrier acknowledged), appends more that no
//! barrier acknowledges, and waits to be killed.
//!
//! `crash_child processes <db>`: 500 process records acknowledged, 100 more queued
//! (`tests/store.rs`). `crash_child normal-spans <db>`: 64 requests of 16 spans stored from
//! their bytes with `Durability::Normal`, all acknowledged (`tests/wire.rs`).

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tracewire_store::{Durability, ProcessRecord, Store, StoreConfig, StoreError};

/// How long the child waits for its kill before it gives up and exits (a parent that died
/// leaves no child behind for long).
const OUTLIVE: Duration = Duration::from_secs(60);

fn process(id: u64) -> ProcessRecord {
    ProcessRecord {
        process_id: id,
        argv: vec!["echo".into(), id.to_string()],
        cwd: "/tmp".into(),
        ..ProcessRecord::default()
    }
}

/// Request `r` of 16 spans with distinct ids, as protobuf bytes.
fn request(r: u8) -> Vec<u8> {
    let spans = (0..16u8)
        .map(|i| Span { trace_id: vec![r + 1; 16], span_id: vec![i + 1; 8], name: "s".into(), ..Span::default() })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn processes(path: &str) -> Result<Store, StoreError> {
    let store = Store::open(path)?;
    for id in 0..500 {
        store.append(process(id)).await?;
    }
    store.flush().await?;
    println!("ACKED 500");
    // More appends, never acknowledged by a barrier.
    for id in 500..600 {
        store.append(process(id)).await?;
    }
    Ok(store)
}

async fn normal_spans(path: &str) -> Result<Store, StoreError> {
    let mut config = StoreConfig::default();
    config.durability = Durability::Normal;
    let store = Store::open_with(path, config)?;
    for r in 0..64 {
        store.append_encoded(request(r).into()).await?;
    }
    store.flush().await?;
    println!("ACKED {}", 64 * 16);
    Ok(store)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The store stays open, with whatever it still has queued, until the kill.
    let _store = match args.as_slice() {
        [mode, path] if mode == "processes" => processes(path).await?,
        [mode, path] if mode == "normal-spans" => normal_spans(path).await?,
        _ => return Err("usage: crash_child processes|normal-spans <db>".into()),
    };
    // The kill is what the test is about: wait for it (a sleep that is the behaviour).
    tokio::time::sleep(OUTLIVE).await;
    Ok(())
}
