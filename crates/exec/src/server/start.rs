//! Start: spawn the child in its `process` span, wire its stdin, readers and waiter, and
//! enter it in the process table.
//!
//! Invariants:
//! - The child's `TRACEPARENT` names its `process` span, unless
//!   `ExecConfig::child_trace_context` is off (tests: `crates/exec/tests/child_env.rs`,
//!   `crates/exec/tests/spans.rs` `the_child_sees_a_traceparent_in_the_clients_trace`).
//! - `process.run` covers the child's running time, not its pipes, so that the critical
//!   path names it (test: `crates/cli/tests/exec_critical_path.rs`
//!   `the_critical_path_names_process_run_not_the_pipe_readers`).
//! - Persistence never delays Start: the store append is queued on a task.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tracewire_context::TraceCarrier;
use tracewire_proto::v1::{Response, Start, Started, Stream, response};
use tracewire_rpc::{Connection, ErrorCode, RpcError};
use tracewire_store::ProcessRecord;
use tracewire_telemetry::{inject_span, span_context, stage_span};
use tracing::Instrument;

use super::child_io::{ExitWaiter, PipeReader};
use super::snapshot::ProcessActivity;
use super::{BusyGuard, ExecServer, HeldProcess};
use crate::spawn::{SpawnRequest, Stdin, TraceVars};

impl ExecServer {
    pub(super) fn start(&self, s: Start, conn: &Connection) -> Result<Response, RpcError> {
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
        let stdin_tx = feed_stdin(child.take_stdin(), s.stdin);

        let next_seq = Arc::new(tokio::sync::Mutex::new(0u64));
        let activity = Arc::new(ProcessActivity::default());
        let mut pipes = Vec::new();
        for (pipe, stream) in [(child.take_stdout(), Stream::Stdout), (child.take_stderr(), Stream::Stderr)] {
            let Some(pipe) = pipe else { continue };
            let reader = PipeReader {
                process_id,
                stream,
                next_seq: Arc::clone(&next_seq),
                conn: conn.clone(),
                carrier: carrier.clone(),
                chunk_size: self.config.chunk_size.max(1),
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
        let reader_spans: Vec<tracing::Span> =
            pipes.iter().map(|(reader, _)| process_span.in_scope(|| reader_span(reader.stream))).collect();
        let run_span = process_span.in_scope(|| stage_span!(ProcessRun, process.pid = pid));
        let readers: Vec<_> = pipes
            .into_iter()
            .zip(reader_spans)
            .map(|((reader, pipe), span)| tokio::spawn(reader.run(pipe).instrument(span)))
            .collect();

        let (kill_tx, kill_rx) = mpsc::channel(4);
        if let Ok(mut processes) = self.processes.lock() {
            processes.insert(
                process_id,
                HeldProcess {
                    connection: conn.id(),
                    pid,
                    stdin: stdin_tx,
                    kill: kill_tx,
                    argv: s.argv,
                    started,
                    started_unix_nanos: record.started_unix_nanos,
                    activity: Arc::clone(&activity),
                },
            );
        }
        let waiter = ExitWaiter {
            process_id,
            _connection_work: self
                .connections
                .lock()
                .ok()
                .and_then(|c| c.get(&conn.id()).map(|open| open.work.subscribe())),
            conn: conn.clone(),
            carrier,
            started,
            timeout: s.timeout_ms.map(Duration::from_millis),
            drain_grace: self.config.drain_grace,
            processes: Arc::clone(&self.processes),
            store: self.store.clone().map(|s| (s, record)),
            activity,
        };
        // Held until the process span is dropped: `idle` then knows its spans are closed.
        let busy = BusyGuard::new(&self.busy);
        tokio::spawn(async move {
            waiter.run(child, kill_rx, readers, run_span).instrument(process_span).await;
            drop(busy);
        });
        Ok(Response { result: Some(response::Result::Started(Started { process_id, pid })) })
    }
}

/// stdin: the bytes given with Start, then EOF; or a writer fed by WriteStdin (the sender
/// returned).
fn feed_stdin(stdin: Option<Stdin>, given: Option<Bytes>) -> Option<mpsc::Sender<Bytes>> {
    match (stdin, given) {
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
    }
}

/// A reader's span: `process.stdout` or `process.stderr`.
fn reader_span(stream: Stream) -> tracing::Span {
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
}
