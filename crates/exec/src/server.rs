//! The exec-server: runs processes for its clients and pushes their output.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracewire_context::TraceCarrier;
use tracewire_proto::v1::{
    Ack, Exited, Notification, Output, ProcessInfo, Processes, Request, Response, Start, Started, Stream, exited,
    notification, request::Method, response,
};
use tracewire_rpc::{Connection, ErrorCode, Handler, RpcError};
use tracewire_store::{ProcessRecord, Store};
use tracewire_telemetry::{inject_span, span_context, stage_span};
use tracing::Instrument;

use crate::spawn::{Child, SpawnRequest, Spawner, TraceVars};

/// Exec-server settings.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ExecConfig {
    /// Kill a client's processes when the client goes away (a reset, a lost connection,
    /// a dropped call). A client that only half-closes (sends no more requests) is not
    /// gone: its processes run to the end and their output and Exited are delivered
    /// before its stream ends.
    pub kill_on_disconnect: bool,
    /// Largest output chunk pushed at once, in bytes.
    pub chunk_size: usize,
    /// After a child exits, how long to wait for its output pipes to reach end-of-file
    /// (a grandchild may hold them open) before sending Exited anyway.
    pub drain_grace: Duration,
    /// Processes running at once; more Start requests get `OVERLOADED`.
    pub max_processes: usize,
    /// Give each child `TRACEPARENT` (and `TRACESTATE`, `BAGGAGE`) naming its `process`
    /// span, so that a traced child continues the trace. On by default. On Linux the
    /// server's environment is prepared once (at [`ExecServer::new`]) and these variables
    /// are added to it per spawn; elsewhere the standard library copies the server's whole
    /// environment at each spawn that sets a variable. Turn it off where children never
    /// read it, or where baggage must not reach them.
    pub child_trace_context: bool,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            kill_on_disconnect: true,
            chunk_size: 32 * 1024,
            drain_grace: Duration::from_secs(5),
            max_processes: 1024,
            child_trace_context: true,
        }
    }
}

enum Control {
    Kill,
}

struct Proc {
    conn: u64,
    pid: u32,
    stdin: Option<mpsc::Sender<Bytes>>,
    control: mpsc::Sender<Control>,
    argv: Vec<String>,
    started: Instant,
    started_unix_nanos: i64,
    activity: Arc<Activity>,
}

/// What the readers and the waiter record for [`ExecServer::snapshot`]: cheap atomic
/// stores, never a lock on the output path.
#[derive(Default)]
struct Activity {
    /// Milliseconds from the start to the latest output chunk, plus one (0: no output yet).
    last_output_ms: AtomicU64,
    /// The child has exited (waited for); its entry stays while its output drains.
    exited: AtomicBool,
}

impl Activity {
    fn output_at(&self, started: Instant) {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_output_ms.store(ms.saturating_add(1), Ordering::Relaxed);
    }
}

/// A process's state in a [`ServerSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessState {
    /// The child is running (not yet waited for).
    Running,
    /// The child has exited and was reaped; its output is still draining (a grandchild
    /// may hold a pipe open, up to `drain_grace`) before Exited is sent.
    Exited,
}

impl ProcessState {
    /// `"running"` or `"exited"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
        }
    }
}

/// One process the server holds, in a [`ServerSnapshot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProcessSnapshot {
    /// The server's id for the process (unique in this server).
    pub process_id: u64,
    /// The OS pid.
    pub pid: u32,
    /// The command line.
    pub argv: Vec<String>,
    /// Running, or exited with output still draining.
    pub state: ProcessState,
    /// When it was spawned (monotonic).
    pub started: Instant,
    /// When it was spawned, in nanoseconds since the Unix epoch.
    pub started_unix_nanos: i64,
    /// When it last wrote to stdout or stderr; `None`: never.
    pub last_output: Option<Instant>,
    /// The id of the connection that started it.
    pub connection: u64,
}

impl ProcessSnapshot {
    /// How long it has produced no output at `now`: since its last output, or since its
    /// start when it never wrote anything.
    pub fn idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_output.unwrap_or(self.started))
    }
}

