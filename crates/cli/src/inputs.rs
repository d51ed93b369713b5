//! Where `tracewire report` reads its spans: databases written by `tracewire collect --db`,
//! OTLP JSON files and Jaeger JSON files, any number of each, combined.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tracewire_collector::input::{InputError, read_jaeger_json, read_otlp_json};
use tracewire_collector::{Analyzer, SpanRecord, into_traces};
use tracewire_store::{SpanFilter, Store};

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

    /// Reports the analyzer's counts when they crossed the next step.
    pub(crate) fn update(&mut self, analyzer: &Analyzer) {
        if analyzer.spans() >= self.next {
            self.next = (analyzer.spans() / Self::EVERY + 1) * Self::EVERY;
            if !self.quiet {
                eprintln!("read {} spans, analyzed {} traces ...", analyzer.spans(), analyzer.traces());
            }
        }
    }
}

/// Where the median trace is read back from when the analysis did not keep it.
pub(crate) enum Source {
    /// The one database, streamed.
    Db(Store),
    /// The spans of every input, in memory.
    Spans(Vec<SpanRecord>),
}

impl Source {
    /// The spans of trace `id`.
    pub(crate) async fn trace(&self, id: &str) -> Result<Vec<SpanRecord>> {
        match self {
            Self::Db(store) => {
                Ok(store.spans_matching(SpanFilter { traces: vec![id.to_owned()], ..Default::default() }).await?)
            }
            Self::Spans(spans) => Ok(spans.iter().filter(|s| s.trace_id == id).cloned().collect()),
        }
    }
}

impl Inputs {
    /// Feeds every trace of every source to `analyzer`. One database is streamed trace by
    /// trace (memory holds one trace); several inputs, or files, are read whole and their
    /// spans combined (a span (trace id, span id) found in more than one place is kept
    /// once: the first, in the order databases, OTLP JSON, Jaeger JSON) so that a trace
    /// split across inputs is analyzed as one.
    pub(crate) async fn analyze(&self, analyzer: Analyzer) -> Result<(Analyzer, Source)> {
        let s = &self.sources;
        let mut progress = Progress::new(self.quiet);
        if let ([db], [], []) = (s.db.as_slice(), s.otlp_json.as_slice(), s.jaeger_json.as_slice()) {
            let store = open_db(db)?;
            let shared = std::sync::Arc::new(std::sync::Mutex::new(Some((analyzer, progress))));
            let feed = std::sync::Arc::clone(&shared);
            store
                .for_each_trace(SpanFilter::default(), move |trace| {
                    if let Ok(mut guard) = feed.lock()
                        && let Some((analyzer, progress)) = guard.as_mut()
                    {
                        analyzer.add_trace(trace);
                        progress.update(analyzer);
                    }
                })
                .await
                .with_context(|| format!("reading spans from {}", db.display()))?;
            let taken = shared.lock().ok().and_then(|mut g| g.take());
            let Some((analyzer, _)) = taken else { bail!("the analysis of {} stopped", db.display()) };
            if analyzer.spans() == 0 {
                bail!("the inputs hold no spans ({} holds no spans yet)", db.display());
            }
            if !self.quiet {
                eprintln!("read {} spans from {}", analyzer.spans(), db.display());
            }
            return Ok((analyzer, Source::Db(store)));
        }
        let spans = self.load().await?;
        let mut analyzer = analyzer;
        for trace in into_traces(spans.clone()) {
            analyzer.add_trace(trace);
            progress.update(&analyzer);
        }
        Ok((analyzer, Source::Spans(spans)))
    }

    /// Every span of every source, in the order given (databases, OTLP JSON, Jaeger JSON).
    /// A span (trace id, span id) found in more than one place is kept once: the first.
    pub(crate) async fn load(&self) -> Result<Vec<SpanRecord>> {
        let mut spans = Vec::new();
        for db in &self.sources.db {
            let read = from_db(db).await?;
            if !self.quiet {
                eprintln!("read {} spans from {}", read.len(), db.display());
            }
            spans.extend(read);
        }
        type Reader = fn(PathBuf) -> Result<Vec<SpanRecord>, InputError>;
        for (files, read, other) in [
            (&self.sources.otlp_json, (|p| read_otlp_json(p)) as Reader, "--jaeger-json"),
            (&self.sources.jaeger_json, (|p| read_jaeger_json(p)) as Reader, "--otlp-json"),
        ] {
            for file in files {
                let path = file.clone();
                let read = tokio::task::spawn_blocking(move || read(path)).await?.map_err(|e| explain(e, other))?;
                if !self.quiet {
                    eprintln!("read {} spans from {}", read.len(), file.display());
                }
                spans.extend(read);
            }
        }
        let before = spans.len();
        let mut seen = HashSet::new();
        spans.retain(|s| seen.insert((s.trace_id.clone(), s.span_id.clone())));
        if spans.len() < before {
            eprintln!("{} spans found in more than one input were kept once", before - spans.len());
        }
        if spans.is_empty() {
            bail!("the inputs hold no spans");
        }
        Ok(spans)
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

/// The spans a `tracewire collect --db` stored.
async fn from_db(db: &Path) -> Result<Vec<SpanRecord>> {
    let store = open_db(db)?;
    eprintln!("reading spans from {} ...", db.display());
    let spans = store.spans().await.with_context(|| format!("reading spans from {}", db.display()))?;
    if spans.is_empty() {
        eprintln!("{} holds no spans yet", db.display());
    }
    Ok(spans)
}
