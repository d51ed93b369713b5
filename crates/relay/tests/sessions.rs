//! Relay sessions over time and in parallel, through a real relay on loopback: many
//! clients on one session (each on its own virtual stream), misbehaving clients followed
//! by good ones, idle resets, and typed Resets that always reach the peer.
//!
//! Raw peers speak the relay's gRPC stream with tonic's generated client and run Noise
//! with snow themselves, so they can do what the library never does (tamper with a record,
//! go silent, hang up mid-message).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracewire_exec::{Event, ExecClient, ExecConfig, ExecServer};
use tracewire_proto::relay_service::relay_client::RelayClient;
use tracewire_proto::v1::{Data, Handshake, Heartbeat, Hello, RelayFrame, ResetReason, Role, relay_frame::Kind};
use tracewire_relay::{Keypair, NoiseConfig, RelayConfig, RelayEndpoint, RelayError, RelayListener};
use tracewire_rpc::ServerConfig;
use tracewire_testkit::{eventually_async, eventually_some_async};

use common::{TestRelay, argv, client, relay, run};

const TOKEN: &str = "tok";

/// A relay with a token, a short idle timeout and fast heartbeats.
fn config(idle: Duration) -> RelayConfig {
    let mut c = RelayConfig::default();
    c.token = Some(TOKEN.into());
    c.idle_timeout = idle;
    c.heartbeat = Duration::from_millis(50);
    c
}

fn endpoint(relay: &TestRelay, session: &str) -> RelayEndpoint {
    let mut ep = RelayEndpoint::new(relay.address.clone(), session);
    ep.token = Some(TOKEN.into());
    ep.heartbeat = Duration::from_millis(50);
    ep
}

/// An exec-server behind the relay; stops (and detaches) when the sender is dropped.
fn exec_server(ep: RelayEndpoint, kp: Keypair) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handler = Arc::new(ExecServer::new(ExecConfig::default()));
    tokio::spawn(tracewire_relay::serve_via_relay(ep, kp, handler, ServerConfig::default(), async {
        let _ = stopped.await;
    }));
    stop
}

/// A client that retries while the server has not attached yet.
async fn client_when_ready(ep: &RelayEndpoint, key: &[u8; 32]) -> ExecClient {
    eventually_some_async(Duration::from_secs(10), move || async move {
        match client(ep, key).await {
            Ok(c) => Some(c),
            Err(e) if e.is_retryable() => None,
            Err(e) => panic!("connect: {e}"),
        }
    })
    .await
    .expect("connect: still retryable after 10 s")
}

async fn echo(c: &ExecClient, word: &str) -> Vec<u8> {
    run(c, &["echo", word]).await.stdout
}

/// Waits (with a deadline) until `f` holds.
async fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    eventually_async(within, || {
        let holds = f();
        async move { holds }
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
}

// ---------------------------------------------------------------------------------------
// Raw peers.

/// A raw attachment: frames out, frames in.
struct Raw {
    tx: mpsc::Sender<RelayFrame>,
    rx: tonic::Streaming<RelayFrame>,
    _channel: Channel,
}

fn frame(kind: Kind, stream: u64) -> RelayFrame {
    RelayFrame { kind: Some(kind), stream }
}

async fn raw(relay: &TestRelay, session: &str, role: Role, token: &str) -> Raw {
    let channel = Endpoint::from_shared(format!("http://{}", relay.address)).unwrap().connect().await.unwrap();
    let (tx, rx) = mpsc::channel(64);
    let hello = Hello { session_id: session.into(), role: role.into(), attach_token: token.into() };
    tx.send(frame(Kind::Hello(hello), 0)).await.unwrap();
    let mut client = RelayClient::new(channel.clone()).max_decoding_message_size(1 << 20);
    let rx = client.attach(ReceiverStream::new(rx)).await.unwrap().into_inner();
    Raw { tx, rx, _channel: channel }
}

impl Raw {
    /// The next frame that is not a heartbeat (`None`: the stream ended), within 10 s.
    async fn next(&mut self) -> Option<RelayFrame> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match self.rx.next().await {
                    Some(Ok(RelayFrame { kind: Some(Kind::Heartbeat(_)), .. })) => {}
                    Some(Ok(f)) => return Some(f),
                    _ => return None,
                }
            }
        })
        .await
        .expect("a frame or the end of the stream within 10 s")
    }

    /// The Reset this attachment receives (skipping anything else) within 10 s.
    async fn reset(&mut self) -> (ResetReason, u64) {
        loop {
            match self.next().await {
                Some(RelayFrame { kind: Some(Kind::Reset(r)), stream }) => {
                    return (ResetReason::try_from(r.reason).unwrap(), stream);
                }
                Some(_) => {}
                None => panic!("the stream ended without a Reset"),
            }
        }
    }
}

