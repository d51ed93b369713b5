//! # tracewire-admin
//!
//! The exec-server's admin listener (off unless asked for): what its child processes cost,
//! which ones are runaway or stuck, and CPU profiles of the server itself. Details and the
//! JSON shape: `docs/admin.md`.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /metrics` | the dashboard (HTML, no external assets), polling `/api/metrics` every 2 s |
//! | `GET /api/metrics` | [`Metrics`] as JSON: the server and one row per child |
//! | `GET /api/metrics/prometheus` | the same in the Prometheus text format |
//! | `GET /api/debug/pprof/profile?seconds=N[&format=svg]` | a CPU profile (pprof protobuf, or a flame graph) |
//! | `GET`/`POST /login` | exchanges the token for a session cookie, for browsers |
//!
//! Every route but `/login` requires `Authorization: Bearer <token>` (or the session
//! cookie); the token is compared in constant time, and a missing or wrong one gets 401
//! with an empty body. [`AdminServer::bind`] refuses to start without a token at all.
//!
//! A [`Monitor`] samples on a blocking thread every [`AdminConfig::sample_interval`]: it
//! joins `ExecServer::snapshot` with OS readings from a [`ProcessSampler`] (the real one,
//! [`SysinfoSampler`], reads `/proc`); CPU% comes from cumulative CPU time deltas
//! ([`CpuTracker`]), for each worker and for its process tree ([`TreeReading`]). Requests
//! only read the latest sample, so the exec request path never waits on it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use tracewire_admin::{AdminConfig, AdminServer, Monitor, Token};
//! use tracewire_exec::{ExecConfig, ExecServer};
//!
//! # async fn demo() -> Result<(), tracewire_admin::AdminError> {
//! let exec = Arc::new(ExecServer::new(ExecConfig::default()));
//! // ... serve `exec` with tracewire_rpc::grpc::BoundServer::run(Arc::clone(&exec), ...)
//! let token = Token::from_file("/etc/tracewire/admin-token".as_ref())?;
//! let admin = AdminServer::bind("127.0.0.1:7090".parse().unwrap(), Some(token)).await?;
//! println!("admin on {}", admin.local_addr());
//! let monitor = Monitor::new(exec, AdminConfig::default());
//! admin.serve(monitor, std::future::pending()).await?; // or a shutdown signal
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod auth;
mod metrics;
mod monitor;
mod proctree;
mod profile;
mod prometheus;
mod sampler;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use auth::Token;
pub use metrics::{Metrics, ServerMetrics, WorkerMetrics, ZombieReason};
pub use monitor::{CpuTracker, Monitor};
pub use sampler::{ProcessReading, ProcessSampler, Sample, SysinfoSampler, TreeReading};
pub use server::AdminServer;

/// Admin settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdminConfig {
    /// A worker that has written no output for longer than this is flagged as a zombie.
    pub reap_ttl: Duration,
    /// A worker whose process tree (the worker and its descendants) uses at least this
    /// CPU% is flagged busy.
    pub busy_cpu_percent: f64,
    /// How often the monitor samples (CPU% is averaged over this interval).
    pub sample_interval: Duration,
    /// The longest profile `?seconds=` may ask for.
    pub max_profile: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            reap_ttl: Duration::from_secs(300),
            busy_cpu_percent: 50.0,
            sample_interval: Duration::from_secs(1),
            max_profile: Duration::from_secs(60),
        }
    }
}

/// An admin listener failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// No token was given; the admin listener never runs without one.
    #[error(
        "refusing to start the admin listener on {addr} without a token: every admin route requires one{}",
        if addr.ip().is_loopback() { "" } else { ", and this address is reachable from other machines" }
    )]
    TokenRequired {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The token is empty (or only whitespace).
    #[error("the admin token is empty")]
    EmptyToken,
    /// The token file cannot be read.
    #[error("cannot read the admin token file {}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why (the error's source).
        source: std::io::Error,
    },
    /// The address cannot be bound.
    #[error("cannot bind the admin listener on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why (the error's source).
        source: std::io::Error,
    },
    /// The listener failed while serving.
    #[error("the admin listener failed: {0}")]
    Serve(std::io::Error),
    /// A profile could not be taken or encoded.
    #[error("cannot take a profile: {0}")]
    Profile(String),
}

/// `docs/admin.md`'s code blocks are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/admin.md")]
struct AdminDoc;
