//! The `traceparent` header (W3C Trace Context Level 2).

use std::fmt;
use std::str::FromStr;

use crate::hex::{decode_hex16, decode_hex32, encode_hex, hex_byte};
use crate::id::{SpanId, TraceFlags, TraceId};

/// Length of a version-`00` traceparent: `vv-<32 hex>-<16 hex>-ff`.
pub const TRACEPARENT_LEN: usize = 55;

/// Why a traceparent value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum TraceParentError {
    /// Shorter than 55 characters, or a version-`00` value that is not exactly 55.
    #[error("traceparent has length {0}, expected 55")]
    Length(usize),
    /// The version is not two lowercase hex digits.
    #[error("traceparent version is not two lowercase hex digits")]
    Version,
    /// Version `ff` is forbidden by the specification.
    #[error("traceparent version ff is invalid")]
    VersionFf,
    /// A future version followed by something other than `-` after 55 characters.
    #[error("traceparent of a future version has trailing data not starting with '-'")]
    TrailingData,
    /// A `-` separator is missing at the given byte offset.
    #[error("traceparent expected '-' at offset {0}")]
    Separator(usize),
    /// The trace-id is not 32 lowercase hex digits.
    #[error("traceparent trace-id is not 32 lowercase hex digits")]
    TraceId,
    /// The trace-id is all zeros.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// The parent-id is not 16 lowercase hex digits.
    #[error("traceparent parent-id is not 16 lowercase hex digits")]
    ParentId,
    /// The parent-id is all zeros.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
    /// The trace-flags are not two lowercase hex digits.
    #[error("traceparent trace-flags are not two lowercase hex digits")]
    Flags,
    /// More than one traceparent header was received.
    #[error("more than one traceparent header")]
    Multiple,
}

/// A parsed `traceparent`: trace-id, parent-id (the sender's span id) and flags.
///
/// Parsing never allocates. Formatting always writes version `00`, 55 characters, with
/// unknown flag bits cleared.
///
/// ```
/// use tracewire_context::TraceParent;
///
/// let tp: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// assert!(tp.flags.is_sampled());
/// assert_eq!(tp.encode().as_str(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
///
/// // A future version: the first 55 characters are used, the rest ignored.
/// let future = TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-extra")?;
/// assert_eq!(future.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
///
/// assert!(TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_err());
/// # Ok::<(), tracewire_context::TraceParentError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace this span belongs to.
    pub trace_id: TraceId,
    /// The span id of the sender (the parent of whatever the receiver records).
    pub parent_id: SpanId,
    /// Trace flags as received (unknown bits are kept here but never sent).
    pub flags: TraceFlags,
}

/// The 16 bytes of `h` starting at `at` (a constant offset within the 55).
#[inline]
fn sub16(h: &[u8; TRACEPARENT_LEN], at: usize) -> &[u8; 16] {
    h[at..].first_chunk::<16>().unwrap_or(&[0; 16])
}

#[inline]
fn trim_ows(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

impl TraceParent {
    /// A traceparent from its parts.
    pub const fn new(trace_id: TraceId, parent_id: SpanId, flags: TraceFlags) -> Self {
        Self { trace_id, parent_id, flags }
    }

    /// Parses one header value; see [`TraceParent::parse_bytes`].
    ///
    /// # Errors
    /// A [`TraceParentError`] naming the first rule the value breaks.
    #[inline]
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        Self::parse_bytes(value.as_bytes())
    }

    /// Parses one header value by the Level 2 rules: optional surrounding spaces and tabs
    /// are stripped; lowercase hex only; all-zero ids and version `ff` are invalid; version
    /// `00` is exactly 55 characters; a higher version uses its first 55 characters when
    /// they are followed by `-` or the end.
    ///
    /// # Errors
    /// A [`TraceParentError`] naming the first rule the value breaks.
    #[inline]
    pub fn parse_bytes(value: &[u8]) -> Result<Self, TraceParentError> {
        let b = trim_ows(value);
        let Some(h) = b.first_chunk::<TRACEPARENT_LEN>() else {
            return Err(TraceParentError::Length(b.len()));
        };
        let version = hex_byte(h[0], h[1]).ok_or(TraceParentError::Version)?;
        if version == 0xff {
            return Err(TraceParentError::VersionFf);
        }
        if b.len() > TRACEPARENT_LEN {
            if version == 0 {
                return Err(TraceParentError::Length(b.len()));
            }
            if b[TRACEPARENT_LEN] != b'-' {
                return Err(TraceParentError::TrailingData);
            }
        }
        for pos in [2, 35, 52] {
            if h[pos] != b'-' {
                return Err(TraceParentError::Separator(pos));
            }
        }
        let tid = h[3..].first_chunk::<32>().and_then(decode_hex32).ok_or(TraceParentError::TraceId)?;
        let trace_id = TraceId::from_bytes(tid);
        if !trace_id.is_valid() {
            return Err(TraceParentError::ZeroTraceId);
        }
        let parent_id = SpanId::from_bytes(decode_hex16(sub16(h, 36)).ok_or(TraceParentError::ParentId)?);
        if !parent_id.is_valid() {
            return Err(TraceParentError::ZeroParentId);
        }
        let flags = hex_byte(h[53], h[54]).ok_or(TraceParentError::Flags)?;
        Ok(Self { trace_id, parent_id, flags: TraceFlags::from_bits(flags) })
    }

    /// Parses the traceparent out of every header value received under that name.
    /// No value gives `Ok(None)`; more than one is [`TraceParentError::Multiple`].
    ///
    /// ```
    /// use tracewire_context::{TraceParent, TraceParentError};
    ///
    /// let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    /// assert!(TraceParent::from_header_values([v]).unwrap().is_some());
    /// assert_eq!(TraceParent::from_header_values([v, v]), Err(TraceParentError::Multiple));
    /// assert_eq!(TraceParent::from_header_values(std::iter::empty::<&str>()), Ok(None));
    /// ```
    ///
    /// # Errors
    /// [`TraceParentError::Multiple`] or the error of the single value.
    pub fn from_header_values<'a, I>(values: I) -> Result<Option<Self>, TraceParentError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut it = values.into_iter();
        let Some(first) = it.next() else { return Ok(None) };
        if it.next().is_some() {
            return Err(TraceParentError::Multiple);
        }
        Self::parse(first).map(Some)
    }

    /// Encodes as version `00` into a stack buffer, with unknown flag bits cleared.
    #[inline]
    pub fn encode(&self) -> TraceParentBuf {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        self.trace_id.write_hex(&mut out[3..35]);
        self.parent_id.write_hex(&mut out[36..52]);
        encode_hex(&[self.flags.outgoing().bits()], &mut out[53..55]);
        TraceParentBuf(out)
    }
}

impl FromStr for TraceParent {
    type Err = TraceParentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().as_str())
    }
}

/// A formatted traceparent in a 55-byte stack buffer; dereferences to `&str`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceParentBuf([u8; TRACEPARENT_LEN]);

impl TraceParentBuf {
    /// The header value.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and '-' are ever written into the buffer.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The header value's bytes.
    pub fn as_bytes(&self) -> &[u8; TRACEPARENT_LEN] {
        &self.0
    }
}

impl std::ops::Deref for TraceParentBuf {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for TraceParentBuf {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for TraceParentBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TraceParentBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
