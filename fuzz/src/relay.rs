//! Fuzz check of the relay frame decoder with reassembly (`tracewire_relay::Opener`).
//! Shared with `crates/relay/tests/fuzz_corpus.rs`, which includes this file by path.

use prost::Message;
use tracewire_proto::v1::Data;
use tracewire_relay::framing::pair_for_tests;
use tracewire_relay::{MAX_RECORD_PLAINTEXT, NoiseConfig};

/// Reads the input a byte at a time; zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The plaintext of message `i`: a pattern that differs per message and per position.
pub fn message(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| u8::try_from((j * 31 + i * 7) % 251).unwrap_or(0)).collect()
}

/// Seals a few messages (sizes from the input, up to three records each), then applies the
/// input's schedule of faults to the frames (swap, duplicate, drop, truncate a record, flip
/// its last-fragment flag, flip a bit, change its sequence number, move it to the end) and
/// feeds them to an `Opener`. Invariant: whatever is delivered before an error (or the end)
/// is a prefix of the messages sent, byte for byte; corrupted plaintext is never delivered.
/// With the first byte odd, the rest is instead decoded as raw `Data` frames (any bytes):
/// nothing may panic.
pub fn frames(data: &[u8]) {
    let mut input = Bytes(data);
    let mode = input.next();
    let window = 1 + usize::from(input.next() % 8);
    let Ok(((mut seal, _), (_, mut open))) = pair_for_tests(NoiseConfig::default(), window, 1 << 20) else {
        panic!("handshake failed");
    };
    if mode % 2 == 1 {
        for chunk in input.0.split(|b| *b == 0xff) {
            if let Ok(frame) = Data::decode(chunk)
                && open.push(frame).is_err()
            {
                return;
            }
        }
        let _ = open.finish();
        return;
    }
    let count = 1 + usize::from(input.next() % 4);
    let messages: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let n = usize::from(u16::from_le_bytes([input.next(), input.next()]));
            message(i, n * 3 % (3 * MAX_RECORD_PLAINTEXT + 100))
        })
        .collect();
    let mut frames = Vec::new();
    for m in &messages {
        frames.extend(seal.seal(m, "").unwrap_or_else(|e| panic!("seal: {e}")));
    }
    while !input.is_empty() && !frames.is_empty() {
        let (op, i) = (input.next() % 8, usize::from(input.next()) % frames.len());
        match op {
            0 => {
                let j = (i + 1) % frames.len();
                frames.swap(i, j);
            }
            1 => {
                let at = (i + usize::from(input.next())) % (frames.len() + 1);
                let copy = frames[i].clone();
                frames.insert(at, copy);
            }
            2 => {
                frames.remove(i);
            }
            3 => {
                let keep = usize::from(u16::from_le_bytes([input.next(), input.next()])) % (frames[i].record.len() + 1);
                frames[i].record.truncate(keep);
            }
            4 => frames[i].last_fragment = !frames[i].last_fragment,
            5 => {
                let mut r = frames[i].record.to_vec();
                if !r.is_empty() {
                    let at = usize::from(input.next()) * 257 % r.len();
                    r[at] ^= 1 << (input.next() % 8);
                }
                frames[i].record = r.into();
            }
            6 => frames[i].seq ^= 1 << (input.next() % 8),
            _ => {
                let f = frames.remove(i);
                frames.push(f);
            }
        }
    }
    let mut delivered = Vec::new();
    for f in frames {
        match open.push(f) {
            Ok(opened) => delivered.extend(opened.messages),
            Err(e) => {
                let _ = e.reset_reason();
                break;
            }
        }
    }
    assert!(delivered.len() <= messages.len(), "more messages delivered than sent");
    for (i, got) in delivered.iter().enumerate() {
        assert!(*got == messages[i], "message {i} corrupted: {} bytes vs {}", got.len(), messages[i].len());
    }
}
