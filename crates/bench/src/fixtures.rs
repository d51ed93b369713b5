//! Set-up shared by the `compare` comparisons and the criterion benches under `benches/`,
//! one module per section as the comparisons are: span exporters and pipelines (`spans`),
//! exec-servers direct and behind a relay (`exec`), the relay stream, raw AEAD and plain
//! TCP forwarding (`relay`), store records and the synchronous SQLite peer (`store`), the
//! collector receiver and rotel-agent (`ingest`), and the traceparent inputs
//! (`propagation`). Everything here runs in this process, on loopback, except rotel-agent
//! (its own process, stopped by its pid). Every item is re-exported here:
//! `tracewire_bench::fixtures::NAME` is the path benches use.
//!
//! Fixtures return [`anyhow::Result`]: a bench that cannot set up stops with the reason.

use std::time::Duration;

use anyhow::Result;

mod exec;
mod ingest;
mod propagation;
mod relay;
mod spans;
mod store;

pub use exec::{ExecFixture, argv, exec_true, spawn_true_locally};
pub use ingest::{INGEST_BATCH, RotelBlackhole, export_request, otlp_client, start_receiver, start_receiver_with_db};
pub use propagation::{PropagationInputs, TRACEPARENT, TRACESTATE};
pub use relay::{RawAead, RelayStream, start_relay, tcp_two_hops};
pub use spans::{
    CountingExporter, DownExporter, TRACE_SPANS, closed_port, collector_down_config, collector_down_pipeline,
    collector_down_sdk_provider, counting_pipeline, fastrace_reported, fastrace_trace, pipeline_dispatch, sdk_dispatch,
    sdk_dispatch_tuned, sdk_provider, sdk_provider_with_queue, shutdown_reading_sdk_drops, tracewire_trace,
    tracing_deliver_span, tracing_trace,
};
pub use store::{SyncDb, open_store, process_record};

/// A multi-threaded tokio runtime with 2 workers (the machines these run on have 2 cores).
///
/// # Errors
/// When the runtime cannot be built.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// CPU time this process has used so far, user and system, on every thread, those that
/// have ended included (`CLOCK_PROCESS_CPUTIME_ID`, nanosecond resolution).
pub fn process_cpu() -> Duration {
    crate::cpu::process_time()
}
