//! A relay on a loopback port with one RPC server attached to a session: the set-up that
//! tests, benchmarks and demos of a server behind a relay share.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::oneshot;
use tracewire_rpc::{Handler, ServerConfig};

use crate::{Keypair, RelayConfig, RelayEndpoint, RelayError, RelayLink, RelayServer};

/// A relay on `127.0.0.1` (a free port) and a server attached to one of its sessions
/// through [`serve_via_relay`](crate::serve_via_relay), with a fresh static key.
/// [`LoopbackRelay::start`] returns once the server is attached, so a client's first
/// [`connect`](LoopbackRelay::connect) reaches it. Dropping this stops both (the relay
/// resets its sessions); [`LoopbackRelay::detach`] lets them run until the runtime ends.
///
/// ```
/// use std::sync::Arc;
/// use tracewire_relay::{LoopbackRelay, RelayConfig, RelayEndpoint};
///
/// # #[derive(Clone)] struct Echo;
/// # impl tracewire_rpc::Handler for Echo {
/// #     async fn handle(&self, _: tracewire_proto::v1::Request, _: &tracewire_rpc::Connection)
/// #         -> Result<tracewire_proto::v1::Response, tracewire_rpc::RpcError> { Ok(Default::default()) }
/// # }
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let mut ep = RelayEndpoint::new("", "demo"); // the relay's address is filled in
/// ep.expose_traceparent = true;
/// let relay = LoopbackRelay::start(RelayConfig::default(), ep, Arc::new(Echo), Default::default()).await?;
/// assert!(relay.relay.has_server("demo"));
/// let link = relay.connect().await?; // the handshake with the attached server
/// assert!(link.status.borrow().is_none());
/// # Ok::<(), tracewire_relay::RelayError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct LoopbackRelay {
    /// The relay (for its session and client counts).
    pub relay: RelayServer,
    /// Where the relay listens.
    pub address: SocketAddr,
    /// The endpoint the server attached with; a client connects with it.
    pub endpoint: RelayEndpoint,
    /// The attached server's static public key, for a client to pin.
    pub server_public: [u8; 32],
    /// Dropped: the relay and the server stop.
    stop: Option<(oneshot::Sender<()>, oneshot::Sender<()>)>,
}

impl LoopbackRelay {
    /// Binds a relay with `config` on `127.0.0.1:0`, attaches `handler` (served with
    /// `rpc`) to `endpoint.session` with a fresh static key, and waits until the relay has
    /// it. `endpoint.relay` is replaced with the relay's address; its other settings
    /// (token, Noise, heartbeat, `expose_traceparent`) are the server's and a client's.
    ///
    /// # Errors
    /// When the relay cannot bind or a key cannot be generated.
    pub async fn start<H: Handler>(
        config: RelayConfig,
        mut endpoint: RelayEndpoint,
        handler: Arc<H>,
        rpc: ServerConfig,
    ) -> Result<Self, RelayError> {
        let (listener, address) = RelayServer::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let relay = RelayServer::new(config);
        let (stop_relay, relay_stopped) = oneshot::channel::<()>();
        tokio::spawn(relay.clone().serve(listener, async {
            let _ = relay_stopped.await;
        }));
        endpoint.relay = address.to_string();
        let keypair = Keypair::generate()?;
        let server_public = keypair.public;
        let (stop_server, server_stopped) = oneshot::channel::<()>();
        tokio::spawn(crate::serve_via_relay(endpoint.clone(), keypair, handler, rpc, async {
            let _ = server_stopped.await;
        }));
        relay.server_attached(&endpoint.session).await;
        Ok(Self { relay, address, endpoint, server_public, stop: Some((stop_server, stop_relay)) })
    }

    /// A client's link to the attached server ([`connect`](crate::connect) with this
    /// endpoint and key).
    ///
    /// # Errors
    /// As [`connect`](crate::connect).
    pub async fn connect(&self) -> Result<RelayLink, RelayError> {
        crate::connect(&self.endpoint, &self.server_public).await
    }

    /// Lets the relay and the server run until the runtime ends.
    pub fn detach(mut self) {
        // Their shutdown futures resolve when these senders are dropped: never, now.
        std::mem::forget(self.stop.take());
    }
}
