//! Lowercase hex: the decoders behind every id and traceparent parse (SSE2 on x86_64,
//! SWAR elsewhere; both checked against a byte table for every character in every
//! position), and the encoder behind every id written ([`to_hex`] for callers outside).
//!
//! This module holds the crate's only `unsafe`: entering the SSE2 decoder (module `sse2`),
//! compiled only where SSE2 is enabled for the target, so the CPU running the code has it.
//! Tests: `portable_and_simd_hex_paths_agree`, `swar_hex_agrees_with_the_byte_table_for_every_character`.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Value of a lowercase hex digit, or `0xff`.
const fn unhex_table() -> [u8; 256] {
    let mut t = [0xffu8; 256];
    let mut i = 0u8;
    while i < 10 {
        t[(b'0' + i) as usize] = i;
        i += 1;
    }
    let mut i = 0u8;
    while i < 6 {
        t[(b'a' + i) as usize] = 10 + i;
        i += 1;
    }
    t
}
static UNHEX: [u8; 256] = unhex_table();

/// Decodes lowercase hex of exactly `2 * N` bytes.
pub(crate) fn decode_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    // Eight hex digits at a time (SWAR), then the tail byte by byte.
    let mut chunks = hex.chunks_exact(16);
    let mut outs = out.chunks_exact_mut(8);
    for (h, o) in (&mut chunks).zip(&mut outs) {
        // Sixteen digits at a time through the vectorised path.
        let h: &[u8; 16] = h.try_into().ok()?;
        o.copy_from_slice(&decode_hex16(h)?);
    }
    let mut bad = 0u8;
    for (o, pair) in outs.into_remainder().iter_mut().zip(chunks.remainder().chunks_exact(2)) {
        let hi = UNHEX[pair[0] as usize];
        let lo = UNHEX[pair[1] as usize];
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    // Valid digits are < 16, so any 0xff marker sets the high bits.
    (bad & 0xf0 == 0).then_some(out)
}

/// Decodes two lowercase hex digits.
#[inline]
pub(crate) fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let (h, l) = (UNHEX[hi as usize], UNHEX[lo as usize]);
    ((h | l) & 0xf0 == 0).then_some(h << 4 | l)
}

/// Decodes 16 lowercase hex digits into 8 bytes.
#[inline]
pub(crate) fn decode_hex16(h: &[u8; 16]) -> Option<[u8; 8]> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        sse2::decode16(h)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        decode16_swar(h)
    }
}

/// Decodes 32 lowercase hex digits into 16 bytes.
#[inline]
pub(crate) fn decode_hex32(h: &[u8; 32]) -> Option<[u8; 16]> {
    let (hi, lo) = h.split_at(16);
    let hi = decode_hex16(hi.try_into().ok()?)?;
    let lo = decode_hex16(lo.try_into().ok()?)?;
    Some((u128::from(u64::from_le_bytes(hi)) | u128::from(u64::from_le_bytes(lo)) << 64).to_le_bytes())
}

/// The portable path: eight digits per `u64`.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline]
fn decode16_swar(h: &[u8; 16]) -> Option<[u8; 8]> {
    let (hi, lo) = h.split_at(8);
    let (a, bad_a) = swar_nibbles(load8(hi));
    let (b, bad_b) = swar_nibbles(load8(lo));
    if bad_a | bad_b != 0 {
        return None;
    }
    Some((u64::from(pack_nibbles(a)) | u64::from(pack_nibbles(b)) << 32).to_le_bytes())
}

