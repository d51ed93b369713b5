//! Framing: a message is split into records of at most 60 KiB, each sealed with its
//! sequence number as the nonce; the receiver reorders within a bounded window, decrypts,
//! and reassembles within a size cap. Every fault is a typed error that maps to a Reset
//! reason; corrupted plaintext is never delivered.
//!
//! A record's plaintext starts with one flag byte (1 on the last fragment of a message,
//! else 0), so message boundaries are authenticated: the cleartext `last_fragment` of a
//! `Data` frame (which the relay reads for its spans) must agree with it, or the record
//! fails authentication.

use std::collections::BTreeMap;
use std::sync::Arc;

use snow::StatelessTransportState;
use tracewire_proto::v1::{Data, ResetReason};

/// Largest plaintext per record (Noise messages are at most 65535 bytes with the tag).
pub const MAX_RECORD_PLAINTEXT: usize = 60 * 1024;
const TAG: usize = 16;
/// The authenticated flag byte in front of each record's plaintext.
const FLAG: usize = 1;
const LAST: u8 = 1;
const MORE: u8 = 0;
/// The largest valid sealed record.
const MAX_RECORD: usize = FLAG + MAX_RECORD_PLAINTEXT + TAG;

/// Why the receiving side gives up on a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A sequence number seen before: a duplicate or a replay.
    #[error("record {0} was already received (duplicate or replay)")]
    Duplicate(u64),
    /// A sequence number beyond the reorder window.
    #[error("record {seq} is outside the reorder window (expected {expected}..{limit})")]
    OutOfWindow {
        /// The record's sequence number.
        seq: u64,
        /// The next expected one.
        expected: u64,
        /// The first one beyond the window.
        limit: u64,
    },
    /// A record failed authentication (tampered, truncated, under another key, or with a
    /// cleartext last-fragment flag that disagrees with the sealed one).
    #[error("record {0} failed authentication")]
    DecryptFailed(u64),
    /// A message grew beyond the configured cap.
    #[error("message exceeds {0} bytes")]
    TooLarge(usize),
    /// A record is larger than any valid one.
    #[error("record {0} is larger than a Noise message")]
    RecordTooLarge(u64),
    /// The stream ended in the middle of a message.
    #[error("the stream ended in the middle of a message")]
    Truncated,
}

impl FrameError {
    /// The Reset reason to send the peer.
    pub fn reset_reason(&self) -> ResetReason {
        match self {
            Self::Duplicate(_) => ResetReason::Duplicate,
            Self::OutOfWindow { .. } => ResetReason::OutOfWindow,
            Self::DecryptFailed(_) => ResetReason::DecryptFailed,
            Self::TooLarge(_) | Self::RecordTooLarge(_) => ResetReason::TooLarge,
            Self::Truncated => ResetReason::Protocol,
        }
    }
}

/// The sending half: seals messages into `Data` frames.
pub struct Sealer {
    transport: Arc<StatelessTransportState>,
    next_seq: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("next_seq", &self.next_seq).finish_non_exhaustive()
    }
}

impl Sealer {
    pub(crate) fn new(transport: Arc<StatelessTransportState>) -> Self {
        Self { transport, next_seq: 0 }
    }

    /// Splits and seals one message; the last frame has `last_fragment` set. An empty
    /// message is one empty record.
    ///
    /// # Errors
    /// [`FrameError::RecordTooLarge`] never happens for records this function makes; a
    /// cipher failure is reported as [`FrameError::DecryptFailed`] of the record.
    pub fn seal(&mut self, message: &[u8], traceparent: &str) -> Result<Vec<Data>, FrameError> {
        let chunks: Vec<&[u8]> =
            if message.is_empty() { vec![&[][..]] } else { message.chunks(MAX_RECORD_PLAINTEXT).collect() };
        let last = chunks.len() - 1;
        let mut out = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.into_iter().enumerate() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let mut plain = Vec::with_capacity(FLAG + chunk.len());
            plain.push(if i == last { LAST } else { MORE });
            plain.extend_from_slice(chunk);
            let mut record = vec![0u8; plain.len() + TAG];
            let n =
                self.transport.write_message(seq, &plain, &mut record).map_err(|_| FrameError::DecryptFailed(seq))?;
            record.truncate(n);
            out.push(Data {
                seq,
                record: record.into(),
                last_fragment: i == last,
                traceparent: traceparent.to_owned(),
            });
        }
        Ok(out)
    }
}

/// The receiving half: reorders, opens and reassembles.
pub struct Opener {
    transport: Arc<StatelessTransportState>,
    next_seq: u64,
    window: u64,
    pending: BTreeMap<u64, Data>,
    message: Vec<u8>,
    max_message: usize,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("next_seq", &self.next_seq)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// What [`Opener::push`] produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Complete messages, in order.
    pub messages: Vec<Vec<u8>>,
    /// How many records waited in the reorder window before this one filled the gap.
    pub reordered: usize,
}

