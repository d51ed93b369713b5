//! The exec client: start remote processes and receive their pushed events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tracewire_proto::v1::{
    CloseStdin, Kill, Request, Signal, Start, Stream, WriteStdin, envelope::Body, exited, notification,
    request::Method, response,
};
use tracewire_rpc::{Client, ClientConfig, Envelope, RpcError, Transport};
use tracewire_telemetry::{Queued, stage_span};
use tracing::Instrument;

/// Events of one process buffered before its `start` returns, across all processes.
const EARLY_LIMIT: usize = 4096;
/// Events buffered per process for its consumer.
const PER_PROCESS: usize = 256;

/// Why an exec operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The RPC failed (including a typed error from the server).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The connection ended before the process's Exited event.
    #[error("the connection ended before the process exited")]
    Disconnected,
    /// The server answered with something unexpected.
    #[error("unexpected response from the server")]
    UnexpectedResponse,
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a remote process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal, when a signal ended it.
    pub signal: Option<i32>,
    /// From spawn to exit, as the server measured it.
    pub duration: Duration,
}

impl ExitStatus {
    /// The code a shell would report: the exit code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }
}

/// One pushed event of a remote process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A chunk of output.
    Output {
        /// Which stream.
        stream: OutputStream,
        /// Order across both streams, from 0.
        seq: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The process exited; no event follows.
    Exited(ExitStatus),
}

impl Event {
    /// `Output` or `Exited` (the `tracewire.event` attribute of its spans).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Output { .. } => "Output",
            Self::Exited(_) => "Exited",
        }
    }
}

/// Everything a process wrote, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

/// An event waiting for its consumer: its `terminal.queue` span runs from the decoding of
/// the notification until [`RemoteProcess::next_event`] takes it.
type Pending = Queued<Event>;

enum Route {
    /// Events that arrived before `start` registered the process.
    Buffering(Vec<Pending>),
    Ready(mpsc::Sender<Pending>),
}

#[derive(Default)]
struct Router {
    routes: HashMap<u64, Route>,
    buffered: usize,
    dropped: u64,
}

/// A client of an exec-server. Cheap to clone.
#[derive(Clone)]
pub struct ExecClient {
    rpc: Client,
    router: Arc<Mutex<Router>>,
    /// The connection's `exec` root until an exec adopts it (see [`ExecClient::connect`]).
    root: Arc<Mutex<Option<PendingRoot>>>,
}

/// An `exec` root made at connect time, holding `rpc.connect`, until an exec adopts it.
struct PendingRoot {
    span: tracing::Span,
    /// The trace it continues, when it was made from a carrier with a valid context.
    continues: Option<tracewire_context::TraceId>,
}

impl PendingRoot {
    /// A root of a trace of its own, when no span is current.
    fn unless_current() -> Option<Self> {
        tracing::Span::current().is_none().then(|| Self { span: exec_root(), continues: None })
    }

    /// A root continuing the context in `parent`.
    fn from_carrier<C: tracewire_context::Carrier + ?Sized>(parent: &C) -> Self {
        let span = exec_root();
        let extracted = tracewire_telemetry::set_parent_from(&span, parent);
        let continues = extracted.remote_parent.map(|_| extracted.context.trace_id);
        Self { span, continues }
    }
}

impl std::fmt::Debug for ExecClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecClient").field("closed", &self.rpc.is_closed()).finish_non_exhaustive()
    }
}

fn event_of(env: Envelope) -> Option<(u64, Event)> {
    let Some(Body::Notification(n)) = env.body else { return None };
    match n.event? {
        notification::Event::Output(o) => {
            let stream =
                if o.stream == i32::from(Stream::Stderr) { OutputStream::Stderr } else { OutputStream::Stdout };
            Some((o.process_id, Event::Output { stream, seq: o.seq, data: o.data }))
        }
        notification::Event::Exited(e) => {
            let (code, signal) = match e.status {
                Some(exited::Status::Code(c)) => (Some(c), None),
                Some(exited::Status::Signal(s)) => (None, Some(s)),
                None => (None, None),
            };
            Some((
                e.process_id,
                Event::Exited(ExitStatus { code, signal, duration: Duration::from_micros(e.duration_us) }),
            ))
        }
    }
}

