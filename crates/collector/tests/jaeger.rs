//! Jaeger JSON as Jaeger renders it: a golden file built from spans covering every feature,
//! compared field by field, and what the Jaeger UI's loader needs of every span.
//!
//! References (read from the projects' sources):
//! - Jaeger's JSON model: `internal/uimodel/model.go` and its converter
//!   `internal/uimodel/converter/v1/json/from_domain.go` (jaegertracing/jaeger);
//! - the OTLP -> Jaeger translation: `pkg/translator/jaeger/traces_to_jaegerproto.go`
//!   (open-telemetry/opentelemetry-collector-contrib), and the OpenTelemetry specification's
//!   `trace/sdk_exporters/jaeger.md` ("OpenTelemetry to Jaeger Transformation") and
//!   `common/mapping-to-non-otlp.md` ("Mapping to non-OTLP Formats");
//! - Jaeger's clock-skew adjuster: `cmd/jaeger/internal/extension/jaegerquery/internal/
//!   adjuster/clockskew.go`;
//! - the Jaeger UI's file upload: `packages/jaeger-ui/src/components/SearchTracePage/
//!   FileLoader.tsx` -> `utils/readJsonFile.ts` -> `model/transform-trace-data.ts`
//!   (jaegertracing/jaeger-ui).
//!
//! `TRACEWIRE_BLESS=1 cargo test -p tracewire-collector --test jaeger` rewrites the golden
//! file; review its diff before committing it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value as V,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span};
use serde_json::{Value, json};
use tracewire_collector::jaeger::{skew_adjustment, to_jaeger};
use tracewire_collector::{SpanRecord, correct_skew};
use tracewire_store::{OtlpSpan, kind, status};

/// 2023-11-14T22:13:20Z in Unix nanoseconds: every time below is an offset from it.
const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

const TRACE_A: &str = "0af7651916cd43dd8448eb211c80319c";
/// Upper 64 bits zero: Jaeger writes the id with 16 digits.
const TRACE_B: &str = "00000000000000008448eb211c80319c";
const TRACE_SKEW: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OTHER_TRACE: &str = "a3ce929d0e0e47364bf92f3577b34da6";

fn av(v: V) -> AnyValue {
    AnyValue { value: Some(v) }
}

fn kv(key: &str, v: V) -> KeyValue {
    KeyValue { key: key.into(), value: Some(av(v)), ..KeyValue::default() }
}

fn s(v: &str) -> V {
    V::StringValue(v.into())
}

fn bytes(hex: &str) -> Vec<u8> {
    tracewire_store::unhex(hex).unwrap()
}

fn resource(attrs: Vec<KeyValue>) -> Arc<Resource> {
    Arc::new(Resource { attributes: attrs, ..Resource::default() })
}

fn record(resource: &Arc<Resource>, scope: &Arc<InstrumentationScope>, span: Span) -> SpanRecord {
    SpanRecord::from_otlp(OtlpSpan {
        resource: Arc::clone(resource),
        scope: Arc::clone(scope),
        span,
        ..OtlpSpan::default()
    })
}

fn otlp_span(trace: &str, id: &str, parent: Option<&str>, name: &str, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: bytes(trace),
        span_id: bytes(id),
        parent_span_id: parent.map(bytes).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: T0 + start_ms * MS,
        end_time_unix_nano: T0 + end_ms * MS,
        ..Span::default()
    }
}

