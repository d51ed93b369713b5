//! Framing: a message is split into records of at most 60 KiB, each sealed with its
//! sequence number as the nonce; the receiver reorders within a bounded window, decrypts,
//! and reassembles within a size cap. Every fault is a typed error that maps to a Reset
//! reason; corrupted plaintext is never delivered.
//!
//! Message boundaries are authenticated through the nonce: record `seq` is sealed with
//! nonce `2 * seq + 1` when it is the last fragment of a message, else `2 * seq`. The
//! receiver opens it with the nonce that the cleartext `last_fragment` of its `Data` frame
//! (which the relay reads for its spans) names, so a flipped flag fails authentication.
//! Nonces stay unique per key (each `seq` is used once), and the plaintext is the message's
//! bytes alone: a record is sealed straight from the message and opened straight into the
//! message being reassembled, with no staging copy on either side.
//!
//! A sealed record's buffer comes from a small process-wide pool and goes back to it when
//! the record's last `Bytes` is dropped (once the wire wrote it): a steady stream seals
//! into buffers that are already allocated and initialized, instead of allocating and
//! zeroing 60 KiB per record.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use snow::StatelessTransportState;
use tracewire_proto::v1::{Data, ResetReason};

/// Largest plaintext per record (Noise messages are at most 65535 bytes with the tag).
pub const MAX_RECORD_PLAINTEXT: usize = 60 * 1024;
const TAG: usize = 16;
/// The largest valid sealed record.
const MAX_RECORD: usize = MAX_RECORD_PLAINTEXT + TAG;

/// How many sealed-record buffers the pool keeps (at most ~2 MiB in all).
const POOLED_RECORDS: usize = 32;

/// Buffers of [`MAX_RECORD`] initialized bytes, free for the next record.
static RECORD_BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer for one sealed record: a pooled one, or a new one.
fn record_buffer() -> Vec<u8> {
    let mut buf = RECORD_BUFFERS.lock().ok().and_then(|mut free| free.pop()).unwrap_or_default();
    if buf.len() < MAX_RECORD {
        buf.resize(MAX_RECORD, 0);
    }
    buf
}

/// The owner of a sealed record's bytes (the first `len` of `buf`); dropping it returns
/// the buffer to the pool.
struct PooledRecord {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for PooledRecord {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for PooledRecord {
    fn drop(&mut self) {
        if let Ok(mut free) = RECORD_BUFFERS.lock()
            && free.len() < POOLED_RECORDS
        {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

/// The nonce of record `seq`: its sequence number and whether it ends a message (`None`
/// for a sequence number too large to have one, which no valid record has).
fn nonce(seq: u64, last_fragment: bool) -> Option<u64> {
    seq.checked_mul(2).map(|n| n | u64::from(last_fragment))
}

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
        let n = message.len().div_ceil(MAX_RECORD_PLAINTEXT).max(1);
        let mut out = Vec::with_capacity(n);
        let mut chunks = message.chunks(MAX_RECORD_PLAINTEXT);
        for i in 0..n {
            let chunk = chunks.next().unwrap_or_default();
            let seq = self.next_seq;
            self.next_seq += 1;
            let last = i + 1 == n;
            let mut buf = record_buffer();
            let len = nonce(seq, last)
                .and_then(|nonce| self.transport.write_message(nonce, chunk, &mut buf).ok())
                .ok_or(FrameError::DecryptFailed(seq))?;
            let record = bytes::Bytes::from_owner(PooledRecord { buf, len });
            out.push(Data { seq, record, last_fragment: last, traceparent: traceparent.to_owned() });
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
            // Opened in place at the end of the message being reassembled.
            let start = self.message.len();
            if start + d.record.len().saturating_sub(TAG) > self.max_message {
                return Err(FrameError::TooLarge(self.max_message));
            }
            self.message.resize(start + d.record.len(), 0);
            let opened = nonce(d.seq, d.last_fragment)
                .and_then(|nonce| self.transport.read_message(nonce, &d.record, &mut self.message[start..]).ok());
            let Some(n) = opened else {
                self.message.truncate(start);
                return Err(FrameError::DecryptFailed(d.seq));
            };
            self.message.truncate(start + n);
            self.next_seq += 1;
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

/// Both ends' transport states from one finished handshake of `config`, initiator first
/// (tests, benches: the raw AEAD peer of the relay throughput comparison).
#[doc(hidden)]
pub fn transports_for_tests(
    config: crate::NoiseConfig,
) -> Result<(Arc<StatelessTransportState>, Arc<StatelessTransportState>), crate::RelayError> {
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
    Ok((
        Arc::new(i.into_stateless_transport_mode().map_err(err)?),
        Arc::new(r.into_stateless_transport_mode().map_err(err)?),
    ))
}

/// A connected pair of sealer/opener states from one finished handshake (tests, benches).
#[doc(hidden)]
pub fn pair_for_tests(
    config: crate::NoiseConfig,
    window: usize,
    max_message: usize,
) -> Result<(Halves, Halves), crate::RelayError> {
    let (i, r) = transports_for_tests(config)?;
    Ok((
        (Sealer::new(Arc::clone(&i)), Opener::new(Arc::clone(&i), window, max_message)),
        (Sealer::new(Arc::clone(&r)), Opener::new(r, window, max_message)),
    ))
}
