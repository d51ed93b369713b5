//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through the same checks the
//! cargo-fuzz targets run (`fuzz/src/relay.rs`, included by path), on stable, in the
//! normal test run: every input the fuzzer kept, and every crash fixed, stays covered.

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/relay.rs"]
mod checks;

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: the corpus is missing", dir.display());
    for path in files {
        let data = std::fs::read(&path).unwrap();
        assert!(std::panic::catch_unwind(|| check(&data)).is_ok(), "{} fails the {target} check", path.display());
    }
}

#[test]
fn relay_frames_corpus_replays() {
    replay("relay_frames", checks::frames);
}