/// Spans covering every feature of the export.
fn spans() -> Vec<SpanRecord> {
    let api_h1 = Arc::new(Resource {
        attributes: vec![
            kv("service.name", s("api")),
            kv("host.name", s("h1")),
            kv("process.pid", V::IntValue(4242)),
            kv("container.privileged", V::BoolValue(false)),
            kv("host.load", V::DoubleValue(0.25)),
        ],
        dropped_attributes_count: 1,
        ..Resource::default()
    });
    // Same service, another host: another process.
    let api_h2 = resource(vec![kv("service.name", s("api")), kv("host.name", s("h2"))]);
    let worker = resource(vec![kv("service.name", s("worker"))]);
    let anonymous = resource(vec![]);
    let scope = Arc::new(InstrumentationScope {
        name: "io.tracewire.test".into(),
        version: "1.2.3".into(),
        attributes: vec![kv("scope.attr", s("x"))],
        ..InstrumentationScope::default()
    });
    let no_scope = Arc::new(InstrumentationScope::default());

    let root = Span {
        kind: kind::SERVER,
        status: Some(Status { code: status::ERROR, message: "boom".into() }),
        trace_state: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into(),
        flags: 0x301, // sampled, with the has-is-remote and is-remote bits
        attributes: vec![
            kv("http.route", s("/users/{id}")),
            kv("cache.hit", V::BoolValue(true)),
            kv("http.response.status_code", V::IntValue(500)),
            kv("big", V::IntValue(1 << 60)),
            kv("negative.big", V::IntValue(-(1 << 60))),
            kv("ratio", V::DoubleValue(0.5)),
            kv("nan", V::DoubleValue(f64::NAN)),
            kv("inf", V::DoubleValue(f64::INFINITY)),
            kv("blob", V::BytesValue(vec![0, 0, 0x30, 0x39])),
            kv(
                "list",
                V::ArrayValue(ArrayValue {
                    values: vec![av(V::IntValue(1)), av(s("a")), av(V::BoolValue(true)), av(V::DoubleValue(2.0))],
                }),
            ),
            kv(
                "map",
                V::KvlistValue(KeyValueList {
                    values: vec![kv("z", V::IntValue(1)), kv("a", s("x")), kv("b", V::BytesValue(vec![0xff]))],
                }),
            ),
            KeyValue { key: "unset".into(), value: None, ..KeyValue::default() },
        ],
        events: vec![
            span::Event {
                time_unix_nano: T0 + 3 * MS + 1_500,
                name: "retrying".into(),
                attributes: vec![kv("attempt", V::IntValue(2)), kv("backoff.s", V::DoubleValue(0.1))],
                dropped_attributes_count: 3,
            },
            // An `event` attribute wins over the name (specification, Events).
            span::Event {
                time_unix_nano: T0 + 4 * MS,
                name: "named".into(),
                attributes: vec![kv("event", s("from-attribute"))],
                dropped_attributes_count: 0,
            },
            span::Event {
                time_unix_nano: T0 + 5 * MS,
                name: String::new(),
                attributes: vec![kv("note", s("no name"))],
                dropped_attributes_count: 0,
            },
        ],
        links: vec![
            span::Link {
                trace_id: bytes(OTHER_TRACE),
                span_id: bytes("b7ad6b7169203331"),
                trace_state: "k=v".into(),
                attributes: vec![kv("link.reason", s("batch"))],
                dropped_attributes_count: 0,
                flags: 1,
            },
            span::Link {
                trace_id: bytes(TRACE_B),
                span_id: bytes("00f067aa0ba902b7"),
                attributes: vec![kv("opentracing.ref_type", s("child_of"))],
                ..span::Link::default()
            },
        ],
        dropped_attributes_count: 1,
        dropped_events_count: 2,
        dropped_links_count: 3,
        ..otlp_span(TRACE_A, "1000000000000001", None, "GET /users/{id}", 0, 10)
    };
    let client = Span {
        kind: kind::CLIENT,
        status: Some(Status { code: status::OK, message: String::new() }),
        flags: 1,
        ..otlp_span(TRACE_A, "1000000000000002", Some("1000000000000001"), "SELECT users", 1, 4)
    };
    let producer =
        Span { kind: kind::PRODUCER, ..otlp_span(TRACE_A, "1000000000000003", Some("1000000000000001"), "send", 4, 5) };
    let consumer = Span {
        kind: kind::CONSUMER,
        ..otlp_span(TRACE_A, "1000000000000004", Some("1000000000000003"), "receive", 5, 9)
    };
    let internal = Span {
        kind: kind::INTERNAL,
        ..otlp_span(TRACE_A, "1000000000000005", Some("1000000000000004"), "compute", 6, 8)
    };
    let unspecified = otlp_span(TRACE_B, "2000000000000001", None, "no kind, no resource", 0, 1);

    // Clock skew: the client measured the server's clock 5 ms ahead (rpc.call's offset);
    // the server's spans and their events move back by 5 ms. A third service under the
    // server, without a measured offset, ends 2.5 s after its parent: moved inside it.
    let skew_client = resource(vec![kv("service.name", s("client"))]);
    let skew_server = resource(vec![kv("service.name", s("server"))]);
    let skew_far = resource(vec![kv("service.name", s("far"))]);
    let call = Span {
        kind: kind::CLIENT,
        attributes: vec![kv("tracewire.clock.offset_us", V::IntValue(5000))],
        ..otlp_span(TRACE_SKEW, "3000000000000001", None, "rpc.call", 0, 10)
    };
    let dispatch = Span {
        kind: kind::SERVER,
        events: vec![span::Event { time_unix_nano: T0 + 7 * MS, name: "dispatched".into(), ..span::Event::default() }],
        ..otlp_span(TRACE_SKEW, "3000000000000002", Some("3000000000000001"), "rpc.dispatch", 6, 14)
    };
    let far = otlp_span(TRACE_SKEW, "3000000000000003", Some("3000000000000002"), "far.away", 2_510, 2_512);

    // A record without its OTLP form (tests, data stored before the lossless model).
    let legacy = SpanRecord {
        trace_id: "5b8efff798038103d269b633813fc60c".into(),
        span_id: "eee19b7ec3c1b174".into(),
        parent_id: None,
        name: "legacy".into(),
        service: "old".into(),
        start_ns: 1_700_000_000_123_456_789,
        end_ns: 1_700_000_000_124_000_000,
        attributes: BTreeMap::from([("k".into(), "v".into()), ("n".into(), "7".into())]),
        kind: kind::SERVER,
        status_code: status::ERROR,
        status_message: "it broke".into(),
        otlp: None,
    };

    vec![
        record(&api_h1, &scope, root),
        record(&api_h1, &scope, client),
        record(&api_h2, &scope, producer),
        record(&worker, &no_scope, consumer),
        record(&worker, &no_scope, internal),
        record(&anonymous, &no_scope, unspecified),
        record(&skew_client, &no_scope, call),
        record(&skew_server, &no_scope, dispatch),
        record(&skew_far, &no_scope, far),
        legacy,
    ]
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/jaeger.json")
}

