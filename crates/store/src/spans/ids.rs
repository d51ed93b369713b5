//! Span ids as the `spans` table holds them: their bytes when the record's text is their
//! lowercase hex, else the text (only a record built by hand has such ids).

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::{hex, unhex};

/// An id as stored: its bytes when `text` is their lowercase hex, else the text.
pub(super) fn id_sql<'a>(text: &'a str, raw: &'a [u8]) -> ToSqlOutput<'a> {
    if is_hex_of(text, raw) {
        return ToSqlOutput::Borrowed(ValueRef::Blob(raw));
    }
    match unhex(text) {
        Some(bytes) if is_hex_of(text, &bytes) => ToSqlOutput::Owned(rusqlite::types::Value::Blob(bytes)),
        _ => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
    }
}

/// Whether `text` is the lowercase hex of `bytes`.
pub(super) fn is_hex_of(text: &str, bytes: &[u8]) -> bool {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    text.len() == bytes.len() * 2
        && text
            .as_bytes()
            .chunks_exact(2)
            .zip(bytes)
            .all(|(p, b)| p[0] == DIGITS[usize::from(b >> 4)] && p[1] == DIGITS[usize::from(b & 0xf)])
}

/// A stored id back as the record's text (blobs as hex).
pub(super) fn id_text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Blob(b) => hex(b),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        _ => String::new(),
    }
}

/// [`id_text`] written over `out`, keeping its allocation.
pub(super) fn id_text_into(v: ValueRef<'_>, out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.clear();
    match v {
        ValueRef::Blob(b) => {
            out.reserve(b.len() * 2);
            for x in b {
                out.push(char::from(DIGITS[usize::from(x >> 4)]));
                out.push(char::from(DIGITS[usize::from(x & 0xf)]));
            }
        }
        ValueRef::Text(t) => out.push_str(&String::from_utf8_lossy(t)),
        _ => {}
    }
}

/// The bytes a stored id stands for in OTLP: a blob's bytes, a text id's hex (empty when
/// it is not hex).
pub(super) fn id_bytes(v: ValueRef<'_>) -> Vec<u8> {
    match v {
        ValueRef::Blob(b) => b.to_vec(),
        ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(unhex).unwrap_or_default(),
        _ => Vec::new(),
    }
}
