//! The relay as a transport of the exec RPC: attach, handshake, then encrypted framing,
//! with one set of stage spans per message (children of the envelope's trace context).
//!
//! A client attaches once per session it opens. A server attaches once per session it
//! serves and demultiplexes its clients by stream id: each client gets its own Noise
//! handshake, its own sealer and opener, and its own [`RelayLink`] ([`RelayListener`]).
//!
//! Each direction of a stream ends with a `Close` frame when the RPC layer stops sending
//! (a half-close); a stream closed both ways ends without a Reset.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tracewire_context::TraceCarrier;
use tracewire_proto::v1::{
    Close, Handshake, Heartbeat, Hello, RelayFrame, Reset, ResetReason, Role, relay_frame::Kind,
};
use tracewire_rpc::Link;
use tracewire_rpc::grpc::Address;
use tracewire_telemetry::{Stage, emit_stage_span, remote_context};

use crate::framing::{Opener, Sealer};
use crate::noise::{HandshakeIo, Keypair, NoiseConfig, initiate, respond};
use crate::outbound::{EndsSpan, Outbound};
use crate::wire::{self, FrameBody, FrameReader};
use crate::{FrameError, RelayError};

/// How an end attaches to the relay.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayEndpoint {
    /// The relay: `host:port` or `http://host:port`.
    pub relay: String,
    /// The session both ends name.
    pub session: String,
    /// The relay's attach token, if it requires one.
    pub token: Option<String>,
    /// Noise settings (both ends must agree).
    pub noise: NoiseConfig,
    /// Reorder window, in records.
    pub window: usize,
    /// Largest message accepted (default 64 MiB).
    pub max_message: usize,
    /// Put each message's traceparent in cleartext on its Data frames, so the relay can
    /// emit `relay.forward` spans. Exposes timing metadata only, never content. Off by
    /// default.
    pub expose_traceparent: bool,
    /// How often this end sends a heartbeat: well under the relay's idle timeout, which
    /// resets an end that sends nothing for that long.
    pub heartbeat: Duration,
}

