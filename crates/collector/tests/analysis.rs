//! The analysis on synthetic traces with known numbers.
#![allow(clippy::float_cmp)] // values are exact by construction (whole milliseconds)

use std::collections::BTreeMap;

use tracewire_collector::{Slo, SpanRecord, analyze, correct_skew};

const MS: i64 = 1_000_000;

fn span(
    trace: &str,
    id: &str,
    parent: Option<&str>,
    name: &str,
    service: &str,
    start_ms: i64,
    end_ms: i64,
) -> SpanRecord {
    SpanRecord {
        trace_id: trace.into(),
        span_id: id.into(),
        parent_id: parent.map(Into::into),
        name: name.into(),
        service: service.into(),
        start_ns: start_ms * MS,
        end_ns: end_ms * MS,
        attributes: BTreeMap::new(),
        ..SpanRecord::default()
    }
}

fn with(mut s: SpanRecord, k: &str, v: &str) -> SpanRecord {
    s.attributes.insert(k.into(), v.into());
    s
}

#[test]
fn percentiles_are_exact_nearest_rank() {
    let spans: Vec<SpanRecord> = (1..=100).map(|i| span(&format!("t{i}"), "r", None, "exec", "c", 0, i)).collect();
    let s = analyze(&spans, &[]);
    assert_eq!(s.traces, 100);
    assert_eq!((s.e2e.count, s.e2e.p50_ms, s.e2e.p90_ms, s.e2e.p99_ms, s.e2e.max_ms), (100, 50.0, 90.0, 99.0, 100.0));
    let exec = s.stages.iter().find(|x| x.stage == "exec").unwrap();
    assert_eq!(exec.stats.p90_ms, 90.0);
}

#[test]
fn unattributed_fraction_is_the_uncovered_share_of_root_time() {
    let spans = vec![
        span("t", "r", None, "exec", "c", 0, 100),
        span("t", "a", Some("r"), "rpc.call", "c", 0, 40),
        span("t", "b", Some("a"), "rpc.dispatch", "c", 30, 60), // overlaps a: counted once
        span("t", "c", Some("r"), "terminal.deliver", "c", 90, 120), // clipped to the root
    ];
    let s = analyze(&spans, &[]);
    assert!((s.unattributed_fraction - 0.3).abs() < 1e-12, "{}", s.unattributed_fraction);
}

#[test]
fn orphans_are_counted() {
    let spans = vec![
        span("t", "r", None, "exec", "c", 0, 10),
        span("t", "x", Some("missing"), "rpc.dispatch", "s", 1, 2),
        span("u", "y", Some("gone"), "process", "s", 1, 2),
    ];
    let s = analyze(&spans, &[]);
    assert_eq!((s.traces, s.spans, s.orphans), (2, 3, 2));
}

#[test]
fn a_server_clock_5ms_ahead_is_corrected_by_the_measured_offset() {
    let trace = vec![
        span("t", "r", None, "exec", "client", 0, 10),
        with(span("t", "c", Some("r"), "rpc.call", "client", 0, 1), "tracewire.clock.offset_us", "5000"),
        // Recorded in the server's clock, 5 ms ahead: really 1..9 ms.
        span("t", "d", Some("c"), "rpc.dispatch", "server", 6, 14),
        span("t", "p", Some("d"), "process", "server", 7, 13),
    ];
    let mut fixed = trace.clone();
    correct_skew(&mut fixed);
    assert_eq!((fixed[2].start_ns, fixed[2].end_ns), (MS, 9 * MS));
    assert_eq!((fixed[3].start_ns, fixed[3].end_ns), (2 * MS, 8 * MS), "the server's whole subtree moves");
    assert_eq!((fixed[1].start_ns, fixed[1].end_ns), (0, MS), "client spans stay");
    let s = analyze(&trace, &[]);
    assert!((s.unattributed_fraction - 0.1).abs() < 1e-12, "corrected: {}", s.unattributed_fraction);
}