impl ExecClient {
    /// A client over an RPC client (whose notifications it takes). It makes each exec's
    /// `exec` span; the connection's span, if any, is the caller's (see
    /// [`ExecClient::connect_via`], which makes it part of the first exec's trace).
    pub fn new(rpc: Client) -> Self {
        let router = Arc::new(Mutex::new(Router::default()));
        if let Some(mut notes) = rpc.take_notifications() {
            let router = Arc::clone(&router);
            tokio::spawn(async move {
                while let Some(note) = notes.recv().await {
                    let Some(routed) = note.map(event_of).transpose() else { continue };
                    let (pid, last) = (routed.get().0, matches!(routed.get().1, Event::Exited(_)));
                    let event = routed.map(|(_, event)| event);
                    let sender = {
                        let Ok(mut r) = router.lock() else { break };
                        let r = &mut *r;
                        match r.routes.get_mut(&pid) {
                            Some(Route::Ready(tx)) => Some((tx.clone(), event)),
                            Some(Route::Buffering(buf)) => {
                                buf.push(event);
                                r.buffered += 1;
                                None
                            }
                            None if r.buffered < EARLY_LIMIT => {
                                r.routes.insert(pid, Route::Buffering(vec![event]));
                                r.buffered += 1;
                                None
                            }
                            None => {
                                r.dropped += 1;
                                None
                            }
                        }
                    };
                    if let Some((tx, event)) = sender {
                        // Waiting here is the backpressure: the server pauses the pipe.
                        let _ = tx.send(event).await;
                        if last && let Ok(mut r) = router.lock() {
                            r.routes.remove(&pid);
                        }
                    }
                }
                // The connection is gone: every process's event stream ends.
                if let Ok(mut r) = router.lock() {
                    r.routes.clear();
                }
            });
        }
        Self { rpc, router, root: Arc::default() }
    }

    /// Connects to an exec-server over gRPC (`127.0.0.1:7070` or `unix:/path`), inside an
    /// `rpc.connect` span.
    ///
    /// The spans follow the caller's: with a current span, `rpc.connect` and every exec's
    /// `exec` span are its children. With none, the connection gets a pending `exec` root
    /// that starts here and holds `rpc.connect`; the first exec started with no current span
    /// adopts it (its trace covers the connect and the exec), later ones get roots of their
    /// own, and a root no exec adopted ends when the last clone of the client is dropped.
    ///
    /// # Errors
    /// When the address is invalid or the server cannot be reached.
    pub async fn connect(address: &str) -> Result<Self, ExecError> {
        Self::connecting(PendingRoot::unless_current(), connect_grpc(address), error_type).await
    }

    /// As [`ExecClient::connect`], with the connection's `exec` root continuing the trace in
    /// `parent` (W3C `traceparent`, `tracestate`, `baggage`), such as the `TRACEPARENT` a
    /// caller put in this process's environment; [`ExecClient::start_from`] with the same
    /// context adopts that root. A missing or invalid context starts a new trace, with
    /// `tracewire.propagation.started` saying why.
    ///
    /// # Errors
    /// As [`ExecClient::connect`].
    pub async fn connect_from<C: tracewire_context::Carrier + ?Sized>(
        address: &str,
        parent: &C,
    ) -> Result<Self, ExecError> {
        Self::connecting(Some(PendingRoot::from_carrier(parent)), connect_grpc(address), error_type).await
    }

    /// Connects over another transport, such as a relay session: `connecting` runs inside
    /// the connection's pending `exec` root when there is no current span (see
    /// [`ExecClient::connect`]), so the spans it makes (the relay's `rpc.connect`) belong to
    /// the first exec's trace.
    ///
    /// With a relay: `ExecClient::connect_via(tracewire_relay::connect(&endpoint, &key))`.
    ///
    /// ```no_run
    /// use tracewire_exec::{ExecClient, Start};
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let address = "127.0.0.1:7070".parse()?;
    /// let client = ExecClient::connect_via(tracewire_rpc::grpc::connect(&address)).await?;
    /// let start = Start { argv: vec!["true".into()], ..Default::default() };
    /// client.start(start).await?.wait_with_output().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The error of `connecting`.
    pub async fn connect_via<T, E, F>(connecting: F) -> Result<Self, E>
    where
        T: Transport,
        E: std::fmt::Debug,
        F: Future<Output = Result<T, E>>,
    {
        Self::connecting(PendingRoot::unless_current(), connecting, kind_of).await
    }

