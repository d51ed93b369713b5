//! The relay server: pairs the clients of a session with its server by session id and
//! forwards their frames. One server attachment serves many clients, each on its own
//! virtual stream (`RelayFrame.stream`, assigned here). It holds no keys; it sees Hello,
//! handshake messages (public by design), ciphertext records, and — only when a sender
//! opts in — a cleartext traceparent for timing spans.
//!
//! Every attachment has its own id, unique per relay and never reused: a client's id is
//! its stream id, a server's its generation. The session table is the only authority on
//! who is attached: a task forwards a frame only while its own id is in the table, and
//! takes only its own entry out of it. Taking an entry out (dropping its [`End`]) tells its
//! task to stop; its queued frames (a Reset saying why, typically) are flushed before its
//! response ends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tracewire_proto::v1::{Heartbeat, RelayFrame, Reset, ResetReason, Role, relay_frame::Kind};

use crate::RelayError;
use crate::outbound::{EndsSpan, Outbound};
use crate::wire::{self, FrameBody, FrameReader};

/// Relay settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Attachments must present this token (compared in constant time). `None`: open relay
    /// (only sensible on loopback).
    pub token: Option<String>,
    /// Frames buffered per direction of an attachment; a full buffer makes the sender wait.
    pub session_buffer: usize,
    /// How often the relay sends each end a heartbeat.
    pub heartbeat: Duration,
    /// An end that sends no frame at all (heartbeats included) for this long is reset with
    /// `IDLE`. Only frames the end sends count, never the relay's own heartbeats. It also
    /// bounds how long a client's first frame waits for a server to attach, and how long a
    /// client may take nothing while its server has frames for it (then it is reset with
    /// `IDLE`, so that one stalled client holds up the session's other clients for at
    /// most this long).
    pub idle_timeout: Duration,
    /// How long an attachment may take to say Hello.
    pub hello_timeout: Duration,
    /// Clients one session serves at once. One more is refused with `Reset(SESSION_FULL)`,
    /// which is retryable ([`RelayError::is_retryable`]).
    pub max_clients_per_session: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            token: None,
            session_buffer: 64,
            heartbeat: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(5),
            max_clients_per_session: 64,
        }
    }
}

/// HTTP/2 flow-control window of relay connections (both directions).
pub(crate) const WINDOW: u32 = 8 << 20;

/// Largest HTTP/2 frame a relay connection accepts (both directions; the default is
/// 16 KiB). A 60 KiB record then crosses as one DATA frame instead of four, and the
/// receiver reads it with one system call instead of four.
pub(crate) const MAX_FRAME: u32 = 256 << 10;

/// Sees every frame the relay receives and forwards (for tests that check the relay never
/// sees plaintext).
pub type Tap = Arc<dyn Fn(&RelayFrame) + Send + Sync>;

/// One attachment in the session table. Dropping it (once it is taken out of the table)
/// stops its task, which then lets its response end after the frames already queued.
struct End {
    id: u64,
    tx: mpsc::Sender<Outbound>,
    _stop: oneshot::Sender<()>,
    /// For a client: the server attachment its frames go to, fixed by its first forwarded
    /// frame (0: none yet). A client never reaches a later server.
    server: u64,
}

#[derive(Default)]
struct Session {
    server: Option<End>,
    clients: HashMap<u64, End>,
    /// Notified when a server attaches.
    attached: Arc<Notify>,
}

impl Session {
    fn is_empty(&self) -> bool {
        self.server.is_none() && self.clients.is_empty()
    }
}

/// What an attachment's task holds.
struct Attachment {
    session: String,
    id: u64,
    inbound: FrameReader<Incoming>,
    own: mpsc::Sender<Outbound>,
    stop: oneshot::Receiver<()>,
    attached: Arc<Notify>,
}