/// SSE2 (part of every x86_64 CPU): sixteen digits per instruction. The intrinsics used
/// take no pointers; the only `unsafe` is entering the `sse2` target-feature function.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[allow(unsafe_code)]
mod sse2 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmplt_epi8, _mm_cvtsi128_si64, _mm_movemask_epi8, _mm_or_si128, _mm_packus_epi16,
        _mm_set_epi64x, _mm_set1_epi8, _mm_set1_epi16, _mm_slli_epi16, _mm_srli_epi16, _mm_sub_epi8, _mm_xor_si128,
    };

    #[inline]
    pub(super) fn decode16(h: &[u8; 16]) -> Option<[u8; 8]> {
        // SAFETY: this module is only compiled when SSE2 is enabled for the target
        // (`cfg(target_feature = "sse2")`), so the CPU running the code supports it.
        unsafe { decode16_sse2(h) }
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    #[allow(clippy::cast_possible_wrap, clippy::cast_sign_loss, clippy::many_single_char_names)]
    fn decode16_sse2(h: &[u8; 16]) -> Option<[u8; 8]> {
        let (lo, hi) = h.split_at(8);
        let lo = i64::from_le_bytes(lo.try_into().ok()?);
        let hi = i64::from_le_bytes(hi.try_into().ok()?);
        let x = _mm_set_epi64x(hi, lo);
        let flip = _mm_set1_epi8(i8::MIN);
        // Unsigned "t < n" as a signed compare of both sides with the top bit flipped.
        let below = |t, n: i8| _mm_cmplt_epi8(_mm_xor_si128(t, flip), _mm_set1_epi8(n ^ i8::MIN));
        let d = _mm_sub_epi8(x, _mm_set1_epi8(b'0' as i8));
        let a = _mm_sub_epi8(x, _mm_set1_epi8((b'a' - 10) as i8));
        let is_digit = below(d, 10);
        let is_alpha = _mm_and_si128(below(a, 16), _mm_xor_si128(below(a, 10), _mm_set1_epi8(-1)));
        if _mm_movemask_epi8(_mm_or_si128(is_digit, is_alpha)) != 0xffff {
            return None;
        }
        let n = _mm_or_si128(_mm_and_si128(is_digit, d), _mm_and_si128(is_alpha, a));
        // 16-bit lane k holds digits 2k (low byte) and 2k+1: byte = first << 4 | second.
        let v = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(n, _mm_set1_epi16(0x00ff)), 4), _mm_srli_epi16(n, 8));
        Some((_mm_cvtsi128_si64(_mm_packus_epi16(v, v)) as u64).to_le_bytes())
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Eight ASCII characters (little-endian in `x`) to eight nibbles, and a mask that is
/// non-zero unless all eight are `0-9a-f`. Each byte is range-checked with carry-free
/// additions: for a byte below 0x80, `x + (0x80 - lo)` has its high bit set exactly when
/// `x >= lo` (bytes of 0x80 and above are rejected by the mask separately).
#[inline]
fn swar_nibbles(x: u64) -> (u64, u64) {
    let low7 = x & !HIGH;
    let ge = |lo: u64| low7 + ONES * (0x80 - lo);
    let digit = ge(0x30) & !ge(0x3a);
    let alpha = ge(0x61) & !ge(0x67);
    let bad = (!(digit | alpha) | x) & HIGH;
    ((x & (ONES * 0x0f)) + ((alpha & HIGH) >> 7) * 9, bad)
}

#[inline]
fn load8(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_le_bytes(a)
}

/// Packs eight nibbles (first character in the lowest byte) into four bytes, in order.
#[inline]
fn pack_nibbles(n: u64) -> u32 {
    let t = ((n << 4) | (n >> 8)) & 0x00ff_00ff_00ff_00ff;
    let t = (t | (t >> 8)) & 0x0000_ffff_0000_ffff;
    let t = (t | (t >> 16)) & 0x0000_0000_ffff_ffff;
    #[allow(clippy::cast_possible_truncation)]
    let r = t as u32;
    r
}

/// Encodes `bytes` as lowercase hex into `out` (`out.len() == 2 * bytes.len()`), four
/// bytes at a time (SWAR), the tail byte by byte.
#[inline]
pub(crate) fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    let mut chunks = bytes.chunks_exact(4);
    let mut outs = out.chunks_exact_mut(8);
    for (b, o) in (&mut chunks).zip(&mut outs) {
        let mut w = [0u8; 4];
        w.copy_from_slice(b);
        o.copy_from_slice(&encode4(u32::from_le_bytes(w)).to_le_bytes());
    }
    for (b, pair) in chunks.remainder().iter().zip(outs.into_remainder().chunks_exact_mut(2)) {
        pair[0] = HEX[(b >> 4) as usize];
        pair[1] = HEX[(b & 0x0f) as usize];
    }
}

