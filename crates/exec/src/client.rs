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
use tracewire_rpc::{Client, ClientConfig, Envelope, RpcError};
use tracewire_telemetry::Queued;

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
    /// A client over an RPC client (whose notifications it takes).
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
        Self { rpc, router }
    }

    /// Connects to an exec-server over gRPC (`127.0.0.1:7070` or `unix:/path`).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn connect(address: &str) -> Result<Self, ExecError> {
        let address: tracewire_rpc::grpc::Address = address.parse()?;
        let link = tracewire_rpc::grpc::connect(&address).await?;
        Ok(Self::new(Client::new(link, ClientConfig::default())))
    }

    /// The underlying RPC client.
    pub fn rpc(&self) -> &Client {
        &self.rpc
    }

    /// Starts a process; its events arrive on the returned handle.
    ///
    /// # Errors
    /// [`ExecError::Rpc`] with the server's typed error (e.g. `SPAWN_FAILED`).
    pub async fn start(&self, start: Start) -> Result<RemoteProcess, ExecError> {
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
        Ok(RemoteProcess { process_id: started.process_id, pid: started.pid, events: rx, client: self.clone() })
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
}

impl RemoteProcess {
    /// The next event; `None` after Exited, or when the connection ended. Taking it ends
    /// its client-side `terminal.queue` span.
    pub async fn next_event(&mut self) -> Option<Event> {
        let pending = self.events.recv().await?;
        let kind = opentelemetry::KeyValue::new("tracewire.event", pending.get().name());
        Some(pending.into_inner_with(&[kind]))
    }

    /// Writes to its stdin.
    ///
    /// # Errors
    /// When stdin is closed or the process is gone.
    pub async fn write_stdin(&self, data: impl Into<Bytes>) -> Result<(), ExecError> {
        self.client.write_stdin(self.process_id, data).await
    }

    /// Closes its stdin.
    ///
    /// # Errors
    /// When the process is gone.
    pub async fn close_stdin(&self) -> Result<(), ExecError> {
        self.client.close_stdin(self.process_id).await
    }

    /// Sends it a signal.
    ///
    /// # Errors
    /// When the process is gone or the signal is unknown.
    pub async fn signal(&self, signal: i32) -> Result<(), ExecError> {
        self.client.signal(self.process_id, signal).await
    }

    /// Kills it (SIGKILL).
    ///
    /// # Errors
    /// When the process is gone.
    pub async fn kill(&self) -> Result<(), ExecError> {
        self.client.kill(self.process_id).await
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
