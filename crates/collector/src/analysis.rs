//! Grouping, skew correction and statistics.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::SpanRecord;
use crate::slo::{Observed, Slo, SloResult};
use crate::stats::TraceMeasures;
pub use crate::stats::{LatencyStats, StageStats};

/// The whole analysis, in the shape of `summary.json` (docs/report.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Traces seen.
    pub traces: usize,
    /// Spans seen.
    pub spans: usize,
    /// Spans whose parent is missing from their trace.
    pub orphans: usize,
    /// Traces with at least one span whose status is ERROR.
    pub traces_with_errors: usize,
    /// The share of root time that no descendant span covers.
    pub unattributed_fraction: f64,
    /// End-to-end latency per root span.
    pub e2e: LatencyStats,
    /// From the client's Start call to the first Output delivered, per trace.
    pub first_output: LatencyStats,
    /// Per-stage latency, by stage name.
    pub stages: Vec<StageStats>,
    /// SLO results, in the order given.
    pub slos: Vec<SloResult>,
    /// Where the critical paths of all traces spent their time, by stage, largest first.
    pub critical_path: Vec<CriticalShare>,
    /// Clock offsets per pair of services (client, server), over all traces.
    pub clock: Vec<crate::clock::ClockOffset>,
    /// How the percentiles are computed: exact, or estimated within a relative error once a
    /// list of durations is long.
    pub percentiles: Percentiles,
}

/// How the percentiles of a [`Summary`] are computed (`summary.json`'s `percentiles`):
/// `"exact"`, or `{"ddsketch": {"relative_error": 0.005}}`.
///
/// A stage keeps its durations for exact nearest-rank percentiles up to
/// [`EXACT_DURATIONS`] of them; past that it moves them into a DDSketch-style histogram.
///
/// ```
/// use tracewire_collector::Percentiles;
///
/// assert_eq!(serde_json::to_string(&Percentiles::Exact).unwrap(), r#""exact""#);
/// let sketch = Percentiles::Sketch { relative_error: 0.005 };
/// assert_eq!(serde_json::to_string(&sketch).unwrap(), r#"{"ddsketch":{"relative_error":0.005}}"#);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Percentiles {
    /// Nearest rank over every duration (the analysis keeps 4 bytes per span for it, 8 for
    /// a span of over 4.29 s).
    #[default]
    Exact,
    /// At least one list held over [`EXACT_DURATIONS`] durations: its p50, p90 and p99 are
    /// within `relative_error` of the nearest-rank value (a log-bucketed histogram,
    /// DDSketch-style); counts and maxima stay exact. Lists under the threshold stay exact.
    #[serde(rename = "ddsketch")]
    Sketch {
        /// The bound on `|estimate - exact| / |exact|`.
        relative_error: f64,
    },
}

/// How many durations a stage keeps for exact percentiles before it estimates them
/// ([`Percentiles::Sketch`]).
pub const EXACT_DURATIONS: usize = 16_384;

/// One stage's part of the critical paths, summed over traces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriticalShare {
    /// The stage.
    pub stage: String,
    /// Time on the critical paths, in milliseconds.
    pub total_ms: f64,
    /// Its share of the summed end-to-end time of the traces' longest roots.
    pub share: f64,
}

/// The nearest-rank percentile of sorted values: the value at rank `ceil(p/100 * n)`.
///
/// ```
/// use tracewire_collector::percentile_ns;
///
/// let v: Vec<i64> = (1..=100).collect();
/// assert_eq!(percentile_ns(&v, 50.0), 50);
/// assert_eq!(percentile_ns(&v, 99.0), 99);
/// assert_eq!(percentile_ns(&v, 100.0), 100);
/// assert_eq!(percentile_ns(&[], 50.0), 0);
/// ```
pub fn percentile_ns(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[allow(clippy::cast_precision_loss)]
fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

pub(crate) fn stats(mut ns: Vec<i64>) -> LatencyStats {
    ns.sort_unstable();
    LatencyStats {
        count: ns.len(),
        p50_ms: ms(percentile_ns(&ns, 50.0)),
        p90_ms: ms(percentile_ns(&ns, 90.0)),
        p99_ms: ms(percentile_ns(&ns, 99.0)),
        max_ms: ms(ns.last().copied().unwrap_or(0)),
    }
}

/// Durations (ns) kept for exact percentiles in 4 bytes each when they fit in a `u32`
/// (under 4.29 s, nearly every span), else in 8; past [`EXACT_DURATIONS`] of them, in a
/// sketch of bounded size ([`crate::sketch`]).
#[derive(Debug, Default)]
struct Durations {
    short: Vec<u32>,
    long: Vec<i64>,
    sketch: Option<Box<crate::sketch::Sketch>>,
}

impl Durations {
    fn push(&mut self, ns: i64) {
        if let Some(sketch) = &mut self.sketch {
            sketch.add(ns);
            return;
        }
        if self.len() == EXACT_DURATIONS {
            let mut sketch = Box::<crate::sketch::Sketch>::default();
            for &d in &self.short {
                sketch.add(i64::from(d));
            }
            for &d in &self.long {
                sketch.add(d);
            }
            sketch.add(ns);
            (self.short, self.long) = (Vec::new(), Vec::new());
            self.sketch = Some(sketch);
            return;
        }
        match u32::try_from(ns) {
            Ok(short) => {
                grow_gently(&mut self.short);
                self.short.push(short);
            }
            Err(_) => self.long.push(ns),
        }
    }

    fn len(&self) -> usize {
        match &self.sketch {
            #[allow(clippy::cast_possible_truncation)]
            Some(sketch) => sketch.count() as usize,
            None => self.short.len() + self.long.len(),
        }
    }

    /// Whether the percentiles are estimated ([`Percentiles::Sketch`]).
    fn estimated(&self) -> bool {
        self.sketch.is_some()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What [`stats`] gives for the same durations, up to [`EXACT_DURATIONS`] of them; past
    /// that, percentiles within [`crate::sketch::RELATIVE_ERROR`] of those.
    fn stats(mut self) -> LatencyStats {
        if let Some(sketch) = &self.sketch {
            return LatencyStats {
                count: self.len(),
                p50_ms: sketch.percentile(50.0) / 1e6,
                p90_ms: sketch.percentile(90.0) / 1e6,
                p99_ms: sketch.percentile(99.0) / 1e6,
                max_ms: ms(sketch.max()),
            };
        }
        self.short.sort_unstable();
        self.long.sort_unstable();
        // In order: the negative long ones, the short ones, the rest of the long ones.
        let negative = self.long.partition_point(|&ns| ns < 0);
        let (short, long) = (&self.short, &self.long);
        let nth = |i: usize| -> i64 {
            if i < negative {
                long[i]
            } else if i - negative < short.len() {
                i64::from(short[i - negative])
            } else {
                long[i - short.len()]
            }
        };
        let n = self.len();
        let at = |p: f64| {
            if n == 0 {
                return 0;
            }
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let rank = ((p / 100.0) * n as f64).ceil() as usize;
            nth(rank.clamp(1, n) - 1)
        };
        LatencyStats {
            count: n,
            p50_ms: ms(at(50.0)),
            p90_ms: ms(at(90.0)),
            p99_ms: ms(at(99.0)),
            max_ms: ms(if n == 0 { 0 } else { nth(n - 1) }),
        }
    }
}

/// Makes room for one more element in `v`, growing it by a quarter (at least 1,024) rather
/// than doubling it: the durations are most of what the analysis holds, and doubling would
/// let their spare capacity reach their size. Large blocks are reallocated by remapping
/// their pages, so growing more often copies nothing.
fn grow_gently<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.capacity() / 4).max(1024));
    }
}

