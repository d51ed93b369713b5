//! Where `tracewire report` and `tracewire diff` read their spans: databases written by
//! `tracewire collect --db`, OTLP JSON files and Jaeger JSON files, any number of each,
//! combined, with bounded memory ([`Sources::feed`]).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tracewire_collector::diff::RunSamples;
use tracewire_collector::input::{InputError, stream_jaeger_json, stream_otlp_json};
use tracewire_collector::{ANALYZED_ATTRIBUTES, Analyzer, SpanRecord, into_traces};
use tracewire_store::{FullPolicy, SpanDetail, SpanFilter, Store, StoreConfig};

/// The sources of `tracewire report` and what it exports of them.
#[derive(clap::Args, Debug)]
pub(crate) struct Inputs {
    #[command(flatten)]
    pub(crate) sources: Sources,
    /// Export only this trace (hex id) to traces.jaeger.json (repeatable); without it, the
    /// slowest --limit traces, the median trace and the traces with an error.
    #[arg(long = "trace", value_name = "ID")]
    pub(crate) traces: Vec<String>,
    /// How many of the slowest traces (by end-to-end time) traces.jaeger.json holds.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) limit: usize,
    /// No progress lines on stderr.
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// The sources of `tracewire report` (at least one).
#[derive(clap::Args, Debug)]
#[group(id = "inputs", required = true, multiple = true)]
pub(crate) struct Sources {
    /// A database written by `tracewire collect --db` (repeatable).
    #[arg(long, value_name = "DB")]
    pub(crate) db: Vec<PathBuf>,
    /// An OTLP JSON file: `ExportTraceServiceRequest`s one per line, as the OpenTelemetry
    /// Collector's file exporter writes them (and `tracewire export --otlp-json`), or
    /// pretty-printed; gzip is read too (repeatable).
    #[arg(long, value_name = "FILE")]
    pub(crate) otlp_json: Vec<PathBuf>,
    /// A Jaeger JSON file: the Jaeger UI's download or the query API's answer,
    /// `{"data":[trace, ...]}` (repeatable).
    #[arg(long, value_name = "FILE")]
    pub(crate) jaeger_json: Vec<PathBuf>,
}

/// What the traces of the inputs are fed to, one trace at a time ([`Sources::feed`]): the
/// report's [`Analyzer`], or a run's samples for `tracewire diff` ([`RunSamples`]).
pub(crate) trait TraceSink: Send + 'static {
    /// Adds one trace: every span of it (by start), and no span of another trace. Spans
    /// read from a database carry only the columns and [`ANALYZED_ATTRIBUTES`]
    /// ([`SpanDetail::Columns`]), no OTLP form.
    fn add_trace(&mut self, trace: Vec<SpanRecord>);
    /// [`TraceSink::add_trace`], giving the trace back when the sink is done with it, for
    /// its records to be filled again ([`Store::for_each_trace_recycling`]).
    fn add_trace_returning(&mut self, trace: Vec<SpanRecord>) -> Option<Vec<SpanRecord>> {
        self.add_trace(trace);
        None
    }
    /// Spans added so far.
    fn spans(&self) -> usize;
    /// Traces added so far.
    fn traces(&self) -> usize;
    /// Called before the traces of a database are fed: they can be read back from it by
    /// id afterwards, so the sink need not keep any (an [`Analyzer`] keeps the ids of the
    /// traces it exports, not their spans).
    #[must_use]
    fn store_backed(self) -> Self
    where
        Self: Sized,
    {
        self
    }
}

impl TraceSink for Analyzer {
    fn add_trace(&mut self, trace: Vec<SpanRecord>) {
        Analyzer::add_trace(self, trace);
    }

    fn add_trace_returning(&mut self, trace: Vec<SpanRecord>) -> Option<Vec<SpanRecord>> {
        Analyzer::add_trace_returning(self, trace)
    }

    fn spans(&self) -> usize {
        Analyzer::spans(self)
    }

    fn traces(&self) -> usize {
        Analyzer::traces(self)
    }

    fn store_backed(self) -> Self {
        self.ids_only()
    }
}

impl TraceSink for RunSamples {
    fn add_trace(&mut self, trace: Vec<SpanRecord>) {
        RunSamples::add_trace(self, trace);
    }

    fn spans(&self) -> usize {
        self.spans
    }

    fn traces(&self) -> usize {
        self.traces
    }
}

/// Progress on stderr while reading: a line per [`Progress::EVERY`] spans, so inputs
/// under that size print none.
pub(crate) struct Progress {
    quiet: bool,
    next: usize,
}

impl Progress {
    /// Spans between two progress lines.
    pub(crate) const EVERY: usize = 100_000;

    pub(crate) fn new(quiet: bool) -> Self {
        Self { quiet, next: Self::EVERY }
    }

