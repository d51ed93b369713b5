//! Environment variables as carriers, as the OpenTelemetry specification defines them
//! ("Environment Variables as Context Propagation Carriers", `context/env-carriers.md`,
//! Release Candidate): the carrier is format-agnostic (values are opaque strings, whatever
//! the propagator: W3C trace context, baggage, B3, Jaeger), and every key is normalized
//! ("Key Name Normalization"):
//!
//! - an empty key becomes `_`;
//! - ASCII letters are uppercased;
//! - every character that is not an ASCII letter, digit or `_` becomes `_`;
//! - a name that would start with an ASCII digit gets a `_` prefix.
//!
//! `Get` normalizes the requested key and reads only that name (never a variable whose own
//! name is not normalized, such as `x-b3-traceid`); `Set` writes the normalized name; `Keys`
//! lists only normalized names.
//!
//! Operational guidance (the specification's, non-normative): read the context once at
//! start-up ([`EnvCarrier::from_process`]); give each child its own copy with its context
//! injected ([`EnvCarrier::apply_to`], or [`crate::CarrierMut`] on `Command`), never by
//! changing the parent's own environment; do not put secrets in baggage that children see.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::{Carrier, CarrierError, CarrierMut, ENV_BAGGAGE, ENV_TRACEPARENT, ENV_TRACESTATE, TraceCarrier};

/// The normalized environment variable name of a propagation key.
///
/// ```
/// use tracewire_context::env_var_name;
///
/// assert_eq!(env_var_name("traceparent"), "TRACEPARENT");
/// assert_eq!(env_var_name("x-b3-traceid"), "X_B3_TRACEID");
/// assert_eq!(env_var_name("uber-trace-id"), "UBER_TRACE_ID");
/// assert_eq!(env_var_name("1key"), "_1KEY");
/// assert_eq!(env_var_name(""), "_");
/// assert_eq!(env_var_name("clé"), "CL_");
/// ```
pub fn env_var_name(key: &str) -> String {
    if key.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(key.len() + 1);
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(key.chars().map(|c| match c {
        'a'..='z' => c.to_ascii_uppercase(),
        'A'..='Z' | '0'..='9' | '_' => c,
        _ => '_',
    }));
    out
}

/// Whether `name` is a normalized environment variable name: non-empty and unchanged by
/// [`env_var_name`], that is, matching `^[A-Z_][A-Z0-9_]*$`.
///
/// ```
/// use tracewire_context::is_normalized_env_name;
///
/// assert!(is_normalized_env_name("TRACEPARENT"));
/// assert!(is_normalized_env_name("_1KEY"));
/// assert!(!is_normalized_env_name("traceparent"));
/// assert!(!is_normalized_env_name("X-B3-TRACEID"));
/// assert!(!is_normalized_env_name("1KEY"));
/// assert!(!is_normalized_env_name(""));
/// ```
pub fn is_normalized_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.first().is_some_and(|c| c.is_ascii_uppercase() || *c == b'_')
        && b.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

fn normalized(key: &str) -> Cow<'_, str> {
    if is_normalized_env_name(key) { Cow::Borrowed(key) } else { Cow::Owned(env_var_name(key)) }
}

/// A set of environment variables as a carrier, for any propagator: a snapshot of this
/// process's environment ([`EnvCarrier::from_process`]) to extract from at start-up, or
/// an empty one to inject into and give to a child ([`EnvCarrier::apply_to`]).
///
/// It holds only variables with normalized names; [`Carrier::get`] normalizes the key it is
/// asked for, so `get("traceparent")` reads `TRACEPARENT` and `get("x-b3-traceid")` reads
/// `X_B3_TRACEID`, and a variable named `x-b3-traceid` is never read.
///
/// ```
/// use tracewire_context::{Carrier, CarrierMut, EnvCarrier, extract};
///
/// // A child reads its parent's context at start-up: EnvCarrier::from_process().
/// let env = EnvCarrier::from_vars([
///     ("TRACEPARENT", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
///     ("X_B3_TRACEID", "4bf92f3577b34da6a3ce929d0e0e4736"),
///     ("x-b3-spanid", "not read: the name is not normalized"),
///     ("PATH", "/usr/bin"),
/// ]);
/// assert!(extract(&env).continued());
/// assert_eq!(env.get("x-b3-traceid"), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
/// assert_eq!(env.get("x-b3-spanid"), None);
///
/// // A parent injects into a copy for one child.
/// let mut child = EnvCarrier::default();
/// child.set("uber-trace-id", "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1")?;
/// assert_eq!(child.vars().collect::<Vec<_>>(), [("UBER_TRACE_ID", "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1")]);
/// let mut command = std::process::Command::new("true");
/// child.apply_to(&mut command);
/// # Ok::<(), tracewire_context::CarrierError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvCarrier {
    vars: BTreeMap<String, String>,
}

