//! `tracewire exec-server`: serves remote execs directly (TCP or a Unix socket) or behind a
//! relay, with an optional admin listener, until SIGINT or SIGTERM ([`crate::shutdown`]).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tracewire_exec::{ExecConfig, ExecServer};
use tracewire_rpc::ServerConfig;
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_telemetry::ExportStats;

use crate::flags::{self, ViaRelay};
use crate::shutdown;

/// `tracewire exec-server`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ExecServerArgs {
    /// Address to listen on: HOST:PORT (an IP address) or unix:PATH.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070", value_parser = flags::exec_address)]
    listen: Address,
    /// Keep a client's processes running when it disconnects.
    #[arg(long)]
    keep_on_disconnect: bool,
    /// Do not give children TRACEPARENT, TRACESTATE and BAGGAGE (saves copying the
    /// server's environment at every spawn; the process spans are still recorded).
    #[arg(long)]
    no_child_trace_context: bool,
    /// Serve on a non-loopback address even though direct connections are neither
    /// authenticated nor encrypted (prefer --relay, which is both).
    #[arg(long)]
    insecure_allow_remote: bool,
    #[command(flatten)]
    relay: ViaRelay,
    /// The server's private key (from `tracewire keygen`), with --relay.
    #[arg(long, requires = "relay")]
    key: Option<PathBuf>,
    /// Persist process history in this SQLite file (answers `List`).
    #[arg(long)]
    db: Option<PathBuf>,
    #[command(flatten)]
    admin: AdminArgs,
    /// On SIGINT or SIGTERM, how long running processes and connected clients get to
    /// finish before the processes are killed (default 5s; also TRACEWIRE_DRAIN_TIMEOUT_MS,
    /// in milliseconds).
    #[arg(long, value_name = "DURATION", value_parser = flags::duration)]
    drain_timeout: Option<Duration>,
    /// --drain-timeout in milliseconds.
    #[arg(long, hide = true, value_name = "MS", env = "TRACEWIRE_DRAIN_TIMEOUT_MS")]
    drain_timeout_ms: Option<u64>,
}

/// The admin listener (worker dashboard, metrics, profiles); off unless --admin is given.
#[derive(clap::Args)]
struct AdminArgs {
    /// Serve the admin routes (dashboard at /metrics, /api/metrics, Prometheus, CPU
    /// profiles) on HOST:PORT. Needs a token: --admin-token-file or TRACEWIRE_ADMIN_TOKEN.
    #[arg(long, value_name = "ADDR", value_parser = flags::socket_address)]
    admin: Option<SocketAddr>,
    /// A file holding the admin token (a trailing newline is ignored). Without it, the
    /// token is read from TRACEWIRE_ADMIN_TOKEN.
    #[arg(long, value_name = "PATH", requires = "admin")]
    admin_token_file: Option<PathBuf>,
    /// Flag a worker as a zombie after this long without output.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = flags::duration_or_seconds)]
    reap_ttl: Duration,
}

impl AdminArgs {
    /// Binds the admin listener when asked for (before anything else starts, so a missing
    /// token stops the server at once).
    async fn bind(&self) -> Result<Option<tracewire_admin::AdminServer>> {
        let Some(addr) = self.admin else { return Ok(None) };
        let token = match (&self.admin_token_file, std::env::var("TRACEWIRE_ADMIN_TOKEN")) {
            (Some(path), _) => Some(tracewire_admin::Token::from_file(path)?),
            (None, Ok(t)) => Some(tracewire_admin::Token::new(&t).context("TRACEWIRE_ADMIN_TOKEN")?),
            (None, Err(_)) => None,
        };
        let server = match tracewire_admin::AdminServer::bind(addr, token).await {
            Ok(server) => server,
            Err(e @ tracewire_admin::AdminError::TokenRequired { .. }) => {
                bail!("{e}; give --admin-token-file PATH or set TRACEWIRE_ADMIN_TOKEN")
            }
            Err(e) => return Err(e.into()),
        };
        // Tests and scripts read this line to learn the bound address (port 0 works).
        println!("admin listening on {}", server.local_addr());
        std::io::stdout().flush()?;
        Ok(Some(server))
    }

    fn config(&self) -> tracewire_admin::AdminConfig {
        let mut config = tracewire_admin::AdminConfig::default();
        config.reap_ttl = self.reap_ttl;
        config
    }
}

impl ExecServerArgs {
    /// How long a stop waits for the processes and clients (--drain-timeout).
    pub(crate) fn drain_timeout(&self) -> Duration {
        flags::or_millis(self.drain_timeout, self.drain_timeout_ms, shutdown::DEFAULT_DRAIN)
    }
}