/// Four bytes (first in the lowest byte) to eight lowercase hex digits, in order.
#[inline]
fn encode4(x: u32) -> u64 {
    let t = u64::from(x);
    let t = (t | t << 16) & 0x0000_ffff_0000_ffff;
    let t = (t | t << 8) & 0x00ff_00ff_00ff_00ff;
    // Byte 2k gets the high nibble of input byte k, byte 2k+1 its low nibble.
    let n = ((t >> 4) & 0x000f_000f_000f_000f) | ((t & 0x000f_000f_000f_000f) << 8);
    // '0' + n, plus 39 more for n >= 10 (to land on 'a'): n + 0x76 carries into bit 7 then.
    n + ONES * 0x30 + (((n + ONES * 0x76) & HIGH) >> 7) * 39
}

/// Lowercase hex of `bytes`, two digits a byte, no separators.
///
/// ```
/// assert_eq!(tracewire_context::to_hex(&[0x0a, 0xff, 0x00]), "0aff00");
/// assert_eq!(tracewire_context::to_hex(&[]), "");
/// ```
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    encode_hex(bytes, &mut out);
    // Hex digits are ASCII, so this never falls back.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sixteen valid digits with one replaced: each byte value in each position (and which
    /// byte, and where).
    fn every_character_in_every_position() -> impl Iterator<Item = ([u8; 16], u8, usize)> {
        (0..16).flat_map(|pos| {
            (0..=255u8).map(move |c| {
                let mut hex = *b"0123456789abcdef";
                hex[pos] = c;
                (hex, c, pos)
            })
        })
    }

    /// The reference: `{:02x}` of each byte.
    fn formatted(bytes: &[u8]) -> String {
        bytes.iter().fold(String::new(), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    #[test]
    fn hex_round_trip() {
        for v in [0u8, 1, 0x0f, 0x10, 0x7f, 0x80, 0xfe, 0xff] {
            let mut out = [0u8; 2];
            encode_hex(&[v], &mut out);
            assert_eq!(decode_hex::<1>(&out), Some([v]));
        }
    }

    #[test]
    fn swar_hex_agrees_with_the_byte_table_for_every_character() {
        // Every byte value in every position of an 8-byte SWAR lane.
        for (hex, c, pos) in every_character_in_every_position() {
            let want = hex.chunks_exact(2).try_fold(Vec::new(), |mut v, p| {
                let (h, l) = (UNHEX[p[0] as usize], UNHEX[p[1] as usize]);
                ((h | l) & 0xf0 == 0).then(|| {
                    v.push(h << 4 | l);
                    v
                })
            });
            assert_eq!(decode_hex::<8>(&hex).map(|a| a.to_vec()), want, "byte {c:#x} at {pos}");
        }
        assert_eq!(decode_hex::<8>(b"0123456789abcdef"), Some([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]));
    }

    #[test]
    fn portable_and_simd_hex_paths_agree() {
        for (hex, c, pos) in every_character_in_every_position() {
            assert_eq!(decode16_swar(&hex), decode_hex16(&hex), "byte {c:#x} at {pos}");
        }
    }

    #[test]
    fn encode_matches_the_table_for_every_byte() {
        for v in 0..=255u8 {
            let bytes = [v, v.wrapping_add(1), v.wrapping_mul(7), !v, v ^ 0x5a];
            let mut out = [0u8; 10];
            encode_hex(&bytes, &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), formatted(&bytes));
        }
    }

    #[test]
    fn to_hex_is_two_lowercase_digits_a_byte_at_every_length() {
        let all: Vec<u8> = (0..=255u8).collect();
        for n in [0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 32, 256] {
            assert_eq!(to_hex(&all[..n]), formatted(&all[..n]), "{n} bytes");
        }
    }

    #[test]
    fn hex_rejects_non_lowercase() {
        for bad in ["AB", "0G", "g0", " 0", "0-", "Ff"] {
            assert_eq!(decode_hex::<1>(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(decode_hex::<1>(b"abc"), None);
    }
}