    /// Reports the sink's counts when they crossed the next step.
    pub(crate) fn update(&mut self, sink: &impl TraceSink) {
        if sink.spans() >= self.next {
            self.next = (sink.spans() / Self::EVERY + 1) * Self::EVERY;
            if !self.quiet {
                eprintln!("read {} spans, analyzed {} traces ...", sink.spans(), sink.traces());
            }
        }
    }
}

/// Where the median trace is read back from when the analysis did not keep it.
pub(crate) enum Source {
    /// The one database, streamed.
    Db(Store),
    /// The temporary database the inputs were gathered in (removed when the `TempDb` is
    /// dropped).
    Spilled(Store, #[allow(dead_code)] TempDb),
    /// The spans of every input, in memory (at most [`IN_MEMORY_SPANS`]).
    Spans(Vec<SpanRecord>),
    /// The one Jaeger JSON file, read again.
    Jaeger(PathBuf),
}

impl Source {
    /// The spans of trace `id`.
    pub(crate) async fn trace(&self, id: &str) -> Result<Vec<SpanRecord>> {
        match self {
            Self::Db(store) | Self::Spilled(store, _) => {
                Ok(store.spans_matching(SpanFilter { traces: vec![id.to_owned()], ..Default::default() }).await?)
            }
            Self::Spans(spans) => Ok(spans.iter().filter(|s| s.trace_id == id).cloned().collect()),
            Self::Jaeger(path) => {
                let (path, id) = (path.clone(), id.to_owned());
                let spans = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    stream_jaeger_json(&path, |spans| {
                        out.extend(spans.into_iter().filter(|s| s.trace_id == id));
                        ControlFlow::Continue(())
                    })
                    .map(|_| out)
                })
                .await??;
                Ok(spans)
            }
        }
    }
}

/// Spans gathered in memory, at most; beyond, they go to a temporary database.
pub(crate) const IN_MEMORY_SPANS: usize = 20_000;

impl Inputs {
    /// Feeds every trace of every source to an analyzer made by `make`
    /// ([`Sources::feed`]), with progress on stderr unless `--quiet`.
    pub(crate) async fn analyze(&self, make: impl Fn() -> Analyzer) -> Result<(Analyzer, Source)> {
        self.sources.feed(self.quiet, make).await
    }
}

impl Sources {
    /// Feeds every trace of every source to a sink, with bounded memory whatever the
    /// size of the inputs:
    /// - one database is streamed trace by trace (memory holds one trace);
    /// - one Jaeger JSON file is read trace by trace, each trace object analyzed as it is
    ///   read; when a trace turns up in a second trace object, the analysis starts again
    ///   from `make()` with the file read as below, its spans gathered by trace;
    /// - otherwise (OTLP JSON, where a trace's spans are spread over the file; several
    ///   inputs) spans are read piece by piece ([`stream_otlp_json`]) and gathered: in
    ///   memory up to [`IN_MEMORY_SPANS`], beyond that in a temporary SQLite database,
    ///   which is then streamed trace by trace like `--db`. A span (trace id, span id)
    ///   found in more than one place is kept once: the first, in the order databases,
    ///   OTLP JSON, Jaeger JSON; a trace split across inputs is analyzed as one. Traces are
    ///   analyzed in trace id order, each one's spans by start, as from a database.
    ///
    /// `make` gives the sink (called a second time only in the Jaeger case above). Lines on
    /// stderr say what was read, and every [`Progress::EVERY`] spans how far it got,
    /// unless `quiet`.
    pub(crate) async fn feed<S: TraceSink>(&self, quiet: bool, make: impl Fn() -> S) -> Result<(S, Source)> {
        let mut progress = Progress::new(quiet);
        let analyzer = make();
        match (self.db.as_slice(), self.otlp_json.as_slice(), self.jaeger_json.as_slice()) {
            ([db], [], []) => {
                let store = open_db(db)?;
                let analyzer = stream_store(&store, analyzer, progress)
                    .await
                    .with_context(|| format!("reading spans from {}", db.display()))?;
                if analyzer.spans() == 0 {
                    bail!("the inputs hold no spans ({} holds no spans yet)", db.display());
                }
                if !quiet {
                    eprintln!("read {} spans from {}", analyzer.spans(), db.display());
                }
                Ok((analyzer, Source::Db(store)))
            }
            ([], [], [file]) => {
                let mut analyzer = analyzer;
                let (mut rx, reader) = spawn_reader(file.clone(), true);
                let mut seen = HashSet::new();
                let mut twice = 0;
                while let Some(spans) = rx.recv().await {
                    for mut trace in into_traces(spans) {
                        let id = trace[0].trace_id.clone();
                        if !seen.insert(id.clone()) {
                            // Stop the reader (its sends fail), then read the file again grouped.
                            drop(rx);
                            reader.await?.map_err(|e| explain(e, "--otlp-json"))?;
                            if !quiet {
                                eprintln!(
                                    "{}: trace {id} is in more than one trace object; reading the file again, its \
                                     spans gathered by trace",
                                    file.display()
                                );
                            }
                            return self.grouped(make(), quiet, Progress::new(quiet)).await;
                        }
                        let before = trace.len();
                        let mut ids = HashSet::new();
                        trace.retain(|s| ids.insert(s.span_id.clone()));
                        twice += before - trace.len();
                        trace.sort_by(|a, b| (a.start_ns, &a.span_id).cmp(&(b.start_ns, &b.span_id)));
                        analyzer.add_trace(trace);
                        progress.update(&analyzer);
                    }
                }
                reader.await?.map_err(|e| explain(e, "--otlp-json"))?;
                if twice > 0 {
                    eprintln!("{twice} spans found more than once in a trace were kept once");
                }
                if analyzer.spans() == 0 {
                    bail!("the inputs hold no spans");
                }
                if !quiet {
                    eprintln!("read {} spans from {}", analyzer.spans(), file.display());
                }
                Ok((analyzer, Source::Jaeger(file.clone())))
            }
            _ => self.grouped(analyzer, quiet, progress).await,
        }
    }

