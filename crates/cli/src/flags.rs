//! What several subcommands' flags share: the value parsers of addresses and durations,
//! and the flag groups `--slo`/`--slo-file` and `--relay`/`--session`/`--token`.
//!
//! Every duration flag is written one way, a number and a unit: `250ms`, `30s`, `5m`, `12h`,
//! `7d`, or a sum of them (`1h30m`) ([`duration`]). Bare numbers keep working where
//! scripts pass them, in their unit, undocumented: the hidden aliases `--drain-timeout-ms`,
//! `--idle-timeout-ms`, `--timeout-ms`, `--retry-for-ms` take milliseconds, `--reap-ttl`
//! and `--prune-every` take seconds (tests: the parse tests in `main.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tracewire_rpc::grpc::Address;

/// A duration flag's value: a number and a unit, `ms`, `s`, `m`, `h` or `d` (`250ms`, `30s`,
/// `5m`, `7d`), or a sum of such (`1h30m`).
///
/// # Errors
/// A message for clap when `text` is not such a duration (a bare number has no unit).
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad =
        || format!("{text:?} is not a duration: a number and a unit, ms, s, m, h or d (250ms, 30s, 5m, 7d, 1h30m)");
    if text.is_empty() {
        return Err(bad());
    }
    let (mut rest, mut total) = (text, 0u64);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest.get(..digits).filter(|d| !d.is_empty()).and_then(|d| d.parse().ok()).ok_or_else(bad)?;
        rest = &rest[digits..];
        let (millis, len) = if rest.starts_with("ms") {
            (1, 2)
        } else {
            match rest.as_bytes().first() {
                Some(b's') => (1_000, 1),
                Some(b'm') => (60_000, 1),
                Some(b'h') => (3_600_000, 1),
                Some(b'd') => (86_400_000, 1),
                _ => return Err(bad()),
            }
        };
        total = n
            .checked_mul(millis)
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("{text:?}: too long"))?;
        rest = &rest[len..];
    }
    Ok(Duration::from_millis(total))
}

/// [`duration`], or a bare number of seconds: the flags that took seconds before units
/// existed (`--reap-ttl`, `--prune-every`) still take them.
///
/// # Errors
/// As [`duration`].
pub(crate) fn duration_or_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => duration(text),
    }
}

/// [`duration_or_seconds`], not zero (an interval).
///
/// # Errors
/// As [`duration`], and for zero.
pub(crate) fn interval(text: &str) -> Result<Duration, String> {
    let d = duration_or_seconds(text)?;
    if d.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(d)
}

/// The value of a duration flag that has a hidden alias in milliseconds: the flag, else the
/// alias, else `default`.
pub(crate) fn or_millis(flag: Option<Duration>, millis: Option<u64>, default: Duration) -> Duration {
    flag.or(millis.map(Duration::from_millis)).unwrap_or(default)
}

/// An exec-server address: `HOST:PORT` (an IP address) or `unix:PATH`.
///
/// # Errors
/// A message for clap naming both forms.
pub(crate) fn exec_address(text: &str) -> Result<Address, String> {
    text.parse::<Address>()
        .map_err(|_| format!("{text:?} is neither HOST:PORT with an IP address (127.0.0.1:7070) nor unix:PATH"))
}

/// A TCP address, `HOST:PORT` with an IP address.
///
/// # Errors
/// A message for clap with an example.
pub(crate) fn socket_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not HOST:PORT with an IP address (127.0.0.1:7080)"))
}

/// Service-level objectives to check.
#[derive(clap::Args)]
pub(crate) struct SloArgs {
    /// An objective, METRIC.STAT<=THRESHOLD, e.g. 'e2e.p99<=250ms', 'first_output.p90<=50ms',
    /// 'process.spawn.p50<=5ms' (repeatable). Exit status 3 when one fails.
    #[arg(long)]
    pub(crate) slo: Vec<String>,
    /// A TOML file of objectives: slos = ["e2e.p99<=250ms", ...].
    #[arg(long)]
    pub(crate) slo_file: Option<std::path::PathBuf>,
}

impl SloArgs {
    /// The objectives given, parsed.
    pub(crate) fn load(&self) -> Result<Vec<tracewire_collector::Slo>> {
        crate::report::load_slos(&self.slo, self.slo_file.as_deref())
    }

    /// Whether no objective was given (neither --slo nor --slo-file).
    pub(crate) fn is_empty(&self) -> bool {
        self.slo.is_empty() && self.slo_file.is_none()
    }
}

/// Going through a relay instead of a direct connection.
#[derive(clap::Args)]
pub(crate) struct ViaRelay {
    /// The relay (http://HOST:PORT).
    #[arg(long)]
    relay: Option<String>,
    /// The session both ends name, with --relay.
    #[arg(long, requires = "relay")]
    session: Option<String>,
    /// The relay's attach token (also TRACEWIRE_RELAY_TOKEN), with --relay.
    #[arg(long = "token", env = "TRACEWIRE_RELAY_TOKEN", hide_env_values = true)]
    relay_token: Option<String>,
    /// Also send each message's traceparent in cleartext so the relay can emit
    /// relay.forward spans (timing metadata only, never content).
    #[arg(long)]
    expose_traceparent: bool,
}

impl ViaRelay {
    /// The relay endpoint, when --relay was given.
    pub(crate) fn endpoint(&self) -> Result<Option<tracewire_relay::RelayEndpoint>> {
        let Some(relay) = &self.relay else { return Ok(None) };
        let session = self.session.clone().context("--relay needs --session")?;
        let mut ep = tracewire_relay::RelayEndpoint::new(relay.clone(), session);
        ep.token.clone_from(&self.relay_token);
        ep.expose_traceparent = self.expose_traceparent;
        Ok(Some(ep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_a_number_and_a_unit() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(duration("1s500ms"), Ok(Duration::from_millis(1_500)));
        for bad in ["", "5", "ms", "5x", "7 weeks", "-5s", "1.5s", "999999999999999d"] {
            let e = duration(bad).unwrap_err();
            assert!(e.contains("duration") || e.contains("too long"), "{bad}: {e}");
        }
    }

    #[test]
    fn seconds_flags_still_take_a_bare_number() {
        assert_eq!(duration_or_seconds("300"), Ok(Duration::from_secs(300)));
        assert_eq!(duration_or_seconds("5m"), Ok(Duration::from_secs(300)));
        assert!(interval("0").is_err());
        assert!(interval("0s").is_err());
        assert_eq!(interval("1"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn addresses_name_the_forms_they_take() {
        assert!(matches!(exec_address("127.0.0.1:0"), Ok(Address::Tcp(_))));
        assert!(matches!(exec_address("unix:/tmp/x.sock"), Ok(Address::Unix(_))));
        for bad in ["localhost:7070", "127.0.0.1", "unix:", "nonsense"] {
            let e = exec_address(bad).unwrap_err();
            assert!(e.contains("HOST:PORT") && e.contains("unix:PATH"), "{bad}: {e}");
        }
        assert!(socket_address("127.0.0.1:7080").is_ok());
        assert!(socket_address("unix:/x").unwrap_err().contains("HOST:PORT"));
    }
}