/// Spans grouped by trace, in first-seen order.
pub(crate) fn by_trace(spans: &[SpanRecord]) -> Vec<Vec<SpanRecord>> {
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<SpanRecord>> = HashMap::new();
    for s in spans {
        let g = groups.entry(s.trace_id.as_str()).or_insert_with(|| {
            order.push(s.trace_id.as_str());
            Vec::new()
        });
        g.push(s.clone());
    }
    order.into_iter().filter_map(|t| groups.remove(t)).collect()
}

/// Spans grouped by trace, in first-seen order, each trace's spans in their given order.
///
/// ```
/// use tracewire_collector::{SpanRecord, into_traces};
///
/// let span = |trace: &str, id: &str| SpanRecord { trace_id: trace.into(), span_id: id.into(), ..Default::default() };
/// let traces = into_traces(vec![span("b", "1"), span("a", "2"), span("b", "3")]);
/// let ids: Vec<Vec<&str>> = traces.iter().map(|t| t.iter().map(|s| s.span_id.as_str()).collect()).collect();
/// assert_eq!(ids, [vec!["1", "3"], vec!["2"]]);
/// ```
pub fn into_traces(spans: Vec<SpanRecord>) -> Vec<Vec<SpanRecord>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut traces: Vec<Vec<SpanRecord>> = Vec::new();
    for s in spans {
        let i = if let Some(&i) = index.get(s.trace_id.as_str()) {
            i
        } else {
            index.insert(s.trace_id.clone(), traces.len());
            traces.push(Vec::new());
            traces.len() - 1
        };
        traces[i].push(s);
    }
    traces
}

/// The hasher of the analysis's maps: keys come from the analyzed traces, and the maps
/// live for one trace or hold stage names.
pub(crate) type Fast = foldhash::fast::RandomState;

/// The parent/child structure of one trace by span index, computed once per trace and
/// shared by the skew correction, the clock estimates, the critical path and the attributed
/// time. Spans that share an id (a malformed trace) are one node for their children, as a
/// map by id makes them; a span's parent is the last span with its parent id.
#[derive(Debug)]
pub(crate) struct Tree {
    /// Per span, the index of the first span with its id.
    first: Vec<usize>,
    /// Per span, its parent, when the trace has a span with its parent id.
    parent: Vec<Option<usize>>,
    /// The children of the spans with the id of span `i` (its `first`), by index:
    /// `kids[at[i]..at[i + 1]]`.
    at: Vec<usize>,
    kids: Vec<usize>,
}

impl Tree {
    pub(crate) fn new(spans: &[SpanRecord]) -> Self {
        let n = spans.len();
        let mut ids: HashMap<&str, (usize, usize), Fast> = HashMap::with_capacity_and_hasher(n, Fast::default());
        let mut first = Vec::with_capacity(n);
        for (i, s) in spans.iter().enumerate() {
            let e = ids.entry(s.span_id.as_str()).or_insert((i, i));
            e.1 = i;
            first.push(e.0);
        }
        let parent: Vec<Option<usize>> =
            spans.iter().map(|s| s.parent_id.as_deref().and_then(|p| ids.get(p)).map(|&(_, last)| last)).collect();
        // A counting sort of the children by their parent's first index, in index order.
        let mut at = vec![0usize; n + 1];
        for &p in parent.iter().flatten() {
            at[first[p]] += 1;
        }
        let mut running = 0;
        for a in &mut at {
            running += *a;
            *a = running;
        }
        let mut kids = vec![0usize; running];
        for (k, p) in parent.iter().enumerate().rev() {
            if let Some(p) = *p {
                let slot = &mut at[first[p]];
                *slot -= 1;
                kids[*slot] = k;
            }
        }
        Self { first, parent, at, kids }
    }

    /// The children of span `i` (of every span with its id), by index.
    pub(crate) fn children(&self, i: usize) -> &[usize] {
        let f = self.first[i];
        &self.kids[self.at[f]..self.at[f + 1]]
    }

    /// The parent of span `i`, when its trace has it.
    pub(crate) fn parent(&self, i: usize) -> Option<usize> {
        self.parent[i]
    }

    /// Spans whose parent is not in the trace.
    fn orphans(&self, spans: &[SpanRecord]) -> usize {
        spans.iter().zip(&self.parent).filter(|(s, p)| s.parent_id.is_some() && p.is_none()).count()
    }
}

pub(crate) fn children_of(spans: &[SpanRecord]) -> HashMap<&str, Vec<usize>> {
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        if let Some(p) = &s.parent_id {
            children.entry(p.as_str()).or_default().push(i);
        }
    }
    children
}

