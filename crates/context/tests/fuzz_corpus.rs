//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through the same checks the
//! cargo-fuzz targets run (`fuzz/src/context.rs`, included by path), on stable, in the
//! normal test run: every input the fuzzer kept, and every crash fixed, stays covered.

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/context.rs"]
mod checks;

use tracewire_testkit::replay_corpus as replay;

#[test]
fn traceparent_corpus_replays() {
    replay("traceparent", checks::traceparent);
}

#[test]
fn tracestate_corpus_replays() {
    replay("tracestate", checks::tracestate);
}

#[test]
fn baggage_corpus_replays() {
    replay("baggage", checks::baggage);
}
