//! `tracewire diff`'s statistics on synthetic runs with known answers: a shift in one stage
//! is found there and only there, runs from one distribution are `unchanged`, the tests
//! agree with textbook values, and diff.html renders in a real browser.
// Exact comparisons are meant: the values compared are copies of the same samples.
#![allow(clippy::float_cmp)]

mod common;

use std::collections::BTreeMap;

use tracewire_collector::SpanRecord;
use tracewire_collector::diff::stats::{Rng, holm, mann_whitney, percentile, resampled_percentile};
use tracewire_collector::diff::{DiffOptions, FailOn, RunSamples, Verdict, diff};
use tracewire_collector::diff_html::render_diff_html;
use tracewire_testkit::TempDir;
use tracewire_testkit::browser::{dump_dom, pixels, screenshot};

const US: i64 = 1_000;

fn span(trace: u64, id: &str, parent: Option<&str>, stage: &str, start_us: i64, end_us: i64) -> SpanRecord {
    common::stage_span(&format!("{trace:032x}"), id, parent, stage, "synthetic", (start_us * US, end_us * US))
}

/// Exponential with mean `mean_us`, in whole microseconds.
fn expo(rng: &mut Rng, mean_us: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    let v = (-rng.uniform().ln() * mean_us) as i64;
    v
}

/// One synthetic trace: exec > rpc.call > (rpc.queue, process.spawn, process.stdout), in
/// turn; `spawn_shift_us` is added to every spawn.
fn trace(id: u64, rng: &mut Rng, spawn_shift_us: i64, error: bool) -> Vec<SpanRecord> {
    let queue = 200 + expo(rng, 300.0);
    let spawn = 2_000 + expo(rng, 1_000.0) + spawn_shift_us;
    let stdout = 1_000 + expo(rng, 500.0);
    let (q_end, s_end) = (10 + queue, 10 + queue + spawn);
    let end = s_end + stdout + 50;
    let mut spawn_span = span(id, "4", Some("2"), "process.spawn", q_end, s_end);
    if error {
        spawn_span.status_code = tracewire_store::status::ERROR;
    }
    vec![
        span(id, "1", None, "exec", 0, end + 20),
        span(id, "2", Some("1"), "rpc.call", 5, end),
        span(id, "3", Some("2"), "rpc.queue", 10, q_end),
        spawn_span,
        span(id, "5", Some("2"), "process.stdout", s_end, s_end + stdout),
    ]
}

/// The traces of a run: `n` traces drawn with `seed`.
fn run_traces(seed: u64, n: u64, spawn_shift_us: i64) -> Vec<Vec<SpanRecord>> {
    let mut rng = Rng::new(seed);
    (0..n).map(|i| trace(seed * 1_000_000 + i, &mut rng, spawn_shift_us, false)).collect()
}

fn samples(traces: Vec<Vec<SpanRecord>>) -> RunSamples {
    let mut s = RunSamples::new();
    for t in traces {
        s.add_trace(t);
    }
    s
}

fn verdicts(d: &tracewire_collector::diff::Diff) -> BTreeMap<String, Verdict> {
    d.rows().map(|r| (r.stage.clone(), r.verdict)).collect()
}

#[test]
fn a_shift_in_one_stage_makes_that_stage_slower_and_moves_e2e_only() {
    let base = samples(run_traces(1, 300, 0));
    let new = samples(run_traces(2, 300, 1_500));
    let d = diff(&base, &new, &DiffOptions::default()).unwrap();
    let v = verdicts(&d);
    assert_eq!(v["process.spawn"], Verdict::Slower, "{d:#?}");
    // The end to end and the spans that contain the spawn moved with it.
    for stage in ["e2e", "exec", "rpc.call"] {
        assert_eq!(v[stage], Verdict::Slower, "{stage}: {d:#?}");
    }
    for stage in ["rpc.queue", "process.stdout"] {
        assert_eq!(v[stage], Verdict::Unchanged, "{stage}: {d:#?}");
    }
    let spawn = d.row("process.spawn").unwrap();
    // The interval covers the true shift of the median (1.5 ms); the p-value is tiny.
    assert!(spawn.p50_ci_ms[0] < 1.5 && spawn.p50_ci_ms[1] > 1.5, "{spawn:#?}");
    assert!(spawn.p_value < 1e-6);
    assert!(spawn.p50_change_pct.unwrap() > 20.0);
    assert_eq!((spawn.base.count, spawn.new.count), (300, 300));
    // The spawn's share of the critical path grew.
    assert!(spawn.critical_share_change > 0.05, "{spawn:#?}");

    // The other way round it is faster.
    let back = diff(&new, &base, &DiffOptions::default()).unwrap();
    assert_eq!(back.row("process.spawn").unwrap().verdict, Verdict::Faster);
    assert_eq!(back.e2e.verdict, Verdict::Faster);
}

