//! # tracewire-collector
//!
//! The analysis behind tracewire's report: given spans from any number of services, it
//! groups them by trace, corrects clock skew between services, and answers *where did the
//! time go?*: per-stage latency (count, p50, p90, p99, max), end-to-end latency per root,
//! the share of each root's time no stage explains (unattributed), the critical path, orphan
//! spans, and SLOs with their violation rates.
//!
//! [`receiver`] is an embedded OTLP receiver (gRPC and HTTP, protobuf and JSON) that keeps
//! spans in a bounded store for the analysis; [`input`] reads OTLP JSON and Jaeger JSON
//! files, [`otlp_json`] and [`jaeger`] write them. The report files and `tracewire demo`
//! build on all of these.
//!
//! ```
//! use tracewire_collector::{analyze, Slo, SpanRecord};
//!
//! let span = |id: &str, parent: Option<&str>, name: &str, start: i64, end: i64| SpanRecord {
//!     trace_id: "t1".into(),
//!     span_id: id.into(),
//!     parent_id: parent.map(Into::into),
//!     name: name.into(),
//!     start_ns: start,
//!     end_ns: end,
//!     ..SpanRecord::default()
//! };
//! let spans = vec![
//!     span("a", None, "exec", 0, 10_000_000),
//!     span("b", Some("a"), "rpc.call", 0, 9_000_000),
//! ];
//! let slos = vec![Slo::parse("e2e.p99<=250ms").unwrap()];
//! let summary = analyze(&spans, &slos);
//! assert_eq!(summary.traces, 1);
//! assert!((summary.unattributed_fraction - 0.1).abs() < 1e-9);
//! assert!(summary.slos[0].pass);
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod analysis;
mod clock;
pub mod diff;
pub mod diff_html;
pub mod google_rpc;
pub mod input;
pub mod jaeger;
pub mod otlp;
pub mod otlp_json;
pub mod receiver;
pub mod report;
mod sketch;
mod slo;
mod stats;
mod transit;

pub use analysis::{
    ANALYZED_ATTRIBUTES, Analyzer, CriticalShare, ERROR_TRACES_CAP, EXACT_DURATIONS, ExportPlan, Exports, KeepPolicy,
    LatencyStats, Percentiles, StageStats, Summary, analyze, correct_skew, critical_path, into_traces, percentile_ns,
};
pub use clock::{ClockOffset, ClockSample, best_sample};
pub use slo::{Slo, SloError, SloResult};

/// One span, as the analysis needs it (defined by tracewire-store, which persists it).
pub use tracewire_store::SpanRecord;
