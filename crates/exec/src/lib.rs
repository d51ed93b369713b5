//! # tracewire-exec
//!
//! The exec-server ([`ExecServer`], a `tracewire_rpc::Handler`) and its client
//! ([`ExecClient`]). The server spawns processes (argv, env, cwd; on Linux with
//! `posix_spawn` and the server's environment read once, when the server is made), hands them
//! `TRACEPARENT`/`TRACESTATE` so an instrumented child continues the trace, pushes each
//! output chunk as it is read and Exited only after all output; a slow client pauses the
//! pipe reading (memory stays bounded); a client's processes are killed when it
//! disconnects. Spans: on the server `process` (spawn to exit) with `process.spawn`,
//! `process.run`, `process.stdout`, `process.stderr`, `process.exit`; on the client
//! `rpc.connect` ([`ExecClient::connect`], or the transport's own through
//! [`ExecClient::connect_via`]) and each exec's `exec` root ([`ExecClient::start`]), so a
//! caller writes no span. With no current span the first exec's root holds the connect:
//! a connection and N execs are N traces. Delivery spans come from `tracewire-rpc`.
//!
//! ```no_run
//! use tracewire_exec::{ExecClient, Start};
//!
//! # async fn demo() -> Result<(), tracewire_exec::ExecError> {
//! let client = ExecClient::connect("127.0.0.1:7070").await?;
//! let out = client
//!     .start(Start { argv: vec!["echo".into(), "hi".into()], ..Default::default() })
//!     .await?
//!     .wait_with_output()
//!     .await?;
//! assert_eq!(out.stdout, b"hi\n");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod client;
mod server;
mod spawn;

pub use client::{Event, ExecClient, ExecError, ExitStatus, OutputStream, ProcessOutput, RemoteProcess, connect_grpc};
pub use server::{ExecConfig, ExecServer, ProcessSnapshot, ProcessState, ServerSnapshot};
pub use tracewire_proto::v1::{ProcessInfo, Start};
pub use tracewire_store::{Store, StoreConfig};