    /// Reads every input piece by piece and gathers the spans by trace (in memory, then in
    /// a temporary database), then analyzes the traces in trace id order.
    async fn grouped<S: TraceSink>(&self, analyzer: S, quiet: bool, progress: Progress) -> Result<(S, Source)> {
        let mut grouper = Grouper::default();
        for db in &self.db {
            let store = open_db(db)?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let before = grouper.added;
            // A failed send (the gathering stopped on an error) drops the trace.
            let read = store.for_each_trace(SpanFilter::default(), move |trace| {
                let _ = tx.blocking_send(trace);
            });
            let gather = async {
                // Owned here, so that it is dropped (and the reader not blocked) on an error.
                let mut rx = rx;
                while let Some(trace) = rx.recv().await {
                    grouper.add(trace).await?;
                }
                anyhow::Ok(())
            };
            let (read, gathered) = tokio::join!(read, gather);
            read.with_context(|| format!("reading spans from {}", db.display()))?;
            gathered?;
            if !quiet {
                eprintln!("read {} spans from {}", grouper.added - before, db.display());
            }
        }
        for (files, jaeger, other) in
            [(&self.otlp_json, false, "--jaeger-json"), (&self.jaeger_json, true, "--otlp-json")]
        {
            for file in files {
                let (mut rx, reader) = spawn_reader(file.clone(), jaeger);
                while let Some(spans) = rx.recv().await {
                    grouper.add(spans).await?;
                }
                let n = reader.await?.map_err(|e| explain(e, other))?;
                if !quiet {
                    eprintln!("read {n} spans from {}", file.display());
                }
            }
        }
        grouper.analyze(analyzer, progress).await
    }
}

/// Reads an OTLP JSON (or Jaeger JSON) file on a blocking thread, handing its spans on
/// through a short channel (the reader waits while it is full).
fn spawn_reader(
    file: PathBuf,
    jaeger: bool,
) -> (tokio::sync::mpsc::Receiver<Vec<SpanRecord>>, tokio::task::JoinHandle<Result<usize, InputError>>) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reader = tokio::task::spawn_blocking(move || {
        let each = |spans| match tx.blocking_send(spans) {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        };
        if jaeger { stream_jaeger_json(&file, each) } else { stream_otlp_json(&file, each) }
    });
    (rx, reader)
}

/// Feeds the traces of `store` to `analyzer`, one at a time, as the analysis reads them
/// ([`SpanDetail::Columns`]: no OTLP form, only the attributes it reads). The store's
/// reading thread decodes while this analysis thread analyzes (a short queue between
/// them); the analyzer keeps the ids of the traces it chooses for the exports, which are
/// read back whole at the end ([`crate::report`]).
async fn stream_store<S: TraceSink>(store: &Store, analyzer: S, mut progress: Progress) -> Result<S> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Vec<SpanRecord>>>(2);
    let (done, analyzed) = tokio::sync::oneshot::channel();
    // Traces analyzed go back to the reader, which fills their records again.
    let (back, spare) = std::sync::mpsc::channel::<Vec<SpanRecord>>();
    std::thread::Builder::new().name("tracewire-analyze".into()).spawn(move || {
        let mut analyzer = analyzer.store_backed();
        for batch in rx {
            for trace in batch {
                if let Some(used) = analyzer.add_trace_returning(trace) {
                    let _ = back.send(used);
                }
                // Per trace, not per batch: the lines fall on the same counts as unbatched.
                progress.update(&analyzer);
            }
        }
        let _ = done.send(analyzer);
    })?;
    let detail = SpanDetail::Columns(ANALYZED_ATTRIBUTES.iter().map(|&a| a.to_owned()).collect());
    let mut batches = Batches { batch: Vec::with_capacity(Batches::TRACES), tx };
    store.for_each_trace_recycling(SpanFilter::default(), detail, spare, move |trace| batches.push(trace)).await?;
    analyzed.await.context("the analysis stopped")
}

