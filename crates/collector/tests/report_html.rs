//! report.html in a real browser (headless Debian chromium, installed by the test script):
//! it renders, the charts and the SLO reference lines are in the DOM, and a screenshot is
//! not blank.

mod common;

use tracewire_collector::{Slo, SpanRecord, analyze, report::render_html};
use tracewire_testkit::TempDir;
use tracewire_testkit::browser::{dump_dom, pixel_stats, pixels, screenshot};

const MS: i64 = 1_000_000;

fn span(trace: usize, id: &str, parent: Option<&str>, stage: &str, start_ms: i64, end_ms: i64) -> SpanRecord {
    common::stage_span(&format!("{trace:032x}"), id, parent, stage, "demo", (start_ms * MS, end_ms * MS))
}

/// Ten traces of `exec` > `rpc.call` > `process.spawn`, the i-th taking 10 + i ms.
fn spans() -> Vec<SpanRecord> {
    (0..10i64)
        .flat_map(|i| {
            let t = usize::try_from(i).unwrap();
            let base = i * 100;
            vec![
                span(t, "a", None, "exec", base, base + 10 + i),
                span(t, "b", Some("a"), "rpc.call", base + 1, base + 9 + i),
                span(t, "c", Some("b"), "process.spawn", base + 2, base + 4),
            ]
        })
        .collect()
}

#[test]
fn the_report_renders_in_chromium_with_charts_and_slo_lines() {
    let spans = spans();
    let slos: Vec<Slo> = ["e2e.p99<=15ms", "rpc.call.p50<=5ms", "process.spawn.p90<=3ms"]
        .iter()
        .map(|e| Slo::parse(e).unwrap())
        .collect();
    let summary = analyze(&spans, &slos);
    assert_eq!(summary.slos.iter().map(|s| s.pass).collect::<Vec<_>>(), [false, false, true]);
    let dir = TempDir::new("tw-report-html").unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, render_html(&summary, &spans, &slos)).unwrap();
    let url = format!("file://{}", page.display());

    let dom = dump_dom(&url, 500).unwrap();
    assert!(dom.contains("10 traces, 30 spans, 0 orphans"), "{dom}");
    // Two bar charts (end to end, per stage) and two waterfalls (median, slowest).
    assert_eq!(dom.matches(r#"<svg class="chart""#).count(), 2, "{dom}");
    assert_eq!(dom.matches(r#"<svg class="waterfall""#).count(), 2, "{dom}");
    // One red dashed line per SLO, each titled with its expression.
    assert_eq!(dom.matches(r#"<line class="slo""#).count(), 3, "{dom}");
    for slo in &slos {
        assert!(dom.contains(&format!("<title>SLO {}</title>", slo.expr.replace('<', "&lt;"))), "{}", slo.expr);
    }
    assert!(dom.contains(r#"stroke="red""#) && dom.contains(r#"stroke-dasharray="4 3""#));
    // The SLO table marks the two failures; the waterfalls mark the critical path.
    assert_eq!(dom.matches(r#"<tr class="fail">"#).count(), 2);
    assert!(dom.matches(r#"<rect class="critical""#).count() >= 6, "{dom}");

    let png = dir.path().join("report.png");
    screenshot(&url, &png, 1000, 1400, 500).unwrap();
    let stats = pixel_stats(&png).unwrap();
    assert_eq!(stats.size, (1000, 1400));
    assert!(stats.ink > 0.02 && stats.colours > 20, "looks blank: {stats:?}");
    // The SLO lines are drawn: pure red pixels are on the screen.
    let red = pixels(&png).unwrap().rgb.iter().filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60).count();
    assert!(red > 20, "no red SLO line pixels ({red})");
}

/// Pure red pixels in a screenshot of `html`.
fn red_pixels(dir: &TempDir, name: &str, html: &str) -> (String, usize) {
    let page = dir.path().join(format!("{name}.html"));
    std::fs::write(&page, html).unwrap();
    let url = format!("file://{}", page.display());
    let dom = dump_dom(&url, 500).unwrap();
    let png = dir.path().join(format!("{name}.png"));
    screenshot(&url, &png, 1000, 1400, 500).unwrap();
    let red = pixels(&png).unwrap().rgb.iter().filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60).count();
    (dom, red)
}

#[test]
fn stages_with_errors_get_a_red_marker_and_an_error_rate_column() {
    // The same ten traces; in three of them process.spawn ends with status ERROR. No SLOs,
    // so no red SLO lines: red on the screen is the error markers.
    let clean = spans();
    let mut failing = clean.clone();
    for s in failing.iter_mut().filter(|s| s.name == "process.spawn").take(3) {
        s.status_code = tracewire_store::status::ERROR;
        s.status_message = "spawn failed".into();
    }
    let dir = TempDir::new("tw-report-errors").unwrap();

    let summary = analyze(&failing, &[]);
    assert_eq!(summary.traces_with_errors, 3);
    let (dom, red) = red_pixels(&dir, "errors", &render_html(&summary, &failing, &[]));
    // The stage table: an err % column, the failing stage's row marked and at 30 %.
    assert!(dom.contains("<th>err %</th>"), "{dom}");
    let row = |stage: &str| {
        let at = dom.find(&format!("<td>{stage}</td>")).unwrap_or_else(|| panic!("no row for {stage}: {dom}"));
        let open = dom[..at].rfind("<tr").unwrap();
        dom[open..at + dom[at..].find("</tr>").unwrap()].to_owned()
    };
    let spawn = row("process.spawn");
    assert!(spawn.starts_with(r#"<tr class="errors">"#), "{spawn}");
    assert!(spawn.contains(r#"<td class="err"><span class="error-marker">●</span> 30.00</td>"#), "{spawn}");
    for ok in ["rpc.call", "exec"] {
        let r = row(ok);
        assert!(!r.contains("error-marker") && r.contains(r#"<td class="err">0.00</td>"#), "{r}");
    }
    // The charts: a red marker on the e2e row (traces with an error) and on process.spawn.
    assert_eq!(dom.matches(r#"<circle class="error-marker""#).count(), 2, "{dom}");
    assert!(dom.contains("<title>3 errors (30.00%)</title>"), "{dom}");
    assert!(red > 50, "the red markers are drawn ({red} red pixels)");

    // Without errors: no marker, and nothing red on the page.
    let summary = analyze(&clean, &[]);
    let (dom, red) = red_pixels(&dir, "clean", &render_html(&summary, &clean, &[]));
    assert!(!dom.contains(r#"class="error-marker""#) && !dom.contains(r#"<tr class="errors""#), "{dom}");
    assert_eq!(red, 0, "no errors, no red");
}