/// Every difference between two JSON values, by path.
fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => diff(&format!("{path}.{k}"), wv, gv, out),
                    None => out.push(format!("{path}.{k}: missing (want {wv})")),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    out.push(format!("{path}.{k}: unexpected {gv}"));
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                diff(&format!("{path}[{i}]"), wv, gv, out);
            }
            if w.len() != g.len() {
                out.push(format!("{path}: {} elements, want {}", g.len(), w.len()));
            }
        }
        _ if want != got => out.push(format!("{path}: got {got}, want {want}")),
        _ => {}
    }
}

#[test]
fn the_export_matches_the_golden_file_field_by_field() {
    let got = to_jaeger(&spans());
    let path = golden_path();
    if std::env::var_os("TRACEWIRE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    diff("$", &want, &got, &mut out);
    assert!(out.is_empty(), "{} differences from {}:\n{}", out.len(), path.display(), out.join("\n"));
    let bad = check_loadable(&want);
    assert!(bad.is_empty(), "the golden file is not loadable:\n{}", bad.join("\n"));
}

fn find<'a>(j: &'a Value, span_id: &str) -> &'a Value {
    j["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["spans"].as_array().unwrap())
        .find(|s| s["spanID"] == span_id)
        .unwrap_or_else(|| panic!("no span {span_id}"))
}

fn tag<'a>(tags: &'a Value, key: &str) -> Option<&'a Value> {
    tags.as_array().unwrap().iter().find(|t| t["key"] == key)
}

fn process_of<'a>(j: &'a Value, span: &Value) -> &'a Value {
    let trace = j["data"].as_array().unwrap().iter().find(|t| t["traceID"] == span["traceID"]).unwrap();
    &trace["processes"][span["processID"].as_str().unwrap()]
}

