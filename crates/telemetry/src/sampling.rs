//! Sampling decisions of tracewire's layer, made as the SDK's samplers make them.

use tracewire_context::TraceId;

use crate::config::Sampler;

/// Whether a span is sampled, given its trace id and, when it has one, its parent's flag.
pub(crate) fn decide(sampler: Sampler, trace_id: TraceId, parent_sampled: Option<bool>) -> bool {
    match sampler {
        Sampler::AlwaysOn => true,
        Sampler::AlwaysOff => false,
        Sampler::TraceIdRatio(r) => ratio(r, trace_id),
        Sampler::ParentBasedAlwaysOff => parent_sampled.unwrap_or(false),
        Sampler::ParentBasedTraceIdRatio(r) => parent_sampled.unwrap_or_else(|| ratio(r, trace_id)),
        // `ParentBasedAlwaysOn` and any later default.
        _ => parent_sampled.unwrap_or(true),
    }
}

/// The SDK's `TraceIdRatioBased` decision, bit for bit: the trace id's low 63 bits against
/// the ratio scaled to 2^63.
fn ratio(r: f64, trace_id: TraceId) -> bool {
    if r >= 1.0 {
        return true;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let bound = (r.max(0.0) * (1u64 << 63) as f64) as u64;
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_sampling_matches_the_sdk() {
        use opentelemetry::trace::{SpanKind, TraceId as OtelTraceId};
        use opentelemetry_sdk::trace::{Sampler as Sdk, SamplingDecision, ShouldSample};
        for r in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let sdk = Sdk::TraceIdRatioBased(r);
            for _ in 0..2000 {
                let id = TraceId::random();
                let theirs = sdk
                    .should_sample(None, OtelTraceId::from_bytes(id.to_bytes()), "x", &SpanKind::Internal, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample;
                assert_eq!(ratio(r, id), theirs, "ratio {r}, trace {id}");
            }
        }
    }

    #[test]
    fn parent_based_samplers_follow_the_parent() {
        let id = TraceId::random();
        for s in [Sampler::ParentBasedAlwaysOn, Sampler::ParentBasedAlwaysOff, Sampler::ParentBasedTraceIdRatio(0.5)] {
            assert!(decide(s, id, Some(true)));
            assert!(!decide(s, id, Some(false)));
        }
        assert!(decide(Sampler::ParentBasedAlwaysOn, id, None));
        assert!(!decide(Sampler::ParentBasedAlwaysOff, id, None));
        assert!(decide(Sampler::AlwaysOn, id, Some(false)));
        assert!(!decide(Sampler::AlwaysOff, id, Some(true)));
    }
}
