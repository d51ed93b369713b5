//! OTLP JSON and Jaeger JSON files are read piece by piece: JSON lines a line at a time, a
//! long or pretty-printed OTLP request a `resourceSpans` element at a time, Jaeger JSON a
//! trace at a time, so memory holds one piece, never the file. What is handed on equals
//! what reading the whole file gives, and errors point at the line (and column) of the
//! fault in the file.

use std::cell::Cell;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::Path;
use std::rc::Rc;

use tracewire_collector::input::{
    InputError, LINE_BYTES, parse_jaeger_json, parse_otlp_json, stream_jaeger_json_from, stream_otlp_json_from,
};
use tracewire_collector::{SpanRecord, jaeger, otlp_json};
use tracewire_store::to_request;

/// `traces` traces of `per` spans each, with a few attributes (a few hundred bytes a span).
fn spans(traces: u32, per: u32) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for t in 0..traces {
        for s in 0..per {
            out.push(SpanRecord {
                trace_id: format!("{:032x}", 0xabc0_0000_u64 + u64::from(t)),
                span_id: format!("{t:08x}{s:08x}"),
                parent_id: (s > 0).then(|| format!("{t:08x}{:08x}", 0)),
                name: if s == 0 { "exec".into() } else { "rpc.dispatch".into() },
                service: "api".into(),
                start_ns: 1_000_000 + i64::from(s) * 1_000,
                end_ns: 2_000_000 + i64::from(s) * 1_000,
                attributes: [("tracewire.stage".to_owned(), "rpc.dispatch".to_owned())].into(),
                ..SpanRecord::default()
            });
        }
    }
    out
}

/// A reader that counts the bytes taken from it.
struct Counted<R> {
    inner: R,
    taken: Rc<Cell<usize>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken.set(self.taken.get() + n);
        Ok(n)
    }
}