/// Shifts the spans of `service` in the subtree under `root` (inclusive) by `delta` ns,
/// each span at most once (`shifted`: per span index, the shift applied). `tree` gives the
/// children (shifting changes no ids, so it is computed once).
fn shift_subtree(
    spans: &mut [SpanRecord],
    tree: &Tree,
    root: usize,
    delta: i64,
    shifted: &mut [Option<i64>],
    visited: &mut Vec<bool>,
) {
    // Each span once: parent ids may form a cycle in a malformed trace.
    visited.clear();
    visited.resize(spans.len(), false);
    let mut stack = vec![root];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        if spans[i].service == spans[root].service && shifted[i].is_none() {
            shifted[i] = Some(delta);
            spans[i].start_ns += delta;
            spans[i].end_ns += delta;
        }
        stack.extend_from_slice(tree.children(i));
    }
}

/// Corrects clock skew between services within one trace, in place:
/// 1. under a span carrying `tracewire.clock.offset_us` (the server's clock minus the
///    client's, measured by the four-timestamp method), the server's spans are shifted
///    back by the offset of the best sample of that (client, server) pair in the trace:
///    the one with the smallest `tracewire.net.rtt_us`, as NTP chooses (see
///    [`ClockSample`](crate::ClockSample));
/// 2. then a child of another service that still falls outside its parent is shifted by
///    the least amount that puts it inside (when it fits), with its service's subtree.
///
/// Returns what it moved: `(span index, nanoseconds added to its start and end)`, by
/// index, each span at most once, never a zero shift (writers say so: the span warnings
/// of [`crate::jaeger`]).
///
/// ```
/// use std::collections::BTreeMap;
/// use tracewire_collector::{correct_skew, SpanRecord};
///
/// let mut spans = vec![
///     SpanRecord { span_id: "c".into(), service: "client".into(), start_ns: 1_000, end_ns: 9_000,
///         attributes: BTreeMap::from([("tracewire.clock.offset_us".into(), "5".into())]), ..Default::default() },
///     SpanRecord { span_id: "s".into(), parent_id: Some("c".into()), service: "server".into(),
///         start_ns: 7_000, end_ns: 12_000, ..Default::default() },
/// ];
/// let shifted = correct_skew(&mut spans);
/// assert_eq!((spans[1].start_ns, spans[1].end_ns), (2_000, 7_000));
/// assert_eq!(shifted, [(1, -5_000)]);
/// ```
pub fn correct_skew(spans: &mut [SpanRecord]) -> Vec<(usize, i64)> {
    correct_skew_clocked(spans).0
}

/// [`correct_skew`], and the trace's clock estimates per pair of services.
pub(crate) fn correct_skew_clocked(spans: &mut [SpanRecord]) -> (Vec<(usize, i64)>, Vec<crate::clock::PairEstimate>) {
    let tree = Tree::new(spans);
    correct_skew_tree(spans, &tree)
}

/// [`correct_skew_clocked`] with the trace's [`Tree`].
fn correct_skew_tree(spans: &mut [SpanRecord], tree: &Tree) -> (Vec<(usize, i64)>, Vec<crate::clock::PairEstimate>) {
    let mut shifted: Vec<Option<i64>> = vec![None; spans.len()];
    let mut visited = Vec::new();
    // 1. Measured offsets: one per pair of services (its best sample's), for every edge
    //    from the pair's client to its server, whether that call has a sample or not.
    let pairs = crate::clock::estimates(spans, tree);
    if !pairs.is_empty() {
        for k in 0..spans.len() {
            let Some(p) = tree.parent(k) else { continue };
            if spans[k].service == spans[p].service || shifted[k].is_some() {
                continue;
            }
            if let Some(offset_ns) = crate::clock::offset(&pairs, &spans[p].service, &spans[k].service) {
                shift_subtree(spans, tree, k, offset_ns.saturating_neg(), &mut shifted, &mut visited);
            }
        }
    }
    // 2. Containment, for cross-service edges no offset explained. Between two services
    //    with a measured offset the clocks agree once corrected: a child there may
    //    outlive its parent (a client takes an event after the server's process ended).
    for k in 0..spans.len() {
        let Some(p) = tree.parent(k) else { continue };
        if spans[k].service == spans[p].service
            || shifted[k].is_some()
            || crate::clock::measured(&pairs, &spans[p].service, &spans[k].service)
        {
            continue;
        }
        let (ps, pe, cs, ce) = (spans[p].start_ns, spans[p].end_ns, spans[k].start_ns, spans[k].end_ns);
        if ce - cs > pe - ps {
            continue;
        }
        let delta = if cs < ps {
            ps - cs
        } else if ce > pe {
            pe - ce
        } else {
            0
        };
        if delta != 0 {
            shift_subtree(spans, tree, k, delta, &mut shifted, &mut visited);
        }
    }
    // A measured offset of zero marks spans as placed, but moves nothing.
    let moved = shifted.into_iter().enumerate().filter_map(|(i, ns)| ns.filter(|&ns| ns != 0).map(|ns| (i, ns)));
    (moved.collect(), pairs)
}

/// Length of the union of intervals, clipped to `[lo, hi]`.
fn covered(mut intervals: Vec<(i64, i64)>, lo: i64, hi: i64) -> i64 {
    intervals.retain(|(s, e)| e > s);
    intervals.sort_unstable();
    let (mut total, mut cur): (i64, Option<(i64, i64)>) = (0, None);
    for (s, e) in intervals {
        let (s, e) = (s.max(lo), e.min(hi));
        if e <= s {
            continue;
        }
        match cur {
            Some((cs, ce)) if s <= ce => cur = Some((cs, ce.max(e))),
            Some((cs, ce)) => {
                total += ce - cs;
                cur = Some((s, e));
            }
            None => cur = Some((s, e)),
        }
    }
    if let Some((cs, ce)) = cur {
        total += ce - cs;
    }
    total
}

