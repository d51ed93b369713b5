//! The exec-server: runs processes for its clients and pushes their output.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracewire_context::TraceCarrier;
use tracewire_proto::v1::{
    Ack, Exited, Notification, Output, ProcessInfo, Processes, Request, Response, Start, Started, Stream, exited,
    notification, request::Method, response,
};
use tracewire_rpc::{Connection, ErrorCode, Handler, RpcError};
use tracewire_store::{ProcessRecord, Store};
use tracewire_telemetry::{inject_span, span_context, stage_span};
use tracing::Instrument;

/// Exec-server settings.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ExecConfig {
    /// Kill a client's processes when its connection ends.
    pub kill_on_disconnect: bool,
    /// Largest output chunk pushed at once, in bytes.
    pub chunk_size: usize,
    /// After a child exits, how long to wait for its output pipes to reach end-of-file
    /// (a grandchild may hold them open) before sending Exited anyway.
    pub drain_grace: Duration,
    /// Processes running at once; more Start requests get `OVERLOADED`.
    pub max_processes: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            kill_on_disconnect: true,
            chunk_size: 32 * 1024,
            drain_grace: Duration::from_secs(5),
            max_processes: 1024,
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
}

/// The exec-server's request handler; serve it with `tracewire_rpc::serve` or
/// `tracewire_rpc::grpc::BoundServer::run`.
pub struct ExecServer {
    config: ExecConfig,
    next_id: AtomicU64,
    procs: Arc<Mutex<HashMap<u64, Proc>>>,
    store: Option<Store>,
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
    /// A server with these settings.
    pub fn new(config: ExecConfig) -> Self {
        Self { config, next_id: AtomicU64::new(1), procs: Arc::default(), store: None }
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

    fn with_proc<R>(&self, process_id: u64, f: impl FnOnce(&mut Proc) -> R) -> Result<R, RpcError> {
        let mut procs = self.procs.lock().map_err(|_| RpcError::remote(ErrorCode::Internal, "poisoned"))?;
        procs.get_mut(&process_id).map(f).ok_or_else(|| not_found(process_id))
    }

    #[allow(clippy::too_many_lines)]
    fn start(&self, s: Start, conn: &Connection) -> Result<Response, RpcError> {
        let Some(program) = s.argv.first().cloned() else {
            return Err(RpcError::remote(ErrorCode::InvalidRequest, "argv is empty"));
        };
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
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&s.argv[1..])
            .envs(&s.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if !s.cwd.is_empty() {
            cmd.current_dir(&s.cwd);
        }
        // The child continues the trace: TRACEPARENT (and TRACESTATE, BAGGAGE) name the
        // process span as its parent.
        let _ = inject_span(&process_span, &mut cmd);
        let started = Instant::now();
        let spawned = process_span.in_scope(|| {
            let span = stage_span!(
                ProcessSpawn,
                process.executable.name = program.as_str(),
                process.pid = tracing::field::Empty
            );
            let _g = span.enter();
            let r = cmd.spawn();
            if let Ok(c) = &r {
                span.record("process.pid", c.id().unwrap_or(0));
            }
            r
        });
        let mut child = spawned.map_err(|e| RpcError::remote(ErrorCode::SpawnFailed, format!("{program}: {e}")))?;
        let pid = child.id().unwrap_or(0);
        process_span.record("process.pid", pid);

        let mut carrier = TraceCarrier::default();
        let _ = inject_span(&process_span, &mut carrier);
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
        let stdin_tx = match (child.stdin.take(), s.stdin) {
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

        let seq = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for (pipe, stream) in [
            (child.stdout.take().map(|p| Box::new(p) as Box<dyn AsyncRead + Send + Unpin>), Stream::Stdout),
            (child.stderr.take().map(|p| Box::new(p) as Box<dyn AsyncRead + Send + Unpin>), Stream::Stderr),
        ] {
            let Some(pipe) = pipe else { continue };
            let span = process_span.in_scope(|| {
                if stream == Stream::Stderr {
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
            });
            let reader = Reader {
                process_id,
                stream,
                seq: Arc::clone(&seq),
                conn: conn.clone(),
                carrier: carrier.clone(),
                chunk: self.config.chunk_size.max(1),
                started,
            };
            readers.push(tokio::spawn(reader.run(pipe).instrument(span)));
        }

        let (control_tx, control_rx) = mpsc::channel(4);
        if let Ok(mut procs) = self.procs.lock() {
            procs.insert(process_id, Proc { conn: conn.id(), pid, stdin: stdin_tx, control: control_tx });
        }
        let waiter = Waiter {
            process_id,
            conn: conn.clone(),
            carrier,
            started,
            timeout: s.timeout_ms.map(Duration::from_millis),
            grace: self.config.drain_grace,
            procs: Arc::clone(&self.procs),
            store: self.store.clone().map(|s| (s, record)),
        };
        tokio::spawn(waiter.run(child, control_rx, readers).instrument(process_span));
        Ok(Response { result: Some(response::Result::Started(Started { process_id, pid })) })
    }
}

struct Reader {
    process_id: u64,
    stream: Stream,
    seq: Arc<AtomicU64>,
    conn: Connection,
    carrier: TraceCarrier,
    chunk: usize,
    started: Instant,
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
                    let data = buf.split().freeze();
                    let output = Output {
                        process_id: self.process_id,
                        stream: self.stream.into(),
                        seq: self.seq.fetch_add(1, Ordering::Relaxed),
                        data,
                    };
                    let note = Notification { event: Some(notification::Event::Output(output)) };
                    if self.conn.notify(note, self.carrier.clone()).await.is_err() {
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
    conn: Connection,
    carrier: TraceCarrier,
    started: Instant,
    timeout: Option<Duration>,
    grace: Duration,
    procs: Arc<Mutex<HashMap<u64, Proc>>>,
    store: Option<(Store, ProcessRecord)>,
}

impl Waiter {
    async fn run(
        self,
        mut child: tokio::process::Child,
        mut control: mpsc::Receiver<Control>,
        readers: Vec<tokio::task::JoinHandle<(Stream, u64)>>,
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
        let exit = stage_span!(
            ProcessExit,
            process.exit.code = tracing::field::Empty,
            tracewire.signal = tracing::field::Empty
        );
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

    fn disconnected(&self, conn: &Connection) {
        let Ok(procs) = self.procs.lock() else { return };
        for p in procs.values().filter(|p| p.conn == conn.id()) {
            if self.config.kill_on_disconnect {
                let _ = p.control.try_send(Control::Kill);
            }
        }
    }
}
