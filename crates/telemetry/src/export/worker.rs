//! The export worker: one thread with its own current-thread runtime that takes batches from
//! the queue, makes the layer's records `SpanData`, and calls the exporter with a timeout;
//! flush and shutdown requests, shutdown's deadline ([`Cancel`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::SpanExporter;

use super::queue::{FinishedSpan, Shared};
use super::spooling::{Replay, Spooling};
use crate::config::BatchConfig;

/// Lets shutdown cut short an export that is in flight, at the shutdown deadline.
#[derive(Debug, Default)]
pub(super) struct Cancel {
    pub(super) notify: tokio::sync::Notify,
    pub(super) deadline: std::sync::Mutex<Option<Instant>>,
}

impl Cancel {
    pub(super) fn request(&self, deadline: Instant) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = Some(deadline);
        }
        // A stored permit wakes the worker even if it is not waiting yet.
        self.notify.notify_one();
    }

    /// Resolves at the shutdown deadline, once shutdown has been requested.
    pub(super) async fn at_deadline(&self) {
        self.notify.notified().await;
        let deadline = self.deadline.lock().ok().and_then(|d| *d).unwrap_or_else(Instant::now);
        tokio::time::sleep_until(deadline.into()).await;
        // Leave the permit for any later wait: shutdown stays requested.
        self.notify.notify_one();
    }
}

pub(super) enum WorkerRequest {
    Flush(Sender<OTelSdkResult>),
    Shutdown(Instant, Sender<OTelSdkResult>),
    SetResource(Resource),
}

/// How draining the queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DrainOutcome {
    /// Everything was exported.
    Complete,
    /// Some export failed; its spans were dropped and counted.
    ExportFailed,
    /// The deadline passed; what was left was dropped and counted.
    DeadlinePassed,
}

pub(super) struct Worker<E> {
    pub(super) rt: tokio::runtime::Runtime,
    pub(super) exporter: E,
    pub(super) shared: Arc<Shared>,
    pub(super) control: Receiver<WorkerRequest>,
    pub(super) batch: BatchConfig,
    pub(super) cancel: Arc<Cancel>,
    /// The instrumentation scope of the spans of tracewire's `tracing` layer.
    pub(super) scope: opentelemetry::InstrumentationScope,
    /// Makes the layer's timestamps wall-clock times.
    pub(super) clock: crate::clock::Clock,
    pub(super) warned: bool,
    pub(super) warned_full: bool,
    /// The disk spool and the client that sends encoded requests, when configured.
    pub(super) spooling: Option<Spooling>,
}

impl<E: SpanExporter> Worker<E> {
    /// One warning when the queue first overflows; later drops are only counted.
    pub(super) fn warn_queue_full(&mut self) {
        let c = &self.shared.stats.inner;
        if !self.warned_full && (c.dropped_queue_full.load(Ordering::Relaxed) > 0 || c.shed.load(Ordering::Relaxed) > 0)
        {
            self.warned_full = true;
            tracing::warn!(
                target: "tracewire_telemetry",
                "the span queue is full (OTEL_BSP_MAX_QUEUE_SIZE={}); new spans are dropped and counted \
                 (ExportStats) without another warning",
                self.batch.max_queue_size
            );
        }
    }

    /// Handles control messages; `false` once the worker must stop.
    pub(super) fn control(&mut self) -> bool {
        loop {
            match self.control.try_recv() {
                Ok(WorkerRequest::Flush(ack)) => {
                    let result = match self.drain(None) {
                        DrainOutcome::Complete => Ok(()),
                        DrainOutcome::ExportFailed | DrainOutcome::DeadlinePassed => {
                            Err(OTelSdkError::InternalFailure(
                                "an export failed; its spans were dropped and counted".into(),
                            ))
                        }
                    };
                    let _ = ack.send(result);
                }
                Ok(WorkerRequest::Shutdown(deadline, ack)) => {
                    // Export failures are counted drops, not shutdown failures; only running
                    // out of time is.
                    let drained = self.drain(Some(deadline));
                    let _enter = self.rt.enter();
                    let _ = self.exporter.shutdown_with_timeout(deadline.saturating_duration_since(Instant::now()));
                    let _ = ack.send(match drained {
                        DrainOutcome::DeadlinePassed => Err(OTelSdkError::Timeout(self.batch.export_timeout)),
                        DrainOutcome::Complete | DrainOutcome::ExportFailed => Ok(()),
                    });
                    return false;
                }
                Ok(WorkerRequest::SetResource(r)) => {
                    self.exporter.set_resource(&r);
                    if let Some(sp) = &mut self.spooling {
                        sp.resource = (&r).into();
                    }
                }
                Err(TryRecvError::Empty) => return true,
                // Every processor handle is gone: export what is left, then stop.
                Err(TryRecvError::Disconnected) => {
                    self.drain(Some(Instant::now() + self.batch.export_timeout));
                    return false;
                }
            }
        }
    }