/// A read-only view of an [`ExecServer`] at one instant, for metrics and dashboards.
/// Taking one locks the process and connection maps briefly (no I/O, no await).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServerSnapshot {
    /// The processes held now (running, or exited with output draining), by process id.
    pub processes: Vec<ProcessSnapshot>,
    /// Connections open now.
    pub connections: usize,
    /// Connections subscribed to pushed events now: those with at least one process held.
    pub subscribers: usize,
    /// Requests waiting for a worker, summed over the connections.
    pub dispatch_queue_depth: usize,
    /// Responses and notifications waiting for the transport, summed over the connections.
    pub delivery_queue_depth: usize,
    /// Process records queued for the store and not yet committed; `None` without a store.
    pub store_backlog: Option<u64>,
}

/// The exec-server's request handler; serve it with `tracewire_rpc::serve` or
/// `tracewire_rpc::grpc::BoundServer::run`.
pub struct ExecServer {
    config: ExecConfig,
    next_id: AtomicU64,
    procs: Arc<Mutex<HashMap<u64, Proc>>>,
    conns: Mutex<HashMap<u64, Tracked>>,
    store: Option<Store>,
    /// Spawns the children, with this server's environment read once (at `new`).
    spawner: Spawner,
    /// Set by [`ExecServer::stop_accepting`]: Start is refused.
    stopping: AtomicBool,
    /// Open connections plus live process tasks, for [`ExecServer::idle`].
    busy: Arc<watch::Sender<usize>>,
}

/// A connection the server holds, and its work in progress: the waiter of each process
/// it started holds a receiver of `work` until that process's Exited is queued, so
/// `work.closed()` resolves once all of it was handed to the connection.
struct Tracked {
    conn: Connection,
    work: watch::Sender<()>,
}

/// One unit of [`ExecServer::idle`]'s count, given back when dropped.
struct BusyGuard(Arc<watch::Sender<usize>>);

