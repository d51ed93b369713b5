//! The few `google.rpc` messages OTLP uses (googleapis `google/rpc/status.proto`,
//! `google/rpc/error_details.proto`): the `Status` body of every OTLP/HTTP failure and the
//! `RetryInfo` a throttled export carries, for the receiver that sends them and the export
//! client that reads them.
//!
//! ```
//! use std::time::Duration;
//! use prost::Message;
//! use tracewire_collector::google_rpc::{Status, retry_delay};
//!
//! let status = Status::with_retry_info(14, "slow down", Duration::from_millis(2500));
//! assert_eq!(retry_delay(&status.encode_to_vec()), Some(Duration::from_millis(2500)));
//! assert_eq!(retry_delay(&Status { code: 14, ..Status::default() }.encode_to_vec()), None);
//! ```

use std::time::Duration as StdDuration;

use prost::Message;

/// The type URL of a packed [`RetryInfo`].
pub const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// The gRPC code (OTLP/HTTP does not use it; clients may log it).
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// For the sender's developers.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Packed details, such as a [`RetryInfo`].
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    /// What `value` holds (`type.googleapis.com/...`).
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// The encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`: when to retry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    /// The delay before retrying.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<Duration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Duration {
    /// Whole seconds.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds past the seconds.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl RetryInfo {
    /// A `RetryInfo` asking for `delay` (saturating at `i64::MAX` seconds).
    pub fn after(delay: StdDuration) -> Self {
        let seconds = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
        let nanos = i32::try_from(delay.subsec_nanos()).unwrap_or(0);
        Self { retry_delay: Some(Duration { seconds, nanos }) }
    }
}

impl Status {
    /// A status of `code` and `message` whose details hold a [`RetryInfo`] of `delay`.
    pub fn with_retry_info(code: i32, message: &str, delay: StdDuration) -> Self {
        let details =
            vec![Any { type_url: RETRY_INFO_TYPE.to_owned(), value: RetryInfo::after(delay).encode_to_vec() }];
        Self { code, message: message.to_owned(), details }
    }
}

/// The `RetryInfo.retry_delay` in the details of a gRPC status (`grpc-status-details-bin`,
/// an encoded [`Status`]); `None` when there is none or it is negative.
pub fn retry_delay(details: &[u8]) -> Option<StdDuration> {
    let status = Status::decode(details).ok()?;
    let any = status.details.iter().find(|a| a.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let delay = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    Some(
        StdDuration::from_secs(u64::try_from(delay.seconds).ok()?)
            + StdDuration::from_nanos(u64::try_from(delay.nanos).ok()?),
    )
}
