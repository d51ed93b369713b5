//! A client that half-closes after Start (ordinary gRPC: "no more requests") gets its
//! process's output and Exited, then the end of the stream with status OK; a client that
//! goes away (drops the call, loses the connection) has its processes killed. Real
//! processes, through tracewire's own gRPC transport (tonic) and through a grpcio client
//! written without this repository's code.

mod common;

use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, BufReader};
use tracewire_rpc::grpc::{Address, connect};

use common::frames::{alive, assert_finished, describe, start_envelope, started_pid, wait_gone};
use common::{argv, server};

const SLEEP_THEN_ECHO: [&str; 3] = ["sh", "-c", "sleep 0.2; echo out"];

/// tracewire's gRPC transport (a tonic client): dropping the link's sender ends the
/// request stream (HTTP/2 END_STREAM); the responses still come, then the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_after_start_delivers_output_and_exited_then_ends() {
    let s = server().await;
    let mut link = connect(&s.address.parse::<Address>().unwrap()).await.unwrap();
    link.tx.send(start_envelope(1, argv(&SLEEP_THEN_ECHO))).await.unwrap();
    drop(link.tx);
    let mut got = Vec::new();
    while let Some(frame) =
        tokio::time::timeout(Duration::from_secs(10), link.rx.recv()).await.expect("the stream ends")
    {
        got.push(describe(&frame));
    }
    assert_finished(&got);
    assert_eq!(s.server.running(), 0);
}

/// Half-closed, then the call is dropped (the stream reset): the child is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_half_closed_call_kills_the_child() {
    let s = server().await;
    let mut link = connect(&s.address.parse::<Address>().unwrap()).await.unwrap();
    link.tx.send(start_envelope(1, argv(&["sleep", "30"]))).await.unwrap();
    drop(link.tx);
    let frame = tokio::time::timeout(Duration::from_secs(10), link.rx.recv()).await.unwrap().unwrap();
    let pid = started_pid(&frame).expect("Started");
    // Half-closed only: it is running (that a half-close lets a child run to its end is
    // `half_close_after_start_delivers_output_and_exited_then_ends`).
    assert!(alive(pid), "a half-close is not a disconnect");
    drop(link.rx);
    wait_gone(pid).await;
}

fn grpc_client(address: &str, mode: &str, frames: &[Bytes]) -> tokio::process::Child {
    let python = tracewire_testkit::python().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/grpc_client.py");
    let hex = frames.iter().map(|f| {
        f.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    });
    tokio::process::Command::new(python)
        .arg(script)
        .arg(address)
        .arg(mode)
        .args(hex)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// The grpcio client's lines: the frames it received and its final status.
async fn client_lines(child: &mut tokio::process::Child) -> (Vec<Vec<u8>>, Option<String>) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut frames, mut status) = (Vec::new(), None);
    while let Some(line) = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap() {
        match line.split_once(' ') {
            Some(("frame", hex)) => frames.push(unhex(hex)),
            Some(("status", code)) => status = Some(code.to_owned()),
            _ => panic!("unexpected line {line:?}"),
        }
    }
    (frames, status)
}

/// A grpcio client whose request iterator ends after Start (grpcio then half-closes):
/// the output, Exited, then status OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcio_client_that_half_closes_gets_output_exited_and_status_ok() {
    let s = server().await;
    let mut client = grpc_client(&s.address, "half-close", &[start_envelope(1, argv(&SLEEP_THEN_ECHO))]);
    let (frames, status) = client_lines(&mut client).await;
    let got: Vec<String> = frames.iter().map(|f| describe(f)).collect();
    assert_finished(&got);
    assert_eq!(status.as_deref(), Some("OK"));
    assert!(client.wait().await.unwrap().success());
}

/// A grpcio client killed (SIGKILL, by its pid) with its stream open: the connection is
/// lost, the child is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_grpcio_client_has_its_child_killed() {
    let s = server().await;
    let mut client = grpc_client(&s.address, "hold", &[start_envelope(1, argv(&["sleep", "30"]))]);
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let pid = started_pid(&unhex(line.strip_prefix("frame ").unwrap())).expect("Started");
    assert!(alive(pid));
    client.start_kill().unwrap();
    client.wait().await.unwrap();
    wait_gone(pid).await;
}
