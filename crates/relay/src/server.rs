//! The relay server: pairs a client and a server by session id and forwards their frames.
//! It holds no keys; it sees Hello, handshake messages (public by design), ciphertext
//! records, and — only when a sender opts in — a cleartext traceparent for timing spans.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use subtle::ConstantTimeEq;
use tokio::sync::{Notify, mpsc};
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
    /// Frames buffered per direction of a session; a full buffer makes the sender wait.
    pub session_buffer: usize,
    /// How often the relay sends each end a heartbeat.
    pub heartbeat: Duration,
    /// An end that sends nothing (not even heartbeats) for this long is closed.
    pub idle_timeout: Duration,
    /// How long an attachment may take to say Hello.
    pub hello_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            token: None,
            session_buffer: 64,
            heartbeat: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            hello_timeout: Duration::from_secs(5),
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

#[derive(Default)]
struct Session {
    ends: [Option<mpsc::Sender<Outbound>>; 2],
    attached: Arc<Notify>,
}

/// The relay.
#[derive(Clone)]
pub struct RelayServer {
    config: Arc<RelayConfig>,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
    tap: Option<Tap>,
}

impl std::fmt::Debug for RelayServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayServer").field("sessions", &self.sessions()).finish_non_exhaustive()
    }
}

fn reset(reason: ResetReason, detail: impl Into<String>) -> RelayFrame {
    RelayFrame { kind: Some(Kind::Reset(Reset { reason: reason.into(), detail: detail.into() })) }
}

