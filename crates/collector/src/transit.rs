//! Wire time as a stage: `net.transit`.
//!
//! No process sees a message on the wire, so no span covers it. After clock correction the
//! analysis derives it from the spans on both sides of every cross-process edge, as
//! intervals from the sender's last stage before the wire to the receiver's first:
//!
//! - through a relay: `relay.send` end to `relay.forward` start (sender to relay), and
//!   `relay.forward` end to `relay.recv` start (relay to receiver); without a
//!   `relay.forward` span (the relay's spans are opt-in), `relay.send` end to `relay.recv`
//!   start. The spans of one message share their parent (the message's context) and a
//!   `relay.send` and its `relay.recv` the same `tracewire.seq.first`/`tracewire.seq.last`;
//! - directly (no relay spans under the parent): a request from the `rpc.call` start to
//!   the start of the call's first child (the server's first stage, `rpc.queue`), and a
//!   terminal event from the server's `terminal.deliver` end to the start of the client's
//!   `terminal.queue` of the same `tracewire.event`.
//!
//! Each interval is a span named `net.transit` (no attributes; its stage is its name),
//! child of the message's parent, in the receiving side's service, with a span id that is
//! not hex (`transit-N`) so it never collides with a real one. The analysis counts them in
//! the stage table, the critical path and the attributed time; the exports keep the spans
//! as given.

use std::collections::{HashMap, HashSet};

use crate::SpanRecord;
use crate::analysis::Fast;

/// The stage of a derived wire interval.
pub(crate) const TRANSIT: &str = "net.transit";

/// The spans under one parent that an edge is made of (indices into the trace).
#[derive(Default)]
struct Group {
    sends: Vec<usize>,
    forwards: Vec<usize>,
    recvs: Vec<usize>,
    delivers: Vec<usize>,
    queues: Vec<usize>,
    first_child: Option<usize>,
}

/// The `net.transit` spans of one trace (already corrected for clock skew), in order of
/// derivation. Only spans on an edge are looked at; a trace without edges costs one pass.
pub(crate) fn derive(trace: &[SpanRecord]) -> Vec<SpanRecord> {
    let calls: HashSet<&str, Fast> =
        trace.iter().filter(|s| s.stage() == "rpc.call").map(|s| s.span_id.as_str()).collect();
    let mut groups: HashMap<&str, Group, Fast> = HashMap::default();
    for (i, s) in trace.iter().enumerate() {
        let Some(parent) = s.parent_id.as_deref() else { continue };
        let stage = s.stage();
        let on_edge = matches!(stage, "relay.send" | "relay.forward" | "relay.recv" | "terminal.deliver")
            || (stage == "terminal.queue" && s.attributes.contains_key("tracewire.event"));
        if !on_edge && !calls.contains(parent) {
            continue;
        }
        let g = groups.entry(parent).or_default();
        match stage {
            "relay.send" => g.sends.push(i),
            "relay.forward" => g.forwards.push(i),
            "relay.recv" => g.recvs.push(i),
            "terminal.deliver" => g.delivers.push(i),
            "terminal.queue" if on_edge => g.queues.push(i),
            _ => {}
        }
        if calls.contains(parent) && g.first_child.is_none_or(|f| s.start_ns < trace[f].start_ns) {
            g.first_child = Some(i);
        }
    }
    let mut out = Vec::new();
    let mut add = |parent: &str, service: &str, start: i64, end: i64| {
        if end > start {
            out.push(SpanRecord {
                trace_id: trace[0].trace_id.clone(),
                span_id: format!("transit-{}", out.len()),
                parent_id: Some(parent.to_owned()),
                name: TRANSIT.to_owned(),
                service: service.to_owned(),
                start_ns: start,
                end_ns: end,
                ..SpanRecord::default()
            });
        }
    };
    // Parents in trace order, so that the derived spans do not depend on hashing.
    let mut parents: Vec<(&str, Group)> = groups.into_iter().collect();
    parents.sort_by_key(|(_, g)| {
        [&g.sends, &g.delivers, &g.queues, &g.recvs].iter().filter_map(|v| v.first().copied()).min().or(g.first_child)
    });
    for (parent, mut g) in parents {
        if g.sends.is_empty() {
            direct(trace, parent, &mut g, &mut add);
        } else {
            relayed(trace, parent, &mut g, &mut add);
        }
    }
    out
}

/// A message's relay sequence numbers (`tracewire.seq.first`, `tracewire.seq.last`).
fn seq(s: &SpanRecord) -> Option<(&str, &str)> {
    Some((s.attributes.get("tracewire.seq.first")?.as_str(), s.attributes.get("tracewire.seq.last")?.as_str()))
}

/// Removes and returns the element of `v` with the least key, if any.
fn take_min(v: &mut Vec<usize>, key: impl Fn(usize) -> Option<i64>) -> Option<usize> {
    let (pos, _) = v.iter().enumerate().filter_map(|(p, &i)| key(i).map(|k| (p, k))).min_by_key(|&(_, k)| k)?;
    Some(v.swap_remove(pos))
}