/// What the readers hand their pieces to.
type Each<'a> = &'a mut dyn FnMut(Vec<SpanRecord>) -> ControlFlow<()>;
/// A reader under test.
type Stream = fn(Counted<&[u8]>, &Path, Each<'_>) -> Result<usize, InputError>;

/// Streams `bytes` with `stream`, and returns the pieces with the bytes taken from the
/// reader when each was handed on.
fn pieces(bytes: &[u8], stream: Stream) -> Vec<(Vec<SpanRecord>, usize)> {
    let taken = Rc::new(Cell::new(0));
    let reader = Counted { inner: bytes, taken: Rc::clone(&taken) };
    let mut out = Vec::new();
    let n = stream(reader, Path::new("t.json"), &mut |spans| {
        out.push((spans, taken.get()));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(n, out.iter().map(|(p, _)| p.len()).sum::<usize>());
    out
}

fn otlp(r: Counted<&[u8]>, name: &Path, each: Each<'_>) -> Result<usize, InputError> {
    stream_otlp_json_from(r, name, each)
}

fn jaeger_(r: Counted<&[u8]>, name: &Path, each: Each<'_>) -> Result<usize, InputError> {
    stream_jaeger_json_from(r, name, each)
}

/// The bytes read when the first piece was handed on are a small part of the file.
fn assert_streamed(got: &[(Vec<SpanRecord>, usize)], total: usize) {
    assert!(got.len() > 10, "{} pieces", got.len());
    let first = got[0].1;
    assert!(first < total / 4, "{first} of {total} bytes read before the first spans were handed on");
}

#[test]
fn json_lines_are_handed_on_a_line_at_a_time() {
    let records = spans(200, 10);
    let mut file = Vec::new();
    assert_eq!(otlp_json::write_lines_per(&records, &mut file, 20).unwrap(), 100);
    let got = pieces(&file, otlp);
    assert_eq!(got.len(), 100, "one piece a line");
    assert_streamed(&got, file.len());
    let all: Vec<SpanRecord> = got.into_iter().flat_map(|(p, _)| p).collect();
    assert_eq!(all, parse_otlp_json(&file, Path::new("t.jsonl")).unwrap());
    assert_eq!(all.len(), records.len());
    // gzip: the same spans, read as they are inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &file).unwrap();
    let gz = gz.finish().unwrap();
    let from_gz = pieces(&gz, otlp);
    assert_eq!(from_gz.len(), 100);
    assert_eq!(from_gz.into_iter().flat_map(|(p, _)| p).collect::<Vec<_>>(), all);
}

/// One request in one document: over several lines (pretty-printed), or on one line longer
/// than `LINE_BYTES`, it is read a `resourceSpans` element at a time.
#[test]
fn a_long_request_is_handed_on_a_resource_at_a_time() {
    // 300 resources (services) of 10 spans each, in one request.
    let mut records = spans(300, 10);
    for (i, r) in records.iter_mut().enumerate() {
        r.service = format!("svc-{}", i / 10);
    }
    let request = to_request(&records);
    assert_eq!(request.resource_spans.len(), 300);
    let compact = otlp_json::encode(&request);
    let pretty = serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&compact).unwrap()).unwrap();
    // A compact one over LINE_BYTES: pad it with an unknown field (ignored, as the
    // specification requires).
    let long = format!(r#"{{"padding":"{}",{}"#, "x".repeat(LINE_BYTES), &compact[1..]);
    let whole = parse_otlp_json(compact.as_bytes(), Path::new("t.json")).unwrap();
    assert_eq!(whole.len(), 3000);
    for doc in [&pretty, &long] {
        let got = pieces(doc.as_bytes(), otlp);
        assert_eq!(got.len(), 300, "one piece a resource");
        if doc == &pretty {
            assert_streamed(&got, doc.len());
        }
        assert_eq!(got.into_iter().flat_map(|(p, _)| p).collect::<Vec<_>>(), whole);
        assert_eq!(parse_otlp_json(doc.as_bytes(), Path::new("t.json")).unwrap(), whole);
    }
}

#[test]
fn jaeger_json_is_handed_on_a_trace_at_a_time() {
    let records = spans(200, 10);
    let doc = serde_json::to_string_pretty(&jaeger::to_jaeger(&records)).unwrap();
    let whole = parse_jaeger_json(doc.as_bytes(), Path::new("t.json")).unwrap();
    assert_eq!(whole.len(), 2000);
    let compact = serde_json::to_string(&jaeger::to_jaeger(&records)).unwrap();
    let long = format!(r#"{{"padding":"{}",{}"#, "x".repeat(LINE_BYTES), &compact[1..]);
    let array = format!("[\n{}\n]", {
        let v: serde_json::Value = serde_json::from_str(&compact).unwrap();
        v["data"].as_array().unwrap().iter().map(ToString::to_string).collect::<Vec<_>>().join(",\n")
    });
    for (name, doc) in [("pretty", &doc), ("long", &long), ("array", &array)] {
        let got = pieces(doc.as_bytes(), jaeger_);
        assert_eq!(got.len(), 200, "{name}: one piece a trace");
        for (trace, _) in &got {
            assert!(trace.iter().all(|s| s.trace_id == trace[0].trace_id), "{name}");
        }
        if name != "long" {
            assert_streamed(&got, doc.len());
        }
        assert_eq!(got.into_iter().flat_map(|(p, _)| p).collect::<Vec<_>>(), whole, "{name}");
    }
}

#[test]
fn breaking_stops_the_reading() {
    let mut file = Vec::new();
    otlp_json::write_lines_per(&spans(200, 10), &mut file, 20).unwrap();
    let taken = Rc::new(Cell::new(0));
    let mut calls = 0;
    let n = stream_otlp_json_from(Counted { inner: &file[..], taken: Rc::clone(&taken) }, Path::new("t"), |_| {
        calls += 1;
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!((calls, n), (1, 20));
    assert!(taken.get() < file.len() / 4, "{} of {}", taken.get(), file.len());
}

/// Errors point at the line of the fault in the file, whichever way the value was read:
/// the line where the faulty request starts (with the field), or, for JSON that does not
/// parse, the line and column of the fault.
#[test]
fn errors_give_the_line_of_the_fault_in_the_file() {
    let err = |text: &str| parse_otlp_json(text.as_bytes(), Path::new("in.jsonl")).unwrap_err().to_string();
    let ok = r#"{"resourceSpans":[]}"#;
    let bad_id = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"0g"}]}]}]}"#;
    let lines = |bad: &str| format!("{ok}\n{ok}\n\n{ok}\n{bad}\n{ok}\n");
    assert_eq!(
        err(&lines(bad_id)),
        r#"in.jsonl:5: resourceSpans[0].scopeSpans[0].spans[0].spanId: "0g" is not a hex id"#
    );
    assert_eq!(err(&lines(r#"{"resourceSpans":[}"#)), "in.jsonl: not valid JSON: expected value at line 5 column 19");
    assert_eq!(err(&format!("{ok}\n  {ok} x")), "in.jsonl: not valid JSON: expected value at line 2 column 24");
    // A value over several lines (read piece by piece): the line where it starts, the
    // line and column of a syntax error.
    let pretty = format!("{ok}\n{{\n  \"resourceSpans\": [\n    {{}},\n    {{\"scopeSpans\": 7}}\n  ]\n}}\n");
    assert_eq!(err(&pretty), "in.jsonl:2: resourceSpans[1].scopeSpans: expected an array, found a number");
    let broken = format!("{ok}\n{{\n  \"resourceSpans\": [\n    {{}},\n    {{\"scopeSpans\": ]\n  ]\n}}\n");
    assert_eq!(err(&broken), "in.jsonl: not valid JSON: expected value at line 5 column 20");
    assert_eq!(err("{\n\"resourceSpans\": 7\n}"), "in.jsonl:1: resourceSpans: expected an array, found a number");
    assert_eq!(err("{\n\"resourceLogs\": []\n}"), "in.jsonl:1: this is OTLP JSON logs, not OTLP JSON traces");
    assert_eq!(err("[\n1]"), "in.jsonl:1: $: expected an object, found an array");
    // A truncated file: where it ends.
    assert_eq!(
        err(&format!("{ok}\n{}", &bad_id[..30])),
        "in.jsonl: not valid JSON: EOF while parsing a string at line 2 column 30"
    );

    let jerr = |text: &str| parse_jaeger_json(text.as_bytes(), Path::new("j.json")).unwrap_err().to_string();
    assert_eq!(
        jerr("{\"data\": [\n{\"spans\": []},\n{\"traceID\": \"zz\"}\n]}"),
        r#"j.json:1: data[1].traceID: "zz" is not a hex id"#
    );
    assert_eq!(
        jerr("{\"data\": [\n{},\n{\"traceID\": \n]}"),
        "j.json: not valid JSON: expected value at line 4 column 1"
    );
    assert_eq!(jerr("{\n\"data\": 3}"), "j.json:1: data: expected an array, found a number");
    assert_eq!(jerr("{\n\"resourceSpans\": []}"), "j.json:1: this is OTLP JSON, not Jaeger JSON");
}