/// Traces on their way to the analysis thread, sent in batches: one wake-up of that thread
/// per batch, not per trace. The last, partial batch is sent when the reader drops it.
struct Batches {
    batch: Vec<Vec<SpanRecord>>,
    tx: std::sync::mpsc::SyncSender<Vec<Vec<SpanRecord>>>,
}

impl Batches {
    /// Traces per batch.
    const TRACES: usize = 64;

    fn push(&mut self, trace: Vec<SpanRecord>) {
        self.batch.push(trace);
        if self.batch.len() == Self::TRACES {
            // The analysis thread only stops when this side does.
            let _ = self.tx.send(std::mem::replace(&mut self.batch, Vec::with_capacity(Self::TRACES)));
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.batch));
        }
    }
}

/// Spans of several inputs gathered to be grouped by trace: in memory up to
/// [`IN_MEMORY_SPANS`], then in a temporary database.
#[derive(Default)]
struct Grouper {
    spans: Vec<SpanRecord>,
    spill: Option<(Store, TempDb)>,
    /// Spans added.
    added: usize,
}

impl Grouper {
    async fn add(&mut self, batch: Vec<SpanRecord>) -> Result<()> {
        self.added += batch.len();
        if let Some((store, _)) = &self.spill {
            store.append_spans(batch).await?;
            return Ok(());
        }
        self.spans.extend(batch);
        if self.spans.len() > IN_MEMORY_SPANS {
            let tmp = TempDb::new()?;
            let mut config = StoreConfig::default();
            // Wait for the disk rather than fail; a small queue keeps memory low.
            config.full = FullPolicy::Wait(Duration::from_secs(3600));
            config.max_queued_spans = 16_384;
            let store =
                Store::open_with(tmp.db(), config).with_context(|| format!("opening {}", tmp.db().display()))?;
            let mut spans = std::mem::take(&mut self.spans).into_iter();
            loop {
                let chunk: Vec<SpanRecord> = spans.by_ref().take(4096).collect();
                if chunk.is_empty() {
                    break;
                }
                store.append_spans(chunk).await?;
            }
            self.spill = Some((store, tmp));
        }
        Ok(())
    }

    /// Feeds the gathered traces to `analyzer`, in trace id order, each trace's spans by
    /// start (then span id), a span seen twice kept once (the first).
    async fn analyze<S: TraceSink>(self, mut analyzer: S, mut progress: Progress) -> Result<(S, Source)> {
        let (kept, source) = if let Some((store, tmp)) = self.spill {
            let analyzer_out = stream_store(&store, analyzer, progress).await.context("reading the gathered spans")?;
            analyzer = analyzer_out;
            (analyzer.spans(), Source::Spilled(store, tmp))
        } else {
            let mut spans = self.spans;
            let mut seen = HashSet::new();
            spans.retain(|s| seen.insert((s.trace_id.clone(), s.span_id.clone())));
            spans.sort_by(|a, b| (&a.trace_id, a.start_ns, &a.span_id).cmp(&(&b.trace_id, b.start_ns, &b.span_id)));
            for trace in spans.chunk_by(|a, b| a.trace_id == b.trace_id) {
                analyzer.add_trace(trace.to_vec());
                progress.update(&analyzer);
            }
            (spans.len(), Source::Spans(spans))
        };
        if kept < self.added {
            eprintln!("{} spans found in more than one input were kept once", self.added - kept);
        }
        if kept == 0 {
            bail!("the inputs hold no spans");
        }
        Ok((analyzer, source))
    }
}

/// A temporary directory for the gathered spans' database, removed when dropped.
pub(crate) struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("tracewire-report-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn db(&self) -> PathBuf {
        self.0.join("spans.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error, with the flag to use when the file is of the other format.
fn explain(e: InputError, other_flag: &str) -> anyhow::Error {
    match &e {
        InputError::WrongFormat { found: "Jaeger JSON" | "OTLP JSON", .. } => {
            anyhow::anyhow!("{e} (pass it with {other_flag})")
        }
        _ => e.into(),
    }
}

/// Opens a database written by `tracewire collect --db`.
fn open_db(db: &Path) -> Result<Store> {
    if !db.is_file() {
        bail!("{}: no such database (write one with `tracewire collect --db {}`)", db.display(), db.display());
    }
    Store::open(db).with_context(|| format!("opening {}", db.display()))
}
