//! `tracewire diff` as a real process: every input form (database, OTLP JSON, Jaeger JSON,
//! a directory) gives the same verdicts, also past the spans gathered in memory,
//! `--fail-on` sets the exit status, `--json` has the documented shape, and
//! `demo --out DIR` leaves a `DIR/traces.db` that diff reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tracewire_collector::SpanRecord;
use tracewire_collector::diff::stats::Rng;

mod common;
use common::BIN;

const US: i64 = 1_000;

fn span(trace: u64, id: &str, parent: Option<&str>, stage: &str, start_us: i64, end_us: i64) -> SpanRecord {
    SpanRecord {
        trace_id: format!("{trace:032x}"),
        span_id: format!("{:016x}", trace * 16 + id.parse::<u64>().unwrap()),
        parent_id: parent.map(|p| format!("{:016x}", trace * 16 + p.parse::<u64>().unwrap())),
        name: stage.into(),
        service: "synthetic".into(),
        // Whole microseconds since 2025: what Jaeger JSON carries.
        start_ns: 1_750_000_000_000_000_000 + (start_us + i64::try_from(trace).unwrap() * 100_000) * US,
        end_ns: 1_750_000_000_000_000_000 + (end_us + i64::try_from(trace).unwrap() * 100_000) * US,
        attributes: BTreeMap::from([("tracewire.stage".to_owned(), stage.to_owned())]),
        ..SpanRecord::default()
    }
}

fn expo(rng: &mut Rng, mean_us: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    let v = (-rng.uniform().ln() * mean_us) as i64;
    v
}

/// `n` traces of exec > rpc.call > (rpc.queue, process.spawn, process.stdout); every spawn
/// takes `spawn_shift_us` longer.
fn run(seed: u64, n: u64, spawn_shift_us: i64) -> Vec<SpanRecord> {
    let mut rng = Rng::new(seed);
    (0..n)
        .flat_map(|i| {
            let id = seed * 100_000 + i;
            let queue = 200 + expo(&mut rng, 300.0);
            let spawn = 2_000 + expo(&mut rng, 1_000.0) + spawn_shift_us;
            let stdout = 1_000 + expo(&mut rng, 500.0);
            let (q_end, s_end) = (10 + queue, 10 + queue + spawn);
            let end = s_end + stdout + 50;
            vec![
                span(id, "1", None, "exec", 0, end + 20),
                span(id, "2", Some("1"), "rpc.call", 5, end),
                span(id, "3", Some("2"), "rpc.queue", 10, q_end),
                span(id, "4", Some("2"), "process.spawn", q_end, s_end),
                span(id, "5", Some("2"), "process.stdout", s_end, s_end + stdout),
            ]
        })
        .collect()
}

/// Writes `spans` in every form under `dir/name.*`; returns (form, path) pairs.
fn write_forms(dir: &Path, name: &str, spans: &[SpanRecord]) -> Vec<(&'static str, PathBuf)> {
    let db = dir.join(format!("{name}.db"));
    let run_dir = dir.join(format!("{name}-run"));
    let jaeger_dir = dir.join(format!("{name}-exported"));
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::create_dir_all(&jaeger_dir).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for path in [db.clone(), run_dir.join("traces.db")] {
            let store = tracewire_store::Store::open(&path).unwrap();
            store.append_spans(spans.to_vec()).await.unwrap();
            store.flush().await.unwrap();
        }
    });
    let otlp = dir.join(format!("{name}.jsonl"));
    tracewire_collector::otlp_json::write_lines(spans, std::io::BufWriter::new(std::fs::File::create(&otlp).unwrap()))
        .unwrap();
    let jaeger = dir.join(format!("{name}.jaeger.json"));
    let json = serde_json::to_string(&tracewire_collector::jaeger::to_jaeger(spans)).unwrap();
    std::fs::write(&jaeger, &json).unwrap();
    std::fs::write(jaeger_dir.join("traces.jaeger.json"), &json).unwrap();
    vec![("db", db), ("otlp", otlp), ("jaeger", jaeger), ("dir", run_dir), ("jaeger dir", jaeger_dir)]
}

/// `dir/base.jsonl` and `dir/new.jsonl`, OTLP JSON lines of `base` and `new`.
fn write_base_and_new(dir: &Path, base: &[SpanRecord], new: &[SpanRecord]) -> (PathBuf, PathBuf) {
    let paths = (dir.join("base.jsonl"), dir.join("new.jsonl"));
    for (path, spans) in [(&paths.0, base), (&paths.1, new)] {
        tracewire_collector::otlp_json::write_lines(spans, std::fs::File::create(path).unwrap()).unwrap();
    }
    paths
}

fn diff(args: &[&str], base: &Path, new: &Path) -> Output {
    Command::new(BIN).arg("diff").arg(base).arg(new).args(args).output().unwrap()
}