fn slot(role: Role) -> Option<usize> {
    match role {
        Role::Client => Some(0),
        Role::Server => Some(1),
        Role::Unspecified => None,
    }
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

impl RelayServer {
    /// A relay with these settings.
    pub fn new(config: RelayConfig) -> Self {
        Self { config: Arc::new(config), sessions: Arc::default(), tap: None }
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
        let Ok(Some(Ok(RelayFrame { kind: Some(Kind::Hello(hello)) }))) = first else {
            return one_frame(reset(ResetReason::Protocol, "expected Hello"));
        };
        if !self.token_ok(&hello.attach_token) {
            return one_frame(reset(ResetReason::BadToken, "attachment refused"));
        }
        let Some(idx) = slot(Role::try_from(hello.role).unwrap_or(Role::Unspecified)) else {
            return one_frame(reset(ResetReason::Protocol, "no role"));
        };
        let (out_rx, attached) = match self.attach_end(&hello.session_id, idx) {
            Ok(x) => x,
            Err(reason) => return one_frame(reset(reason, "attachment refused")),
        };
        let own = self.sessions.lock().ok().and_then(|s| s.get(&hello.session_id).and_then(|s| s.ends[idx].clone()));
        let Some(own) = own else { return status_only(13, "session vanished") }; // INTERNAL
        tokio::spawn(async move { self.forward(hello.session_id, idx, inbound, own, attached).await });
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
            for end in s.ends.into_iter().flatten() {
                let _ = end.try_send(reset(ResetReason::PeerGone, detail).into());
            }
        }
    }

    fn token_ok(&self, presented: &str) -> bool {
        match &self.config.token {
            None => true,
            Some(t) => bool::from(t.as_bytes().ct_eq(presented.as_bytes())),
        }
    }

    /// Registers an end; returns its outbound receiver.
    fn attach_end(&self, session: &str, idx: usize) -> Result<(mpsc::Receiver<Outbound>, Arc<Notify>), ResetReason> {
        let mut sessions = self.sessions.lock().map_err(|_| ResetReason::Protocol)?;
        let s = sessions.entry(session.to_owned()).or_default();
        if s.ends[idx].is_some() {
            return Err(ResetReason::RoleTaken);
        }
        let (tx, rx) = mpsc::channel(self.config.session_buffer.max(1));
        s.ends[idx] = Some(tx);
        s.attached.notify_waiters();
        Ok((rx, Arc::clone(&s.attached)))
    }

    fn peer(&self, session: &str, idx: usize) -> Option<mpsc::Sender<Outbound>> {
        self.sessions.lock().ok()?.get(session)?.ends[1 - idx].clone()
    }

    /// Detaches an end: the peer is told, and the session is removed.
    fn detach(&self, session: &str, idx: usize, reason: ResetReason) {
        let peer = {
            let Ok(mut sessions) = self.sessions.lock() else { return };
            let Some(s) = sessions.get_mut(session) else { return };
            s.ends[idx] = None;
            let peer = s.ends[1 - idx].take();
            sessions.remove(session);
            peer
        };
        if let Some(p) = peer {
            let _ = p.try_send(reset(reason, "the other end left the session").into());
        }
    }

    async fn forward(
        &self,
        session: String,
        idx: usize,
        mut inbound: FrameReader<Incoming>,
        own: mpsc::Sender<Outbound>,
        attached: Arc<Notify>,
    ) {
        let cfg = Arc::clone(&self.config);
        let mut heartbeat = tokio::time::interval(cfg.heartbeat);
        heartbeat.tick().await;
        let mut message_start: Option<SystemTime> = None;
        let reason = loop {
            let frame = tokio::select! {
                f = tokio::time::timeout(cfg.idle_timeout, inbound.next()) => f,
                _ = heartbeat.tick() => {
                    let _ = own.try_send(RelayFrame { kind: Some(Kind::Heartbeat(Heartbeat {})) }.into());
                    continue;
                }
            };
            let frame = match frame {
                Err(_) => {
                    let _ = own.try_send(reset(ResetReason::Idle, "idle").into());
                    break ResetReason::Idle;
                }
                Ok(None | Some(Err(_))) => break ResetReason::PeerGone,
                Ok(Some(Ok(f))) => f,
            };
            if let Some(tap) = &self.tap {
                tap(&frame);
            }
            match &frame.kind {
                Some(Kind::Heartbeat(_)) => continue,
                Some(Kind::Hello(_)) | None => {
                    let _ = own.try_send(reset(ResetReason::Protocol, "unexpected frame").into());
                    break ResetReason::Protocol;
                }
                _ => {}
            }
            let received = SystemTime::now();
            // Wait for the peer to attach (bounded by the idle timeout).
            let peer = loop {
                if let Some(p) = self.peer(&session, idx) {
                    break Some(p);
                }
                if tokio::time::timeout(cfg.idle_timeout, attached.notified()).await.is_err() {
                    break None;
                }
            };
            let Some(peer) = peer else {
                let _ = own.try_send(reset(ResetReason::PeerGone, "no peer attached").into());
                break ResetReason::PeerGone;
            };
            let timing = match &frame.kind {
                Some(Kind::Data(d)) if !d.traceparent.is_empty() => {
                    let start = *message_start.get_or_insert(received);
                    Some((start, d.last_fragment, d.traceparent.clone(), d.record.len()))
                }
                _ => None,
            };
            if let Some(tap) = &self.tap {
                tap(&frame);
            }
            // relay.forward ends when the stream to the peer takes the message's last frame.
            let ends = match timing {
                Some((start, true, traceparent, bytes)) => {
                    message_start = None;
                    let (parent, _) = tracewire_telemetry::remote_context(&[("traceparent", traceparent.as_str())]);
                    Some(EndsSpan {
                        stage: tracewire_telemetry::Stage::RelayForward,
                        start,
                        parent,
                        attributes: vec![opentelemetry::KeyValue::new(
                            "tracewire.bytes",
                            i64::try_from(bytes).unwrap_or(i64::MAX),
                        )],
                    })
                }
                _ => None,
            };
            if peer.send(Outbound { frame, ends }).await.is_err() {
                break ResetReason::PeerGone;
            }
        };
        self.detach(&session, idx, reason);
    }
}
