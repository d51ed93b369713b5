//! The exec-server: runs processes for its clients and pushes their output.
//!
//! - this file: [`ExecConfig`], [`ExecServer`] (its process table and open connections),
//!   the [`Handler`] that answers requests, and the graceful stop.
//! - `start.rs`: Start (spawn, then wire the child's stdin, readers and waiter).
//! - `child_io.rs`: the child's output readers and its exit waiter.
//! - `snapshot.rs`: [`ServerSnapshot`], the read-only view for metrics.
//!
//! Invariants:
//! - A client that goes away (a reset, a lost connection, a dropped call) has its processes
//!   killed, unless `kill_on_disconnect` is off (tests: `crates/exec/tests/exec.rs`
//!   `client_disconnect_ends_the_child`, `keep_on_disconnect_keeps_the_child`).
//! - A half-closed client is not gone: [`Handler::finish`] resolves once each of its
//!   processes' Exited is queued (test: `crates/exec/tests/half_close.rs`).
//! - [`ExecServer::idle`] resolves only once no connection is open and every process task,
//!   spans included, has ended; a kept process's end is persisted by then (test:
//!   `crates/exec/tests/exec.rs` `keep_on_disconnect_keeps_the_child`, and the graceful
//!   stop of `crates/cli/tests/sigterm.rs`).

mod child_io;
mod snapshot;
mod start;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tracewire_proto::v1::{Ack, ProcessInfo, Processes, Request, Response, request::Method, response};
use tracewire_rpc::{Connection, ErrorCode, Handler, RpcError};
use tracewire_store::Store;

pub use snapshot::{ProcessSnapshot, ProcessState, ServerSnapshot};

use crate::spawn::Spawner;
use snapshot::ProcessActivity;

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

/// A process the server holds, from its spawn until its Exited is queued.
struct HeldProcess {
    /// The id of the connection that started it.
    connection: u64,
    pid: u32,
    /// Feeds the child's stdin (WriteStdin); `None` once closed or given with Start.
    stdin: Option<mpsc::Sender<Bytes>>,
    /// A message asks its waiter to SIGKILL the child.
    kill: mpsc::Sender<()>,
    argv: Vec<String>,
    started: Instant,
    started_unix_nanos: i64,
    activity: Arc<ProcessActivity>,
}

/// The processes the server holds, by process id.
type ProcessTable = Arc<Mutex<HashMap<u64, HeldProcess>>>;

/// The exec-server's request handler; serve it with `tracewire_rpc::serve` or
/// `tracewire_rpc::grpc::BoundServer::run`.
pub struct ExecServer {
    config: ExecConfig,
    next_id: AtomicU64,
    processes: ProcessTable,
    connections: Mutex<HashMap<u64, OpenConnection>>,
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
struct OpenConnection {
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
            processes: Arc::default(),
            connections: Mutex::default(),
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
        let Ok(processes) = self.processes.lock() else { return 0 };
        processes.values().filter(|p| p.kill.try_send(()).is_ok()).count()
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
        self.processes.lock().map_or(0, |p| p.len())
    }

    fn with_process<R>(&self, process_id: u64, f: impl FnOnce(&mut HeldProcess) -> R) -> Result<R, RpcError> {
        let mut processes = self.processes.lock().map_err(|_| RpcError::remote(ErrorCode::Internal, "poisoned"))?;
        processes.get_mut(&process_id).map(f).ok_or_else(|| not_found(process_id))
    }

    /// `List`: the latest processes from the store.
    async fn list(&self, limit: u32) -> Result<Response, RpcError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| RpcError::remote(ErrorCode::InvalidRequest, "this server keeps no history"))?;
        let limit = if limit == 0 { 100 } else { limit as usize };
        // Reads go through the barrier: everything done before this request is in.
        let rows = store.recent(limit).await.map_err(|e| RpcError::remote(ErrorCode::Internal, e.to_string()))?;
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
}

impl Handler for ExecServer {
    async fn handle(&self, request: Request, conn: &Connection) -> Result<Response, RpcError> {
        match request.method {
            Some(Method::Start(s)) => self.start(s, conn),
            Some(Method::WriteStdin(w)) => {
                let tx = self
                    .with_process(w.process_id, |p| p.stdin.clone())?
                    .ok_or_else(|| RpcError::remote(ErrorCode::InvalidRequest, "stdin is closed"))?;
                tx.send(w.data).await.map_err(|_| RpcError::remote(ErrorCode::InvalidRequest, "stdin is closed"))?;
                Ok(ack())
            }
            Some(Method::CloseStdin(c)) => {
                self.with_process(c.process_id, |p| p.stdin = None)?;
                Ok(ack())
            }
            Some(Method::Signal(s)) => {
                let pid = self.with_process(s.process_id, |p| p.pid)?;
                let sig = nix::sys::signal::Signal::try_from(s.signal)
                    .map_err(|_| RpcError::remote(ErrorCode::InvalidRequest, format!("unknown signal {}", s.signal)))?;
                let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0));
                nix::sys::signal::kill(pid, sig).map_err(|e| RpcError::remote(ErrorCode::Internal, e.to_string()))?;
                Ok(ack())
            }
            Some(Method::Kill(k)) => {
                let kill = self.with_process(k.process_id, |p| p.kill.clone())?;
                let _ = kill.send(()).await;
                Ok(ack())
            }
            Some(Method::List(l)) => self.list(l.limit).await,
            None => Err(RpcError::remote(ErrorCode::UnknownMethod, "unknown method")),
        }
    }

    fn connected(&self, conn: &Connection) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(conn.id(), OpenConnection { conn: conn.clone(), work: watch::Sender::new(()) });
        }
        self.busy.send_modify(|n| *n += 1);
    }

    /// The client sends no more requests: its processes run to the end, and this resolves
    /// once each one's Exited is queued for the client.
    fn finish(&self, conn: &Connection) -> impl std::future::Future<Output = ()> + Send {
        let work = self.connections.lock().ok().and_then(|c| c.get(&conn.id()).map(|open| open.work.clone()));
        async move {
            if let Some(work) = work {
                work.closed().await;
            }
        }
    }

    fn disconnected(&self, conn: &Connection) {
        if let Ok(mut connections) = self.connections.lock() {
            connections.remove(&conn.id());
        }
        if let Ok(processes) = self.processes.lock() {
            for p in processes.values().filter(|p| p.connection == conn.id()) {
                if self.config.kill_on_disconnect {
                    let _ = p.kill.try_send(());
                }
            }
        }
        self.busy.send_modify(|n| *n = n.saturating_sub(1));
    }
}