#[test]
fn a_run_compared_with_itself_is_unchanged_everywhere() {
    let run = samples(run_traces(3, 200, 0));
    let d = diff(&run, &run, &DiffOptions::default()).unwrap();
    assert!(d.rows().count() >= 5);
    for r in d.rows() {
        assert_eq!(r.verdict, Verdict::Unchanged, "{r:#?}");
        assert!((r.p_value_raw - 1.0).abs() < 1e-12, "{r:#?}");
        assert_eq!((r.p50_change_ms, r.p90_change_ms, r.p99_change_ms), (0.0, 0.0, 0.0));
        assert!(r.p50_ci_ms[0] <= 0.0 && r.p50_ci_ms[1] >= 0.0);
    }
    assert!(d.only_in_base.is_empty() && d.only_in_new.is_empty());
}

#[test]
fn runs_from_one_distribution_are_unchanged_everywhere_in_95_of_100_trials() {
    let mut clean = 0;
    let mut flagged = Vec::new();
    for trial in 0..100u64 {
        let base = samples(run_traces(1000 + 2 * trial, 200, 0));
        let new = samples(run_traces(1001 + 2 * trial, 200, 0));
        let options = DiffOptions { seed: trial, ..DiffOptions::default() };
        let d = diff(&base, &new, &options).unwrap();
        if d.rows().all(|r| r.verdict == Verdict::Unchanged) {
            clean += 1;
        } else {
            flagged.push(trial);
        }
    }
    assert!(clean >= 95, "only {clean} of 100 trials unchanged everywhere; flagged: {flagged:?}");
}

#[test]
fn seeds_make_the_intervals_reproducible() {
    let (base, new) = (samples(run_traces(5, 100, 0)), samples(run_traces(6, 100, 500)));
    let a = diff(&base, &new, &DiffOptions { seed: 9, ..DiffOptions::default() }).unwrap();
    let b = diff(&base, &new, &DiffOptions { seed: 9, ..DiffOptions::default() }).unwrap();
    let c = diff(&base, &new, &DiffOptions { seed: 10, ..DiffOptions::default() }).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.e2e.p50_ci_ms, c.e2e.p50_ci_ms);
}

#[test]
fn stages_on_one_side_and_error_rates_are_reported() {
    let base = samples(run_traces(7, 50, 0));
    let mut rng = Rng::new(8);
    let mut traces: Vec<Vec<SpanRecord>> = (0..50).map(|i| trace(8_000 + i, &mut rng, 0, i % 5 == 0)).collect();
    for t in &mut traces {
        t.retain(|s| s.name != "process.stdout");
        let root = t[0].clone();
        t.push(span(u64::from_str_radix(&root.trace_id, 16).unwrap(), "6", Some("1"), "store.enqueue", 1, 3));
    }
    let new = samples(traces);
    let d = diff(&base, &new, &DiffOptions::default()).unwrap();
    assert_eq!(d.only_in_base.iter().map(|o| o.stage.as_str()).collect::<Vec<_>>(), ["process.stdout"]);
    assert_eq!(d.only_in_new.iter().map(|o| o.stage.as_str()).collect::<Vec<_>>(), ["store.enqueue"]);
    let spawn = d.row("process.spawn").unwrap();
    assert_eq!((spawn.base.errors, spawn.new.errors), (0, 10));
    assert!((spawn.error_rate_change - 0.2).abs() < 1e-12);
    assert_eq!((d.base.traces_with_errors, d.new.traces_with_errors), (0, 10));
    assert!((d.e2e.error_rate_change - 0.2).abs() < 1e-12);
}