impl BusyGuard {
    fn new(busy: &Arc<watch::Sender<usize>>) -> Self {
        busy.send_modify(|n| *n += 1);
        Self(Arc::clone(busy))
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl std::fmt::Debug for ExecServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecServer")
            .field("config", &self.config)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

fn ack() -> Response {
    Response { result: Some(response::Result::Ack(Ack {})) }
}

fn not_found(process_id: u64) -> RpcError {
    RpcError::remote(ErrorCode::NotFound, format!("no running process {process_id}"))
}

impl ExecServer {
    /// A server with these settings. Its children's environment is this process's as it
    /// is now (read once, here), plus each request's variables and the trace variables: a
    /// variable set or removed in this process later does not reach them (on Linux).
    pub fn new(config: ExecConfig) -> Self {
        Self {
            config,
            next_id: AtomicU64::new(1),
            procs: Arc::default(),
            conns: Mutex::default(),
            store: None,
            spawner: Spawner::new(),
            stopping: AtomicBool::new(false),
            busy: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Starts a graceful stop: every later Start is answered `CLOSED` ("the exec-server
    /// is shutting down"); running processes, their output and every other request go on.
    pub fn stop_accepting(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Kills (SIGKILL) every process the server holds, whatever its connection; each one's
    /// Exited is still sent. Returns how many were asked to die.
    pub fn kill_all(&self) -> usize {
        let Ok(procs) = self.procs.lock() else { return 0 };
        procs.values().filter(|p| p.control.try_send(Control::Kill).is_ok()).count()
    }

    /// Resolves once no connection is open and every process's task has ended (its
    /// Exited handed to the connection, its spans closed). With
    /// [`ExecServer::stop_accepting`], the wait of a graceful stop:
    ///
    /// ```
    /// use tracewire_exec::{ExecConfig, ExecServer};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let server = ExecServer::new(ExecConfig::default());
    /// server.stop_accepting();
    /// server.idle().await; // nothing running: at once
    /// # });
    /// ```
    pub async fn idle(&self) {
        let mut rx = self.busy.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Persists every process's metadata (start, then end) in `store`, off the request
    /// path, and answers `List` from it.
    #[must_use]
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// The store, if any (for its backlog).
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Processes running now.
    pub fn running(&self) -> usize {
        self.procs.lock().map_or(0, |p| p.len())
    }

    /// What the server holds now: its processes (pid, argv, state, start, last output),
    /// open connections, subscribers, queue depths and the store's backlog. Cheap: two
    /// short lock holds and atomic reads; never waits on a process or the network.
    ///
    /// ```
    /// use tracewire_exec::{ExecConfig, ExecServer};
    ///
    /// let server = ExecServer::new(ExecConfig::default());
    /// let snap = server.snapshot();
    /// assert!(snap.processes.is_empty());
    /// assert_eq!((snap.connections, snap.subscribers, snap.store_backlog), (0, 0, None));
    /// ```
    pub fn snapshot(&self) -> ServerSnapshot {
        let mut processes: Vec<ProcessSnapshot> = self
            .procs
            .lock()
            .map(|procs| {
                procs
                    .iter()
                    .map(|(&process_id, p)| {
                        let last = p.activity.last_output_ms.load(Ordering::Relaxed);
                        ProcessSnapshot {
                            process_id,
                            pid: p.pid,
                            argv: p.argv.clone(),
                            state: if p.activity.exited.load(Ordering::Acquire) {
                                ProcessState::Exited
                            } else {
                                ProcessState::Running
                            },
                            started: p.started,
                            started_unix_nanos: p.started_unix_nanos,
                            last_output: (last > 0).then(|| p.started + Duration::from_millis(last - 1)),
                            connection: p.conn,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        processes.sort_by_key(|p| p.process_id);
        let mut subscribed: Vec<u64> = processes.iter().map(|p| p.connection).collect();
        subscribed.sort_unstable();
        subscribed.dedup();
        let (connections, dispatch_queue_depth, delivery_queue_depth) = self
            .conns
            .lock()
            .map(|c| {
                c.values().fold((c.len(), 0, 0), |(n, d, q), t| {
                    (n, d + t.conn.dispatch_queue_depth(), q + t.conn.delivery_queue_depth())
                })
            })
            .unwrap_or_default();
        ServerSnapshot {
            processes,
            connections,
            subscribers: subscribed.len(),
            dispatch_queue_depth,
            delivery_queue_depth,
            store_backlog: self.store.as_ref().map(Store::backlog),
        }
    }

    fn with_proc<R>(&self, process_id: u64, f: impl FnOnce(&mut Proc) -> R) -> Result<R, RpcError> {
        let mut procs = self.procs.lock().map_err(|_| RpcError::remote(ErrorCode::Internal, "poisoned"))?;
        procs.get_mut(&process_id).map(f).ok_or_else(|| not_found(process_id))
    }

    #[allow(clippy::too_many_lines)]
    fn start(&self, s: Start, conn: &Connection) -> Result<Response, RpcError> {
        let Some(program) = s.argv.first().cloned() else {
            return Err(RpcError::remote(ErrorCode::InvalidRequest, "argv is empty"));
        };
        if self.stopping.load(Ordering::Acquire) {
            return Err(RpcError::remote(ErrorCode::Closed, "the exec-server is shutting down"));
        }
        if self.running() >= self.config.max_processes {
            return Err(RpcError::remote(ErrorCode::Overloaded, "too many processes"));
        }
        let process_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let process_span = stage_span!(
            Process,
            process.executable.name = program.as_str(),
            process.pid = tracing::field::Empty,
            tracewire.process_id = process_id,
        );
        // The process span's context, for the envelopes and for the child: TRACEPARENT (and
        // TRACESTATE, BAGGAGE) name the process span as its parent.
        let mut carrier = TraceCarrier::default();
        let _ = inject_span(&process_span, &mut carrier);
        let trace =
            if self.config.child_trace_context { TraceVars::from_carrier(&carrier) } else { TraceVars::default() };
        let req = SpawnRequest { argv: &s.argv, env: &s.env, cwd: &s.cwd, trace: &trace };
        let started = Instant::now();
        let spawned = process_span.in_scope(|| {
            let span = stage_span!(
                ProcessSpawn,
                process.executable.name = program.as_str(),
                process.pid = tracing::field::Empty
            );
            let _g = span.enter();
            let r = self.spawner.spawn(&req);
            if let Ok(c) = &r {
                span.record("process.pid", c.id());
            }
            r
        });
        let mut child = spawned.map_err(|e| RpcError::remote(ErrorCode::SpawnFailed, format!("{program}: {e}")))?;
        let pid = child.id();
        process_span.record("process.pid", pid);
        let record = ProcessRecord {
            process_id,
            pid,
            argv: s.argv.clone(),
            cwd: s.cwd.clone(),
            started_unix_nanos: tracewire_rpc::unix_nanos(),
            trace_id: span_context(&process_span).map(|c| c.trace_id.to_string()).unwrap_or_default(),
            ..ProcessRecord::default()
        };
        if let Some(store) = &self.store {
            // Queued, never waited on: persistence adds no latency to Start.
            let (store, record) = (store.clone(), record.clone());
            tokio::spawn(
                async move {
                    if let Err(e) = store.append(record).await {
                        tracing::warn!(target: "tracewire_exec", "cannot persist a process start: {e}");
                    }
                }
                .instrument(process_span.clone()),
            );
        }

        // stdin: the bytes given with Start, then EOF; or a writer fed by WriteStdin.
        let stdin_tx = match (child.take_stdin(), s.stdin) {
            (Some(mut stdin), Some(data)) => {
                tokio::spawn(async move {
                    let _ = stdin.write_all(&data).await;
                    let _ = stdin.shutdown().await;
                });
                None
            }
            (Some(mut stdin), None) => {
                let (tx, mut rx) = mpsc::channel::<Bytes>(16);
                tokio::spawn(async move {
                    while let Some(chunk) = rx.recv().await {
                        if stdin.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    let _ = stdin.shutdown().await;
                });
                Some(tx)
            }
            (None, _) => None,
        };

        // The next Output's sequence number, held by a reader from numbering its chunk to
        // queueing it, so that the two readers' Outputs are queued in sequence order.
        let seq = Arc::new(tokio::sync::Mutex::new(0u64));
        let activity = Arc::new(Activity::default());
        let mut pipes = Vec::new();
        for (pipe, stream) in [(child.take_stdout(), Stream::Stdout), (child.take_stderr(), Stream::Stderr)] {
            let Some(pipe) = pipe else { continue };
            let reader = Reader {
                process_id,
                stream,
                seq: Arc::clone(&seq),
                conn: conn.clone(),
                carrier: carrier.clone(),
                chunk: self.config.chunk_size.max(1),
                started,
                activity: Arc::clone(&activity),
            };
            pipes.push((reader, pipe));
        }
        // The readers' spans, then the child's running time (`process.run`): from here until
        // `process.exit` takes over when `wait` sees the exit. Started just after the
        // readers' spans and ended just after `process.exit` starts, so that the critical
        // path names the running time `process.run`, and a reader only the time it adds after
        // the exit (within `process.exit`, which waits for it).
        let spans: Vec<tracing::Span> = pipes
            .iter()
            .map(|(reader, _)| {
                process_span.in_scope(|| {
                    if reader.stream == Stream::Stderr {
                        stage_span!(
                            ProcessStderr,
                            tracewire.bytes = tracing::field::Empty,
                            tracewire.first_byte_us = tracing::field::Empty
                        )
                    } else {
                        stage_span!(
                            ProcessStdout,
                            tracewire.bytes = tracing::field::Empty,
                            tracewire.first_byte_us = tracing::field::Empty
                        )
                    }
                })
            })
            .collect();
        let run = process_span.in_scope(|| stage_span!(ProcessRun, process.pid = pid));
        let readers: Vec<_> = pipes
            .into_iter()
            .zip(spans)
            .map(|((reader, pipe), span)| tokio::spawn(reader.run(pipe).instrument(span)))
            .collect();

        let (control_tx, control_rx) = mpsc::channel(4);
        if let Ok(mut procs) = self.procs.lock() {
            procs.insert(
                process_id,
                Proc {
                    conn: conn.id(),
                    pid,
                    stdin: stdin_tx,
                    control: control_tx,
                    argv: s.argv,
                    started,
                    started_unix_nanos: record.started_unix_nanos,
                    activity: Arc::clone(&activity),
                },
            );
        }
        let waiter = Waiter {
            process_id,
            _work: self.conns.lock().ok().and_then(|c| c.get(&conn.id()).map(|t| t.work.subscribe())),
            conn: conn.clone(),
            carrier,
            started,
            timeout: s.timeout_ms.map(Duration::from_millis),
            grace: self.config.drain_grace,
            procs: Arc::clone(&self.procs),
            store: self.store.clone().map(|s| (s, record)),
            activity,
        };
        // Held until the process span is dropped: `idle` then knows its spans are closed.
        let busy = BusyGuard::new(&self.busy);
        tokio::spawn(async move {
            waiter.run(child, control_rx, readers, run).instrument(process_span).await;
            drop(busy);
        });
        Ok(Response { result: Some(response::Result::Started(Started { process_id, pid })) })
    }
}

struct Reader {
    process_id: u64,
    stream: Stream,
    seq: Arc<tokio::sync::Mutex<u64>>,
    conn: Connection,
    carrier: TraceCarrier,
    chunk: usize,
    started: Instant,
    activity: Arc<Activity>,
}

impl Reader {
    /// Pushes every chunk as it is read. Waiting for the delivery queue pauses reading the
    /// pipe, so a slow client cannot make the server buffer without bound.
    async fn run(self, mut pipe: Box<dyn AsyncRead + Send + Unpin>) -> (Stream, u64) {
        let span = tracing::Span::current();
        let mut total = 0u64;
        let mut buf = BytesMut::with_capacity(self.chunk);
        loop {
            buf.reserve(self.chunk);
            match pipe.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if total == 0 {
                        span.record(
                            "tracewire.first_byte_us",
                            u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
                        );
                    }
                    total += n as u64;
                    self.activity.output_at(self.started);
                    let data = buf.split().freeze();
                    // Numbered and queued under the lock: the other stream's reader cannot
                    // queue a later number first.
                    let queued = {
                        let mut next = self.seq.lock().await;
                        let output =
                            Output { process_id: self.process_id, stream: self.stream.into(), seq: *next, data };
                        *next += 1;
                        let note = Notification { event: Some(notification::Event::Output(output)) };
                        self.conn.notify(note, self.carrier.clone()).await
                    };
                    if queued.is_err() {
                        // The client is gone; keep draining so the child never blocks on
                        // a full pipe before it is killed.
                        while matches!(pipe.read_buf(&mut buf).await, Ok(n) if n > 0) {
                            buf.clear();
                        }
                        break;
                    }
                }
            }
        }
        span.record("tracewire.bytes", total);
        (self.stream, total)
    }
}

struct Waiter {
    process_id: u64,
    /// Held until Exited is queued: the connection's work in progress ([`Tracked`]).
    _work: Option<watch::Receiver<()>>,
    conn: Connection,
    carrier: TraceCarrier,
    started: Instant,
    timeout: Option<Duration>,
    grace: Duration,
    procs: Arc<Mutex<HashMap<u64, Proc>>>,
    store: Option<(Store, ProcessRecord)>,
    activity: Arc<Activity>,
}

impl Waiter {
    async fn run(
        self,
        mut child: Child,
        mut control: mpsc::Receiver<Control>,
        readers: Vec<tokio::task::JoinHandle<(Stream, u64)>>,
        run: tracing::Span,
    ) {
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                Some(Control::Kill) = control.recv() => { let _ = child.start_kill(); }
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => { let _ = child.start_kill(); }
            }
        };
        self.activity.exited.store(true, Ordering::Release);
        let exit = stage_span!(
            ProcessExit,
            process.exit.code = tracing::field::Empty,
            tracewire.signal = tracing::field::Empty
        );
        drop(run);
        async {
            // Exited goes out only after the readers delivered everything they read.
            let mut bytes = (0u64, 0u64);
            let drain = async {
                for r in readers {
                    match r.await {
                        Ok((Stream::Stderr, n)) => bytes.1 = n,
                        Ok((_, n)) => bytes.0 = n,
                        Err(_) => {}
                    }
                }
            };
            if tokio::time::timeout(self.grace, drain).await.is_err() {
                tracing::warn!(target: "tracewire_exec", process_id = self.process_id, "output pipes still open after the grace period; sending Exited");
            }
            let status = match &status {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(code), _) => {
                        tracing::Span::current().record("process.exit.code", code);
                        Some(exited::Status::Code(code))
                    }
                    (None, Some(sig)) => {
                        tracing::Span::current().record("tracewire.signal", sig);
                        Some(exited::Status::Signal(sig))
                    }
                    _ => None,
                },
                Err(_) => None,
            };
            if let Ok(mut procs) = self.procs.lock() {
                procs.remove(&self.process_id);
            }
            let exited = Exited {
                process_id: self.process_id,
                status,
                duration_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            };
            if let Some((store, mut record)) = self.store {
                record.ended_unix_nanos = tracewire_rpc::unix_nanos();
                match exited.status {
                    Some(exited::Status::Code(c)) => record.exit_code = Some(c),
                    Some(exited::Status::Signal(s)) => record.signal = Some(s),
                    None => {}
                }
                (record.stdout_bytes, record.stderr_bytes) = bytes;
                if let Err(e) = store.append(record).await {
                    tracing::warn!(target: "tracewire_exec", "cannot persist a process exit: {e}");
                }
            }
            let note = Notification { event: Some(notification::Event::Exited(exited)) };
            let _ = self.conn.notify(note, self.carrier.clone()).await;
        }
        .instrument(exit)
        .await;
    }
}

impl Handler for ExecServer {
    async fn handle(&self, request: Request, conn: &Connection) -> Result<Response, RpcError> {
        match request.method {
            Some(Method::Start(s)) => self.start(s, conn),
            Some(Method::WriteStdin(w)) => {
                let tx = self
                    .with_proc(w.process_id, |p| p.stdin.clone())?
                    .ok_or_else(|| RpcError::remote(ErrorCode::InvalidRequest, "stdin is closed"))?;
                tx.send(w.data).await.map_err(|_| RpcError::remote(ErrorCode::InvalidRequest, "stdin is closed"))?;
                Ok(ack())
            }
            Some(Method::CloseStdin(c)) => {
                self.with_proc(c.process_id, |p| p.stdin = None)?;
                Ok(ack())
            }
            Some(Method::Signal(s)) => {
                let pid = self.with_proc(s.process_id, |p| p.pid)?;
                let sig = nix::sys::signal::Signal::try_from(s.signal)
                    .map_err(|_| RpcError::remote(ErrorCode::InvalidRequest, format!("unknown signal {}", s.signal)))?;
                let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
                nix::sys::signal::kill(pid, sig).map_err(|e| RpcError::remote(ErrorCode::Internal, e.to_string()))?;
                Ok(ack())
            }
            Some(Method::Kill(k)) => {
                let control = self.with_proc(k.process_id, |p| p.control.clone())?;
                let _ = control.send(Control::Kill).await;
                Ok(ack())
            }
            Some(Method::List(l)) => {
                let store = self
                    .store
                    .as_ref()
                    .ok_or_else(|| RpcError::remote(ErrorCode::InvalidRequest, "this server keeps no history"))?;
                let limit = if l.limit == 0 { 100 } else { l.limit as usize };
                // Reads go through the barrier: everything done before this request is in.
                let rows =
                    store.recent(limit).await.map_err(|e| RpcError::remote(ErrorCode::Internal, e.to_string()))?;
                let processes = rows
                    .into_iter()
                    .map(|r| ProcessInfo {
                        process_id: r.process_id,
                        pid: r.pid,
                        argv: r.argv,
                        cwd: r.cwd,
                        started_unix_nanos: r.started_unix_nanos,
                        ended_unix_nanos: r.ended_unix_nanos,
                        exit_code: r.exit_code,
                        signal: r.signal,
                        trace_id: r.trace_id,
                        stdout_bytes: r.stdout_bytes,
                        stderr_bytes: r.stderr_bytes,
                    })
                    .collect();
                Ok(Response { result: Some(response::Result::Processes(Processes { processes })) })
            }
            None => Err(RpcError::remote(ErrorCode::UnknownMethod, "unknown method")),
        }
    }

    fn connected(&self, conn: &Connection) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.insert(conn.id(), Tracked { conn: conn.clone(), work: watch::Sender::new(()) });
        }
        self.busy.send_modify(|n| *n += 1);
    }

    /// The client sends no more requests: its processes run to the end, and this resolves
    /// once each one's Exited is queued for the client.
    fn finish(&self, conn: &Connection) -> impl std::future::Future<Output = ()> + Send {
        let work = self.conns.lock().ok().and_then(|c| c.get(&conn.id()).map(|t| t.work.clone()));
        async move {
            if let Some(work) = work {
                work.closed().await;
            }
        }
    }

    fn disconnected(&self, conn: &Connection) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(&conn.id());
        }
        if let Ok(procs) = self.procs.lock() {
            for p in procs.values().filter(|p| p.conn == conn.id()) {
                if self.config.kill_on_disconnect {
                    let _ = p.control.try_send(Control::Kill);
                }
            }
        }
        self.busy.send_modify(|n| *n = n.saturating_sub(1));
    }
}
