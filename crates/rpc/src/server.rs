//! The server dispatcher.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tracewire_context::{Extracted, TraceCarrier, TraceContext, extract};
use tracewire_proto::v1::{Envelope, Notification, Request, Response, Timing, envelope::Body, response};
use tracewire_telemetry::{Queued, Stage, inject_span, remote_context, set_parent_from, stage_span};
use tracing::Instrument;

use crate::timing::unix_nanos;
use crate::transport::Transport;
use crate::{ErrorCode, RpcError, method_name};

/// Server settings (per connection).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Worker tasks handling requests concurrently.
    pub workers: usize,
    /// Requests waiting for a worker before the connection's reader waits (backpressure).
    pub dispatch_queue: usize,
    /// Outgoing envelopes (responses, notifications) waiting for the transport.
    pub delivery_queue: usize,
    /// Largest envelope accepted, in bytes; larger ones get a `TOO_LARGE` error.
    pub max_envelope_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { workers: 8, dispatch_queue: 64, delivery_queue: 256, max_envelope_bytes: 4 << 20 }
    }
}

/// What a server does with requests.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request. The current span is the request's `rpc.dispatch` span, a child
    /// of the caller's context. An `Err` becomes an error response.
    fn handle(&self, request: Request, conn: &Connection) -> impl Future<Output = Result<Response, RpcError>> + Send;

    /// Called once when a connection starts, before its first request. A handler that
    /// keeps a clone of `conn` must drop it in [`Handler::disconnected`]: the connection's
    /// writer (and so [`serve`]) ends only once every clone is gone.
    fn connected(&self, conn: &Connection) {
        let _ = conn;
    }

    /// Called once the peer has sent its last request (it half-closed its side, the gRPC
    /// way of saying "no more requests") and every request has been answered. The
    /// connection stays open, delivering notifications, until the returned future
    /// completes: a handler finishes here the work the connection started (the exec-server
    /// waits for its processes' `Exited`). When the peer goes away meanwhile (a reset, a
    /// disconnect, a dropped call), the future is dropped. [`Handler::disconnected`]
    /// follows either way. The default finishes at once.
    fn finish(&self, conn: &Connection) -> impl Future<Output = ()> + Send {
        let _ = conn;
        std::future::ready(())
    }

    /// Called once when a connection ends: after its last request was handled and
    /// [`Handler::finish`] completed, or as soon as the peer went away (which cancels the
    /// connection's work).
    fn disconnected(&self, conn: &Connection) {
        let _ = conn;
    }
}

enum Outgoing {
    Response(Envelope),
    Notification(Queued<Envelope>),
}

/// One client connection, as a handler sees it: its id and a way to push notifications.
#[derive(Debug, Clone)]
pub struct Connection {
    id: u64,
    out: mpsc::Sender<Outgoing>,
    /// Requests decoded and waiting for a worker (the dispatch queue's depth).
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Response(_) => "Response",
            Self::Notification(_) => "Notification",
        })
    }
}

impl Connection {
    /// This connection's id (unique in the process).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Pushes a notification with the trace context it belongs to. Waits while the
    /// delivery queue is full (backpressure); the wait is a `terminal.queue` span.
    ///
    /// # Errors
    /// [`RpcError::Closed`] once the connection is gone.
    pub async fn notify(&self, notification: Notification, trace: TraceCarrier) -> Result<(), RpcError> {
        let env =
            Envelope { id: 0, trace: Some(trace.into()), timing: None, body: Some(Body::Notification(notification)) };
        self.out
            .send(Outgoing::Notification(Queued::new(Stage::TerminalQueue, env)))
            .await
            .map_err(|_| RpcError::Closed)
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.out.is_closed()
    }

    /// Requests waiting for a worker now (the dispatch queue's depth; a cheap atomic read).
    pub fn dispatch_queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Responses and notifications waiting for the transport now (the delivery queue's
    /// depth, including slots reserved by senders about to push).
    pub fn delivery_queue_depth(&self) -> usize {
        self.out.max_capacity().saturating_sub(self.out.capacity())
    }
}

static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

struct Job {
    id: u64,
    carrier: TraceCarrier,
    t1: i64,
    request: Request,
}

fn error_envelope(id: u64, code: ErrorCode, message: impl Into<String>, trace: Option<TraceCarrier>) -> Envelope {
    Envelope {
        id,
        trace: trace.map(Into::into),
        timing: None,
        body: Some(Body::Response(Response {
            result: Some(response::Result::Error(tracewire_proto::v1::Error {
                code: code.into(),
                message: message.into(),
            })),
        })),
    }
}

/// What the server makes of one incoming frame (see [`decode_incoming`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Incoming {
    /// A request to dispatch, with its id and trace carrier (empty when it had none).
    Request {
        /// The request id, echoed in the response.
        id: u64,
        /// The caller's trace context (may be malformed: the policy deals with that).
        carrier: TraceCarrier,
        /// The request; its method is always set.
        request: Request,
    },
    /// Not a request: the error response to send back; the connection goes on.
    Reject(Envelope),
}

