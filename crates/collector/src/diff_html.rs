//! `diff.html`: a self-contained page (inline SVG, no network) comparing two runs: per row
//! (end to end, first output, each stage) a pair of p50 bars, the base's in grey and the new
//! run's coloured by its verdict (red `slower`, green `faster`, blue `unchanged`), with a
//! whisker over the new bar spanning the bootstrap interval of the p50 change (drawn from
//! the base's p50), then the table of every figure.
//!
//! ```
//! use tracewire_collector::diff::{DiffOptions, RunSamples, diff};
//! use tracewire_collector::diff_html::render_diff_html;
//!
//! let d = diff(&RunSamples::new(), &RunSamples::new(), &DiffOptions::default()).unwrap();
//! assert!(render_diff_html(&d).contains("<svg class=\"diff\""));
//! ```

// Pixel positions: f64 precision is far beyond what a chart shows.
#![allow(clippy::cast_precision_loss)]

use std::fmt::Write;

use crate::diff::{Diff, OneSided, Row, Verdict};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The colour of a verdict (the new run's bar and the verdict cells).
pub fn verdict_colour(v: Verdict) -> &'static str {
    match v {
        Verdict::Slower => "#d62728",
        Verdict::Faster => "#2ca02c",
        Verdict::Unchanged => "#4a90d9",
    }
}

const BASE_COLOUR: &str = "#b0b0b0";
const W: f64 = 960.0;
const LABEL: f64 = 200.0;

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |p| format!("{p:+.1}%"))
}

/// The paired bars of every compared row.
fn chart(rows: &[&Row]) -> String {
    let max = rows
        .iter()
        .flat_map(|r| [r.base.p50_ms, r.new.p50_ms, r.base.p50_ms + r.p50_ci_ms[1]])
        .fold(0.0_f64, f64::max)
        .max(1e-6);
    let scale = (W - LABEL - 250.0) / max;
    let (bar, pair) = (12.0, 38.0);
    let height = rows.len() as f64 * pair + 30.0;
    let mut svg = format!(
        r#"<svg class="diff" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" role="img" aria-label="p50 per stage, base and new">"#
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 10.0 + i as f64 * pair;
        let colour = verdict_colour(r.verdict);
        let (lo, hi) = ((r.base.p50_ms + r.p50_ci_ms[0]).max(0.0), (r.base.p50_ms + r.p50_ci_ms[1]).max(0.0));
        let wy = y + bar + 2.0 + bar / 2.0;
        let _ = write!(
            svg,
            r##"<g class="pair" data-stage="{stage}" data-verdict="{verdict}"><text x="4" y="{ty:.1}" font-size="12">{stage}</text><rect class="bar base" x="{LABEL}" y="{y:.1}" width="{bw:.1}" height="{bar}" fill="{BASE_COLOUR}"><title>base p50 {bp:.3} ms ({bc} traces)</title></rect><rect class="bar new {verdict}" x="{LABEL}" y="{ny:.1}" width="{nw:.1}" height="{bar}" fill="{colour}"><title>new p50 {np:.3} ms ({nc} traces): {verdict}</title></rect><g class="whisker" stroke="#222" stroke-width="1.5"><line x1="{x1:.1}" y1="{wy:.1}" x2="{x2:.1}" y2="{wy:.1}"/><line x1="{x1:.1}" y1="{c1:.1}" x2="{x1:.1}" y2="{c2:.1}"/><line x1="{x2:.1}" y1="{c1:.1}" x2="{x2:.1}" y2="{c2:.1}"/><title>p50 change {lo_c:+.3} .. {hi_c:+.3} ms</title></g><text x="{tx:.1}" y="{ty2:.1}" font-size="11">{bp:.3} → {np:.3} ms ({chg}) {verdict}</text></g>"##,
            stage = esc(&r.stage),
            verdict = r.verdict,
            ty = y + bar + 4.0,
            bw = r.base.p50_ms * scale,
            bp = r.base.p50_ms,
            bc = r.base.count,
            ny = y + bar + 2.0,
            nw = r.new.p50_ms * scale,
            np = r.new.p50_ms,
            nc = r.new.count,
            x1 = LABEL + lo * scale,
            x2 = LABEL + hi * scale,
            c1 = wy - 4.0,
            c2 = wy + 4.0,
            lo_c = r.p50_ci_ms[0],
            hi_c = r.p50_ci_ms[1],
            tx = LABEL + (r.base.p50_ms.max(r.new.p50_ms).max(hi)) * scale + 8.0,
            ty2 = y + bar + 6.0,
            chg = pct(r.p50_change_pct),
        );
    }
    svg.push_str("</svg>");
    svg
}

