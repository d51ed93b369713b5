//! Two runs compared stage by stage: did a change make the remote path faster, and which
//! stage moved?
//!
//! Each run is reduced to per-trace samples ([`RunSamples`]): per stage, the trace's total
//! time in that stage (the sum of the durations of its spans of that stage, stages named as
//! the report names them: the `tracewire.stage` attribute, else the span name); the
//! end-to-end time (the trace's longest root, after the report's clock-skew correction);
//! the first output; the stage's time on the trace's critical path; errors. A stage's
//! `count` is the number of traces that have it.
//!
//! [`diff`] then compares every stage present on both sides, the end to end and the first
//! output:
//! - p50, p90 and p99 on each side (nearest rank, as the report), their change in ms and in
//!   % of the base;
//! - a bootstrap interval for each percentile's change, over traces: [`DiffOptions::resamples`]
//!   rounds (default 2,000) each resample both sides with replacement and record the change;
//!   the interval is the percentile method's, at [`DiffOptions::confidence`]. Each
//!   resample's percentile is drawn through its order statistic
//!   ([`stats::resampled_percentile`]), which has exactly the distribution of resampling
//!   every trace, so the cost does not grow with the number of traces (no subsampling);
//!   the generator is seeded ([`DiffOptions::seed`], default [`DEFAULT_SEED`]), per stage
//!   from the seed and the stage's name, so a stage's interval does not depend on the
//!   other stages;
//! - the Mann-Whitney U test of a shift of the distribution (normal approximation, tie and
//!   continuity corrected), its p-values adjusted by Holm's method over every row compared
//!   (the stages, the end to end and the first output);
//! - a verdict: `slower` when the adjusted p-value is below `1 - confidence` **and** the
//!   interval of the p50 change lies wholly above 0; `faster` when it lies wholly below 0;
//!   else `unchanged`. Requiring both keeps a shift that is detectable but does not move
//!   the median (in the tail only, or a reordering) from being reported as a change of
//!   the typical run. A run compared with itself is `unchanged` everywhere (U is exactly
//!   its mean, p = 1).
//!
//! Stages present on one side only are listed apart ([`Diff::only_in_base`],
//! [`Diff::only_in_new`]); each row carries both sides' error rates and critical-path
//! shares and their changes.
//!
//! ```
//! use std::collections::BTreeMap;
//! use tracewire_collector::SpanRecord;
//! use tracewire_collector::diff::{DiffOptions, RunSamples, Verdict, diff};
//!
//! // 200 traces of exec > process.spawn; in `new` the spawn takes 2 ms longer.
//! let run = |extra_ms: i64| {
//!     let mut samples = RunSamples::new();
//!     for i in 0..200i64 {
//!         let spawn_ms = 3 + i % 7 + extra_ms;
//!         let span = |id: &str, parent: Option<&str>, stage: &str, end_ms: i64| SpanRecord {
//!             trace_id: format!("{i:032x}"), span_id: id.into(), parent_id: parent.map(Into::into),
//!             name: stage.into(), start_ns: 0, end_ns: end_ms * 1_000_000, ..SpanRecord::default()
//!         };
//!         samples.add_trace(vec![span("1", None, "exec", 10 + spawn_ms), span("2", Some("1"), "process.spawn", spawn_ms)]);
//!     }
//!     samples
//! };
//! let d = diff(&run(0), &run(2), &DiffOptions::default()).unwrap();
//! let spawn = d.stages.iter().find(|r| r.stage == "process.spawn").unwrap();
//! assert_eq!(spawn.verdict, Verdict::Slower);
//! assert_eq!(spawn.p50_change_ms, 2.0);
//! assert_eq!(diff(&run(0), &run(0), &DiffOptions::default()).unwrap().e2e.verdict, Verdict::Unchanged);
//! ```

pub mod stats;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::{Analyzer, KeepPolicy, SpanRecord};
use stats::{Rng, bootstrap_change_ci, holm, mann_whitney, percentile};

/// The seed of the bootstrap when none is given.
pub const DEFAULT_SEED: u64 = 0x7261_6365_7769_7265;

/// The bootstrap rounds when none are given.
pub const DEFAULT_RESAMPLES: usize = 2_000;

