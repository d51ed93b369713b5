//! `tracewire relay`: pairs clients and exec-servers by session and forwards ciphertext,
//! until SIGINT or SIGTERM ([`crate::shutdown`]).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::flags;
use crate::shutdown;

/// `tracewire relay`'s arguments.
#[derive(clap::Args)]
pub(crate) struct RelayArgs {
    /// Address to listen on: HOST:PORT (an IP address).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7080", value_parser = flags::socket_address)]
    listen: SocketAddr,
    /// Require this attach token (also TRACEWIRE_RELAY_TOKEN). Required on a
    /// non-loopback address.
    #[arg(long, env = "TRACEWIRE_RELAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Reset an end (Reset IDLE) that sends no frame, not even a heartbeat, for this long
    /// (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = flags::duration)]
    idle_timeout: Option<Duration>,
    /// --idle-timeout in milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    idle_timeout_ms: Option<u64>,
    /// Clients one session serves at once; one more gets a retryable
    /// Reset(SESSION_FULL).
    #[arg(long, default_value_t = 64)]
    max_clients: usize,
}

/// The default of `--idle-timeout`.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `tracewire relay` until stopped.
pub(crate) async fn run(args: RelayArgs) -> Result<i32> {
    // Before anything is bound: from here on a signal stops the relay gracefully.
    let stop = shutdown::listen()?;
    let addr = args.listen;
    if args.token.is_none() && !addr.ip().is_loopback() {
        bail!("refusing to run an open relay on {addr}: give --token (or TRACEWIRE_RELAY_TOKEN)");
    }
    let (listener, local) = tracewire_relay::RelayServer::bind(addr).await?;
    println!("listening on {local}");
    std::io::stdout().flush()?;
    let mut config = tracewire_relay::RelayConfig::default();
    config.token = args.token;
    config.idle_timeout = flags::or_millis(args.idle_timeout, args.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT);
    config.max_clients_per_session = args.max_clients;
    // The relay's own graceful stop: no new attachments, every session reset, its
    // connections closed within a bound.
    tracewire_relay::RelayServer::new(config).serve(listener, stop.requested()).await?;
    Ok(0)
}
