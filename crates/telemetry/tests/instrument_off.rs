//! With the `instrument` feature off, stage spans compile to nothing:
//! `cargo test -p tracewire-telemetry --no-default-features --test instrument_off`.
#![cfg(not(feature = "instrument"))]

use tracewire_telemetry::{Queued, Stage, stage_span};

#[test]
fn stage_spans_are_disabled_and_fields_not_evaluated() {
    let evaluated = std::cell::Cell::new(false);
    let span = stage_span!(
        ProcessSpawn,
        process.pid = {
            evaluated.set(true);
            1
        }
    );
    assert!(span.is_disabled());
    assert!(!evaluated.get(), "field expressions are not evaluated");
    let q = Queued::new(Stage::RpcQueue, 5);
    assert!(q.enqueued_at().is_none());
    assert_eq!(q.into_inner(), 5);
}
