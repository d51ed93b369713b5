//! Raw exec envelopes and child processes, for tests that speak the protocol frame by frame
//! (the exec-server's own tests, and the relay's, which include this file by path).
#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tracewire_proto::v1::{Envelope, Notification, Request, Response, Start, envelope::Body, notification};
use tracewire_proto::v1::{exited, request::Method, response};

/// An encoded `Start` request with id `id`.
pub(crate) fn start_envelope(id: u64, start: Start) -> Bytes {
    let method = Some(Method::Start(start));
    Bytes::from(Envelope { id, body: Some(Body::Request(Request { method })), ..Envelope::default() }.encode_to_vec())
}

/// A `Start` of `argv`, nothing else set.
pub(crate) fn start_of(argv: &[&str]) -> Start {
    Start { argv: argv.iter().map(|s| (*s).to_owned()).collect(), ..Start::default() }
}

/// What an envelope is, in a word: `Started`, `Output:<data>`, `Exited:<status>`.
pub(crate) fn describe(frame: &[u8]) -> String {
    match Envelope::decode(frame).unwrap().body {
        Some(Body::Response(Response { result: Some(response::Result::Started(_)) })) => "Started".into(),
        Some(Body::Notification(Notification { event: Some(notification::Event::Output(o)) })) => {
            format!("Output:{}", String::from_utf8_lossy(&o.data))
        }
        Some(Body::Notification(Notification { event: Some(notification::Event::Exited(e)) })) => match e.status {
            Some(exited::Status::Code(c)) => format!("Exited:code {c}"),
            Some(exited::Status::Signal(s)) => format!("Exited:signal {s}"),
            None => "Exited:?".into(),
        },
        other => format!("{other:?}"),
    }
}

/// Asserts that `got` (described envelopes) is a Start of `sh -c "...; echo out"` run to
/// its end: Started, the Output `out`, and Exited with code 0. Output and Exited may come
/// before Start's response (docs/architecture.md, "Protocol notes"): compared without
/// that order, but Exited after the output.
pub(crate) fn assert_finished(got: &[String]) {
    let mut sorted = got.to_vec();
    sorted.sort();
    assert_eq!(sorted, ["Exited:code 0", "Output:out\n", "Started"], "{got:?}");
    let exited = got.iter().position(|e| e.starts_with("Exited")).unwrap();
    let output = got.iter().position(|e| e.starts_with("Output")).unwrap();
    assert!(output < exited, "Exited is last: {got:?}");
}

/// The pid a `Started` response names (`None` for any other envelope).
pub(crate) fn started_pid(frame: &[u8]) -> Option<u32> {
    match Envelope::decode(frame).ok()?.body {
        Some(Body::Response(Response { result: Some(response::Result::Started(s)) })) => Some(s.pid),
        _ => None,
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Waits (10 s at most) until `pid` is gone.
pub(crate) async fn wait_gone(pid: u32) {
    tracewire_testkit::eventually_async(Duration::from_secs(10), || async move { !alive(pid) })
        .await
        .unwrap_or_else(|e| panic!("the child {pid} outlived its client: {e}"));
}
