//! The analysis at scale: the critical path of a wide parent (50,000 children), the same
//! path as the straightforward quadratic walk on random traces, the export plan (ids only)
//! naming the traces the exports hold, and an analysis of the attributes it reads only
//! ([`ANALYZED_ATTRIBUTES`]) giving the same summary; stage percentiles exact up to
//! [`EXACT_DURATIONS`] durations and within 0.5% past them.

mod common;

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use tracewire_collector::{
    ANALYZED_ATTRIBUTES, Analyzer, EXACT_DURATIONS, KeepPolicy, Percentiles, SpanRecord, analyze, critical_path,
    into_traces,
};
use tracewire_testkit::SplitMix64;

fn span(id: &str, parent: Option<&str>, start: i64, end: i64) -> SpanRecord {
    SpanRecord {
        trace_id: "t".into(),
        span_id: id.into(),
        parent_id: parent.map(Into::into),
        name: id.into(),
        start_ns: start,
        end_ns: end,
        ..SpanRecord::default()
    }
}

/// The critical path as the definition reads (`critical_path`'s documentation), by the
/// straightforward walk: at each step every child of the span is looked at again.
fn quadratic_critical_path(trace: &[SpanRecord]) -> Vec<(usize, i64)> {
    let Some(root) = trace
        .iter()
        .enumerate()
        .filter(|(_, s)| s.parent_id.is_none())
        .max_by_key(|(i, s)| (s.duration_ns(), std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
    else {
        return Vec::new();
    };
    let mut children: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in trace.iter().enumerate() {
        if let Some(p) = &s.parent_id {
            children.entry(p.as_str()).or_default().push(i);
        }
    }
    let kids = |i: usize| children.get(trace[i].span_id.as_str()).map_or(&[][..], Vec::as_slice);
    // Latest end in each subtree, each span visited once (cycles).
    let mut reach: Vec<i64> = trace.iter().map(|s| s.end_ns).collect();
    let mut seen = vec![false; trace.len()];
    for start in 0..trace.len() {
        if seen[start] {
            continue;
        }
        seen[start] = true;
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                reach[i] = kids(i).iter().map(|&k| reach[k]).fold(reach[i], i64::max);
                continue;
            }
            stack.push((i, true));
            for &k in kids(i) {
                if !seen[k] {
                    seen[k] = true;
                    stack.push((k, false));
                }
            }
        }
    }
    let mut used = vec![false; trace.len()];
    used[root] = true;
    let mut on_path: BTreeMap<usize, i64> = BTreeMap::new();
    let mut stack = vec![(root, trace[root].start_ns, trace[root].end_ns)];
    while let Some((s, lo, cursor)) = stack.pop() {
        if cursor <= lo {
            continue;
        }
        let best = kids(s)
            .iter()
            .copied()
            .filter(|&c| !used[c] && trace[c].start_ns < cursor && reach[c] > lo && reach[c] > trace[c].start_ns)
            .max_by_key(|&c| (reach[c].min(cursor), trace[c].start_ns));
        let Some(c) = best else {
            *on_path.entry(s).or_default() += cursor - lo;
            continue;
        };
        let (cs, ce) = (trace[c].start_ns.max(lo), reach[c].min(cursor));
        if cursor > ce {
            *on_path.entry(s).or_default() += cursor - ce;
        }
        used[c] = true;
        stack.push((s, lo, cs));
        stack.push((c, cs, ce));
    }
    on_path.into_iter().collect()
}

/// A root of 50,000 children, one after the other with a gap of 2 ns between: each child is
/// on the path for its 8 ns, the root for the gaps. A walk that looked at every child again
/// for each one it took would make 2.5 billion comparisons here.
#[test]
fn the_critical_path_of_a_parent_of_50_000_children() {
    let n = 50_000i64;
    let mut trace = vec![span("root", None, 0, 10 * n)];
    for i in 0..n {
        trace.push(span(&format!("c{i}"), Some("root"), 10 * i + 1, 10 * i + 9));
    }
    let path = critical_path(&trace);
    assert_eq!(path.len(), trace.len());
    assert_eq!(path[0], (0, 2 * n));
    assert!(path[1..].iter().all(|&(_, ns)| ns == 8), "every child is on the path for its 8 ns");
    assert_eq!(path.iter().map(|&(_, ns)| ns).sum::<i64>(), 10 * n);
}

