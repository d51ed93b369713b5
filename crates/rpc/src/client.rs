//! The RPC client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracewire_context::TraceCarrier;
use tracewire_proto::v1::{Envelope, Request, Timing, envelope::Body, response};
use tracewire_telemetry::{Queued, Stage, inject_span, remote_context, stage_span};

use crate::timing::{ClockSample, unix_nanos};
use crate::transport::Transport;
use crate::{ErrorCode, RpcError, method_name};

/// Client settings.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ClientConfig {
    /// How long a call waits for its response.
    pub call_timeout: Duration,
    /// Calls in flight at once; more wait for a slot.
    pub max_in_flight: usize,
    /// Notifications buffered for the consumer before the connection's reader waits
    /// (which in turn makes the server wait: backpressure, not memory).
    pub notification_buffer: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { call_timeout: Duration::from_secs(30), max_in_flight: 256, notification_buffer: 256 }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Envelope>>>>;

/// An RPC client over one link. Cheap to clone; calls may run concurrently. Dropping the
/// last clone closes the connection both ways: the peer sees it go away (not a
/// half-close), so a server cancels what the connection started.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Bytes>,
    pending: Pending,
    next_id: AtomicU64,
    in_flight: Semaphore,
    notifications: Mutex<Option<mpsc::Receiver<Queued<Envelope>>>>,
    config: ClientConfig,
    closed: tokio::sync::watch::Receiver<bool>,
    reader: tokio::task::AbortHandle,
}

impl Drop for Inner {
    /// The last handle is gone: stop reading, which drops the link's receiving side (over
    /// gRPC that resets the stream, and the server cancels the connection's work).
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Removes a call from the pending map when the call ends or is dropped (cancellation).
struct PendingGuard {
    pending: Pending,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&self.id);
        }
    }
}

impl Client {
    /// A client over `transport`. Spawns the reader task on the current tokio runtime.
    pub fn new(transport: impl Transport, config: ClientConfig) -> Self {
        let link = transport.into_link();
        let pending: Pending = Arc::default();
        let (note_tx, note_rx) = mpsc::channel(config.notification_buffer.max(1));
        let (closed_tx, closed_rx) = tokio::sync::watch::channel(false);
        let reader = tokio::spawn(read_loop(link.rx, Arc::clone(&pending), note_tx, closed_tx)).abort_handle();
        Self {
            inner: Arc::new(Inner {
                tx: link.tx,
                pending,
                next_id: AtomicU64::new(1),
                in_flight: Semaphore::new(config.max_in_flight.max(1)),
                notifications: Mutex::new(Some(note_rx)),
                config,
                closed: closed_rx,
                reader,
            }),
        }
    }

    /// The notifications the peer pushes (each with the trace context of what it belongs
    /// to). There is one stream per client: the first call takes it.
    ///
    /// Each arrives as a [`Queued`] `terminal.queue` span, started when the notification
    /// was decoded, under the context it carries: the consumer ends it by taking the item
    /// ([`Queued::into_inner`]), so the wait for the consumer is part of the trace.
    pub fn take_notifications(&self) -> Option<mpsc::Receiver<Queued<Envelope>>> {
        self.inner.notifications.lock().ok().and_then(|mut n| n.take())
    }

    /// Whether the connection has closed.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Calls with the configured timeout; see [`Client::call_with_timeout`].
    ///
    /// # Errors
    /// As [`Client::call_with_timeout`].
    pub async fn call(&self, request: Request) -> Result<response::Result, RpcError> {
        self.call_with_timeout(request, self.inner.config.call_timeout).await
    }

    /// Sends `request` and waits for its response, inside an `rpc.call` span whose context
    /// the envelope carries. Dropping the future cancels the call.
    ///
    /// # Errors
    /// [`RpcError::Remote`] for an error response, [`RpcError::Timeout`],
    /// [`RpcError::Closed`] when the connection ends first.
    pub async fn call_with_timeout(&self, request: Request, timeout: Duration) -> Result<response::Result, RpcError> {
        let inner = &*self.inner;
        let _slot = inner.in_flight.acquire().await.map_err(|_| RpcError::Closed)?;
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let span = stage_span!(
            RpcCall,
            rpc.system = "tracewire",
            rpc.method = method_name(&request),
            rpc.request.id = id,
            tracewire.clock.offset_us = tracing::field::Empty,
            tracewire.net.rtt_us = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let result = async {
            let mut carrier = TraceCarrier::default();
            // A carrier refuses nothing we write; a disabled span simply sends none.
            let _ = inject_span(&span, &mut carrier);
            let (resp_tx, resp_rx) = oneshot::channel();
            let _guard = {
                let mut p = inner.pending.lock().map_err(|_| RpcError::Closed)?;
                p.insert(id, resp_tx);
                PendingGuard { pending: Arc::clone(&inner.pending), id }
            };
            let t0 = unix_nanos();
            let envelope = Envelope {
                id,
                trace: Some(carrier.into()),
                timing: Some(Timing { client_send_unix_nanos: t0, ..Timing::default() }),
                body: Some(Body::Request(request)),
            };
            inner.tx.send(Bytes::from(envelope.encode_to_vec())).await.map_err(|_| RpcError::Closed)?;
            let reply = match tokio::time::timeout(timeout, resp_rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => return Err(RpcError::Closed),
                Err(_) => return Err(RpcError::Timeout(timeout)),
            };
            let t3 = unix_nanos();
            if let Some(t) = reply.timing {
                let sample = ClockSample { t0, t1: t.server_recv_unix_nanos, t2: t.server_send_unix_nanos, t3 };
                if sample.is_complete() {
                    span.record("tracewire.clock.offset_us", sample.offset_nanos() / 1000);
                    span.record("tracewire.net.rtt_us", sample.rtt_nanos() / 1000);
                }
            }
            match reply.body {
                Some(Body::Response(r)) => match r.result {
                    Some(response::Result::Error(e)) => Err(RpcError::Remote {
                        code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
                        message: e.message,
                    }),
                    Some(other) => Ok(other),
                    None => Err(RpcError::Decode("a response without a result".into())),
                },
                _ => Err(RpcError::Decode("a reply that is not a response".into())),
            }
        }
        .await;
        if let Err(e) = &result {
            span.record("error.type", format!("{:?}", e.code()));
        }
        result
    }
}

async fn read_loop(
    mut rx: mpsc::Receiver<Bytes>,
    pending: Pending,
    notifications: mpsc::Sender<Queued<Envelope>>,
    closed: tokio::sync::watch::Sender<bool>,
) {
    while let Some(frame) = rx.recv().await {
        let Ok(env) = Envelope::decode(frame) else {
            tracing::debug!(target: "tracewire_rpc", "dropping an undecodable frame from the server");
            continue;
        };
        match env.body {
            Some(Body::Response(_)) => {
                let waiter = pending.lock().ok().and_then(|mut p| p.remove(&env.id));
                if let Some(w) = waiter {
                    let _ = w.send(env);
                }
            }
            Some(Body::Notification(_)) => {
                // Waiting here is the backpressure: the server's writer waits in turn. An
                // error only means nobody listens for notifications; responses go on.
                let carrier: tracewire_context::TraceCarrier = env.trace.clone().map(Into::into).unwrap_or_default();
                let (parent, _) = remote_context(&carrier);
                let _ = notifications.send(Queued::with_parent(Stage::TerminalQueue, env, parent)).await;
            }
            _ => {}
        }
    }
    let _ = closed.send(true);
    // Every waiting call learns that the connection is gone.
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}
