//! # tracewire-relay
//!
//! End-to-end encryption of the exec RPC with Noise (`snow`, ring-accelerated), through a
//! relay that pairs a client and a server by session id and forwards only ciphertext.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod framing;
mod loopback;
mod noise;
mod outbound;
mod server;
mod transport;
mod wire;

use tracewire_proto::v1::ResetReason;

pub use framing::{FrameError, MAX_RECORD_PLAINTEXT, Opened, Opener, Sealer};
pub use loopback::LoopbackRelay;
pub use noise::{Keypair, NoiseConfig, Pattern, Suite, prologue, public_path, read_public_key};
pub use server::{RelayConfig, RelayServer, Tap};
pub use transport::{RelayEndpoint, RelayLink, RelayListener, accept, connect, serve_via_relay};

/// A relay failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The Noise handshake failed (wrong key, tampering, protocol mismatch).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The server's static key is not the pinned one.
    #[error("the server's static key is not the pinned key")]
    WrongKey,
    /// A key file is missing or malformed.
    #[error("key: {0}")]
    Key(String),
    /// A framing fault.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer or the relay reset the session.
    #[error("session reset: {reason:?} {detail}")]
    Reset {
        /// Why.
        reason: tracewire_proto::v1::ResetReason,
        /// Details.
        detail: String,
    },
    /// The relay connection failed or ended.
    #[error("relay transport: {0}")]
    Transport(String),
}

impl RelayError {
    /// Whether trying again later may succeed without changing anything: the session was
    /// at its limit of clients (`Reset(SESSION_FULL)`), or no server was attached to it
    /// yet (`Reset(PEER_GONE)` before the handshake completed).
    ///
    /// ```
    /// use tracewire_proto::v1::ResetReason;
    /// use tracewire_relay::RelayError;
    /// let full = RelayError::Reset { reason: ResetReason::SessionFull, detail: String::new() };
    /// assert!(full.is_retryable());
    /// assert!(!RelayError::WrongKey.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Reset { reason: ResetReason::SessionFull | ResetReason::PeerGone, .. })
    }
}
