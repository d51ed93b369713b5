//! Reading a stored span body without decoding it: protobuf fields walked in place, the
//! attributes asked for and the status message taken as text.

use std::collections::BTreeMap;

use prost::Message as _;

use super::text;

/// A protobuf varint from the front of `buf`.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The next field of a protobuf message at the front of `buf`: its number, and its bytes
/// when it is length-delimited. `None` at a wire type other than varint, fixed32, fixed64
/// and length-delimited, or at a truncated field.
fn next_field<'a>(buf: &mut &'a [u8]) -> Option<(u64, Option<&'a [u8]>)> {
    let key = varint(buf)?;
    let skip = |buf: &mut &'a [u8], n: usize| -> Option<&'a [u8]> {
        let (taken, rest) = buf.split_at_checked(n)?;
        *buf = rest;
        Some(taken)
    };
    let bytes = match key & 7 {
        0 => {
            varint(buf)?;
            None
        }
        1 => {
            skip(buf, 8)?;
            None
        }
        2 => {
            let len = usize::try_from(varint(buf)?).ok()?;
            Some(skip(buf, len)?)
        }
        5 => {
            skip(buf, 4)?;
            None
        }
        _ => return None,
    };
    Some((key >> 3, bytes))
}

/// Reads from a stored span body (the OTLP `Span` fields the columns do not hold) the
/// attributes named in `wanted`, as [`text`], and the status message, without decoding the
/// rest, into `attributes` and `message` (which may hold an earlier span's: they end up
/// holding this span's only, their strings reused where a key is found again). `None` when
/// the body is not as the writer encodes it (a field repeated inside an attribute, a wire
/// type it never writes): the caller decodes it whole then.
pub(super) fn scan_body(
    mut body: &[u8],
    wanted: &[String],
    attributes: &mut BTreeMap<String, String>,
    message: &mut String,
) -> Option<()> {
    // The keys of `wanted` found (by index; with more than 64, the map starts empty).
    let mut found = 0u64;
    let tracked = wanted.len() <= 64;
    if !tracked {
        attributes.clear();
    }
    message.clear();
    while !body.is_empty() {
        match next_field(&mut body)? {
            // Span.attributes: KeyValue { key = 1, value = 2 }.
            (9, Some(mut kv)) => {
                let (mut key, mut value) = (None::<&[u8]>, None::<&[u8]>);
                while !kv.is_empty() {
                    match next_field(&mut kv)? {
                        (1, Some(k)) if key.is_none() => key = Some(k),
                        (2, Some(v)) if value.is_none() => value = Some(v),
                        (1 | 2, _) => return None,
                        _ => {}
                    }
                }
                let key = std::str::from_utf8(key.unwrap_or_default()).ok()?;
                if let Some(at) = wanted.iter().position(|w| w.as_str() == key) {
                    let slot = match attributes.get_mut(key) {
                        Some(slot) => slot,
                        None => attributes.entry(wanted[at].clone()).or_default(),
                    };
                    slot.clear();
                    if let Some(v) = value {
                        value_text(v, slot)?;
                    }
                    if tracked {
                        found |= 1 << at;
                    }
                }
            }
            // Span.status: Status { message = 2 }.
            (15, Some(mut st)) => {
                while !st.is_empty() {
                    if let (2, Some(m)) = next_field(&mut st)? {
                        std::str::from_utf8(m).ok()?.clone_into(message);
                    }
                }
            }
            (9 | 15, None) => return None,
            _ => {}
        }
    }
    if tracked {
        attributes.retain(|k, _| wanted.iter().position(|w| w == k).is_some_and(|at| found & (1 << at) != 0));
    }
    Some(())
}

/// An encoded `AnyValue` as [`text`] appended to `out`: a string value as it is, anything
/// else decoded. `None` when it does not decode.
fn value_text(v: &[u8], out: &mut String) -> Option<()> {
    // AnyValue.string_value = 1, alone in the message: what the writer encodes for a string.
    let mut rest = v;
    if let Some((1, Some(s))) = next_field(&mut rest)
        && rest.is_empty()
        && let Ok(s) = std::str::from_utf8(s)
    {
        out.push_str(s);
        return Some(());
    }
    out.push_str(&text(&opentelemetry_proto::tonic::common::v1::AnyValue::decode(v).ok()?));
    Some(())
}