/// The row name of the end-to-end time (in [`FailOn`] too).
pub const E2E: &str = "e2e";

/// The row name of the first output (in [`FailOn`] too).
pub const FIRST_OUTPUT: &str = "first_output";

/// A diff could not be computed, or a `--fail-on` expression is malformed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// The confidence is not strictly between 0 and 1.
    #[error("confidence {0} is not between 0 and 1 (e.g. 0.95)")]
    Confidence(f64),
    /// A `--fail-on` expression does not follow `STAGE.PCT>+N%` or `STAGE.PCT>+Nms`.
    #[error("{expr:?}: {reason} (expected STAGE.PCT>+N% or STAGE.PCT>+Nms, PCT p50, p90 or p99, e.g. 'e2e.p90>+10%')")]
    FailOn {
        /// The expression.
        expr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One stage's per-trace samples in one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageSamples {
    /// Per trace that has the stage, its total time in it (ms).
    pub per_trace_ms: Vec<f64>,
    /// Spans of the stage.
    pub spans: usize,
    /// Spans of the stage whose status is ERROR.
    pub errors: usize,
    /// The stage's time on the critical paths, summed over traces (ms).
    pub critical_ms: f64,
    /// The same in nanoseconds: summed exactly, so the sum does not depend on the order
    /// of the traces.
    critical_ns: i64,
}

/// One run reduced to per-trace samples: what [`diff`] compares. Fed one trace at a time,
/// it keeps a few numbers per trace and stage, never the spans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSamples {
    /// Traces added.
    pub traces: usize,
    /// Spans added.
    pub spans: usize,
    /// Traces with a span whose status is ERROR.
    pub traces_with_errors: usize,
    /// Per trace with a root, its end-to-end time: its longest root (ms).
    pub e2e_ms: Vec<f64>,
    /// Per trace with an output, its first output ([`crate::Summary::first_output`], ms).
    pub first_output_ms: Vec<f64>,
    /// Per stage.
    pub stages: BTreeMap<String, StageSamples>,
    /// The critical paths' time, summed over traces (ms).
    pub critical_ms: f64,
    /// The same in nanoseconds (summed exactly, whatever the order of the traces).
    critical_ns: i64,
}

#[allow(clippy::cast_precision_loss)]
fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

impl RunSamples {
    /// No traces yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one trace: every span of it, and no span of another trace. The end to end,
    /// first output and critical path are the report's ([`Analyzer`] on this trace alone).
    pub fn add_trace(&mut self, trace: Vec<SpanRecord>) {
        if trace.is_empty() {
            return;
        }
        self.traces += 1;
        self.spans += trace.len();
        let mut per_stage: BTreeMap<&str, (i64, usize, usize)> = BTreeMap::new();
        for s in &trace {
            let e = per_stage.entry(s.stage()).or_default();
            e.0 += s.duration_ns();
            e.1 += 1;
            e.2 += usize::from(s.is_error());
        }
        for (stage, (ns, spans, errors)) in per_stage {
            let samples = match self.stages.get_mut(stage) {
                Some(s) => s,
                None => self.stages.entry(stage.to_owned()).or_default(),
            };
            samples.per_trace_ms.push(ms(ns));
            samples.spans += spans;
            samples.errors += errors;
        }
        let mut one = Analyzer::with_policy(&[], KeepPolicy { slowest: 0, error_cap: 0, traces: Vec::new() });
        one.add_trace(trace);
        let summary = one.finish();
        self.traces_with_errors += summary.traces_with_errors;
        if summary.e2e.count > 0 {
            self.e2e_ms.push(summary.e2e.max_ms);
        }
        if summary.first_output.count > 0 {
            self.first_output_ms.push(summary.first_output.p50_ms);
        }
        for c in summary.critical_path {
            // The analyzer's milliseconds are whole nanoseconds / 1e6: back to those exactly.
            #[allow(clippy::cast_possible_truncation)]
            let ns = (c.total_ms * 1e6).round() as i64;
            self.critical_ns += ns;
            self.critical_ms = ms(self.critical_ns);
            if let Some(s) = self.stages.get_mut(&c.stage) {
                s.critical_ns += ns;
                s.critical_ms = ms(s.critical_ns);
            }
        }
    }