fn noise_params() -> snow::params::NoiseParams {
    NoiseConfig::default().protocol_name().parse().unwrap()
}

/// A raw client's handshake (Noise IK, the library's default) with the server `server`.
async fn raw_handshake(raw: &mut Raw, session: &str, server: &[u8; 32]) -> snow::StatelessTransportState {
    let ours = Keypair::generate().unwrap();
    let prologue = tracewire_relay::prologue(session);
    let mut hs = snow::Builder::new(noise_params())
        .local_private_key(&ours.private)
        .unwrap()
        .prologue(&prologue)
        .unwrap()
        .remote_public_key(server)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut buf = vec![0u8; 65535];
    let n = hs.write_message(&[], &mut buf).unwrap();
    raw.tx.send(frame(Kind::Handshake(Handshake { message: Bytes::copy_from_slice(&buf[..n]) }), 0)).await.unwrap();
    let Some(RelayFrame { kind: Some(Kind::Handshake(h)), .. }) = raw.next().await else {
        panic!("no handshake reply")
    };
    let mut scratch = vec![0u8; 65535];
    hs.read_message(&h.message, &mut scratch).unwrap();
    hs.into_stateless_transport_mode().unwrap()
}

/// Record `seq` of `plaintext`, sealed as the last (or not) fragment of its message.
fn sealed(t: &snow::StatelessTransportState, seq: u64, plaintext: &[u8], last: bool) -> Bytes {
    let mut out = vec![0u8; plaintext.len() + 16];
    let n = t.write_message(2 * seq + u64::from(last), plaintext, &mut out).unwrap();
    out.truncate(n);
    Bytes::from(out)
}

fn data(seq: u64, record: Bytes, last_fragment: bool, stream: u64) -> RelayFrame {
    frame(Kind::Data(Data { seq, record, last_fragment, traceparent: String::new() }), stream)
}

// ---------------------------------------------------------------------------------------
// Item: many clients on one session.

