//! The worker's spooling side (a disk spool is configured): batches encoded as OTLP
//! requests and sent with the spool's own client; what the collector does not take is
//! appended to the spool and replayed, oldest first, once it answers again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message;

use super::ExporterError;
use super::stats::Counters;
use super::worker::Worker;
use crate::config::SpoolConfig;
use crate::spool::{SendError, Sender as OtlpSender, Spool};

/// What the worker needs to build its spooling side on its own thread.
pub(super) struct SpoolSetup {
    pub(super) config: SpoolConfig,
    pub(super) sender: Box<dyn FnOnce() -> Result<OtlpSender, ExporterError> + Send>,
}

/// The exporter type of a spooling worker, which sends with its own client instead.
#[derive(Debug)]
pub(super) struct NoExporter;

impl SpanExporter for NoExporter {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Err(OTelSdkError::InternalFailure("a spooling worker sends with its own client".into()))
    }
}

/// The spooling side of the worker.
pub(super) struct Spooling {
    pub(super) config: SpoolConfig,
    /// `None` until opened (again): at start, and after its lock was found held or a
    /// file of it could not be read.
    pub(super) spool: Option<Spool>,
    pub(super) sender: OtlpSender,
    pub(super) resource: ResourceAttributesWithSchema,
    /// After a failed attempt, no new one before this.
    pub(super) retry_at: Instant,
    pub(super) retry_delay: Duration,
    pub(super) warned_spool: bool,
    pub(super) warned_evicted: bool,
}

impl Spooling {
    /// The spool, opened if it is not yet.
    pub(super) fn open(&mut self, c: &Counters) -> Option<&mut Spool> {
        if self.spool.is_none() {
            match Spool::open(&self.config.dir, self.config.max_bytes) {
                Ok(mut spool) => {
                    Counters::add(&c.spool_torn, spool.take_torn());
                    self.spool = Some(spool);
                }
                Err(e) => self.warn(&format!("the disk spool cannot be used ({e}); undelivered spans are dropped")),
            }
        }
        self.spool.as_mut()
    }

    pub(super) fn warn(&mut self, what: &str) {
        if !self.warned_spool {
            self.warned_spool = true;
            tracing::warn!(target: "tracewire_telemetry", "{what}. Further drops are counted (ExportStats) without another warning.");
        }
    }

    /// Whether spans wait in the spool.
    pub(super) fn backlog(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Appends a request of `n` spans to the spool, or counts them as dropped when it
    /// cannot.
    pub(super) fn append(&mut self, c: &Counters, request: &[u8], n: u64) -> bool {
        let Some(spool) = self.open(c) else {
            Counters::add(&c.dropped_export_failed, n);
            return false;
        };
        match spool.append(request, n) {
            Ok(evicted) => {
                Counters::add(&c.spooled, n);
                Counters::add(&c.evicted, evicted);
                if evicted > 0 && !self.warned_evicted {
                    self.warned_evicted = true;
                    tracing::warn!(
                        target: "tracewire_telemetry",
                        "the disk spool is full (TRACEWIRE_SPOOL_MAX_BYTES={}); its oldest spans are evicted and \
                         counted (ExportStats) without another warning",
                        self.config.max_bytes
                    );
                }
                true
            }
            Err(e) => {
                Counters::add(&c.dropped_export_failed, n);
                self.warn(&format!("cannot write {n} spans to the disk spool ({e}); they were dropped"));
                false
            }
        }
    }
}

/// How one attempt to send an encoded request ended.
pub(super) enum Sent {
    Accepted,
    /// Worth another attempt later.
    Retry(String),
    /// Refused for good.
    Refused(String),
    /// Cut short at the shutdown deadline.
    Cancelled,
}

/// How one replay attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Replay {
    /// A record left the spool (delivered, or refused for good).
    Progress,
    /// Nothing was delivered: the spool is empty, or the attempt failed.
    Stalled,
}