/// Decodes one incoming frame the way [`serve`] does: an oversized frame is `TOO_LARGE`,
/// an undecodable one `DECODE`, a request without a method `UNKNOWN_METHOD`, anything else
/// that is not a request `INVALID_REQUEST`. Never panics, whatever the bytes.
pub fn decode_incoming(frame: Bytes, max_envelope_bytes: usize) -> Incoming {
    if frame.len() > max_envelope_bytes {
        let msg = format!("envelope of {} bytes exceeds the limit of {}", frame.len(), max_envelope_bytes);
        return Incoming::Reject(error_envelope(0, ErrorCode::TooLarge, msg, None));
    }
    let env = match Envelope::decode(frame) {
        Ok(env) => env,
        Err(e) => {
            return Incoming::Reject(error_envelope(0, ErrorCode::Decode, format!("undecodable envelope: {e}"), None));
        }
    };
    let carrier: TraceCarrier = env.trace.unwrap_or_default().into();
    match env.body {
        Some(Body::Request(request)) if request.method.is_some() => Incoming::Request { id: env.id, carrier, request },
        Some(Body::Request(_)) => Incoming::Reject(error_envelope(
            env.id,
            ErrorCode::UnknownMethod,
            "unknown or missing method",
            rejection_carrier(carrier),
        )),
        _ => Incoming::Reject(error_envelope(
            env.id,
            ErrorCode::InvalidRequest,
            "expected a request",
            rejection_carrier(carrier),
        )),
    }
}

/// Serves one connection: decodes requests, queues them for the workers, answers each,
/// and delivers notifications.
///
/// The end of the incoming frames (the peer's half-close) means "no more requests": the
/// connection answers what it received, lets the handler finish its work
/// ([`Handler::finish`]), delivers everything queued, then closes its outgoing side.
/// The peer going away (the transport dropping its end of the outgoing frames) cancels
/// instead: [`Handler::disconnected`] is called at once. Returns once the connection is
/// closed and every request has been answered.
pub async fn serve<H: Handler>(transport: impl Transport, handler: Arc<H>, config: ServerConfig) {
    serve_until(transport, handler, config, std::future::pending()).await;
}

/// [`serve`], also cancelled when `cancel` resolves (a transport that learns of a reset
/// apart from its channels, as the gRPC transport does).
pub(crate) async fn serve_until<H: Handler>(
    transport: impl Transport,
    handler: Arc<H>,
    config: ServerConfig,
    cancel: impl Future<Output = ()> + Send,
) {
    let link = transport.into_link();
    let (out_tx, out_rx) = mpsc::channel::<Outgoing>(config.delivery_queue.max(1));
    let conn = Connection {
        id: CONNECTIONS.fetch_add(1, Ordering::Relaxed),
        out: out_tx,
        queued: Arc::new(AtomicUsize::new(0)),
    };
    handler.connected(&conn);
    // The peer is gone once nobody takes the outgoing frames (or the transport says so).
    let peer = link.tx.clone();
    let mut gone = Box::pin(async move {
        tokio::select! {
            () = peer.closed() => {}
            () = cancel => {}
        }
    });
    let writer = tokio::spawn(write_loop(out_rx, link.tx));

    let (job_tx, job_rx) = mpsc::channel::<Queued<Job>>(config.dispatch_queue.max(1));
    let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
    let mut workers = Vec::with_capacity(config.workers.max(1));
    for _ in 0..config.workers.max(1) {
        let (rx, handler, conn) = (Arc::clone(&job_rx), Arc::clone(&handler), conn.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(job) = next else { break };
                conn.queued.fetch_sub(1, Ordering::Relaxed);
                dispatch(job.into_inner(), &*handler, &conn).await;
            }
        }));
    }

    let mut rx = link.rx;
    let mut cancelled = false;
    loop {
        let frame = tokio::select! {
            biased;
            () = &mut gone => {
                cancelled = true;
                break;
            }
            frame = rx.recv() => frame,
        };
        let Some(frame) = frame else { break };
        let t1 = unix_nanos();
        let (id, carrier, request) = match decode_incoming(frame, config.max_envelope_bytes) {
            Incoming::Request { id, carrier, request } => (id, carrier, request),
            Incoming::Reject(env) => {
                let _ = conn.out.send(Outgoing::Response(env)).await;
                continue;
            }
        };
        // The wait for a worker is a span of its own, under the caller's context.
        let (parent, _) = remote_context(&carrier);
        let job = Job { id, carrier, t1, request };
        // Counted before the send so that a worker's decrement never comes first.
        conn.queued.fetch_add(1, Ordering::Relaxed);
        if job_tx.send(Queued::with_parent(Stage::RpcQueue, job, parent)).await.is_err() {
            conn.queued.fetch_sub(1, Ordering::Relaxed);
            break;
        }
    }
    drop(rx);
    drop(job_tx);
    for w in workers {
        let _ = w.await;
    }
    if !cancelled {
        // A half-close: the work goes on until it is done or the peer leaves.
        tokio::select! {
            () = handler.finish(&conn) => {}
            () = &mut gone => {}
        }
    }
    drop(gone);
    handler.disconnected(&conn);
    drop(conn);
    let _ = writer.await;
}