/// The spans below `root`, each once (parent ids may form a cycle in a malformed trace).
fn descendants(tree: &Tree, root: usize, n: usize) -> Vec<usize> {
    let mut seen = vec![false; n];
    seen[root] = true;
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(i) = stack.pop() {
        for &k in tree.children(i) {
            if !std::mem::replace(&mut seen[k], true) {
                out.push(k);
                stack.push(k);
            }
        }
    }
    out
}

/// Per trace: roots (duration, uncovered ns).
fn roots(spans: &[SpanRecord], tree: &Tree) -> Vec<(i64, i64)> {
    spans
        .iter()
        .enumerate()
        .filter(|(_, s)| s.parent_id.is_none())
        .map(|(i, r)| {
            let intervals =
                descendants(tree, i, spans.len()).into_iter().map(|d| (spans[d].start_ns, spans[d].end_ns)).collect();
            let dur = r.duration_ns();
            (dur, dur - covered(intervals, r.start_ns, r.end_ns))
        })
        .collect()
}

/// The critical path of one trace: the chain of spans that determined its end-to-end
/// time. From the end of the longest root backwards, time belongs to the child whose
/// subtree was still running latest (recursively); time no child's subtree covers belongs
/// to the span itself. Subtrees, not spans: in asynchronous work a child often outlives
/// its parent (a process outlives the call that started it), and its time still counts.
/// Returns `(span index, nanoseconds on the path)` by span index; the nanoseconds add up
/// to the root's duration exactly. Empty when the trace has no root.
///
/// ```
/// use tracewire_collector::{critical_path, SpanRecord};
///
/// let span = |id: &str, parent: Option<&str>, start: i64, end: i64| SpanRecord {
///     span_id: id.into(), parent_id: parent.map(Into::into), name: id.into(), start_ns: start, end_ns: end,
///     ..SpanRecord::default()
/// };
/// // root 0..100 with a 0..40 and b 30..90: b is on the path from 90 back to 30, a before.
/// let trace = [span("root", None, 0, 100), span("a", Some("root"), 0, 40), span("b", Some("root"), 30, 90)];
/// let path = critical_path(&trace);
/// assert_eq!(path, [(0, 10), (1, 30), (2, 60)]);
/// ```
pub fn critical_path(trace: &[SpanRecord]) -> Vec<(usize, i64)> {
    critical_path_tree(trace, &Tree::new(trace))
}

/// [`critical_path`] with the trace's [`Tree`].
fn critical_path_tree(trace: &[SpanRecord], tree: &Tree) -> Vec<(usize, i64)> {
    let Some(root) = longest_root(trace) else { return Vec::new() };
    let reach = subtree_ends(trace, tree);
    let mut used = vec![false; trace.len()];
    used[root] = true;
    // Per span, its children as candidates (made when its window is first consumed).
    let mut candidates: Vec<Option<Candidates>> = std::iter::repeat_with(|| None).take(trace.len()).collect();
    // Every addition is positive: a span on the path has a total above zero.
    let mut on_path: Vec<i64> = vec![0; trace.len()];
    let mut add = |i: usize, ns: i64| on_path[i] += ns;
    // Frames: (span, window start, cursor); the window is consumed from the cursor back.
    // A span's frames form one chain (it is entered once), its cursor only decreasing.
    let mut stack = vec![(root, trace[root].start_ns, trace[root].end_ns)];
    while let Some((s, lo, cursor)) = stack.pop() {
        if cursor <= lo {
            continue;
        }
        let kids = candidates[s].get_or_insert_with(|| Candidates::new(tree.children(s), trace, &reach));
        let Some(c) = kids.best(cursor, lo, trace, &reach, &used) else {
            add(s, cursor - lo);
            continue;
        };
        let (cs, ce) = (trace[c].start_ns.max(lo), reach[c].min(cursor));
        if cursor > ce {
            add(s, cursor - ce);
        }
        used[c] = true;
        stack.push((s, lo, cs));
        stack.push((c, cs, ce));
    }
    on_path.into_iter().enumerate().filter(|&(_, ns)| ns != 0).collect()
}

/// The children of one span on the critical path's walk: the next one is the child whose
/// subtree runs latest before the cursor, `(min(reach, cursor), start)` largest, the last
/// of equals (by index), among the unused ones that start before the cursor and reach
/// past the window's start. As the cursor only moves back, that is found in `O(log n)`
/// (so a parent of many children costs `O(n log n)`, not `O(n^2)`):
/// - children whose subtree reaches the cursor all rank by their start: a heap of them,
///   filled as the cursor passes their reach, and a child that starts at or after the
///   cursor never qualifies again;
/// - when none does, the best is the next by (reach, start, index), largest first.
#[derive(Debug)]
struct Candidates {
    /// By (reach, start, index), largest first; the ones with an empty subtree left out.
    by_reach: Vec<usize>,
    /// The next of `by_reach` not yet moved to `reaching` or taken.
    next: usize,
    /// (start, index) of the children whose subtree reaches the cursor.
    reaching: BinaryHeap<(i64, usize)>,
}

impl Candidates {
    fn new(kids: &[usize], trace: &[SpanRecord], reach: &[i64]) -> Self {
        let mut by_reach: Vec<usize> = kids.iter().copied().filter(|&c| reach[c] > trace[c].start_ns).collect();
        by_reach.sort_unstable_by_key(|&c| Reverse((reach[c], trace[c].start_ns, c)));
        Self { by_reach, next: 0, reaching: BinaryHeap::new() }
    }

    fn best(&mut self, cursor: i64, lo: i64, trace: &[SpanRecord], reach: &[i64], used: &[bool]) -> Option<usize> {
        while let Some(&c) = self.by_reach.get(self.next) {
            if reach[c] < cursor {
                break;
            }
            self.reaching.push((trace[c].start_ns, c));
            self.next += 1;
        }
        while let Some(&(start, c)) = self.reaching.peek() {
            if start < cursor && !used[c] {
                return Some(c);
            }
            self.reaching.pop();
        }
        while let Some(&c) = self.by_reach.get(self.next) {
            if !used[c] {
                // Its reach is below the cursor, so it starts before it.
                return (reach[c] > lo).then_some(c);
            }
            self.next += 1;
        }
        None
    }
}

