//! Service-level objectives: `METRIC.STAT<=THRESHOLD`, e.g. `e2e.p99<=250ms`,
//! `first_output.p90<=50ms`, `process.spawn.p50<=5ms`, and error rates:
//! `process.spawn.error_rate<=1%`, `e2e.error_rate<=0.5%`.

use serde::Serialize;

use crate::stats::{LatencyStats, StageStats, TraceMeasures};

/// What SLOs are judged on: the summary's figures and the per-trace measures.
#[derive(Debug)]
pub(crate) struct Observed<'a> {
    pub(crate) e2e: LatencyStats,
    pub(crate) first_output: LatencyStats,
    pub(crate) stages: &'a [StageStats],
    pub(crate) traces: usize,
    pub(crate) traces_with_errors: usize,
    pub(crate) measures: &'a [TraceMeasures],
}

/// Why an SLO expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SloError {
    /// The expression is not `METRIC.STAT<=THRESHOLD`.
    #[error("SLO {0:?}: expected METRIC.STAT<=THRESHOLD, e.g. e2e.p99<=250ms or process.spawn.error_rate<=1%")]
    Syntax(String),
    /// The statistic is not p50, p90, p99, max or error_rate.
    #[error("SLO {0:?}: the statistic must be p50, p90, p99, max or error_rate")]
    Stat(String),
    /// A latency threshold is not a number with a unit (us, ms, s).
    #[error(
        "SLO {0:?}: a latency threshold must be a number with a unit (us, ms or s); percentages are for error_rate"
    )]
    Threshold(String),
    /// An error-rate threshold is not a percentage from 0% to 100%.
    #[error(
        "SLO {0:?}: an error-rate threshold must be a percentage from 0% to 100%, e.g. error_rate<=1% or \
         error_rate<=0.5% (a fraction such as 0.01 is not accepted)"
    )]
    ErrorRateThreshold(String),
    /// The metric has no error rate (`first_output` is a time between two spans).
    #[error("SLO {0:?}: first_output has no error rate; use e2e.error_rate or STAGE.error_rate")]
    ErrorRateMetric(String),
    /// An SLO file is not TOML of the form `slos = ["e2e.p99<=250ms", ...]`.
    #[error("SLO file: {0}")]
    File(String),
}

/// The TOML file: `slos = [...]`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SloFile {
    slos: Vec<String>,
}

/// One objective: a latency statistic (`p50`, `p90`, `p99`, `max`) at most `threshold_ms`,
/// or an error rate (`error_rate`) at most `max_error_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// The expression as written.
    pub expr: String,
    /// `e2e`, `first_output`, or a stage name.
    pub metric: String,
    /// `p50`, `p90`, `p99`, `max` or `error_rate`.
    pub stat: String,
    /// The latency threshold, in milliseconds (0 for an error-rate objective).
    pub threshold_ms: f64,
    /// The error-rate threshold as a fraction (`1%` is 0.01); `None` for a latency
    /// objective.
    pub max_error_rate: Option<f64>,
}

/// An objective, measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloResult {
    /// The expression.
    pub expr: String,
    /// A latency objective's measured statistic, in milliseconds (absent from JSON for an
    /// error-rate objective).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_ms: Option<f64>,
    /// An error-rate objective's measured error rate, a fraction (absent from JSON for a
    /// latency objective).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// The share of traces that violate it. Latency: traces over the threshold. Error
    /// rate: traces with an error (in the stage, for a stage). For a stage: of the traces
    /// that have it.
    pub violation_rate: f64,
    /// Whether the measured value meets the threshold (never without data).
    pub pass: bool,
}

/// Parses an error-rate threshold: a percentage from 0% to 100%, as a fraction.
fn percentage(rhs: &str) -> Option<f64> {
    let value: f64 = rhs.strip_suffix('%')?.trim().parse().ok()?;
    (value.is_finite() && (0.0..=100.0).contains(&value)).then_some(value / 100.0)
}

impl Slo {
    /// Parses `METRIC.STAT<=THRESHOLD`: a latency statistic with a threshold in `us`, `ms`
    /// or `s`, or `error_rate` with a percentage (`<=1%`, `<=0.5%`).
    ///
    /// ```
    /// use tracewire_collector::{Slo, SloError};
    ///
    /// let s = Slo::parse("process.spawn.p50<=5ms").unwrap();
    /// assert_eq!((s.metric.as_str(), s.stat.as_str(), s.threshold_ms), ("process.spawn", "p50", 5.0));
    /// assert!(Slo::parse("e2e.p99<250ms").is_err());
    /// assert_eq!(Slo::parse("e2e.max<=1.5s").unwrap().threshold_ms, 1500.0);
    ///
    /// let e = Slo::parse("process.spawn.error_rate<=0.5%").unwrap();
    /// assert_eq!((e.metric.as_str(), e.stat.as_str(), e.max_error_rate), ("process.spawn", "error_rate", Some(0.005)));
    /// assert!(matches!(Slo::parse("e2e.error_rate<=0.01"), Err(SloError::ErrorRateThreshold(_))));
    /// ```
    ///
    /// # Errors
    /// An [`SloError`] naming what is wrong.
    pub fn parse(expr: &str) -> Result<Self, SloError> {
        let e = expr.trim();
        let (lhs, rhs) = e.split_once("<=").ok_or_else(|| SloError::Syntax(e.to_owned()))?;
        let (metric, stat) = lhs.trim().rsplit_once('.').ok_or_else(|| SloError::Syntax(e.to_owned()))?;
        if metric.is_empty() {
            return Err(SloError::Syntax(e.to_owned()));
        }
        let rhs = rhs.trim();
        if stat == "error_rate" {
            if metric == "first_output" {
                return Err(SloError::ErrorRateMetric(e.to_owned()));
            }
            let rate = percentage(rhs).ok_or_else(|| SloError::ErrorRateThreshold(e.to_owned()))?;
            return Ok(Self {
                expr: e.to_owned(),
                metric: metric.to_owned(),
                stat: stat.to_owned(),
                threshold_ms: 0.0,
                max_error_rate: Some(rate),
            });
        }
        if !matches!(stat, "p50" | "p90" | "p99" | "max") {
            return Err(SloError::Stat(e.to_owned()));
        }
        let (number, scale) = if let Some(n) = rhs.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = rhs.strip_suffix("us") {
            (n, 0.001)
        } else if let Some(n) = rhs.strip_suffix('s') {
            (n, 1000.0)
        } else {
            return Err(SloError::Threshold(e.to_owned()));
        };
        let value: f64 = number.trim().parse().map_err(|_| SloError::Threshold(e.to_owned()))?;
        if !value.is_finite() || value < 0.0 {
            return Err(SloError::Threshold(e.to_owned()));
        }
        Ok(Self {
            expr: e.to_owned(),
            metric: metric.to_owned(),
            stat: stat.to_owned(),
            threshold_ms: value * scale,
            max_error_rate: None,
        })
    }

