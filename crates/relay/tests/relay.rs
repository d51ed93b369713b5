//! The exec RPC end to end through a real relay on loopback: encryption, pairing, faults.

mod common;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tracewire_exec::{ExecClient, ExecConfig, ExecServer};
use tracewire_proto::v1::ResetReason;
use tracewire_relay::{Keypair, NoiseConfig, Pattern, RelayConfig, RelayEndpoint, RelayError, RelayServer, Suite};
use tracewire_rpc::{Client, ClientConfig, ServerConfig};
use tracewire_testkit::eventually_some_async;

use common::{TestRelay, argv, client, relay, relay_on, run, tapped_relay};

fn endpoint(relay: &TestRelay, session: &str) -> RelayEndpoint {
    RelayEndpoint::new(relay.address.clone(), session)
}

/// Starts an exec-server behind the relay; returns its public key.
fn exec_server(ep: RelayEndpoint) -> [u8; 32] {
    let kp = Keypair::generate().unwrap();
    let public = kp.public;
    let handler = Arc::new(ExecServer::new(ExecConfig::default()));
    tokio::spawn(tracewire_relay::serve_via_relay(ep, kp, handler, ServerConfig::default(), std::future::pending()));
    public
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_exec_through_the_relay_for_every_pattern_and_suite() {
    let r = relay(RelayConfig::default()).await;
    for (i, (pattern, suite)) in
        [(Pattern::Ik, Suite::AesGcm), (Pattern::Xx, Suite::AesGcm), (Pattern::Ik, Suite::ChaChaPoly)]
            .into_iter()
            .enumerate()
    {
        let mut ep = endpoint(&r, &format!("s{i}"));
        ep.noise = NoiseConfig { pattern, suite };
        let key = exec_server(ep.clone());
        let c = client(&ep, &key).await.unwrap();
        let out = run(&c, &["sh", "-c", "echo through; exit 5"]).await;
        assert_eq!(out.stdout, b"through\n", "{pattern:?} {suite:?}");
        assert_eq!(out.status.code, Some(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_never_sees_plaintext() {
    let r = tapped_relay(RelayConfig::default()).await;
    let mut ep = endpoint(&r, "secret");
    ep.expose_traceparent = true;
    let key = exec_server(ep.clone());
    let c = client(&ep, &key).await.unwrap();
    let marker = "ZEBRA-7f3a9c-MARKER";
    let out = run(&c, &["sh", "-c", &format!("echo {marker}; echo {marker} >&2")]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(marker), "the command ran");
    let frames = r.frames.lock().unwrap();
    assert!(frames.len() > 4, "the relay saw the session's frames");
    let all: Vec<u8> = frames.iter().flatten().copied().collect();
    let needle = marker.as_bytes();
    assert!(!all.windows(needle.len()).any(|w| w == needle), "the marker crossed the relay in cleartext");
    assert!(!all.windows(4).any(|w| w == b"echo"), "command text crossed the relay in cleartext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_static_key_fails_the_handshake() {
    let r = relay(RelayConfig::default()).await;
    for pattern in [Pattern::Ik, Pattern::Xx] {
        let mut ep = endpoint(&r, &format!("wrong-{pattern:?}"));
        ep.noise.pattern = pattern;
        let _real = exec_server(ep.clone());
        let other = Keypair::generate().unwrap().public;
        let err = tracewire_relay::connect(&ep, &other).await.unwrap_err();
        match pattern {
            // IK: the server cannot decrypt the first message and resets the session.
            Pattern::Ik => {
                assert!(matches!(err, RelayError::Reset { reason: ResetReason::HandshakeFailed, .. }), "{err:?}");
            }
            // XX: the handshake completes, and the client refuses the unpinned key.
            Pattern::Xx => assert_eq!(err, RelayError::WrongKey),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_without_the_token_is_refused() {
    let mut config = RelayConfig::default();
    config.token = Some("s3cret-token".into());
    let r = relay(config).await;
    let ep = endpoint(&r, "t");
    let key = Keypair::generate().unwrap().public;
    let err = tracewire_relay::connect(&ep, &key).await.unwrap_err();
    assert!(matches!(err, RelayError::Reset { reason: ResetReason::BadToken, .. }), "{err:?}");
    let mut ep = endpoint(&r, "t");
    ep.token = Some("s3cret-tokeN".into());
    let err = tracewire_relay::connect(&ep, &key).await.unwrap_err();
    assert!(matches!(err, RelayError::Reset { reason: ResetReason::BadToken, .. }), "{err:?}");
    // With the token: works.
    let mut ep = endpoint(&r, "t2");
    ep.token = Some("s3cret-token".into());
    let key = exec_server(ep.clone());
    let c = client(&ep, &key).await.unwrap();
    assert_eq!(run(&c, &["true"]).await.status.code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_through_the_relay_with_a_matching_hash() {
    let r = relay(RelayConfig::default()).await;
    let ep = endpoint(&r, "big");
    let key = exec_server(ep.clone());
    let c = client(&ep, &key).await.unwrap();
    let n = 64 << 20;
    let script = format!("head -c {n} /dev/urandom | tee /dev/stderr | sha256sum | cut -d' ' -f1");
    let out = run(&c, &["sh", "-c", &script]).await;
    assert_eq!(out.stderr.len(), n);
    let ours = Sha256::digest(&out.stderr).iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write;
        let _ = write!(s, "{b:02x}");
        s
    });
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), ours);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_going_away_mid_session_is_a_typed_error_and_ends_can_reconnect() {
    let (listener, addr) = RelayServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let r = relay_on(listener, addr.to_string(), RelayConfig::default(), false);
    let ep = endpoint(&r, "restart");
    let key = exec_server(ep.clone());
    let link = tracewire_relay::connect(&ep, &key).await.unwrap();
    let mut status = link.status.clone();
    let c = ExecClient::new(Client::new(link, ClientConfig::default()));
    let p = c.start(argv(&["sleep", "30"])).await.unwrap();
    drop(r); // the relay stops
    let waited = tokio::time::timeout(Duration::from_secs(15), p.wait_with_output()).await.expect("no hang");
    assert!(waited.is_err(), "the client learns the session ended");
    tokio::time::timeout(Duration::from_secs(15), status.wait_for(Option::is_some)).await.expect("no hang").unwrap();
    assert!(status.borrow().is_some());
    // A relay on the same address again: both ends reconnect (the server re-attaches).
    let listener = eventually_some_async(Duration::from_secs(10), move || async move {
        tokio::net::TcpListener::bind(addr).await.ok()
    })
    .await
    .expect("the relay's address is free again");
    let _r2 = relay_on(listener, addr.to_string(), RelayConfig::default(), false);
    // The server re-attaches with its own backoff; the client retries until it has.
    let (ep, key) = (&ep, &key);
    let c = eventually_some_async(Duration::from_secs(10), move || async move { client(ep, key).await.ok() })
        .await
        .expect("the client reconnects through the new relay");
    assert_eq!(run(&c, &["echo", "back"]).await.stdout, b"back\n");
}
