//! Replays the checked-in fuzz corpus (`fuzz/corpus/otlp_export/`) through the check the
//! cargo-fuzz target runs (`fuzz/src/otlp.rs`, included by path), on stable, in the normal
//! test run.

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/otlp.rs"]
mod checks;

#[test]
fn otlp_export_corpus_replays() {
    tracewire_testkit::replay_corpus("otlp_export", checks::otlp_export);
}
