//! Jaeger JSON: the format the Jaeger UI opens through its JSON-file upload
//! (`{"data":[{"traceID","spans":[...],"processes":{...}}]}`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::SpanRecord;
use crate::analysis::by_trace;

/// The traces in Jaeger's JSON format: one entry per trace, one process per service,
/// `CHILD_OF` references to parents, times in microseconds, attributes as string tags.
///
/// ```
/// use tracewire_collector::{jaeger::to_jaeger, SpanRecord};
///
/// let s = SpanRecord { trace_id: "ab".into(), span_id: "01".into(), name: "exec".into(),
///     service: "client".into(), start_ns: 2_000, end_ns: 5_000, ..Default::default() };
/// let j = to_jaeger(&[s]);
/// assert_eq!(j["data"][0]["spans"][0]["duration"], 3);
/// assert_eq!(j["data"][0]["processes"]["p1"]["serviceName"], "client");
/// ```
pub fn to_jaeger(spans: &[SpanRecord]) -> Value {
    let data: Vec<Value> = by_trace(spans)
        .into_iter()
        .map(|trace| {
            let mut processes: BTreeMap<String, String> = BTreeMap::new();
            for s in &trace {
                let n = processes.len() + 1;
                processes.entry(s.service.clone()).or_insert_with(|| format!("p{n}"));
            }
            let spans: Vec<Value> = trace
                .iter()
                .map(|s| {
                    let references: Vec<Value> = s
                        .parent_id
                        .iter()
                        .map(|p| json!({"refType": "CHILD_OF", "traceID": s.trace_id, "spanID": p}))
                        .collect();
                    let tags: Vec<Value> =
                        s.attributes.iter().map(|(k, v)| json!({"key": k, "type": "string", "value": v})).collect();
                    json!({
                        "traceID": s.trace_id,
                        "spanID": s.span_id,
                        "operationName": s.name,
                        "references": references,
                        "startTime": s.start_ns / 1000,
                        "duration": s.duration_ns() / 1000,
                        "tags": tags,
                        "logs": [],
                        "processID": processes.get(&s.service).cloned().unwrap_or_default(),
                        "warnings": null,
                    })
                })
                .collect();
            let processes: serde_json::Map<String, Value> = processes
                .into_iter()
                .map(|(service, id)| (id, json!({"serviceName": service, "tags": []})))
                .collect();
            json!({"traceID": trace.first().map(|s| s.trace_id.clone()).unwrap_or_default(), "spans": spans, "processes": processes, "warnings": null})
        })
        .collect();
    json!({"data": data, "total": 0, "limit": 0, "offset": 0, "errors": null})
}
