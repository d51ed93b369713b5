//! Configuration from the OpenTelemetry environment variables.
//!
//! Rules follow the OpenTelemetry specification's "Environment Variable Specification":
//! a value the SDK cannot use for a numeric, sampler, propagator or resource setting is
//! reported as a warning and the default is used; an endpoint, protocol or header list
//! that cannot be used is an error naming the variable, since guessing would send data
//! somewhere the user did not ask for.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Why the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable holds a value that cannot be used; the message says why.
    #[error("{var}: {reason} (value {value:?})")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { var, value: value.to_owned(), reason: reason.into() }
}

/// The OTLP wire protocol (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Protocol {
    /// `grpc`
    Grpc,
    /// `http/protobuf` (the specification's default)
    HttpProtobuf,
    /// `http/json`
    HttpJson,
}

impl Protocol {
    /// The value as written in `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::HttpProtobuf => "http/protobuf",
            Self::HttpJson => "http/json",
        }
    }
}

/// The sampler (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Sampler {
    /// `always_on`
    AlwaysOn,
    /// `always_off`
    AlwaysOff,
    /// `traceidratio` with its ratio
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the default)
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio` with its ratio
    ParentBasedTraceIdRatio(f64),
}

/// Which fields the installed propagator handles (`OTEL_PROPAGATORS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Propagators {
    /// `tracecontext`: `traceparent` and `tracestate`.
    pub trace_context: bool,
    /// `baggage`.
    pub baggage: bool,
}

/// Batching and queueing of exported spans (`OTEL_BSP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// `OTEL_BSP_SCHEDULE_DELAY`: longest wait before a partial batch is exported.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_EXPORT_TIMEOUT`: longest one export may take.
    pub export_timeout: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans queued before new ones are dropped (and counted).
    pub max_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: most spans in one export.
    pub max_export_batch_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            schedule_delay: Duration::from_secs(5),
            export_timeout: Duration::from_secs(30),
            max_queue_size: 2048,
            max_export_batch_size: 512,
        }
    }
}

/// The disk spool (`TRACEWIRE_SPOOL_DIR`, `TRACEWIRE_SPOOL_MAX_BYTES`): spans the
/// collector does not take go to a bounded queue on disk and are exported, oldest first,
/// when it answers again, by this process or a later one using the same directory. Used
/// by [`crate::Pipeline::new`] and [`crate::init`] (the OTLP exporter); see
/// `docs/telemetry.md`, "Disk spool".
///
/// ```
/// use tracewire_telemetry::{Config, SpoolConfig};
///
/// let cfg = Config::from_vars([("TRACEWIRE_SPOOL_DIR", "/var/spool/my-service")])?;
/// let spool = cfg.spool.as_ref().unwrap();
/// assert_eq!(spool.max_bytes, SpoolConfig::DEFAULT_MAX_BYTES); // 64 MiB
///
/// let mut cfg = Config::default();
/// cfg.spool = Some(SpoolConfig::new("/tmp/spans").max_bytes(8 << 20));
/// # Ok::<(), tracewire_telemetry::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolConfig {
    /// `TRACEWIRE_SPOOL_DIR`: the directory (created if missing). One process uses it at a
    /// time (a lock file); give each instance of a service its own.
    pub dir: PathBuf,
    /// `TRACEWIRE_SPOOL_MAX_BYTES`: the most its files may take; when full, the oldest
    /// spans are evicted (and counted) to make room.
    pub max_bytes: u64,
}

impl SpoolConfig {
    /// The default bound: 64 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

    /// A spool in `dir` with the default bound.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), max_bytes: Self::DEFAULT_MAX_BYTES }
    }

    /// The same with another bound, in bytes.
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

