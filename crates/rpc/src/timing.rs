//! Client/server clock correlation with the four-timestamp method.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix nanoseconds (0 before 1970; saturating far in the future).
pub fn unix_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// One exchange's four timestamps (Unix nanoseconds): client send `t0`, server receive
/// `t1`, server send `t2`, client receive `t3`.
///
/// ```
/// use tracewire_rpc::ClockSample;
///
/// // The server's clock is 1 ms ahead; each way takes 100 us; the server works 50 us.
/// let s = ClockSample { t0: 0, t1: 1_100_000, t2: 1_150_000, t3: 250_000 };
/// assert_eq!(s.offset_nanos(), 1_000_000);
/// assert_eq!(s.rtt_nanos(), 200_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// Client send.
    pub t0: i64,
    /// Server receive.
    pub t1: i64,
    /// Server send.
    pub t2: i64,
    /// Client receive.
    pub t3: i64,
}

impl ClockSample {
    /// Server clock minus client clock: `((t1 - t0) + (t2 - t3)) / 2`.
    pub fn offset_nanos(&self) -> i64 {
        (self.t1.saturating_sub(self.t0).saturating_add(self.t2.saturating_sub(self.t3))) / 2
    }

    /// Time on the network: `(t3 - t0) - (t2 - t1)`.
    pub fn rtt_nanos(&self) -> i64 {
        self.t3.saturating_sub(self.t0).saturating_sub(self.t2.saturating_sub(self.t1))
    }

    /// Whether the server filled in its timestamps.
    pub fn is_complete(&self) -> bool {
        self.t1 != 0 && self.t2 != 0
    }
}