/// An attachment's heartbeats to send and its idle deadline.
struct Pace {
    heartbeats: tokio::time::Interval,
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Pace {
    fn new(config: &RelayConfig) -> Self {
        Self { heartbeats: ticks(config.heartbeat), idle: Box::pin(tokio::time::sleep(config.idle_timeout)) }
    }
}

/// What an attachment's wait for its next frame ended with.
enum NextFrame {
    /// A frame it sent.
    Frame(RelayFrame),
    /// Its entry was taken out of the session table.
    Stopped,
    /// It sent nothing for the idle timeout (it was reset).
    Idle,
    /// Its stream ended or failed.
    Left,
}

/// Where a client's frame goes.
enum Route {
    Server(mpsc::Sender<Outbound>),
    /// No server attached yet.
    Waiting,
    /// The client is no longer in the table (or its server left): forward nothing.
    Retired,
}

/// Where a server's frame for a stream goes.
enum Target {
    Client(mpsc::Sender<Outbound>),
    /// The server resets the stream: its last frame; the client is out of the table.
    Last(End),
}

/// The relay.
#[derive(Clone)]
pub struct RelayServer {
    config: Arc<RelayConfig>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    next_id: Arc<AtomicU64>,
    tap: Option<Tap>,
    /// Counts server attachments: a change wakes [`RelayServer::server_attached`].
    servers_attached: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for RelayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayServer").field("sessions", &self.sessions()).finish_non_exhaustive()
    }
}

fn reset(reason: ResetReason, detail: impl Into<String>) -> RelayFrame {
    RelayFrame { kind: Some(Kind::Reset(Reset { reason: reason.into(), detail: detail.into() })), stream: 0 }
}

fn heartbeat() -> Outbound {
    RelayFrame { kind: Some(Kind::Heartbeat(Heartbeat {})), stream: 0 }.into()
}

/// How long a stopping relay waits for its connections to close after resetting every
/// session.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A gRPC response: `body`, or (`Some(code)`) only a status, in the headers.
fn grpc_response(body: FrameBody, status: Option<(u8, &str)>) -> http::Response<FrameBody> {
    let mut r = http::Response::new(body);
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static(wire::CONTENT_TYPE));
    if let Some((code, message)) = status {
        r.headers_mut().extend(wire::status_trailers(code, message));
    }
    r
}

/// A response stream of one frame, then an OK status.
fn one_frame(frame: RelayFrame) -> http::Response<FrameBody> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(frame.into());
    grpc_response(FrameBody::response(rx), None)
}

/// A response that is only an error status (gRPC's "trailers-only" response).
fn status_only(code: u8, message: &str) -> http::Response<FrameBody> {
    let (_, rx) = mpsc::channel(1);
    grpc_response(FrameBody::request(rx), Some((code, message)))
}