    /// The trace error rate.
    #[allow(clippy::cast_precision_loss)]
    pub fn error_rate(&self) -> f64 {
        if self.traces == 0 { 0.0 } else { self.traces_with_errors as f64 / self.traces as f64 }
    }
}

/// How [`diff`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DiffOptions {
    /// The confidence of the intervals and of the verdicts (the significance level is
    /// `1 - confidence`).
    pub confidence: f64,
    /// The bootstrap's seed.
    pub seed: u64,
    /// The bootstrap's rounds.
    pub resamples: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self { confidence: 0.95, seed: DEFAULT_SEED, resamples: DEFAULT_RESAMPLES }
    }
}

/// A row's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Significantly slower, the p50's interval above 0.
    Slower,
    /// Significantly faster, the p50's interval below 0.
    Faster,
    /// Neither.
    Unchanged,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Slower => "slower",
            Self::Faster => "faster",
            Self::Unchanged => "unchanged",
        })
    }
}

/// One side of a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Side {
    /// Samples: traces with the stage (with a root, for `e2e`; with an output, for
    /// `first_output`).
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Spans of the stage (traces, for `e2e` and `first_output`).
    pub spans: usize,
    /// Of those, with status ERROR (traces with an error, for `e2e`).
    pub errors: usize,
    /// `errors / spans`.
    pub error_rate: f64,
    /// The stage's share of the critical paths' time (1 for `e2e`, 0 for `first_output`).
    pub critical_share: f64,
}

/// One compared row: a stage, `e2e` or `first_output`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The stage (or `e2e`, `first_output`).
    pub stage: String,
    /// The base run.
    pub base: Side,
    /// The new run.
    pub new: Side,
    /// `new.p50_ms - base.p50_ms`.
    pub p50_change_ms: f64,
    /// The change in % of the base (`None` when the base is 0).
    pub p50_change_pct: Option<f64>,
    /// The bootstrap interval of the p50 change.
    pub p50_ci_ms: [f64; 2],
    /// `new.p90_ms - base.p90_ms`.
    pub p90_change_ms: f64,
    /// The change in % of the base (`None` when the base is 0).
    pub p90_change_pct: Option<f64>,
    /// The bootstrap interval of the p90 change.
    pub p90_ci_ms: [f64; 2],
    /// `new.p99_ms - base.p99_ms`.
    pub p99_change_ms: f64,
    /// The change in % of the base (`None` when the base is 0).
    pub p99_change_pct: Option<f64>,
    /// The bootstrap interval of the p99 change.
    pub p99_ci_ms: [f64; 2],
    /// The Mann-Whitney p-value, Holm-adjusted over the rows compared: what the verdict uses.
    pub p_value: f64,
    /// The Mann-Whitney p-value before the adjustment.
    pub p_value_raw: f64,
    /// `new.error_rate - base.error_rate`.
    pub error_rate_change: f64,
    /// `new.critical_share - base.critical_share`.
    pub critical_share_change: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// The percentiles a row reports and [`FailOn`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pct {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
}

impl fmt::Display for Pct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P99 => "p99",
        })
    }
}

impl Row {
    /// A side's value of `pct`.
    pub fn side_value(side: &Side, pct: Pct) -> f64 {
        match pct {
            Pct::P50 => side.p50_ms,
            Pct::P90 => side.p90_ms,
            Pct::P99 => side.p99_ms,
        }
    }

    /// The change of `pct`: ms, % of the base, interval.
    pub fn change(&self, pct: Pct) -> (f64, Option<f64>, [f64; 2]) {
        match pct {
            Pct::P50 => (self.p50_change_ms, self.p50_change_pct, self.p50_ci_ms),
            Pct::P90 => (self.p90_change_ms, self.p90_change_pct, self.p90_ci_ms),
            Pct::P99 => (self.p99_change_ms, self.p99_change_pct, self.p99_ci_ms),
        }
    }
}

/// A stage present in one run only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OneSided {
    /// The stage.
    pub stage: String,
    /// Its figures in the run that has it.
    #[serde(flatten)]
    pub side: Side,
}

