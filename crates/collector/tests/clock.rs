//! Clock offsets as NTP estimates them, and wire time as the `net.transit` stage, through
//! the public analysis: synthetic traces whose exchanges have asymmetric delays.

use std::collections::BTreeMap;

mod common;

use tracewire_collector::{Analyzer, ClockSample, SpanRecord, analyze, correct_skew, critical_path};

fn span(trace: &str, id: &str, parent: Option<&str>, stage: &str, service: &str, start: i64, end: i64) -> SpanRecord {
    common::stage_span(trace, id, parent, stage, service, (start, end))
}

fn with(mut s: SpanRecord, attrs: &[(&str, String)]) -> SpanRecord {
    s.attributes.extend(attrs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    s
}

/// The server's clock minus the client's.
const OFFSET: i64 = 50_000_000;

/// One call at client time `t0` whose request takes `out` and response `back` (ns), with
/// the server's `rpc.dispatch` (recorded on the server's clock, `OFFSET` ahead) lasting
/// 100 us. Returns the spans and the dispatch's true start on the client's clock.
fn call(trace: &str, n: usize, t0: i64, out: i64, back: i64) -> (Vec<SpanRecord>, i64) {
    let s = ClockSample::exchange(OFFSET, out, back);
    let work = 100_000;
    let t1 = t0 + out;
    let (call_id, dispatch_id) = (format!("call{n}"), format!("dispatch{n}"));
    let attrs = [
        ("tracewire.clock.offset_us", (s.offset_ns / 1000).to_string()),
        ("tracewire.net.rtt_us", (s.rtt_ns.unwrap() / 1000).to_string()),
    ];
    let spans = vec![
        with(span(trace, &call_id, Some("root"), "rpc.call", "client", t0, t1 + work + back), &attrs),
        span(trace, &dispatch_id, Some(&call_id), "rpc.dispatch", "server", t1 + OFFSET, t1 + work + OFFSET),
    ];
    (spans, t1)
}

/// A trace of three calls; the first has the largest round trip and the most asymmetry.
fn three_calls(trace: &str) -> (Vec<SpanRecord>, Vec<i64>) {
    let mut spans = vec![span(trace, "root", None, "exec", "client", 0, 20_000_000)];
    let mut truth = Vec::new();
    for (n, (t0, out, back)) in
        [(1_000, 1_900_000, 100_000), (5_000_000, 80_000, 40_000), (10_000_000, 300_000, 60_000)]
            .into_iter()
            .enumerate()
    {
        let (s, t1) = call(trace, n, t0, out, back);
        spans.extend(s);
        truth.push(t1);
    }
    (spans, truth)
}

#[test]
fn every_server_span_is_corrected_with_the_pairs_min_rtt_sample() {
    let (mut spans, truth) = three_calls("t");
    let shifted = correct_skew(&mut spans);
    // One offset for the pair: the second call's (rtt 120 us, off by 20 us).
    let best = ClockSample::exchange(OFFSET, 80_000, 40_000);
    for (n, t1) in truth.iter().enumerate() {
        let d = spans.iter().find(|s| s.span_id == format!("dispatch{n}")).unwrap();
        let error = d.start_ns - t1;
        assert!(error.abs() <= best.uncertainty_ns().unwrap(), "dispatch{n} is {error} ns off");
        // Rounded to the attribute's microsecond.
        assert_eq!(error, OFFSET - best.offset_ns / 1000 * 1000, "dispatch{n}");
    }
    assert!(shifted.iter().all(|&(_, ns)| ns == -(best.offset_ns / 1000 * 1000)), "{shifted:?}");
    // Each call's own sample would leave the first call's dispatch 900 us off.
    let first = ClockSample::exchange(OFFSET, 1_900_000, 100_000);
    assert_eq!(first.offset_ns - OFFSET, 900_000);
}

#[test]
fn the_summary_has_one_entry_per_pair_with_the_best_sample_over_all_traces() {
    let (a, _) = three_calls("a");
    let (mut b, _) = call("b", 7, 0, 30_000, 10_000);
    b.insert(0, span("b", "root", None, "exec", "client", 0, 1_000_000));
    let mut analyzer = Analyzer::new(&[]);
    analyzer.add_trace(a);
    analyzer.add_trace(b);
    let summary = analyzer.finish();
    assert_eq!(summary.clock.len(), 1, "{:?}", summary.clock);
    let pair = &summary.clock[0];
    assert_eq!((pair.from.as_str(), pair.to.as_str(), pair.samples), ("client", "server", 4));
    // rtt 40 us: offset 50.010 ms, uncertainty 0.020 ms.
    assert!((pair.offset_ms - 50.010).abs() < 1e-9, "{pair:?}");
    assert_eq!(pair.uncertainty_ms, Some(0.020));
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(
        json["clock"],
        serde_json::json!([{"from": "client", "to": "server", "offset_ms": 50.01, "uncertainty_ms": 0.02, "samples": 4}])
    );
}

#[test]
fn a_relays_spans_under_a_call_are_not_moved_by_the_servers_offset() {
    let (mut spans, _) = call("t", 0, 0, 200_000, 200_000);
    spans.insert(0, span("t", "root", None, "exec", "client", 0, 1_000_000));
    // The relay's clock agrees with the client's; its span lies inside the call.
    spans.push(span("t", "fwd", Some("call0"), "relay.forward", "relay", 100_000, 110_000));
    let moved = correct_skew(&mut spans);
    let fwd = spans.iter().find(|s| s.span_id == "fwd").unwrap();
    assert_eq!((fwd.start_ns, fwd.end_ns), (100_000, 110_000), "moved: {moved:?}");
}

#[test]
fn a_client_span_that_outlives_its_server_parent_stays_where_the_client_put_it() {
    // The client takes the Exited event after the server's process span ended: with the
    // offset measured, nothing is to be contained.
    let (mut spans, t1) = call("t", 0, 0, 100_000, 100_000);
    spans.insert(0, span("t", "root", None, "exec", "client", 0, 2_000_000));
    spans.push(with(
        span("t", "taken", Some("dispatch0"), "terminal.queue", "client", t1 + 300_000, t1 + 310_000),
        &[("tracewire.event", "Exited".to_owned())],
    ));
    let moved = correct_skew(&mut spans);
    let taken = spans.iter().find(|s| s.span_id == "taken").unwrap();
    assert_eq!(taken.start_ns, t1 + 300_000, "moved: {moved:?}");
    assert!(moved.iter().all(|&(i, _)| spans[i].service == "server"), "{moved:?}");
}

/// A relayed request and a notification back, under an `exec` root, all in one process
/// (as `tracewire demo` runs them); the only time no span covers is on the wire.
fn relayed() -> Vec<SpanRecord> {
    let seq = |n: &str| [("tracewire.seq.first", n.to_owned()), ("tracewire.seq.last", n.to_owned())];
    let event = |e: &str| [("tracewire.event", e.to_owned())];
    let t = "t";
    vec![
        span(t, "root", None, "exec", "demo", 0, 1_000),
        span(t, "call", Some("root"), "rpc.call", "demo", 0, 400),
        span(t, "f1", Some("call"), "relay.frame", "demo", 0, 10),
        with(span(t, "s1", Some("call"), "relay.send", "demo", 10, 20), &seq("1")),
        span(t, "w1", Some("call"), "relay.forward", "demo", 50, 60),
        with(span(t, "r1", Some("call"), "relay.recv", "demo", 90, 100), &seq("1")),
        span(t, "d", Some("call"), "rpc.dispatch", "demo", 100, 900),
        with(span(t, "s2", Some("d"), "relay.send", "demo", 900, 910), &seq("2")),
        span(t, "w2", Some("d"), "relay.forward", "demo", 930, 940),
        with(span(t, "r2", Some("d"), "relay.recv", "demo", 970, 980), &seq("2")),
        with(span(t, "q", Some("d"), "terminal.queue", "demo", 980, 1_000), &event("Exited")),
    ]
}

#[test]
fn wire_time_is_the_net_transit_stage_in_the_table_the_critical_path_and_attribution() {
    let summary = analyze(&relayed(), &[]);
    // Without transit, the notification's hops (20 + 30 of 1000 ns) are uncovered.
    assert!(summary.unattributed_fraction.abs() < 1e-12, "{summary:?}");
    let transit = summary.stages.iter().find(|s| s.stage == "net.transit").unwrap();
    assert_eq!(transit.stats.count, 4);
    assert_eq!(summary.spans, 11, "derived intervals are not spans received");
    // All four hops are on the path: the request's (inside the call) and the notification's.
    let on_path = summary.critical_path.iter().find(|c| c.stage == "net.transit").unwrap();
    assert!((on_path.total_ms - 110e-6).abs() < 1e-12, "{on_path:?}");
    // The critical path of the spans alone has no stage for the wire: the gaps are the
    // dispatch's and the root's own time.
    let trace = relayed();
    assert!(critical_path(&trace).iter().all(|&(i, _)| trace[i].stage() != "net.transit"));
}

#[test]
fn the_exports_keep_the_spans_as_given() {
    let mut analyzer = Analyzer::new(&[]);
    analyzer.add_trace(relayed());
    let (_, exports) = analyzer.finish_with_exports();
    let spans = exports.spans();
    assert_eq!(spans.len(), 11);
    assert!(spans.iter().all(|s| s.name != "net.transit"));
    let names: BTreeMap<&str, usize> = spans.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.name.as_str()).or_default() += 1;
        m
    });
    assert_eq!(names.get("relay.send"), Some(&2));
}