    /// [`ExecClient::connect_via`] with the root continuing the trace in `parent`, as
    /// [`ExecClient::connect_from`].
    ///
    /// # Errors
    /// The error of `connecting`.
    pub async fn connect_via_from<T, E, F, C>(connecting: F, parent: &C) -> Result<Self, E>
    where
        T: Transport,
        E: std::fmt::Debug,
        F: Future<Output = Result<T, E>>,
        C: tracewire_context::Carrier + ?Sized,
    {
        Self::connecting(Some(PendingRoot::from_carrier(parent)), connecting, kind_of).await
    }

    /// Runs `connecting` inside `root` (if any), which the client then holds.
    async fn connecting<T: Transport, E>(
        root: Option<PendingRoot>,
        connecting: impl Future<Output = Result<T, E>>,
        kind: fn(&E) -> String,
    ) -> Result<Self, E> {
        let connected = match &root {
            Some(r) => connecting.instrument(r.span.clone()).await,
            None => connecting.await,
        };
        match connected {
            Ok(transport) => {
                let client = Self::new(Client::new(transport, ClientConfig::default()));
                if let Ok(mut pending) = client.root.lock() {
                    *pending = root;
                }
                Ok(client)
            }
            Err(e) => {
                if let Some(r) = &root {
                    r.span.record("error.type", kind(&e).as_str());
                }
                Err(e)
            }
        }
    }

    /// The underlying RPC client.
    pub fn rpc(&self) -> &Client {
        &self.rpc
    }

    /// Starts a process; its events arrive on the returned handle.
    ///
    /// The exec gets its `exec` span here: a child of the current span, or with none the
    /// connection's pending root (see [`ExecClient::connect`]) if no exec adopted it yet,
    /// else the root of a trace of its own. It covers the Start call and ends when
    /// [`RemoteProcess`] hands out Exited (or the connection ends, or the handle is
    /// dropped); the calls made through the handle are its children.
    /// [`ExecClient::start_from`] continues a trace from a carrier instead.
    ///
    /// # Errors
    /// [`ExecError::Rpc`] with the server's typed error (e.g. `SPAWN_FAILED`).
    pub async fn start(&self, start: Start) -> Result<RemoteProcess, ExecError> {
        let span = match self.adopt(|_| tracing::Span::current().is_none()) {
            Some(root) => root,
            None => exec_root(),
        };
        self.start_in(start, span).await
    }

    /// As [`ExecClient::start`], with the `exec` span continuing the trace in `parent`
    /// (W3C `traceparent`, `tracestate`, `baggage`), for instance the `TRACEPARENT` a
    /// caller's own tracer put in this process's environment. The connection's pending
    /// root is adopted when it continues the same trace ([`ExecClient::connect_from`]), or
    /// when `parent` has no valid context and no span is current. A missing or invalid
    /// context starts a new trace, with `tracewire.propagation.started` saying why.
    ///
    /// ```no_run
    /// use tracewire_context::EnvCarrier;
    /// use tracewire_exec::{ExecClient, Start};
    ///
    /// # async fn demo() -> Result<(), tracewire_exec::ExecError> {
    /// let env = EnvCarrier::from_process();
    /// let client = ExecClient::connect_from("127.0.0.1:7070", &env).await?;
    /// let start = Start { argv: vec!["true".into()], ..Default::default() };
    /// let process = client.start_from(start, &env).await?;
    /// process.wait_with_output().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`ExecClient::start`].
    pub async fn start_from<C: tracewire_context::Carrier + ?Sized>(
        &self,
        start: Start,
        parent: &C,
    ) -> Result<RemoteProcess, ExecError> {
        let wanted = tracewire_context::extract(parent);
        let wanted = wanted.remote_parent.map(|_| wanted.context.trace_id);
        let adopted = self.adopt(|root| match wanted {
            Some(trace) => root.continues == Some(trace),
            None => tracing::Span::current().is_none(),
        });
        let span = match adopted {
            // It continues that trace already.
            Some(root) if wanted.is_some() => root,
            // No valid context: the root stays, and says why.
            Some(root) => {
                tracewire_telemetry::set_parent_from(&root, parent);
                root
            }
            None => {
                let span = exec_root();
                tracewire_telemetry::set_parent_from(&span, parent);
                span
            }
        };
        self.start_in(start, span).await
    }

    /// Takes the connection's pending root if `fits` it.
    fn adopt(&self, fits: impl FnOnce(&PendingRoot) -> bool) -> Option<tracing::Span> {
        let mut pending = self.root.lock().ok()?;
        // A root made while spans were filtered out stays unused.
        if !pending.as_ref().is_some_and(|root| !root.span.is_disabled() && fits(root)) {
            return None;
        }
        pending.take().map(|root| root.span)
    }

