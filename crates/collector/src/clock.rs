//! Clock offsets between services, estimated as NTP estimates them.
//!
//! A client's `rpc.call` span carries one four-timestamp exchange with its server:
//! `tracewire.clock.offset_us` (the server's clock minus the client's) and
//! `tracewire.net.rtt_us` (the round trip, the server's own time excluded). With delays
//! `d1` out and `d2` back, a sample's offset is off by `(d1 - d2) / 2`, at most half its
//! round trip: the sample with the smallest round trip has the smallest bound, which is
//! why NTP's clock filter keeps it (RFC 5905, section 10, "Clock Filter Algorithm").
//!
//! Per trace and per (client service, server service) pair, the analysis takes the sample
//! with the smallest round trip and shifts every server span of that pair by that one
//! offset; the uncertainty is half its round trip. Each trace is corrected with its own
//! samples only, so that a trace's corrected times do not depend on which other traces
//! were analysed or in what order (the analysis streams traces, and every writer corrects
//! a trace the same way), and so that clocks drifting apart over hours are not corrected
//! with an old sample. The summary ([`ClockOffset`]) aggregates the pairs over all traces:
//! the smallest round trip seen overall, and how many samples there were.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::SpanRecord;

/// The attribute with a sample's offset (server clock minus client clock, microseconds).
pub(crate) const OFFSET_ATTRIBUTE: &str = "tracewire.clock.offset_us";
/// The attribute with a sample's round trip (microseconds).
pub(crate) const RTT_ATTRIBUTE: &str = "tracewire.net.rtt_us";

/// One clock sample: an exchange's offset and round trip, in nanoseconds.
///
/// ```
/// use tracewire_collector::ClockSample;
///
/// // The server is 50 ms ahead; 300 us out, 100 us back: the estimate is 100 us high,
/// // within half the 400 us round trip.
/// let s = ClockSample::exchange(50_000_000, 300_000, 100_000);
/// assert_eq!(s.offset_ns, 50_100_000);
/// assert_eq!(s.uncertainty_ns(), Some(200_000));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// The server's clock minus the client's.
    pub offset_ns: i64,
    /// The round trip (network time), when the span recorded it.
    pub rtt_ns: Option<i64>,
}

impl ClockSample {
    /// The sample an exchange gives when the server's clock is `offset_ns` ahead and the
    /// request takes `out_ns`, the response `back_ns` (the four-timestamp method).
    pub fn exchange(offset_ns: i64, out_ns: i64, back_ns: i64) -> Self {
        // t0 = 0 (client), t1 = out + offset (server), t2 = t1 (no server time: it cancels),
        // t3 = out + back (client).
        let (t0, t1, t3) = (0, out_ns + offset_ns, out_ns + back_ns);
        let t2 = t1;
        Self { offset_ns: ((t1 - t0) + (t2 - t3)) / 2, rtt_ns: Some((t3 - t0) - (t2 - t1)) }
    }

    /// The sample a span carries (`tracewire.clock.offset_us`, `tracewire.net.rtt_us`).
    pub fn of_span(span: &SpanRecord) -> Option<Self> {
        let us = |key: &str| span.attributes.get(key).and_then(|v| v.trim().parse::<i64>().ok());
        let offset = us(OFFSET_ATTRIBUTE)?;
        Some(Self {
            offset_ns: offset.saturating_mul(1000),
            rtt_ns: us(RTT_ATTRIBUTE).filter(|r| *r >= 0).map(|r| r.saturating_mul(1000)),
        })
    }

    /// The bound on the offset's error: half the round trip (unknown without one).
    pub fn uncertainty_ns(&self) -> Option<i64> {
        self.rtt_ns.map(|r| r / 2)
    }

