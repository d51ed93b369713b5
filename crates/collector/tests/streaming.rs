//! The streaming analysis: [`Analyzer`] fed one trace at a time gives what `analyze` gives,
//! keeps a bounded set of traces for the exports, and the page it draws stays bounded.

mod common;

use tracewire_collector::report::render_page;
use tracewire_collector::{Analyzer, KeepPolicy, Percentiles, Slo, SpanRecord, analyze, into_traces};

/// Trace `t`: a client root, an RPC with a server child of another service (its clock
/// `skew` ns ahead, measured on every third trace), a spawn that fails on every seventh.
fn trace(t: u32) -> Vec<SpanRecord> {
    let base = i64::from(t) * 1_000_000_000;
    let dur = 1_000_000 + i64::from(t % 97) * 37_000;
    let skew = if t % 3 == 0 { 2_000_000 } else { 0 };
    let span = |sid: u32, parent: Option<u32>, service: &str, stage: &str, start: i64, end: i64| {
        common::numbered_span(t, sid, parent, stage, service, (base + start, base + end))
    };
    let mut rpc = span(2, Some(1), "client", "rpc.call", 10_000, dur - 10_000);
    if skew != 0 {
        rpc.attributes.insert("tracewire.clock.offset_us".into(), (skew / 1000).to_string());
    }
    let mut spawn = span(4, Some(3), "server", "process.spawn", 30_000 + skew, dur / 2 + skew);
    if t % 7 == 0 {
        spawn.status_code = 2;
    }
    vec![
        span(1, None, "client", "exec", 0, dur),
        rpc,
        span(3, Some(2), "server", "rpc.dispatch", 20_000 + skew, dur - 20_000 + skew),
        spawn,
    ]
}

fn spans(n: u32) -> Vec<SpanRecord> {
    (0..n).flat_map(trace).collect()
}

#[test]
fn analyzer_gives_what_analyze_gives_in_any_trace_order() {
    let slos: Vec<Slo> = ["e2e.p99<=3ms", "process.spawn.error_rate<=1%", "rpc.dispatch.p50<=2ms"]
        .iter()
        .map(|e| Slo::parse(e).unwrap())
        .collect();
    let all = spans(500);
    let expected = analyze(&all, &slos);
    assert_eq!(expected.percentiles, Percentiles::Exact);
    assert_eq!(expected.traces, 500);
    let mut analyzer = Analyzer::new(&slos);
    for t in into_traces(all).into_iter().rev() {
        analyzer.add_trace(t);
    }
    assert_eq!(analyzer.finish(), expected);
    let json = serde_json::to_value(&expected).unwrap();
    assert_eq!(json["percentiles"], "exact");
}

#[test]
fn exports_hold_the_slowest_the_median_and_the_error_traces() {
    let traces = into_traces(spans(500));
    let mut analyzer = Analyzer::with_policy(&[], KeepPolicy { slowest: 10, error_cap: 20, ..KeepPolicy::default() });
    for t in traces.iter().cloned() {
        analyzer.add_trace(t);
    }
    let (summary, mut exports) = analyzer.finish_with_exports();
    // The median is read back when it was not kept.
    if exports.median.is_none() {
        let id = exports.median_id.clone().unwrap();
        exports.set_median(traces.iter().find(|t| t[0].trace_id == id).unwrap().clone());
    }
    let ids: Vec<&str> = exports.traces.iter().map(|t| t[0].trace_id.as_str()).collect();
    // The 10 slowest by e2e (ties: the later ones).
    let mut by_e2e: Vec<(i64, usize)> = traces.iter().enumerate().map(|(i, t)| (t[0].duration_ns(), i)).collect();
    by_e2e.sort_unstable();
    for &(_, i) in by_e2e.iter().rev().take(10) {
        assert!(ids.contains(&traces[i][0].trace_id.as_str()), "slowest trace {i} missing");
    }
    // The first 20 traces with an error (the cap).
    let errors: Vec<&Vec<SpanRecord>> = traces.iter().filter(|t| t.iter().any(SpanRecord::is_error)).collect();
    assert!(errors.len() > 20);
    for t in &errors[..20] {
        assert!(ids.contains(&t[0].trace_id.as_str()));
    }
    // The median, as render_html picks it.
    let median = &by_e2e[by_e2e.len() / 2];
    assert_eq!(exports.median.as_ref().unwrap()[0].trace_id, traces[median.1][0].trace_id);
    assert!(ids.contains(&traces[median.1][0].trace_id.as_str()));
    // Each once; the spans as given (before skew correction).
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    assert!(ids.len() <= 31, "{}", ids.len());
    assert_eq!(exports.written() + exports.omitted(), summary.traces);
    let kept = exports.traces.iter().find(|t| t[0].trace_id == traces[0][0].trace_id).unwrap();
    assert_eq!(**kept, traces[0], "trace 0 (skewed, with an error) is exported as given");
}

#[test]
fn exports_follow_an_explicit_list_of_traces() {
    let traces = into_traces(spans(50));
    let wanted = vec![traces[3][0].trace_id.to_uppercase(), traces[40][0].trace_id.clone()];
    let mut analyzer = Analyzer::with_policy(&[], KeepPolicy { traces: wanted, ..KeepPolicy::default() });
    for t in traces.iter().cloned() {
        analyzer.add_trace(t);
    }
    let (_, exports) = analyzer.finish_with_exports();
    let ids: Vec<&str> = exports.traces.iter().map(|t| t[0].trace_id.as_str()).collect();
    assert_eq!(ids, [traces[3][0].trace_id.as_str(), traces[40][0].trace_id.as_str()]);
    assert_eq!((exports.written(), exports.omitted()), (2, 48));
}

/// Without bounds the page grows with the number of stage names and the size of the drawn
/// traces: 5,000 stage names and a 5,000-span trace made a page of about 8 MB.
#[test]
fn the_page_stays_under_2_mb_whatever_the_input() {
    let mut wide: Vec<SpanRecord> = Vec::new();
    let root = SpanRecord {
        trace_id: "ab".into(),
        span_id: "root".into(),
        name: "exec".into(),
        start_ns: 0,
        end_ns: 100_000_000,
        ..SpanRecord::default()
    };
    wide.push(root);
    for i in 0..5_000 {
        wide.push(SpanRecord {
            trace_id: "ab".into(),
            span_id: format!("s{i}"),
            parent_id: Some(if i == 0 { "root".into() } else { format!("s{}", i - 1) }),
            name: format!("GET /users/{i}"),
            start_ns: i,
            end_ns: 100_000_000 - i,
            ..SpanRecord::default()
        });
    }
    let summary = analyze(&wide, &[]);
    assert_eq!(summary.stages.len(), 5_001);
    let html = render_page(&summary, Some(&wide), Some(&wide), &[]);
    assert!(html.len() < 2 * 1024 * 1024, "{} bytes", html.len());
    assert!(html.contains(r#"<p id="stages-omitted">4801 more stages"#));
    assert!(html.contains("3001 more spans of this trace are not drawn"));
}