impl EnvCarrier {
    /// This process's environment: every variable whose name is normalized and whose name
    /// and value are UTF-8 (others cannot carry context and are left out).
    pub fn from_process() -> Self {
        Self::from_vars(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))))
    }

    /// The carrier of `(name, value)` pairs, as an environment holds them: pairs whose name
    /// is not normalized are left out (the specification: `Get` "MUST NOT read a
    /// non-normalized environment variable").
    pub fn from_vars<K: AsRef<str>, V: AsRef<str>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        let vars = vars
            .into_iter()
            .filter(|(k, _)| is_normalized_env_name(k.as_ref()))
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        Self { vars }
    }

    /// The value of `key`'s normalized name (as [`Carrier::get`]; inherent, so that code
    /// that also imports opentelemetry's `Extractor` is not ambiguous).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(normalized(key).as_ref()).map(String::as_str)
    }

    /// The names held, all normalized (as [`Carrier::keys`]).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    /// Sets `key`'s normalized name to `value` (as [`CarrierMut::set`]).
    ///
    /// # Errors
    /// [`CarrierError::InvalidValue`] for a value holding a NUL, which no environment can hold.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), CarrierError> {
        super::check_env_value(key, value)?;
        self.vars.insert(env_var_name(key), value.to_owned());
        Ok(())
    }

    /// The variables, by name.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets every variable on `command` (on top of the environment it inherits).
    pub fn apply_to(&self, command: &mut std::process::Command) {
        command.envs(self.vars());
    }

    /// Sets every variable on a `tokio::process::Command`.
    #[cfg(feature = "tokio")]
    pub fn apply_to_tokio(&self, command: &mut ::tokio::process::Command) {
        command.envs(self.vars());
    }

    /// The W3C values (`TRACEPARENT`, `TRACESTATE`, `BAGGAGE`) as a [`TraceCarrier`].
    pub fn into_inner(mut self) -> TraceCarrier {
        let mut take = |name: &str| self.vars.remove(name).unwrap_or_default();
        TraceCarrier {
            traceparent: take(ENV_TRACEPARENT),
            tracestate: take(ENV_TRACESTATE),
            baggage: take(ENV_BAGGAGE),
        }
    }
}

impl Carrier for EnvCarrier {
    fn get(&self, name: &str) -> Option<&str> {
        EnvCarrier::get(self, name)
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        EnvCarrier::keys(self)
    }
}

/// Sets the normalized name. Values are opaque (the specification: the carrier "MUST NOT
/// apply propagation-format-specific logic"); only a NUL, which no environment can hold, is
/// refused.
impl CarrierMut for EnvCarrier {
    fn set(&mut self, name: &str, value: &str) -> Result<(), CarrierError> {
        EnvCarrier::set(self, name, value)
    }
}

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Extractor for EnvCarrier {
    fn get(&self, key: &str) -> Option<&str> {
        EnvCarrier::get(self, key)
    }
    fn keys(&self) -> Vec<&str> {
        EnvCarrier::keys(self).collect()
    }
}

/// For opentelemetry propagators, which cannot report an error: a value holding a NUL is
/// left out (no environment can hold it).
#[cfg(feature = "otel")]
impl opentelemetry::propagation::Injector for EnvCarrier {
    fn set(&mut self, key: &str, value: String) {
        if !value.contains('\0') {
            self.vars.insert(env_var_name(key), value);
        }
    }
}