/// A run's totals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunTotals {
    /// Traces.
    pub traces: usize,
    /// Spans.
    pub spans: usize,
    /// Traces with a span whose status is ERROR.
    pub traces_with_errors: usize,
    /// `traces_with_errors / traces`.
    pub error_rate: f64,
}

/// Two runs compared (`diff.json`'s shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    /// The base run.
    pub base: RunTotals,
    /// The new run.
    pub new: RunTotals,
    /// The end-to-end time.
    pub e2e: Row,
    /// The first output (`None` when neither run has one).
    pub first_output: Option<Row>,
    /// The stages present on both sides, by name.
    pub stages: Vec<Row>,
    /// Stages present in the base only.
    pub only_in_base: Vec<OneSided>,
    /// Stages present in the new run only.
    pub only_in_new: Vec<OneSided>,
    /// How it was decided.
    pub options: DiffOptions,
}

impl Diff {
    /// The row named `stage` (`e2e`, `first_output` or a stage on both sides).
    pub fn row(&self, stage: &str) -> Option<&Row> {
        match stage {
            E2E => Some(&self.e2e),
            FIRST_OUTPUT => self.first_output.as_ref(),
            _ => self.stages.iter().find(|r| r.stage == stage),
        }
    }

    /// Every compared row: the end to end, the first output, then the stages.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        std::iter::once(&self.e2e).chain(self.first_output.as_ref()).chain(&self.stages)
    }

    /// The significance level, `1 - confidence`.
    pub fn alpha(&self) -> f64 {
        1.0 - self.options.confidence
    }

    /// Whether `rule` is violated: its row's adjusted p-value is below [`Diff::alpha`],
    /// the interval of its percentile's change lies wholly above 0, and the change is over
    /// the threshold. A row missing on either side never violates.
    pub fn violates(&self, rule: &FailOn) -> bool {
        let Some(row) = self.row(&rule.stage) else { return false };
        let (change_ms, change_pct, ci) = row.change(rule.pct);
        let over = match rule.threshold {
            Threshold::Ms(n) => change_ms > n,
            Threshold::Pct(n) => change_pct.is_some_and(|p| p > n),
        };
        row.p_value < self.alpha() && ci[0] > 0.0 && over
    }
}

fn side(sorted: &[f64], spans: usize, errors: usize, critical_share: f64) -> Side {
    #[allow(clippy::cast_precision_loss)]
    let error_rate = if spans == 0 { 0.0 } else { errors as f64 / spans as f64 };
    Side {
        count: sorted.len(),
        p50_ms: percentile(sorted, 50.0),
        p90_ms: percentile(sorted, 90.0),
        p99_ms: percentile(sorted, 99.0),
        spans,
        errors,
        error_rate,
        critical_share,
    }
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    v
}

fn pct_change(base: f64, new: f64) -> Option<f64> {
    (base != 0.0).then(|| (new - base) / base * 100.0)
}

