//! The W3C Trace Context test-suite service (`examples/w3c_service.rs`), run as a real
//! process and driven over raw HTTP/1.1, with cases taken from the Level 2 specification
//! (<https://www.w3.org/TR/trace-context-2/>, sections "traceparent Header",
//! "tracestate Header", "Mutating the traceparent/tracestate Field") and the shape of the
//! W3C test harness (`test/test.py` of w3c/trace-context): a request to `/test` with some
//! headers and N callbacks; the harness reads the headers each callback carries.
//!
//! Tracestate keys follow the Level 2 grammar (`key = (lcalpha / DIGIT) 0*255(keychar)`,
//! `@` allowed anywhere): the harness's older multi-tenant key cases (`t@` + 15 characters,
//! `foo@@bar`) are valid keys under Level 2 and are not asserted here.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracewire_testkit::{HttpStub, Rotel, StubRequest, free_port};

mod common;
use common::Listening;

/// `target/<profile>/examples/<name>`, built by `cargo test` alongside this test.
fn example(name: &str) -> PathBuf {
    tracewire_testkit::example_binary(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The service under test, stopped by its own pid when dropped.
type Service = Listening;

/// Starts the service with `env` added to its environment.
fn start_service(env: &[(&str, String)]) -> Service {
    let mut cmd = Command::new(example("w3c_service"));
    cmd.args(["--port", "0"]).stderr(Stdio::inherit());
    // Nothing listens there: exporting fails, is counted, and must change nothing.
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", free_port()));
    cmd.env("TRACEWIRE_SHUTDOWN_TIMEOUT_MS", "500");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Listening::spawn(&mut cmd)
}

/// One request as the callback server received it: header names as sent, in order.
type Received = StubRequest;

/// What the harness checks of a callback's headers.
trait Callback {
    fn traceparent(&self) -> Traceparent;
    fn tracestate(&self) -> Option<String>;
}

impl Callback for Received {
    /// The one traceparent (asserted to be exactly one, version 00, well formed).
    fn traceparent(&self) -> Traceparent {
        let all = self.header_values("traceparent");
        assert_eq!(all.len(), 1, "exactly one traceparent expected: {:?}", self.headers);
        let v = all[0];
        let parts: Vec<&str> = v.split('-').collect();
        assert_eq!(parts.len(), 4, "{v}");
        let hex =
            |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        assert!(parts[0] == "00" && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2), "{v}");
        assert_ne!(parts[1], "0".repeat(32), "{v}");
        assert_ne!(parts[2], "0".repeat(16), "{v}");
        Traceparent { trace_id: parts[1].to_owned(), parent_id: parts[2].to_owned(), flags: parts[3].to_owned() }
    }

    /// The tracestate sent (at most one header; an empty one counts as none).
    fn tracestate(&self) -> Option<String> {
        let all = self.header_values("tracestate");
        assert!(all.len() <= 1, "at most one tracestate expected: {:?}", self.headers);
        all.first().map(|s| (*s).to_owned()).filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Traceparent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

/// A loopback HTTP/1.1 server recording every request, answering 200 after `delay`.
struct Harness(HttpStub);

impl Harness {
    fn start(delay: Duration) -> Self {
        Self(HttpStub::start(delay, "text/plain", b"ok").unwrap())
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    fn take(&self) -> Vec<Received> {
        self.0.take()
    }
}

/// Sends `POST /test` with exactly these header lines (names and values as given).
fn post_raw(service: &Service, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(&service.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "POST /test HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        service.addr,
        body.len()
    );
    for (k, v) in headers {
        req.extend([*k, ": ", *v, "\r\n"]);
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn callbacks_body(harness: &Harness, n: usize) -> String {
    let items: Vec<String> =
        (0..n).map(|i| format!(r#"{{"url": "{}", "arguments": []}}"#, harness.url(&i.to_string()))).collect();
    format!("[{}]", items.join(","))
}

/// One harness round: headers in, `n` callbacks out (in order).
fn round(service: &Service, harness: &Harness, headers: &[(&str, &str)], n: usize) -> Vec<Received> {
    let (status, body) = post_raw(service, headers, &callbacks_body(harness, n));
    assert_eq!(status, 200, "{body}");
    let got = harness.take();
    assert_eq!(
        got.iter().map(|r| r.path.clone()).collect::<Vec<_>>(),
        (0..n).map(|i| format!("/{i}")).collect::<Vec<_>>()
    );
    got
}

fn single(service: &Service, harness: &Harness, headers: &[(&str, &str)]) -> (Traceparent, Option<String>) {
    let r = round(service, harness, headers, 1).remove(0);
    (r.traceparent(), r.tracestate())
}

const TRACE: &str = "12345678901234567890123456789012";
const PARENT: &str = "1234567890123456";
const VALID: &str = "00-12345678901234567890123456789012-1234567890123456-01";
const VALID_UNSAMPLED: &str = "00-12345678901234567890123456789012-1234567890123456-00";

fn setup() -> (Service, Harness) {
    (start_service(&[]), Harness::start(Duration::ZERO))
}

#[test]
fn a_valid_traceparent_is_continued_with_a_new_parent_id_for_each_callback() {
    let (service, harness) = setup();
    let got = round(&service, &harness, &[("traceparent", VALID)], 3);
    let tps: Vec<Traceparent> = got.iter().map(Received::traceparent).collect();
    assert!(tps.iter().all(|t| t.trace_id == TRACE && t.flags == "01"), "{tps:?}");
    let parents: HashSet<&str> = tps.iter().map(|t| t.parent_id.as_str()).collect();
    assert_eq!(parents.len(), 3, "{tps:?}");
    assert!(!parents.contains(PARENT));
    // No tracestate received, none sent.
    assert!(got.iter().all(|r| r.tracestate().is_none()));
}

#[test]
fn without_a_traceparent_a_new_trace_is_started_and_each_callback_has_its_own_parent_id() {
    let (service, harness) = setup();
    let got = round(&service, &harness, &[], 3);
    let tps: Vec<Traceparent> = got.iter().map(Received::traceparent).collect();
    assert_eq!(tps.iter().map(|t| &t.trace_id).collect::<HashSet<_>>().len(), 1, "one new trace: {tps:?}");
    assert_eq!(tps.iter().map(|t| &t.parent_id).collect::<HashSet<_>>().len(), 3, "{tps:?}");
    assert!(got.iter().all(|r| r.tracestate().is_none()));
}

#[test]
fn the_sampled_flag_is_propagated_and_unknown_flags_are_not() {
    let (service, harness) = setup();
    for (incoming, outgoing) in [("00", "00"), ("01", "01"), ("02", "02"), ("03", "03"), ("09", "01"), ("fe", "02")] {
        let tp = format!("00-{TRACE}-{PARENT}-{incoming}");
        let (got, _) = single(&service, &harness, &[("traceparent", &tp)]);
        assert_eq!(got.trace_id, TRACE, "{tp}");
        assert_eq!(got.flags, outgoing, "flags of {tp}");
    }
}

#[test]
fn header_names_in_any_case_and_optional_whitespace_are_accepted() {
    let (service, harness) = setup();
    for name in ["TraceParent", "TrAcEpArEnT", "TRACEPARENT"] {
        let (tp, ts) = single(&service, &harness, &[(name, VALID_UNSAMPLED), ("TrAcEsTaTe", "foo=1")]);
        assert_eq!(tp.trace_id, TRACE, "{name}");
        assert_eq!(ts.as_deref(), Some("foo=1"), "{name}");
    }
    for value in
        [format!(" {VALID}"), format!("\t{VALID}"), format!("{VALID} "), format!("{VALID}\t"), format!("\t {VALID} \t")]
    {
        let (tp, _) = single(&service, &harness, &[("traceparent", &value)]);
        assert_eq!(tp.trace_id, TRACE, "{value:?}");
    }
}

#[test]
fn invalid_traceparents_start_a_new_trace_and_drop_the_tracestate() {
    let (service, harness) = setup();
    let z32 = "0".repeat(32);
    let cases: Vec<(String, String)> = vec![
        // Version: ff is forbidden; two lowercase hex digits.
        ("traceparent".into(), format!("ff-{TRACE}-{PARENT}-01")),
        ("traceparent".into(), format!(".0-{TRACE}-{PARENT}-01")),
        ("traceparent".into(), format!("0.-{TRACE}-{PARENT}-01")),
        ("traceparent".into(), format!("000-{TRACE}-{PARENT}-01")),
        ("traceparent".into(), format!("0-{TRACE}-{PARENT}-01")),
        ("traceparent".into(), format!("0A-{TRACE}-{PARENT}-01")),
        // Version 00 is exactly 55 characters.
        ("traceparent".into(), format!("{VALID}.")),
        ("traceparent".into(), format!("{VALID}-what-the-future-will-be-like")),
        // trace-id: 32 lowercase hex digits, not all zero.
        ("traceparent".into(), format!("00-{z32}-{PARENT}-01")),
        ("traceparent".into(), format!("00-{}-{PARENT}-01", TRACE.to_uppercase().replace('1', "A"))),
        ("traceparent".into(), format!("00-.2345678901234567890123456789012-{PARENT}-01")),
        ("traceparent".into(), format!("00-1234567890123456789012345678901.-{PARENT}-01")),
        ("traceparent".into(), format!("00-{TRACE}3-{PARENT}-01")),
        ("traceparent".into(), format!("00-{}-{PARENT}-01", &TRACE[..31])),
        // parent-id: 16 lowercase hex digits, not all zero.
        ("traceparent".into(), format!("00-{TRACE}-0000000000000000-01")),
        ("traceparent".into(), format!("00-{TRACE}-ABCDEF7890123456-01")),
        ("traceparent".into(), format!("00-{TRACE}-.234567890123456-01")),
        ("traceparent".into(), format!("00-{TRACE}-123456789012345.-01")),
        ("traceparent".into(), format!("00-{TRACE}-12345678901234567-01")),
        ("traceparent".into(), format!("00-{TRACE}-123456789012345-01")),
        // trace-flags: two lowercase hex digits.
        ("traceparent".into(), format!("00-{TRACE}-{PARENT}-.0")),
        ("traceparent".into(), format!("00-{TRACE}-{PARENT}-0.")),
        ("traceparent".into(), format!("00-{TRACE}-{PARENT}-0A")),
        ("traceparent".into(), format!("00-{TRACE}-{PARENT}-001")),
        ("traceparent".into(), format!("00-{TRACE}-{PARENT}-1")),
        // A future version must still have '-' after the 55 characters of version 00.
        ("traceparent".into(), format!("cc-{TRACE}-{PARENT}-01.what-the-future-will-be-like")),
        // Not the traceparent header at all.
        ("trace-parent".into(), VALID.into()),
        ("trace.parent".into(), VALID.into()),
    ];
    for (name, value) in &cases {
        let (tp, ts) = single(&service, &harness, &[(name, value), ("tracestate", "foo=1,bar=2")]);
        assert_ne!(tp.trace_id, TRACE, "{name}: {value}");
        assert!(!value.contains(&tp.trace_id), "{name}: {value}");
        assert_eq!(ts, None, "a tracestate must not follow an invalid traceparent: {name}: {value}");
    }
}

#[test]
fn two_traceparent_headers_start_a_new_trace() {
    let (service, harness) = setup();
    let other = format!("00-{TRACE}-{PARENT}-01").replace("9012-", "9011-");
    let (tp, ts) =
        single(&service, &harness, &[("traceparent", &other), ("traceparent", VALID), ("tracestate", "foo=1")]);
    assert!(tp.trace_id != TRACE && tp.trace_id != "12345678901234567890123456789011", "{tp:?}");
    assert_eq!(ts, None);
}

#[test]
fn a_higher_version_is_continued_and_sent_as_version_00() {
    let (service, harness) = setup();
    for value in [format!("cc-{TRACE}-{PARENT}-01"), format!("cc-{TRACE}-{PARENT}-01-what-the-future-will-be-like")] {
        let (tp, ts) = single(&service, &harness, &[("traceparent", &value), ("tracestate", "foo=1")]);
        assert_eq!((tp.trace_id.as_str(), tp.flags.as_str()), (TRACE, "01"), "{value}");
        assert_ne!(tp.parent_id, PARENT);
        assert_eq!(ts.as_deref(), Some("foo=1"), "{value}");
    }
}

#[test]
fn a_tracestate_without_a_traceparent_is_discarded() {
    let (service, harness) = setup();
    for ts in ["foo=1", "foo=1,bar=2"] {
        let (_, sent) = single(&service, &harness, &[("tracestate", ts)]);
        assert_eq!(sent, None, "{ts}");
    }
}

#[test]
fn several_tracestate_headers_are_combined_in_order_into_one() {
    let (service, harness) = setup();
    let (tp, ts) = single(
        &service,
        &harness,
        &[
            ("traceparent", VALID_UNSAMPLED),
            ("tracestate", "foo=1,bar=2"),
            ("tracestate", "rojo=1,congo=2"),
            ("tracestate", "baz=3"),
        ],
    );
    assert_eq!(tp.trace_id, TRACE);
    assert_eq!(ts.as_deref(), Some("foo=1,bar=2,rojo=1,congo=2,baz=3"));
    // Empty headers and empty members are accepted and skipped.
    for headers in [vec!["foo=1", ""], vec!["", "foo=1"], vec![" , foo=1 ,, "]] {
        let mut h = vec![("traceparent", VALID_UNSAMPLED)];
        h.extend(headers.iter().map(|v| ("tracestate", *v)));
        let (_, ts) = single(&service, &harness, &h);
        assert_eq!(ts.as_deref(), Some("foo=1"), "{headers:?}");
    }
    let (tp, ts) = single(&service, &harness, &[("traceparent", VALID_UNSAMPLED), ("tracestate", "")]);
    assert_eq!((tp.trace_id.as_str(), ts), (TRACE, None));
}

#[test]
fn tracestate_whitespace_around_members_is_ignored() {
    let (service, harness) = setup();
    for value in ["foo=1 \t , \t bar=2, \t baz=3", "foo=1\t \t,\t \tbar=2,\t \tbaz=3"] {
        let (_, ts) = single(&service, &harness, &[("traceparent", VALID_UNSAMPLED), ("tracestate", value)]);
        assert_eq!(ts.as_deref(), Some("foo=1,bar=2,baz=3"), "{value:?}");
    }
    for value in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
        let (_, ts) = single(&service, &harness, &[("traceparent", VALID_UNSAMPLED), ("tracestate", value)]);
        assert_eq!(ts.as_deref(), Some("foo=1"), "{value:?}");
    }
}

#[test]
fn a_tracestate_breaking_a_rule_is_discarded_whole_and_the_trace_still_continued() {
    let (service, harness) = setup();
    let cases: Vec<Vec<String>> = vec![
        // Keys: lowercase letter or digit first, then a-z 0-9 _ - * / @, at most 256.
        vec!["foo =1".into()],
        vec!["FOO=1".into()],
        vec!["foo.bar=1".into()],
        vec!["@foo=1,bar=2".into()],
        vec!["foo=1".into(), format!("{}=1", "z".repeat(257))],
        // Values: printable ASCII except ',' and '=', 1 to 256 characters.
        vec!["foo=bar=baz".into()],
        vec!["foo=,bar=3".into()],
        vec![format!("foo={}", "v".repeat(257))],
        // A member without '='.
        vec!["foo=1,bar".into()],
        // At most 32 members ("tracestate Header Field Values"), a repeated key counted.
        vec![(1..=33).map(|i| format!("bar{i:02}={i:02}")).collect::<Vec<_>>().join(",")],
        vec![(1..=32).map(|i| format!("bar{i:02}={i:02}")).collect::<Vec<_>>().join(","), "bar01=01".into()],
        // A repeated key does not save a list that breaks another rule.
        vec!["foo=1,foo=2,Bar=3".into()],
    ];
    for values in &cases {
        let mut h = vec![("traceparent", VALID_UNSAMPLED)];
        h.extend(values.iter().map(|v| ("tracestate", v.as_str())));
        let (tp, ts) = single(&service, &harness, &h);
        assert_eq!(tp.trace_id, TRACE, "{values:?}");
        assert_eq!(ts, None, "{values:?}");
    }
}

/// Level 2, "Mutating the tracestate Field": "vendors MAY also discard duplicate keys that
/// were not generated by them"; the W3C harness (`test_tracestate_duplicated_keys`) expects
/// the tracestate inherited, as it is or with one of the duplicates discarded. The service
/// keeps the first occurrence and the rest of the list, in one header or across several.
#[test]
fn a_tracestate_repeating_a_key_is_inherited_with_its_first_occurrence() {
    let (service, harness) = setup();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["foo=1,foo=1"], "foo=1"),
        (vec!["foo=1,foo=2"], "foo=1"),
        (vec!["foo=1", "foo=1"], "foo=1"),
        (vec!["foo=1", "foo=2"], "foo=1"),
        (vec!["rojo=1,foo=1", "congo=2,foo=2,bar=3"], "rojo=1,foo=1,congo=2,bar=3"),
    ];
    for (values, want) in cases {
        let mut h = vec![("traceparent", VALID_UNSAMPLED)];
        h.extend(values.iter().map(|v| ("tracestate", *v)));
        let (tp, ts) = single(&service, &harness, &h);
        assert_eq!(tp.trace_id, TRACE, "{values:?}");
        assert_eq!(ts.as_deref(), Some(want), "{values:?}");
    }
}

#[test]
fn tracestate_limits_and_every_allowed_character_are_respected() {
    let (service, harness) = setup();
    // 32 members over four headers: all kept, in order.
    let members: Vec<String> = (1..=32).map(|i| format!("bar{i:02}={i:02}")).collect();
    let headers: Vec<String> = members.chunks(10).map(|c| c.join(",")).collect();
    let mut h = vec![("traceparent", VALID_UNSAMPLED)];
    h.extend(headers.iter().map(|v| ("tracestate", v.as_str())));
    let (_, ts) = single(&service, &harness, &h);
    assert_eq!(ts.unwrap(), members.join(","));

    // A 256-character key; every key and value character (Level 2 grammar).
    let key = format!("{}{}", "a".repeat(255), "z");
    let lcalpha: String = ('a'..='z').collect();
    let all_keys = format!("{lcalpha}0123456789_-*/");
    let all_keys_vendor = format!("{all_keys}@a-z0-9_-*/");
    let value: String = (0x20u8..=0x7e).filter(|c| *c != b',' && *c != b'=').map(char::from).collect();
    for k in [key.as_str(), all_keys.as_str(), all_keys_vendor.as_str()] {
        let member = format!("{k}={value}");
        let (_, ts) = single(&service, &harness, &[("traceparent", VALID_UNSAMPLED), ("tracestate", &member)]);
        assert_eq!(ts.as_deref(), Some(member.as_str()), "{k}");
    }

    // Over 512 characters: whole entries are removed, those over 128 characters first, then
    // from the end, until it fits.
    let big = format!("big={}", "b".repeat(200));
    let mid: Vec<String> = (0..5).map(|i| format!("m{i}={}", "x".repeat(90))).collect();
    let combined = format!("a=1,{big},{}", mid.join(","));
    assert!(combined.len() > 512);
    let (_, ts) = single(&service, &harness, &[("traceparent", VALID_UNSAMPLED), ("tracestate", &combined)]);
    let ts = ts.unwrap();
    assert_eq!(ts, format!("a=1,{}", mid.join(",")));
    assert!(ts.len() <= 512);
}

#[test]
fn callbacks_carry_the_arguments_and_the_answer_comes_after_the_last_one() {
    let service = start_service(&[]);
    let harness = Harness::start(Duration::from_millis(300));
    let body = format!(
        r#"[{{"url": "{}", "arguments": {{"a": [1, 2, {{"b": null}}]}}}}, {{"url": "{}", "arguments": "text"}}]"#,
        harness.url("first"),
        harness.url("second")
    );
    let t0 = Instant::now();
    let (status, answer) = post_raw(&service, &[("traceparent", VALID)], &body);
    let answered = Instant::now();
    assert_eq!(status, 200, "{answer}");
    let got = harness.take();
    assert_eq!(got.len(), 2);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&got[0].body).unwrap(),
        serde_json::json!({"a": [1, 2, {"b": null}]})
    );
    assert_eq!(got[1].body, b"\"text\"");
    assert_eq!(got[0].header_values("content-type"), ["application/json"]);
    // In order, one after the other, and the 200 only once both were answered.
    assert!(got[1].started >= got[0].answered, "callbacks overlapped");
    assert!(answered >= got[1].answered && answered.duration_since(t0) >= Duration::from_millis(600));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer).unwrap(),
        serde_json::json!([{"status": 200}, {"status": 200}])
    );
}

#[test]
fn sigterm_stops_the_service_cleanly() {
    let (mut service, harness) = setup();
    round(&service, &harness, &[("traceparent", VALID)], 2);
    let pid = service.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tracewire_testkit::eventually_some(Duration::from_secs(10), || service.child.try_wait().unwrap())
        .expect("the service did not stop on SIGTERM");
    assert!(status.success(), "{status}");
}

#[test]
fn a_body_that_is_not_a_list_of_callbacks_is_a_400() {
    let (service, _harness) = setup();
    for body in ["", "{}", "[1]", r#"[{"arguments": []}]"#] {
        assert_eq!(post_raw(&service, &[], body).0, 400, "{body}");
    }
}

#[test]
fn spans_are_exported_with_the_normal_telemetry_set_up() {
    let rotel = Rotel::start().unwrap();
    let service = start_service(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.grpc_endpoint()),
        ("OTEL_SERVICE_NAME", "w3c".into()),
    ]);
    let harness = Harness::start(Duration::ZERO);
    let got = round(&service, &harness, &[("traceparent", VALID)], 2);
    let sent: Vec<Traceparent> = got.iter().map(Received::traceparent).collect();
    let spans =
        rotel.wait_for(Duration::from_secs(20), |s| s.iter().filter(|x| x.trace_id == TRACE).count() >= 3).unwrap();
    let of: Vec<_> = spans.iter().filter(|s| s.trace_id == TRACE).collect();
    let server = of.iter().find(|s| s.name == "w3c.test").unwrap_or_else(|| panic!("{of:#?}"));
    assert_eq!(server.parent_id, PARENT, "the server span continues the caller's span");
    for tp in &sent {
        let client = of.iter().find(|s| s.span_id == tp.parent_id).unwrap_or_else(|| panic!("{tp:?} in {of:#?}"));
        assert_eq!(client.name, "w3c.callback");
        assert_eq!(client.parent_id, server.span_id);
    }
}

