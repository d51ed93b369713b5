//! The relay as a transport of the exec RPC: attach, handshake, then encrypted framing,
//! with one set of stage spans per message (children of the envelope's trace context).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::KeyValue;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tracewire_context::TraceCarrier;
use tracewire_proto::v1::{Handshake, Heartbeat, Hello, RelayFrame, Reset, ResetReason, Role, relay_frame::Kind};
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
    /// How often this end sends a heartbeat.
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

struct Attached {
    out: mpsc::Sender<Outbound>,
    inbound: FrameReader<hyper::body::Incoming>,
}

impl HandshakeIo for Attached {
    async fn send(&mut self, message: Vec<u8>) -> Result<(), RelayError> {
        let f = RelayFrame { kind: Some(Kind::Handshake(Handshake { message: message.into() })) };
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
                Some(Ok(RelayFrame { kind: Some(Kind::Handshake(h)) })) => return Ok(h.message.to_vec()),
                Some(Ok(RelayFrame { kind: Some(Kind::Heartbeat(_)) })) => {}
                Some(Ok(RelayFrame { kind: Some(Kind::Reset(r)) })) => return Err(reset_error(&r)),
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

fn reset_frame(reason: ResetReason, detail: String) -> RelayFrame {
    RelayFrame { kind: Some(Kind::Reset(Reset { reason: reason.into(), detail })) }
}

async fn attach(ep: &RelayEndpoint, role: Role) -> Result<Attached, RelayError> {
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
    out.send(RelayFrame { kind: Some(Kind::Hello(hello)) }.into())
        .await
        .map_err(|_| RelayError::Transport("closed".into()))?;
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
    Ok(Attached { out, inbound: FrameReader::new(response.into_body()) })
}

/// The client end: attaches as client, runs the Noise handshake pinning `server_public`,
/// and returns the encrypted link.
///
/// # Errors
/// [`RelayError::WrongKey`], [`RelayError::Handshake`], [`RelayError::Reset`] (e.g. a bad
/// token), [`RelayError::Transport`].
pub async fn connect(ep: &RelayEndpoint, server_public: &[u8; 32]) -> Result<RelayLink, RelayError> {
    let mut a = attach(ep, Role::Client).await?;
    let transport = initiate(ep.noise, &ep.session, server_public, &mut a).await?;
    Ok(start(ep, a, Arc::new(transport)))
}

/// The server end: attaches as server, waits for a client's handshake, and returns the
/// encrypted link. A client that fails the handshake is reset.
///
/// # Errors
/// As [`connect`].
pub async fn accept(ep: &RelayEndpoint, keypair: &Keypair) -> Result<RelayLink, RelayError> {
    let mut a = attach(ep, Role::Server).await?;
    match respond(ep.noise, &ep.session, keypair, &mut a).await {
        Ok(t) => Ok(start(ep, a, Arc::new(t))),
        Err(e) => {
            // Tell the client why, and let the relay deliver it before we hang up.
            let Attached { out, mut inbound } = a;
            let _ = out.send(reset_frame(ResetReason::HandshakeFailed, e.to_string()).into()).await;
            drop(out);
            let _ =
                tokio::time::timeout(Duration::from_secs(2), async { while inbound.next().await.is_some() {} }).await;
            Err(e)
        }
    }
}

fn start(ep: &RelayEndpoint, a: Attached, transport: Arc<snow::StatelessTransportState>) -> RelayLink {
    let (to_rpc, rpc_rx) = mpsc::channel::<Bytes>(64);
    let (rpc_tx, from_rpc) = mpsc::channel::<Bytes>(64);
    let (status_tx, status) = watch::channel(None);
    let status_tx = Arc::new(status_tx);
    let sealer = Sealer::new(Arc::clone(&transport));
    let opener = Opener::new(transport, ep.window, ep.max_message);
    tokio::spawn(send_loop(
        from_rpc,
        a.out.clone(),
        sealer,
        ep.expose_traceparent,
        ep.heartbeat,
        Arc::clone(&status_tx),
        status.clone(),
    ));
    tokio::spawn(recv_loop(a.inbound, a.out, opener, to_rpc, status_tx));
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

async fn send_loop(
    mut from_rpc: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Outbound>,
    mut sealer: Sealer,
    expose: bool,
    heartbeat: Duration,
    status: Arc<watch::Sender<Option<RelayError>>>,
    mut ended: watch::Receiver<Option<RelayError>>,
) {
    let mut tick = tokio::time::interval(heartbeat);
    tick.tick().await;
    loop {
        let message = tokio::select! {
            m = from_rpc.recv() => m,
            // The receiving side ended the session: stop, so the stream to the relay closes.
            _ = async { ended.wait_for(Option::is_some).await.map(|_| ()) } => break,
            _ = tick.tick() => {
                if out.send(RelayFrame { kind: Some(Kind::Heartbeat(Heartbeat {})) }.into()).await.is_err() { break; }
                continue;
            }
        };
        let Some(message) = message else { break };
        let t0 = SystemTime::now();
        let carrier = carrier_of(&message);
        let (parent, _) = remote_context(&carrier);
        let traceparent = if expose { carrier.traceparent.as_str() } else { "" };
        let t1 = SystemTime::now();
        let frames = match sealer.seal(&message, traceparent) {
            Ok(f) => f,
            Err(e) => {
                let _ = status.send(Some(e.into()));
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
                out.send(Outbound { frame: RelayFrame { kind: Some(Kind::Data(f)) }, ends }).await
            {
                unsent.take(); // ends relay.send at the failure
                failed = true;
                break;
            }
        }
        if failed {
            let _ = status.send(Some(RelayError::Transport("the relay closed the stream".into())));
            break;
        }
    }
}

async fn recv_loop(
    mut inbound: FrameReader<hyper::body::Incoming>,
    out: mpsc::Sender<Outbound>,
    mut opener: Opener,
    to_rpc: mpsc::Sender<Bytes>,
    status: Arc<watch::Sender<Option<RelayError>>>,
) {
    let mut first_seen: Option<(SystemTime, u64)> = None;
    let error = loop {
        let frame = match inbound.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => break Some(e),
            None => {
                break opener
                    .finish()
                    .err()
                    .map(RelayError::from)
                    .or(Some(RelayError::Transport("the relay closed the stream".into())));
            }
        };
        let data = match frame.kind {
            Some(Kind::Data(d)) => d,
            Some(Kind::Heartbeat(_) | Kind::Ack(_)) => continue,
            Some(Kind::Reset(r)) => break Some(reset_error(&r)),
            _ => {
                let _ = out.send(reset_frame(ResetReason::Protocol, "unexpected frame".into()).into()).await;
                break Some(RelayError::Frame(FrameError::Truncated));
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
                let _ = out.send(reset_frame(e.reset_reason(), e.to_string()).into()).await;
                break Some(e.into());
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
            emit_stage_span(
                Stage::RelayRecv,
                start,
                arrived,
                &parent,
                &[
                    kv("tracewire.seq.first", usize::try_from(first_seq).unwrap_or(usize::MAX)),
                    kv("tracewire.seq.last", usize::try_from(last_seq).unwrap_or(usize::MAX)),
                ],
            );
            emit_stage_span(
                Stage::RelayReorder,
                arrived,
                t_open,
                &parent,
                &[kv("tracewire.fragments", opened.reordered)],
            );
            emit_stage_span(Stage::RelayDecrypt, t_open, t_opened, &parent, &[kv("tracewire.bytes", len)]);
            emit_stage_span(Stage::RelayDecode, t_decode, t_decoded, &parent, &[kv("tracewire.bytes", len)]);
            if to_rpc.send(Bytes::from(message)).await.is_err() {
                return;
            }
        }
    };
    let _ = status.send(error);
}

/// Serves `handler` through the relay: attaches as the server of `ep.session`, serves the
/// client that completes the handshake, and attaches again when it leaves (one client at
/// a time per session). Returns only when `shutdown` resolves.
pub async fn serve_via_relay<H: tracewire_rpc::Handler>(
    ep: RelayEndpoint,
    keypair: Keypair,
    handler: Arc<H>,
    config: tracewire_rpc::ServerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let run = async {
        loop {
            match accept(&ep, &keypair).await {
                Ok(link) => tracewire_rpc::serve(link, Arc::clone(&handler), config).await,
                Err(e) => {
                    tracing::warn!(target: "tracewire_relay", session = %ep.session, "relay session failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    tokio::select! {
        () = run => {}
        () = shutdown => {}
    }
}
