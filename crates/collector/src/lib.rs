//! # tracewire-collector
//!
//! The analysis behind tracewire's report: given spans from any number of services, it
//! groups them by trace, corrects clock skew between services, and answers *where did the
//! time go?*: per-stage latency (count, p50, p90, p99, max), end-to-end latency per root,
//! the share of each root's time no stage explains (unattributed), orphan spans, and SLOs
//! with their violation rates.
//!
//! [`receiver`] is an embedded OTLP receiver (gRPC and HTTP, protobuf and JSON) that keeps
//! spans in a bounded store for the analysis. (The report files and `tracewire demo` build
//! on both; see issue [6/9].)
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
pub mod jaeger;
pub mod receiver;
pub mod report;
mod slo;

pub use analysis::{LatencyStats, StageStats, Summary, analyze, correct_skew, percentile_ns};
pub use slo::{Slo, SloError, SloResult};

use std::collections::BTreeMap;

/// One span, as the analysis needs it (any source: OTLP, Jaeger, tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRecord {
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; `None` for a root.
    pub parent_id: Option<String>,
    /// Span name.
    pub name: String,
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// Start, Unix nanoseconds, in the sender's clock.
    pub start_ns: i64,
    /// End, Unix nanoseconds, in the sender's clock.
    pub end_ns: i64,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
}

impl SpanRecord {
    /// The stage: the `tracewire.stage` attribute, falling back to the span name.
    pub fn stage(&self) -> &str {
        self.attributes.get("tracewire.stage").map_or(self.name.as_str(), String::as_str)
    }

    /// Duration in nanoseconds (0 for a span that ends before it starts).
    pub fn duration_ns(&self) -> i64 {
        (self.end_ns - self.start_ns).max(0)
    }
}