#[test]
fn without_the_opentelemetry_sdk_propagation_is_the_same() {
    let service = start_service(&[("OTEL_SDK_DISABLED", "true".into())]);
    let harness = Harness::start(Duration::ZERO);
    let got = round(&service, &harness, &[("traceparent", VALID), ("tracestate", "t@vvvvvvvvvvvvvvv=1,foo=2")], 2);
    let tps: Vec<Traceparent> = got.iter().map(Received::traceparent).collect();
    assert!(tps.iter().all(|t| t.trace_id == TRACE && t.flags == "01"), "{tps:?}");
    assert_ne!(tps[0].parent_id, tps[1].parent_id);
    assert!(got.iter().all(|r| r.tracestate().as_deref() == Some("t@vvvvvvvvvvvvvvv=1,foo=2")));
    let (tp, ts) = single(&service, &harness, &[("traceparent", "00-bad"), ("tracestate", "foo=1")]);
    assert_ne!(tp.trace_id, TRACE);
    assert_eq!(ts, None);
}

#[test]
fn level_2_tracestate_keys_pass_through_the_opentelemetry_sdk_unchanged() {
    // Valid by the Level 2 key grammar, rejected by the Level 1 multi-tenant one that the
    // OpenTelemetry API still applies: the service must carry them all the same.
    let (service, harness) = setup();
    for member in ["t@vvvvvvvvvvvvvvv=1", "foo@=1", "a@b@c=1", &format!("{}@v=1", "t".repeat(242))] {
        let value = format!("{member},foo2=2");
        let (tp, ts) = single(&service, &harness, &[("traceparent", VALID_UNSAMPLED), ("tracestate", &value)]);
        assert_eq!(tp.trace_id, TRACE);
        assert_eq!(ts.as_deref(), Some(value.as_str()), "{member}");
    }
}