#[test]
fn without_an_offset_containment_pulls_a_child_inside_its_parent() {
    let mut t = vec![
        span("t", "r", None, "exec", "client", 0, 10),
        span("t", "d", Some("r"), "rpc.dispatch", "server", 20, 25),
    ];
    correct_skew(&mut t);
    assert_eq!((t[1].start_ns, t[1].end_ns), (5 * MS, 10 * MS));
    // A child that starts too early is moved forward.
    let mut t =
        vec![span("t", "r", None, "exec", "client", 10, 20), span("t", "d", Some("r"), "rpc.dispatch", "server", 2, 4)];
    correct_skew(&mut t);
    assert_eq!((t[1].start_ns, t[1].end_ns), (10 * MS, 12 * MS));
}

#[test]
fn slos_report_value_violation_rate_and_pass() {
    let mut spans: Vec<SpanRecord> = (1..=100).map(|i| span(&format!("t{i}"), "r", None, "exec", "c", 0, i)).collect();
    for i in 1..=10 {
        spans.push(span(&format!("t{i}"), "s", Some("r"), "process.spawn", "s", 0, i));
    }
    let slos: Vec<Slo> = ["e2e.p99<=50ms", "e2e.max<=100ms", "process.spawn.p50<=5ms", "first_output.p90<=50ms"]
        .iter()
        .map(|e| Slo::parse(e).unwrap())
        .collect();
    let s = analyze(&spans, &slos);
    let r = &s.slos;
    assert_eq!((r[0].value_ms, r[0].violation_rate, r[0].pass), (Some(99.0), 0.5, false));
    assert_eq!((r[1].value_ms, r[1].violation_rate, r[1].pass), (Some(100.0), 0.0, true));
    assert_eq!(
        (r[2].value_ms, r[2].violation_rate, r[2].pass),
        (Some(5.0), 0.5, true),
        "share of traces with the stage"
    );
    assert!(!r[3].pass, "no data is not a pass");
}

#[test]
fn first_output_runs_from_the_start_call_to_the_first_output_delivered() {
    let spans = vec![
        span("t", "r", None, "exec", "c", 0, 50),
        with(span("t", "call", Some("r"), "rpc.call", "c", 2, 5), "rpc.method", "Start"),
        with(span("t", "o2", Some("call"), "terminal.deliver", "c", 20, 30), "tracewire.event", "Output"),
        with(span("t", "o1", Some("call"), "terminal.deliver", "c", 10, 12), "tracewire.event", "Output"),
        with(span("t", "x", Some("call"), "terminal.deliver", "c", 8, 9), "tracewire.event", "Exited"),
    ];
    let s = analyze(&spans, &[]);
    assert_eq!((s.first_output.count, s.first_output.p50_ms), (1, 10.0));
}