#[test]
fn attributes_are_typed_tags_as_the_translator_writes_them() {
    let j = to_jaeger(&spans());
    let root = find(&j, "1000000000000001");
    let t = |k: &str| tag(&root["tags"], k).unwrap_or_else(|| panic!("no tag {k}")).clone();
    // from_domain.go convertKeyValues: type names lowercased, values by type.
    assert_eq!(t("http.route"), json!({"key": "http.route", "type": "string", "value": "/users/{id}"}));
    assert_eq!(t("cache.hit"), json!({"key": "cache.hit", "type": "bool", "value": true}));
    assert_eq!(
        t("http.response.status_code"),
        json!({"key": "http.response.status_code", "type": "int64", "value": 500})
    );
    // Beyond JavaScript's safe integers, the value is a decimal string (jsMaxSafeInteger).
    assert_eq!(t("big"), json!({"key": "big", "type": "int64", "value": "1152921504606846976"}));
    assert_eq!(t("negative.big")["value"], "-1152921504606846976");
    assert_eq!(t("ratio"), json!({"key": "ratio", "type": "float64", "value": 0.5}));
    assert_eq!(t("nan")["value"], "NaN");
    assert_eq!(t("inf")["value"], "Infinity");
    // Bytes: Go's encoding/json writes []byte as standard base64.
    assert_eq!(t("blob"), json!({"key": "blob", "type": "binary", "value": "AAAwOQ=="}));
    // Arrays and maps: a string tag holding the value's JSON (attributeToJaegerProtoTag).
    assert_eq!(t("list"), json!({"key": "list", "type": "string", "value": "[1,\"a\",true,2]"}));
    assert_eq!(t("map")["value"], "{\"a\":\"x\",\"b\":\"/w==\",\"z\":1}");
}

#[test]
fn kind_status_scope_tracestate_and_dropped_counts_are_tags() {
    let j = to_jaeger(&spans());
    let root = find(&j, "1000000000000001");
    let tags = &root["tags"];
    let value = |k: &str| tag(tags, k).map(|t| t["value"].clone());
    let keys: Vec<&str> = tags.as_array().unwrap().iter().map(|t| t["key"].as_str().unwrap()).collect();
    // getJaegerProtoSpanTags's order: scope, attributes, kind, status code, error, description,
    // tracestate; then the counts the specification adds (mapping-to-non-otlp.md).
    assert_eq!(
        &keys[..5],
        ["otel.scope.name", "otel.library.name", "otel.scope.version", "otel.library.version", "scope.attr"]
    );
    assert_eq!(
        &keys[keys.len() - 8..],
        [
            "span.kind",
            "otel.status_code",
            "error",
            "otel.status_description",
            "w3c.tracestate",
            "otel.dropped_attributes_count",
            "otel.dropped_events_count",
            "otel.dropped_links_count"
        ]
    );
    assert_eq!(value("otel.scope.name"), Some(json!("io.tracewire.test")));
    assert_eq!(value("otel.scope.version"), Some(json!("1.2.3")));
    assert_eq!(value("span.kind"), Some(json!("server")));
    assert_eq!(value("otel.status_code"), Some(json!("ERROR")));
    // jaeger.md, Error flag: status ERROR adds `error` = true (bool).
    assert_eq!(tag(tags, "error").unwrap()["type"], "bool");
    assert_eq!(value("error"), Some(json!(true)));
    assert_eq!(value("otel.status_description"), Some(json!("boom")));
    assert_eq!(value("w3c.tracestate"), Some(json!("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")));
    assert_eq!(value("otel.dropped_attributes_count"), Some(json!(1)));
    assert_eq!(value("otel.dropped_events_count"), Some(json!(2)));
    assert_eq!(value("otel.dropped_links_count"), Some(json!(3)));
    assert_eq!(root["flags"], 1, "sampled");

    let kind_of = |id: &str| tag(&find(&j, id)["tags"], "span.kind").map(|t| t["value"].clone());
    assert_eq!(kind_of("1000000000000002"), Some(json!("client")));
    assert_eq!(kind_of("1000000000000003"), Some(json!("producer")));
    assert_eq!(kind_of("1000000000000004"), Some(json!("consumer")));
    assert_eq!(kind_of("1000000000000005"), Some(json!("internal")));
    assert_eq!(kind_of("2000000000000001"), None, "SPAN_KIND_UNSPECIFIED has no tag");
    let client = find(&j, "1000000000000002");
    assert_eq!(tag(&client["tags"], "otel.status_code").unwrap()["value"], "OK");
    assert!(tag(&client["tags"], "error").is_none() && tag(&client["tags"], "otel.status_description").is_none());
    let consumer = find(&j, "1000000000000004");
    assert!(tag(&consumer["tags"], "otel.status_code").is_none(), "UNSET is not reported");
    assert!(tag(&consumer["tags"], "otel.scope.name").is_none(), "no scope name, no tag");
    assert!(consumer.get("flags").is_none(), "flags 0 is omitted (omitempty)");
}

