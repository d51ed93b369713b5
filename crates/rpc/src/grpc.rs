//! The gRPC transport: service `tracewire.v1.Exec`, method `Connect`, one bidirectional
//! stream of envelopes per connection, over TCP or a Unix socket. The stream's metadata
//! carries the caller's `traceparent` too.
//!
//! The client ending its request stream (a half-close) means "no more requests": the
//! server finishes the connection's work, delivers it, and ends the response stream with
//! status OK. A reset (the client dropping the call) or a lost connection cancels the work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracewire_proto::Frame;
use tracewire_proto::exec_service::exec_client::ExecClient;
use tracewire_proto::exec_service::exec_server::{Exec, ExecServer};
use tracing::Instrument;

use crate::RpcError;
use crate::server::{Handler, ServerConfig, serve_until};
use crate::transport::Link;

/// Frames buffered per direction between a gRPC stream and its link.
const LINK_BUFFER: usize = 64;
/// gRPC's own message limit; the RPC layer enforces its smaller envelope limit itself, so
/// that an oversized envelope gets an error response instead of breaking the stream.
const GRPC_MAX_MESSAGE: usize = 256 << 20;

/// Where a server listens or a client connects: `127.0.0.1:7070`,
/// `http://127.0.0.1:7070` or `unix:/path/to.sock`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Address {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::str::FromStr for Address {
    type Err = RpcError;
    fn from_str(s: &str) -> Result<Self, RpcError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(RpcError::Transport("unix: needs a socket path".into()));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let hostport = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        hostport.parse::<SocketAddr>().map(Self::Tcp).map_err(|_| {
            RpcError::Transport(format!("{s:?} is not host:port (an IP address), http://host:port or unix:PATH"))
        })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

struct Service<H> {
    handler: Arc<H>,
    config: ServerConfig,
}

type FrameStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Frame, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<H: Handler> Exec for Service<H> {
    type ConnectStream = FrameStream;

    async fn connect(&self, request: Request<Streaming<Frame>>) -> Result<Response<FrameStream>, Status> {
        // The stream's own context: a connection-level span (debug, so not exported by
        // default) continues the caller's trace from the gRPC metadata.
        let span = tracing::debug_span!(target: "tracewire_rpc", "rpc.connection");
        tracewire_telemetry::set_parent_from(&span, request.metadata());
        let mut inbound = request.into_inner();
        let (in_tx, in_rx) = mpsc::channel::<Bytes>(LINK_BUFFER);
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(LINK_BUFFER);
        let (reset_tx, reset_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            // A half-close (no more requests, the responses go on) or a cancelled connection
            // just stops reading; a reset or a lost connection means the client is gone.
            if pump(&mut inbound, &in_tx).await == StreamEnd::Failed {
                let _ = reset_tx.send(());
            }
        });
        // A reset cancels the connection; a clean end of the requests does not.
        let reset = async move {
            if reset_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::spawn(
            serve_until(Link { tx: out_tx, rx: in_rx }, Arc::clone(&self.handler), self.config, reset).instrument(span),
        );
        // A client that drops the call resets the stream, and the server drops this stream
        // (so the connection's outgoing channel closes, which cancels it too).
        let out = ReceiverStream::new(out_rx).map(|b| Ok(Frame(b)));
        Ok(Response::new(Box::pin(out)))
    }
}

/// How a gRPC stream's inbound side ended for [`pump`].
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// The peer ended its side cleanly (a half-close: no more messages).
    Finished,
    /// A reset or a lost connection.
    Failed,
    /// Nobody takes the frames any more.
    Dropped,
}

/// Moves `inbound`'s frames into `tx` until the stream ends or `tx`'s receiver is dropped.
async fn pump(inbound: &mut Streaming<Frame>, tx: &mpsc::Sender<Bytes>) -> StreamEnd {
    loop {
        tokio::select! {
            next = inbound.message() => match next {
                Ok(Some(frame)) => {
                    if tx.send(frame.0).await.is_err() {
                        return StreamEnd::Dropped;
                    }
                }
                Ok(None) => return StreamEnd::Finished,
                Err(_) => return StreamEnd::Failed,
            },
            () = tx.closed() => return StreamEnd::Dropped,
        }
    }
}

/// A gRPC server bound to its address, ready to run.
#[derive(Debug)]
pub struct BoundServer {
    listener: Listener,
    local: Address,
}