impl Opener {
    pub(crate) fn new(transport: Arc<StatelessTransportState>, window: usize, max_message: usize) -> Self {
        Self {
            transport,
            next_seq: 0,
            window: window.max(1) as u64,
            pending: BTreeMap::new(),
            message: Vec::new(),
            max_message,
        }
    }

    /// Takes one frame; returns every message it completes.
    ///
    /// # Errors
    /// A [`FrameError`]; the session must then be reset (nothing after it is trusted).
    pub fn push(&mut self, data: Data) -> Result<Opened, FrameError> {
        let seq = data.seq;
        if seq < self.next_seq || self.pending.contains_key(&seq) {
            return Err(FrameError::Duplicate(seq));
        }
        let limit = self.next_seq.saturating_add(self.window);
        if seq >= limit {
            return Err(FrameError::OutOfWindow { seq, expected: self.next_seq, limit });
        }
        if data.record.len() > MAX_RECORD {
            return Err(FrameError::RecordTooLarge(seq));
        }
        self.pending.insert(seq, data);
        let mut out = Opened { reordered: self.pending.len().saturating_sub(1), ..Opened::default() };
        while let Some(d) = self.pending.remove(&self.next_seq) {
            let mut plain = vec![0u8; d.record.len()];
            let n = self
                .transport
                .read_message(d.seq, &d.record, &mut plain)
                .map_err(|_| FrameError::DecryptFailed(d.seq))?;
            // The authenticated flag must say what the cleartext one says.
            let (flag, body) = match plain.get(..n) {
                Some([flag, body @ ..]) if *flag == LAST || *flag == MORE => (*flag, body),
                _ => return Err(FrameError::DecryptFailed(d.seq)),
            };
            if (flag == LAST) != d.last_fragment {
                return Err(FrameError::DecryptFailed(d.seq));
            }
            self.next_seq += 1;
            if self.message.len() + body.len() > self.max_message {
                return Err(FrameError::TooLarge(self.max_message));
            }
            self.message.extend_from_slice(body);
            if d.last_fragment {
                out.messages.push(std::mem::take(&mut self.message));
            }
        }
        Ok(out)
    }

    /// Checks that the stream did not end inside a message.
    ///
    /// # Errors
    /// [`FrameError::Truncated`] when it did.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.message.is_empty() && self.pending.is_empty() { Ok(()) } else { Err(FrameError::Truncated) }
    }
}

/// One end's halves.
pub type Halves = (Sealer, Opener);

/// A connected pair of sealer/opener states from one finished handshake (tests, benches).
#[doc(hidden)]
pub fn pair_for_tests(
    config: crate::NoiseConfig,
    window: usize,
    max_message: usize,
) -> Result<(Halves, Halves), crate::RelayError> {
    let server = crate::Keypair::generate()?;
    let params: snow::params::NoiseParams =
        config.protocol_name().parse().map_err(|e: snow::Error| crate::RelayError::Handshake(e.to_string()))?;
    let client = crate::Keypair::generate()?;
    let prologue = crate::noise::prologue("test");
    let err = |e: snow::Error| crate::RelayError::Handshake(e.to_string());
    let mut b = snow::Builder::new(params.clone())
        .local_private_key(&client.private)
        .map_err(err)?
        .prologue(&prologue)
        .map_err(err)?;
    if config.pattern == crate::Pattern::Ik {
        b = b.remote_public_key(&server.public).map_err(err)?;
    }
    let mut i = b.build_initiator().map_err(err)?;
    let mut r = snow::Builder::new(params)
        .local_private_key(&server.private)
        .map_err(err)?
        .prologue(&prologue)
        .map_err(err)?
        .build_responder()
        .map_err(err)?;
    let (mut buf, mut scratch) = (vec![0u8; 65535], vec![0u8; 65535]);
    while !(i.is_handshake_finished() && r.is_handshake_finished()) {
        let (from, to) = if i.is_my_turn() { (&mut i, &mut r) } else { (&mut r, &mut i) };
        let n = from.write_message(&[], &mut buf).map_err(err)?;
        to.read_message(&buf[..n], &mut scratch).map_err(err)?;
    }
    let i = Arc::new(i.into_stateless_transport_mode().map_err(err)?);
    let r = Arc::new(r.into_stateless_transport_mode().map_err(err)?);
    Ok((
        (Sealer::new(Arc::clone(&i)), Opener::new(Arc::clone(&i), window, max_message)),
        (Sealer::new(Arc::clone(&r)), Opener::new(r, window, max_message)),
    ))
}