/// The index of the trace's longest root (the first of equals), if it has one.
pub(crate) fn longest_root(trace: &[SpanRecord]) -> Option<usize> {
    trace
        .iter()
        .enumerate()
        .filter(|(_, s)| s.parent_id.is_none())
        .max_by_key(|(i, s)| (s.duration_ns(), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// Per span, the latest end in its subtree (itself included). Each span is visited once,
/// so a malformed trace (a cycle of parent ids) cannot loop.
fn subtree_ends(trace: &[SpanRecord], tree: &Tree) -> Vec<i64> {
    let mut reach: Vec<i64> = trace.iter().map(|s| s.end_ns).collect();
    let mut seen = vec![false; trace.len()];
    for start in 0..trace.len() {
        if seen[start] {
            continue;
        }
        // Iterative post-order: (span, children pushed yet).
        let mut stack = vec![(start, false)];
        seen[start] = true;
        while let Some((i, expanded)) = stack.pop() {
            let kids = tree.children(i);
            if expanded {
                reach[i] = kids.iter().map(|&k| reach[k]).fold(reach[i], i64::max);
                continue;
            }
            stack.push((i, true));
            for &k in kids {
                if !seen[k] {
                    seen[k] = true;
                    stack.push((k, false));
                }
            }
        }
    }
    reach
}

/// The first-output latency of one trace: from the start of the client's `rpc.call` Start
/// to the earliest end of a `terminal.deliver` span of an Output event.
fn first_output(spans: &[SpanRecord]) -> Option<i64> {
    let start = spans
        .iter()
        .filter(|s| s.stage() == "rpc.call" && s.attributes.get("rpc.method").is_some_and(|m| m == "Start"))
        .map(|s| s.start_ns)
        .min()?;
    let first = spans
        .iter()
        .filter(|s| {
            s.stage() == "terminal.deliver" && s.attributes.get("tracewire.event").is_some_and(|e| e == "Output")
        })
        .map(|s| s.end_ns)
        .min()?;
    Some((first - start).max(0))
}

/// Analyzes `spans` (from any number of traces and services) against `slos`: an
/// [`Analyzer`] fed the spans' traces in first-seen order.
pub fn analyze(spans: &[SpanRecord], slos: &[Slo]) -> Summary {
    let mut analyzer = Analyzer::new(slos);
    for t in by_trace(spans) {
        analyzer.add_trace(t);
    }
    analyzer.finish()
}

/// The span attributes the analysis reads (the stage, clock samples, the Start call,
/// Output deliveries, and the record sequence numbers that pair relay hops into
/// `net.transit` intervals): a reader may load only these ([`tracewire_store::SpanDetail`]).
pub const ANALYZED_ATTRIBUTES: &[&str] = &[
    "tracewire.stage",
    "tracewire.clock.offset_us",
    "tracewire.net.rtt_us",
    "rpc.method",
    "tracewire.event",
    "tracewire.seq.first",
    "tracewire.seq.last",
];

/// The most traces with an error that [`Analyzer::finish_with_exports`] keeps (by default):
/// beyond it, traces with errors are counted as omitted.
pub const ERROR_TRACES_CAP: usize = 1000;

/// Which traces an [`Analyzer`] keeps for the exports (`traces.jaeger.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepPolicy {
    /// The slowest traces kept, by end-to-end time (their longest root).
    pub slowest: usize,
    /// Traces with an error kept, at most (the first seen).
    pub error_cap: usize,
    /// When not empty, exactly these traces (hex ids, either case) are exported, and
    /// `slowest` and the error traces do not apply.
    pub traces: Vec<String>,
}

impl Default for KeepPolicy {
    fn default() -> Self {
        Self { slowest: 100, error_cap: ERROR_TRACES_CAP, traces: Vec::new() }
    }
}

/// One kept trace, ordered by its key (end-to-end time, then arrival): its id, and its
/// spans unless the analyzer keeps ids only ([`Analyzer::ids_only`]).
#[derive(Debug, Clone)]
struct Ranked {
    key: (i64, usize),
    id: String,
    spans: Option<Arc<Vec<SpanRecord>>>,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

/// The traces an [`Analyzer`] kept: what `traces.jaeger.json` and the waterfalls of
/// `report.html` draw, with their spans as given (before skew correction).
#[derive(Debug, Clone, Default)]
pub struct Exports {
    /// The exported traces, by arrival (the median trace is added when it is found).
    pub traces: Vec<Arc<Vec<SpanRecord>>>,
    /// The median trace of those with a root (by the duration of their first root), when
    /// it is among the kept traces; else see [`Exports::median_id`].
    pub median: Option<Arc<Vec<SpanRecord>>>,
    /// The id of the median trace: a caller holding the spans elsewhere (a database) reads
    /// it back when [`Exports::median`] is `None`, and passes it to [`Exports::set_median`].
    pub median_id: Option<String>,
    /// The slowest trace (by the duration of its first root; the last of equals).
    pub slowest: Option<Arc<Vec<SpanRecord>>>,
    /// Traces seen in all.
    pub seen: usize,
    /// Whether the exported set follows an explicit list of traces.
    explicit: bool,
}

impl Exports {
    /// Sets the median trace read back by the caller, and exports it too (unless the
    /// export follows an explicit list of traces).
    pub fn set_median(&mut self, spans: Vec<SpanRecord>) {
        let spans = Arc::new(spans);
        if !self.explicit {
            self.traces.push(Arc::clone(&spans));
        }
        self.median = Some(spans);
    }

    /// Traces exported.
    pub fn written(&self) -> usize {
        self.traces.len()
    }

    /// Traces seen and not exported.
    pub fn omitted(&self) -> usize {
        self.seen.saturating_sub(self.traces.len())
    }

    /// The exported spans, trace after trace.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.traces.iter().flat_map(|t| t.iter().cloned()).collect()
    }
}

/// The streaming analysis: fed one trace at a time ([`Analyzer::add_trace`]), it keeps
/// per-stage durations (4 bytes a span for exact percentiles, up to [`EXACT_DURATIONS`] a
/// stage, then a sketch of bounded size), per-trace SLO measures and
/// a bounded set of traces for the exports ([`KeepPolicy`]), never every span.
/// [`Analyzer::finish`] gives what [`analyze`] gives for the same traces.
///
/// ```
/// use tracewire_collector::{Analyzer, SpanRecord, analyze};
///
/// let span = |trace: &str, id: &str, start: i64, end: i64| SpanRecord {
///     trace_id: trace.into(), span_id: id.into(), name: "exec".into(), start_ns: start, end_ns: end,
///     ..SpanRecord::default()
/// };
/// let (a, b) = (vec![span("a", "1", 0, 10)], vec![span("b", "2", 0, 30)]);
/// let mut analyzer = Analyzer::new(&[]);
/// analyzer.add_trace(a.clone());
/// analyzer.add_trace(b.clone());
/// let all: Vec<SpanRecord> = a.into_iter().chain(b).collect();
/// assert_eq!(analyzer.finish(), analyze(&all, &[]));
/// ```
#[derive(Debug)]
pub struct Analyzer {
    slos: Vec<Slo>,
    /// Stages the SLOs name: the only ones whose per-trace measures are kept.
    slo_stages: HashSet<String, Fast>,
    summary: Summary,
    e2e: Vec<i64>,
    first: Vec<i64>,
    per_stage: HashMap<String, (Durations, usize), Fast>,
    root_total: i64,
    uncovered_total: i64,
    measures: Vec<TraceMeasures>,
    critical: HashMap<String, i64, Fast>,
    critical_total: i64,
    clock: crate::clock::ClockBook,
    // Exports.
    policy: KeepPolicy,
    wanted: HashSet<String>,
    slowest_heap: BinaryHeap<Reverse<Ranked>>,
    errors: Vec<Ranked>,
    explicit: Vec<Ranked>,
    /// Per trace with a root: (its first root's duration, its arrival), and its id.
    rooted: Vec<((i64, usize), String)>,
    last_slowest: Option<Ranked>,
    /// Whether kept traces keep their spans (else their ids only).
    keep_spans: bool,
}

impl Analyzer {
    /// An analysis against `slos` that keeps what [`KeepPolicy::default`] says.
    pub fn new(slos: &[Slo]) -> Self {
        Self::with_policy(slos, KeepPolicy::default())
    }

    /// An analysis against `slos` that keeps the traces `policy` says.
    pub fn with_policy(slos: &[Slo], policy: KeepPolicy) -> Self {
        Self {
            slos: slos.to_vec(),
            slo_stages: slos.iter().map(|s| s.metric.clone()).collect(),
            summary: Summary::default(),
            e2e: Vec::new(),
            first: Vec::new(),
            per_stage: HashMap::default(),
            root_total: 0,
            uncovered_total: 0,
            measures: Vec::new(),
            critical: HashMap::default(),
            critical_total: 0,
            clock: crate::clock::ClockBook::default(),
            wanted: policy.traces.iter().map(|t| t.to_ascii_lowercase()).collect(),
            policy,
            slowest_heap: BinaryHeap::new(),
            errors: Vec::new(),
            explicit: Vec::new(),
            rooted: Vec::new(),
            last_slowest: None,
            keep_spans: true,
        }
    }

    /// Keeps the ids of the traces chosen for the exports, not their spans: memory holds no
    /// trace beyond the one being added, whatever the policy. The caller reads the chosen
    /// traces back by id ([`Analyzer::finish_with_plan`]); [`Analyzer::finish_with_exports`]
    /// then gives no spans.
    #[must_use]
    pub fn ids_only(mut self) -> Self {
        self.keep_spans = false;
        self
    }

    /// Spans added so far.
    pub fn spans(&self) -> usize {
        self.summary.spans
    }

    /// Traces added so far.
    pub fn traces(&self) -> usize {
        self.summary.traces
    }

    /// Adds one trace: every span of it, and no span of another trace (the spans of one
    /// trace given in two calls count as two traces).
    pub fn add_trace(&mut self, t: Vec<SpanRecord>) {
        drop(self.add_trace_returning(t));
    }

    /// [`Analyzer::add_trace`], giving the trace back, as it was given, when the analyzer
    /// does not keep it ([`Analyzer::ids_only`]): a reader can fill its records again
    /// ([`tracewire_store::Store::for_each_trace_recycling`]) rather than this thread free
    /// them and that one allocate new ones.
    pub fn add_trace_returning(&mut self, mut t: Vec<SpanRecord>) -> Option<Vec<SpanRecord>> {
        if t.is_empty() {
            return Some(t);
        }
        let seq = self.summary.traces;
        self.summary.traces += 1;
        self.summary.spans += t.len();
        let tree = Tree::new(&t);
        let (shifts, clocks) = correct_skew_tree(&mut t, &tree);
        self.clock.add(clocks);
        // Wire time between processes, derived after correction (`crate::transit`).
        let given = t.len();
        let transit = crate::transit::derive(&t);
        let tree = if transit.is_empty() {
            tree
        } else {
            t.extend(transit);
            Tree::new(&t)
        };
        self.summary.orphans += tree.orphans(&t);
        let mut m = TraceMeasures {
            e2e: Vec::new(),
            first_output: first_output(&t),
            stages: BTreeMap::new(),
            stage_errors: BTreeMap::new(),
            has_error: t.iter().any(SpanRecord::is_error),
        };
        let has_error = m.has_error;
        self.summary.traces_with_errors += usize::from(has_error);
        let stages: Vec<&str> = t.iter().map(SpanRecord::stage).collect();
        for (i, ns) in critical_path_tree(&t, &tree) {
            let stage = stages[i];
            match self.critical.get_mut(stage) {
                Some(total) => *total += ns,
                None => {
                    self.critical.insert(stage.to_owned(), ns);
                }
            }
            self.critical_total += ns;
        }
        let mut longest = None::<i64>;
        for (dur, uncovered) in roots(&t, &tree) {
            self.e2e.push(dur);
            m.e2e.push(dur);
            longest = Some(longest.map_or(dur, |l| l.max(dur)));
            self.root_total += dur;
            self.uncovered_total += uncovered;
        }
        if let Some(f) = m.first_output {
            self.first.push(f);
        }
        let slo_stages = !self.slo_stages.is_empty();
        for (s, &stage) in t.iter().zip(&stages) {
            let (dur, error) = (s.duration_ns(), usize::from(s.is_error()));
            if let Some((d, e)) = self.per_stage.get_mut(stage) {
                d.push(dur);
                *e += error;
            } else {
                let mut d = Durations::default();
                d.push(dur);
                self.per_stage.insert(stage.to_owned(), (d, error));
            }
            if slo_stages && self.slo_stages.contains(stage) {
                m.stages.entry(stage.to_owned()).or_default().push(dur);
                *m.stage_errors.entry(stage.to_owned()).or_default() += error;
            }
        }
        drop(stages);
        if !self.slos.is_empty() {
            self.measures.push(m);
        }
        // The spans as given, for the exports.
        t.truncate(given);
        for (i, ns) in shifts {
            t[i].start_ns -= ns;
            t[i].end_ns -= ns;
        }
        self.keep(t, seq, longest, has_error)
    }

    /// Keeps `t` (arrival `seq`, end-to-end time `longest`) where the exports need it; gives
    /// it back when only its id is kept.
    fn keep(
        &mut self,
        t: Vec<SpanRecord>,
        seq: usize,
        longest: Option<i64>,
        has_error: bool,
    ) -> Option<Vec<SpanRecord>> {
        let first_root = t.iter().find(|s| s.parent_id.is_none()).map(SpanRecord::duration_ns);
        let trace_id = t.first().map(|s| s.trace_id.clone()).unwrap_or_default();
        let (spans, back) = if self.keep_spans { (Some(Arc::new(t)), None) } else { (None, Some(t)) };
        let ranked = |key| Ranked { key, id: trace_id.clone(), spans: spans.clone() };
        if let Some(d) = first_root {
            let key = (d, seq);
            if self.last_slowest.as_ref().is_none_or(|s| key > s.key) {
                self.last_slowest = Some(ranked(key));
            }
        }
        if self.wanted.is_empty() {
            if has_error && self.errors.len() < self.policy.error_cap {
                self.errors.push(ranked((0, seq)));
            }
            if let (Some(e2e), true) = (longest, self.policy.slowest > 0) {
                let key = (e2e, seq);
                if self.slowest_heap.len() < self.policy.slowest {
                    self.slowest_heap.push(Reverse(ranked(key)));
                } else if self.slowest_heap.peek().is_some_and(|Reverse(min)| key > min.key) {
                    self.slowest_heap.pop();
                    self.slowest_heap.push(Reverse(ranked(key)));
                }
            }
        } else if self.wanted.contains(&trace_id.to_ascii_lowercase()) {
            self.explicit.push(ranked((0, seq)));
        }
        if let Some(d) = first_root {
            self.rooted.push(((d, seq), trace_id));
        }
        back
    }

    /// The summary of the traces added.
    pub fn finish(self) -> Summary {
        self.finish_with_exports().0
    }

    /// The summary of the traces added, and the traces kept for the exports.
    pub fn finish_with_exports(self) -> (Summary, Exports) {
        let (summary, chosen) = self.finish_chosen();
        let exports = chosen.exports(summary.traces);
        (summary, exports)
    }

    /// The summary of the traces added, and the ids of the traces chosen for the exports
    /// (what [`Analyzer::finish_with_exports`] would hold), for a caller that reads them
    /// back from where the spans are (a database), with [`Analyzer::ids_only`].
    ///
    /// ```
    /// use tracewire_collector::{Analyzer, SpanRecord};
    ///
    /// let span = |trace: &str, end: i64| SpanRecord { trace_id: trace.into(), span_id: "1".into(), end_ns: end, ..Default::default() };
    /// let mut analyzer = Analyzer::new(&[]).ids_only();
    /// for (trace, end) in [("a", 10), ("b", 30), ("c", 20)] {
    ///     analyzer.add_trace(vec![span(trace, end)]);
    /// }
    /// let (summary, plan) = analyzer.finish_with_plan();
    /// assert_eq!(summary.traces, 3);
    /// assert_eq!(plan.traces, ["a", "b", "c"]);
    /// assert_eq!((plan.median.as_deref(), plan.slowest.as_deref()), (Some("c"), Some("b")));
    /// ```
    pub fn finish_with_plan(self) -> (Summary, ExportPlan) {
        let (summary, chosen) = self.finish_chosen();
        let plan = chosen.plan(summary.traces);
        (summary, plan)
    }

    /// The summary, and what is kept for the exports.
    fn finish_chosen(mut self) -> (Summary, Chosen) {
        let mut summary = std::mem::take(&mut self.summary);
        #[allow(clippy::cast_precision_loss)]
        let fraction = if self.root_total > 0 { self.uncovered_total as f64 / self.root_total as f64 } else { 0.0 };
        summary.unattributed_fraction = fraction;
        summary.e2e = stats(std::mem::take(&mut self.e2e));
        summary.first_output = stats(std::mem::take(&mut self.first));
        let mut per_stage: Vec<(String, (Durations, usize))> =
            std::mem::take(&mut self.per_stage).into_iter().collect();
        per_stage.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let estimated = per_stage.iter().any(|(_, (d, _))| d.estimated());
        summary.stages = per_stage
            .into_iter()
            .map(|(stage, (d, errors))| {
                #[allow(clippy::cast_precision_loss)]
                let error_rate = if d.is_empty() { 0.0 } else { errors as f64 / d.len() as f64 };
                StageStats { stage, stats: d.stats(), errors, error_rate }
            })
            .collect();
        let critical_total = self.critical_total;
        let mut critical: Vec<CriticalShare> = std::mem::take(&mut self.critical)
            .into_iter()
            .map(|(stage, ns)| CriticalShare {
                stage,
                total_ms: ms(ns),
                #[allow(clippy::cast_precision_loss)]
                share: if critical_total > 0 { ns as f64 / critical_total as f64 } else { 0.0 },
            })
            .collect();
        critical.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then_with(|| a.stage.cmp(&b.stage)));
        summary.critical_path = critical;
        summary.clock = self.clock.summary();
        summary.percentiles = if estimated {
            Percentiles::Sketch { relative_error: crate::sketch::RELATIVE_ERROR }
        } else {
            Percentiles::Exact
        };
        let observed = Observed {
            e2e: summary.e2e,
            first_output: summary.first_output,
            stages: &summary.stages,
            traces: summary.traces,
            traces_with_errors: summary.traces_with_errors,
            measures: &self.measures,
        };
        summary.slos = self.slos.iter().map(|slo| slo.evaluate(&observed)).collect();
        let chosen = Chosen {
            explicit: self.explicit,
            slowest_heap: self.slowest_heap,
            errors: self.errors,
            rooted: self.rooted,
            last_slowest: self.last_slowest,
            wanted: !self.wanted.is_empty(),
        };
        (summary, chosen)
    }
}

/// The traces chosen for the exports, by id ([`Analyzer::finish_with_plan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportPlan {
    /// The ids of the exported traces, by arrival (the median's included, unless the export
    /// follows an explicit list of traces).
    pub traces: Vec<String>,
    /// The median trace of those with a root (by the duration of their first root).
    pub median: Option<String>,
    /// The slowest trace (by the duration of its first root; the last of equals).
    pub slowest: Option<String>,
    /// Traces seen in all.
    pub seen: usize,
}

