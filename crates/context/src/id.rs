//! Trace and span identifiers and trace flags. Their hex form goes through
//! [`crate::hex`], their random values come from [`crate::rng`].

use std::fmt;

use crate::hex::{decode_hex, encode_hex};
use crate::rng::fill_random;

/// A 16-byte W3C trace id. The all-zero id is invalid and never produced by this crate.
///
/// ```
/// use tracewire_context::TraceId;
///
/// let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
/// assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(TraceId::from_hex("00000000000000000000000000000000").is_none());
/// assert!(TraceId::random().is_valid());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId([u8; 16]);

/// An 8-byte W3C span id (the `parent-id` of a traceparent). The all-zero id is invalid.
///
/// ```
/// use tracewire_context::SpanId;
///
/// let id = SpanId::from_hex("00f067aa0ba902b7").unwrap();
/// assert_eq!(id.to_bytes(), [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
/// assert_ne!(SpanId::random(), SpanId::random());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId([u8; 8]);

macro_rules! id_impl {
    ($ty:ident, $n:literal, $int:ty, $what:literal) => {
        impl $ty {
            /// The invalid all-zero id.
            pub const INVALID: Self = Self([0; $n]);

            /// Builds an id from its big-endian bytes (may be the invalid all-zero id).
            pub const fn from_bytes(bytes: [u8; $n]) -> Self {
                Self(bytes)
            }

            /// The id's bytes, big-endian (as written in hex).
            pub const fn to_bytes(self) -> [u8; $n] {
                self.0
            }

            /// `true` unless the id is all zeros.
            pub const fn is_valid(self) -> bool {
                <$int>::from_ne_bytes(self.0) != 0
            }

            #[doc = concat!("Parses exactly ", stringify!($n), " bytes of lowercase hex (", $what, "); ")]
            /// `None` for any other length, uppercase or non-hex digits, or the all-zero id.
            pub fn from_hex(hex: &str) -> Option<Self> {
                let id = Self(decode_hex(hex.as_bytes())?);
                id.is_valid().then_some(id)
            }

            /// Writes the id as lowercase hex into `out`, which must be twice the id's length.
            #[inline]
            pub(crate) fn write_hex(self, out: &mut [u8]) {
                encode_hex(&self.0, out);
            }

            /// A fresh random, non-zero id from the thread-local generator.
            pub fn random() -> Self {
                let mut bytes = [0u8; $n];
                loop {
                    fill_random(&mut bytes);
                    if Self(bytes).is_valid() {
                        return Self(bytes);
                    }
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut buf = [0u8; $n * 2];
                self.write_hex(&mut buf);
                // Lowercase hex digits are always ASCII.
                f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($ty), "({})"), self)
            }
        }

        impl From<[u8; $n]> for $ty {
            fn from(bytes: [u8; $n]) -> Self {
                Self(bytes)
            }
        }
    };
}

id_impl!(TraceId, 16, u128, "32 hex digits");
id_impl!(SpanId, 8, u64, "16 hex digits");

impl TraceId {
    /// The id as a big-endian `u128`.
    pub const fn to_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// Builds an id from a `u128` (big-endian byte order).
    pub const fn from_u128(v: u128) -> Self {
        Self(v.to_be_bytes())
    }
}

impl SpanId {
    /// The id as a big-endian `u64`.
    pub const fn to_u64(self) -> u64 {
        u64::from_be_bytes(self.0)
    }

    /// Builds an id from a `u64` (big-endian byte order).
    pub const fn from_u64(v: u64) -> Self {
        Self(v.to_be_bytes())
    }
}

/// The 8-bit `trace-flags` field of a traceparent.
///
/// Level 2 defines two bits: [`TraceFlags::SAMPLED`] (`0x01`) and [`TraceFlags::RANDOM`]
/// (`0x02`, the trace-id's rightmost 7 bytes are random). Other bits are kept when parsed
/// but are always written as zero ([`TraceFlags::outgoing`]).
///
/// ```
/// use tracewire_context::TraceFlags;
///
/// let f = TraceFlags::from_bits(0xff);
/// assert!(f.is_sampled() && f.is_random());
/// assert_eq!(f.outgoing().bits(), 0x03);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// The `sampled` bit.
    pub const SAMPLED: Self = Self(0x01);
    /// The Level 2 `random` bit: the trace-id was generated randomly.
    pub const RANDOM: Self = Self(0x02);
    /// Every bit this implementation understands.
    pub const KNOWN: Self = Self(0x03);
    /// No flags set.
    pub const NONE: Self = Self(0);

    /// Flags from their raw bits (unknown bits are kept).
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether the `sampled` bit is set.
    pub const fn is_sampled(self) -> bool {
        self.0 & Self::SAMPLED.0 != 0
    }

    /// Whether the Level 2 `random` bit is set.
    pub const fn is_random(self) -> bool {
        self.0 & Self::RANDOM.0 != 0
    }

    /// These flags with the `sampled` bit set or cleared.
    #[must_use]
    pub const fn with_sampled(self, sampled: bool) -> Self {
        if sampled { Self(self.0 | Self::SAMPLED.0) } else { Self(self.0 & !Self::SAMPLED.0) }
    }

    /// These flags with the `random` bit set or cleared.
    #[must_use]
    pub const fn with_random(self, random: bool) -> Self {
        if random { Self(self.0 | Self::RANDOM.0) } else { Self(self.0 & !Self::RANDOM.0) }
    }

    /// The flags as they may be sent: bits this implementation does not know are zero.
    #[must_use]
    pub const fn outgoing(self) -> Self {
        Self(self.0 & Self::KNOWN.0)
    }
}

impl std::ops::BitOr for TraceFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceFlags({:02x}", self.0)?;
        if self.is_sampled() {
            f.write_str(" sampled")?;
        }
        if self.is_random() {
            f.write_str(" random")?;
        }
        f.write_str(")")
    }
}

impl fmt::Display for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}", self.0)
    }
}
