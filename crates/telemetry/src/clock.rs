//! Wall-clock times for the layer's cycle-counter timestamps ([`Clock`]).

use std::time::SystemTime;

/// Turns the layer's timestamps into wall-clock times. The export worker reads both clocks
/// before each batch; a time between two readings is interpolated between them, so neither
/// the cycle counter's calibration error nor its drift against the (NTP-disciplined) system
/// clock accumulates: the error is that of reading two clocks, well under a microsecond.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    earlier: (SystemTime, fastant::Instant),
    latest: (SystemTime, fastant::Instant),
    /// Seconds of system time per second of counter time between the two readings (1 when
    /// they are too close together to tell).
    rate: f64,
    /// `earlier`'s system time in nanoseconds since the Unix epoch (`None` before it), so
    /// that a conversion is one multiplication and integer additions.
    base_nanos: Option<u64>,
}

impl Clock {
    /// Both clocks, now.
    pub(crate) fn now() -> Self {
        let reading = Self::reading();
        Self::from_readings(reading, reading)
    }

    /// One reading of both clocks. The system clock is read between two counter readings,
    /// three times; the tightest pair wins and the counter's midpoint stands for it. A
    /// thread preempted between its reads (a loaded machine) would otherwise pair the two
    /// clocks tens of microseconds apart.
    fn reading() -> (SystemTime, fastant::Instant) {
        let read = || {
            let before = fastant::Instant::now();
            let system = SystemTime::now();
            let gap = fastant::Instant::now().saturating_duration_since(before);
            (gap, system, before + gap / 2)
        };
        let (_, system, counter) = (0..2).map(|_| read()).fold(read(), |best, r| if r.0 < best.0 { r } else { best });
        (system, counter)
    }

    fn from_readings(earlier: (SystemTime, fastant::Instant), latest: (SystemTime, fastant::Instant)) -> Self {
        let counter = latest.1.saturating_duration_since(earlier.1).as_secs_f64();
        let system = latest.0.duration_since(earlier.0).map_or(0.0, |d| d.as_secs_f64());
        let rate = if counter > 0.005 && system > 0.0 { system / counter } else { 1.0 };
        let base_nanos =
            earlier.0.duration_since(SystemTime::UNIX_EPOCH).ok().and_then(|d| u64::try_from(d.as_nanos()).ok());
        Self { earlier, latest, rate, base_nanos }
    }

    /// Reads both clocks again, keeping the last reading (unless it is too recent to
    /// measure the counter's rate against the system clock with).
    pub(crate) fn advance(&mut self) {
        let reading = Self::reading();
        let earlier = if reading.1.saturating_duration_since(self.latest.1) >= std::time::Duration::from_millis(10) {
            self.latest
        } else {
            self.earlier
        };
        *self = Self::from_readings(earlier, reading);
    }

    /// The wall-clock time of `t`.
    pub(crate) fn system_time(&self, t: fastant::Instant) -> SystemTime {
        let (base, at) = self.earlier;
        let Some(base_nanos) = self.base_nanos else { return self.system_time_slow(t) };
        // Counter nanoseconds from the reading (signed), scaled to system time: exact in an
        // f64 for any span of time a clock reading covers (2^53 ns is 104 days).
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        let scaled = match t.checked_duration_since(at) {
            Some(after) => (after.as_nanos() as f64 * self.rate) as i64,
            None => -((at.saturating_duration_since(t).as_nanos() as f64 * self.rate) as i64),
        };
        match base_nanos.checked_add_signed(scaled) {
            Some(nanos) => SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(nanos),
            None => base,
        }
    }

    /// [`Self::system_time`] for a reading before the Unix epoch.
    fn system_time_slow(&self, t: fastant::Instant) -> SystemTime {
        let (base, at) = self.earlier;
        let converted = match t.checked_duration_since(at) {
            Some(after) => base.checked_add(after.mul_f64(self.rate)),
            None => base.checked_sub(at.saturating_duration_since(t).mul_f64(self.rate)),
        };
        converted.unwrap_or(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_interpolates_between_readings_at_the_measured_rate() {
        use std::time::Duration;
        let at = |ms: u64| fastant::Instant::ZERO + Duration::from_secs(1000) + Duration::from_millis(ms);
        let wall = |us: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_micros(us);
        // The counter runs 0.1% slow against the system clock: 1000 ms of counter time are
        // 1001 ms of system time.
        let clock = Clock::from_readings((wall(0), at(0)), (wall(1_001_000), at(1000)));
        let close = |a: SystemTime, b: SystemTime| {
            let d = a.duration_since(b).unwrap_or_else(|e| e.duration());
            assert!(d < Duration::from_micros(1), "{a:?} vs {b:?}");
        };
        close(clock.system_time(at(0)), wall(0));
        close(clock.system_time(at(500)), wall(500_500));
        close(clock.system_time(at(1000)), wall(1_001_000));
        // Before the earlier reading and after the latest: extrapolated at the same rate.
        close(clock.system_time(at(0) - Duration::from_millis(100)), wall(0) - Duration::from_micros(100_100));
        close(clock.system_time(at(1100)), wall(1_101_100));
        // Readings too close together to measure a rate: the counter's own rate.
        let fresh = Clock::from_readings((wall(0), at(0)), (wall(1000), at(1)));
        close(fresh.system_time(at(2)), wall(2000));
    }

    #[test]
    fn the_clocks_integer_conversion_agrees_with_durations_scaled_by_the_rate() {
        use std::time::Duration;
        let at = |ns: u64| fastant::Instant::ZERO + Duration::from_secs(5000) + Duration::from_nanos(ns);
        let base = SystemTime::UNIX_EPOCH + Duration::new(1_800_000_000, 123_456_789);
        for rate_ppm in [-500i64, -3, 0, 7, 1000] {
            let system = Duration::from_secs(1) + Duration::from_nanos(rate_ppm.unsigned_abs() * 1000);
            let later = if rate_ppm < 0 { base + Duration::from_secs(2) - system } else { base + system };
            let clock = Clock::from_readings((base, at(0)), (later, at(1_000_000_000)));
            assert!(clock.base_nanos.is_some());
            for ns in [0u64, 1, 999, 1_000_000, 987_654_321, 3_600_000_000_000] {
                for t in [at(0) + Duration::from_nanos(ns), at(0).checked_sub(Duration::from_nanos(ns)).unwrap()] {
                    let fast = clock.system_time(t);
                    let slow = clock.system_time_slow(t);
                    let d = fast.duration_since(slow).unwrap_or_else(|e| e.duration());
                    assert!(d < Duration::from_micros(1), "rate {rate_ppm} ppm, {ns} ns: {fast:?} vs {slow:?}");
                }
            }
        }
        // A reading before the Unix epoch takes the general path.
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        let clock = Clock::from_readings((before, at(0)), (before, at(0)));
        assert!(clock.base_nanos.is_none());
        let t = clock.system_time(at(1_000));
        let d = t.duration_since(before + Duration::from_micros(1)).unwrap_or_else(|e| e.duration());
        assert!(d < Duration::from_micros(1), "{t:?}");
    }
}