#[test]
fn events_are_logs_and_links_are_references_after_the_parent() {
    let j = to_jaeger(&spans());
    let root = find(&j, "1000000000000001");
    let logs = root["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 3);
    // Microseconds, truncated (model.TimeAsEpochMicroseconds).
    assert_eq!(logs[0]["timestamp"], json!((T0 + 3 * MS + 1_500) / 1000));
    assert_eq!(
        logs[0]["fields"],
        json!([
            {"key": "event", "type": "string", "value": "retrying"},
            {"key": "attempt", "type": "int64", "value": 2},
            {"key": "backoff.s", "type": "float64", "value": 0.1},
            {"key": "otel.dropped_attributes_count", "type": "int64", "value": 3},
        ])
    );
    assert_eq!(logs[1]["fields"], json!([{"key": "event", "type": "string", "value": "from-attribute"}]));
    assert_eq!(logs[2]["fields"], json!([{"key": "note", "type": "string", "value": "no name"}]));

    assert_eq!(
        root["references"],
        json!([
            {"refType": "FOLLOWS_FROM", "traceID": OTHER_TRACE, "spanID": "b7ad6b7169203331"},
            {"refType": "CHILD_OF", "traceID": "8448eb211c80319c", "spanID": "00f067aa0ba902b7"},
        ]),
        "a root: links only, FOLLOWS_FROM unless the link says child_of"
    );
    let client = find(&j, "1000000000000002");
    assert_eq!(
        client["references"],
        json!([{"refType": "CHILD_OF", "traceID": TRACE_A, "spanID": "1000000000000001"}])
    );
    let b = find(&j, "2000000000000001");
    assert_eq!(b["traceID"], "8448eb211c80319c", "model.TraceID.String(): High == 0 gives 16 digits");
}

#[test]
fn a_link_to_the_parent_sets_the_parent_references_type() {
    let res = resource(vec![kv("service.name", s("svc"))]);
    let scope = Arc::new(InstrumentationScope::default());
    let parent = otlp_span(TRACE_A, "1000000000000001", None, "p", 0, 10);
    let child = Span {
        links: vec![span::Link {
            trace_id: bytes(TRACE_A),
            span_id: bytes("1000000000000001"),
            attributes: vec![kv("opentracing.ref_type", s("follows_from"))],
            ..span::Link::default()
        }],
        ..otlp_span(TRACE_A, "1000000000000002", Some("1000000000000001"), "c", 1, 2)
    };
    let j = to_jaeger(&[record(&res, &scope, parent), record(&res, &scope, child)]);
    assert_eq!(
        find(&j, "1000000000000002")["references"],
        json!([{"refType": "FOLLOWS_FROM", "traceID": TRACE_A, "spanID": "1000000000000001"}])
    );
}

#[test]
fn one_process_per_distinct_resource_with_its_attributes_as_tags() {
    let j = to_jaeger(&spans());
    let a = j["data"].as_array().unwrap().iter().find(|t| t["traceID"] == TRACE_A).unwrap();
    let processes = a["processes"].as_object().unwrap();
    assert_eq!(processes.len(), 3, "api@h1, api@h2, worker: {processes:?}");
    let (root, client, producer) =
        (find(&j, "1000000000000001"), find(&j, "1000000000000002"), find(&j, "1000000000000003"));
    assert_eq!(root["processID"], client["processID"], "one resource, one process");
    assert_ne!(root["processID"], producer["processID"], "same service.name, another host.name");
    let p = process_of(&j, root);
    assert_eq!(
        *p,
        json!({"serviceName": "api", "tags": [
            {"key": "host.name", "type": "string", "value": "h1"},
            {"key": "process.pid", "type": "int64", "value": 4242},
            {"key": "container.privileged", "type": "bool", "value": false},
            {"key": "host.load", "type": "float64", "value": 0.25},
            {"key": "otel.dropped_attributes_count", "type": "int64", "value": 1},
        ]}),
        "service.name is serviceName, not a tag"
    );
    assert_eq!(process_of(&j, producer)["serviceName"], "api");
    let b = find(&j, "2000000000000001");
    assert_eq!(process_of(&j, b)["serviceName"], "OTLPResourceNoServiceName");
}

#[test]
fn a_record_without_otlp_renders_from_its_fields() {
    let j = to_jaeger(&spans());
    let legacy = find(&j, "eee19b7ec3c1b174");
    assert_eq!((legacy["startTime"].as_u64(), legacy["duration"].as_u64()), (Some(1_700_000_000_123_456), Some(543)));
    assert_eq!(
        legacy["tags"],
        json!([
            {"key": "k", "type": "string", "value": "v"},
            {"key": "n", "type": "string", "value": "7"},
            {"key": "span.kind", "type": "string", "value": "server"},
            {"key": "otel.status_code", "type": "string", "value": "ERROR"},
            {"key": "error", "type": "bool", "value": true},
            {"key": "otel.status_description", "type": "string", "value": "it broke"},
        ])
    );
    assert_eq!(process_of(&j, legacy)["serviceName"], "old");
    assert_eq!(legacy["logs"], json!([]));
    assert_eq!(legacy["references"], json!([]));
}

#[test]
fn skew_corrected_spans_are_exported_corrected_with_a_warning() {
    let records = spans();
    let j = to_jaeger(&records);
    let (call, dispatch, far) =
        (find(&j, "3000000000000001"), find(&j, "3000000000000002"), find(&j, "3000000000000003"));
    let us = |ms: u64| json!((T0 + ms * MS) / 1000);
    assert_eq!((&call["startTime"], &call["warnings"]), (&us(0), &Value::Null), "the client's clock is the reference");
    // Recorded 6..14 ms in a clock 5 ms ahead: 1..9 ms, its event with it.
    assert_eq!((&dispatch["startTime"], dispatch["duration"].as_u64()), (&us(1), Some(8_000)));
    assert_eq!(dispatch["logs"][0]["timestamp"], us(2));
    // clockskew.go: "This span's timestamps were adjusted by %v" (a Go time.Duration).
    assert_eq!(dispatch["warnings"], json!(["This span's timestamps were adjusted by -5ms"]));
    // Its parent now ends at 9 ms: 2512 - 9 = 2503 ms back, ending with it.
    assert_eq!(far["startTime"], us(7));
    assert_eq!(far["warnings"], json!(["This span's timestamps were adjusted by -2.503s"]));
    for id in ["1000000000000001", "eee19b7ec3c1b174"] {
        assert_eq!(find(&j, id)["warnings"], Value::Null, "spans left in place say nothing");
    }
    // The export shows the times the analysis works on: what correct_skew made of them.
    let mut corrected: Vec<SpanRecord> = records.into_iter().filter(|r| r.trace_id == TRACE_SKEW).collect();
    let moved = correct_skew(&mut corrected);
    assert_eq!(moved, [(1, -5 * 1_000_000), (2, -2_503 * 1_000_000)]);
    for (r, i) in corrected.iter().zip(0..) {
        let exported = find(&j, &r.span_id);
        assert_eq!(exported["startTime"], json!(r.start_ns / 1000), "span {i}");
    }
    // Nothing is lost: a reader takes the warning's shift back to get the recorded times.
    let warning = dispatch["warnings"][0].as_str().unwrap();
    let recorded_us = dispatch["startTime"].as_i64().unwrap() - skew_adjustment(warning).unwrap() / 1000;
    assert_eq!(recorded_us, i64::try_from((T0 + 6 * MS) / 1000).unwrap());
}

/// What the Jaeger UI's loader reads of a trace (FileLoader.tsx's `loadTracesFromFile`, then
/// transform-trace-data.ts): `data` an array of traces with a `traceID`, spans whose
/// `processID` names an entry of `processes` (else "unknown-service"), `references` whose
/// `refType` is CHILD_OF or FOLLOWS_FROM and whose `spanID` it looks up, integer
/// microsecond `startTime` (0 or missing is "no usable startTime") and `duration`, `tags`,
/// `logs` with `fields`, and per tag a `type` its `value` has (from_domain.go).
fn check_loadable(j: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let hex = |v: &Value, len: &[usize]| {
        v.as_str().is_some_and(|s| {
            len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
    };
    let check_kvs = |what: &str, kvs: &Value, bad: &mut Vec<String>| {
        let Some(kvs) = kvs.as_array() else {
            bad.push(format!("{what}: not an array"));
            return;
        };
        for kv in kvs {
            let (ty, v) = (kv["type"].as_str().unwrap_or(""), &kv["value"]);
            let ok = kv["key"].is_string()
                && match ty {
                    "string" => v.is_string(),
                    "bool" => v.is_boolean(),
                    "int64" => {
                        v.is_i64()
                            || v.as_str()
                                .is_some_and(|s| s.parse::<i64>().is_ok_and(|i| i.unsigned_abs() > (1 << 53) - 1))
                    }
                    "float64" => {
                        v.is_f64()
                            || v.is_i64()
                            || v.is_u64()
                            || matches!(v.as_str(), Some("NaN" | "Infinity" | "-Infinity"))
                    }
                    "binary" => v.as_str().is_some_and(|s| {
                        s.len() % 4 == 0 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
                    }),
                    _ => false,
                };
            if !ok {
                bad.push(format!("{what}: {kv}"));
            }
        }
    };
    let Some(traces) = j["data"].as_array() else { return vec!["data is not an array".into()] };
    for t in traces {
        let id = &t["traceID"];
        if !hex(id, &[16, 32]) {
            bad.push(format!("traceID {id}"));
        }
        let Some(processes) = t["processes"].as_object() else {
            bad.push(format!("{id}: processes is not an object"));
            continue;
        };
        for (pid, p) in processes {
            if !p["serviceName"].is_string() {
                bad.push(format!("{id} {pid}: serviceName"));
            }
            check_kvs(&format!("{id} {pid} tags"), &p["tags"], &mut bad);
        }
        for s in t["spans"].as_array().into_iter().flatten() {
            let sid = s["spanID"].clone();
            let at = format!("{id}/{sid}");
            if s["traceID"] != *id || !hex(&sid, &[16]) || !s["operationName"].is_string() {
                bad.push(format!("{at}: ids or operationName"));
            }
            if !s["processID"].as_str().is_some_and(|p| processes.contains_key(p)) {
                bad.push(format!("{at}: processID {} not in processes", s["processID"]));
            }
            if s["startTime"].as_u64().is_none_or(|t| t == 0) || !s["duration"].is_u64() {
                bad.push(format!("{at}: startTime/duration not integer microseconds"));
            }
            match s["references"].as_array() {
                Some(refs) => {
                    for r in refs {
                        if !matches!(r["refType"].as_str(), Some("CHILD_OF" | "FOLLOWS_FROM"))
                            || !hex(&r["traceID"], &[16, 32])
                            || !hex(&r["spanID"], &[16])
                        {
                            bad.push(format!("{at}: reference {r}"));
                        }
                    }
                }
                None => bad.push(format!("{at}: references is not an array")),
            }
            check_kvs(&format!("{at} tags"), &s["tags"], &mut bad);
            match s["logs"].as_array() {
                Some(logs) => {
                    for l in logs {
                        if !l["timestamp"].is_u64() {
                            bad.push(format!("{at}: log timestamp {}", l["timestamp"]));
                        }
                        check_kvs(&format!("{at} log fields"), &l["fields"], &mut bad);
                    }
                }
                None => bad.push(format!("{at}: logs is not an array")),
            }
            if !(s["warnings"].is_null() || s["warnings"].as_array().is_some_and(|w| w.iter().all(Value::is_string))) {
                bad.push(format!("{at}: warnings {}", s["warnings"]));
            }
        }
    }
    bad
}

#[test]
fn every_exported_span_satisfies_the_jaeger_ui_loader() {
    let j = to_jaeger(&spans());
    let bad = check_loadable(&j);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    assert_eq!(j["data"].as_array().unwrap().len(), 4);
    assert_eq!(j["data"].as_array().unwrap().iter().map(|t| t["spans"].as_array().unwrap().len()).sum::<usize>(), 10);
    // The checker catches what the loader would trip on.
    let mut broken = j.clone();
    broken["data"][0]["spans"][0]["processID"] = json!("p99");
    broken["data"][0]["spans"][1]["startTime"] = json!(1.5);
    broken["data"][0]["spans"][1]["tags"][0]["type"] = json!("int64");
    broken["data"][1]["spans"][0]["references"] = Value::Null;
    assert_eq!(check_loadable(&broken).len(), 4, "{:?}", check_loadable(&broken));
}