impl ExportPlan {
    /// Traces exported.
    pub fn written(&self) -> usize {
        self.traces.len()
    }

    /// Traces seen and not exported.
    pub fn omitted(&self) -> usize {
        self.seen.saturating_sub(self.traces.len())
    }
}

/// What an [`Analyzer`] kept for the exports, taken out of it when it finishes.
struct Chosen {
    explicit: Vec<Ranked>,
    slowest_heap: BinaryHeap<Reverse<Ranked>>,
    errors: Vec<Ranked>,
    rooted: Vec<((i64, usize), String)>,
    last_slowest: Option<Ranked>,
    /// Whether the export follows an explicit list of traces.
    wanted: bool,
}

impl Chosen {
    /// The kept traces by arrival, each once.
    fn kept(explicit: bool, list: Vec<Ranked>, heap: BinaryHeap<Reverse<Ranked>>, errors: Vec<Ranked>) -> Vec<Ranked> {
        let mut kept: Vec<Ranked> = if explicit {
            list
        } else {
            let mut v: Vec<Ranked> = heap.into_iter().map(|Reverse(r)| r).collect();
            v.extend(errors);
            v
        };
        kept.sort_by_key(|r| r.key.1);
        kept.dedup_by_key(|r| r.key.1);
        kept
    }