    /// Parses the objectives of an SLO file (TOML), in order:
    ///
    /// ```
    /// use tracewire_collector::Slo;
    ///
    /// let slos = Slo::parse_toml(r#"
    /// slos = ["e2e.p99<=250ms", "first_output.p90<=50ms", "process.spawn.p50<=5ms", "process.spawn.error_rate<=1%"]
    /// "#).unwrap();
    /// assert_eq!(slos.len(), 4);
    /// assert_eq!(slos[1].metric, "first_output");
    /// assert_eq!(slos[3].max_error_rate, Some(0.01));
    /// assert!(Slo::parse_toml("slo = []").is_err());
    /// ```
    ///
    /// # Errors
    /// [`SloError::File`] for TOML that is not `slos = [strings]`; the error of the first
    /// expression that does not parse.
    pub fn parse_toml(text: &str) -> Result<Vec<Self>, SloError> {
        let file: SloFile = toml::from_str(text).map_err(|e| SloError::File(e.to_string()))?;
        file.slos.iter().map(|e| Self::parse(e)).collect()
    }

    /// Whether this is an error-rate objective (`STAT` is `error_rate`).
    pub fn is_error_rate(&self) -> bool {
        self.max_error_rate.is_some()
    }

    fn pick(&self, s: &LatencyStats) -> f64 {
        match self.stat.as_str() {
            "p50" => s.p50_ms,
            "p90" => s.p90_ms,
            "p99" => s.p99_ms,
            _ => s.max_ms,
        }
    }

    pub(crate) fn evaluate(&self, summary: &Observed<'_>) -> SloResult {
        let traces = summary.measures;
        if let Some(max) = self.max_error_rate {
            return self.evaluate_error_rate(max, summary);
        }
        let threshold_ns = self.threshold_ms * 1e6;
        #[allow(clippy::cast_precision_loss)]
        let over = |ns: &i64| *ns as f64 > threshold_ns;
        let (stats, per_trace): (LatencyStats, Vec<bool>) = match self.metric.as_str() {
            "e2e" => {
                (summary.e2e, traces.iter().filter(|t| !t.e2e.is_empty()).map(|t| t.e2e.iter().any(over)).collect())
            }
            "first_output" => {
                (summary.first_output, traces.iter().filter_map(|t| t.first_output.as_ref().map(over)).collect())
            }
            stage => (
                summary.stages.iter().find(|s| s.stage == stage).map(|s| s.stats).unwrap_or_default(),
                traces.iter().filter_map(|t| t.stages.get(stage).map(|d| d.iter().any(over))).collect(),
            ),
        };
        let value_ms = self.pick(&stats);
        SloResult {
            expr: self.expr.clone(),
            value_ms: Some(value_ms),
            error_rate: None,
            violation_rate: share(&per_trace),
            pass: stats.count > 0 && value_ms <= self.threshold_ms,
        }
    }

    /// `e2e`: traces with an error over all traces; a stage: its error spans over its spans.
    fn evaluate_error_rate(&self, max: f64, summary: &Observed<'_>) -> SloResult {
        let traces = summary.measures;
        let (count, rate, per_trace): (usize, f64, Vec<bool>) = if self.metric == "e2e" {
            #[allow(clippy::cast_precision_loss)]
            let rate =
                if summary.traces == 0 { 0.0 } else { summary.traces_with_errors as f64 / summary.traces as f64 };
            (summary.traces, rate, traces.iter().map(|t| t.has_error).collect())
        } else {
            let stage = summary.stages.iter().find(|s| s.stage == self.metric);
            (
                stage.map_or(0, |s| s.stats.count),
                stage.map_or(0.0, |s| s.error_rate),
                traces.iter().filter_map(|t| t.stage_errors.get(&self.metric).map(|&n| n > 0)).collect(),
            )
        };
        SloResult {
            expr: self.expr.clone(),
            value_ms: None,
            error_rate: Some(rate),
            violation_rate: share(&per_trace),
            // A rate equal to the threshold passes, whatever the rounding of either side.
            pass: count > 0 && rate <= max + 1e-12,
        }
    }
}

/// The share of `true`s (0 for none).
fn share(flags: &[bool]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    if flags.is_empty() { 0.0 } else { flags.iter().filter(|v| **v).count() as f64 / flags.len() as f64 }
}