    /// Whether this sample is better than `other`: a smaller round trip (a known one
    /// beats an unknown one; the first of equals stays).
    fn better_than(&self, other: &Self) -> bool {
        match (self.rtt_ns, other.rtt_ns) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The best of `samples`: the one with the smallest round trip (the first of equals).
///
/// ```
/// use tracewire_collector::{ClockSample, best_sample};
///
/// let samples = [
///     ClockSample::exchange(50_000_000, 900_000, 100_000), // off by 400 us
///     ClockSample::exchange(50_000_000, 60_000, 40_000),   // off by 10 us
///     ClockSample::exchange(50_000_000, 100_000, 300_000), // off by -100 us
/// ];
/// assert_eq!(best_sample(samples), Some(samples[1]));
/// ```
pub fn best_sample(samples: impl IntoIterator<Item = ClockSample>) -> Option<ClockSample> {
    samples.into_iter().fold(None, |best, s| match best {
        Some(b) if !s.better_than(&b) => Some(b),
        _ => Some(s),
    })
}

/// One pair of services in the summary (`summary.json`'s `clock`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClockOffset {
    /// The client's service.
    pub from: String,
    /// The server's service.
    pub to: String,
    /// `to`'s clock minus `from`'s, from the sample with the smallest round trip.
    pub offset_ms: f64,
    /// Half that sample's round trip (`null` when the spans did not record it).
    pub uncertainty_ms: Option<f64>,
    /// Samples seen for the pair.
    pub samples: usize,
}

/// The estimate of one pair within one trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PairEstimate {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) best: ClockSample,
    pub(crate) samples: usize,
}

/// The service a call's server spans belong to: that of its `rpc.dispatch` (or
/// `rpc.queue`) child, else the one other service among its children, if there is one.
/// A relay's spans under the call (`relay.forward`) are not the server's.
fn server_service<'a>(spans: &'a [SpanRecord], call: usize, kids: &[usize]) -> Option<&'a str> {
    let client = spans[call].service.as_str();
    let other = kids.iter().map(|&k| &spans[k]).filter(|s| s.service != client);
    if let Some(s) = other.clone().find(|s| matches!(s.stage(), "rpc.dispatch" | "rpc.queue")) {
        return Some(s.service.as_str());
    }
    let mut services = other.map(|s| s.service.as_str());
    let first = services.next()?;
    services.all(|s| s == first).then_some(first)
}

/// The estimates of one trace: per (client service, server service) pair with a sample,
/// the best sample and the count. `tree` gives the children of a span.
pub(crate) fn estimates(spans: &[SpanRecord], tree: &crate::analysis::Tree) -> Vec<PairEstimate> {
    let mut pairs: Vec<PairEstimate> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let Some(sample) = ClockSample::of_span(s) else { continue };
        let kids = tree.children(i);
        if kids.is_empty() {
            continue;
        }
        let Some(to) = server_service(spans, i, kids) else { continue };
        let from = s.service.as_str();
        match pairs.iter_mut().find(|p| p.from == from && p.to == to) {
            Some(p) => {
                p.samples += 1;
                if sample.better_than(&p.best) {
                    p.best = sample;
                }
            }
            None => pairs.push(PairEstimate { from: from.to_owned(), to: to.to_owned(), best: sample, samples: 1 }),
        }
    }
    pairs
}

/// The offset (ns) of the pair `from` (client) -> `to` (server), if it has an estimate.
pub(crate) fn offset(pairs: &[PairEstimate], from: &str, to: &str) -> Option<i64> {
    pairs.iter().find(|p| p.from == from && p.to == to).map(|p| p.best.offset_ns)
}

/// Whether `a` and `b` are a pair with a measured offset (either way round).
pub(crate) fn measured(pairs: &[PairEstimate], a: &str, b: &str) -> bool {
    pairs.iter().any(|p| (p.from == a && p.to == b) || (p.from == b && p.to == a))
}

/// The pairs of many traces: per pair the best sample overall and the count.
#[derive(Debug, Default)]
pub(crate) struct ClockBook {
    pairs: BTreeMap<String, BTreeMap<String, (ClockSample, usize)>>,
}

