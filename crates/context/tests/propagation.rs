//! The propagation policy and every carrier, including a real child process.

use std::collections::HashMap;

use tracewire_context::{
    Baggage, Carrier, CarrierMut, EnvCarrier, PropagationStats, StartReason, TraceCarrier, TraceContext, TraceParent,
    TraceParentError, extract, read_remote,
};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn a_valid_context_is_continued_with_a_fresh_span_id() {
    let e = extract(&[("traceparent", TP), ("tracestate", "rojo=1"), ("baggage", "u=1")]);
    assert!(e.continued());
    assert_eq!(e.context.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(e.remote_parent.unwrap().to_string(), "00f067aa0ba902b7");
    assert_ne!(e.context.span_id, e.remote_parent.unwrap());
    assert!(e.context.flags.is_sampled());
    assert_eq!(e.context.tracestate.header(), "rojo=1");
    assert_eq!(e.baggage.get("u"), Some("1"));
    // Two extractions of the same request produce two distinct spans.
    let again = extract(&[("traceparent", TP)]);
    assert_ne!(again.context.span_id, e.context.span_id);
}

#[test]
fn unknown_flags_are_not_continued() {
    let e = extract(&[("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff")]);
    assert_eq!(e.context.flags.bits(), 0x03);
}

#[test]
fn invalid_or_missing_traceparent_starts_a_new_trace_and_says_why() {
    let cases: Vec<(Vec<(&str, &str)>, StartReason)> = vec![
        (vec![], StartReason::Missing),
        (vec![("tracestate", "a=1")], StartReason::Missing),
        (vec![("traceparent", "nonsense"), ("tracestate", "a=1")], StartReason::Invalid(TraceParentError::Length(8))),
        (vec![("traceparent", TP), ("traceparent", TP)], StartReason::Invalid(TraceParentError::Multiple)),
        (
            vec![("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01")],
            StartReason::Invalid(TraceParentError::ZeroTraceId),
        ),
    ];
    for (headers, want) in cases {
        let e = extract(&headers);
        assert_eq!(e.started, Some(want), "{headers:?}");
        assert!(e.remote_parent.is_none());
        assert!(e.context.tracestate.is_empty(), "tracestate is discarded with an invalid traceparent");
        assert!(e.context.flags.is_random(), "a new trace has a random trace-id");
        assert_ne!(e.context.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    assert_eq!(StartReason::Missing.as_str(), "missing");
    assert_eq!(StartReason::Invalid(TraceParentError::Multiple).as_str(), "multiple");
    assert_eq!(StartReason::Invalid(TraceParentError::Flags).as_str(), "invalid");
}

#[test]
fn invalid_tracestate_is_discarded_but_the_trace_continues() {
    let e = extract(&[("traceparent", TP), ("tracestate", "ok=1,BAD=2")]);
    assert!(e.continued());
    assert!(e.context.tracestate.is_empty());
    assert!(e.tracestate_error.is_some());
}

#[test]
fn stats_count_every_outcome() {
    let stats = PropagationStats::new();
    for headers in [
        vec![("traceparent", TP)],
        vec![("traceparent", TP), ("tracestate", "X=1"), ("baggage", "a b=1,c=2")],
        vec![],
        vec![("traceparent", "bad")],
        vec![("traceparent", TP), ("traceparent", TP)],
    ] {
        stats.record(&extract(&headers));
    }
    let s = stats.snapshot();
    assert_eq!(
        (s.continued, s.missing, s.invalid, s.multiple, s.tracestate_discarded, s.baggage_dropped),
        (2, 1, 1, 1, 1, 1)
    );
}

#[test]
fn inject_then_extract_round_trips_through_every_owned_carrier() {
    let mut ctx = TraceContext::new_root(true);
    ctx.tracestate.insert("vendor", "x").unwrap();
    let mut bag = Baggage::new();
    bag.insert("k", "v w").unwrap();

    fn check<C: Carrier + CarrierMut + Default>(ctx: &TraceContext, bag: &Baggage) {
        let mut c = C::default();
        ctx.inject(Some(bag), &mut c).unwrap();
        let mut keys: Vec<String> = c.keys().map(str::to_ascii_lowercase).collect();
        keys.sort();
        assert_eq!(keys, ["baggage", "traceparent", "tracestate"]);
        let e = extract(&c);
        assert!(e.continued());
        assert_eq!(e.context.trace_id, ctx.trace_id);
        assert_eq!(e.remote_parent, Some(ctx.span_id));
        assert_eq!(e.context.tracestate, ctx.tracestate);
        assert_eq!(&e.baggage, bag);
    }
    check::<TraceCarrier>(&ctx, &bag);
    check::<HashMap<String, String>>(&ctx, &bag);
    check::<Vec<(String, String)>>(&ctx, &bag);
}

#[test]
fn carriers_match_names_case_insensitively_and_replace_on_set() {
    let mut map: HashMap<String, String> = HashMap::new();
    map.insert("TraceParent".into(), TP.into());
    assert_eq!(Carrier::get(&map, "traceparent"), Some(TP));
    map.set("TRACEPARENT", "x").unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(Carrier::get(&map, "traceparent"), Some("x"));

    let mut list: Vec<(String, String)> =
        vec![("Tracestate".into(), "a=1".into()), ("tracestate".into(), "b=2".into())];
    assert_eq!(list.get_all("TRACESTATE").collect::<Vec<_>>(), ["a=1", "b=2"]);
    list.set("tracestate", "c=3").unwrap();
    assert_eq!(list.get_all("tracestate").collect::<Vec<_>>(), ["c=3"]);

    let mut c = TraceCarrier::default();
    assert!(c.is_empty());
    c.set("BAGGAGE", "a=1").unwrap();
    assert_eq!(c.baggage, "a=1");
    assert!(c.set("other", "1").is_err());
}

#[test]
fn read_remote_gives_the_parent_without_starting_anything() {
    let r = read_remote(&[("traceparent", TP), ("tracestate", "a=1")]).unwrap();
    assert_eq!(r.parent, TraceParent::parse(TP).unwrap());
    assert_eq!(r.tracestate.header(), "a=1");
    assert_eq!(read_remote(&Vec::<(String, String)>::new()), Err(StartReason::Missing));
}

#[test]
fn env_carrier_reads_variables() {
    let env = EnvCarrier::from_vars([("TRACEPARENT", TP), ("TRACESTATE", "a=1"), ("PATH", "/bin")]);
    assert_eq!(env.get("traceparent"), Some(TP));
    assert_eq!(env.get("TraceState"), Some("a=1"));
    // OpenTelemetry "Environment Variables as Context Propagation Carriers", "Key Name
    // Normalization": "`Keys` MUST return only key names that are already normalized."
    assert_eq!(env.keys().collect::<Vec<_>>(), ["PATH", "TRACEPARENT", "TRACESTATE"]);
    assert!(extract(&env).continued());
}

/// A real child process receives the context through its environment and continues it.
#[test]
fn child_process_inherits_the_context_through_its_environment() {
    let ctx = TraceContext::new_root(true).child();
    let mut bag = Baggage::new();
    bag.insert("job", "42").unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "printf '%s|%s' \"$TRACEPARENT\" \"$BAGGAGE\""]);
    ctx.inject(Some(&bag), &mut cmd).unwrap();
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (tp, baggage) = text.split_once('|').unwrap();
    assert_eq!(tp, ctx.traceparent().to_string());
    assert_eq!(baggage, "job=42");

    let child_side = EnvCarrier::from_vars([("TRACEPARENT", tp), ("BAGGAGE", baggage)]);
    let e = extract(&child_side);
    assert_eq!(e.context.trace_id, ctx.trace_id);
    assert_eq!(e.remote_parent, Some(ctx.span_id));
    assert_eq!(e.baggage.get("job"), Some("42"));
}

#[test]
fn env_values_with_nul_are_refused() {
    let mut cmd = std::process::Command::new("true");
    assert!(cmd.set("traceparent", "a\0b").is_err());
    // A name is normalized, never refused (OpenTelemetry "Environment Variables as Context
    // Propagation Carriers", "Key Name Normalization": "`Set` MUST write values using the
    // normalized form of the key"): `a=b` is written as `A_B`.
    cmd.set("a=b", "x").unwrap();
    assert!(cmd.get_envs().any(|(k, v)| k == "A_B" && v == Some(std::ffi::OsStr::new("x"))));
}

#[cfg(feature = "http")]
#[test]
fn http_header_map() {
    use http::{HeaderMap, HeaderValue};
    let mut h = HeaderMap::new();
    h.append("TraceParent", HeaderValue::from_static(TP));
    h.append("tracestate", HeaderValue::from_static("a=1"));
    h.append("TRACESTATE", HeaderValue::from_static("b=2"));
    let e = extract(&h);
    assert!(e.continued());
    assert_eq!(e.context.tracestate.header(), "a=1,b=2", "several tracestate headers are combined");

    h.append("traceparent", HeaderValue::from_static(TP));
    assert_eq!(extract(&h).started, Some(StartReason::Invalid(TraceParentError::Multiple)));

    let mut out = HeaderMap::new();
    e.context.inject(None, &mut out).unwrap();
    assert_eq!(out.get_all("traceparent").iter().count(), 1);
    assert_eq!(out.get("tracestate").unwrap(), "a=1,b=2");
    assert!(out.set("bad name", "x").is_err());
    assert!(out.set("x", "bad\nvalue").is_err());
}

#[cfg(feature = "tonic")]
#[test]
fn tonic_metadata_map() {
    use tonic::metadata::MetadataMap;
    let mut m = MetadataMap::new();
    m.set("Traceparent", TP).unwrap();
    m.set("tracestate", "a=1").unwrap();
    let e = extract(&m);
    assert!(e.continued());
    assert_eq!(e.context.tracestate.header(), "a=1");
    assert_eq!(m.keys().count(), 2);
    let mut out = MetadataMap::new();
    e.context.inject(None, &mut out).unwrap();
    assert_eq!(Carrier::get(&out, "TRACEPARENT"), Some(e.context.traceparent().to_string().as_str()));
}

#[cfg(feature = "tokio")]
#[test]
fn tokio_command_gets_the_environment() {
    let ctx = TraceContext::new_root(false);
    let mut cmd = tokio::process::Command::new("true");
    ctx.inject(None, &mut cmd).unwrap();
    let std_cmd = cmd.as_std();
    let tp = std_cmd.get_envs().find(|(k, _)| *k == "TRACEPARENT").and_then(|(_, v)| v).unwrap();
    assert_eq!(tp.to_str().unwrap(), ctx.traceparent().to_string());
}