#[test]
fn a_call_without_a_sample_is_corrected_with_its_pairs_offset() {
    // The second call's response carried no timing (an error, say): its server spans are
    // still the pair's, on the server's clock.
    let (mut spans, _) = call("t", 0, 0, 100_000, 100_000);
    spans.insert(0, span("t", "root", None, "exec", "client", 0, 5_000_000));
    spans.push(span("t", "bare", Some("root"), "rpc.call", "client", 3_000_000, 3_400_000));
    spans.push(span("t", "q", Some("bare"), "rpc.queue", "server", 3_100_000 + OFFSET, 3_150_000 + OFFSET));
    correct_skew(&mut spans);
    let q = spans.iter().find(|s| s.span_id == "q").unwrap();
    assert_eq!((q.start_ns, q.end_ns), (3_100_000, 3_150_000));
}

/// A trace the analyzer gives back for reuse (`add_trace_returning`, with ids only) is the
/// trace as given: the clock correction undone and the derived `net.transit` spans gone,
/// so a reader that fills its records again starts from what it read; and the analysis is
/// the one `add_trace` makes.
#[test]
fn a_trace_given_back_is_as_given_and_analyzed_as_add_trace_does() {
    let (skewed, _) = three_calls("a");
    let traces = [skewed, relayed()];
    let mut returning = Analyzer::new(&[]).ids_only();
    for t in &traces {
        let back = returning.add_trace_returning(t.clone()).expect("an ids-only analyzer keeps no spans");
        assert_eq!(&back, t);
    }
    let mut plain = Analyzer::new(&[]).ids_only();
    for t in &traces {
        plain.add_trace(t.clone());
    }
    let (returned, plan) = returning.finish_with_plan();
    assert_eq!((returned, plan), plain.finish_with_plan());
    // An analyzer that keeps spans for the exports keeps the trace instead.
    assert_eq!(Analyzer::new(&[]).add_trace_returning(traces[0].clone()), None);
}