    async fn start_in(&self, start: Start, span: tracing::Span) -> Result<RemoteProcess, ExecError> {
        span.record("process.command_args", start.argv.join(" ").as_str());
        match self.register(start).instrument(span.clone()).await {
            Ok((process_id, pid, events)) => Ok(RemoteProcess { process_id, pid, events, client: self.clone(), span }),
            Err(e) => {
                span.record("error.type", error_type(&e).as_str());
                Err(e)
            }
        }
    }

    /// The Start call, and the process's route for its events.
    async fn register(&self, start: Start) -> Result<(u64, u32, mpsc::Receiver<Pending>), ExecError> {
        let reply = self.rpc.call(Request { method: Some(Method::Start(start)) }).await?;
        let response::Result::Started(started) = reply else { return Err(ExecError::UnexpectedResponse) };
        let (tx, rx) = mpsc::channel(PER_PROCESS);
        // Hand over events that arrived before the response, in order, then go live.
        let mut exited = false;
        loop {
            let early = {
                let mut r = self.router.lock().map_err(|_| ExecError::Disconnected)?;
                let taken = match r.routes.remove(&started.process_id) {
                    Some(Route::Buffering(buf)) => buf,
                    _ => Vec::new(),
                };
                r.buffered = r.buffered.saturating_sub(taken.len());
                if taken.is_empty() {
                    if !exited {
                        r.routes.insert(started.process_id, Route::Ready(tx.clone()));
                    }
                    break;
                }
                r.routes.insert(started.process_id, Route::Buffering(Vec::new()));
                taken
            };
            for e in early {
                exited |= matches!(e.get(), Event::Exited(_));
                let _ = tx.send(e).await;
            }
        }
        drop(tx);
        Ok((started.process_id, started.pid, rx))
    }

    async fn simple(&self, method: Method) -> Result<(), ExecError> {
        self.rpc.call(Request { method: Some(method) }).await?;
        Ok(())
    }

    /// Writes to a process's stdin.
    ///
    /// # Errors
    /// When stdin is closed or the process is gone.
    pub async fn write_stdin(&self, process_id: u64, data: impl Into<Bytes>) -> Result<(), ExecError> {
        self.simple(Method::WriteStdin(WriteStdin { process_id, data: data.into() })).await
    }

    /// Closes a process's stdin.
    ///
    /// # Errors
    /// When the process is gone.
    pub async fn close_stdin(&self, process_id: u64) -> Result<(), ExecError> {
        self.simple(Method::CloseStdin(CloseStdin { process_id })).await
    }

    /// Sends a process a signal.
    ///
    /// # Errors
    /// When the process is gone or the signal is unknown.
    pub async fn signal(&self, process_id: u64, signal: i32) -> Result<(), ExecError> {
        self.simple(Method::Signal(Signal { process_id, signal })).await
    }

    /// Recent processes from the server's history (newest first), including everything
    /// it did before this call.
    ///
    /// # Errors
    /// When the server keeps no history, or the call fails.
    pub async fn list(&self, limit: u32) -> Result<Vec<tracewire_proto::v1::ProcessInfo>, ExecError> {
        let reply = self.rpc.call(Request { method: Some(Method::List(tracewire_proto::v1::List { limit })) }).await?;
        match reply {
            response::Result::Processes(p) => Ok(p.processes),
            _ => Err(ExecError::UnexpectedResponse),
        }
    }

    /// Kills a process (SIGKILL).
    ///
    /// # Errors
    /// When the process is gone.
    pub async fn kill(&self, process_id: u64) -> Result<(), ExecError> {
        self.simple(Method::Kill(Kill { process_id })).await
    }
}

/// A process running on the server.
#[derive(Debug)]
pub struct RemoteProcess {
    /// The server's id for it.
    pub process_id: u64,
    /// Its OS pid on the server.
    pub pid: u32,
    events: mpsc::Receiver<Pending>,
    client: ExecClient,
    /// The `exec` span, until Exited is handed out.
    span: tracing::Span,
}