/// A client, on a task of its own, running `script` and reading its output forever;
/// returns the task once the first output arrived (for a test to abort it mid-stream).
async fn streaming_client(ep: &RelayEndpoint, key: &[u8; 32], script: &'static str) -> tokio::task::JoinHandle<()> {
    let (streaming, streamed) = tokio::sync::oneshot::channel();
    let (ep, key) = (ep.clone(), *key);
    let task = tokio::spawn(async move {
        let c = client(&ep, &key).await.unwrap();
        let mut p = c.start(argv(&["sh", "-c", script])).await.unwrap();
        let mut streaming = Some(streaming);
        loop {
            if let Some(Event::Output { .. }) = p.next_event().await
                && let Some(s) = streaming.take()
            {
                let _ = s.send(());
            }
        }
    });
    streamed.await.unwrap();
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients_share_one_session_and_a_killed_one_disturbs_none() {
    let r = relay(config(Duration::from_secs(30))).await;
    let ep = endpoint(&r, "many");
    let kp = Keypair::generate().unwrap();
    let key = kp.public;
    let _server = exec_server(ep.clone(), kp);
    let _first = client_when_ready(&ep, &key).await;

    // One client streams from a long command; its task is aborted once it has output.
    let victim = streaming_client(&ep, &key, "while :; do echo streaming; sleep 0.05; done").await;

    // Fifty clients at once, each with its own handshake, stream and output; the victim
    // is killed while they run.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let ep = ep.clone();
        tasks.push(tokio::spawn(async move {
            let c = client(&ep, &key).await.unwrap_or_else(|e| panic!("client {i}: {e}"));
            let word = format!("client-{i}-{}", i * 7919);
            let out = run(&c, &["sh", "-c", &format!("sleep 0.{}; echo {word}", i % 5)]).await;
            assert_eq!(out.status.code, Some(0), "client {i}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{word}\n"), "client {i}");
        }));
        if i == 10 {
            // Killed mid-stream: its task, client and link simply go away.
            victim.abort();
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every one of them left its stream; only the first client remains.
    eventually("the clients' streams are closed", Duration::from_secs(10), || r.server.clients("many") == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_aborted_mid_stream_does_not_disturb_another_streaming_client() {
    let r = relay(config(Duration::from_secs(30))).await;
    let ep = endpoint(&r, "abort");
    let kp = Keypair::generate().unwrap();
    let key = kp.public;
    let _server = exec_server(ep.clone(), kp);
    let steady = client_when_ready(&ep, &key).await;
    let mut steady_p =
        steady.start(argv(&["sh", "-c", "for i in 1 2 3 4 5 6; do echo tick$i; sleep 0.1; done"])).await.unwrap();
    // A second client's task is aborted while its command streams.
    let doomed = streaming_client(&ep, &key, "while :; do echo spam; sleep 0.01; done").await;
    doomed.abort();
    let mut out = Vec::new();
    loop {
        match steady_p.next_event().await {
            Some(Event::Output { data, .. }) => out.extend_from_slice(&data),
            Some(Event::Exited(status)) => {
                assert_eq!(status.code, Some(0));
                break;
            }
            None => panic!("the steady client's stream ended"),
        }
    }
    assert_eq!(String::from_utf8(out).unwrap(), "tick1\ntick2\ntick3\ntick4\ntick5\ntick6\n");
    assert_eq!(echo(&steady, "still-here").await, b"still-here\n");
    eventually("the aborted client's stream is closed", Duration::from_secs(10), || r.server.clients("abort") == 1)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_answers_a_typed_retryable_reset_and_a_second_server_role_taken() {
    let mut cfg = config(Duration::from_secs(30));
    cfg.max_clients_per_session = 3;
    let r = relay(cfg).await;
    let ep = endpoint(&r, "full");
    let kp = Keypair::generate().unwrap();
    let key = kp.public;
    let _server = exec_server(ep.clone(), kp.clone());
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(client_when_ready(&ep, &key).await);
    }
    let Err(err) = client(&ep, &key).await else { panic!("a fourth client is refused") };
    assert!(matches!(err, RelayError::Reset { reason: ResetReason::SessionFull, .. }), "{err:?}");
    assert!(err.is_retryable());
    // One leaves: a retry gets in, and works.
    drop(held.pop());
    let c = client_when_ready(&ep, &key).await;
    assert_eq!(echo(&c, "in").await, b"in\n");
    for c in &held {
        assert_eq!(echo(c, "held").await, b"held\n");
    }
    // A second server of the same session is still refused.
    let mut second = RelayListener::bind(&ep, &kp).await.unwrap();
    let err = second.accept().await.unwrap_err();
    assert!(matches!(err, RelayError::Reset { reason: ResetReason::RoleTaken, .. }), "{err:?}");
    assert!(!err.is_retryable());
}

// ---------------------------------------------------------------------------------------
// Item: misbehaving clients never wedge a session.

/// One misbehaving client, observed until the relay or the server has dealt with it.
async fn misbehave(kind: u64, r: &TestRelay, ep: &RelayEndpoint, key: &[u8; 32]) -> &'static str {
    let session = ep.session.as_str();
    match kind {
        0 => {
            let other = Keypair::generate().unwrap().public;
            let err = tracewire_relay::connect(ep, &other).await.expect_err("a wrong key fails");
            assert!(matches!(err, RelayError::Reset { reason: ResetReason::HandshakeFailed, .. }), "{err:?}");
            "wrong server key"
        }
        1 => {
            let mut bad = ep.clone();
            bad.token = Some("not-the-token".into());
            let err = tracewire_relay::connect(&bad, key).await.expect_err("a bad token fails");
            assert!(matches!(err, RelayError::Reset { reason: ResetReason::BadToken, .. }), "{err:?}");
            "bad token"
        }
        2 => {
            let mut raw = raw(r, session, Role::Client, TOKEN).await;
            let t = raw_handshake(&mut raw, session, key).await;
            let mut record = sealed(&t, 0, b"\x0a\x00", true).to_vec();
            record[0] ^= 1;
            raw.tx.send(data(0, Bytes::from(record), true, 0)).await.unwrap();
            assert_eq!(raw.reset().await, (ResetReason::DecryptFailed, 0));
            "tampered record"
        }
        3 => {
            let mut raw = raw(r, session, Role::Client, TOKEN).await;
            let t = raw_handshake(&mut raw, session, key).await;
            // The first half of a message, then the connection goes away.
            raw.tx.send(data(0, sealed(&t, 0, &[7; 100], false), false, 0)).await.unwrap();
            drop(raw);
            "abrupt close mid-message"
        }
        4 => {
            let c = client(ep, key).await.unwrap();
            let mut p = c.start(argv(&["sh", "-c", "echo going; sleep 30"])).await.unwrap();
            while !matches!(p.next_event().await, Some(Event::Output { .. })) {}
            drop(p);
            drop(c);
            "client gone mid-stream"
        }
        _ => {
            let mut raw = raw(r, session, Role::Client, TOKEN).await;
            let t = raw_handshake(&mut raw, session, key).await;
            drop(t);
            // Silent from here on: the relay resets it.
            assert_eq!(raw.reset().await, (ResetReason::Idle, 0));
            "idle until reset"
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_rounds_of_a_misbehaving_client_then_a_good_one_never_wedge_the_session() {
    // An idle timeout of 1 s compresses the production 30 s: delays of 0-1333 ms stand for
    // 0-40 s, before and after a misbehaving client's stream idles out. (Shorter timeouts
    // reset good clients that a loaded 2-core machine stalls for longer than that.)
    let idle = Duration::from_secs(1);
    let r = relay(config(idle)).await;
    let ep = endpoint(&r, "rounds");
    let kp = Keypair::generate().unwrap();
    let key = kp.public;
    let server = exec_server(ep.clone(), kp);
    drop(client_when_ready(&ep, &key).await);
    // Seeded, so that a failing round can be replayed.
    let mut rng = tracewire_testkit::SplitMix64::new(0x7261_6e64_6f6d_2131);
    for round in 0..50 {
        let kind = rng.next_u64() % 6;
        let what = misbehave(kind, &r, &ep, &key).await;
        tokio::time::sleep(Duration::from_millis(rng.next_u64() % 1334)).await;
        let c = tokio::time::timeout(Duration::from_secs(10), client(&ep, &key))
            .await
            .unwrap_or_else(|_| panic!("round {round} after {what}: no answer"))
            .unwrap_or_else(|e| panic!("round {round} after {what}: {e}"));
        let word = format!("round-{round}");
        let out = tokio::time::timeout(Duration::from_secs(10), echo(&c, &word))
            .await
            .unwrap_or_else(|_| panic!("round {round} after {what}: the exec hangs"));
        assert_eq!(out, format!("{word}\n").as_bytes(), "round {round} after {what}");
        drop(c);
    }
    drop(server);
    eventually("the relay's session table empties", Duration::from_secs(10), || r.server.sessions() == 0).await;
}

// ---------------------------------------------------------------------------------------
// Item: idle resets.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_reset_idle_while_the_relays_heartbeats_flow() {
    let idle = Duration::from_millis(500);
    let r = relay(config(idle)).await;
    let started = Instant::now();
    let mut silent = raw(&r, "idle", Role::Client, TOKEN).await;
    let mut heartbeats = 0;
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(5), silent.rx.next()).await.expect("reset within 5 s") {
            Some(Ok(RelayFrame { kind: Some(Kind::Heartbeat(_)), .. })) => heartbeats += 1,
            Some(Ok(RelayFrame { kind: Some(Kind::Reset(reset)), .. })) => break reset.reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    let after = started.elapsed();
    assert_eq!(ResetReason::try_from(reason).unwrap(), ResetReason::Idle);
    assert!(heartbeats >= 3, "the relay's heartbeats flowed ({heartbeats}) and did not count as activity");
    assert!(after + Duration::from_millis(20) >= idle, "reset after {after:?}, before the idle timeout");
    assert!(after < idle + Duration::from_millis(1500), "reset after {after:?}");
    assert!(silent.next().await.is_none(), "the stream closes after the Reset");
    eventually("the session is forgotten", Duration::from_secs(5), || r.server.sessions() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_sending_heartbeats_is_not_reset_until_it_stops() {
    // Heartbeats every 60 ms against a 1 s timeout: a loaded machine may stall this task for
    // a while without making the client really silent.
    let idle = Duration::from_secs(1);
    let r = relay(config(idle)).await;
    let mut live = raw(&r, "beating", Role::Client, TOKEN).await;
    let beating = Instant::now();
    while beating.elapsed() < idle * 5 {
        live.tx.send(frame(Kind::Heartbeat(Heartbeat {}), 0)).await.unwrap();
        let quiet = tokio::time::sleep(Duration::from_millis(60));
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                () = &mut quiet => break,
                f = live.rx.next() => match f {
                    Some(Ok(RelayFrame { kind: Some(Kind::Heartbeat(_)), .. })) => {}
                    other => panic!("a heartbeating client got {other:?} after {:?}", beating.elapsed()),
                },
            }
        }
    }
    // Silent from now on: reset within the idle timeout and some slack.
    let stopped = Instant::now();
    assert_eq!(live.reset().await, (ResetReason::Idle, 0));
    assert!(stopped.elapsed() < idle + Duration::from_millis(1500), "{:?}", stopped.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_reset_idle_and_its_clients_learn_it() {
    let idle = Duration::from_millis(500);
    let r = relay(config(idle)).await;
    let mut server = raw(&r, "quiet-server", Role::Server, TOKEN).await;
    let ep = endpoint(&r, "quiet-server");
    let key = Keypair::generate().unwrap().public;
    // A client's handshake reaches the (silent) server, which never answers.
    let pending = tokio::spawn(async move { tracewire_relay::connect(&ep, &key).await.err() });
    let Some(RelayFrame { kind: Some(Kind::Handshake(_)), stream }) = server.next().await else { panic!() };
    assert_ne!(stream, 0);
    assert_eq!(server.reset().await, (ResetReason::Idle, 0));
    let err = pending.await.unwrap().expect("the client's handshake fails");
    assert!(matches!(err, RelayError::Reset { reason: ResetReason::PeerGone, .. }), "{err:?}");
    eventually("the session is forgotten", Duration::from_secs(5), || r.server.sessions() == 0).await;
}

// ---------------------------------------------------------------------------------------
// Item: a typed Reset always reaches the peer.

/// 20 runs: a record the server end cannot authenticate (the last-fragment flag flipped)
/// gets the client `DECRYPT_FAILED` every time, never only the end of its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_failed_found_by_the_server_end_reaches_the_client_every_time() {
    let r = relay(config(Duration::from_secs(30))).await;
    let ep = endpoint(&r, "tamper-server");
    let kp = Keypair::generate().unwrap();
    let key = kp.public;
    let _server = exec_server(ep.clone(), kp);
    drop(client_when_ready(&ep, &key).await);
    for run in 0..20 {
        let mut raw = raw(&r, "tamper-server", Role::Client, TOKEN).await;
        let t = raw_handshake(&mut raw, "tamper-server", &key).await;
        // Sealed as a middle fragment, sent as the last one: the nonce disagrees.
        raw.tx.send(data(0, sealed(&t, 0, b"\x0a\x00", false), true, 0)).await.unwrap();
        assert_eq!(raw.reset().await, (ResetReason::DecryptFailed, 0), "run {run}");
        assert!(raw.next().await.is_none(), "run {run}: the stream closes after the Reset");
    }
    let c = client(&ep, &key).await.unwrap();
    assert_eq!(echo(&c, "after").await, b"after\n");
}

/// 20 runs: a record the client end cannot authenticate gets the server `DECRYPT_FAILED`
/// on that client's stream every time: the client keeps its HTTP/2 stream open until the
/// relay has the Reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_failed_found_by_the_client_end_reaches_the_server_every_time() {
    let r = relay(config(Duration::from_secs(30))).await;
    let session = "tamper-client";
    let ep = endpoint(&r, session);
    let kp = Keypair::generate().unwrap();
    let mut server = raw(&r, session, Role::Server, TOKEN).await;
    for run in 0..20 {
        let (ep, key) = (ep.clone(), kp.public);
        let connecting = tokio::spawn(async move { tracewire_relay::connect(&ep, &key).await });
        // The server's side of the handshake, by hand.
        let Some(RelayFrame { kind: Some(Kind::Handshake(h)), stream }) = server.next().await else { panic!() };
        let mut hs = snow::Builder::new(noise_params())
            .local_private_key(&kp.private)
            .unwrap()
            .prologue(&tracewire_relay::prologue(session))
            .unwrap()
            .build_responder()
            .unwrap();
        let mut buf = vec![0u8; 65535];
        hs.read_message(&h.message, &mut buf).unwrap();
        let n = hs.write_message(&[], &mut buf).unwrap();
        let reply = Handshake { message: Bytes::copy_from_slice(&buf[..n]) };
        server.tx.send(frame(Kind::Handshake(reply), stream)).await.unwrap();
        let t = hs.into_stateless_transport_mode().unwrap();
        let link = connecting.await.unwrap().unwrap();
        let mut status = link.status.clone();
        // A record whose cleartext flag disagrees with the sealed one.
        let flipped = if run % 2 == 0 { (false, true) } else { (true, false) };
        server.tx.send(data(0, sealed(&t, 0, b"\x0a\x00", flipped.0), flipped.1, stream)).await.unwrap();
        assert_eq!(server.reset().await, (ResetReason::DecryptFailed, stream), "run {run}");
        tokio::time::timeout(Duration::from_secs(5), status.wait_for(Option::is_some)).await.unwrap().unwrap();
        assert!(
            matches!(*status.borrow(), Some(RelayError::Frame(tracewire_relay::FrameError::DecryptFailed(0)))),
            "run {run}: {:?}",
            *status.borrow()
        );
        drop(link);
    }
}

// ---------------------------------------------------------------------------------------
// Item: the end of a direction (`Close`) on the wire.

/// A `Close` after a whole message ends the client's direction: the server end answers,
/// delivers the process's output and Exited, then closes its own direction (`Close` on
/// the client's stream) and never resets it. A `Close` that cuts a message (after a
/// middle fragment) is refused with `PROTOCOL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_a_direction_on_the_wire_and_one_that_cuts_a_message_is_refused() {
    use prost::Message;
    use tracewire_proto::v1::{Close, Envelope, Request, envelope::Body, request::Method};
    let r = relay(config(Duration::from_secs(30))).await;
    let session = "close-wire";
    let ep = endpoint(&r, session);
    let kp = Keypair::generate().unwrap();
    let key = kp.public;
    let _server = exec_server(ep.clone(), kp);
    drop(client_when_ready(&ep, &key).await);

    let mut raw_client = raw(&r, session, Role::Client, TOKEN).await;
    let t = raw_handshake(&mut raw_client, session, &key).await;
    let start = Request { method: Some(Method::Start(argv(&["echo", "closed"]))) };
    let env = Envelope { id: 1, body: Some(Body::Request(start)), ..Envelope::default() }.encode_to_vec();
    raw_client.tx.send(data(0, sealed(&t, 0, &env, true), true, 0)).await.unwrap();
    raw_client.tx.send(frame(Kind::Close(Close {}), 0)).await.unwrap();
    let mut records = 0;
    loop {
        match raw_client.next().await {
            Some(RelayFrame { kind: Some(Kind::Data(_)), .. }) => records += 1,
            Some(RelayFrame { kind: Some(Kind::Close(_)), stream: 0 }) => break,
            other => panic!("expected records then Close, got {other:?}"),
        }
    }
    // Started, Output, Exited.
    assert!(records >= 3, "{records} records");

    let mut cutting = raw(&r, session, Role::Client, TOKEN).await;
    let t = raw_handshake(&mut cutting, session, &key).await;
    cutting.tx.send(data(0, sealed(&t, 0, &env[..4], false), false, 0)).await.unwrap();
    cutting.tx.send(frame(Kind::Close(Close {}), 0)).await.unwrap();
    assert_eq!(cutting.reset().await, (ResetReason::Protocol, 0));

    let c = client(&ep, &key).await.unwrap();
    assert_eq!(echo(&c, "after").await, b"after\n");
}
