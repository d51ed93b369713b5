//! # tracewire-context
//!
//! W3C Trace Context (Level 2) and W3C Baggage for tracewire: parsing and formatting of
//! `traceparent`, `tracestate` and `baggage`, the propagation policy, and carriers that move
//! them through HTTP headers, gRPC metadata, RPC envelopes and child-process environments.
//!
//! The crate does no I/O, starts no runtime and, with default features, depends on nothing
//! but `thiserror`. Parsing a traceparent never allocates.
//!
//! ```
//! use tracewire_context::{extract, TraceCarrier, TraceContext};
//!
//! // A request arrives with a traceparent...
//! let incoming = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")];
//! let ex = extract(&incoming);
//! assert!(ex.continued());
//!
//! // ...our span continues the trace, and a downstream call carries our span as parent.
//! let mut outgoing = TraceCarrier::default();
//! ex.context.inject(Some(&ex.baggage), &mut outgoing)?;
//! assert!(outgoing.traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//! assert!(!outgoing.traceparent.contains("00f067aa0ba902b7"));
//! # Ok::<(), tracewire_context::CarrierError>(())
//! ```
//!
//! ## Features
//! - `http`: [`Carrier`]/[`CarrierMut`] for `http::HeaderMap`.
//! - `tonic`: the same for `tonic::metadata::MetadataMap`.
//! - `tokio`: [`CarrierMut`] for `tokio::process::Command`.
//! - `otel`: [`otel::TraceContextPropagator`], an `opentelemetry` `TextMapPropagator`, and
//!   conversions to and from `opentelemetry::trace::SpanContext`.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod baggage;
mod carrier;
mod hex;
mod id;
#[cfg(feature = "otel")]
pub mod otel;
mod propagation;
mod rng;
mod traceparent;
mod tracestate;

pub use baggage::{Baggage, BaggageEntry, BaggageError, ParsedBaggage};
pub use carrier::{
    BAGGAGE, Carrier, CarrierError, CarrierMut, ENV_BAGGAGE, ENV_TRACEPARENT, ENV_TRACESTATE, EnvCarrier, TRACEPARENT,
    TRACESTATE, TraceCarrier, env_var_name, is_normalized_env_name,
};
pub use hex::to_hex;
pub use id::{SpanId, TraceFlags, TraceId};
pub use propagation::{
    Extracted, PropagationStats, Remote, StartReason, StatsSnapshot, TraceContext, extract, read_remote,
};
pub use traceparent::{TRACEPARENT_LEN, TraceParent, TraceParentBuf, TraceParentError};
pub use tracestate::{TraceState, TraceStateError};

/// Limits and grammar checks of the tracestate and baggage headers.
pub mod limits {
    pub use crate::baggage::{MAX_BYTES as BAGGAGE_MAX_BYTES, MAX_MEMBERS as BAGGAGE_MAX_MEMBERS};
    pub use crate::tracestate::{
        LARGE_MEMBER as TRACESTATE_LARGE_MEMBER, MAX_KEY_LEN as TRACESTATE_MAX_KEY_LEN,
        MAX_MEMBERS as TRACESTATE_MAX_MEMBERS, MAX_VALUE_LEN as TRACESTATE_MAX_VALUE_LEN,
        SERIALIZE_BUDGET as TRACESTATE_SERIALIZE_BUDGET, valid_key as tracestate_valid_key,
        valid_value as tracestate_valid_value,
    };
}