/// An `exec` span (the current span is its parent); `process.command_args` is recorded
/// when the exec starts.
fn exec_root() -> tracing::Span {
    stage_span!(
        Exec,
        process.command_args = tracing::field::Empty,
        process.exit.code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// The gRPC connection [`ExecClient::connect`] makes, inside its `rpc.connect` span: for
/// [`ExecClient::connect_via`], when the caller does more within the connection's root
/// (such as printing its trace id first).
///
/// ```no_run
/// use tracewire_exec::{ExecClient, connect_grpc};
///
/// # async fn demo() -> Result<(), tracewire_exec::ExecError> {
/// let client = ExecClient::connect_via(async {
///     eprintln!("connecting in trace {:?}", tracewire_telemetry::current_trace_id());
///     connect_grpc("127.0.0.1:7070").await
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// When the address is invalid or the server cannot be reached.
pub async fn connect_grpc(address: &str) -> Result<tracewire_rpc::Link, ExecError> {
    let span = stage_span!(RpcConnect, server.address = address, error.type = tracing::field::Empty);
    let connected = async {
        let address: tracewire_rpc::grpc::Address = address.parse()?;
        Ok(tracewire_rpc::grpc::connect(&address).await?)
    }
    .instrument(span.clone())
    .await;
    if let Err(e) = &connected {
        span.record("error.type", error_type(e).as_str());
    }
    connected
}

/// The `error.type` of an error without a code: its variant's name (what its `Debug`
/// starts with), else its type's name.
fn kind_of<E: std::fmt::Debug>(e: &E) -> String {
    let text = format!("{e:?}");
    let name = text.split(['(', ' ', '{']).next().unwrap_or_default();
    if name.starts_with(|c: char| c.is_ascii_uppercase()) && name.chars().all(|c| c.is_ascii_alphanumeric()) {
        name.to_owned()
    } else {
        std::any::type_name::<E>().to_owned()
    }
}

/// The `error.type` of a failed exec.
fn error_type(e: &ExecError) -> String {
    match e {
        ExecError::Rpc(r) => format!("{:?}", r.code()),
        ExecError::Disconnected => "Disconnected".to_owned(),
        ExecError::UnexpectedResponse => "UnexpectedResponse".to_owned(),
    }
}

impl RemoteProcess {
    /// The next event; `None` after Exited, or when the connection ended. Taking it ends
    /// its client-side `terminal.queue` span.
    ///
    /// Handing out Exited ends the exec's `exec` span; so does the end of the connection.
    pub async fn next_event(&mut self) -> Option<Event> {
        let Some(pending) = self.events.recv().await else {
            self.span.record("error.type", "Disconnected");
            self.span = tracing::Span::none();
            return None;
        };
        let kind = opentelemetry::KeyValue::new("tracewire.event", pending.get().name());
        let event = pending.into_inner_with(&[kind]);
        if let Event::Exited(status) = &event {
            if let Some(code) = status.code {
                self.span.record("process.exit.code", code);
            }
            self.span = tracing::Span::none();
        }
        Some(event)
    }

    /// The exec's `exec` span (disabled once Exited was handed out): instrument work that
    /// belongs to this exec with it, such as a task that forwards stdin through
    /// [`ExecClient::write_stdin`].
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Writes to its stdin.
    ///
    /// # Errors
    /// When stdin is closed or the process is gone.
    pub async fn write_stdin(&self, data: impl Into<Bytes>) -> Result<(), ExecError> {
        self.client.write_stdin(self.process_id, data).instrument(self.span.clone()).await
    }

    /// Closes its stdin.
    ///
    /// # Errors
    /// When the process is gone.
    pub async fn close_stdin(&self) -> Result<(), ExecError> {
        self.client.close_stdin(self.process_id).instrument(self.span.clone()).await
    }

    /// Sends it a signal.
    ///
    /// # Errors
    /// When the process is gone or the signal is unknown.
    pub async fn signal(&self, signal: i32) -> Result<(), ExecError> {
        self.client.signal(self.process_id, signal).instrument(self.span.clone()).await
    }

    /// Kills it (SIGKILL).
    ///
    /// # Errors
    /// When the process is gone.
    pub async fn kill(&self) -> Result<(), ExecError> {
        self.client.kill(self.process_id).instrument(self.span.clone()).await
    }

    /// Collects all output until it exits.
    ///
    /// # Errors
    /// [`ExecError::Disconnected`] when the connection ends first.
    pub async fn wait_with_output(mut self) -> Result<ProcessOutput, ExecError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(event) = self.next_event().await {
            match event {
                Event::Output { stream: OutputStream::Stdout, data, .. } => stdout.extend_from_slice(&data),
                Event::Output { stream: OutputStream::Stderr, data, .. } => stderr.extend_from_slice(&data),
                Event::Exited(status) => return Ok(ProcessOutput { stdout, stderr, status }),
            }
        }
        Err(ExecError::Disconnected)
    }
}
