//! The `baggage` header (W3C Baggage).

use std::fmt;

/// Most list-members propagated.
pub const MAX_MEMBERS: usize = 64;
/// Largest serialized baggage propagated, in bytes.
pub const MAX_BYTES: usize = 8192;

/// Why a baggage entry was refused by [`Baggage::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum BaggageError {
    /// The key is not an RFC 7230 token.
    #[error("baggage key is not a token")]
    Key,
    /// The properties do not follow `;key` / `;key=value` with token keys.
    #[error("baggage properties are malformed")]
    Properties,
    /// The entry alone, once encoded, would exceed the 8192-byte limit.
    #[error("baggage entry exceeds the 8192-byte limit")]
    TooLarge,
}

/// One baggage entry: a key, its percent-decoded value and its (validated, raw) properties.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaggageEntry {
    key: String,
    value: String,
    properties: String,
}

impl BaggageEntry {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The decoded value.
    pub fn value(&self) -> &str {
        &self.value
    }
    /// The properties as written after the value, without the leading `;`, separated by
    /// `;` (empty when there are none). Property values are opaque to this crate.
    pub fn properties(&self) -> &str {
        &self.properties
    }

    fn encoded_len(&self) -> usize {
        let props = if self.properties.is_empty() { 0 } else { 1 + self.properties.len() };
        self.key.len() + 1 + encoded_value_len(&self.value) + props
    }

    fn write(&self, out: &mut String) {
        out.push_str(&self.key);
        out.push('=');
        encode_value(&self.value, out);
        if !self.properties.is_empty() {
            out.push(';');
            out.push_str(&self.properties);
        }
    }
}

/// W3C Baggage: application key/value pairs carried with the trace.
///
/// Parsing keeps every valid member and drops invalid ones (counted in
/// [`ParsedBaggage::dropped`]); values are percent-decoded on parse and percent-encoded on
/// output; at most 64 members and 8192 bytes are kept, whole members only.
///
/// ```
/// use tracewire_context::Baggage;
///
/// let parsed = Baggage::parse("userId=alice, serverNode = DF%2028 ;p=1, bad key=x, isProd=false");
/// let bag = parsed.baggage;
/// assert_eq!(parsed.dropped, 1);
/// assert_eq!(bag.get("serverNode"), Some("DF 28"));
/// assert_eq!(bag.header(), "userId=alice,serverNode=DF%2028;p=1,isProd=false");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Baggage {
    entries: Vec<BaggageEntry>,
}

/// The result of parsing baggage: the valid members and how many were dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedBaggage {
    /// The members that were valid (within the limits).
    pub baggage: Baggage,
    /// Members dropped as invalid or beyond the limits.
    pub dropped: usize,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn is_baggage_octet(c: u8) -> bool {
    matches!(c, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a value of baggage-octets. A `%` not followed by two hex digits stays
/// literal; octet sequences that are not UTF-8 become U+FFFD, as the specification says.
fn decode_value(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    if !b.iter().all(|&c| is_baggage_octet(c)) {
        return None;
    }
    if !raw.contains('%') {
        return Some(raw.to_owned());
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) =
                (b.get(i + 1).copied().and_then(hex_val), b.get(i + 2).copied().and_then(hex_val))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn needs_encoding(c: u8) -> bool {
    !is_baggage_octet(c) || c == b'%'
}

fn encoded_value_len(v: &str) -> usize {
    v.bytes().map(|c| if needs_encoding(c) { 3 } else { 1 }).sum()
}

fn encode_value(v: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for c in v.bytes() {
        if needs_encoding(c) {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 0xf)]));
        } else {
            out.push(char::from(c));
        }
    }
}

/// Validates `;`-separated properties (`key` or `key=value`, OWS allowed around parts) and
/// returns them normalised without OWS.
fn normalize_properties(raw: &[&str]) -> Option<String> {
    let mut out = String::new();
    for p in raw {
        let (key, value) = match p.split_once('=') {
            Some((k, v)) => (trim_ows(k), Some(trim_ows(v))),
            None => (trim_ows(p), None),
        };
        if !is_token(key) {
            return None;
        }
        if let Some(v) = value
            && !v.bytes().all(is_baggage_octet)
        {
            return None;
        }
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(key);
        if let Some(v) = value {
            out.push('=');
            out.push_str(v);
        }
    }
    Some(out)
}