#[test]
fn the_summary_serializes_in_the_documented_shape() {
    let s = analyze(&[span("t", "r", None, "exec", "c", 0, 1)], &[Slo::parse("e2e.p99<=2ms").unwrap()]);
    let v: serde_json::Value = serde_json::to_value(&s).unwrap();
    for key in [
        "traces",
        "spans",
        "orphans",
        "traces_with_errors",
        "unattributed_fraction",
        "e2e",
        "first_output",
        "stages",
        "slos",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    for key in ["count", "p50_ms", "p90_ms", "p99_ms", "max_ms"] {
        assert!(
            v["e2e"].get(key).is_some() && v["first_output"].get(key).is_some() && v["stages"][0].get(key).is_some()
        );
    }
    assert_eq!(v["stages"][0]["stage"], "exec");
    assert_eq!((v["stages"][0]["errors"].as_u64(), v["stages"][0]["error_rate"].as_f64()), (Some(0), Some(0.0)));
    for key in ["expr", "value_ms", "violation_rate", "pass"] {
        assert!(v["slos"][0].get(key).is_some());
    }
    assert!(v["slos"][0].get("error_rate").is_none(), "a latency objective has no error rate: {v}");
}

#[test]
fn bad_slo_expressions_are_typed_errors() {
    for bad in ["", "e2e", "e2e.p99", "e2e.p95<=1ms", ".p99<=1ms", "e2e.p99<=fast", "e2e.p99<=5", "e2e.p99<=-1ms"] {
        assert!(Slo::parse(bad).is_err(), "{bad:?}");
    }
}

fn failed(s: SpanRecord) -> SpanRecord {
    SpanRecord { status_code: tracewire_store::status::ERROR, status_message: "boom".into(), ..s }
}

#[test]
fn error_rates_per_stage_and_traces_with_errors() {
    // 10 traces, each exec > process.spawn; spawn fails in traces 0..3 (3 of 10), and
    // trace 0's exec fails too; an OK status is not an error.
    let mut spans = Vec::new();
    for i in 0..10 {
        let t = format!("t{i}");
        let exec = span(&t, "r", None, "exec", "c", 0, 10);
        spans.push(if i == 0 { failed(exec) } else { exec });
        let spawn = span(&t, "s", Some("r"), "process.spawn", "s", 1, 2);
        spans.push(match i {
            0..3 => failed(spawn),
            3 => SpanRecord { status_code: tracewire_store::status::OK, ..spawn },
            _ => spawn,
        });
    }
    let s = analyze(&spans, &[]);
    assert_eq!((s.traces, s.traces_with_errors), (10, 3));
    let stage = |name: &str| s.stages.iter().find(|x| x.stage == name).unwrap();
    assert_eq!((stage("process.spawn").errors, stage("process.spawn").error_rate), (3, 0.3));
    assert_eq!((stage("exec").errors, stage("exec").error_rate), (1, 0.1));
    assert_eq!(stage("exec").stats.count, 10, "latency columns unchanged");
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(v["traces_with_errors"], 3);
    assert_eq!(v["stages"][1]["stage"], "process.spawn");
    assert_eq!((v["stages"][1]["errors"].as_u64(), v["stages"][1]["error_rate"].as_f64()), (Some(3), Some(0.3)));
    // No errors at all: zeros, not missing.
    let clean = analyze(&[span("u", "r", None, "exec", "c", 0, 1)], &[]);
    assert_eq!((clean.traces_with_errors, clean.stages[0].errors, clean.stages[0].error_rate), (0, 0, 0.0));
}

#[test]
fn error_rate_slos_pass_fail_and_violation_rates() {
    // 200 traces: process.spawn fails in 2 (1%), rpc.call (in the first 100 traces only)
    // fails in 1; every trace has one spawn.
    let mut spans = Vec::new();
    for i in 0..200 {
        let t = format!("t{i}");
        spans.push(span(&t, "r", None, "exec", "c", 0, 10));
        let spawn = span(&t, "s", Some("r"), "process.spawn", "s", 1, 2);
        spans.push(if i < 2 { failed(spawn) } else { spawn });
        if i < 100 {
            let call = span(&t, "c", Some("r"), "rpc.call", "c", 1, 3);
            spans.push(if i == 50 { failed(call) } else { call });
        }
    }
    let exprs = [
        "process.spawn.error_rate<=1%",   // 1% exactly: pass
        "process.spawn.error_rate<=0.5%", // fail
        "rpc.call.error_rate<=1%",        // 1 of 100: pass
        "e2e.error_rate<=1%",             // 3 traces of 200 = 1.5%: fail
        "e2e.error_rate<=1.5%",           // pass
        "missing.error_rate<=100%",       // no data is not a pass
        "process.spawn.p50<=5ms",         // latency objectives still work beside them
    ];
    let slos: Vec<Slo> = exprs.iter().map(|e| Slo::parse(e).unwrap()).collect();
    let r = analyze(&spans, &slos).slos;
    let got: Vec<(Option<f64>, f64, bool)> = r.iter().map(|r| (r.error_rate, r.violation_rate, r.pass)).collect();
    assert_eq!(
        got,
        [
            (Some(0.01), 0.01, true),
            (Some(0.01), 0.01, false),
            (Some(0.01), 0.01, true), // of the 100 traces that have rpc.call
            (Some(0.015), 0.015, false),
            (Some(0.015), 0.015, true),
            (Some(0.0), 0.0, false),
            (None, 0.0, true),
        ]
    );
    assert!(r[..6].iter().all(|r| r.value_ms.is_none()));
    assert_eq!(r[6].value_ms, Some(1.0));
    let v = serde_json::to_value(&r[0]).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"expr": "process.spawn.error_rate<=1%", "error_rate": 0.01, "violation_rate": 0.01, "pass": true})
    );
    // The same objectives from an SLO file.
    let file = Slo::parse_toml(r#"slos = ["process.spawn.error_rate<=1%", "e2e.error_rate<=0.5%"]"#).unwrap();
    assert_eq!(file.iter().map(|s| s.max_error_rate).collect::<Vec<_>>(), [Some(0.01), Some(0.005)]);
}

