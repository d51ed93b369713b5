//! A child's I/O after the spawn: a [`PipeReader`] per output pipe pushes each chunk as it
//! is read, and the [`ExitWaiter`] waits for the exit (or a kill, or the timeout), then for
//! the readers, and queues Exited last.
//!
//! Invariants:
//! - Outputs of one process are numbered and queued under one lock, so the two streams'
//!   Outputs reach the connection in `seq` order (test: `crates/exec/tests/exec.rs`
//!   `output_sequence_numbers_arrive_in_order_when_both_streams_are_busy`).
//! - Exited is queued only after the readers delivered everything they read, or after
//!   `drain_grace` (test: `crates/exec/tests/exec.rs`
//!   `output_written_just_before_exit_arrives_before_exited`).
//! - Waiting for the delivery queue pauses reading the pipe: a slow client never makes the
//!   server buffer without bound (test: `crates/exec/tests/exec.rs`
//!   `a_slow_client_pauses_the_child_instead_of_buffering`).

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};
use tracewire_context::TraceCarrier;
use tracewire_proto::v1::{Exited, Notification, Output, Stream, exited, notification};
use tracewire_rpc::Connection;
use tracewire_store::{ProcessRecord, Store};
use tracewire_telemetry::stage_span;
use tracing::Instrument;

use super::ProcessTable;
use super::snapshot::ProcessActivity;
use crate::spawn::Child;

/// Reads one of a child's output pipes and pushes each chunk as an Output.
pub(super) struct PipeReader {
    pub(super) process_id: u64,
    pub(super) stream: Stream,
    /// The process's next Output sequence number, shared by its two readers.
    pub(super) next_seq: Arc<tokio::sync::Mutex<u64>>,
    pub(super) conn: Connection,
    /// The process span's context, carried by each Output.
    pub(super) carrier: TraceCarrier,
    /// Largest chunk pushed at once, in bytes.
    pub(super) chunk_size: usize,
    pub(super) started: Instant,
    pub(super) activity: Arc<ProcessActivity>,
}

impl PipeReader {
    /// Pushes every chunk as it is read. Waiting for the delivery queue pauses reading the
    /// pipe, so a slow client cannot make the server buffer without bound. Returns the
    /// stream and the bytes read.
    pub(super) async fn run(self, mut pipe: Box<dyn AsyncRead + Send + Unpin>) -> (Stream, u64) {
        let span = tracing::Span::current();
        let mut total = 0u64;
        let mut buf = BytesMut::with_capacity(self.chunk_size);
        loop {
            buf.reserve(self.chunk_size);
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
                        let mut next = self.next_seq.lock().await;
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

/// Waits for a child's exit, then for its readers, and queues its Exited.
pub(super) struct ExitWaiter {
    pub(super) process_id: u64,
    /// Held until Exited is queued: the connection's work in progress
    /// ([`OpenConnection`](super::OpenConnection)).
    pub(super) _connection_work: Option<watch::Receiver<()>>,
    pub(super) conn: Connection,
    /// The process span's context, carried by Exited.
    pub(super) carrier: TraceCarrier,
    pub(super) started: Instant,
    /// The request's timeout: the child is killed when it passes.
    pub(super) timeout: Option<Duration>,
    /// How long to wait for the readers after the exit.
    pub(super) drain_grace: Duration,
    /// The server's process table; the entry is removed before Exited is queued.
    pub(super) processes: ProcessTable,
    /// Where to persist the process's end, with its start record.
    pub(super) store: Option<(Store, ProcessRecord)>,
    pub(super) activity: Arc<ProcessActivity>,
}

impl ExitWaiter {
    /// Runs until Exited is queued. A message on `kill` (or the timeout) kills the child;
    /// `run_span` (`process.run`) ends when the exit is seen.
    pub(super) async fn run(
        self,
        mut child: Child,
        mut kill: mpsc::Receiver<()>,
        readers: Vec<tokio::task::JoinHandle<(Stream, u64)>>,
        run_span: tracing::Span,
    ) {
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                Some(()) = kill.recv() => { let _ = child.start_kill(); }
                () = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => { let _ = child.start_kill(); }
            }
        };
        self.activity.exited();
        let exit_span = stage_span!(
            ProcessExit,
            process.exit.code = tracing::field::Empty,
            tracewire.signal = tracing::field::Empty
        );
        drop(run_span);
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
            if tokio::time::timeout(self.drain_grace, drain).await.is_err() {
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
            if let Ok(mut processes) = self.processes.lock() {
                processes.remove(&self.process_id);
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
        .instrument(exit_span)
        .await;
    }
}
