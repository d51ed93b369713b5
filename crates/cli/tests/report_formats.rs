//! `tracewire report` reading the formats users already have, OTLP JSON and Jaeger JSON, as
//! well as a database: the same traces give the same report from each.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as V};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use tracewire_collector::SpanRecord;
use tracewire_store::OtlpSpan;

mod common;
use common::BIN;

fn kv(key: &str, v: V) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(v) }), ..KeyValue::default() }
}

/// Three execs, client and server, in whole microseconds (what Jaeger JSON carries); the
/// server's clock 2 ms ahead, measured, in the second; a failed spawn in the third.
fn traces() -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for t in 0u8..3 {
        let skew: i64 = if t == 1 { 2_000 } else { 0 };
        let record =
            |service: &str, id: u8, parent: Option<u8>, stage: &str, start: i64, end: i64, extra: Vec<KeyValue>| {
                let at = |us: i64| {
                    u64::try_from(1_750_000_000_000_000_000 + i64::from(t) * 1_000_000_000 + us * 1_000).unwrap()
                };
                let mut attributes = vec![kv("tracewire.stage", V::StringValue(stage.into()))];
                attributes.extend(extra);
                SpanRecord::from_otlp(OtlpSpan {
                    resource: Arc::new(Resource {
                        attributes: vec![kv("service.name", V::StringValue(service.into()))],
                        ..Resource::default()
                    }),
                    span: Span {
                        trace_id: vec![0xc0 | t; 16],
                        span_id: vec![0, 0, 0, 0, 0, 0, t, id],
                        parent_span_id: parent.map(|p| vec![0, 0, 0, 0, 0, 0, t, p]).unwrap_or_default(),
                        name: stage.into(),
                        start_time_unix_nano: at(start),
                        end_time_unix_nano: at(end),
                        attributes,
                        status: (t == 2 && stage == "process.spawn")
                            .then(|| Status { code: 2, message: "ENOENT".into() }),
                        ..Span::default()
                    },
                    ..OtlpSpan::default()
                })
            };
        let d = i64::from(t) * 900;
        out.extend([
            record("client", 1, None, "exec", 0, 6_000 + d, vec![]),
            record(
                "client",
                2,
                Some(1),
                "rpc.call",
                50,
                5_800 + d,
                vec![
                    kv("rpc.method", V::StringValue("Start".into())),
                    kv("tracewire.clock.offset_us", V::IntValue(skew)),
                ],
            ),
            record("server", 3, Some(2), "rpc.dispatch", 400 + skew, 5_500 + d + skew, vec![]),
            record(
                "server",
                4,
                Some(3),
                "process.spawn",
                500 + skew,
                1_400 + d + skew,
                vec![kv("process.pid", V::IntValue(100))],
            ),
        ]);
    }
    out
}

fn report(args: &[&str], inputs: &[(&str, &Path)], out: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("report").args(args).arg("--out").arg(out);
    for (flag, path) in inputs {
        cmd.arg(flag).arg(path);
    }
    cmd.output().unwrap()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn report_gives_the_same_summary_from_a_database_otlp_json_and_jaeger_json() {
    let dir = tracewire_testkit::TempDir::new("tracewire-report-formats").unwrap();
    let spans = traces();
    let db = dir.path().join("traces.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = tracewire_store::Store::open(&db).unwrap();
        store.append_spans(spans.clone()).await.unwrap();
        store.flush().await.unwrap();
    });
    // Two OTLP JSON files: the first trace in one, the others in another.
    let (first, rest) = spans.split_at(4);
    let (otlp_a, otlp_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    for (path, part) in [(&otlp_a, first), (&otlp_b, rest)] {
        let file = std::fs::File::create(path).unwrap();
        tracewire_collector::otlp_json::write_lines(part, std::io::BufWriter::new(file)).unwrap();
    }
    let slo = ["--slo", "e2e.p90<=10ms", "--slo", "process.spawn.error_rate<=50%"];

    let from_db = dir.path().join("from-db");
    let o = report(&slo, &[("--db", &db)], &from_db);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let want = summary(&from_db);
    assert_eq!(
        (want["traces"].as_u64(), want["spans"].as_u64(), want["traces_with_errors"].as_u64()),
        (Some(3), Some(12), Some(1)),
        "{want}"
    );

    // OTLP JSON, the two files together; Jaeger JSON, the database's report's own export
    // (with the clock-skew correction applied and said in warnings).
    let jaeger = from_db.join("traces.jaeger.json");
    let cases: [(&str, Vec<(&str, &Path)>); 3] = [
        ("otlp", vec![("--otlp-json", &otlp_a), ("--otlp-json", &otlp_b)]),
        ("jaeger", vec![("--jaeger-json", &jaeger)]),
        ("all", vec![("--db", &db), ("--otlp-json", &otlp_a), ("--otlp-json", &otlp_b), ("--jaeger-json", &jaeger)]),
    ];
    for (name, inputs) in cases {
        let out = dir.path().join(name);
        let o = report(&slo, &inputs, &out);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{name}: {stderr}");
        assert_eq!(summary(&out), want, "the summary from {name}");
        for (_, path) in &inputs {
            assert!(stderr.contains(&format!("from {}", path.display())), "{stderr}");
        }
        if name == "all" {
            assert!(stderr.contains("24 spans found in more than one input were kept once"), "{stderr}");
        }
    }
}

#[test]
fn report_needs_an_input_and_says_what_is_wrong_with_one() {
    let dir = tracewire_testkit::TempDir::new("tracewire-report-input-errors").unwrap();
    let out = dir.path().join("out");
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let o = Command::new(BIN).arg("report").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(stderr(&o).contains("<--db <DB>|--otlp-json <FILE>|--jaeger-json <FILE>>"), "{}", stderr(&o));

    let jaeger = dir.path().join("trace.json");
    std::fs::write(&jaeger, r#"{"data":[{"traceID":"01","spans":[],"processes":{}}]}"#).unwrap();
    let o = report(&[], &[("--otlp-json", &jaeger)], &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "{}:1: this is Jaeger JSON, not OTLP JSON traces (pass it with --jaeger-json)",
            jaeger.display()
        )),
        "{}",
        stderr(&o)
    );

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"resourceSpans\":[]}\n{\"resourceSpans\":[{\"scopeSpans\":[{\"spans\":[{\"spanId\":\"0g\"}]}]}]}\n",
    )
    .unwrap();
    let o = report(&[], &[("--jaeger-json", &jaeger), ("--otlp-json", &bad)], &out);
    assert_eq!(o.status.code(), Some(1));
    let want = format!(r#"{}:2: resourceSpans[0].scopeSpans[0].spans[0].spanId: "0g" is not a hex id"#, bad.display());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));

    let missing = dir.path().join("missing.json");
    let o = report(&[], &[("--jaeger-json", &missing)], &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&missing.display().to_string()), "{}", stderr(&o));

    let o = report(&[], &[("--jaeger-json", &jaeger)], &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("the inputs hold no spans"), "{}", stderr(&o));
    assert!(!out.exists(), "no report is written without spans");
}
