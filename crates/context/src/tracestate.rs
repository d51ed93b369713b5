//! The `tracestate` header (W3C Trace Context Level 2).

use std::fmt;

/// Maximum number of list-members in a tracestate.
pub const MAX_MEMBERS: usize = 32;
/// Maximum key length.
pub const MAX_KEY_LEN: usize = 256;
/// Maximum value length.
pub const MAX_VALUE_LEN: usize = 256;
/// Serialized size this crate keeps an outgoing tracestate within.
pub const SERIALIZE_BUDGET: usize = 512;
/// Members longer than this are the first to go when the budget is exceeded.
pub const LARGE_MEMBER: usize = 128;

/// Why a tracestate (or one member of it) was rejected. A rejected member discards the whole
/// header: it is never partly kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum TraceStateError {
    /// A member has no `=`.
    #[error("tracestate member {0} has no '='")]
    MissingEquals(usize),
    /// A member's key breaks the key grammar.
    #[error("tracestate member {0} has an invalid key")]
    Key(usize),
    /// A member's value breaks the value grammar.
    #[error("tracestate member {0} has an invalid value")]
    Value(usize),
    /// More than 32 members.
    #[error("tracestate has {0} members, more than 32")]
    TooManyMembers(usize),
    /// A key occurs twice (only one entry per key is allowed).
    #[error("tracestate member {0} repeats an earlier key")]
    DuplicateKey(usize),
}

/// A validated `tracestate`: an ordered list of vendor `key=value` members, at most 32,
/// with unique keys (a header that repeats a key is invalid and discarded whole).
///
/// ```
/// use tracewire_context::TraceState;
///
/// let mut ts = TraceState::from_header_values(["rojo=00f067aa0ba902b7", " , congo=t61rcWkgMzE\t"])?;
/// assert_eq!(ts.get("congo"), Some("t61rcWkgMzE"));
/// ts.insert("congo", "new")?; // update moves the key to the front
/// assert_eq!(ts.header(), "congo=new,rojo=00f067aa0ba902b7");
///
/// // One invalid member discards the whole header.
/// assert!(TraceState::parse("ok=1,Bad=2").is_err());
/// # Ok::<(), tracewire_context::TraceStateError>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// `true` if `key` is a lowercase letter or digit followed by up to 255 of
/// `a-z 0-9 _ - * / @`.
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    match b.split_first() {
        Some((first, rest)) if rest.len() < MAX_KEY_LEN => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest.iter().all(|&c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
                })
        }
        _ => false,
    }
}

/// `true` if `value` is 1 to 256 printable ASCII characters other than `,` and `=`, not
/// ending in a space.
pub fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_VALUE_LEN
        && b.last() != Some(&b' ')
        && b.iter().all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

impl TraceState {
    /// An empty tracestate.
    pub const fn new() -> Self {
        Self { members: Vec::new() }
    }

    /// Parses one header value. See [`TraceState::from_header_values`].
    ///
    /// # Errors
    /// The first invalid member, or [`TraceStateError::TooManyMembers`].
    pub fn parse(value: &str) -> Result<Self, TraceStateError> {
        Self::from_header_values([value])
    }

    /// Parses and combines, in order, every tracestate header value received. Empty
    /// members are skipped; spaces and tabs around members are ignored.
    ///
    /// # Errors
    /// When any member is invalid, a key occurs twice (the specification allows one entry per
    /// key), or there are more than 32 members, the whole tracestate is rejected: the caller
    /// should propagate none of it.
    pub fn from_header_values<'a, I>(values: I) -> Result<Self, TraceStateError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut members: Vec<(String, String)> = Vec::new();
        let mut index = 0usize;
        for value in values {
            for raw in value.split(',') {
                let member = raw.trim_matches(is_ows);
                if member.is_empty() {
                    continue;
                }
                let (key, val) = member.split_once('=').ok_or(TraceStateError::MissingEquals(index))?;
                if !valid_key(key) {
                    return Err(TraceStateError::Key(index));
                }
                if !valid_value(val) {
                    return Err(TraceStateError::Value(index));
                }
                index += 1;
                if index > MAX_MEMBERS {
                    return Err(TraceStateError::TooManyMembers(index));
                }
                if members.iter().any(|(k, _)| k == key) {
                    return Err(TraceStateError::DuplicateKey(index - 1));
                }
                members.push((key.to_owned(), val.to_owned()));
            }
        }
        Ok(Self { members })
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Members in order, left (most recent) to right.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Inserts or updates `key`, moving it to the front, as a vendor does for its own entry.
    /// When the list is full, the rightmost member is removed to make room.
    ///
    /// # Errors
    /// [`TraceStateError::Key`] or [`TraceStateError::Value`] (index 0) when invalid; the
    /// tracestate is unchanged then.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), TraceStateError> {
        if !valid_key(key) {
            return Err(TraceStateError::Key(0));
        }
        if !valid_value(value) {
            return Err(TraceStateError::Value(0));
        }
        self.remove(key);
        if self.members.len() >= MAX_MEMBERS {
            self.members.truncate(MAX_MEMBERS - 1);
        }
        self.members.insert(0, (key.to_owned(), value.to_owned()));
        Ok(())
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.members.iter().position(|(k, _)| k == key)?;
        Some(self.members.remove(pos).1)
    }

    /// The header value, within the 512-character budget: when the full list is longer,
    /// members longer than 128 characters are dropped first (rightmost first), then members
    /// from the end, until it fits.
    pub fn header(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        out
    }

    /// Appends the header value (see [`TraceState::header`]) to `out`.
    pub fn write_header(&self, out: &mut String) {
        let member_len = |(k, v): &(String, String)| k.len() + 1 + v.len();
        let mut keep = [true; MAX_MEMBERS];
        let keep = &mut keep[..self.members.len().min(MAX_MEMBERS)];
        let mut total: usize =
            self.members.iter().map(member_len).sum::<usize>() + self.members.len().saturating_sub(1);
        let drop = |i: usize, keep: &mut [bool], total: &mut usize| {
            keep[i] = false;
            *total = total.saturating_sub(member_len(&self.members[i]) + 1);
        };
        for i in (0..keep.len()).rev() {
            if total <= SERIALIZE_BUDGET {
                break;
            }
            if member_len(&self.members[i]) > LARGE_MEMBER {
                drop(i, keep, &mut total);
            }
        }
        for i in (0..keep.len()).rev() {
            if total <= SERIALIZE_BUDGET {
                break;
            }
            if keep[i] {
                drop(i, keep, &mut total);
            }
        }
        let mut first = true;
        for ((k, v), _) in self.members.iter().zip(keep.iter()).filter(|(_, k)| **k) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::str::FromStr for TraceState {
    type Err = TraceStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