/// R's `?wilcox.test` example: `wilcox.test(x, y, alternative = "g")` gives W = 35; the
/// normal approximation with continuity correction (`exact = FALSE`) gives
/// z = (35 - 25 - 0.5) / sqrt(10 * 5 * 16 / 12) = 1.1635, two-sided p = 0.2446.
#[test]
fn mann_whitney_matches_the_textbook_example() {
    let x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
    let y = [1.15, 0.88, 0.90, 0.74, 1.21];
    let t = mann_whitney(&x, &y);
    assert!((t.u - 35.0).abs() < f64::EPSILON);
    assert!((t.z - 1.163_507_6).abs() < 1e-6, "{t:?}");
    assert!((t.p_value - 0.244_623_6).abs() < 1e-6, "{t:?}");
    // Symmetric: U of y is n1 n2 - U of x, z changes sign, p is the same.
    let back = mann_whitney(&y, &x);
    assert!((back.u - 15.0).abs() < f64::EPSILON && (back.z + t.z).abs() < 1e-12);
    assert!((back.p_value - t.p_value).abs() < 1e-12);
}

/// With ties: x = 1 2 2 3 3 3, y = 2 3 4 4 5. Midranks 1, 3, 3, 3 (the 2s), 6.5 x4 (the 3s),
/// 9.5 x2, 11: R1 = 1 + 3 + 3 + 3 * 6.5 = 26.5, U = 26.5 - 21 = 5.5; tie groups 3, 4, 2
/// give sum(t^3 - t) = 24 + 60 + 6 = 90; var = 30 / 12 * (12 - 90 / 110) = 27.9545;
/// z = (5.5 - 15 + 0.5) / 5.2872 = -1.7022, p = 0.08872.
#[test]
fn mann_whitney_corrects_for_ties() {
    let t = mann_whitney(&[1.0, 2.0, 2.0, 3.0, 3.0, 3.0], &[2.0, 3.0, 4.0, 4.0, 5.0]);
    assert!((t.u - 5.5).abs() < 1e-12, "{t:?}");
    assert!((t.z + 1.702_2).abs() < 1e-4, "{t:?}");
    assert!((t.p_value - 0.088_72).abs() < 1e-4, "{t:?}");
    // All tied: no evidence at all.
    assert!((mann_whitney(&[1.0, 1.0], &[1.0, 1.0, 1.0]).p_value - 1.0).abs() < f64::EPSILON);
    assert!((mann_whitney(&[], &[1.0]).p_value - 1.0).abs() < f64::EPSILON);
}

/// R: `p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm")` is 0.03 0.06 0.06 0.02.
#[test]
fn holm_matches_r() {
    let adjusted = holm(&[0.01, 0.04, 0.03, 0.005]);
    for (a, want) in adjusted.iter().zip([0.03, 0.06, 0.06, 0.02]) {
        assert!((a - want).abs() < 1e-12, "{adjusted:?}");
    }
    assert_eq!(holm(&[0.5, 0.9]), [1.0, 1.0]);
    assert!(holm(&[]).is_empty());
}

/// The order-statistic draw has the distribution of resampling every value: compared with
/// plain resampling, the quantiles of the two sets of draws agree.
#[test]
fn the_order_statistic_bootstrap_matches_plain_resampling() {
    let mut rng = Rng::new(11);
    let mut data: Vec<f64> = (0..41).map(|_| -rng.uniform().ln() * 10.0).collect();
    data.sort_by(f64::total_cmp);
    for p in [50.0, 90.0] {
        let rounds = 20_000;
        let mut direct: Vec<f64> = (0..rounds).map(|_| resampled_percentile(&data, p, &mut rng)).collect();
        let mut plain: Vec<f64> = (0..rounds)
            .map(|_| {
                let mut r: Vec<f64> = (0..data.len()).map(|_| data[rng.below(data.len())]).collect();
                r.sort_by(f64::total_cmp);
                percentile(&r, p)
            })
            .collect();
        direct.sort_by(f64::total_cmp);
        plain.sort_by(f64::total_cmp);
        for q in [5.0, 25.0, 50.0, 75.0, 95.0] {
            let (a, b) = (percentile(&direct, q), percentile(&plain, q));
            // Both pick values of `data`: they agree to the neighbouring value at most.
            let rank = |v: f64| data.iter().position(|&d| d == v).unwrap();
            assert!(rank(a).abs_diff(rank(b)) <= 1, "p{p} q{q}: {a} vs {b}");
        }
    }
}