fn relayed(trace: &[SpanRecord], parent: &str, g: &mut Group, add: &mut impl FnMut(&str, &str, i64, i64)) {
    g.sends.sort_by_key(|&i| trace[i].start_ns);
    for &s in &g.sends {
        let send = &trace[s];
        let Some(r) = take_min(&mut g.recvs, |r| {
            let recv = &trace[r];
            let same = match (seq(send), seq(recv)) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            same.then(|| (recv.start_ns - send.end_ns).abs())
        }) else {
            continue;
        };
        let recv = &trace[r];
        let forward = take_min(&mut g.forwards, |f| {
            let start = trace[f].start_ns;
            (start >= send.start_ns && start <= recv.start_ns).then_some(start)
        });
        if let Some(f) = forward {
            let fw = &trace[f];
            add(parent, &fw.service, send.end_ns, fw.start_ns);
            add(parent, &recv.service, fw.end_ns, recv.start_ns);
        } else {
            add(parent, &recv.service, send.end_ns, recv.start_ns);
        }
    }
}

fn direct(trace: &[SpanRecord], parent: &str, g: &mut Group, add: &mut impl FnMut(&str, &str, i64, i64)) {
    // A request: from the call's start to the server's first stage under it.
    if let (Some(first), Some(call)) = (g.first_child, trace.iter().find(|s| s.span_id == parent)) {
        add(parent, &trace[first].service, call.start_ns, trace[first].start_ns);
    }
    // Terminal events: the server's delivery to the client's queue of the same event.
    g.delivers.sort_by_key(|&i| trace[i].start_ns);
    for &d in &g.delivers {
        let deliver = &trace[d];
        let event = deliver.attributes.get("tracewire.event");
        let Some(q) = take_min(&mut g.queues, |q| {
            let queue = &trace[q];
            (queue.attributes.get("tracewire.event") == event && queue.start_ns >= deliver.start_ns)
                .then_some(queue.start_ns)
        }) else {
            continue;
        };
        add(parent, &trace[q].service, deliver.end_ns, trace[q].start_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, stage: &str, service: &str, start: i64, end: i64) -> SpanRecord {
        SpanRecord {
            trace_id: "t".into(),
            span_id: id.into(),
            parent_id: parent.map(Into::into),
            name: stage.into(),
            service: service.into(),
            start_ns: start,
            end_ns: end,
            ..SpanRecord::default()
        }
    }

    fn with(mut s: SpanRecord, attrs: &[(&str, &str)]) -> SpanRecord {
        for (k, v) in attrs {
            s.attributes.insert((*k).into(), (*v).into());
        }
        s
    }

    fn iv(parent: &str, service: &str, start: i64, end: i64) -> (String, String, i64, i64) {
        (parent.to_owned(), service.to_owned(), start, end)
    }

    fn intervals(trace: &[SpanRecord]) -> Vec<(String, String, i64, i64)> {
        let mut v: Vec<_> = derive(trace)
            .into_iter()
            .map(|s| (s.parent_id.unwrap_or_default(), s.service, s.start_ns, s.end_ns))
            .collect();
        v.sort_by_key(|x| x.2);
        v
    }

    #[test]
    fn a_relayed_request_has_two_hops_and_a_reply_one() {
        let seq = |a: &'static str| [("tracewire.seq.first", a), ("tracewire.seq.last", a)];
        let trace = [
            span("c", None, "rpc.call", "client", 0, 1000),
            span("f", Some("c"), "relay.frame", "client", 10, 20),
            with(span("s", Some("c"), "relay.send", "client", 20, 30), &seq("3")),
            span("w", Some("c"), "relay.forward", "relay", 60, 70),
            with(span("r", Some("c"), "relay.recv", "server", 100, 100), &seq("3")),
            span("q", Some("c"), "rpc.queue", "server", 120, 130),
            // The reply, same sequence number the other way: no relay span for it.
            with(span("s2", Some("c"), "relay.send", "server", 500, 510), &seq("3")),
            with(span("r2", Some("c"), "relay.recv", "client", 800, 800), &seq("3")),
        ];
        assert_eq!(
            intervals(&trace),
            [iv("c", "relay", 30, 60), iv("c", "server", 70, 100), iv("c", "client", 510, 800),]
        );
    }

    #[test]
    fn direct_edges_are_the_request_and_the_terminal_events() {
        let ev = |e: &'static str| [("tracewire.event", e)];
        let trace = [
            span("c", None, "rpc.call", "client", 0, 1000),
            span("q", Some("c"), "rpc.queue", "server", 140, 150),
            span("d", Some("c"), "rpc.dispatch", "server", 160, 900),
            span("p", Some("d"), "process", "server", 170, 890),
            with(span("d1", Some("p"), "terminal.deliver", "server", 400, 420), &ev("Output")),
            with(span("d2", Some("p"), "terminal.deliver", "server", 600, 620), &ev("Exited")),
            with(span("q2", Some("p"), "terminal.queue", "client", 700, 710), &ev("Exited")),
            with(span("q1", Some("p"), "terminal.queue", "client", 500, 510), &ev("Output")),
            // The server's own queue (no event attribute) is not an edge.
            span("sq", Some("p"), "terminal.queue", "server", 380, 399),
        ];
        assert_eq!(
            intervals(&trace),
            [iv("c", "server", 0, 140), iv("p", "client", 420, 500), iv("p", "client", 620, 700)]
        );
    }

    #[test]
    fn a_trace_without_edges_derives_nothing() {
        let trace = [span("a", None, "exec", "client", 0, 10), span("b", Some("a"), "process", "client", 1, 9)];
        assert!(derive(&trace).is_empty());
        // Overlapping (clock error larger than the wire time) gives no negative interval.
        let trace =
            [span("c", None, "rpc.call", "client", 0, 100), span("q", Some("c"), "rpc.queue", "server", -5, 10)];
        assert!(derive(&trace).is_empty());
    }
}
