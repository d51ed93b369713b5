//! The report files and the terminal table, shared by `demo`, `collect` and `report`.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tracewire_collector::{Analyzer, ExportPlan, Exports, KeepPolicy, Slo, SpanRecord, Summary, into_traces};
use tracewire_store::{SpanFilter, Store};

use crate::inputs::Source;

/// The objectives from `--slo` flags and an `--slo-file`, in that order.
pub(crate) fn load_slos(exprs: &[String], file: Option<&Path>) -> Result<Vec<Slo>> {
    let mut slos = exprs.iter().map(|e| Slo::parse(e)).collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        slos.extend(Slo::parse_toml(&text).with_context(|| format!("in {}", path.display()))?);
    }
    Ok(slos)
}

/// Analyzes `spans`, writes `out/summary.json`, `out/report.html` and
/// `out/traces.jaeger.json` (the default selection of traces), and returns the summary.
pub(crate) fn write(out: &Path, spans: &[SpanRecord], slos: &[Slo]) -> Result<Summary> {
    let mut analyzer = Analyzer::new(slos);
    for trace in into_traces(spans.to_vec()) {
        analyzer.add_trace(trace);
    }
    let (summary, mut exports) = analyzer.finish_with_exports();
    if exports.median.is_none()
        && let Some(id) = exports.median_id.clone()
    {
        exports.set_median(spans.iter().filter(|s| s.trace_id == id).cloned().collect());
    }
    write_files(out, &summary, &exports, slos)?;
    Ok(summary)
}

/// Writes the three report files of an analysis.
pub(crate) fn write_files(out: &Path, summary: &Summary, exports: &Exports, slos: &[Slo]) -> Result<()> {
    let page = Page {
        written: exports.written(),
        omitted: exports.omitted(),
        median: exports.median.as_deref().map(Vec::as_slice),
        slowest: exports.slowest.as_deref().map(Vec::as_slice),
    };
    write_summary_and_page(out, summary, &page, slos)?;
    let path = out.join("traces.jaeger.json");
    let body = serde_json::to_string(&tracewire_collector::jaeger::to_jaeger(&exports.spans()))?;
    std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))
}

/// What summary.json and report.html say of the exports.
struct Page<'a> {
    written: usize,
    omitted: usize,
    median: Option<&'a [SpanRecord]>,
    slowest: Option<&'a [SpanRecord]>,
}

