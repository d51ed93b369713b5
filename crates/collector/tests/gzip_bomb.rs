//! A 1 GiB gzip bomb against OTLP/HTTP, alone in its test binary so that the process's peak
//! resident memory is this test's.
//!
//! OTLP specification, "OTLP/HTTP Request": "The server MUST limit the size of the request
//! body when parsing it, including after decompression, to mitigate possible excessive
//! memory usage caused by a misconfigured or malicious client. [...] If the limit is
//! exceeded, the server SHOULD respond with `HTTP 413 Content Too Large`."

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http_receiver_thread;
use tracewire_collector::receiver::{MAX_REQUEST_BYTES, SpanStore};

/// The process's peak resident set size (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn post_gzip(addr: &str, body: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_1_gib_gzip_bomb_is_refused_with_413_in_bounded_memory() {
    // One gzip member of 1 GiB of zeros, about 1 MiB, made by Python's zlib.
    let dir = tracewire_testkit::TempDir::new("tw-gzip-bomb").unwrap();
    let path = dir.path().join("bomb.gz");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/gzip_bomb.py");
    let size = 1u64 << 30;
    tracewire_testkit::run_python(&script, &[path.to_str().unwrap(), &size.to_string()], &[]).unwrap();
    let bomb = std::fs::read(&path).unwrap();
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    // It is a single member (one gzip header), inflating to its full size.
    assert_eq!(&bomb[..3], b"\x1f\x8b\x08");
    assert_eq!(bomb.windows(3).filter(|w| w == b"\x1f\x8b\x08").count(), 1);
    assert_eq!(u32::from_le_bytes(bomb[bomb.len() - 4..].try_into().unwrap()), 1 << 30, "ISIZE");

    let store = Arc::new(SpanStore::new(1000));
    let addr = http_receiver_thread(&store);

    let before = peak_rss();
    let started = Instant::now();
    let answer = post_gzip(&addr, &bomb);
    let took = started.elapsed();
    let grew = peak_rss().saturating_sub(before);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:.200}");
    assert_eq!((store.received(), store.snapshot().len()), (0, 0));
    // At most the limit was inflated and held (inflating it all would take 1 GiB, and the
    // time to inflate 1 GiB).
    let limit = MAX_REQUEST_BYTES as u64;
    assert!(grew < limit + (32 << 20), "peak RSS grew by {} MiB", grew >> 20);
    assert!(took < Duration::from_secs(30), "{took:?}");
    eprintln!("1 GiB bomb: 413 in {took:?}, peak RSS +{} MiB", grew >> 20);

    // Again: the memory of the first was given back, the second costs no more.
    let before = peak_rss();
    assert!(post_gzip(&addr, &bomb).starts_with("HTTP/1.1 413"));
    assert!(peak_rss().saturating_sub(before) < limit + (32 << 20));
}
