//! Property: whatever a relay (or the network) does to the frames of a session, reordering,
//! duplicating, truncating or dropping them, the receiver ends either in exact delivery of
//! every message or in a typed `FrameError` (a Reset reason); the messages it delivered
//! before an error are exactly the first ones sent. Corrupted plaintext is never delivered.
//!
//! The faults apply to the frames of a few messages (sizes spanning several 60 KiB records);
//! one more message follows them untouched, as the stream goes on after a fault in a real
//! session (a cut exactly at the end of a stream is the sender stopping, which the transport
//! reports, not framing).

use proptest::prelude::*;
use tracewire_proto::v1::{Data, ResetReason};
use tracewire_relay::framing::pair_for_tests;
use tracewire_relay::{FrameError, MAX_RECORD_PLAINTEXT, NoiseConfig};

#[derive(Debug, Clone)]
enum Fault {
    /// Swap a frame with the next one (a reorder within any window of 2 or more).
    SwapNext(usize),
    /// Move a frame to the end of the faulty part (beyond the window when enough follow).
    MoveLater(usize),
    /// Insert a copy of a frame at another position.
    Duplicate(usize, usize),
    /// Cut a record's bytes (keep a fraction of them).
    Truncate(usize, u8),
    /// Drop a frame.
    Drop(usize),
    /// Flip the cleartext last-fragment flag.
    FlipLast(usize),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        any::<usize>().prop_map(Fault::SwapNext),
        any::<usize>().prop_map(Fault::MoveLater),
        (any::<usize>(), any::<usize>()).prop_map(|(i, at)| Fault::Duplicate(i, at)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, keep)| Fault::Truncate(i, keep)),
        any::<usize>().prop_map(Fault::Drop),
        any::<usize>().prop_map(Fault::FlipLast),
    ]
}

fn message(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| u8::try_from((j * 31 + i * 7) % 251).unwrap()).collect()
}

/// Applies `fault` to `frames`; returns whether it can only have reordered within `window`.
fn apply(frames: &mut Vec<Data>, fault: &Fault, window: usize) -> bool {
    let n = frames.len();
    match *fault {
        Fault::SwapNext(i) => {
            if n < 2 {
                return true;
            }
            let i = i % (n - 1);
            frames.swap(i, i + 1);
            window >= 2
        }
        Fault::MoveLater(i) => {
            let i = i % n;
            let f = frames.remove(i);
            frames.push(f);
            // Benign while every frame that now overtakes it still fits in the window.
            n - 1 - i < window
        }
        Fault::Duplicate(i, at) => {
            let copy = frames[i % n].clone();
            frames.insert(at % (n + 1), copy);
            false
        }
        Fault::Truncate(i, keep) => {
            let f = &mut frames[i % n];
            let len = f.record.len();
            f.record.truncate(len * usize::from(keep) / 256);
            false
        }
        Fault::Drop(i) => {
            frames.remove(i % n);
            false
        }
        Fault::FlipLast(i) => {
            let f = &mut frames[i % n];
            f.last_fragment = !f.last_fragment;
            false
        }
    }
}

struct Outcome {
    delivered: Vec<Vec<u8>>,
    error: Option<FrameError>,
}

fn run(sizes: &[usize], faults: &[Fault], window: usize) -> (Vec<Vec<u8>>, Outcome, bool) {
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), window, 1 << 20).unwrap();
    let messages: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, n)| message(i, *n)).collect();
    let mut frames: Vec<Data> = messages.iter().flat_map(|m| seal.seal(m, "").unwrap()).collect();
    let mut benign = true;
    for f in faults {
        if frames.is_empty() {
            break;
        }
        benign &= apply(&mut frames, f, window);
    }
    let sentinel = message(sizes.len(), 10);
    frames.extend(seal.seal(&sentinel, "").unwrap());
    let mut all = messages;
    all.push(sentinel);

    let mut outcome = Outcome { delivered: Vec::new(), error: None };
    for f in frames {
        match open.push(f) {
            Ok(o) => outcome.delivered.extend(o.messages),
            Err(e) => {
                outcome.error = Some(e);
                break;
            }
        }
    }
    if outcome.error.is_none() {
        outcome.error = open.finish().err();
    }
    (all, outcome, benign)
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![
            0..64usize,
            (MAX_RECORD_PLAINTEXT - 2)..(MAX_RECORD_PLAINTEXT + 2),
            0..(3 * MAX_RECORD_PLAINTEXT + 7)
        ],
        1..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn faults_end_in_exact_delivery_or_a_typed_error(
        sizes in sizes(),
        faults in proptest::collection::vec(fault(), 0..5),
        window in 1usize..6,
    ) {
        let (sent, out, benign) = run(&sizes, &faults, window);
        match &out.error {
            None => prop_assert!(out.delivered == sent, "no error, but delivery was not exact ({faults:?})"),
            Some(e) => {
                prop_assert!(e.reset_reason() != ResetReason::Unspecified);
                prop_assert!(out.delivered.len() <= sent.len());
                for (i, m) in out.delivered.iter().enumerate() {
                    prop_assert!(*m == sent[i], "message {} delivered corrupted before {:?} ({:?})", i, e, faults);
                }
            }
        }
        // (Two benign reorders can add up to one beyond the window.)
        if benign && faults.len() <= 1 {
            prop_assert!(out.error.is_none(), "a reorder within the window failed: {:?} ({faults:?})", out.error);
        }
    }

    #[test]
    fn every_single_harmful_fault_is_detected(sizes in sizes(), fault in fault(), window in 1usize..6) {
        let (sent, out, benign) = run(&sizes, std::slice::from_ref(&fault), window);
        if benign {
            prop_assert!(out.error.is_none() && out.delivered == sent);
        } else {
            prop_assert!(out.error.is_some(), "{fault:?} went unnoticed (window {window})");
        }
    }
}