/// Writes `out/summary.json` and `out/report.html`.
fn write_summary_and_page(out: &Path, summary: &Summary, page: &Page<'_>, slos: &[Slo]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut json = serde_json::to_value(summary)?;
    if let Some(object) = json.as_object_mut() {
        object.insert("jaeger_traces_written".to_owned(), page.written.into());
        object.insert("jaeger_traces_omitted".to_owned(), page.omitted.into());
    }
    let html = tracewire_collector::report::render_page(summary, page.median, page.slowest, slos);
    for (name, body) in [("summary.json", serde_json::to_string_pretty(&json)?), ("report.html", html)] {
        let path = out.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Writes the three report files of an analysis of `store` whose exports are `plan`: the
/// chosen traces are read back whole by id, and `traces.jaeger.json` is written one trace
/// at a time (memory holds one trace, however many are exported).
async fn write_files_from_store(
    out: &Path,
    summary: &Summary,
    plan: &ExportPlan,
    store: &Store,
    slos: &[Slo],
) -> Result<()> {
    let read = |id: Option<String>| async move {
        match id {
            Some(id) => {
                anyhow::Ok(Some(store.spans_matching(SpanFilter { traces: vec![id], ..Default::default() }).await?))
            }
            None => Ok(None),
        }
    };
    let median = read(plan.median.clone()).await?;
    let slowest = read(plan.slowest.clone()).await?;
    let page = Page {
        written: plan.written(),
        omitted: plan.omitted(),
        median: median.as_deref(),
        slowest: slowest.as_deref(),
    };
    write_summary_and_page(out, summary, &page, slos)?;
    let path = out.join("traces.jaeger.json");
    let file = std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
    let jaeger = std::sync::Arc::new(std::sync::Mutex::new(JaegerFile::new(file)?));
    // No id chosen must not read as "no filter" (every trace).
    if !plan.traces.is_empty() {
        let each = std::sync::Arc::clone(&jaeger);
        store
            .for_each_trace(SpanFilter { traces: plan.traces.clone(), ..Default::default() }, move |trace| {
                if let Ok(mut j) = each.lock() {
                    j.add(&trace);
                }
            })
            .await
            .context("reading the exported traces")?;
    }
    let finished = jaeger.lock().map_err(|_| anyhow::anyhow!("writing {} stopped", path.display()))?.finish();
    finished.with_context(|| format!("writing {}", path.display()))
}

/// `traces.jaeger.json` written trace by trace, as [`tracewire_collector::jaeger::to_jaeger`]
/// writes it whole.
struct JaegerFile {
    out: std::io::BufWriter<std::fs::File>,
    traces: usize,
    /// The first failure: later traces are skipped and [`JaegerFile::finish`] reports it.
    error: Option<anyhow::Error>,
}

impl JaegerFile {
    fn new(file: std::fs::File) -> Result<Self> {
        let mut out = std::io::BufWriter::new(file);
        out.write_all(br#"{"data":["#)?;
        Ok(Self { out, traces: 0, error: None })
    }

    /// Adds the spans of one trace (as [`tracewire_collector::jaeger::traces`] renders them).
    fn add(&mut self, spans: &[SpanRecord]) {
        if self.error.is_some() {
            return;
        }
        for trace in tracewire_collector::jaeger::traces(spans) {
            // Through a `Value`: its keys in the order `to_jaeger` gives them.
            let written = serde_json::to_value(&trace).map_err(anyhow::Error::from).and_then(|v| {
                if self.traces > 0 {
                    self.out.write_all(b",")?;
                }
                serde_json::to_writer(&mut self.out, &v)?;
                Ok(())
            });
            if let Err(e) = written {
                self.error = Some(e);
                return;
            }
            self.traces += 1;
        }
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.write_all(br#"],"errors":null,"limit":0,"offset":0,"total":0}"#)?;
        self.out.flush()?;
        Ok(())
    }
}

/// The exit status SLOs give: 3 when any fails.
pub(crate) fn exit_code(summary: &Summary) -> i32 {
    if summary.slos.iter().all(|s| s.pass) { 0 } else { 3 }
}

/// The stage table and a few lines on where the time went.
pub(crate) fn print_table(summary: &Summary) {
    println!(
        "{} traces, {} spans, {} orphans, {} traces with errors",
        summary.traces, summary.spans, summary.orphans, summary.traces_with_errors
    );
    println!(
        "{:<18} {:>6} {:>10} {:>10} {:>10} {:>10} {:>7}",
        "stage", "count", "p50 ms", "p90 ms", "p99 ms", "max ms", "err %"
    );
    let mut stages = summary.stages.clone();
    stages.sort_by(|a, b| b.stats.p50_ms.total_cmp(&a.stats.p50_ms));
    for s in &stages {
        let st = s.stats;
        println!(
            "{:<18} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>7.2}",
            s.stage,
            st.count,
            st.p50_ms,
            st.p90_ms,
            st.p99_ms,
            st.max_ms,
            s.error_rate * 100.0
        );
    }
    println!("where the time went:");
    println!(
        "  end to end p50 {:.3} ms, p99 {:.3} ms; first output p50 {:.3} ms",
        summary.e2e.p50_ms, summary.e2e.p99_ms, summary.first_output.p50_ms
    );
    let critical: Vec<String> =
        summary.critical_path.iter().take(4).map(|c| format!("{} {:.1}%", c.stage, c.share * 100.0)).collect();
    println!("  critical path: {}", critical.join(", "));
    println!("  unattributed: {:.2}% of end-to-end time (goal < 1%)", summary.unattributed_fraction * 100.0);
    if let Some(t) = summary.critical_path.iter().find(|c| c.stage == "net.transit") {
        println!("  net.transit (wire time between processes): {:.2}% of the critical path", t.share * 100.0);
    }
    for c in &summary.clock {
        let uncertainty = c.uncertainty_ms.map_or_else(|| "?".to_owned(), |u| format!("{u:.3}"));
        println!("  clock {} - {}: {:+.3} ms +- {uncertainty} ms ({} samples)", c.to, c.from, c.offset_ms, c.samples);
    }
    for r in &summary.slos {
        let verdict = if r.pass { "pass" } else { "FAIL" };
        match (r.value_ms, r.error_rate) {
            (_, Some(rate)) => println!(
                "  SLO {}: error rate {:.2}%, {:.1}% of traces with an error, {verdict}",
                r.expr,
                rate * 100.0,
                r.violation_rate * 100.0
            ),
            (value_ms, None) => println!(
                "  SLO {}: {:.3} ms, {:.1}% of traces over, {verdict}",
                r.expr,
                value_ms.unwrap_or(0.0),
                r.violation_rate * 100.0
            ),
        }
    }
}

/// `tracewire report`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ReportArgs {
    #[command(flatten)]
    inputs: crate::inputs::Inputs,
    /// Where to write the report files.
    #[arg(long, default_value = "tracewire-report")]
    out: std::path::PathBuf,
    #[command(flatten)]
    slo: crate::flags::SloArgs,
}

/// Runs `tracewire report`; exit status 3 when an objective fails.
pub(crate) async fn run(args: ReportArgs) -> Result<i32> {
    from_inputs(&args.inputs, &args.slo.load()?, &args.out).await
}

/// `tracewire report`: the report of the spans of its inputs (databases written by
/// `tracewire collect --db`, OTLP JSON and Jaeger JSON files).
async fn from_inputs(inputs: &crate::inputs::Inputs, slos: &[Slo], out: &Path) -> Result<i32> {
    let t0 = Instant::now();
    let policy = KeepPolicy { slowest: inputs.limit, traces: inputs.traces.clone(), ..KeepPolicy::default() };
    let (analyzer, source) = inputs.analyze(|| Analyzer::with_policy(slos, policy.clone())).await?;
    let (summary, written, omitted) = match &source {
        Source::Db(store) | Source::Spilled(store, _) => {
            let (summary, plan) = analyzer.finish_with_plan();
            write_files_from_store(out, &summary, &plan, store, slos).await?;
            (summary, plan.written(), plan.omitted())
        }
        _ => {
            let (summary, mut exports) = analyzer.finish_with_exports();
            if exports.median.is_none()
                && let Some(id) = exports.median_id.clone()
            {
                exports.set_median(source.trace(&id).await?);
            }
            write_files(out, &summary, &exports, slos)?;
            (summary, exports.written(), exports.omitted())
        }
    };
    print_table(&summary);
    let chosen = if inputs.traces.is_empty() {
        format!(
            "the {} slowest, the median and those with an error (at most {})",
            inputs.limit,
            tracewire_collector::ERROR_TRACES_CAP
        )
    } else {
        "those given with --trace".to_owned()
    };
    println!(
        "traces.jaeger.json: {written} traces written, {omitted} left out (it holds {chosen}; choose with --limit N or --trace ID)"
    );
    println!("wrote {0}/summary.json, {0}/report.html, {0}/traces.jaeger.json in {1:.2?}", out.display(), t0.elapsed());
    Ok(exit_code(&summary))
}
