//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through the same checks the
//! cargo-fuzz targets run (`fuzz/src/relay.rs`, included by path), on stable, in the
//! normal test run: every input the fuzzer kept, and every crash fixed, stays covered.

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/relay.rs"]
mod checks;

use tracewire_testkit::replay_corpus as replay;

#[test]
fn relay_frames_corpus_replays() {
    replay("relay_frames", checks::frames);
}