    pub(super) fn run(&mut self) {
        let mut next_export = Instant::now() + self.batch.schedule_delay;
        if let Some(sp) = &mut self.spooling {
            sp.open(&self.shared.stats.inner);
        }
        loop {
            self.warn_queue_full();
            if !self.control() {
                return;
            }
            let now = Instant::now();
            let len = self.shared.queue.len();
            if len >= self.shared.batch_size || (now >= next_export && len > 0) {
                self.export_one(None);
                if self.shared.queue.len() < self.shared.batch_size {
                    next_export = Instant::now() + self.batch.schedule_delay;
                }
                continue;
            }
            if now >= next_export {
                next_export = now + self.batch.schedule_delay;
            }
            // Replay the spool a record at a time, between batches.
            let mut wake_at = next_export;
            if let Some(sp) = &self.spooling
                && sp.backlog()
            {
                if now >= sp.retry_at {
                    self.replay_one(None);
                    continue;
                }
                wake_at = wake_at.min(sp.retry_at);
            }
            self.shared.wake_pending.store(false, Ordering::Release);
            // A batch may have filled while the flag was set: look again before sleeping.
            if self.shared.queue.len() >= self.shared.batch_size {
                continue;
            }
            std::thread::park_timeout(wake_at.saturating_duration_since(now));
        }
    }

    /// Exports everything queued. With a deadline, whatever could not be exported by then
    /// is dropped and counted.
    pub(super) fn drain(&mut self, deadline: Option<Instant>) -> DrainOutcome {
        let mut outcome = DrainOutcome::Complete;
        while !self.shared.queue.is_empty() {
            // Past the deadline a spooling worker writes what is left to disk (no network)
            // instead of dropping it.
            if deadline.is_some_and(|d| Instant::now() >= d) && self.spooling.is_none() {
                self.shared.drop_rest();
                return DrainOutcome::DeadlinePassed;
            }
            if !self.export_one(deadline) {
                outcome = DrainOutcome::ExportFailed;
            }
        }
        if let Some(sp) = &self.spooling {
            // Then replay the spool, oldest first, until it is empty, an attempt fails or
            // the deadline passes; the rest stays on disk. Shutdown tries even right after
            // a failure (it is the last chance); a flush waits for the retry delay and
            // takes at most one export timeout.
            let now = Instant::now();
            let until = match deadline {
                Some(d) => Some(d),
                None if now >= sp.retry_at => Some(now + self.batch.export_timeout),
                None => None,
            };
            if let Some(until) = until {
                while Instant::now() < until && self.replay_one(Some(until)) == Replay::Progress {}
            }
        }
        outcome
    }

    /// Exports up to one batch from the queue within the export timeout, or less before a
    /// deadline. Returns whether it was exported.
    pub(super) fn export_one(&mut self, deadline: Option<Instant>) -> bool {
        self.clock.advance();
        let clock = self.clock;
        let mut batch = Vec::with_capacity(self.shared.batch_size.min(self.shared.queue.len()));
        while batch.len() < self.shared.batch_size {
            match self.shared.queue.pop() {
                Some(FinishedSpan::Sdk(mut span)) => {
                    crate::stage::enrich(&mut span);
                    batch.push(*span);
                }
                Some(FinishedSpan::Compact(record)) => batch.push(record.into_span_data(&self.scope, &clock)),
                None => break,
            }
        }
        if batch.is_empty() {
            return true;
        }
        if self.shared.full.load(Ordering::Relaxed) {
            self.shared.full.store(false, Ordering::Relaxed);
        }
        let n = batch.len() as u64;
        if self.spooling.is_some() {
            return self.deliver_spooled(batch, n, deadline);
        }
        let mut timeout = self.batch.export_timeout;
        if let Some(d) = deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        let c = &self.shared.stats.inner;
        c.export_batches.fetch_add(1, Ordering::AcqRel);
        let (exporter, cancel) = (&self.exporter, &self.cancel);
        let result = self.rt.block_on(async {
            tokio::select! {
                r = tokio::time::timeout(timeout, exporter.export(batch)) => Some(r),
                () = cancel.at_deadline() => None,
            }
        });
        match result {
            Some(Ok(Ok(()))) => {
                c.exported.fetch_add(n, Ordering::AcqRel);
                true
            }
            Some(Ok(Err(e))) => {
                self.failed(n, &e.to_string());
                false
            }
            Some(Err(_)) => {
                self.failed(n, &format!("timed out after {timeout:?}"));
                false
            }
            None => {
                c.export_failures.fetch_add(1, Ordering::AcqRel);
                c.dropped_shutdown.fetch_add(n, Ordering::AcqRel);
                false
            }
        }
    }

    pub(super) fn failed(&mut self, n: u64, why: &str) {
        let c = &self.shared.stats.inner;
        c.export_failures.fetch_add(1, Ordering::AcqRel);
        c.dropped_export_failed.fetch_add(n, Ordering::AcqRel);
        self.warn_failed(n, why);
    }

    /// One warning the first time spans are dropped for a failed export.
    pub(super) fn warn_failed(&mut self, n: u64, why: &str) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                target: "tracewire_telemetry",
                "span export failed ({why}); {n} spans dropped. Further drops are counted \
                 (ExportStats) without another warning."
            );
        }
    }
}