/// `run`'s spans, each trace's spread over the whole of them: every trace's first span,
/// then every trace's second, and so on.
fn spread(mut spans: Vec<SpanRecord>) -> Vec<SpanRecord> {
    spans.sort_by_key(|s| u64::from_str_radix(&s.span_id, 16).unwrap() % 16);
    spans
}

fn text(o: &Output) -> String {
    format!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Row name -> verdict, from a `--json` file.
fn verdicts(j: &Value) -> BTreeMap<String, String> {
    let mut v: BTreeMap<String, String> = j["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["stage"].as_str().unwrap().to_owned(), r["verdict"].as_str().unwrap().to_owned()))
        .collect();
    v.insert("e2e".into(), j["e2e"]["verdict"].as_str().unwrap().to_owned());
    v
}

#[test]
fn every_input_form_gives_the_same_verdicts() {
    let dir = tracewire_testkit::TempDir::new("tw-diff-forms").unwrap();
    let base = write_forms(dir.path(), "base", &run(1, 200, 0));
    let new = write_forms(dir.path(), "new", &run(2, 200, 1_500));
    let mut seen = Vec::new();
    for ((form, b), (_, n)) in base.iter().zip(&new) {
        let out = dir.path().join(format!("{}.json", form.replace(' ', "-")));
        let o = diff(&["--json", out.to_str().unwrap()], b, n);
        assert_eq!(o.status.code(), Some(0), "{form}: {}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        // Only a directory without traces.db warns that its Jaeger JSON is partial.
        assert_eq!(
            stderr.contains("holds only the traces the report exported"),
            *form == "jaeger dir",
            "{form}: {stderr}"
        );
        let j = json(&out);
        assert_eq!((j["base"]["traces"].as_u64(), j["new"]["traces"].as_u64()), (Some(200), Some(200)), "{form}");
        seen.push((form, verdicts(&j), j["stages"].clone()));
    }
    let (_, want, want_rows) = &seen[0];
    assert_eq!(want["process.spawn"], "slower");
    assert_eq!(want["e2e"], "slower");
    assert_eq!((want["rpc.queue"].as_str(), want["process.stdout"].as_str()), ("unchanged", "unchanged"));
    for (form, v, rows) in &seen[1..] {
        assert_eq!(v, want, "verdicts from {form}");
        // Whole microseconds in every form: the same figures, intervals and p-values too.
        assert_eq!(rows, want_rows, "rows from {form}");
    }
}

/// 30,000 spans a run, over the 20,000 that OTLP JSON inputs are gathered in memory up to
/// (beyond, in a temporary database under TMPDIR, removed at the end), each trace's spans
/// spread over the whole file: every form gives the comparison the databases give, figure
/// for figure (a Jaeger JSON file is read trace object by trace object, in its own order).
#[test]
fn inputs_over_the_in_memory_bound_give_the_same_comparison_in_every_form() {
    let dir = tracewire_testkit::TempDir::new("tw-diff-spill").unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let base = write_forms(dir.path(), "base", &spread(run(7, 6_000, 0)));
    let new = write_forms(dir.path(), "new", &spread(run(8, 6_000, 300)));
    let mut seen = Vec::new();
    for ((form, b), (_, n)) in base.iter().zip(&new) {
        let out = dir.path().join(format!("{}.json", form.replace(' ', "-")));
        let o = Command::new(BIN)
            .arg("diff")
            .arg(b)
            .arg(n)
            .args(["--resamples", "200", "--json", out.to_str().unwrap()])
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{form}: {}", text(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("read 30000 spans from"), "{form}: {stderr}");
        seen.push((form, json(&out)));
    }
    let (_, want) = &seen[0];
    assert_eq!((want["base"]["traces"].as_u64(), want["new"]["traces"].as_u64()), (Some(6000), Some(6000)));
    assert_eq!(verdicts(want)["process.spawn"], "slower");
    for (form, j) in &seen[1..] {
        assert_eq!(j, want, "{form}");
    }
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "left in TMPDIR");
}

#[test]
fn fail_on_sets_exit_status_3_only_when_a_significant_change_is_over_its_threshold() {
    let dir = tracewire_testkit::TempDir::new("tw-diff-gate").unwrap();
    let (base, new) = write_base_and_new(dir.path(), &run(3, 200, 0), &run(4, 200, 1_500));
    let o = diff(&[], &base, &new);
    assert_eq!(o.status.code(), Some(0), "no gate: {}", text(&o));
    let o = diff(&["--fail-on", "process.spawn.p50>+1ms", "--fail-on", "e2e.p90>+500%"], &base, &new);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("--fail-on 'process.spawn.p50>+1ms': p50 +"), "{stdout}");
    assert!(stdout.contains("VIOLATED") && stdout.contains("threshold +500%: ok"), "{stdout}");
    // Under its threshold, or an unchanged stage: 0.
    let spawn_pct = {
        let out = dir.path().join("d.json");
        assert_eq!(diff(&["--json", out.to_str().unwrap()], &base, &new).status.code(), Some(0));
        json(&out)["stages"].as_array().unwrap().iter().find(|r| r["stage"] == "process.spawn").unwrap()
            ["p50_change_pct"]
            .as_f64()
            .unwrap()
    };
    assert!(spawn_pct < 100.0, "{spawn_pct}");
    let o = diff(&["--fail-on", "process.spawn.p50>+100%", "--fail-on", "rpc.queue.p50>+0ms"], &base, &new);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The same run twice never fails a gate.
    let o = diff(&["--fail-on", "process.spawn.p50>+0ms", "--fail-on", "e2e.p99>+0%"], &new, &new);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A malformed expression is a usage error (2), saying what is expected.
    for bad in ["process.spawn.p50>1ms", "process.spawn.p95>+1ms", "e2e.p50>+1s"] {
        let o = diff(&["--fail-on", bad], &base, &new);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("expected STAGE.PCT>+N% or STAGE.PCT>+Nms"),
            "{}",
            text(&o)
        );
    }
    // A stage neither run has is a usage error too, naming the rows there are.
    let o = diff(&["--fail-on", "process.spwan.p50>+1ms"], &base, &new);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no stage \"process.spwan\""), "{}", text(&o));
    for bad in [["--confidence", "1.5"], ["--confidence", "0"]] {
        assert_eq!(diff(&bad, &base, &new).status.code(), Some(2));
    }
}