impl<E: SpanExporter> Worker<E> {
    /// One attempt to send an encoded request, within the export timeout (less before a
    /// deadline), cut short by shutdown's deadline.
    pub(super) fn send(&mut self, request: &[u8], deadline: Option<Instant>) -> Sent {
        let Some(sp) = self.spooling.as_mut() else { return Sent::Refused("no spool".into()) };
        let mut timeout = self.batch.export_timeout;
        if let Some(d) = deadline {
            timeout = timeout.min(d.saturating_duration_since(Instant::now()));
        }
        let c = &self.shared.stats.inner;
        c.export_batches.fetch_add(1, Ordering::AcqRel);
        let (sender, cancel) = (&mut sp.sender, &self.cancel);
        let result = self.rt.block_on(async {
            tokio::select! {
                r = tokio::time::timeout(timeout, sender.send(request)) => Some(r),
                () = cancel.at_deadline() => None,
            }
        });
        let sent = match result {
            Some(Ok(Ok(()))) => return Sent::Accepted,
            Some(Ok(Err(SendError::Retryable(why)))) => Sent::Retry(why),
            Some(Ok(Err(SendError::Refused(why)))) => Sent::Refused(why),
            Some(Err(_)) => Sent::Retry(format!("no answer within {timeout:?}")),
            None => Sent::Cancelled,
        };
        c.export_failures.fetch_add(1, Ordering::AcqRel);
        if matches!(sent, Sent::Retry(_)) {
            sp.retry_at = Instant::now() + sp.retry_delay;
        }
        sent
    }

    /// Delivers a batch through the spool: sent when the spool is empty and the collector
    /// is not known to be down, else (or when that fails with a retryable error, or at the
    /// shutdown deadline) appended to the spool. Returns whether no span was dropped.
    pub(super) fn deliver_spooled(&mut self, batch: Vec<SpanData>, n: u64, deadline: Option<Instant>) -> bool {
        let Some(sp) = self.spooling.as_mut() else { return false };
        let request =
            ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(batch, &sp.resource) }
                .encode_to_vec();
        let now = Instant::now();
        let shared = Arc::clone(&self.shared);
        let c = &shared.stats.inner;
        // Oldest first: while spans wait on disk, new ones queue behind them.
        if sp.backlog() || (sp.spool.is_some() && now < sp.retry_at) || deadline.is_some_and(|d| now >= d) {
            return sp.append(c, &request, n);
        }
        match self.send(&request, deadline) {
            Sent::Accepted => {
                c.exported.fetch_add(n, Ordering::AcqRel);
                true
            }
            Sent::Retry(why) => {
                let spooled = self.spooling.as_mut().is_some_and(|sp| sp.append(c, &request, n));
                if spooled {
                    self.warn_spooling(&why);
                }
                spooled
            }
            // The request may have reached the collector: spooled, it can arrive twice.
            Sent::Cancelled => self.spooling.as_mut().is_some_and(|sp| sp.append(c, &request, n)),
            Sent::Refused(why) => {
                c.dropped_export_failed.fetch_add(n, Ordering::AcqRel);
                self.warn_failed(n, &why);
                false
            }
        }
    }

    /// One warning the first time the collector does not take a batch that is spooled.
    pub(super) fn warn_spooling(&mut self, why: &str) {
        if !self.warned {
            self.warned = true;
            let dir = self.spooling.as_ref().map(|sp| sp.config.dir.display().to_string()).unwrap_or_default();
            tracing::warn!(
                target: "tracewire_telemetry",
                "span export failed ({why}); spans go to the disk spool in {dir} and are sent when the collector \
                 answers again. Further failures are counted (ExportStats) without another warning."
            );
        }
    }

    /// Sends the oldest record of the spool once.
    pub(super) fn replay_one(&mut self, deadline: Option<Instant>) -> Replay {
        let shared = Arc::clone(&self.shared);
        let c = &shared.stats.inner;
        let Some(sp) = self.spooling.as_mut() else { return Replay::Stalled };
        let Some(spool) = sp.spool.as_mut() else { return Replay::Stalled };
        let head = spool.head();
        Counters::add(&c.spool_torn, spool.take_torn());
        let head = match head {
            Ok(Some(head)) => head,
            Ok(None) => return Replay::Stalled,
            Err(e) => {
                // Opened again (and rescanned) at the next attempt.
                sp.spool = None;
                sp.retry_at = Instant::now() + sp.retry_delay;
                sp.warn(&format!("cannot read the disk spool ({e})"));
                return Replay::Stalled;
            }
        };
        let sent = self.send(&head.request, deadline);
        let Some(sp) = self.spooling.as_mut() else { return Replay::Stalled };
        let rejected = match sent {
            Sent::Accepted => false,
            Sent::Refused(why) => {
                sp.warn(&format!("the collector refused {} spooled spans ({why}); they were deleted", head.spans));
                true
            }
            Sent::Retry(_) | Sent::Cancelled => return Replay::Stalled,
        };
        Counters::add(if rejected { &c.spool_rejected } else { &c.replayed }, head.spans);
        if let Some(spool) = sp.spool.as_mut()
            && let Err(e) = spool.pop_head()
        {
            sp.warn(&format!("cannot record replay progress in the disk spool ({e}); a restart may send spans twice"));
        }
        Replay::Progress
    }
}