/// Everything [`crate::init`] needs. Build it with [`Config::from_env`] (or
/// [`Config::from_vars`] in tests), then adjust fields as needed.
///
/// ```
/// use tracewire_telemetry::{Config, Protocol};
///
/// let cfg = Config::from_vars([
///     ("OTEL_SERVICE_NAME", "exec-server"),
///     ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
///     ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
///     ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
/// ])?;
/// assert_eq!(cfg.service_name, "exec-server");
/// assert_eq!(cfg.protocol, Protocol::Grpc);
/// assert_eq!(cfg.batch.max_queue_size, 2048); // invalid: a warning and the default
/// assert!(cfg.warnings[0].contains("OTEL_BSP_MAX_QUEUE_SIZE"));
///
/// let err = Config::from_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")]).unwrap_err();
/// assert!(err.to_string().starts_with("OTEL_EXPORTER_OTLP_PROTOCOL"));
/// # Ok::<(), tracewire_telemetry::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `OTEL_SDK_DISABLED=true`: no spans are recorded or exported; logging still works and
    /// trace contexts still propagate (see [`crate::init`]).
    pub disabled: bool,
    /// `OTEL_SERVICE_NAME` (or `service.name` in the resource attributes).
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, percent-decoded, in order.
    pub resource_attributes: Vec<(String, String)>,
    /// The traces endpoint URL the exporter sends to.
    pub endpoint: String,
    /// The OTLP protocol.
    pub protocol: Protocol,
    /// Extra headers (gRPC metadata) for every export.
    pub headers: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT`: the exporter's own request timeout.
    pub timeout: Duration,
    /// The sampler.
    pub sampler: Sampler,
    /// The propagator fields.
    pub propagators: Propagators,
    /// Batching and queueing.
    pub batch: BatchConfig,
    /// `TRACEWIRE_SHUTDOWN_TIMEOUT_MS`: how long shutdown may take (default 2 s).
    pub shutdown_timeout: Duration,
    /// `RUST_LOG`: the filter of the log (fmt) layer; `None` means `warn`.
    pub log_filter: Option<String>,
    /// `TRACEWIRE_EXPORT_FILTER`: which `tracing` spans are exported (`EnvFilter` syntax);
    /// `None` means [`crate::DEFAULT_EXPORT_FILTER`].
    pub export_filter: Option<String>,
    /// `TRACEWIRE_CONTEXT_ACTIVATION` (default `false`): `true` makes entering a span also
    /// make its context OpenTelemetry's current one (`opentelemetry::Context::current()`),
    /// for code that reads it inside `tracing` spans (OpenTelemetry's API spans started
    /// without an explicit parent, the global propagator's `inject`). It costs about as much
    /// again as the rest of a stage span, so it is off: tracewire's own helpers
    /// (`current_context`, `inject_current`, `Queued`, ...) work either way.
    pub context_activation: bool,
    /// The disk spool, when `TRACEWIRE_SPOOL_DIR` is set (default: none; undelivered spans
    /// are dropped and counted).
    pub spool: Option<SpoolConfig>,
    /// Problems that fell back to a default, one sentence each naming the variable.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            disabled: false,
            service_name: "unknown_service".to_owned(),
            resource_attributes: Vec::new(),
            endpoint: "http://localhost:4318/v1/traces".to_owned(),
            protocol: Protocol::HttpProtobuf,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            sampler: Sampler::ParentBasedAlwaysOn,
            propagators: Propagators { trace_context: true, baggage: true },
            batch: BatchConfig::default(),
            shutdown_timeout: Duration::from_secs(2),
            log_filter: None,
            export_filter: None,
            context_activation: false,
            spool: None,
            warnings: Vec::new(),
        }
    }
}

/// Every variable [`Config::from_env`] reads.
pub const VARIABLES: &[&str] = &[
    "OTEL_SDK_DISABLED",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_PROPAGATORS",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "TRACEWIRE_SHUTDOWN_TIMEOUT_MS",
    "TRACEWIRE_EXPORT_FILTER",
    "TRACEWIRE_CONTEXT_ACTIVATION",
    "TRACEWIRE_SPOOL_DIR",
    "TRACEWIRE_SPOOL_MAX_BYTES",
    "RUST_LOG",
];

struct Vars(Vec<(&'static str, String)>);

impl Vars {
    /// The value, with surrounding whitespace removed; empty values count as unset, as the
    /// specification says.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }

    /// The signal-specific variable if set, else the general one.
    fn get_either(&self, specific: &'static str, general: &'static str) -> Option<(&'static str, &str)> {
        self.get(specific).map(|v| (specific, v)).or_else(|| self.get(general).map(|v| (general, v)))
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `key=value,key2=value2` with percent-decoded keys and values.
fn parse_pairs(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for member in value.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (k, v) = member.split_once('=').ok_or_else(|| format!("member {member:?} has no '='"))?;
        let k = percent_decode(k.trim()).ok_or_else(|| format!("bad percent-encoding in {member:?}"))?;
        let v = percent_decode(v.trim()).ok_or_else(|| format!("bad percent-encoding in {member:?}"))?;
        if k.is_empty() {
            return Err(format!("member {member:?} has an empty key"));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn parse_endpoint(var: &'static str, value: &str) -> Result<String, ConfigError> {
    if value.starts_with("https://") {
        return Err(invalid(var, value, "https endpoints need TLS, which this build does not include; use http://"));
    }
    let Some(rest) = value.strip_prefix("http://") else {
        return Err(invalid(var, value, "not an http:// URL"));
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid(var, value, "the URL has no valid host"));
    }
    Ok(value.to_owned())
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the variable, for an unusable endpoint, protocol or
    /// header list.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(VARIABLES.iter().filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))))
    }

    /// Reads the configuration from `(variable, value)` pairs; variables this crate does
    /// not know are ignored.
    ///
    /// # Errors
    /// As [`Config::from_env`].
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError> {
        let vars = Vars(
            vars.into_iter()
                .filter_map(|(k, v)| VARIABLES.iter().find(|n| **n == k.as_ref()).map(|n| (*n, v.into())))
                .collect(),
        );
        let mut warnings: Vec<String> = Vec::new();
        let w = &mut warnings;

        let disabled = boolean(&vars, w, "OTEL_SDK_DISABLED", false);

        let mut resource_attributes = Vec::new();
        if let Some(v) = vars.get("OTEL_RESOURCE_ATTRIBUTES") {
            match parse_pairs(v) {
                Ok(p) => resource_attributes = p,
                Err(e) => w.push(format!("OTEL_RESOURCE_ATTRIBUTES: {e}; the whole value is ignored")),
            }
        }
        let service_name = vars
            .get("OTEL_SERVICE_NAME")
            .map(str::to_owned)
            .or_else(|| resource_attributes.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.clone()))
            .unwrap_or_else(|| "unknown_service".to_owned());

        let protocol = match vars.get_either("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL") {
            None | Some((_, "http/protobuf")) => Protocol::HttpProtobuf,
            Some((_, "grpc")) => Protocol::Grpc,
            Some((_, "http/json")) => Protocol::HttpJson,
            Some((var, v)) => return Err(invalid(var, v, "expected grpc, http/protobuf or http/json")),
        };

        let endpoint = if let Some(v) = vars.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            parse_endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", v)?
        } else if let Some(v) = vars.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            let base = parse_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", v)?;
            match protocol {
                Protocol::Grpc => base,
                Protocol::HttpProtobuf | Protocol::HttpJson => format!("{}/v1/traces", base.trim_end_matches('/')),
            }
        } else {
            match protocol {
                Protocol::Grpc => "http://localhost:4317".to_owned(),
                Protocol::HttpProtobuf | Protocol::HttpJson => "http://localhost:4318/v1/traces".to_owned(),
            }
        };

        let mut headers = Vec::new();
        for var in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(v) = vars.get(var) {
                let pairs = parse_pairs(v).map_err(|e| invalid(var, v, e))?;
                for (k, val) in pairs {
                    // Signal-specific headers override general ones of the same name.
                    headers.retain(|(hk, _): &(String, String)| !hk.eq_ignore_ascii_case(&k));
                    headers.push((k.to_ascii_lowercase(), val));
                }
            }
        }

        let timeout = millis(&vars, w, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000);
        let schedule_delay = millis(&vars, w, "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_SCHEDULE_DELAY", 5000);
        let export_timeout = millis(&vars, w, "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_EXPORT_TIMEOUT", 30_000);
        let shutdown_timeout = millis(&vars, w, "TRACEWIRE_SHUTDOWN_TIMEOUT_MS", "TRACEWIRE_SHUTDOWN_TIMEOUT_MS", 2000);
        let max_queue_size = count(&vars, w, "OTEL_BSP_MAX_QUEUE_SIZE", 2048);
        let mut max_export_batch_size = count(&vars, w, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512);
        if max_export_batch_size > max_queue_size {
            w.push(format!(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE: {max_export_batch_size} exceeds OTEL_BSP_MAX_QUEUE_SIZE; using {max_queue_size}"
            ));
            max_export_batch_size = max_queue_size;
        }

        let sampler = parse_sampler(&vars, w);
        let propagators = parse_propagators(&vars, w);
        let log_filter = vars.get("RUST_LOG").map(str::to_owned);
        let export_filter = vars.get("TRACEWIRE_EXPORT_FILTER").map(str::to_owned);
        let context_activation = boolean(&vars, w, "TRACEWIRE_CONTEXT_ACTIVATION", false);
        let spool = vars.get("TRACEWIRE_SPOOL_DIR").map(|dir| {
            let default = SpoolConfig::DEFAULT_MAX_BYTES;
            let max_bytes = match vars.get("TRACEWIRE_SPOOL_MAX_BYTES").map(str::parse::<u64>) {
                None => default,
                Some(Ok(n)) if n > 0 => n,
                Some(_) => {
                    w.push(format!(
                        "TRACEWIRE_SPOOL_MAX_BYTES: {:?} is not a positive number of bytes; using {default}",
                        vars.get("TRACEWIRE_SPOOL_MAX_BYTES").unwrap_or_default()
                    ));
                    default
                }
            };
            SpoolConfig { dir: PathBuf::from(dir), max_bytes }
        });

        Ok(Self {
            disabled,
            service_name,
            resource_attributes,
            endpoint,
            protocol,
            headers,
            timeout,
            sampler,
            propagators,
            batch: BatchConfig { schedule_delay, export_timeout, max_queue_size, max_export_batch_size },
            shutdown_timeout,
            log_filter,
            export_filter,
            context_activation,
            spool,
            warnings,
        })
    }
}

/// A duration in milliseconds from the specific variable, else the general one.
fn millis(vars: &Vars, w: &mut Vec<String>, specific: &'static str, general: &'static str, default: u64) -> Duration {
    match vars.get_either(specific, general) {
        None => Duration::from_millis(default),
        Some((var, v)) => {
            if let Ok(ms) = v.parse::<u64>() {
                Duration::from_millis(ms)
            } else {
                w.push(format!("{var}: {v:?} is not a whole number of milliseconds; using {default}"));
                Duration::from_millis(default)
            }
        }
    }
}

/// A positive count.
/// `true` or `false` (any case); anything else is a warning and the default.
fn boolean(vars: &Vars, w: &mut Vec<String>, var: &'static str, default: bool) -> bool {
    match vars.get(var) {
        None => default,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => {
            w.push(format!("{var}: {v:?} is neither true nor false; using {default}"));
            default
        }
    }
}

fn count(vars: &Vars, w: &mut Vec<String>, var: &'static str, default: usize) -> usize {
    match vars.get(var) {
        None => default,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                w.push(format!("{var}: {v:?} is not a positive whole number; using {default}"));
                default
            }
        },
    }
}

fn parse_ratio(vars: &Vars, w: &mut Vec<String>) -> f64 {
    match vars.get("OTEL_TRACES_SAMPLER_ARG") {
        None => 1.0,
        Some(v) => match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                w.push(format!("OTEL_TRACES_SAMPLER_ARG: {v:?} is not a ratio between 0 and 1; using 1.0"));
                1.0
            }
        },
    }
}

fn parse_sampler(vars: &Vars, w: &mut Vec<String>) -> Sampler {
    match vars.get("OTEL_TRACES_SAMPLER") {
        None | Some("parentbased_always_on") => Sampler::ParentBasedAlwaysOn,
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("parentbased_always_off") => Sampler::ParentBasedAlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatio(parse_ratio(vars, w)),
        Some("parentbased_traceidratio") => Sampler::ParentBasedTraceIdRatio(parse_ratio(vars, w)),
        Some(other) => {
            w.push(format!("OTEL_TRACES_SAMPLER: {other:?} is not supported; using parentbased_always_on"));
            Sampler::ParentBasedAlwaysOn
        }
    }
}

fn parse_propagators(vars: &Vars, w: &mut Vec<String>) -> Propagators {
    let Some(v) = vars.get("OTEL_PROPAGATORS") else {
        return Propagators { trace_context: true, baggage: true };
    };
    let mut p = Propagators { trace_context: false, baggage: false };
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match name {
            "tracecontext" => p.trace_context = true,
            "baggage" => p.baggage = true,
            "none" => {}
            other => w.push(format!("OTEL_PROPAGATORS: {other:?} is not supported and is ignored")),
        }
    }
    p
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.disabled {
            return write!(f, "{}: export disabled", self.service_name);
        }
        write!(f, "{}: {} to {}", self.service_name, self.protocol.as_str(), self.endpoint)
    }
}