impl RelayEndpoint {
    /// An endpoint with defaults.
    pub fn new(relay: impl Into<String>, session: impl Into<String>) -> Self {
        Self {
            relay: relay.into(),
            session: session.into(),
            token: None,
            noise: NoiseConfig::default(),
            window: 64,
            max_message: 64 << 20,
            expose_traceparent: false,
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// A session through the relay: the link the RPC layer uses, and why it ended.
///
/// Dropping `link.tx` is a half-close: this end sends `Close` after its last message and
/// goes on receiving; `link.rx` ends (`None`, with `status` still `None`) once the peer has
/// closed its side too. Dropping `link.rx` ends the stream at once (the peer learns it
/// with a Reset, or by the client leaving the relay).
#[derive(Debug)]
pub struct RelayLink {
    /// Encoded envelopes both ways.
    pub link: Link,
    /// `Some` once the session ended with an error (a Reset, a framing fault, the relay
    /// going away).
    pub status: watch::Receiver<Option<RelayError>>,
}

impl tracewire_rpc::Transport for RelayLink {
    fn into_link(self) -> Link {
        self.link
    }
}

/// Frames from the relay: a client's attachment, or one virtual stream of a server's.
trait Inbound: Stream<Item = Result<RelayFrame, RelayError>> + Unpin + Send + 'static {}
impl<T: Stream<Item = Result<RelayFrame, RelayError>> + Unpin + Send + 'static> Inbound for T {}

/// One stream of frames through the relay: `stream` tags what this end sends (0 on a
/// client's attachment).
struct Attached<S> {
    out: mpsc::Sender<Outbound>,
    stream: u64,
    inbound: S,
}

impl<S: Inbound> HandshakeIo for Attached<S> {
    async fn send(&mut self, message: Vec<u8>) -> Result<(), RelayError> {
        let f = frame(Kind::Handshake(Handshake { message: message.into() }), self.stream);
        if self.out.send(f.into()).await.is_ok() {
            return Ok(());
        }
        // The relay stopped reading: it usually said why (a Reset) before closing.
        match self.recv().await {
            Err(e @ RelayError::Reset { .. }) => Err(e),
            _ => Err(RelayError::Transport("the relay closed the stream".into())),
        }
    }

    async fn recv(&mut self) -> Result<Vec<u8>, RelayError> {
        loop {
            match self.inbound.next().await {
                Some(Ok(RelayFrame { kind: Some(Kind::Handshake(h)), .. })) => return Ok(h.message.to_vec()),
                Some(Ok(RelayFrame { kind: Some(Kind::Heartbeat(_)), .. })) => {}
                Some(Ok(RelayFrame { kind: Some(Kind::Reset(r)), .. })) => return Err(reset_error(&r)),
                Some(Ok(_)) => return Err(RelayError::Handshake("unexpected frame during the handshake".into())),
                Some(Err(e)) => return Err(e),
                None => return Err(RelayError::Transport("the relay closed the stream".into())),
            }
        }
    }
}

fn reset_error(r: &Reset) -> RelayError {
    RelayError::Reset {
        reason: ResetReason::try_from(r.reason).unwrap_or(ResetReason::Unspecified),
        detail: r.detail.clone(),
    }
}

fn frame(kind: Kind, stream: u64) -> RelayFrame {
    RelayFrame { kind: Some(kind), stream }
}

fn reset_frame(reason: ResetReason, detail: String, stream: u64) -> RelayFrame {
    frame(Kind::Reset(Reset { reason: reason.into(), detail }), stream)
}

/// How long an end whose stream ended keeps reading, so that the relay receives what it
/// queued last (a Reset saying why) before the HTTP/2 stream closes.
const LINGER: Duration = Duration::from_secs(2);

async fn attach(ep: &RelayEndpoint, role: Role) -> Result<Attached<FrameReader<hyper::body::Incoming>>, RelayError> {
    let address: Address =
        ep.relay.parse().map_err(|e: tracewire_rpc::RpcError| RelayError::Transport(e.to_string()))?;
    let Address::Tcp(addr) = address else { return Err(RelayError::Transport("the relay is reached over TCP".into())) };
    // A plain HTTP/2 (prior knowledge) client speaking the relay's gRPC stream itself (see
    // `wire`), with large frames: the largest HTTP/2 frame this end accepts sets the frame
    // size of the relay's hop towards it (see `server::MAX_FRAME`).
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(crate::server::WINDOW)
        .http2_initial_connection_window_size(crate::server::WINDOW)
        .http2_max_frame_size(crate::server::MAX_FRAME)
        .build::<_, FrameBody>(connector);
    let uri: http::Uri = format!("http://{addr}{}", wire::PATH)
        .parse()
        .map_err(|e: http::uri::InvalidUri| RelayError::Transport(e.to_string()))?;
    let (out, rx) = mpsc::channel::<Outbound>(64);
    let hello =
        Hello { session_id: ep.session.clone(), role: role.into(), attach_token: ep.token.clone().unwrap_or_default() };
    out.send(frame(Kind::Hello(hello), 0).into()).await.map_err(|_| RelayError::Transport("closed".into()))?;
    let mut request = http::Request::new(FrameBody::request(rx));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(wire::CONTENT_TYPE));
    headers.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    let response = http.request(request).await.map_err(|e| RelayError::Transport(format!("attach to {addr}: {e}")))?;
    if response.status() != http::StatusCode::OK {
        return Err(RelayError::Transport(format!("attach to {addr}: HTTP status {}", response.status())));
    }
    // A response that is only a status (an unknown method, say) has it in its headers.
    if let Some(e) = wire::status_error(response.headers()) {
        return Err(e);
    }
    Ok(Attached { out, stream: 0, inbound: FrameReader::new(response.into_body()) })
}

/// The client end: attaches as client, runs the Noise handshake pinning `server_public`,
/// and returns the encrypted link.
///
/// Many clients may use one session at once, each with its own handshake and keys. A
/// session at its limit of clients refuses one more with `Reset(SESSION_FULL)`:
/// [`RelayError::is_retryable`] says that trying again later may work.
///
/// The attach and the handshake are an `rpc.connect` span (a child of the current span,
/// or a trace of its own).
///
/// # Errors
/// [`RelayError::WrongKey`], [`RelayError::Handshake`], [`RelayError::Reset`] (a bad
/// token, a full session, a server that failed the handshake), [`RelayError::Transport`].
pub async fn connect(ep: &RelayEndpoint, server_public: &[u8; 32]) -> Result<RelayLink, RelayError> {
    use tracing::Instrument as _;
    let span = tracewire_telemetry::stage_span!(
        RpcConnect,
        server.address = ep.relay.as_str(),
        error.type = tracing::field::Empty
    );
    let connected = async {
        let mut a = attach(ep, Role::Client).await?;
        let transport = initiate(ep.noise, &ep.session, server_public, &mut a).await?;
        Ok(start(ep, a, Arc::new(transport), Side::Client { heartbeat: ep.heartbeat }))
    }
    .instrument(span.clone())
    .await;
    if let Err(e) = &connected {
        span.record("error.type", relay_error_type(e));
    }
    connected
}

/// The `error.type` of a failed connect: the error's kind.
fn relay_error_type(e: &RelayError) -> String {
    let text = format!("{e:?}");
    text.split(['(', ' ', '{']).next().unwrap_or_default().to_owned()
}

/// The server end of one client: attaches as server, waits for a client's handshake, and
/// returns the encrypted link. A client that fails the handshake is reset, and the next
/// one is waited for. The attachment serves only this client (others are refused) and
/// ends with it; [`RelayListener`] serves many.
///
/// # Errors
/// As [`RelayListener::accept`].
pub async fn accept(ep: &RelayEndpoint, keypair: &Keypair) -> Result<RelayLink, RelayError> {
    RelayListener::bind(ep, keypair).await?.accept().await
}

/// The server end of a session: one attachment to the relay that serves every client of
/// the session, each on its own virtual stream with its own Noise handshake.
///
/// Dropping the listener refuses further clients; the attachment ends when the links it
/// gave out have ended.
///
/// ```no_run
/// # async fn run() -> Result<(), tracewire_relay::RelayError> {
/// use tracewire_relay::{Keypair, RelayEndpoint, RelayListener};
/// let ep = RelayEndpoint::new("127.0.0.1:7080", "S");
/// let keypair = Keypair::generate()?;
/// let mut listener = RelayListener::bind(&ep, &keypair).await?;
/// loop {
///     let link = listener.accept().await?; // one client, after its handshake
///     tokio::spawn(async move {
///         // serve it, e.g. tracewire_rpc::serve(link, handler, config)
///         drop(link);
///     });
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct RelayListener {
    links: mpsc::Receiver<RelayLink>,
    ended: watch::Receiver<Option<RelayError>>,
    demux: tokio::task::AbortHandle,
}

impl RelayListener {
    /// Attaches to the relay as the server of `ep.session`.
    ///
    /// # Errors
    /// [`RelayError::Transport`] when the relay cannot be reached. A refusal by the relay
    /// (a bad token, a session that already has a server) is the error of the first
    /// [`accept`](Self::accept).
    pub async fn bind(ep: &RelayEndpoint, keypair: &Keypair) -> Result<Self, RelayError> {
        let a = attach(ep, Role::Server).await?;
        let (links_tx, links) = mpsc::channel(16);
        let (ended_tx, ended) = watch::channel(None);
        let demux = tokio::spawn(demux(ep.clone(), keypair.clone(), a, links_tx, ended_tx)).abort_handle();
        Ok(Self { links, ended, demux })
    }

    /// The next client whose handshake succeeded. Clients that fail theirs are reset
    /// (`HANDSHAKE_FAILED`) and never returned.
    ///
    /// # Errors
    /// Why the attachment ended: [`RelayError::Reset`] from the relay (`BAD_TOKEN`,
    /// `ROLE_TAKEN`, `IDLE`, `PEER_GONE` when it shuts down), [`RelayError::Transport`].
    /// Attach again ([`bind`](Self::bind)) to go on serving.
    pub async fn accept(&mut self) -> Result<RelayLink, RelayError> {
        if let Some(link) = self.links.recv().await {
            return Ok(link);
        }
        let _ = self.ended.wait_for(Option::is_some).await;
        Err(self.ended.borrow().clone().unwrap_or_else(|| RelayError::Transport("the relay closed the stream".into())))
    }
}

/// Ends the attachment of a listener at once, with every stream it carries.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The server's attachment: routes frames from the relay to the virtual stream they name,
/// starting a handshake for each new one. Returns when the relay ends the attachment, or
/// when neither a listener nor a stream is left.
async fn demux(
    ep: RelayEndpoint,
    keypair: Keypair,
    a: Attached<FrameReader<hyper::body::Incoming>>,
    links: mpsc::Sender<RelayLink>,
    ended: watch::Sender<Option<RelayError>>,
) {
    let Attached { out, mut inbound, .. } = a;
    let keypair = Arc::new(keypair);
    let mut streams: HashMap<u64, mpsc::Sender<RelayFrame>> = HashMap::new();
    let (gone_tx, mut gone) = mpsc::unbounded_channel::<u64>();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + ep.heartbeat, ep.heartbeat);
    let error = loop {
        let f = tokio::select! {
            biased;
            f = inbound.next() => f,
            Some(id) = gone.recv() => {
                streams.remove(&id);
                if streams.is_empty() && links.is_closed() { break None }
                continue;
            }
            () = links.closed(), if streams.is_empty() => break None,
            _ = tick.tick() => {
                let _ = out.try_send(frame(Kind::Heartbeat(Heartbeat {}), 0).into());
                continue;
            }
        };
        let f = match f {
            Some(Ok(f)) => f,
            Some(Err(e)) => break Some(e),
            None => break Some(RelayError::Transport("the relay closed the stream".into())),
        };
        let stream = f.stream;
        match &f.kind {
            Some(Kind::Heartbeat(_)) => continue,
            Some(Kind::Reset(r)) if stream == 0 => break Some(reset_error(r)),
            _ if stream == 0 => continue,
            _ => {}
        }
        if let Some(tx) = streams.get(&stream) {
            let last = matches!(f.kind, Some(Kind::Reset(_)));
            if tx.send(f).await.is_err() || last {
                streams.remove(&stream);
            }
            continue;
        }
        // An unknown stream: a new client when it opens with a handshake. (Stream ids are
        // assigned at attach time, so new streams need not arrive in the order of their
        // ids.) Anything else is a frame of a stream that has ended here, which the relay
        // retires, or a client that broke the protocol.
        let refusal = match f.kind {
            Some(Kind::Reset(_)) => continue,
            Some(Kind::Handshake(_)) if links.is_closed() => {
                Some((ResetReason::PeerGone, "the server accepts no more clients"))
            }
            Some(Kind::Handshake(_)) => None,
            _ => Some((ResetReason::Protocol, "a stream must start with a handshake")),
        };
        if let Some((reason, detail)) = refusal {
            let _ = out.send(reset_frame(reason, detail.into(), stream).into()).await;
            continue;
        }
        // Room for a whole reorder window, so that one stream rarely holds up the others.
        let (tx, rx) = mpsc::channel(ep.window.max(1) + 16);
        let _ = tx.try_send(f);
        streams.insert(stream, tx);
        let io = Attached { out: out.clone(), stream, inbound: ReceiverStream::new(rx).map(Ok) };
        tokio::spawn(handshake(ep.clone(), Arc::clone(&keypair), io, links.clone(), gone_tx.clone()));
    };
    if let Some(e) = &error {
        tracing::debug!(target: "tracewire_relay", session = %ep.session, "the server attachment ended: {e}");
    }
    ended.send_replace(error.or_else(|| Some(RelayError::Transport("the attachment closed".into()))));
}

/// The server side of one virtual stream's handshake; the link goes to the listener.
async fn handshake<S: Inbound>(
    ep: RelayEndpoint,
    keypair: Arc<Keypair>,
    mut io: Attached<S>,
    links: mpsc::Sender<RelayLink>,
    gone: mpsc::UnboundedSender<u64>,
) {
    match respond(ep.noise, &ep.session, &keypair, &mut io).await {
        Ok(t) => {
            let link = start(&ep, io, Arc::new(t), Side::Virtual { gone });
            // A listener dropped meanwhile: the link drops, and its stream closes.
            let _ = links.send(link).await;
        }
        Err(e) => {
            // Tell the client why (the relay delivers it before closing its stream);
            // nothing to say to a client that is already gone.
            if !matches!(e, RelayError::Reset { .. }) {
                let _ = io.out.send(reset_frame(ResetReason::HandshakeFailed, e.to_string(), io.stream).into()).await;
            }
            tracing::debug!(target: "tracewire_relay", session = %ep.session, stream = io.stream, "handshake failed: {e}");
            let _ = gone.send(io.stream);
        }
    }
}

/// Which kind of stream a link runs on.
enum Side {
    /// A client's own attachment: it heartbeats, and its HTTP/2 stream ends with it.
    Client { heartbeat: Duration },
    /// A virtual stream of a server's attachment: ending it is a Reset for that stream.
    Virtual { gone: mpsc::UnboundedSender<u64> },
}

/// The state both loops of one stream share.
struct Shared {
    status: watch::Sender<Option<RelayError>>,
    /// Either loop ending stops the other.
    closing: watch::Sender<bool>,
    /// This end sent its `Close`: the RPC layer sends no more messages (a half-close).
    sent_close: watch::Sender<bool>,
}

fn start<S: Inbound>(
    ep: &RelayEndpoint,
    a: Attached<S>,
    transport: Arc<snow::StatelessTransportState>,
    kind: Side,
) -> RelayLink {
    let (to_rpc, rpc_rx) = mpsc::channel::<Bytes>(64);
    let (rpc_tx, from_rpc) = mpsc::channel::<Bytes>(64);
    let (status_tx, status) = watch::channel(None);
    let shared =
        Arc::new(Shared { status: status_tx, closing: watch::channel(false).0, sent_close: watch::channel(false).0 });
    let sealer = Sealer::new(Arc::clone(&transport));
    let opener = Opener::new(transport, ep.window, ep.max_message);
    let heartbeat = match &kind {
        Side::Client { heartbeat } => Some(*heartbeat),
        Side::Virtual { .. } => None,
    };
    tokio::spawn(send_loop(
        from_rpc,
        a.out.clone(),
        a.stream,
        sealer,
        ep.expose_traceparent,
        heartbeat,
        Arc::clone(&shared),
    ));
    tokio::spawn(recv_loop(a, opener, to_rpc, shared, kind));
    RelayLink { link: Link { tx: rpc_tx, rx: rpc_rx }, status }
}

/// The part of an exec `Envelope` the ends read: its trace carrier (field 2). Decoding
/// only that skips the body (a command's output, up to the message cap) instead of copying
/// and parsing it.
#[derive(Clone, PartialEq, prost::Message)]
struct EnvelopeTrace {
    #[prost(message, optional, tag = "2")]
    trace: Option<tracewire_proto::v1::TraceCarrier>,
}

/// The trace carrier of an encoded envelope (empty if it cannot be decoded).
fn carrier_of(bytes: &[u8]) -> TraceCarrier {
    EnvelopeTrace::decode(bytes).ok().and_then(|e| e.trace).map(Into::into).unwrap_or_default()
}

fn kv(key: &'static str, v: usize) -> KeyValue {
    KeyValue::new(key, i64::try_from(v).unwrap_or(i64::MAX))
}

async fn closing(shared: &Shared) {
    let mut rx = shared.closing.subscribe();
    let _ = rx.wait_for(|c| *c).await;
}

async fn send_loop(
    mut from_rpc: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Outbound>,
    stream: u64,
    mut sealer: Sealer,
    expose: bool,
    heartbeat: Option<Duration>,
    shared: Arc<Shared>,
) {
    let mut tick = heartbeat.map(|h| tokio::time::interval_at(tokio::time::Instant::now() + h, h));
    // Until the RPC layer half-closes; heartbeats go on after that, until the stream ends.
    let mut open = true;
    loop {
        let message = tokio::select! {
            m = from_rpc.recv(), if open => m,
            // The receiving side ended the stream: stop, so the stream to the relay closes.
            () = closing(&shared) => break,
            _ = async { if let Some(t) = tick.as_mut() { t.tick().await } else { std::future::pending().await } } => {
                if out.send(frame(Kind::Heartbeat(Heartbeat {}), stream).into()).await.is_err() { break; }
                continue;
            }
        };
        let Some(message) = message else {
            // The RPC layer sends no more (it dropped its sender): say so after the last
            // record, and go on receiving. The stream ends once the peer has closed too.
            open = false;
            if out.send(frame(Kind::Close(Close {}), stream).into()).await.is_err() {
                shared.status.send_if_modified(|s| {
                    s.get_or_insert(RelayError::Transport("the relay closed the stream".into()));
                    true
                });
                break;
            }
            shared.sent_close.send_replace(true);
            continue;
        };
        let t0 = SystemTime::now();
        let carrier = carrier_of(&message);
        let (parent, _) = remote_context(&carrier);
        let traceparent = if expose { carrier.traceparent.as_str() } else { "" };
        let t1 = SystemTime::now();
        let frames = match sealer.seal(&message, traceparent) {
            Ok(f) => f,
            Err(e) => {
                shared.status.send_replace(Some(e.into()));
                break;
            }
        };
        let t2 = SystemTime::now();
        let (n, first, last) = (frames.len(), frames.first().map_or(0, |f| f.seq), frames.last().map_or(0, |f| f.seq));
        let bytes = kv("tracewire.bytes", message.len());
        emit_stage_span(Stage::RelayFrame, t0, t1, &parent, &[bytes.clone(), kv("tracewire.fragments", n)]);
        emit_stage_span(Stage::RelayEncrypt, t1, t2, &parent, std::slice::from_ref(&bytes));
        // relay.send ends when the gRPC stream takes the last frame for the wire.
        let mut send_span = Some(EndsSpan {
            stage: Stage::RelaySend,
            start: t2,
            parent,
            attributes: vec![
                kv("tracewire.seq.first", usize::try_from(first).unwrap_or(usize::MAX)),
                kv("tracewire.seq.last", usize::try_from(last).unwrap_or(usize::MAX)),
            ],
        });
        let mut failed = false;
        for (i, f) in frames.into_iter().enumerate() {
            let ends = if i + 1 == n { send_span.take() } else { None };
            if let Err(mpsc::error::SendError(unsent)) =
                out.send(Outbound { frame: frame(Kind::Data(f), stream), ends }).await
            {
                unsent.take(); // ends relay.send at the failure
                failed = true;
                break;
            }
        }
        if failed {
            shared.status.send_if_modified(|s| {
                s.get_or_insert(RelayError::Transport("the relay closed the stream".into()));
                true
            });
            break;
        }
    }
    shared.closing.send_replace(true);
}

/// How a stream's receiving side ended.
enum Ended {
    /// The relay or the peer reset it, or the relay closed it: nothing more to say.
    ByPeer(Option<RelayError>),
    /// This end found a fault and queued a Reset saying why.
    Fault(RelayError),
    /// This end closed it (the RPC layer dropped its link, or the sending side stopped).
    Locally,
    /// Both directions were closed (`Close` sent and received): a clean end.
    Closed,
}

async fn recv_loop<S: Inbound>(
    a: Attached<S>,
    mut opener: Opener,
    to_rpc: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    kind: Side,
) {
    let Attached { out, stream, mut inbound } = a;
    let mut first_seen: Option<(SystemTime, u64)> = None;
    // `None` once the peer closed its direction: the RPC link's incoming side has ended.
    let mut to_rpc = Some(to_rpc);
    let mut sent_close = shared.sent_close.subscribe();
    let ended = 'recv: loop {
        let peer_closed = to_rpc.is_none();
        let frame = tokio::select! {
            biased;
            _ = sent_close.wait_for(|sent| *sent), if peer_closed => break Ended::Closed,
            f = inbound.next() => f,
            () = closing(&shared) => break Ended::Locally,
            () = async { if let Some(t) = &to_rpc { t.closed().await } else { std::future::pending().await } } => {
                break Ended::Locally;
            }
        };
        let frame = match frame {
            Some(Ok(f)) => f,
            Some(Err(e)) => break Ended::ByPeer(Some(e)),
            None => {
                break Ended::ByPeer(
                    opener
                        .finish()
                        .err()
                        .map(RelayError::from)
                        .or(Some(RelayError::Transport("the relay closed the stream".into()))),
                );
            }
        };
        let data = match frame.kind {
            Some(Kind::Data(d)) if !peer_closed => d,
            Some(Kind::Heartbeat(_) | Kind::Ack(_)) => continue,
            Some(Kind::Reset(r)) => break Ended::ByPeer(Some(reset_error(&r))),
            Some(Kind::Close(_)) if !peer_closed => {
                // The peer sent its last message: a Close that cuts one is a fault.
                if let Err(e) = opener.finish() {
                    let _ = out.send(reset_frame(e.reset_reason(), e.to_string(), stream).into()).await;
                    break Ended::Fault(e.into());
                }
                // The RPC link's incoming side ends (`None`); its outgoing side goes on.
                to_rpc = None;
                continue;
            }
            _ => {
                let _ = out.send(reset_frame(ResetReason::Protocol, "unexpected frame".into(), stream).into()).await;
                break Ended::Fault(RelayError::Frame(FrameError::Truncated));
            }
        };
        let arrived = SystemTime::now();
        let (start, first_seq) = *first_seen.get_or_insert((arrived, data.seq));
        let last_seq = data.seq;
        let t_open = SystemTime::now();
        let opened = match opener.push(data) {
            Ok(o) => o,
            Err(e) => {
                // Tell the peer why, then stop: nothing after a fault is trusted.
                let _ = out.send(reset_frame(e.reset_reason(), e.to_string(), stream).into()).await;
                break Ended::Fault(e.into());
            }
        };
        let t_opened = SystemTime::now();
        if opened.messages.is_empty() {
            continue;
        }
        first_seen = None;
        for message in opened.messages {
            let len = message.len();
            let t_decode = SystemTime::now();
            let carrier = carrier_of(&message);
            let (parent, _) = remote_context(&carrier);
            let t_decoded = SystemTime::now();
            emit_stage_span(Stage::RelayDecrypt, t_open, t_opened, &parent, &[kv("tracewire.bytes", len)]);
            emit_stage_span(Stage::RelayDecode, t_decode, t_decoded, &parent, &[kv("tracewire.bytes", len)]);
            let Some(tx) = &to_rpc else { break 'recv Ended::Locally };
            if tx.send(Bytes::from(message)).await.is_err() {
                break 'recv Ended::Locally;
            }
            // The whole receipt: from the first record's arrival (waiting for the rest of
            // the message's records, opening, decoding) until the RPC layer took the
            // message, which waits while its bounded queue is full.
            emit_stage_span(
                Stage::RelayRecv,
                start,
                SystemTime::now(),
                &parent,
                &[
                    kv("tracewire.seq.first", usize::try_from(first_seq).unwrap_or(usize::MAX)),
                    kv("tracewire.seq.last", usize::try_from(last_seq).unwrap_or(usize::MAX)),
                    kv(
                        "tracewire.fragments",
                        usize::try_from(last_seq.saturating_sub(first_seq).saturating_add(1)).unwrap_or(usize::MAX),
                    ),
                ],
            );
        }
    };
    let clean = matches!(ended, Ended::Closed);
    let (error, linger) = match ended {
        Ended::ByPeer(e) => (e, false),
        Ended::Fault(e) => (Some(e), true),
        Ended::Locally | Ended::Closed => (None, true),
    };
    if let Some(e) = error {
        shared.status.send_if_modified(|s| {
            if s.is_some() {
                return false;
            }
            *s = Some(e);
            true
        });
    }
    shared.closing.send_replace(true);
    drop(to_rpc);
    match kind {
        Side::Client { .. } if linger => {
            // Close the sending side (the request body ends once the sending loop has let
            // go too) and keep reading until the relay closes the stream, so that what
            // was queued last, a Reset especially, reaches it: dropping the stream now
            // would cancel it with the Reset still buffered.
            drop(out);
            let _ = tokio::time::timeout(LINGER, async { while inbound.next().await.is_some() {} }).await;
        }
        Side::Client { .. } => {}
        Side::Virtual { gone } => {
            // The attachment goes on: a Reset for this stream tells the relay (and the
            // client) that it ended here; the relay then retires the stream. After a clean
            // end there is nothing to say: the client ends its attachment.
            if linger && !clean && shared.status.borrow().is_none() {
                let _ = out
                    .send(reset_frame(ResetReason::PeerGone, "the server closed the stream".into(), stream).into())
                    .await;
            }
            let _ = gone.send(stream);
        }
    }
}

/// Serves `handler` through the relay: attaches as the server of `ep.session` and serves
/// every client of the session at once, each on its own virtual stream with its own
/// handshake and keys. When the relay ends the attachment (it restarts, say), attaches
/// again. Returns only when `shutdown` resolves; the attachment and every stream it
/// carries end then.
pub async fn serve_via_relay<H: tracewire_rpc::Handler>(
    ep: RelayEndpoint,
    keypair: Keypair,
    handler: Arc<H>,
    config: tracewire_rpc::ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let run = async {
        let mut served = tokio::task::JoinSet::new();
        loop {
            match RelayListener::bind(&ep, &keypair).await {
                Ok(mut listener) => {
                    let _attachment = AbortOnDrop(listener.demux.clone());
                    loop {
                        match listener.accept().await {
                            Ok(link) => {
                                served.spawn(tracewire_rpc::serve(link, Arc::clone(&handler), config));
                                while served.try_join_next().is_some() {}
                            }
                            Err(e) => {
                                tracing::warn!(target: "tracewire_relay", session = %ep.session, "relay attachment ended: {e}");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(target: "tracewire_relay", session = %ep.session, "attaching to the relay: {e}");
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = run => {}
        () = shutdown => {}
    }
}