#[test]
fn fail_on_expressions_parse_and_gate() {
    for bad in ["e2e.p50>10%", "e2e.p95>+10%", "e2e>+10%", "e2e.p50>+10", "e2e.p50>+x%", ".p50>+1ms", "e2e.p50>+-1ms"] {
        assert!(bad.parse::<FailOn>().is_err(), "{bad} parsed");
    }
    let base = samples(run_traces(21, 300, 0));
    let new = samples(run_traces(22, 300, 1_500));
    let d = diff(&base, &new, &DiffOptions::default()).unwrap();
    let gate = |e: &str| d.violates(&e.parse().unwrap());
    assert!(gate("process.spawn.p50>+1ms"));
    assert!(gate("process.spawn.p50>+20%"));
    assert!(!gate("process.spawn.p50>+5ms"), "over the threshold only");
    assert!(!gate("rpc.queue.p50>+0ms"), "unchanged stages never violate");
    assert!(gate("e2e.p90>+0.5ms"));
    assert!(!gate("no.such.stage.p50>+0ms"));
    // The same runs the other way: faster, nothing violated.
    let back = diff(&new, &base, &DiffOptions::default()).unwrap();
    assert!(!back.violates(&"process.spawn.p50>+0ms".parse().unwrap()));
}

#[test]
fn diff_html_renders_in_chromium_with_paired_bars_coloured_by_verdict() {
    let base = samples(run_traces(31, 200, 0));
    let new = samples(run_traces(32, 200, 1_500));
    let d = diff(&base, &new, &DiffOptions::default()).unwrap();
    let dir = TempDir::new("tw-diff-html").unwrap();
    let page = dir.path().join("diff.html");
    std::fs::write(&page, render_diff_html(&d)).unwrap();
    let url = format!("file://{}", page.display());
    let dom = dump_dom(&url, 500).unwrap();
    let rows = d.rows().count();
    assert_eq!(dom.matches(r#"<g class="pair""#).count(), rows, "{dom}");
    assert_eq!(dom.matches(r#"<rect class="bar base""#).count(), rows);
    assert_eq!(dom.matches(r#"<g class="whisker""#).count(), rows);
    assert!(dom.contains(r#"<g class="pair" data-stage="process.spawn" data-verdict="slower">"#), "{dom}");
    assert!(dom.contains(r#"<g class="pair" data-stage="rpc.queue" data-verdict="unchanged">"#), "{dom}");
    // The spawn, and the end to end and the spans that contain the spawn.
    assert_eq!(dom.matches(r#"<rect class="bar new slower""#).count(), 4, "{dom}");
    assert!(!dom.contains("http://") || dom.matches("http://").count() == dom.matches("http://www.w3.org").count());

    let png = dir.path().join("diff.png");
    screenshot(&url, &png, 1200, 900, 500).unwrap();
    let image = pixels(&png).unwrap();
    let near = |px: &[u8; 3], rgb: [u8; 3]| px.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) < 12);
    let count = |rgb: [u8; 3]| image.rgb.iter().filter(|p| near(p, rgb)).count();
    // Slower bars in red (#d62728), unchanged ones in blue (#4a90d9), base bars grey.
    assert!(count([0xd6, 0x27, 0x28]) > 200, "no slower bars drawn");
    assert!(count([0x4a, 0x90, 0xd9]) > 200, "no unchanged bars drawn");
    assert!(count([0xb0, 0xb0, 0xb0]) > 200, "no base bars drawn");
    // Nothing is faster: green is only the legend's 12 x 12 swatch.
    assert!(count([0x2c, 0xa0, 0x2c]) <= 160, "nothing is faster");
}
