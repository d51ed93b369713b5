//! Service-level objectives: `METRIC.STAT<=THRESHOLD`, e.g. `e2e.p99<=250ms`,
//! `first_output.p90<=50ms`, `process.spawn.p50<=5ms`.

use serde::Serialize;

use crate::analysis::{LatencyStats, Summary, TraceMeasures};

/// Why an SLO expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SloError {
    /// The expression is not `METRIC.STAT<=NUMBERUNIT`.
    #[error("SLO {0:?}: expected METRIC.STAT<=THRESHOLD, e.g. e2e.p99<=250ms")]
    Syntax(String),
    /// The statistic is not p50, p90, p99 or max.
    #[error("SLO {0:?}: the statistic must be p50, p90, p99 or max")]
    Stat(String),
    /// The threshold is not a number with a unit (us, ms, s).
    #[error("SLO {0:?}: the threshold must be a number with a unit (us, ms or s)")]
    Threshold(String),
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

/// One objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// The expression as written.
    pub expr: String,
    /// `e2e`, `first_output`, or a stage name.
    pub metric: String,
    /// `p50`, `p90`, `p99` or `max`.
    pub stat: String,
    /// The threshold, in milliseconds.
    pub threshold_ms: f64,
}

/// An objective, measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloResult {
    /// The expression.
    pub expr: String,
    /// The measured statistic, in milliseconds.
    pub value_ms: f64,
    /// The share of traces over the threshold (for a stage: of the traces that have it).
    pub violation_rate: f64,
    /// Whether the statistic meets the threshold.
    pub pass: bool,
}

impl Slo {
    /// Parses `METRIC.STAT<=THRESHOLD`.
    ///
    /// ```
    /// use tracewire_collector::Slo;
    ///
    /// let s = Slo::parse("process.spawn.p50<=5ms").unwrap();
    /// assert_eq!((s.metric.as_str(), s.stat.as_str(), s.threshold_ms), ("process.spawn", "p50", 5.0));
    /// assert!(Slo::parse("e2e.p99<250ms").is_err());
    /// assert_eq!(Slo::parse("e2e.max<=1.5s").unwrap().threshold_ms, 1500.0);
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
        if !matches!(stat, "p50" | "p90" | "p99" | "max") {
            return Err(SloError::Stat(e.to_owned()));
        }
        let rhs = rhs.trim();
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
        Ok(Self { expr: e.to_owned(), metric: metric.to_owned(), stat: stat.to_owned(), threshold_ms: value * scale })
    }

    /// Parses the objectives of an SLO file (TOML), in order:
    ///
    /// ```
    /// use tracewire_collector::Slo;
    ///
    /// let slos = Slo::parse_toml(r#"
    /// slos = ["e2e.p99<=250ms", "first_output.p90<=50ms", "process.spawn.p50<=5ms"]
    /// "#).unwrap();
    /// assert_eq!(slos.len(), 3);
    /// assert_eq!(slos[1].metric, "first_output");
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

    fn pick(&self, s: &LatencyStats) -> f64 {
        match self.stat.as_str() {
            "p50" => s.p50_ms,
            "p90" => s.p90_ms,
            "p99" => s.p99_ms,
            _ => s.max_ms,
        }
    }

    pub(crate) fn evaluate(&self, summary: &Summary, traces: &[TraceMeasures]) -> SloResult {
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
        #[allow(clippy::cast_precision_loss)]
        let violation_rate = if per_trace.is_empty() {
            0.0
        } else {
            per_trace.iter().filter(|v| **v).count() as f64 / per_trace.len() as f64
        };
        SloResult {
            expr: self.expr.clone(),
            value_ms,
            violation_rate,
            pass: stats.count > 0 && value_ms <= self.threshold_ms,
        }
    }
}
