//! Retention: pruning the oldest traces, whole, by age or by a span count
//! ([`Store::prune`]), in bounded steps the writer runs between batches of appends.
//!
//! Invariants: a trace is removed whole or not at all (tests: `tests/retention.rs`
//! `max_age_removes_traces_that_ended_before_the_cut_and_keeps_a_straddling_trace_whole`,
//! `max_spans_removes_the_oldest_traces_whole_until_at_most_n_are_left`); a large prune runs
//! in steps of a bounded number of spans, with queued appends written between them
//! (`a_large_prune_runs_in_steps_and_ingest_goes_on_between_them`).

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{Connection, params};

use crate::writer::WriterCommand;
use crate::{Store, StoreError};

/// What [`Store::prune`] removes. A trace is removed whole or not at all: its spans
/// go together (by trace id), never some of them. The default removes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Remove every trace whose latest span end is older than now minus this.
    pub max_age: Option<Duration>,
    /// While more spans than this are stored, remove the oldest traces (by their first
    /// span's start) until at most this many are left.
    pub max_spans: Option<u64>,
}

impl Retention {
    /// Keeps traces that ended within `max_age` (see [`Retention::max_age`]).
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Keeps at most `max_spans` spans (see [`Retention::max_spans`]).
    #[must_use]
    pub fn max_spans(mut self, max_spans: u64) -> Self {
        self.max_spans = Some(max_spans);
        self
    }

    /// Whether these rules can remove anything.
    pub fn is_empty(&self) -> bool {
        self.max_age.is_none() && self.max_spans.is_none()
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Traces removed (each one whole).
    pub traces: u64,
    /// Spans removed.
    pub spans: u64,
}

impl std::ops::AddAssign for Pruned {
    fn add_assign(&mut self, rhs: Self) {
        self.traces += rhs.traces;
        self.spans += rhs.spans;
    }
}

/// One bounded step of a prune: where it goes on from, and the fixed cut-off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    /// Spans at or after this (start, rowid) position are still to be looked at.
    pub(crate) after: Option<(i64, i64)>,
    /// Traces whose latest end is before this instant (Unix nanoseconds) go.
    pub(crate) cut_ns: Option<i64>,
    /// The span-count bound.
    pub(crate) max_spans: Option<u64>,
}

impl Step {
    /// The first step of a prune with `retention`, as of `now`.
    pub(crate) fn first(retention: Retention, now: SystemTime) -> Self {
        let now_ns = now.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let cut_ns =
            retention.max_age.map(|age| now_ns.saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)));
        Self { after: None, cut_ns, max_spans: retention.max_spans }
    }
}

/// What one step did, and whether there is more to do.
#[derive(Debug)]
pub(crate) struct StepDone {
    pub(crate) pruned: Pruned,
    /// The next step, when this one stopped at its bound.
    pub(crate) next: Option<Step>,
}

impl Store {
    /// Removes the traces `retention` selects, each one whole (all its spans, by trace id),
    /// after a barrier. The work is done in steps of a bounded number of spans, each its own
    /// transaction, with the appends queued meanwhile written between them, so ingest is
    /// never held up for long. Resources and scopes no longer referenced stay (each is
    /// stored once, however many spans share it).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tracewire_store::{Retention, SpanRecord, Store};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let dir = std::env::temp_dir().join(format!("tw-prune-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let store = Store::open(dir.join("traces.db")).unwrap();
    /// let span = |trace: &str, id: &str, start_ns| SpanRecord {
    ///     trace_id: trace.into(), span_id: id.into(), start_ns, end_ns: start_ns + 1_000, ..Default::default()
    /// };
    /// let (old, new) = ("0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736");
    /// store.append_spans(vec![span(old, "b7ad6b7169203331", 1), span(old, "00f067aa0ba902b7", 2), span(new, "b7ad6b7169203331", 3)]).await.unwrap();
    /// // At most two spans: the oldest trace (two spans) goes whole.
    /// let pruned = store.prune(Retention::default().max_spans(2)).await.unwrap();
    /// assert_eq!((pruned.traces, pruned.spans), (1, 2));
    /// assert_eq!(store.spans().await.unwrap()[0].trace_id, new);
    /// // Everything here ended in 1970.
    /// assert_eq!(store.prune(Retention::default().max_age(Duration::from_secs(86_400))).await.unwrap().spans, 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Store::flush`]; what SQLite reports for a step (the steps before it stay done).
    pub async fn prune(&self, retention: Retention) -> Result<Pruned, StoreError> {
        let mut total = Pruned::default();
        if retention.is_empty() {
            return Ok(total);
        }
        let mut step = Step::first(retention, SystemTime::now());
        loop {
            let done = self.ask_writer(|ack| WriterCommand::Prune(step, ack)).await?;
            total += done.pruned;
            match done.next {
                Some(next) => step = next,
                None => return Ok(total),
            }
        }
    }
}