fn parse_member(member: &str) -> Option<BaggageEntry> {
    let mut parts = member.split(';');
    let kv = parts.next()?;
    let (key, value) = kv.split_once('=')?;
    let (key, value) = (trim_ows(key), trim_ows(value));
    if !is_token(key) {
        return None;
    }
    let value = decode_value(value)?;
    let props: Vec<&str> = parts.collect();
    let properties = normalize_properties(&props)?;
    Some(BaggageEntry { key: key.to_owned(), value, properties })
}

impl Baggage {
    /// Empty baggage.
    pub const fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// Parses one header value, keeping valid members and counting the dropped ones.
    pub fn parse(value: &str) -> ParsedBaggage {
        Self::from_header_values([value])
    }

    /// Parses and combines several header values in order. A key seen again replaces the
    /// earlier value in place. Members beyond 64, or beyond 8192 encoded bytes, are dropped
    /// whole.
    pub fn from_header_values<'a, I>(values: I) -> ParsedBaggage
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut out = ParsedBaggage::default();
        for value in values {
            for raw in value.split(',') {
                let member = trim_ows(raw);
                if member.is_empty() {
                    continue;
                }
                match parse_member(member) {
                    Some(entry) => {
                        if out.baggage.push_within_limits(entry).is_err() {
                            out.dropped += 1;
                        }
                    }
                    None => out.dropped += 1,
                }
            }
        }
        out
    }

    fn encoded_len_without(&self, key: &str) -> usize {
        let (n, len) = self
            .entries
            .iter()
            .filter(|e| e.key != key)
            .fold((0usize, 0usize), |(n, len), e| (n + 1, len + e.encoded_len()));
        len + n.saturating_sub(1)
    }

    /// Adds or replaces an entry if the limits allow it.
    fn push_within_limits(&mut self, entry: BaggageEntry) -> Result<(), BaggageError> {
        let existing = self.entries.iter().position(|e| e.key == entry.key);
        let others = self.entries.len() - usize::from(existing.is_some());
        let others_len = self.encoded_len_without(&entry.key);
        let new_len = others_len + usize::from(others > 0) + entry.encoded_len();
        if others >= MAX_MEMBERS || new_len > MAX_BYTES {
            return Err(BaggageError::TooLarge);
        }
        match existing {
            Some(i) => self.entries[i] = entry,
            None => self.entries.push(entry),
        }
        Ok(())
    }

    /// Sets `key` to `value` (any UTF-8; encoded on output) with no properties.
    ///
    /// # Errors
    /// [`BaggageError::Key`] for a key that is not a token, [`BaggageError::TooLarge`] when
    /// the limits (64 members, 8192 bytes) would be exceeded.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), BaggageError> {
        self.insert_with_properties(key, value, "")
    }

    /// Sets `key` to `value` with properties written as after the value
    /// (`"p1;p2=v"`, without the leading `;`).
    ///
    /// # Errors
    /// As [`Baggage::insert`], plus [`BaggageError::Properties`].
    pub fn insert_with_properties(&mut self, key: &str, value: &str, properties: &str) -> Result<(), BaggageError> {
        if !is_token(key) {
            return Err(BaggageError::Key);
        }
        let properties = if properties.is_empty() {
            String::new()
        } else {
            let parts: Vec<&str> = properties.split(';').collect();
            normalize_properties(&parts).ok_or(BaggageError::Properties)?
        };
        self.push_within_limits(BaggageEntry { key: key.to_owned(), value: value.to_owned(), properties })
    }

    /// Removes `key`, returning its entry.
    pub fn remove(&mut self, key: &str) -> Option<BaggageEntry> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        Some(self.entries.remove(i))
    }

    /// The decoded value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(BaggageEntry::value)
    }

    /// The entry of `key`.
    pub fn entry(&self, key: &str) -> Option<&BaggageEntry> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Entries in order.
    pub fn iter(&self) -> std::slice::Iter<'_, BaggageEntry> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The header value: `key=value;props` members joined by `,`, values percent-encoded.
    pub fn header(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        out
    }

    /// Appends the header value to `out`.
    pub fn write_header(&self, out: &mut String) {
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            e.write(out);
        }
    }
}

impl fmt::Display for Baggage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

impl<'a> IntoIterator for &'a Baggage {
    type Item = &'a BaggageEntry;
    type IntoIter = std::slice::Iter<'a, BaggageEntry>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}