/// Overlapping children (each 1,000 ns, starting 1 ns apart) under a parent, some with
/// children of their own: the same path as the quadratic walk.
#[test]
fn the_critical_path_of_overlapping_children_is_the_quadratic_walks() {
    let mut trace = vec![span("root", None, 0, 10_000)];
    for i in 0..3_000i64 {
        trace.push(span(&format!("c{i}"), Some("root"), i, i + 1_000));
        if i % 7 == 0 {
            trace.push(span(&format!("g{i}"), Some(&format!("c{i}")), i + 500, i + 1_700));
        }
    }
    let path = critical_path(&trace);
    assert_eq!(path, quadratic_critical_path(&trace));
    assert_eq!(path.iter().map(|&(_, ns)| ns).sum::<i64>(), 10_000);
}

/// A random trace: span `i`'s id from a small pool (so ids repeat), its parent any id of
/// the pool or none (so parents may be missing, later, or form cycles), times in a small
/// range (so starts, ends and reaches tie).
fn random_trace() -> impl Strategy<Value = Vec<SpanRecord>> {
    prop::collection::vec((0u8..24, prop::option::weighted(0.85, 0u8..24), 0i64..40, 0i64..40), 1..40).prop_map(
        |spans| {
            spans
                .into_iter()
                .map(|(id, parent, a, b)| {
                    span(&format!("s{id}"), parent.map(|p| format!("s{p}")).as_deref(), a.min(b), a.max(b))
                })
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn the_critical_path_is_the_quadratic_walks(trace in random_trace()) {
        prop_assert_eq!(critical_path(&trace), quadratic_critical_path(&trace));
    }
}

/// Trace `t` of 4 spans over two services, with the attributes tracewire's stages carry
/// and some the analysis does not read.
fn trace(t: u32) -> Vec<SpanRecord> {
    let base = i64::from(t) * 1_000_000;
    let dur = 100_000 + i64::from(t % 31) * 7_000;
    let span = |sid: u32, parent: Option<u32>, service: &str, stage: &str, start: i64, end: i64| {
        let mut attributes = BTreeMap::from([
            ("tracewire.stage".to_owned(), stage.to_owned()),
            ("host.name".to_owned(), format!("worker-{}", t % 3)),
        ]);
        match stage {
            "rpc.call" => {
                attributes.insert("rpc.method".into(), "Start".into());
                if t % 3 == 0 {
                    attributes.insert("tracewire.clock.offset_us".into(), "20".into());
                    attributes.insert("tracewire.net.rtt_us".into(), (40 + t % 5).to_string());
                }
            }
            "terminal.deliver" => {
                attributes.insert("tracewire.event".into(), "Output".into());
            }
            _ => {}
        }
        SpanRecord {
            status_code: if t % 11 == 0 && sid == 3 { 2 } else { 0 },
            attributes,
            ..common::numbered_span(t, sid, parent, stage, service, (base + start, base + end))
        }
    };
    let skew = if t % 3 == 0 { 20_000 } else { 0 };
    vec![
        span(1, None, "client", "exec", 0, dur),
        span(2, Some(1), "client", "rpc.call", 1_000, dur / 2),
        span(3, Some(2), "server", "rpc.dispatch", 2_000 + skew, dur / 2 - 1_000 + skew),
        span(4, Some(1), "client", "terminal.deliver", dur / 2 + 1_000, dur / 2 + 2_000),
    ]
}

/// A database read for the analysis loads only [`ANALYZED_ATTRIBUTES`]: with only those,
/// the summary is the same (an attribute the analysis starts reading goes in the list).
#[test]
fn the_analyzed_attributes_are_all_the_analysis_reads() {
    let slos: Vec<tracewire_collector::Slo> = ["e2e.p99<=1ms", "rpc.dispatch.error_rate<=1%"]
        .iter()
        .map(|e| tracewire_collector::Slo::parse(e).unwrap())
        .collect();
    let all: Vec<SpanRecord> = (0..300).flat_map(trace).collect();
    let mut some = all.clone();
    for s in &mut some {
        s.attributes.retain(|k, _| ANALYZED_ATTRIBUTES.contains(&k.as_str()));
    }
    assert!(some.iter().any(|s| s.attributes.contains_key("tracewire.clock.offset_us")));
    assert_eq!(analyze(&some, &slos), analyze(&all, &slos));
}

/// An analyzer that keeps ids only holds no spans, and its plan names exactly the traces
/// the whole-trace exports hold (the median's included), by arrival.
#[test]
fn the_export_plan_names_the_traces_the_exports_hold() {
    let traces = into_traces((0..400).flat_map(trace).collect());
    for policy in [
        KeepPolicy { slowest: 10, error_cap: 5, ..KeepPolicy::default() },
        KeepPolicy { slowest: 0, error_cap: 0, ..KeepPolicy::default() },
        KeepPolicy {
            traces: vec![traces[7][0].trace_id.to_uppercase(), traces[3][0].trace_id.clone()],
            ..KeepPolicy::default()
        },
    ] {
        let mut whole = Analyzer::with_policy(&[], policy.clone());
        let mut ids = Analyzer::with_policy(&[], policy.clone()).ids_only();
        let mut ids_too = Analyzer::with_policy(&[], policy.clone()).ids_only();
        for t in &traces {
            whole.add_trace(t.clone());
            ids.add_trace(t.clone());
            ids_too.add_trace(t.clone());
        }
        let (summary, mut exports) = whole.finish_with_exports();
        if exports.median.is_none() {
            let id = exports.median_id.clone().unwrap();
            exports.set_median(traces.iter().find(|t| t[0].trace_id == id).unwrap().clone());
        }
        let (ids_summary, ids_exports) = ids_too.finish_with_exports();
        assert!(ids_exports.traces.is_empty() && ids_exports.slowest.is_none(), "{policy:?}");
        let (plan_summary, plan) = ids.finish_with_plan();
        assert_eq!((&plan_summary, &ids_summary), (&summary, &summary));
        let mut expected: Vec<&str> = exports.traces.iter().map(|t| t[0].trace_id.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(plan.traces, expected, "{policy:?}");
        assert_eq!((plan.written(), plan.omitted()), (exports.written(), exports.omitted()));
        assert_eq!(plan.median.as_deref(), Some(exports.median.as_ref().unwrap()[0].trace_id.as_str()));
        assert_eq!(plan.slowest.as_deref(), Some(exports.slowest.as_ref().unwrap()[0].trace_id.as_str()));
    }
}

proptest! {
    /// Stage percentiles are exact (nearest rank) whatever the durations: the analysis
    /// keeps those under 4.29 s in 4 bytes and longer ones in 8.
    #[test]
    #[allow(clippy::float_cmp)] // The same nanoseconds, divided the same way.
    fn stage_percentiles_are_the_nearest_rank_of_every_duration(
        durations in prop::collection::vec(prop_oneof![0i64..5_000, 4_294_967_000i64..4_294_968_000, 0i64..10_000_000_000_000], 1..200),
    ) {
        let spans: Vec<SpanRecord> = durations
            .iter()
            .enumerate()
            .map(|(i, &d)| SpanRecord {
                trace_id: format!("{i:032x}"),
                span_id: "1".into(),
                name: "stage".into(),
                start_ns: 0,
                end_ns: d,
                ..SpanRecord::default()
            })
            .collect();
        let mut sorted = durations.clone();
        sorted.sort_unstable();
        #[allow(clippy::cast_precision_loss)]
        let ms = |ns: i64| ns as f64 / 1e6;
        let stats = analyze(&spans, &[]).stages[0].stats;
        prop_assert_eq!(stats.count, durations.len());
        prop_assert_eq!(stats.p50_ms, ms(tracewire_collector::percentile_ns(&sorted, 50.0)));
        prop_assert_eq!(stats.p90_ms, ms(tracewire_collector::percentile_ns(&sorted, 90.0)));
        prop_assert_eq!(stats.p99_ms, ms(tracewire_collector::percentile_ns(&sorted, 99.0)));
        prop_assert_eq!(stats.max_ms, ms(sorted[sorted.len() - 1]));
    }
}

/// The summary of one stage ("stage") whose spans last `durations`, 100 root spans a trace.
fn stage_summary(durations: &[i64]) -> tracewire_collector::Summary {
    let mut analyzer = Analyzer::new(&[]);
    for (t, chunk) in durations.chunks(100).enumerate() {
        let trace = chunk
            .iter()
            .enumerate()
            .map(|(i, &d)| SpanRecord {
                trace_id: format!("{t:032x}"),
                span_id: format!("{i:016x}"),
                name: "stage".into(),
                start_ns: 1_000,
                end_ns: 1_000 + d,
                ..SpanRecord::default()
            })
            .collect();
        analyzer.add_trace(trace);
    }
    analyzer.finish()
}

/// Past [`EXACT_DURATIONS`] a stage's p50, p90 and p99 are within 0.5% of the nearest-rank
/// values, its count and max exact, and summary.json says they are estimated and how well.
#[allow(clippy::cast_precision_loss)]
fn assert_estimated_within_half_a_percent(durations: &[i64]) {
    let summary = stage_summary(durations);
    let stats = summary.stages[0].stats;
    // A span that ends before it starts lasts 0 ns (`SpanRecord::duration_ns`).
    let mut sorted: Vec<i64> = durations.iter().map(|&d| d.max(0)).collect();
    sorted.sort_unstable();
    let ms = |ns: i64| ns as f64 / 1e6;
    assert_eq!(stats.count, durations.len());
    assert!((stats.max_ms - ms(sorted[sorted.len() - 1])).abs() <= f64::EPSILON * stats.max_ms.abs());
    for (p, got) in [(50.0, stats.p50_ms), (90.0, stats.p90_ms), (99.0, stats.p99_ms)] {
        let exact = ms(tracewire_collector::percentile_ns(&sorted, p));
        // 0.5%, plus floating-point rounding at a bucket's edge.
        assert!((got - exact).abs() <= 0.005 * exact.abs() * (1.0 + 1e-9), "p{p}: {got} ms vs exact {exact} ms");
    }
    assert_eq!(summary.percentiles, Percentiles::Sketch { relative_error: 0.005 });
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["percentiles"], serde_json::json!({"ddsketch": {"relative_error": 0.005}}));
}

#[test]
#[allow(clippy::cast_possible_truncation)]
fn log_uniform_stage_of_100k_is_within_half_a_percent() {
    let mut rng = SplitMix64::new(11);
    // 1 µs to 100 s.
    let durations: Vec<i64> = (0..100_000).map(|_| 10f64.powf(3.0 + 8.0 * rng.next_f64()).round() as i64).collect();
    assert_estimated_within_half_a_percent(&durations);
}

#[test]
#[allow(clippy::cast_possible_truncation)]
fn heavy_tailed_stage_of_100k_is_within_half_a_percent() {
    let mut rng = SplitMix64::new(12);
    // Pareto of shape 1.1 from 50 µs: a tail up to about 10^13 ns and beyond.
    let durations: Vec<i64> =
        (0..100_000).map(|_| (50_000.0 / (1.0 - rng.next_f64()).powf(1.0 / 1.1)).min(9e18).round() as i64).collect();
    assert_estimated_within_half_a_percent(&durations);
}

/// Zero and negative durations (clock trouble: spans ending before they start, which last
/// 0 ns) and huge ones in one estimated stage.
#[test]
#[allow(clippy::cast_possible_truncation)]
fn stage_of_zero_negative_and_huge_durations_is_within_half_a_percent() {
    let mut rng = SplitMix64::new(13);
    let durations: Vec<i64> = (0..60_000)
        .map(|i| match i % 4 {
            0 => 0,
            1 => -(10f64.powf(9.0 * rng.next_f64()).round() as i64) - 1,
            2 => 10f64.powf(12.0 + 3.0 * rng.next_f64()).round() as i64,
            _ => 1 + (rng.next_f64() * 1000.0) as i64,
        })
        .collect();
    assert_estimated_within_half_a_percent(&durations);
    // Mostly negative: the median is 0, next to values of 1 ns.
    let negative: Vec<i64> = (0..20_000)
        .map(|i| match i % 10 {
            0 => 5_000,
            1 => 1,
            _ => -1 - i,
        })
        .collect();
    assert_estimated_within_half_a_percent(&negative);
}

/// Up to [`EXACT_DURATIONS`] durations a stage is exact, to the bit (nearest rank, as
/// before the threshold existed), and summary.json says `"exact"`; one more and it is not.
#[test]
#[allow(clippy::float_cmp, clippy::cast_possible_truncation, clippy::cast_possible_wrap, clippy::cast_precision_loss)] // The same nanoseconds.
fn stages_up_to_the_threshold_are_exact() {
    let mut rng = SplitMix64::new(14);
    let durations: Vec<i64> = (0..=EXACT_DURATIONS)
        .map(|i| if i % 97 == 0 { -(i as i64) } else { 10f64.powf(3.0 + 8.0 * rng.next_f64()).round() as i64 })
        .collect();
    let exact = &durations[..EXACT_DURATIONS];
    let summary = stage_summary(exact);
    let mut sorted = exact.to_vec();
    sorted.sort_unstable();
    let ms = |ns: i64| ns as f64 / 1e6;
    let stats = summary.stages[0].stats;
    assert_eq!(stats.count, EXACT_DURATIONS);
    assert_eq!(stats.p50_ms, ms(tracewire_collector::percentile_ns(&sorted, 50.0)));
    assert_eq!(stats.p90_ms, ms(tracewire_collector::percentile_ns(&sorted, 90.0)));
    assert_eq!(stats.p99_ms, ms(tracewire_collector::percentile_ns(&sorted, 99.0)));
    assert_eq!(stats.max_ms, ms(sorted[sorted.len() - 1]));
    assert_eq!(summary.percentiles, Percentiles::Exact);
    assert_eq!(serde_json::to_value(&summary).unwrap()["percentiles"], "exact");
    let summary = stage_summary(&durations);
    assert_eq!(summary.stages[0].stats.count, EXACT_DURATIONS + 1);
    assert_eq!(summary.percentiles, Percentiles::Sketch { relative_error: 0.005 });
}