#[test]
fn error_rate_thresholds_are_percentages_and_the_rest_is_refused_clearly() {
    use tracewire_collector::SloError;
    let ok = |e: &str| Slo::parse(e).unwrap().max_error_rate.unwrap();
    assert_eq!(ok("process.spawn.error_rate<=1%"), 0.01);
    assert_eq!(ok("process.spawn.error_rate<=0.5%"), 0.005);
    assert_eq!(ok(" e2e.error_rate <= 0 % "), 0.0);
    assert_eq!(ok("e2e.error_rate<=100%"), 1.0);
    for bad in [
        "e2e.error_rate<=0.01", // a fraction: ambiguous with a percentage, refused
        "e2e.error_rate<=1",
        "e2e.error_rate<=1ms",
        "e2e.error_rate<=%",
        "e2e.error_rate<=-1%",
        "e2e.error_rate<=101%",
        "e2e.error_rate<=NaN%",
        "e2e.error_rate<=1%%",
    ] {
        let e = Slo::parse(bad).unwrap_err();
        assert!(matches!(e, SloError::ErrorRateThreshold(_)), "{bad:?}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(bad.trim()) && msg.contains("percentage") && msg.contains("0.01"), "{msg}");
    }
    let e = Slo::parse("first_output.error_rate<=1%").unwrap_err();
    assert!(matches!(e, SloError::ErrorRateMetric(_)) && e.to_string().contains("e2e.error_rate"), "{e}");
    // A percentage is not a latency, and `<` is not `<=`.
    let e = Slo::parse("e2e.p99<=1%").unwrap_err();
    assert!(matches!(e, SloError::Threshold(_)) && e.to_string().contains("error_rate"), "{e}");
    assert!(matches!(Slo::parse("e2e.error_rate<1%"), Err(SloError::Syntax(_))));
    assert!(matches!(Slo::parse("e2e.errors<=1%"), Err(SloError::Stat(_))));
}

#[test]
fn jaeger_json_has_the_structure_the_jaeger_ui_expects() {
    let spans = vec![
        with(span("t1", "a1", None, "exec", "client", 1, 11), "tracewire.stage", "exec"),
        with(span("t1", "b2", Some("a1"), "rpc.dispatch", "server", 2, 5), "rpc.method", "Start"),
        span("t1", "c3", Some("b2"), "process", "server", 3, 4),
    ];
    let j = tracewire_collector::jaeger::to_jaeger(&spans);
    let data = j["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    let t = &data[0];
    assert_eq!(t["traceID"], "t1");
    let procs = t["processes"].as_object().unwrap();
    assert_eq!(procs.len(), 2, "one process per service");
    let pid_of = |svc: &str| procs.iter().find(|(_, p)| p["serviceName"] == svc).map(|(k, _)| k.clone()).unwrap();
    for p in procs.values() {
        assert!(p["tags"].is_array());
    }
    let spans = t["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 3);
    let get = |id: &str| spans.iter().find(|s| s["spanID"] == id).unwrap();
    let (a, b) = (get("a1"), get("b2"));
    // Every field the UI reads, with its type.
    for s in spans {
        for key in
            ["traceID", "spanID", "operationName", "references", "startTime", "duration", "tags", "logs", "processID"]
        {
            assert!(s.get(key).is_some(), "span lacks {key}: {s}");
        }
        assert!(
            s["startTime"].is_i64() && s["duration"].is_i64() && s["references"].is_array() && s["logs"].is_array()
        );
    }
    assert_eq!(a["references"].as_array().unwrap().len(), 0, "a root has no reference");
    assert_eq!(b["references"][0], serde_json::json!({"refType": "CHILD_OF", "traceID": "t1", "spanID": "a1"}));
    assert_eq!((a["startTime"].as_i64(), a["duration"].as_i64()), (Some(1000), Some(10_000)), "microseconds");
    assert_eq!(a["operationName"], "exec");
    assert_eq!(a["processID"], pid_of("client").as_str());
    assert_eq!(b["processID"], pid_of("server").as_str());
    assert_eq!(b["tags"][0], serde_json::json!({"key": "rpc.method", "type": "string", "value": "Start"}));
}

#[test]
fn the_html_report_is_self_contained_with_charts_waterfalls_and_slo_lines() {
    let mut spans: Vec<SpanRecord> = Vec::new();
    for i in 1..=5 {
        let t = format!("t{i}");
        spans.push(span(&t, "r", None, "exec", "c", 0, 10 * i));
        spans.push(span(&t, "s", Some("r"), "process.spawn", "s", 1, 2 + i));
    }
    let slos = vec![Slo::parse("e2e.p99<=30ms").unwrap(), Slo::parse("process.spawn.p50<=2ms").unwrap()];
    let summary = analyze(&spans, &slos);
    let html = tracewire_collector::report::render_html(&summary, &spans, &slos);
    assert!(html.starts_with("<!doctype html>"));
    assert!(!html.contains(" src=") && !html.contains(" href=") && !html.contains("<link"), "no external assets");
    assert_eq!(html.matches("<svg").count(), 4, "e2e, stages, median and slowest waterfalls");
    assert_eq!(html.matches(r#"class="slo""#).count(), 2, "one red dashed line per SLO");
    assert!(html.contains(r#"stroke="red""#) && html.contains("stroke-dasharray"));
    assert!(html.contains("Slowest trace (50.000 ms)"), "the slowest waterfall is the 50 ms trace");
    assert!(html.contains("Median trace (30.000 ms)"));
    assert!(html.contains(r#"<tr class="fail"><td>e2e.p99&lt;=30ms</td>"#), "failing SLO row");
    assert!(html.contains("5 traces, 10 spans, 0 orphans"));
    assert!(!html.contains(r#"class="error-marker""#), "no errors, no marker");
}

#[test]
fn the_html_report_marks_stages_with_errors_and_skips_error_rate_slos_on_the_latency_axis() {
    let mut spans: Vec<SpanRecord> = Vec::new();
    for i in 0..4 {
        let t = format!("t{i}");
        spans.push(span(&t, "r", None, "exec", "c", 0, 10));
        let spawn = span(&t, "s", Some("r"), "process.spawn", "s", 1, 2);
        spans.push(if i == 0 { failed(spawn) } else { spawn });
    }
    let slos = vec![Slo::parse("process.spawn.error_rate<=1%").unwrap(), Slo::parse("exec.p50<=20ms").unwrap()];
    let summary = analyze(&spans, &slos);
    let html = tracewire_collector::report::render_html(&summary, &spans, &slos);
    // The stage table: an err % column; the failing stage's row is marked, the other not.
    assert!(html.contains("<th>err %</th>"), "{html}");
    assert!(
        html.contains(r#"<tr class="errors"><td>process.spawn</td><td>4</td>"#)
            && html.contains(r#"<td class="err"><span class="error-marker">●</span> 25.00</td>"#),
        "{html}"
    );
    assert!(html.contains("<tr><td>exec</td><td>4</td>"), "{html}");
    // The chart: red markers on e2e (a trace with an error) and process.spawn only.
    assert_eq!(html.matches(r#"<circle class="error-marker""#).count(), 2, "{html}");
    assert!(html.contains("<title>1 errors (25.00%)</title>"), "{html}");
    // Only the latency objective draws a line; the error-rate one is in the SLO table.
    assert_eq!(html.matches(r#"class="slo""#).count(), 1);
    assert!(
        html.contains(r#"<tr class="fail"><td>process.spawn.error_rate&lt;=1%</td><td>25.00% errors</td>"#),
        "{html}"
    );
    assert!(html.contains("4 traces, 8 spans, 0 orphans; 1 traces with errors"), "{html}");
}

#[test]
fn the_critical_path_follows_the_latest_running_child() {
    // root 0..100: a 0..40, b 30..90 (c 50..60 under b). Back from 100: root alone until 90,
    // b from 90 to 30 (c inside it from 60 to 50), then a from 30 to 0.
    let t = vec![
        with(span("t", "r", None, "exec", "c", 0, 100), "tracewire.stage", "exec"),
        span("t", "a", Some("r"), "rpc.call", "c", 0, 40),
        span("t", "b", Some("r"), "rpc.dispatch", "s", 30, 90),
        span("t", "c", Some("b"), "process.spawn", "s", 50, 60),
    ];
    let mut path = tracewire_collector::critical_path(&t);
    path.sort_unstable();
    assert_eq!(path, [(0, 10 * MS), (1, 30 * MS), (2, 50 * MS), (3, 10 * MS)]);
    assert_eq!(path.iter().map(|p| p.1).sum::<i64>(), 100 * MS);
    // Summed over two traces (the second a copy shifted in time): shares by stage.
    let mut second = t.clone();
    for s in &mut second {
        s.trace_id = "u".into();
        s.start_ns += 1000 * MS;
        s.end_ns += 1000 * MS;
    }
    let s = analyze(&[t, second].concat(), &[]);
    let shares: Vec<(&str, f64, f64)> =
        s.critical_path.iter().map(|c| (c.stage.as_str(), c.total_ms, c.share)).collect();
    assert_eq!(
        shares,
        [("rpc.dispatch", 100.0, 0.5), ("rpc.call", 60.0, 0.3), ("exec", 20.0, 0.1), ("process.spawn", 20.0, 0.1)]
    );
}

#[test]
fn a_span_that_claims_its_own_id_as_parent_does_not_loop() {
    let t = vec![span("t", "r", None, "exec", "c", 0, 10), span("t", "r", Some("r"), "loop", "c", 0, 10)];
    let path = tracewire_collector::critical_path(&t);
    assert_eq!(path.iter().map(|p| p.1).sum::<i64>(), 10 * MS);
    // The analysis and the report walk the same tree: they end, and each waterfall (the
    // median and the slowest trace, here the same one) lists each span once.
    let html = tracewire_collector::report::render_html(&analyze(&t, &[]), &t, &[]);
    assert_eq!(html.matches("<rect class=").count(), 2 * 2, "{html}");
    assert!(tracewire_collector::critical_path(&[span("t", "x", Some("y"), "orphan", "c", 0, 1)]).is_empty());
}

#[test]
fn slo_files_are_toml_lists_and_errors_name_the_problem() {
    let slos = Slo::parse_toml("slos = [\"e2e.p99<=250ms\", \"process.spawn.p50<=5ms\"]\n").unwrap();
    assert_eq!(slos.iter().map(|s| s.expr.as_str()).collect::<Vec<_>>(), ["e2e.p99<=250ms", "process.spawn.p50<=5ms"]);
    let e = Slo::parse_toml("slos = [\"e2e.p99<250ms\"]").unwrap_err();
    assert!(e.to_string().contains("e2e.p99<250ms"), "{e}");
    let e = Slo::parse_toml("slos = \"e2e.p99<=1ms\"").unwrap_err();
    assert!(matches!(e, tracewire_collector::SloError::File(_)), "{e}");
    assert!(Slo::parse_toml("slos = []\nextra = 1").is_err());
}

#[test]
fn a_child_that_outlives_its_parent_stays_on_the_critical_path() {
    // The call returns at 30 but the process it started runs until 90 (as a remote exec's
    // Start returns while the process runs): the process's 80 ms are on the path.
    let t = vec![
        span("t", "r", None, "exec", "c", 0, 100),
        span("t", "c", Some("r"), "rpc.call", "c", 0, 30),
        span("t", "p", Some("c"), "process", "s", 10, 90),
    ];
    let path = tracewire_collector::critical_path(&t);
    assert_eq!(path, [(0, 10 * MS), (1, 10 * MS), (2, 80 * MS)]);
}