/// Runs `tracewire exec-server` until stopped; `export` feeds the admin dashboard's
/// telemetry panel.
pub(crate) async fn run(args: ExecServerArgs, export: Option<ExportStats>) -> Result<i32> {
    let drain = args.drain_timeout();
    // Before anything is bound: from here on a signal stops the server gracefully.
    let stop = shutdown::listen()?;
    let ep = args.relay.endpoint()?;
    let h = Arc::new(handler(args.keep_on_disconnect, !args.no_child_trace_context, args.db.as_deref())?);
    let admin = match args.admin.bind().await? {
        Some(server) => {
            let mut monitor = tracewire_admin::Monitor::new(Arc::clone(&h), args.admin.config());
            if let Some(stats) = export {
                monitor = monitor.with_export_stats(stats);
            }
            let shutdown = stop.future();
            Some(AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = server.serve(monitor, shutdown).await {
                    eprintln!("tracewire: {e}");
                }
            })))
        }
        None => None,
    };
    let served = match ep {
        Some(ep) => via_relay(ep, args.key, Arc::clone(&h), &stop, drain).await,
        None => direct(&args.listen, Arc::clone(&h), args.insecure_allow_remote, &stop, drain).await,
    };
    // The admin listener stopped accepting at the signal; its requests in flight (a CPU
    // profile, say) get a short grace, then are dropped.
    if let Some(mut admin) = admin {
        let _ = tokio::time::timeout(shutdown::KILL_GRACE, &mut admin.0).await;
    }
    shutdown::flush_store(&h).await;
    served.map(|()| 0)
}

/// The exec-server handler the flags describe.
fn handler(keep_on_disconnect: bool, child_trace_context: bool, db: Option<&Path>) -> Result<ExecServer> {
    let mut config = ExecConfig::default();
    config.kill_on_disconnect = !keep_on_disconnect;
    config.child_trace_context = child_trace_context;
    let server = ExecServer::new(config);
    Ok(match db {
        Some(path) => {
            server.with_store(tracewire_exec::Store::open(path).with_context(|| format!("opening {}", path.display()))?)
        }
        None => server,
    })
}

/// Stops a background task when the command ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves directly until a stop is requested, then stops gracefully: no new connections,
/// [`shutdown::drain`], then the gRPC server's own stop (bounded).
async fn direct(
    address: &Address,
    handler: Arc<ExecServer>,
    insecure_allow_remote: bool,
    stop: &shutdown::Stop,
    drain: Duration,
) -> Result<()> {
    if let Address::Tcp(a) = address
        && !a.ip().is_loopback()
        && !insecure_allow_remote
    {
        bail!(
            "refusing to run commands for anyone who can reach {a}: direct connections are not authenticated. \
             Listen on 127.0.0.1 or a unix: socket, serve through a relay (--relay, end-to-end encrypted), \
             or pass --insecure-allow-remote"
        );
    }
    let bound = BoundServer::bind(address).await?;
    // Tests and scripts read this line to learn the bound address (port 0 works).
    println!("listening on {}", bound.local_address());
    std::io::stdout().flush()?;
    // Its own task, so that it keeps closing connections while the processes drain.
    let mut server = tokio::spawn(bound.run(Arc::clone(&handler), ServerConfig::default(), stop.future()));
    tokio::select! {
        served = &mut server => return Ok(served??),
        () = stop.requested() => {}
    }
    // Idle, the server's connections are closing (told to at the signal): a short grace.
    // Otherwise the clients left over are cut off now.
    let grace = if shutdown::drain(&handler, drain).await { shutdown::KILL_GRACE } else { Duration::ZERO };
    match tokio::time::timeout(grace, &mut server).await {
        Ok(served) => served??,
        Err(_) => server.abort(),
    }
    Ok(())
}

/// Serves behind a relay until a stop is requested; serving goes on while the processes
/// drain (new Starts are refused meanwhile).
async fn via_relay(
    ep: tracewire_relay::RelayEndpoint,
    key: Option<PathBuf>,
    handler: Arc<ExecServer>,
    stop: &shutdown::Stop,
    drain: Duration,
) -> Result<()> {
    let key = key.context("--relay needs --key (the server's private key)")?;
    let keypair = tracewire_relay::Keypair::read(&key)?;
    println!("serving session {} via {}", ep.session, ep.relay);
    std::io::stdout().flush()?;
    let shutdown = async {
        stop.requested().await;
        let _ = shutdown::drain(&handler, drain).await;
    };
    tracewire_relay::serve_via_relay(ep, keypair, Arc::clone(&handler), ServerConfig::default(), shutdown).await;
    Ok(())
}
