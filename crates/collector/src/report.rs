//! `report.html`: a self-contained page (inline SVG, no network) with the latency of each
//! stage, the end-to-end and first-output latency, every latency SLO threshold as a red
//! dashed line, a red marker on every row with errors, the stage table with error rates,
//! and waterfalls of the median and the slowest trace.

// Pixel positions and millisecond labels: f64 precision is far beyond what a chart shows.
#![allow(clippy::cast_precision_loss)]

use std::collections::HashSet;
use std::fmt::Write;

use crate::analysis::{LatencyStats, Summary, by_trace, children_of, correct_skew, critical_path, longest_root};
use crate::{Slo, SpanRecord};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const W: f64 = 900.0;
const LABEL: f64 = 190.0;

/// One row of a bar chart: its latency, and how many of its spans (traces, for `e2e`)
/// have status ERROR.
struct Row {
    name: String,
    stats: LatencyStats,
    errors: usize,
    error_rate: f64,
}

/// Horizontal p50/p90/p99 bars per row, with latency SLO thresholds as red dashed lines
/// and a red marker (class `error-marker`) before the bars of a row with errors.
fn bars(title: &str, rows: &[Row], slos: &[Slo]) -> String {
    let latency_slos: Vec<&Slo> = slos.iter().filter(|s| !s.is_error_rate()).collect();
    let max = rows
        .iter()
        .map(|r| r.stats.p99_ms)
        .chain(latency_slos.iter().filter(|s| rows.iter().any(|r| r.name == s.metric)).map(|s| s.threshold_ms))
        .fold(0.0_f64, f64::max)
        .max(1e-6);
    // Room on the right for the "p50 · p90 · p99" label after the longest bar.
    let scale = (W - LABEL - 290.0) / max;
    let h = 22.0;
    #[allow(clippy::cast_precision_loss)]
    let height = rows.len() as f64 * h + 40.0;
    let mut svg = format!(
        r#"<h2>{}</h2><svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    for (i, row) in rows.iter().enumerate() {
        let (name, s) = (&row.name, &row.stats);
        #[allow(clippy::cast_precision_loss)]
        let y = 20.0 + i as f64 * h;
        if row.errors > 0 {
            let _ = write!(
                svg,
                r#"<circle class="error-marker" cx="{:.1}" cy="{:.1}" r="5" fill="red"><title>{} errors ({:.2}%)</title></circle>"#,
                LABEL - 9.0,
                y + 7.0,
                row.errors,
                row.error_rate * 100.0
            );
        }
        let _ = write!(
            svg,
            r##"<text x="4" y="{:.1}" font-size="12">{}</text><rect x="{LABEL}" y="{y:.1}" width="{:.1}" height="14" fill="#c6dbef"><title>p99 {:.3} ms</title></rect><rect x="{LABEL}" y="{y:.1}" width="{:.1}" height="14" fill="#6baed6"/><rect x="{LABEL}" y="{y:.1}" width="{:.1}" height="14" fill="#2171b5"/><text x="{:.1}" y="{:.1}" font-size="11">p50 {:.3} · p90 {:.3} · p99 {:.3} ms ({} spans)</text>"##,
            y + 11.0,
            esc(name),
            s.p99_ms * scale,
            s.p99_ms,
            s.p90_ms * scale,
            s.p50_ms * scale,
            LABEL + s.p99_ms * scale + 6.0,
            y + 11.0,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.count
        );
        for slo in latency_slos.iter().filter(|slo| slo.metric == *name) {
            let x = LABEL + slo.threshold_ms * scale;
            let _ = write!(
                svg,
                r#"<line class="slo" x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="red" stroke-width="2" stroke-dasharray="4 3"><title>SLO {}</title></line>"#,
                y - 3.0,
                y + 17.0,
                esc(&slo.expr)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A waterfall of one trace: one row per span, by depth-first order, over the root's time;
/// spans on the critical path are drawn darker (class `critical`).
fn waterfall(title: &str, trace: &[SpanRecord]) -> String {
    let Some(root_index) = longest_root(trace) else { return String::new() };
    let root = &trace[root_index];
    let critical: HashSet<usize> = critical_path(trace).into_iter().map(|(i, _)| i).collect();
    let children = children_of(trace);
    // Depth first, children by start; each span once (a malformed trace may loop).
    let mut rows: Vec<(usize, usize)> = Vec::new();
    let mut seen: HashSet<usize> = HashSet::new();
    let mut stack = vec![(0usize, root_index)];
    let mut more = 0usize;
    while let Some((d, i)) = stack.pop() {
        if !seen.insert(i) {
            continue;
        }
        if rows.len() == MAX_WATERFALL_ROWS {
            more = trace.len() - rows.len();
            break;
        }
        rows.push((d, i));
        let mut kids = children.get(trace[i].span_id.as_str()).cloned().unwrap_or_default();
        kids.sort_by_key(|&k| std::cmp::Reverse(trace[k].start_ns));
        stack.extend(kids.into_iter().map(|k| (d + 1, k)));
    }
    #[allow(clippy::cast_precision_loss)]
    let dur = root.duration_ns().max(1) as f64;
    let scale = (W - LABEL - 10.0) / dur;
    let row_height = 16.0;
    #[allow(clippy::cast_precision_loss)]
    let height = rows.len() as f64 * row_height + 30.0;
    let mut svg = format!(
        r#"<h2>{} ({:.3} ms)</h2><svg class="waterfall" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}">"#,
        esc(title),
        dur / 1e6
    );
    for (row, &(depth, index)) in rows.iter().enumerate() {
        let s = &trace[index];
        #[allow(clippy::cast_precision_loss)]
        let (y, x, w) = (
            10.0 + row as f64 * row_height,
            LABEL + (s.start_ns - root.start_ns) as f64 * scale,
            (s.duration_ns() as f64 * scale).max(1.0),
        );
        let (class, fill) = if critical.contains(&index) { ("critical", "#a63603") } else { ("span", "#fdae6b") };
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11">{}</text><rect class="{class}" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="12" fill="{fill}"><title>{} {:.3} ms</title></rect>"#,
            4.0 + depth as f64 * 8.0,
            y + 10.0,
            esc(s.stage()),
            esc(&s.name),
            s.duration_ns() as f64 / 1e6
        );
    }
    svg.push_str("</svg>");
    if more > 0 {
        let _ = write!(svg, r#"<p class="rows-omitted">{more} more spans of this trace are not drawn.</p>"#);
    }
    svg
}

/// The whole page, with the waterfalls of the median and the slowest of the traces of
/// `spans` (those with a root, by the duration of their first root).
pub fn render_html(summary: &Summary, spans: &[SpanRecord], slos: &[Slo]) -> String {
    let mut traces: Vec<Vec<SpanRecord>> =
        by_trace(spans).into_iter().filter(|t| t.iter().any(|s| s.parent_id.is_none())).collect();
    traces.sort_by_key(|t| t.iter().find(|s| s.parent_id.is_none()).map_or(0, SpanRecord::duration_ns));
    render_page(summary, traces.get(traces.len() / 2).map(Vec::as_slice), traces.last().map(Vec::as_slice), slos)
}

/// Stage rows drawn at most (the stages with the most spans); the page says how many more.
pub const MAX_STAGE_ROWS: usize = 200;

/// Waterfall rows drawn at most per trace; the page says how many more.
pub const MAX_WATERFALL_ROWS: usize = 2000;

/// The whole page, with the waterfalls of `median` and `slowest` (spans as given: they are
/// corrected for clock skew here). Bounded whatever the input: at most [`MAX_STAGE_ROWS`]
/// stages and [`MAX_WATERFALL_ROWS`] rows per waterfall, so the page stays under 2 MB
/// (with a few SLOs).
pub fn render_page(
    summary: &Summary,
    median: Option<&[SpanRecord]>,
    slowest: Option<&[SpanRecord]>,
    slos: &[Slo],
) -> String {
    let corrected = |t: &[SpanRecord]| {
        let mut t = t.to_vec();
        correct_skew(&mut t);
        t
    };
    let (median, slowest) = (median.map(corrected), slowest.map(corrected));
    let mut shown: Vec<&crate::StageStats> = summary.stages.iter().collect();
    let hidden = shown.len().saturating_sub(MAX_STAGE_ROWS);
    if hidden > 0 {
        shown.sort_by(|a, b| b.stats.count.cmp(&a.stats.count).then_with(|| a.stage.cmp(&b.stage)));
        shown.truncate(MAX_STAGE_ROWS);
        shown.sort_by(|a, b| a.stage.cmp(&b.stage));
    }
    let hidden_note = if hidden > 0 {
        format!(
            r#"<p id="stages-omitted">{hidden} more stages (the ones with the fewest spans) are in summary.json.</p>"#
        )
    } else {
        String::new()
    };
    let e2e_error_rate =
        if summary.traces == 0 { 0.0 } else { summary.traces_with_errors as f64 / summary.traces as f64 };
    let mut top = vec![Row {
        name: "e2e".to_owned(),
        stats: summary.e2e,
        errors: summary.traces_with_errors,
        error_rate: e2e_error_rate,
    }];
    if summary.first_output.count > 0 {
        top.push(Row { name: "first_output".to_owned(), stats: summary.first_output, errors: 0, error_rate: 0.0 });
    }
    let stage_rows: Vec<Row> = shown
        .iter()
        .map(|s| Row { name: s.stage.clone(), stats: s.stats, errors: s.errors, error_rate: s.error_rate })
        .collect();
    let mut stage_table = String::new();
    for s in &shown {
        let st = s.stats;
        let marker = if s.errors > 0 { r#"<span class="error-marker">●</span> "# } else { "" };
        let _ = write!(
            stage_table,
            r#"<tr{}><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td class="err">{marker}{:.2}</td></tr>"#,
            if s.errors > 0 { r#" class="errors""# } else { "" },
            esc(&s.stage),
            st.count,
            st.p50_ms,
            st.p90_ms,
            st.p99_ms,
            st.max_ms,
            s.errors,
            s.error_rate * 100.0
        );
    }
    let mut slo_rows = String::new();
    if summary.slos.is_empty() {
        slo_rows.push_str(
            r#"<tr><td colspan="4">none given (--slo 'e2e.p99&lt;=250ms', --slo 'process.spawn.error_rate&lt;=1%', or --slo-file)</td></tr>"#,
        );
    }
    for r in &summary.slos {
        let measured = match (r.value_ms, r.error_rate) {
            (_, Some(rate)) => format!("{:.2}% errors", rate * 100.0),
            (Some(ms), None) => format!("{ms:.3} ms"),
            (None, None) => String::new(),
        };
        let _ = write!(
            slo_rows,
            r#"<tr class="{}"><td>{}</td><td>{measured}</td><td>{:.1}%</td><td>{}</td></tr>"#,
            if r.pass { "pass" } else { "fail" },
            esc(&r.expr),
            r.violation_rate * 100.0,
            if r.pass { "pass" } else { "FAIL" }
        );
    }
    let mut critical_rows = String::new();
    for c in summary.critical_path.iter().take(MAX_STAGE_ROWS) {
        let _ = write!(
            critical_rows,
            "<tr><td>{}</td><td>{:.3} ms</td><td>{:.1}%</td></tr>",
            esc(&c.stage),
            c.total_ms,
            c.share * 100.0
        );
    }
    let mut clock_rows = String::new();
    if summary.clock.is_empty() {
        clock_rows
            .push_str(r#"<tr><td colspan="5">no clock samples (no rpc.call with tracewire.clock.offset_us)</td></tr>"#);
    }
    for c in &summary.clock {
        let uncertainty = c.uncertainty_ms.map_or_else(|| "?".to_owned(), |u| format!("&plusmn; {u:.3} ms"));
        let _ = write!(
            clock_rows,
            "<tr><td>{}</td><td>{}</td><td>{:+.3} ms</td><td>{uncertainty}</td><td>{}</td></tr>",
            esc(&c.from),
            esc(&c.to),
            c.offset_ms,
            c.samples
        );
    }
    let median = median.map(|t| waterfall("Median trace", &t)).unwrap_or_default();
    let slowest = slowest.map(|t| waterfall("Slowest trace", &t)).unwrap_or_default();
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>tracewire report</title><style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}} tr.fail td{{background:#fdd}} tr.pass td{{background:#dfd}}
#stages td{{text-align:right}} #stages td:first-child{{text-align:left}} tr.errors td.err{{color:#b00;font-weight:600}}
.error-marker{{color:red}}
</style></head><body><h1>tracewire report</h1>
<p id="totals">{} traces, {} spans, {} orphans; {} traces with errors; unattributed time {:.2}% of end-to-end.</p>
<h2>SLOs</h2><table id="slos"><tr><th>objective</th><th>measured</th><th>violations</th><th></th></tr>{slo_rows}</table>
{}{}<h2>Stages</h2><p>Latency and errors (spans with status ERROR) per stage; a red marker flags a stage with errors.</p>
<table id="stages"><tr><th>stage</th><th>spans</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>max ms</th><th>errors</th><th>err %</th></tr>{stage_table}</table>{hidden_note}
<h2>Critical path</h2><p>Where the traces' critical paths spent their time (darker bars in the waterfalls).</p>
<table id="critical"><tr><th>stage</th><th>time on the path</th><th>share</th></tr>{critical_rows}</table>
<h2>Clocks</h2><p>Offsets between services (the server's clock minus the client's), from the exchange with the smallest round trip; the uncertainty is half that round trip.</p>
<table id="clock"><tr><th>client</th><th>server</th><th>offset</th><th>uncertainty</th><th>samples</th></tr>{clock_rows}</table>
{}{}</body></html>"#,
        summary.traces,
        summary.spans,
        summary.orphans,
        summary.traces_with_errors,
        summary.unattributed_fraction * 100.0,
        bars("End to end", &top, slos),
        bars("Latency per stage (p50 / p90 / p99)", &stage_rows, slos),
        median,
        slowest
    )
}