    /// The median's (arrival, id), of the traces with a root.
    fn median(rooted: &mut [((i64, usize), String)]) -> Option<(usize, String)> {
        rooted.sort_unstable_by_key(|(key, _)| *key);
        rooted.get(rooted.len() / 2).map(|(key, id)| (key.1, id.clone()))
    }

    fn plan(mut self, seen: usize) -> ExportPlan {
        let explicit = self.wanted;
        let median = Self::median(&mut self.rooted);
        let mut kept: Vec<(usize, String)> = Self::kept(explicit, self.explicit, self.slowest_heap, self.errors)
            .into_iter()
            .map(|r| (r.key.1, r.id))
            .collect();
        if let Some((seq, id)) = &median
            && !explicit
            && !kept.iter().any(|(s, _)| s == seq)
        {
            let at = kept.partition_point(|(s, _)| s < seq);
            kept.insert(at, (*seq, id.clone()));
        }
        ExportPlan {
            traces: kept.into_iter().map(|(_, id)| id).collect(),
            median: median.map(|(_, id)| id),
            slowest: self.last_slowest.map(|r| r.id),
            seen,
        }
    }

    fn exports(mut self, seen: usize) -> Exports {
        let explicit = self.wanted;
        let median_key = Self::median(&mut self.rooted);
        let kept = Self::kept(explicit, self.explicit, self.slowest_heap, self.errors);
        let mut exports = Exports {
            traces: kept.iter().filter_map(|r| r.spans.clone()).collect(),
            median: None,
            median_id: median_key.as_ref().map(|(_, id)| id.clone()),
            slowest: self.last_slowest.and_then(|r| r.spans),
            seen,
            explicit,
        };
        if let Some((seq, _)) = median_key {
            if let Some(r) = kept.iter().find(|r| r.key.1 == seq) {
                exports.median.clone_from(&r.spans);
            } else if self.rooted.last().is_some_and(|(k, _)| k.1 == seq) {
                // The median is the slowest (one or two traces with a root).
                exports.median.clone_from(&exports.slowest);
                if !explicit {
                    exports.traces.extend(exports.median.clone());
                }
            }
        }
        exports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index-based [`Tree`] answers what the maps by span id answer, also for a
    /// malformed trace: ids shared by several spans, a cycle, a missing parent.
    #[test]
    fn the_tree_is_the_maps_by_id() {
        let span = |id: &str, parent: Option<&str>| SpanRecord {
            span_id: id.into(),
            parent_id: parent.map(Into::into),
            ..SpanRecord::default()
        };
        let trace = [
            span("a", None),
            span("b", Some("a")),
            span("a", Some("c")),
            span("c", Some("b")),
            span("d", Some("a")),
            span("e", Some("missing")),
            span("b", Some("d")),
        ];
        let tree = Tree::new(&trace);
        let by_id = children_of(&trace);
        let last: HashMap<&str, usize> = trace.iter().enumerate().map(|(i, s)| (s.span_id.as_str(), i)).collect();
        for (i, s) in trace.iter().enumerate() {
            let kids = by_id.get(s.span_id.as_str()).map_or(&[][..], Vec::as_slice);
            assert_eq!(tree.children(i), kids, "children of span {i}");
            assert_eq!(tree.parent(i), s.parent_id.as_deref().and_then(|p| last.get(p)).copied(), "parent of {i}");
        }
        assert_eq!(tree.orphans(&trace), 1);
    }
}
