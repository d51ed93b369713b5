//! A half-close through the relay: a client that sends its last request and drops its
//! link's sending side (gRPC's "no more requests", a `Close` frame on the relay) still gets
//! its process's output and Exited, then the clean end of its link; a client that goes
//! away (drops its whole link, or its receiving side after the half-close) has its
//! processes killed. Real processes behind a real relay on loopback, through a raw
//! `tracewire_rpc` link.

#[path = "../../exec/tests/common/frames.rs"]
mod frames;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracewire_exec::{ExecConfig, ExecServer};
use tracewire_relay::{LoopbackRelay, RelayConfig, RelayEndpoint, RelayLink};
use tracewire_rpc::{Link, ServerConfig};
use tracewire_testkit::eventually_some_async;

use frames::{alive, assert_finished, describe, start_envelope, start_of, started_pid, wait_gone};

const TOKEN: &str = "tok";

/// A relay on a free loopback port, and an exec-server attached to `session`; both stop
/// when the returned relay is dropped.
async fn relay_and_server(session: &str) -> LoopbackRelay {
    let mut config = RelayConfig::default();
    config.token = Some(TOKEN.into());
    config.heartbeat = Duration::from_millis(50);
    let mut ep = RelayEndpoint::new("", session);
    ep.token = Some(TOKEN.into());
    ep.heartbeat = Duration::from_millis(50);
    let handler = Arc::new(ExecServer::new(ExecConfig::default()));
    LoopbackRelay::start(config, ep, handler, ServerConfig::default()).await.unwrap()
}

/// A raw link through the relay (its exec-server is attached: the first attempt succeeds,
/// unless the session is momentarily full, which is retried).
async fn link(relay: &LoopbackRelay) -> RelayLink {
    eventually_some_async(Duration::from_secs(10), move || async move {
        match relay.connect().await {
            Ok(link) => Some(link),
            Err(e) if e.is_retryable() => None,
            Err(e) => panic!("connect: {e}"),
        }
    })
    .await
    .expect("connect: still retryable after 10 s")
}

/// The pid of the process a Start started, read from the link (with a deadline).
async fn started(rx: &mut tokio::sync::mpsc::Receiver<Bytes>) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), rx.recv()).await.expect("no Started").expect("link ended");
        if let Some(pid) = started_pid(&frame) {
            return pid;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_through_the_relay_delivers_output_and_exited_then_ends_cleanly() {
    let relay = relay_and_server("half-close").await;
    let RelayLink { link: Link { tx, mut rx }, status } = link(&relay).await;
    tx.send(start_envelope(1, start_of(&["sh", "-c", "sleep 0.2; echo out"]))).await.unwrap();
    drop(tx); // no more requests
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(frame)) => got.push(describe(&frame)),
            Ok(None) => break,
            Err(tokio::time::error::Elapsed { .. }) => panic!("the link did not end after Exited: {got:?}"),
        }
    }
    assert_finished(&got);
    // A clean end, not a Reset or a broken stream.
    assert_eq!(*status.borrow(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_its_whole_link_has_its_process_killed() {
    let relay = relay_and_server("drop-all").await;
    let RelayLink { link: Link { tx, mut rx }, .. } = link(&relay).await;
    tx.send(start_envelope(1, start_of(&["sleep", "30"]))).await.unwrap();
    let pid = started(&mut rx).await;
    assert!(alive(pid));
    drop((tx, rx));
    wait_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_then_goes_away_has_its_process_killed() {
    let relay = relay_and_server("half-then-gone").await;
    let RelayLink { link: Link { tx, mut rx }, .. } = link(&relay).await;
    tx.send(start_envelope(1, start_of(&["sleep", "30"]))).await.unwrap();
    drop(tx);
    let pid = started(&mut rx).await;
    assert!(alive(pid));
    drop(rx);
    wait_gone(pid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_half_closed_stream_ends_the_session_serves_the_next_client() {
    let relay = relay_and_server("then-next").await;
    for round in 0..3 {
        let RelayLink { link: Link { tx, mut rx }, status } = link(&relay).await;
        tx.send(start_envelope(1, start_of(&["echo", "again"]))).await.unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(frame) =
            tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("the link did not end")
        {
            got.push(describe(&frame));
        }
        got.sort();
        assert_eq!(got, ["Exited:code 0", "Output:again\n", "Started"], "round {round}");
        assert_eq!(*status.borrow(), None);
    }
}