#[test]
fn json_and_html_outputs_have_the_documented_shape() {
    let dir = tracewire_testkit::TempDir::new("tw-diff-json").unwrap();
    let (base, new) = write_base_and_new(dir.path(), &run(5, 100, 0), &run(6, 100, 1_500));
    let (out, html) = (dir.path().join("diff.json"), dir.path().join("html"));
    let o = diff(
        &["--json", out.to_str().unwrap(), "--out", html.to_str().unwrap(), "--fail-on", "e2e.p50>+1ms", "--seed", "7"],
        &base,
        &new,
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let j = json(&out);
    assert_eq!(j["base"]["traces"], 100);
    assert_eq!(j["new"]["traces"], 100);
    let rows: Vec<&Value> = std::iter::once(&j["e2e"]).chain(j["stages"].as_array().unwrap()).collect();
    assert_eq!(rows.len(), 6, "e2e and five stages");
    for row in rows {
        assert!(row["stage"].is_string());
        for side in ["base", "new"] {
            for key in ["count", "p50_ms", "p90_ms", "p99_ms"] {
                assert!(row[side][key].is_number(), "{side}.{key} in {row}");
            }
        }
        for key in ["p50_change_ms", "p50_change_pct", "p90_change_ms", "p_value"] {
            assert!(row[key].is_number(), "{key} in {row}");
        }
        for key in ["p50_ci_ms", "p90_ci_ms"] {
            let ci = row[key].as_array().unwrap();
            assert!(ci.len() == 2 && ci[0].as_f64() <= ci[1].as_f64(), "{key} in {row}");
        }
        assert!(["slower", "faster", "unchanged"].contains(&row["verdict"].as_str().unwrap()), "{row}");
    }
    assert_eq!(j["options"]["seed"], 7);
    assert_eq!(j["fail_on"][0]["violated"], true);
    let page = std::fs::read_to_string(html.join("diff.html")).unwrap();
    assert!(page.contains(r#"<svg class="diff""#) && page.contains(r#"data-verdict="slower""#));
}

#[test]
fn demo_runs_keep_their_spans_in_traces_db_and_diff_reads_the_directories() {
    let dir = tracewire_testkit::TempDir::new("tw-diff-demo").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let o = Command::new(BIN)
            .args(["demo", "--execs", "10", "--via", "direct", "--slo", "e2e.p99<=60s", "--out"])
            .arg(out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(out.join("traces.db").is_file());
    }
    // A second demo into the same directory starts a fresh database.
    let o = Command::new(BIN)
        .args(["demo", "--execs", "10", "--via", "direct", "--slo", "e2e.p99<=60s", "--out"])
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = dir.path().join("d.json");
    let o = diff(&["--json", out.to_str().unwrap()], &a, &b);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j = json(&out);
    assert_eq!((j["base"]["traces"].as_u64(), j["new"]["traces"].as_u64()), (Some(10), Some(10)), "{j}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("process.spawn"), "{}", text(&o));
    // A run against itself: unchanged everywhere.
    let o = diff(&["--json", out.to_str().unwrap()], &a, &a);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(verdicts(&json(&out)).values().all(|v| v == "unchanged"), "{}", text(&o));
}