/// Spans removed in one transaction at most (a trace is never split, so a step can go
/// over by the spans of its last trace): the writer takes queued appends between steps.
pub(crate) const SPANS_PER_STEP: u64 = 5_000;
/// Spans looked at (by start) in one query.
const PAGE: i64 = 1_000;

/// Runs one step of a prune in its own transaction: walks spans by start from `step.after`,
/// and removes each trace met that is over the age cut-off (its latest end before it) or,
/// while more than `max_spans` are stored, any trace (oldest first start first).
pub(crate) fn step(conn: &mut Connection, step: Step) -> Result<StepDone, StoreError> {
    let tx = conn.transaction()?;
    let mut excess = match step.max_spans {
        Some(max) => crate::spans::count(&tx)?.saturating_sub(max),
        None => 0,
    };
    let mut pruned = Pruned::default();
    let mut after = step.after;
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut next = None;
    'pages: loop {
        if excess == 0 && step.cut_ns.is_none() {
            break;
        }
        let page = page(&tx, after, if excess == 0 { step.cut_ns } else { None })?;
        if page.is_empty() {
            break;
        }
        for (start, rowid, trace) in page {
            if excess == 0 && step.cut_ns.is_none() {
                break 'pages;
            }
            after = Some((start, rowid));
            let key = key_of(&trace);
            if !seen.insert(key) {
                continue;
            }
            let remove = excess > 0
                || match step.cut_ns {
                    Some(cut) => latest_end(&tx, &trace)?.is_some_and(|end| end < cut),
                    None => false,
                };
            if !remove {
                continue;
            }
            let n = tx.prepare_cached("DELETE FROM spans WHERE trace_id = ?1")?.execute([&trace])? as u64;
            pruned.traces += 1;
            pruned.spans += n;
            excess = excess.saturating_sub(n);
            if pruned.spans >= SPANS_PER_STEP {
                next = Some(Step { after, ..step });
                break 'pages;
            }
        }
    }
    tx.commit()?;
    Ok(StepDone { pruned, next })
}

/// Up to [`PAGE`] spans after `after` by (start, rowid), starting before `before` if given.
fn page(tx: &Connection, after: Option<(i64, i64)>, before: Option<i64>) -> Result<Vec<(i64, i64, Value)>, StoreError> {
    let (s, r) = after.unwrap_or((i64::MIN, i64::MIN));
    let mut stmt = tx.prepare_cached(
        "SELECT start_ns, rowid, trace_id FROM spans
         WHERE (start_ns, rowid) > (?1, ?2) AND (?3 IS NULL OR start_ns < ?3)
         ORDER BY start_ns, rowid LIMIT ?4",
    )?;
    let rows = stmt.query_map(params![s, r, before, PAGE], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(StoreError::from)
}

/// The latest end of the spans of `trace`.
fn latest_end(tx: &Connection, trace: &Value) -> Result<Option<i64>, StoreError> {
    Ok(tx.prepare_cached("SELECT max(end_ns) FROM spans WHERE trace_id = ?1")?.query_row([trace], |r| r.get(0))?)
}

/// A stored trace id as a set key (blob and text ids kept apart).
fn key_of(v: &Value) -> Vec<u8> {
    match v {
        Value::Blob(b) => [&[0u8][..], b].concat(),
        Value::Text(t) => [&[1u8][..], t.as_bytes()].concat(),
        other => format!("\u{2}{other:?}").into_bytes(),
    }
}