/// The seed of one row's generator: the seed mixed with the row's name (FNV-1a).
fn row_seed(seed: u64, stage: &str) -> u64 {
    stage.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A row before the adjustment: its p-value raw, verdict unchanged.
fn compare(stage: &str, base: (&[f64], Side), new: (&[f64], Side), options: &DiffOptions) -> Row {
    let (b, n) = (sorted(base.0), sorted(new.0));
    let (bs, ns) = (base.1, new.1);
    let mut rng = Rng::new(row_seed(options.seed, stage));
    let mut ci = |p: f64| bootstrap_change_ci(&b, &n, p, options.resamples, options.confidence, &mut rng);
    let (ci50, ci90, ci99) = (ci(50.0), ci(90.0), ci(99.0));
    let test = mann_whitney(&n, &b);
    Row {
        stage: stage.to_owned(),
        base: bs,
        new: ns,
        p50_change_ms: ns.p50_ms - bs.p50_ms,
        p50_change_pct: pct_change(bs.p50_ms, ns.p50_ms),
        p50_ci_ms: ci50,
        p90_change_ms: ns.p90_ms - bs.p90_ms,
        p90_change_pct: pct_change(bs.p90_ms, ns.p90_ms),
        p90_ci_ms: ci90,
        p99_change_ms: ns.p99_ms - bs.p99_ms,
        p99_change_pct: pct_change(bs.p99_ms, ns.p99_ms),
        p99_ci_ms: ci99,
        p_value: test.p_value,
        p_value_raw: test.p_value,
        error_rate_change: ns.error_rate - bs.error_rate,
        critical_share_change: ns.critical_share - bs.critical_share,
        verdict: Verdict::Unchanged,
    }
}

/// Compares `base` with `new` (see the module's documentation for the method).
///
/// # Errors
///
/// [`DiffError::Confidence`] when `options.confidence` is not strictly between 0 and 1.
pub fn diff(base: &RunSamples, new: &RunSamples, options: &DiffOptions) -> Result<Diff, DiffError> {
    if !(options.confidence > 0.0 && options.confidence < 1.0) {
        return Err(DiffError::Confidence(options.confidence));
    }
    let share =
        |run: &RunSamples, s: &StageSamples| if run.critical_ms > 0.0 { s.critical_ms / run.critical_ms } else { 0.0 };
    let stage_side =
        |run: &RunSamples, s: &StageSamples| side(&sorted(&s.per_trace_ms), s.spans, s.errors, share(run, s));
    let totals = |run: &RunSamples| RunTotals {
        traces: run.traces,
        spans: run.spans,
        traces_with_errors: run.traces_with_errors,
        error_rate: run.error_rate(),
    };
    let e2e_side = |run: &RunSamples| {
        let v = sorted(&run.e2e_ms);
        let mut s = side(&v, run.traces, run.traces_with_errors, 1.0);
        s.critical_share = if run.critical_ms > 0.0 { 1.0 } else { 0.0 };
        s
    };
    let first_side = |run: &RunSamples| side(&sorted(&run.first_output_ms), run.first_output_ms.len(), 0, 0.0);
    let mut e2e = compare(E2E, (&base.e2e_ms, e2e_side(base)), (&new.e2e_ms, e2e_side(new)), options);
    let mut first_output = (!base.first_output_ms.is_empty() || !new.first_output_ms.is_empty()).then(|| {
        compare(
            FIRST_OUTPUT,
            (&base.first_output_ms, first_side(base)),
            (&new.first_output_ms, first_side(new)),
            options,
        )
    });
    let mut stages = Vec::new();
    let mut only_in_base = Vec::new();
    for (name, b) in &base.stages {
        match new.stages.get(name) {
            Some(n) => stages.push(compare(
                name,
                (&b.per_trace_ms, stage_side(base, b)),
                (&n.per_trace_ms, stage_side(new, n)),
                options,
            )),
            None => only_in_base.push(OneSided { stage: name.clone(), side: stage_side(base, b) }),
        }
    }
    let only_in_new = new
        .stages
        .iter()
        .filter(|(name, _)| !base.stages.contains_key(*name))
        .map(|(name, n)| OneSided { stage: name.clone(), side: stage_side(new, n) })
        .collect();
    // Holm over every compared row.
    let alpha = 1.0 - options.confidence;
    {
        let mut rows: Vec<&mut Row> =
            std::iter::once(&mut e2e).chain(first_output.as_mut()).chain(&mut stages).collect();
        let raw: Vec<f64> = rows.iter().map(|r| r.p_value_raw).collect();
        for (row, adjusted) in rows.iter_mut().zip(holm(&raw)) {
            row.p_value = adjusted;
            row.verdict = if adjusted >= alpha {
                Verdict::Unchanged
            } else if row.p50_ci_ms[0] > 0.0 {
                Verdict::Slower
            } else if row.p50_ci_ms[1] < 0.0 {
                Verdict::Faster
            } else {
                Verdict::Unchanged
            };
        }
    }
    Ok(Diff {
        base: totals(base),
        new: totals(new),
        e2e,
        first_output,
        stages,
        only_in_base,
        only_in_new,
        options: *options,
    })
}

/// The threshold of a [`FailOn`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Threshold {
    /// Milliseconds over the base.
    Ms(f64),
    /// Percent of the base.
    Pct(f64),
}