/// A heartbeat interval whose first tick is one period away.
fn ticks(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(Instant::now() + period, period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// The `relay.forward` span a forwarded frame ends when it is taken for the wire (for
/// the last record of a message that carries a traceparent); `start` is the message's
/// first record's arrival, kept per direction (and per stream).
fn forward_span(frame: &RelayFrame, start: &mut Option<SystemTime>, received: SystemTime) -> Option<EndsSpan> {
    let Some(Kind::Data(d)) = &frame.kind else { return None };
    if d.traceparent.is_empty() {
        return None;
    }
    let first = *start.get_or_insert(received);
    if !d.last_fragment {
        return None;
    }
    *start = None;
    let (parent, _) = tracewire_telemetry::remote_context(&[("traceparent", d.traceparent.as_str())]);
    Some(EndsSpan {
        stage: tracewire_telemetry::Stage::RelayForward,
        start: first,
        parent,
        attributes: vec![opentelemetry::KeyValue::new(
            "tracewire.bytes",
            i64::try_from(d.record.len()).unwrap_or(i64::MAX),
        )],
    })
}

impl RelayServer {
    /// A relay with these settings.
    pub fn new(config: RelayConfig) -> Self {
        Self {
            config: Arc::new(config),
            sessions: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            tap: None,
            servers_attached: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Calls `tap` with every frame received and forwarded.
    #[must_use]
    pub fn with_tap(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Sessions with at least one end attached.
    pub fn sessions(&self) -> usize {
        self.sessions.lock().map_or(0, |s| s.len())
    }

    /// Whether a server is attached to `session` now.
    pub fn has_server(&self, session: &str) -> bool {
        self.sessions.lock().is_ok_and(|s| s.get(session).is_some_and(|s| s.server.is_some()))
    }

    /// Resolves once a server is attached to `session` (at once if one is): a client that
    /// connects then reaches it at its first attempt.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tracewire_relay::{Keypair, RelayConfig, RelayEndpoint, RelayServer};
    ///
    /// # #[derive(Clone)] struct Echo;
    /// # impl tracewire_rpc::Handler for Echo {
    /// #     async fn handle(&self, _: tracewire_proto::v1::Request, _: &tracewire_rpc::Connection)
    /// #         -> Result<tracewire_proto::v1::Response, tracewire_rpc::RpcError> { Ok(Default::default()) }
    /// # }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let (listener, address) = RelayServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    /// let relay = RelayServer::new(RelayConfig::default());
    /// tokio::spawn(relay.clone().serve(listener, std::future::pending()));
    /// let ep = RelayEndpoint::new(address.to_string(), "s");
    /// let served = tracewire_relay::serve_via_relay(
    ///     ep, Keypair::generate().unwrap(), Arc::new(Echo), Default::default(), std::future::pending());
    /// tokio::spawn(served);
    /// relay.server_attached("s").await;
    /// assert!(relay.has_server("s"));
    /// # });
    /// ```
    pub async fn server_attached(&self, session: &str) {
        let mut attached = self.servers_attached.subscribe();
        while !self.has_server(session) {
            if attached.changed().await.is_err() {
                return;
            }
        }
    }

    /// Clients attached to `session` (0 for an unknown session).
    pub fn clients(&self, session: &str) -> usize {
        self.sessions.lock().ok().and_then(|s| s.get(session).map(|s| s.clients.len())).unwrap_or(0)
    }

    /// Serves on a bound listener until `shutdown`: gRPC (`tracewire.v1.Relay/Attach`)
    /// over HTTP/2, spoken directly over hyper (see the `wire` module: records are
    /// forwarded without being copied in user space).
    ///
    /// # Errors
    /// None at present: a failed connection ends only that connection, and a failed
    /// accept (out of file descriptors, say) is retried.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), RelayError> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(target: "tracewire_relay", "accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            let service = hyper::service::service_fn(move |request| {
                let me = me.clone();
                async move { Ok::<_, Infallible>(me.handle(request).await) }
            });
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                // 60 KiB records need HTTP/2 windows far above the 64 KiB default, or every
                // record waits a round trip for a window update.
                .initial_stream_window_size(WINDOW)
                .initial_connection_window_size(WINDOW)
                .max_frame_size(MAX_FRAME)
                .serve_connection(TokioIo::new(stream), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
        // Going away resets every session, so both ends learn it at once (typed) instead
        // of waiting for an idle timeout.
        self.close_all("the relay is shutting down");
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
        Ok(())
    }

    /// One attachment: a Hello, then frames both ways until either side leaves.
    async fn handle(self, request: http::Request<Incoming>) -> http::Response<FrameBody> {
        if request.uri().path() != wire::PATH {
            return status_only(12, "unknown method"); // UNIMPLEMENTED
        }
        let mut inbound = FrameReader::new(request.into_body());
        let first = tokio::time::timeout(self.config.hello_timeout, inbound.next()).await;
        let Ok(Some(Ok(RelayFrame { kind: Some(Kind::Hello(hello)), .. }))) = first else {
            return one_frame(reset(ResetReason::Protocol, "expected Hello"));
        };
        if !self.token_ok(&hello.attach_token) {
            return one_frame(reset(ResetReason::BadToken, "attachment refused"));
        }
        let role = Role::try_from(hello.role).unwrap_or(Role::Unspecified);
        if role == Role::Unspecified {
            return one_frame(reset(ResetReason::Protocol, "no role"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (own, out_rx) = mpsc::channel(self.config.session_buffer.max(1));
        let (stop_tx, stop) = oneshot::channel();
        let end = End { id, tx: own.clone(), _stop: stop_tx, server: 0 };
        let attached = match self.attach_end(&hello.session_id, role, end) {
            Ok(x) => x,
            Err((reason, detail)) => return one_frame(reset(reason, detail)),
        };
        let a = Attachment { session: hello.session_id, id, inbound, own, stop, attached };
        tokio::spawn(
            async move { if role == Role::Server { self.run_server(a).await } else { self.run_client(a).await } },
        );
        grpc_response(FrameBody::response(out_rx), None)
    }

    /// Binds `addr` and returns the listener and its address (port 0 picks a free port).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), RelayError> {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RelayError::Transport(format!("bind {addr}: {e}")))?;
        let local = l.local_addr().map_err(|e| RelayError::Transport(e.to_string()))?;
        Ok((l, local))
    }

    /// Resets and forgets every session.
    pub fn close_all(&self, detail: &str) {
        let sessions: Vec<Session> = match self.sessions.lock() {
            Ok(mut s) => s.drain().map(|(_, v)| v).collect(),
            Err(_) => return,
        };
        for s in sessions {
            for end in s.server.into_iter().chain(s.clients.into_values()) {
                let _ = end.tx.try_send(reset(ResetReason::PeerGone, detail).into());
            }
        }
    }

    fn token_ok(&self, presented: &str) -> bool {
        match &self.config.token {
            None => true,
            Some(t) => bool::from(t.as_bytes().ct_eq(presented.as_bytes())),
        }
    }

    /// Puts an attachment in the table; returns the session's "a server attached" signal.
    fn attach_end(&self, session: &str, role: Role, end: End) -> Result<Arc<Notify>, (ResetReason, &'static str)> {
        let mut sessions = self.sessions.lock().map_err(|_| (ResetReason::Protocol, "the relay failed"))?;
        let s = sessions.entry(session.to_owned()).or_default();
        if role == Role::Server {
            if s.server.is_some() {
                return Err((ResetReason::RoleTaken, "the session already has a server"));
            }
            s.server = Some(end);
            s.attached.notify_waiters();
            self.servers_attached.send_modify(|n| *n += 1);
        } else {
            if s.clients.len() >= self.config.max_clients_per_session {
                return Err((ResetReason::SessionFull, "the session serves its limit of clients; retry later"));
            }
            s.clients.insert(end.id, end);
        }
        Ok(Arc::clone(&s.attached))
    }

    /// Where client `id`'s frames go now; binds it to the current server on its first frame.
    fn route(&self, session: &str, id: u64) -> Route {
        let Ok(mut sessions) = self.sessions.lock() else { return Route::Retired };
        let Some(s) = sessions.get_mut(session) else { return Route::Retired };
        let server = s.server.as_ref().map(|e| (e.id, e.tx.clone()));
        let Some(client) = s.clients.get_mut(&id) else { return Route::Retired };
        match server {
            None if client.server == 0 => Route::Waiting,
            Some((sid, tx)) if client.server == 0 || client.server == sid => {
                client.server = sid;
                Route::Server(tx)
            }
            _ => Route::Retired,
        }
    }

    /// Where server `id`'s frame for `stream` goes (`Err`: this server is no longer the
    /// session's). A Reset takes the client out of the table.
    fn target(&self, session: &str, id: u64, stream: u64, last: bool) -> Result<Option<Target>, ()> {
        let Ok(mut sessions) = self.sessions.lock() else { return Err(()) };
        let Some(s) = sessions.get_mut(session) else { return Err(()) };
        if s.server.as_ref().map(|e| e.id) != Some(id) {
            return Err(());
        }
        match s.clients.get(&stream) {
            Some(c) if c.server == id && last => Ok(s.clients.remove(&stream).map(Target::Last)),
            Some(c) if c.server == id => Ok(Some(Target::Client(c.tx.clone()))),
            _ => Ok(None),
        }
    }

    /// Takes client `id` out of the table, if it is still there; returns its server's
    /// sender (when it had reached the current server) so the caller can tell it.
    fn detach_client(&self, session: &str, id: u64) -> Option<mpsc::Sender<Outbound>> {
        let Ok(mut sessions) = self.sessions.lock() else { return None };
        let s = sessions.get_mut(session)?;
        let end = s.clients.remove(&id)?;
        let server = s.server.as_ref().filter(|srv| srv.id == end.server).map(|srv| srv.tx.clone());
        if s.is_empty() {
            sessions.remove(session);
        }
        drop(sessions);
        drop(end);
        server
    }

    /// Takes server `id` out of the table, if it is still the session's, with every client
    /// it served; they are told and their streams closed.
    fn detach_server(&self, session: &str, id: u64) {
        let clients: Vec<End> = {
            let Ok(mut sessions) = self.sessions.lock() else { return };
            let Some(s) = sessions.get_mut(session) else { return };
            if s.server.as_ref().map(|e| e.id) != Some(id) {
                return;
            }
            s.server = None;
            let ids: Vec<u64> = s.clients.values().filter(|c| c.server == id).map(|c| c.id).collect();
            let clients = ids.iter().filter_map(|i| s.clients.remove(i)).collect();
            if s.is_empty() {
                sessions.remove(session);
            }
            clients
        };
        for c in clients {
            let _ = c.tx.try_send(reset(ResetReason::PeerGone, "the server left the session").into());
        }
    }

    /// The next frame `a` sends (shown to the tap). Meanwhile `a` gets its heartbeats, and
    /// is reset with `IDLE` (`idle_detail`) if it sends nothing for the idle timeout;
    /// idleness counts from the last frame it sent.
    async fn next_frame(&self, a: &mut Attachment, pace: &mut Pace, idle_detail: &'static str) -> NextFrame {
        loop {
            tokio::select! {
                biased;
                _ = &mut a.stop => return NextFrame::Stopped,
                f = a.inbound.next() => {
                    pace.idle.as_mut().reset(Instant::now() + self.config.idle_timeout);
                    let Some(Ok(frame)) = f else { return NextFrame::Left };
                    if let Some(tap) = &self.tap {
                        tap(&frame);
                    }
                    return NextFrame::Frame(frame);
                }
                _ = pace.heartbeats.tick() => {
                    let _ = a.own.try_send(heartbeat());
                }
                () = &mut pace.idle => {
                    let _ = a.own.try_send(reset(ResetReason::Idle, idle_detail).into());
                    return NextFrame::Idle;
                }
            }
        }
    }

    /// A client attachment: its frames go to the session's server, tagged with its stream.
    async fn run_client(&self, mut a: Attachment) {
        let cfg = Arc::clone(&self.config);
        let mut pace = Pace::new(&cfg);
        let mut message_start: Option<SystemTime> = None;
        // Why this client's stream ends, for the server (`None`: the server knows).
        let told: Option<&str> = loop {
            let mut frame =
                match self.next_frame(&mut a, &mut pace, "no frame from this client for the idle timeout").await {
                    NextFrame::Stopped => break None,
                    NextFrame::Idle => break Some("the client was idle"),
                    NextFrame::Left => break Some("the client left"),
                    NextFrame::Frame(frame) => frame,
                };
            match &frame.kind {
                Some(Kind::Heartbeat(_)) => continue,
                Some(Kind::Hello(_)) | None => {
                    let _ = a.own.try_send(reset(ResetReason::Protocol, "unexpected frame").into());
                    break Some("the client broke the protocol");
                }
                _ => {}
            }
            let received = SystemTime::now();
            let last = matches!(frame.kind, Some(Kind::Reset(_)));
            // The session's server (waiting for one to attach, bounded by the idle timeout).
            let give_up = Instant::now() + cfg.idle_timeout;
            let server = loop {
                let attached = a.attached.notified();
                tokio::pin!(attached);
                attached.as_mut().enable();
                match self.route(&a.session, a.id) {
                    Route::Server(tx) => break Some(tx),
                    Route::Retired => break None,
                    Route::Waiting => {}
                }
                tokio::select! {
                    biased;
                    _ = &mut a.stop => break None,
                    () = attached => {}
                    () = tokio::time::sleep_until(give_up) => {
                        let _ = a.own.try_send(reset(ResetReason::PeerGone, "no server attached").into());
                        break None;
                    }
                }
            };
            let Some(server) = server else { break Some("the client left") };
            frame.stream = a.id;
            if let Some(tap) = &self.tap {
                tap(&frame);
            }
            let ends = forward_span(&frame, &mut message_start, received);
            let sent = tokio::select! {
                biased;
                _ = &mut a.stop => break None,
                sent = server.send(Outbound { frame, ends }) => sent,
            };
            if sent.is_err() {
                let _ = a.own.try_send(reset(ResetReason::PeerGone, "the server left the session").into());
                break None;
            }
            if last {
                break None; // the client reset its stream; the server has the Reset
            }
        };
        if let (Some(server), Some(detail)) = (self.detach_client(&a.session, a.id), told) {
            let mut frame = reset(ResetReason::PeerGone, detail);
            frame.stream = a.id;
            let _ = server.try_send(frame.into());
        }
    }

    /// A server attachment: its frames go to the client whose stream they name.
    async fn run_server(&self, mut a: Attachment) {
        let cfg = Arc::clone(&self.config);
        let mut pace = Pace::new(&cfg);
        let mut message_start: HashMap<u64, SystemTime> = HashMap::new();
        loop {
            let mut frame =
                match self.next_frame(&mut a, &mut pace, "no frame from this server for the idle timeout").await {
                    NextFrame::Frame(frame) => frame,
                    NextFrame::Stopped | NextFrame::Idle | NextFrame::Left => break,
                };
            match &frame.kind {
                Some(Kind::Heartbeat(_)) => continue,
                Some(Kind::Hello(_)) | None => {
                    let _ = a.own.try_send(reset(ResetReason::Protocol, "unexpected frame").into());
                    break;
                }
                _ if frame.stream == 0 => {
                    let _ = a.own.try_send(reset(ResetReason::Protocol, "a frame for no stream").into());
                    break;
                }
                _ => {}
            }
            let received = SystemTime::now();
            let stream = frame.stream;
            let last = matches!(frame.kind, Some(Kind::Reset(_)));
            let target = match self.target(&a.session, a.id, stream, last) {
                Err(()) => break,
                Ok(None) => continue, // a stream that already ended
                Ok(Some(t)) => t,
            };
            frame.stream = 0;
            if let Some(tap) = &self.tap {
                tap(&frame);
            }
            let mut start = message_start.remove(&stream);
            let ends = forward_span(&frame, &mut start, received);
            if let Some(s) = start {
                message_start.insert(stream, s);
            }
            let (tx, end) = match target {
                Target::Client(tx) => (tx, None),
                Target::Last(end) => {
                    message_start.remove(&stream);
                    (end.tx.clone(), Some(end))
                }
            };
            // A client that takes nothing for the idle timeout is reset, so that it cannot
            // hold up the other clients of the session for longer.
            let sent = tokio::select! {
                biased;
                _ = &mut a.stop => break,
                sent = tx.send_timeout(Outbound { frame, ends }, cfg.idle_timeout) => sent,
            };
            drop(end); // after its last frame: the client's stream closes
            if let Err(SendTimeoutError::Timeout(_)) = sent
                && self.detach_client(&a.session, stream).is_some()
            {
                let _ = tx.try_send(reset(ResetReason::Idle, "the client took nothing for the idle timeout").into());
                let mut frame = reset(ResetReason::PeerGone, "the client stopped reading");
                frame.stream = stream;
                let _ = a.own.try_send(frame.into());
                message_start.remove(&stream);
            }
        }
        self.detach_server(&a.session, a.id);
    }
}