fn table(rows: &[&Row]) -> String {
    let mut t = String::from(
        "<table class=\"rows\"><tr><th>stage</th><th>traces base/new</th><th>p50 base</th><th>p50 new</th><th>p50 change</th><th>p50 interval</th><th>p90 base</th><th>p90 new</th><th>p90 change</th><th>p90 interval</th><th>p99 base</th><th>p99 new</th><th>p-value (Holm)</th><th>err % base/new</th><th>critical path % base/new</th><th>verdict</th></tr>",
    );
    for r in rows {
        let _ = write!(
            t,
            r#"<tr class="{v}"><td>{}</td><td>{}/{}</td><td>{:.3}</td><td>{:.3}</td><td>{:+.3} ms ({})</td><td>[{:+.3}, {:+.3}]</td><td>{:.3}</td><td>{:.3}</td><td>{:+.3} ms ({})</td><td>[{:+.3}, {:+.3}]</td><td>{:.3}</td><td>{:.3}</td><td>{:.4}</td><td>{:.2}/{:.2}</td><td>{:.1}/{:.1}</td><td class="verdict" style="color:{c}">{v}</td></tr>"#,
            esc(&r.stage),
            r.base.count,
            r.new.count,
            r.base.p50_ms,
            r.new.p50_ms,
            r.p50_change_ms,
            pct(r.p50_change_pct),
            r.p50_ci_ms[0],
            r.p50_ci_ms[1],
            r.base.p90_ms,
            r.new.p90_ms,
            r.p90_change_ms,
            pct(r.p90_change_pct),
            r.p90_ci_ms[0],
            r.p90_ci_ms[1],
            r.base.p99_ms,
            r.new.p99_ms,
            r.p_value,
            r.base.error_rate * 100.0,
            r.new.error_rate * 100.0,
            r.base.critical_share * 100.0,
            r.new.critical_share * 100.0,
            v = r.verdict,
            c = verdict_colour(r.verdict),
        );
    }
    t.push_str("</table>");
    t
}

fn one_sided(title: &str, stages: &[OneSided]) -> String {
    if stages.is_empty() {
        return String::new();
    }
    let mut s = format!("<h2>{}</h2><ul class=\"one-sided\">", esc(title));
    for o in stages {
        let _ = write!(
            s,
            "<li>{}: {} traces, p50 {:.3} ms, p90 {:.3} ms</li>",
            esc(&o.stage),
            o.side.count,
            o.side.p50_ms,
            o.side.p90_ms
        );
    }
    s.push_str("</ul>");
    s
}

/// The whole page.
pub fn render_diff_html(diff: &Diff) -> String {
    let rows: Vec<&Row> = diff.rows().collect();
    let o = &diff.options;
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>tracewire diff</title><style>
body{{font-family:sans-serif;margin:20px;color:#222}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}} td:first-child{{text-align:left}}
.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}}
</style></head><body><h1>tracewire diff</h1>
<p class="runs">base: {} traces ({:.2}% with errors); new: {} traces ({:.2}% with errors)</p>
<p class="method">p50 per stage (per-trace time in the stage), base then new; whiskers: the {:.0}% bootstrap interval of the p50 change ({} resamples, seed {}); verdicts use the Mann-Whitney U test, Holm-adjusted, and the p50 interval.</p>
<p class="legend"><span style="background:{BASE_COLOUR}"></span>base<span style="background:{}"></span>slower<span style="background:{}"></span>faster<span style="background:{}"></span>unchanged</p>
{}{}{}{}</body></html>"#,
        diff.base.traces,
        diff.base.error_rate * 100.0,
        diff.new.traces,
        diff.new.error_rate * 100.0,
        o.confidence * 100.0,
        o.resamples,
        o.seed,
        verdict_colour(Verdict::Slower),
        verdict_colour(Verdict::Faster),
        verdict_colour(Verdict::Unchanged),
        chart(&rows),
        table(&rows),
        one_sided("Stages in the base only", &diff.only_in_base),
        one_sided("Stages in the new run only", &diff.only_in_new),
    )
}
