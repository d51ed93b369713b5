//! Fuzz checks of `tracewire-context`'s parsers. Shared with
//! `crates/context/tests/fuzz_corpus.rs`, which includes this file by path.

use tracewire_context::limits::{
    BAGGAGE_MAX_BYTES, BAGGAGE_MAX_MEMBERS, TRACESTATE_MAX_MEMBERS, TRACESTATE_SERIALIZE_BUDGET, tracestate_valid_key,
    tracestate_valid_value,
};
use tracewire_context::{Baggage, TRACEPARENT_LEN, TraceParent, TraceState, extract};

/// Several header values in one input: split at newlines (non-UTF-8 bytes replaced).
fn header_values(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data).split('\n').map(str::to_owned).collect()
}

/// `TraceParent::parse_bytes`, then the propagation policy on the same value: a valid
/// value encodes to a version-00, 55-character value that parses back to the same ids and
/// the known flags; a canonical version-00 value encodes back byte for byte; `extract`
/// continues exactly the valid values and always yields a valid outgoing traceparent.
pub fn traceparent(data: &[u8]) {
    let parsed = TraceParent::parse_bytes(data);
    if let Ok(tp) = parsed {
        let enc = tp.encode();
        assert_eq!(enc.len(), TRACEPARENT_LEN);
        assert!(enc.starts_with("00-"), "{enc}");
        let again = TraceParent::parse(&enc).unwrap_or_else(|e| panic!("{enc}: {e}"));
        assert_eq!((again.trace_id, again.parent_id), (tp.trace_id, tp.parent_id));
        assert_eq!(again.flags, tp.flags.outgoing());
        let trimmed = data.trim_ascii();
        if trimmed.len() == TRACEPARENT_LEN && trimmed.starts_with(b"00-") && tp.flags == tp.flags.outgoing() {
            assert_eq!(enc.as_bytes(), trimmed, "canonical value does not round-trip");
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let ex = extract(&[("traceparent", s)]);
        assert_eq!(ex.continued(), parsed.is_ok(), "{s:?}");
        if let Ok(tp) = parsed {
            assert_eq!(ex.context.trace_id, tp.trace_id);
            assert_eq!(ex.remote_parent, Some(tp.parent_id));
        }
        let out = ex.context.traceparent().encode();
        assert!(TraceParent::parse(&out).is_ok(), "{out}");
    }
}

/// `TraceState::from_header_values` against a plain model: a value is accepted exactly when
/// every member obeys the grammar and at most 32 members were received (repeats counted);
/// it then holds the first occurrence of each key, in order. Its header stays within 512
/// characters and parses back to a subset, in order (the whole list when it fits).
pub fn tracestate(data: &[u8]) {
    let values = header_values(data);
    let received: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    let valid = received.len() <= TRACESTATE_MAX_MEMBERS
        && received
            .iter()
            .all(|m| m.split_once('=').is_some_and(|(k, v)| tracestate_valid_key(k) && tracestate_valid_value(v)));
    let parsed = TraceState::from_header_values(values.iter().map(String::as_str));
    assert_eq!(parsed.is_ok(), valid, "{values:?}: {parsed:?}");
    let Ok(ts) = parsed else { return };
    let mut model: Vec<(&str, &str)> = Vec::new();
    for (k, v) in received.iter().filter_map(|m| m.split_once('=')) {
        if model.iter().all(|(k2, _)| *k2 != k) {
            model.push((k, v));
        }
    }
    let members: Vec<(&str, &str)> = ts.iter().collect();
    assert_eq!(members, model, "{values:?}");
    let header = ts.header();
    assert!(header.len() <= TRACESTATE_SERIALIZE_BUDGET, "{} characters", header.len());
    let again = TraceState::parse(&header).unwrap_or_else(|e| panic!("{header}: {e}"));
    let mut rest = members.iter();
    for kv in again.iter() {
        assert!(rest.any(|m| *m == kv), "{kv:?} not in order in {members:?}");
    }
    let full: usize =
        members.iter().map(|(k, v)| k.len() + v.len() + 1).sum::<usize>() + members.len().saturating_sub(1);
    if full <= TRACESTATE_SERIALIZE_BUDGET {
        assert_eq!(again, ts);
    }
}

/// `Baggage::from_header_values`: the kept members are within the limits and the header
/// they serialize to parses back to the same baggage with nothing dropped.
pub fn baggage(data: &[u8]) {
    let values = header_values(data);
    let parsed = Baggage::from_header_values(values.iter().map(String::as_str));
    let bag = parsed.baggage;
    assert!(bag.len() <= BAGGAGE_MAX_MEMBERS);
    let header = bag.header();
    assert!(header.len() <= BAGGAGE_MAX_BYTES, "{} bytes", header.len());
    let again = Baggage::parse(&header);
    assert_eq!(again.dropped, 0, "{header}");
    assert_eq!(again.baggage, bag, "{header}");
}