impl ClockBook {
    /// Adds one trace's estimates.
    pub(crate) fn add(&mut self, estimates: Vec<PairEstimate>) {
        for e in estimates {
            let to = self.pairs.entry(e.from).or_default();
            match to.get_mut(&e.to) {
                Some((best, n)) => {
                    *n += e.samples;
                    if e.best.better_than(best) {
                        *best = e.best;
                    }
                }
                None => {
                    to.insert(e.to, (e.best, e.samples));
                }
            }
        }
    }

    /// The summary: one entry per pair, by `from` then `to`.
    pub(crate) fn summary(&self) -> Vec<ClockOffset> {
        #[allow(clippy::cast_precision_loss)]
        let ms = |ns: i64| ns as f64 / 1e6;
        self.pairs
            .iter()
            .flat_map(|(from, to)| {
                to.iter().map(move |(to, (best, n))| ClockOffset {
                    from: from.clone(),
                    to: to.clone(),
                    offset_ms: ms(best.offset_ns),
                    uncertainty_ms: best.uncertainty_ns().map(ms),
                    samples: *n,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator (xorshift) for the synthetic delays.
    fn delays(seed: u64, n: usize) -> Vec<(i64, i64)> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i64::try_from(x % 5_000_000).unwrap_or(0) + 20_000
        };
        (0..n).map(|_| (next(), next())).collect()
    }

    #[test]
    fn every_sample_is_within_half_its_round_trip() {
        for offset in [50_000_000, -50_000_000, 0, 1_234_567] {
            for (out, back) in delays(7, 500) {
                let s = ClockSample::exchange(offset, out, back);
                let error = (s.offset_ns - offset).abs();
                assert!(error <= s.uncertainty_ns().unwrap_or(0), "{s:?}: error {error} ns");
            }
        }
    }

    #[test]
    fn the_estimate_is_the_sample_with_the_smallest_round_trip() {
        // Asymmetric delays: each sample is biased by (out - back) / 2; the best is the one
        // with the smallest out + back, and its error is the smallest bound.
        let samples: Vec<ClockSample> =
            delays(42, 64).into_iter().map(|(out, back)| ClockSample::exchange(50_000_000, out, back)).collect();
        let best = best_sample(samples.iter().copied()).unwrap();
        let min_rtt = samples.iter().filter_map(|s| s.rtt_ns).min().unwrap();
        assert_eq!(best.rtt_ns, Some(min_rtt));
        assert!((best.offset_ns - 50_000_000).abs() <= min_rtt / 2);
        // A sample without a round trip never wins over one with it.
        let unknown = ClockSample { offset_ns: 50_000_000, rtt_ns: None };
        assert_eq!(best_sample([unknown, best]), Some(best));
        assert_eq!(best_sample([unknown]), Some(unknown));
    }

    #[test]
    fn the_book_keeps_the_best_sample_per_pair_and_counts_them() {
        let pair = |from: &str, to: &str, out: i64, back: i64, samples: usize| PairEstimate {
            from: from.into(),
            to: to.into(),
            best: ClockSample::exchange(50_000_000, out, back),
            samples,
        };
        let mut book = ClockBook::default();
        book.add(vec![pair("client", "server", 300_000, 100_000, 3)]);
        book.add(vec![pair("client", "server", 50_000, 30_000, 2), pair("client", "relay", 10_000, 10_000, 1)]);
        book.add(vec![pair("client", "server", 500_000, 500_000, 1)]);
        let summary = book.summary();
        assert_eq!(summary.len(), 2);
        assert_eq!((summary[0].to.as_str(), summary[0].samples), ("relay", 1));
        let server = &summary[1];
        assert_eq!((server.from.as_str(), server.to.as_str(), server.samples), ("client", "server", 6));
        assert!((server.offset_ms - 50.01).abs() < 1e-9, "{server:?}");
        assert_eq!(server.uncertainty_ms, Some(0.04));
    }
}
