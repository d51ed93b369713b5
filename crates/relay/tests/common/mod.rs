//! A relay on a free loopback port and an exec client through it, for the relay's
//! end-to-end tests (`relay.rs`, `sessions.rs`).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use prost::Message;
use tracewire_exec::{ExecClient, ProcessOutput, Start};
use tracewire_relay::{RelayConfig, RelayEndpoint, RelayError, RelayServer};
use tracewire_rpc::{Client, ClientConfig};

/// A relay serving on loopback until dropped.
pub(crate) struct TestRelay {
    /// `127.0.0.1:PORT`.
    pub(crate) address: String,
    pub(crate) server: RelayServer,
    /// Every frame the relay received and forwarded, encoded (empty unless tapped).
    pub(crate) frames: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A relay with `config` on a free loopback port.
pub(crate) async fn relay(config: RelayConfig) -> TestRelay {
    let (listener, addr) = RelayServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    relay_on(listener, addr.to_string(), config, false)
}

/// A relay with `config` on a free loopback port that records every frame in `frames`.
pub(crate) async fn tapped_relay(config: RelayConfig) -> TestRelay {
    let (listener, addr) = RelayServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    relay_on(listener, addr.to_string(), config, true)
}

/// A relay with `config` on a bound listener, recording its frames when `tapped`.
pub(crate) fn relay_on(
    listener: tokio::net::TcpListener,
    address: String,
    config: RelayConfig,
    tapped: bool,
) -> TestRelay {
    let frames = Arc::new(Mutex::new(Vec::new()));
    let mut server = RelayServer::new(config);
    if tapped {
        let seen = Arc::clone(&frames);
        server = server.with_tap(Arc::new(move |f| seen.lock().unwrap().push(f.encode_to_vec())));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.clone().serve(listener, async {
        let _ = stopped.await;
    }));
    TestRelay { address, server, frames, stop: Some(stop) }
}

/// An exec client through the relay to the server whose static key is `key`.
pub(crate) async fn client(ep: &RelayEndpoint, key: &[u8; 32]) -> Result<ExecClient, RelayError> {
    let link = tracewire_relay::connect(ep, key).await?;
    Ok(ExecClient::new(Client::new(link, ClientConfig::default())))
}

/// A `Start` of `argv`, nothing else set.
pub(crate) fn argv(a: &[&str]) -> Start {
    Start { argv: a.iter().map(|s| (*s).to_owned()).collect(), ..Start::default() }
}

/// Runs `command` through `c` to its end.
pub(crate) async fn run(c: &ExecClient, command: &[&str]) -> ProcessOutput {
    c.start(argv(command)).await.unwrap().wait_with_output().await.unwrap()
}