/// A regression gate, `STAGE.PCT>+N%` or `STAGE.PCT>+Nms` (`STAGE` a stage name, `e2e` or
/// `first_output`; `PCT` p50, p90 or p99): violated when the change of that percentile is
/// significant and over the threshold ([`Diff::violates`]).
///
/// ```
/// use tracewire_collector::diff::{FailOn, Pct, Threshold};
///
/// let rule: FailOn = "process.spawn.p90>+2.5ms".parse().unwrap();
/// assert_eq!((rule.stage.as_str(), rule.pct, rule.threshold), ("process.spawn", Pct::P90, Threshold::Ms(2.5)));
/// assert_eq!("e2e.p50>+10%".parse::<FailOn>().unwrap().threshold, Threshold::Pct(10.0));
/// assert!("e2e.p50>10%".parse::<FailOn>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailOn {
    /// The expression as given.
    pub expr: String,
    /// The row.
    pub stage: String,
    /// The percentile.
    pub pct: Pct,
    /// The threshold.
    pub threshold: Threshold,
}

impl FromStr for FailOn {
    type Err = DiffError;

    fn from_str(expr: &str) -> Result<Self, DiffError> {
        let fail = |reason| DiffError::FailOn { expr: expr.to_owned(), reason };
        let (lhs, rhs) =
            expr.split_once(">+").ok_or_else(|| fail("no '>+' between the percentile and the threshold"))?;
        let (stage, pct) = lhs.rsplit_once('.').ok_or_else(|| fail("no '.' between the stage and the percentile"))?;
        let stage = stage.trim();
        if stage.is_empty() {
            return Err(fail("no stage"));
        }
        let pct = match pct.trim() {
            "p50" => Pct::P50,
            "p90" => Pct::P90,
            "p99" => Pct::P99,
            _ => return Err(fail("the percentile is not p50, p90 or p99")),
        };
        let rhs = rhs.trim();
        let (number, make): (&str, fn(f64) -> Threshold) = if let Some(n) = rhs.strip_suffix("ms") {
            (n, Threshold::Ms)
        } else if let Some(n) = rhs.strip_suffix('%') {
            (n, Threshold::Pct)
        } else {
            return Err(fail("the threshold ends neither in % nor in ms"));
        };
        let n: f64 = number.trim().parse().map_err(|_| fail("the threshold is not a number"))?;
        if !n.is_finite() || n < 0.0 || number.trim().starts_with(['+', '-']) {
            return Err(fail("the threshold is not a non-negative number"));
        }
        Ok(Self { expr: expr.to_owned(), stage: stage.to_owned(), pct, threshold: make(n) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace of a root and a child on its critical path, of durations that do not add up
    /// exactly as milliseconds in floating point.
    fn trace(i: i64) -> Vec<SpanRecord> {
        let root_ns = 1_000_003 + (i * 7_919) % 100_003;
        let span = |id: &str, parent: Option<&str>, stage: &str, end_ns: i64| SpanRecord {
            trace_id: format!("{i:032x}"),
            span_id: id.into(),
            parent_id: parent.map(Into::into),
            name: stage.into(),
            start_ns: 0,
            end_ns,
            ..SpanRecord::default()
        };
        vec![span("1", None, "exec", root_ns), span("2", Some("1"), "process", root_ns - 1_013 - i % 17)]
    }

    /// The critical paths' times are summed in whole nanoseconds: the same traces in any
    /// order give the same figures, to the last bit (in floating point, (a + b) + c is not
    /// always a + (b + c)), so every reader of the same spans gives the same comparison.
    #[test]
    fn critical_path_sums_do_not_depend_on_the_order_of_the_traces() {
        let (mut forward, mut backward) = (RunSamples::new(), RunSamples::new());
        for i in 0..2_000 {
            forward.add_trace(trace(i));
            backward.add_trace(trace(1_999 - i));
        }
        assert!(forward.critical_ms > 0.0);
        assert_eq!(forward.critical_ms.to_bits(), backward.critical_ms.to_bits());
        assert_eq!(forward.stages.keys().collect::<Vec<_>>(), ["exec", "process"]);
        for (stage, s) in &forward.stages {
            assert!(s.critical_ms > 0.0, "{stage}");
            assert_eq!(s.critical_ms.to_bits(), backward.stages[stage].critical_ms.to_bits(), "{stage}");
        }
    }
}
