//! The figures both the analysis and the SLOs read: latency statistics, per stage and per
//! trace.

use std::collections::BTreeMap;

use serde::Serialize;

/// Latency statistics of one set of durations (milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    /// How many.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// The statistics of one stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageStats {
    /// The stage (the `tracewire.stage` attribute, or the span name).
    pub stage: String,
    /// Its latency.
    #[serde(flatten)]
    pub stats: LatencyStats,
    /// Its spans whose status is ERROR.
    pub errors: usize,
    /// `errors / count` (0 for no spans).
    pub error_rate: f64,
}

/// The per-trace measures SLOs are judged on.
#[derive(Debug)]
pub(crate) struct TraceMeasures {
    pub(crate) e2e: Vec<i64>,
    pub(crate) first_output: Option<i64>,
    pub(crate) stages: BTreeMap<String, Vec<i64>>,
    /// Per stage of the trace, its spans whose status is ERROR (0 when none).
    pub(crate) stage_errors: BTreeMap<String, usize>,
    /// Whether any span of the trace has status ERROR.
    pub(crate) has_error: bool,
}
