//! Framing faults: each ends in a typed error, never in corrupted plaintext.

use tracewire_relay::framing::pair_for_tests;
use tracewire_relay::{FrameError, MAX_RECORD_PLAINTEXT, NoiseConfig, Pattern, Suite};

fn message(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
}

#[test]
fn messages_round_trip_across_records_for_every_suite() {
    for pattern in [Pattern::Ik, Pattern::Xx] {
        for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
            let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig { pattern, suite }, 64, 1 << 20).unwrap();
            for len in [0, 1, MAX_RECORD_PLAINTEXT, MAX_RECORD_PLAINTEXT + 1, 3 * MAX_RECORD_PLAINTEXT + 7] {
                let m = message(len);
                let frames = seal.seal(&m, "").unwrap();
                assert_eq!(frames.len(), len.div_ceil(MAX_RECORD_PLAINTEXT).max(1));
                assert!(frames.iter().all(|f| f.record.len() <= MAX_RECORD_PLAINTEXT + 17));
                let mut got = Vec::new();
                for f in frames {
                    got.extend(open.push(f).unwrap().messages);
                }
                assert_eq!(got, vec![m], "{pattern:?} {suite:?} {len}");
            }
            open.finish().unwrap();
        }
    }
}

#[test]
fn records_are_reordered_within_the_window() {
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let m = message(4 * MAX_RECORD_PLAINTEXT);
    let mut frames = seal.seal(&m, "").unwrap();
    frames.reverse();
    let mut got = Vec::new();
    let mut reordered = 0;
    for f in frames {
        let o = open.push(f).unwrap();
        reordered = reordered.max(o.reordered);
        got.extend(o.messages);
    }
    assert_eq!(got, vec![m]);
    assert_eq!(reordered, 3);
}

#[test]
fn duplicates_and_replays_are_rejected() {
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let frames = seal.seal(b"once", "").unwrap();
    open.push(frames[0].clone()).unwrap();
    assert_eq!(open.push(frames[0].clone()), Err(FrameError::Duplicate(0)));
    // A duplicate of a record still waiting in the window.
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let frames = seal.seal(&message(3 * MAX_RECORD_PLAINTEXT), "").unwrap();
    open.push(frames[2].clone()).unwrap();
    assert_eq!(open.push(frames[2].clone()), Err(FrameError::Duplicate(2)));
}

#[test]
fn out_of_window_sequence_numbers_are_rejected() {
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 2, 1 << 20).unwrap();
    let frames = seal.seal(&message(3 * MAX_RECORD_PLAINTEXT), "").unwrap();
    assert_eq!(open.push(frames[2].clone()), Err(FrameError::OutOfWindow { seq: 2, expected: 0, limit: 2 }));
}

#[test]
fn tampered_truncated_or_foreign_records_fail_authentication() {
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let mut f = seal.seal(b"secret", "").unwrap().remove(0);
    let mut bytes = f.record.to_vec();
    bytes[0] ^= 1;
    f.record = bytes.into();
    assert_eq!(open.push(f), Err(FrameError::DecryptFailed(0)));

    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let mut f = seal.seal(b"secret", "").unwrap().remove(0);
    f.record.truncate(f.record.len() - 1);
    assert_eq!(open.push(f), Err(FrameError::DecryptFailed(0)));

    // A record sealed in another session (another key).
    let ((mut other, _), _) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let (_, (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let f = other.seal(b"secret", "").unwrap().remove(0);
    assert_eq!(open.push(f), Err(FrameError::DecryptFailed(0)));

    // A record with another record's sequence number (its nonce) fails too.
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let frames = seal.seal(&message(2 * MAX_RECORD_PLAINTEXT), "").unwrap();
    let mut swapped = frames[1].clone();
    swapped.seq = 0;
    assert_eq!(open.push(swapped), Err(FrameError::DecryptFailed(0)));
}

/// `last_fragment` is cleartext: unless it is authenticated, whoever forwards the frames
/// could split a message in two, delivering a prefix of it as a whole message. The flag is
/// sealed in the record and must agree with the cleartext one.
#[test]
fn a_flipped_last_fragment_flag_fails_authentication() {
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let mut frames = seal.seal(&message(2 * MAX_RECORD_PLAINTEXT), "").unwrap();
    frames[0].last_fragment = true;
    assert_eq!(open.push(frames[0].clone()), Err(FrameError::DecryptFailed(0)));

    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let mut frames = seal.seal(&message(2 * MAX_RECORD_PLAINTEXT), "").unwrap();
    frames[1].last_fragment = false;
    assert!(open.push(frames[0].clone()).unwrap().messages.is_empty());
    assert_eq!(open.push(frames[1].clone()), Err(FrameError::DecryptFailed(1)));
}

#[test]
fn oversized_messages_and_records_are_rejected() {
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 100_000).unwrap();
    let frames = seal.seal(&message(2 * MAX_RECORD_PLAINTEXT), "").unwrap();
    open.push(frames[0].clone()).unwrap();
    assert_eq!(open.push(frames[1].clone()), Err(FrameError::TooLarge(100_000)));

    let ((_, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let huge = tracewire_proto::v1::Data {
        seq: 0,
        record: vec![0u8; 70_000].into(),
        last_fragment: true,
        traceparent: String::new(),
    };
    assert_eq!(open.push(huge), Err(FrameError::RecordTooLarge(0)));
}

#[test]
fn a_stream_ending_inside_a_message_is_truncated() {
    let ((mut seal, _), (_, mut open)) = pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    let frames = seal.seal(&message(2 * MAX_RECORD_PLAINTEXT), "").unwrap();
    open.push(frames[0].clone()).unwrap();
    assert_eq!(open.finish(), Err(FrameError::Truncated));
}

#[test]
fn both_directions_are_independent() {
    let ((mut c_seal, mut c_open), (mut s_seal, mut s_open)) =
        pair_for_tests(NoiseConfig::default(), 8, 1 << 20).unwrap();
    for f in c_seal.seal(b"to server", "").unwrap() {
        assert_eq!(s_open.push(f).unwrap().messages, vec![b"to server".to_vec()]);
    }
    for f in s_seal.seal(b"to client", "").unwrap() {
        assert_eq!(c_open.push(f).unwrap().messages, vec![b"to client".to_vec()]);
    }
}
