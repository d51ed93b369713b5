//! # tracewire-rpc
//!
//! An envelope RPC that does not know its transport. A [`Link`] carries encoded
//! [`Envelope`]s both ways; the gRPC transport ([`grpc`]) and tracewire's relay provide
//! links, and [`link_pair`] makes an in-memory one.
//!
//! - [`Client`]: request ids, a pending map, per-call timeout, cancellation (drop the
//!   future), a bound on calls in flight, notifications. Each call is an `rpc.call` span
//!   whose context travels in the envelope; the response's timestamps give the clock offset
//!   and round-trip time (`tracewire.clock.offset_us`, `tracewire.net.rtt_us`).
//! - [`serve`]: the server dispatcher: a bounded queue (`rpc.queue` spans), worker tasks
//!   (`rpc.dispatch` spans, children of the request's context), method routing to a
//!   [`Handler`], notifications pushed through a bounded delivery queue
//!   (`terminal.queue`, `terminal.deliver`). A peer that stops sending (a half-close) still
//!   gets the work it started ([`Handler::finish`]); a peer that goes away cancels it.
//! - A missing or malformed trace carrier starts a new root trace and is counted, never an
//!   error; a response carries the context the server used, never a value it refused. An
//!   undecodable, oversized or unknown request gets a typed error response and the
//!   connection survives.
//!
//! ```
//! use tracewire_proto::v1::{request::Method, response, Ack, Kill, Request, Response};
//! use tracewire_rpc::{link_pair, serve, Client, ClientConfig, Handler, Connection, RpcError, ServerConfig};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     async fn handle(&self, _req: Request, _conn: &Connection) -> Result<Response, RpcError> {
//!         Ok(Response { result: Some(response::Result::Ack(Ack {})) })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let (client_link, server_link) = link_pair(16);
//! tokio::spawn(serve(server_link, std::sync::Arc::new(Echo), ServerConfig::default()));
//! let client = Client::new(client_link, ClientConfig::default());
//! let kill = Request { method: Some(Method::Kill(Kill { process_id: 1 })) };
//! assert!(matches!(client.call(kill).await, Ok(response::Result::Ack(_))));
//! # });
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod client;
pub mod grpc;
mod server;
mod timing;
mod transport;

pub use client::{Client, ClientConfig};
pub use server::{Connection, Handler, Incoming, ServerConfig, decode_incoming, serve};
pub use timing::{ClockSample, unix_nanos};
pub use tracewire_proto::v1::{Envelope, ErrorCode};
pub use transport::{Link, Transport, link_pair};

/// An RPC failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The peer answered with an error.
    #[error("remote error {code:?}: {message}")]
    Remote {
        /// The error code.
        code: ErrorCode,
        /// The peer's message.
        message: String,
    },
    /// No response within the call's timeout.
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    /// The connection is closed.
    #[error("the connection is closed")]
    Closed,
    /// The transport failed.
    #[error("transport error: {0}")]
    Transport(String),
    /// A message could not be decoded.
    #[error("cannot decode a message: {0}")]
    Decode(String),
}

impl RpcError {
    /// An error with a code, as a handler returns it.
    pub fn remote(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Remote { code, message: message.into() }
    }

    /// The code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Remote { code, .. } => *code,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::Closed => ErrorCode::Closed,
            Self::Transport(_) => ErrorCode::Internal,
            Self::Decode(_) => ErrorCode::Decode,
        }
    }
}

/// The method name of a request, for spans (`rpc.method`).
pub fn method_name(request: &tracewire_proto::v1::Request) -> &'static str {
    use tracewire_proto::v1::request::Method;
    match &request.method {
        Some(Method::Start(_)) => "Start",
        Some(Method::WriteStdin(_)) => "WriteStdin",
        Some(Method::CloseStdin(_)) => "CloseStdin",
        Some(Method::Signal(_)) => "Signal",
        Some(Method::Kill(_)) => "Kill",
        Some(Method::List(_)) => "List",
        None => "unknown",
    }
}
