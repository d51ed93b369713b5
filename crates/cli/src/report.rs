//! The report files and the terminal table, shared by `demo`, `collect` and `report`.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tracewire_collector::{Analyzer, Exports, KeepPolicy, Slo, SpanRecord, Summary, into_traces};

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
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut json = serde_json::to_value(summary)?;
    if let Some(object) = json.as_object_mut() {
        object.insert("jaeger_traces_written".to_owned(), exports.written().into());
        object.insert("jaeger_traces_omitted".to_owned(), exports.omitted().into());
    }
    let html = tracewire_collector::report::render_page(
        summary,
        exports.median.as_deref().map(Vec::as_slice),
        exports.slowest.as_deref().map(Vec::as_slice),
        slos,
    );
    let files = [
        ("summary.json", serde_json::to_string_pretty(&json)?),
        ("report.html", html),
        ("traces.jaeger.json", serde_json::to_string(&tracewire_collector::jaeger::to_jaeger(&exports.spans()))?),
    ];
    for (name, body) in files {
        let path = out.join(name);
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
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
    println!("  unattributed: {:.2}% of end-to-end time (goal < 2%)", summary.unattributed_fraction * 100.0);
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

/// `tracewire report`: the report of the spans of its inputs (databases written by
/// `tracewire collect --db`, OTLP JSON and Jaeger JSON files).
pub(crate) async fn from_inputs(inputs: &crate::inputs::Inputs, slos: &[Slo], out: &Path) -> Result<i32> {
    let t0 = Instant::now();
    let policy = KeepPolicy { slowest: inputs.limit, traces: inputs.traces.clone(), ..KeepPolicy::default() };
    let (analyzer, source) = inputs.analyze(Analyzer::with_policy(slos, policy)).await?;
    let (summary, mut exports) = analyzer.finish_with_exports();
    if exports.median.is_none()
        && let Some(id) = exports.median_id.clone()
    {
        exports.set_median(source.trace(&id).await?);
    }
    write_files(out, &summary, &exports, slos)?;
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
        "traces.jaeger.json: {} traces written, {} left out (it holds {chosen}; choose with --limit N or --trace ID)",
        exports.written(),
        exports.omitted()
    );
    println!("wrote {0}/summary.json, {0}/report.html, {0}/traces.jaeger.json in {1:.2?}", out.display(), t0.elapsed());
    Ok(exit_code(&summary))
}
