//! Carriers: where trace context headers are read from and written to.
//!
//! [`Carrier`] reads (case-insensitive names, every value of a repeated header),
//! [`CarrierMut`] writes. Implementations here: [`TraceCarrier`] (the RPC envelope struct),
//! `HashMap<String, String>`, header lists (`[(K, V)]`, `Vec<(String, String)>`),
//! [`EnvCarrier`] and `std::process::Command` (environment variables for child processes),
//! and, behind features, `http::HeaderMap`, `tonic::metadata::MetadataMap` and
//! `tokio::process::Command`.

use std::collections::HashMap;

mod env;
pub use env::{EnvCarrier, env_var_name, is_normalized_env_name};

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "tokio")]
mod tokio;
#[cfg(feature = "tonic")]
mod tonic;

/// Header name of the traceparent.
pub const TRACEPARENT: &str = "traceparent";
/// Header name of the tracestate.
pub const TRACESTATE: &str = "tracestate";
/// Header name of the baggage.
pub const BAGGAGE: &str = "baggage";

/// Environment variable a child process reads its traceparent from.
pub const ENV_TRACEPARENT: &str = "TRACEPARENT";
/// Environment variable a child process reads its tracestate from.
pub const ENV_TRACESTATE: &str = "TRACESTATE";
/// Environment variable a child process reads its baggage from.
pub const ENV_BAGGAGE: &str = "BAGGAGE";

/// Why a carrier refused a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CarrierError {
    /// The name is not one this carrier can hold.
    #[error("carrier cannot hold a field named {0:?}")]
    UnknownField(String),
    /// The name is not a valid header or metadata name.
    #[error("invalid header name {0:?}")]
    InvalidName(String),
    /// The value is not a valid header or metadata value.
    #[error("invalid value for header {0:?}")]
    InvalidValue(String),
}

/// Read access to trace context fields. Names are compared case-insensitively.
///
/// ```
/// use tracewire_context::Carrier;
///
/// let headers = [("TraceParent", "a"), ("tracestate", "x=1"), ("TRACESTATE", "y=2")];
/// assert_eq!(headers.get("traceparent"), Some("a"));
/// assert_eq!(headers.get_all("tracestate").collect::<Vec<_>>(), ["x=1", "y=2"]);
/// ```
pub trait Carrier {
    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<&str>;

    /// Every value of `name`, in the order received.
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get(name).into_iter()
    }

    /// The names present (as stored; possibly repeated for repeated headers).
    fn keys(&self) -> impl Iterator<Item = &str>;
}

/// Write access to trace context fields.
pub trait CarrierMut {
    /// Sets `name` to `value`, replacing every earlier value of that name.
    ///
    /// # Errors
    /// When the carrier cannot represent the name or the value. Values this crate
    /// produces (traceparent, tracestate, baggage) are always valid header values.
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError>;
}

impl<C: Carrier + ?Sized> Carrier for &C {
    fn get(&self, name: &str) -> Option<&str> {
        (**self).get(name)
    }
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        (**self).get_all(name)
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        (**self).keys()
    }
}

impl<C: CarrierMut + ?Sized> CarrierMut for &mut C {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        (**self).set(name, value)
    }
}

/// The trace context of one RPC envelope: the three header values as plain strings (empty
/// means absent). It is what `tracewire-proto`'s `TraceCarrier` message maps to.
///
/// ```
/// use tracewire_context::{Carrier, CarrierMut, TraceCarrier};
///
/// let mut c = TraceCarrier::default();
/// c.set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(c.get("traceparent"), Some(c.traceparent.as_str()));
/// assert_eq!(c.get("baggage"), None);
/// assert!(c.set("x-other", "1").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TraceCarrier {
    /// The `traceparent` value.
    pub traceparent: String,
    /// The `tracestate` value.
    pub tracestate: String,
    /// The `baggage` value.
    pub baggage: String,
}

impl TraceCarrier {
    fn field(&self, name: &str) -> Option<&String> {
        if name.eq_ignore_ascii_case(TRACEPARENT) {
            Some(&self.traceparent)
        } else if name.eq_ignore_ascii_case(TRACESTATE) {
            Some(&self.tracestate)
        } else if name.eq_ignore_ascii_case(BAGGAGE) {
            Some(&self.baggage)
        } else {
            None
        }
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.traceparent.is_empty() && self.tracestate.is_empty() && self.baggage.is_empty()
    }
}

impl Carrier for TraceCarrier {
    fn get(&self, name: &str) -> Option<&str> {
        self.field(name).filter(|v| !v.is_empty()).map(String::as_str)
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        [(TRACEPARENT, &self.traceparent), (TRACESTATE, &self.tracestate), (BAGGAGE, &self.baggage)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k)
    }
}

impl CarrierMut for TraceCarrier {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        let slot = if name.eq_ignore_ascii_case(TRACEPARENT) {
            &mut self.traceparent
        } else if name.eq_ignore_ascii_case(TRACESTATE) {
            &mut self.tracestate
        } else if name.eq_ignore_ascii_case(BAGGAGE) {
            &mut self.baggage
        } else {
            return Err(CarrierError::UnknownField(name.to_owned()));
        };
        value.clone_into(slot);
        Ok(())
    }
}

impl<S: std::hash::BuildHasher> Carrier for HashMap<String, String, S> {
    fn get(&self, name: &str) -> Option<&str> {
        if let Some(v) = HashMap::get(self, name) {
            return Some(v);
        }
        self.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        HashMap::keys(self).map(String::as_str)
    }
}

impl<S: std::hash::BuildHasher> CarrierMut for HashMap<String, String, S> {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        self.retain(|k, _| !k.eq_ignore_ascii_case(name));
        self.insert(name.to_ascii_lowercase(), value.to_owned());
        Ok(())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Carrier for [(K, V)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }
    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter().filter(move |(k, _)| k.as_ref().eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(k, _)| k.as_ref())
    }
}

/// Arrays and vectors of pairs read as the slice they hold. A macro, not a blanket impl
/// over `Deref<Target = [(K, V)]>`: arrays do not implement `Deref`, and that impl would
/// overlap the one for `&C`.
macro_rules! carrier_as_slice {
    ($($ty:ty $(, const $n:ident)?);+ $(;)?) => {$(
        impl<K: AsRef<str>, V: AsRef<str> $(, const $n: usize)?> Carrier for $ty {
            fn get(&self, name: &str) -> Option<&str> {
                Carrier::get(self.as_slice(), name)
            }
            fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
                self.as_slice().get_all(name)
            }
            fn keys(&self) -> impl Iterator<Item = &str> {
                self.as_slice().keys()
            }
        }
    )+};
}

carrier_as_slice!([(K, V); N], const N; Vec<(K, V)>);

impl CarrierMut for Vec<(String, String)> {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        self.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.push((name.to_ascii_lowercase(), value.to_owned()));
        Ok(())
    }
}

/// Writes each field as an environment variable of the child (`TRACEPARENT`, ...).
impl CarrierMut for std::process::Command {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        check_env_value(name, value)?;
        self.env(env_var_name(name), value);
        Ok(())
    }
}

/// An environment variable's value cannot hold NUL (POSIX: the environment is C strings).
/// Names need no check: a normalized name ([`env_var_name`]) is `[A-Z_][A-Z0-9_]*`.
pub(crate) fn check_env_value(name: &str, value: &str) -> Result<(), CarrierError> {
    if value.contains('\0') {
        return Err(CarrierError::InvalidValue(name.to_owned()));
    }
    Ok(())
}