async fn dispatch<H: Handler>(job: Job, handler: &H, conn: &Connection) {
    let span = stage_span!(
        RpcDispatch,
        rpc.system = "tracewire",
        rpc.method = method_name(&job.request),
        rpc.request.id = job.id,
        error.type = tracing::field::Empty,
    );
    let extracted = set_parent_from(&span, &job.carrier);
    let result = handler.handle(job.request, conn).instrument(span.clone()).await;
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            span.record("error.type", format!("{:?}", e.code()));
            let message = match &e {
                RpcError::Remote { message, .. } => message.clone(),
                other => other.to_string(),
            };
            Response {
                result: Some(response::Result::Error(tracewire_proto::v1::Error { code: e.code().into(), message })),
            }
        }
    };
    let env = Envelope {
        id: job.id,
        trace: Some(response_carrier(job.carrier, extracted, &span).into()),
        timing: Some(Timing { client_send_unix_nanos: 0, server_recv_unix_nanos: job.t1, server_send_unix_nanos: 0 }),
        body: Some(Body::Response(response)),
    };
    let _ = conn.out.send(Outgoing::Response(env)).await;
}

/// The carrier of a response: the context the server used for the request, never a
/// value it refused. A continued context is the caller's, as the policy read it (version
/// `00`, known flags, the tracestate and the baggage members it kept); a missing or invalid
/// one is replaced by the new root the request ran in (`span`'s context), without the
/// refused header values. The request's strings are reused.
fn response_carrier(mut carrier: TraceCarrier, ex: Extracted, span: &tracing::Span) -> TraceCarrier {
    carrier.traceparent.clear();
    carrier.tracestate.clear();
    carrier.baggage.clear();
    let Extracted { context, remote_parent, started, baggage, .. } = ex;
    match remote_parent {
        Some(parent) if started.is_none() => {
            // A carrier refuses none of its own fields.
            let _ = TraceContext { span_id: parent, ..context }.inject(Some(&baggage), &mut carrier);
        }
        // Writes nothing when the span has no context (telemetry off).
        _ => {
            let _ = inject_span(span, &mut carrier);
        }
    }
    carrier
}

/// The carrier of an error answered before dispatch: the caller's context when it is
/// valid (as [`response_carrier`] writes it), else none, since no span was started.
fn rejection_carrier(carrier: TraceCarrier) -> Option<TraceCarrier> {
    let ex = extract(&carrier);
    ex.continued().then(|| response_carrier(carrier, ex, &tracing::Span::none()))
}

async fn write_loop(mut out: mpsc::Receiver<Outgoing>, tx: mpsc::Sender<Bytes>) {
    while let Some(item) = out.recv().await {
        let frame = match item {
            Outgoing::Response(mut env) => {
                if let Some(t) = env.timing.as_mut() {
                    t.server_send_unix_nanos = unix_nanos();
                }
                Bytes::from(env.encode_to_vec())
            }
            Outgoing::Notification(queued) => {
                let env = queued.into_inner();
                let carrier: TraceCarrier = env.trace.clone().unwrap_or_default().into();
                let (event, bytes) = match &env.body {
                    Some(Body::Notification(Notification { event: Some(e) })) => match e {
                        tracewire_proto::v1::notification::Event::Output(o) => ("Output", o.data.len()),
                        tracewire_proto::v1::notification::Event::Exited(_) => ("Exited", 0),
                    },
                    _ => ("unknown", 0),
                };
                let span = stage_span!(TerminalDeliver, tracewire.event = event, tracewire.bytes = bytes);
                set_parent_from(&span, &carrier);
                let frame = Bytes::from(env.encode_to_vec());
                if tx.send(frame).instrument(span).await.is_err() {
                    break;
                }
                continue;
            }
        };
        if tx.send(frame).await.is_err() {
            break;
        }
    }
}