#[derive(Debug)]
enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl BoundServer {
    /// Binds `address` (TCP port 0 picks a free port; see [`BoundServer::local_address`]).
    /// A stale Unix socket file at the path is replaced.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(address: &Address) -> Result<Self, RpcError> {
        match address {
            Address::Tcp(a) => {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| RpcError::Transport(format!("bind {a}: {e}")))?;
                let local = Address::Tcp(l.local_addr().map_err(|e| RpcError::Transport(e.to_string()))?);
                Ok(Self { listener: Listener::Tcp(l), local })
            }
            Address::Unix(p) => {
                if p.exists() {
                    let _ = std::fs::remove_file(p);
                }
                let l = tokio::net::UnixListener::bind(p)
                    .map_err(|e| RpcError::Transport(format!("bind unix:{}: {e}", p.display())))?;
                Ok(Self { listener: Listener::Unix(l, p.clone()), local: address.clone() })
            }
        }
    }

    /// The address actually bound.
    pub fn local_address(&self) -> &Address {
        &self.local
    }

    /// Serves `handler` until `shutdown` resolves, then stops gracefully: the listener is
    /// closed at once (a client arriving later is refused, instead of waiting in its
    /// backlog), every connection is told to go away (HTTP/2 GOAWAY), and this returns once
    /// their streams have ended. Bound that wait yourself if clients may stay.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run<H: Handler>(
        self,
        handler: Arc<H>,
        config: ServerConfig,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), RpcError> {
        let svc = ExecServer::new(Service { handler, config })
            .max_decoding_message_size(GRPC_MAX_MESSAGE)
            .max_encoding_message_size(GRPC_MAX_MESSAGE);
        let router = tonic::transport::Server::builder().add_service(svc);
        // tonic keeps its incoming stream (so the listening socket) until every connection
        // has ended; connections come through a channel instead, which ends, and drops the
        // listener, at `shutdown`. tonic then stops as if signalled.
        let result = match self.listener {
            Listener::Tcp(l) => {
                // Small frames (a Start, an Output line) must not wait for Nagle's algorithm.
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(l).map(|conn| {
                    conn.inspect(|c| {
                        let _ = c.set_nodelay(true);
                    })
                });
                let (tx, rx) = mpsc::channel(1);
                let serve = router.serve_with_incoming_shutdown(ReceiverStream::new(rx), std::future::pending());
                tokio::join!(accept_until(incoming, tx, shutdown), serve).1
            }
            Listener::Unix(l, path) => {
                let (tx, rx) = mpsc::channel(1);
                let serve = router.serve_with_incoming_shutdown(ReceiverStream::new(rx), std::future::pending());
                let incoming = tokio_stream::wrappers::UnixListenerStream::new(l);
                let r = tokio::join!(accept_until(incoming, tx, shutdown), serve).1;
                let _ = std::fs::remove_file(path);
                r
            }
        };
        result.map_err(|e| RpcError::Transport(e.to_string()))
    }
}

/// Passes `listener`'s connections to `tx` until `shutdown` resolves, then drops both (the
/// listening socket closes, the receiving stream ends).
async fn accept_until<C>(
    listener: impl tokio_stream::Stream<Item = std::io::Result<C>>,
    tx: mpsc::Sender<std::io::Result<C>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut listener = std::pin::pin!(listener);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            conn = listener.next() => match conn {
                Some(conn) => {
                    if tx.send(conn).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
}

/// Connects to a gRPC exec server and opens one `Connect` stream, as a [`Link`]. The
/// current span's context is sent in the stream's metadata.
///
/// Dropping the link's `tx` half-closes the stream ("no more requests"): the server still
/// finishes what was started and delivers it, then ends the stream, so `rx` yields the
/// rest and then `None`. Dropping `rx` resets the stream, which cancels the connection's
/// work on the server.
///
/// # Errors
/// [`RpcError::Transport`] when the server cannot be reached.
pub async fn connect(address: &Address) -> Result<Link, RpcError> {
    let channel = match address {
        Address::Tcp(a) => tonic::transport::Endpoint::from_shared(format!("http://{a}"))
            .map_err(|e| RpcError::Transport(e.to_string()))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| RpcError::Transport(format!("connect {a}: {e}")))?,
        Address::Unix(p) => {
            let path = p.clone();
            tonic::transport::Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) }
                }))
                .await
                .map_err(|e| RpcError::Transport(format!("connect unix:{}: {e}", p.display())))?
        }
    };
    let mut client = ExecClient::new(channel)
        .max_decoding_message_size(GRPC_MAX_MESSAGE)
        .max_encoding_message_size(GRPC_MAX_MESSAGE);
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(LINK_BUFFER);
    let mut request = Request::new(ReceiverStream::new(out_rx).map(Frame));
    let _ = tracewire_telemetry::inject_current(request.metadata_mut());
    let mut inbound =
        client.connect(request).await.map_err(|e| RpcError::Transport(format!("open stream: {e}")))?.into_inner();
    let (in_tx, in_rx) = mpsc::channel::<Bytes>(LINK_BUFFER);
    // When nobody reads the responses any more, the pump ends and drops the stream, which
    // resets it and so cancels the connection on the server.
    tokio::spawn(async move { pump(&mut inbound, &in_tx).await });
    Ok(Link { tx: out_tx, rx: in_rx })
}
