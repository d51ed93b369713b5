//! Where `tracewire report` reads its spans: databases written by `tracewire collect --db`,
//! OTLP JSON files and Jaeger JSON files, any number of each, combined.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tracewire_collector::SpanRecord;
use tracewire_collector::input::{InputError, read_jaeger_json, read_otlp_json};

/// The sources of `tracewire report` (at least one).
#[derive(clap::Args, Debug)]
#[group(id = "inputs", required = true, multiple = true)]
pub(crate) struct Inputs {
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

impl Inputs {
    /// Every span of every source, in the order given (databases, OTLP JSON, Jaeger JSON).
    /// A span (trace id, span id) found in more than one place is kept once: the first.
    pub(crate) async fn load(&self) -> Result<Vec<SpanRecord>> {
        let mut spans = Vec::new();
        for db in &self.db {
            let read = from_db(db).await?;
            eprintln!("read {} spans from {}", read.len(), db.display());
            spans.extend(read);
        }
        type Reader = fn(PathBuf) -> Result<Vec<SpanRecord>, InputError>;
        for (files, read, other) in [
            (&self.otlp_json, (|p| read_otlp_json(p)) as Reader, "--jaeger-json"),
            (&self.jaeger_json, (|p| read_jaeger_json(p)) as Reader, "--otlp-json"),
        ] {
            for file in files {
                let path = file.clone();
                let read = tokio::task::spawn_blocking(move || read(path)).await?.map_err(|e| explain(e, other))?;
                eprintln!("read {} spans from {}", read.len(), file.display());
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

/// The spans a `tracewire collect --db` stored.
async fn from_db(db: &Path) -> Result<Vec<SpanRecord>> {
    if !db.is_file() {
        bail!("{}: no such database (write one with `tracewire collect --db {}`)", db.display(), db.display());
    }
    eprintln!("reading spans from {} ...", db.display());
    let store = tracewire_store::Store::open(db).with_context(|| format!("opening {}", db.display()))?;
    let spans = store.spans().await.with_context(|| format!("reading spans from {}", db.display()))?;
    if spans.is_empty() {
        eprintln!("{} holds no spans yet", db.display());
    }
    Ok(spans)
}
