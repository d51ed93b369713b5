//! `tracewire`: run an exec-server, or run a command on one.
//!
//! ```text
//! tracewire exec-server --listen 127.0.0.1:7070          # or --listen unix:/path/to.sock
//! tracewire exec-server --admin 127.0.0.1:7090 --admin-token-file admin.token   # + dashboard
//! tracewire exec --server 127.0.0.1:7070 [--print-trace-id] -- CMD [ARGS...]
//!
//! tracewire keygen --out server.key                      # server.key (0600) + server.key.pub
//! tracewire relay --listen 127.0.0.1:7080 [--token T]
//! tracewire exec-server --relay http://127.0.0.1:7080 --session S --key server.key [--token T]
//! tracewire exec --relay http://127.0.0.1:7080 --session S --server-key server.key.pub [--token T] -- CMD
//!
//! tracewire demo [--execs 50] [--via relay|direct] [--out tracewire-demo] [--slo 'e2e.p99<=250ms']
//! tracewire collect --grpc 127.0.0.1:4317 --http 127.0.0.1:4318 [--db traces.db [--retain 7d] [--max-spans N]] [--out DIR]
//! tracewire report --db traces.db [--slo ...] [--slo-file slo.toml] [--out DIR]
//! tracewire report --otlp-json traces.jsonl --jaeger-json trace.json [--otlp-json ...] [--out DIR]
//! tracewire export --db traces.db (--otlp-json OUT | --otlp-endpoint URL [--protocol http|grpc]) [--trace ID] [--since T] [--until T]
//! tracewire diff BASE NEW [--json OUT] [--out DIR] [--fail-on 'e2e.p90>+10%']... [--confidence 0.95] [--seed N]
//! ```
//!
//! Both export spans with tracewire-telemetry, configured by the `OTEL_*` variables.
//! `exec-server`, `relay` and `collect` serve until SIGINT or SIGTERM, then stop gracefully
//! (`shutdown.rs`); a second signal exits at once.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio::io::AsyncReadExt;
use tracewire_exec::{Event, ExecClient, ExecConfig, ExecServer, OutputStream, Start};
use tracewire_rpc::ServerConfig;
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_telemetry::{Config, init};
use tracing::Instrument;

mod collect;
mod demo;
mod diff;
mod export;
mod inputs;
mod report;
mod shutdown;

#[derive(Parser)]
#[command(name = "tracewire", version, about = "Distributed tracing for remote execution")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an exec-server. SIGINT or SIGTERM stops it gracefully: no new connections or
    /// processes, the running ones get --drain-timeout-ms to finish (then they are killed),
    /// telemetry is flushed (within TRACEWIRE_SHUTDOWN_TIMEOUT_MS), exit status 0. A second
    /// signal exits at once (130 for SIGINT, 143 for SIGTERM).
    ExecServer {
        /// Address to listen on: HOST:PORT (an IP address) or unix:PATH.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
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
        relay: RelayArgs,
        /// The server's private key (from `tracewire keygen`), with --relay.
        #[arg(long, requires = "relay")]
        key: Option<std::path::PathBuf>,
        /// Persist process history in this SQLite file (answers `List`).
        #[arg(long)]
        db: Option<std::path::PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// On SIGINT or SIGTERM, how long running processes and connected clients get to
        /// finish before the processes are killed (also TRACEWIRE_DRAIN_TIMEOUT_MS).
        #[arg(long, value_name = "MS", env = "TRACEWIRE_DRAIN_TIMEOUT_MS", default_value_t = shutdown::DEFAULT_DRAIN_MS)]
        drain_timeout_ms: u64,
    },
    /// The main job: an embedded collector, a relay, an exec-server and a client in one
    /// process; runs N remote execs, then says where the time went and writes
    /// DIR/summary.json, DIR/report.html and DIR/traces.jaeger.json. Without --slo or
    /// --slo-file it checks e2e.p90<=250ms, first_output.p90<=50ms and process.spawn.p50<=5ms
    /// (p90, not p99, for the end to end: with 50 execs p99 is the first, cold one).
    Demo {
        /// How many remote execs.
        #[arg(long, default_value_t = 50)]
        execs: usize,
        /// Through the encrypted relay, or straight to the exec-server over gRPC.
        #[arg(long, value_enum, default_value_t = Via::Relay)]
        via: Via,
        /// Where to write the report files.
        #[arg(long, default_value = "tracewire-demo")]
        out: std::path::PathBuf,
        #[command(flatten)]
        slo: SloArgs,
    },
    /// Receive OTLP spans (gRPC and HTTP, protobuf or JSON) until SIGINT/SIGTERM, keeping
    /// them in memory and, with --db, in SQLite for `tracewire report`. On the signal it
    /// stops accepting, gives exports in flight up to 5 s, commits what it received to the
    /// database, then writes the report (with --out). A second signal exits at once.
    Collect {
        /// OTLP/gRPC address (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:4317")]
        grpc: std::net::SocketAddr,
        /// OTLP/HTTP address (`POST /v1/traces`).
        #[arg(long, default_value = "127.0.0.1:4318")]
        http: std::net::SocketAddr,
        /// Store every span in this SQLite file (created if missing).
        #[arg(long)]
        db: Option<std::path::PathBuf>,
        /// Spans kept in memory (the oldest go first; the database keeps all).
        #[arg(long, default_value_t = 1_000_000)]
        memory: usize,
        /// Remove from the database every trace that ended longer ago than this (a number
        /// and s, m, h or d: 7d, 12h); a trace goes whole, never part of it.
        #[arg(long, value_name = "DURATION", requires = "db", value_parser = collect::parse_duration)]
        retain: Option<std::time::Duration>,
        /// Keep at most N spans in the database: over it, the oldest traces (by first start)
        /// go, whole, until at most N are left.
        #[arg(long, value_name = "N", requires = "db")]
        max_spans: Option<u64>,
        /// How often --retain and --max-spans run while collecting, in seconds (and once
        /// more on exit).
        #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        prune_every: u64,
        /// On exit, write the report files here.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[command(flatten)]
        slo: SloArgs,
    },
    /// The report of the spans in a database written by `tracewire collect --db`, in OTLP
    /// JSON files (the OpenTelemetry Collector's file exporter) or in Jaeger JSON files (the
    /// Jaeger UI's download), any number of each, combined: the stage table,
    /// DIR/summary.json, DIR/report.html, DIR/traces.jaeger.json. Exit status 3 when an SLO
    /// fails.
    Report {
        #[command(flatten)]
        inputs: inputs::Inputs,
        /// Where to write the report files.
        #[arg(long, default_value = "tracewire-report")]
        out: std::path::PathBuf,
        #[command(flatten)]
        slo: SloArgs,
    },
    /// Write the stored spans as OTLP JSON lines (--otlp-json), or replay them into any
    /// OTLP backend (--otlp-endpoint: Jaeger v2, Tempo, an OpenTelemetry Collector, another
    /// `tracewire collect`) in batches over OTLP/HTTP or OTLP/gRPC, retrying what the
    /// backend asks to retry, then print how many spans it accepted and rejected. SIGINT or
    /// SIGTERM stops a replay between batches. Exit status 0 when every span was accepted
    /// (or written), 3 when the backend rejected spans or the export was stopped before the
    /// end, 1 on an error (e.g. the backend unreachable for --retry-for-ms), 2 for a
    /// malformed argument.
    Export(export::ExportArgs),
    /// Compare two runs (BASE and NEW: databases, OTLP JSON or Jaeger JSON files, or
    /// directories written by `demo`) stage by stage: p50/p90/p99 on each side, the change
    /// with its bootstrap interval, a Mann-Whitney test corrected for the stages compared
    /// (Holm), and a verdict per stage (slower, faster, unchanged); `docs/diff.md`. Exit
    /// status 3 when a --fail-on gate is violated, 2 for a malformed argument.
    Diff(diff::DiffArgs),
    /// Write a new static key pair: the private key to PATH (mode 0600), the public key to
    /// PATH.pub.
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Run a relay: pairs clients and exec-servers by session and forwards ciphertext.
    /// SIGINT or SIGTERM stops it gracefully: no new attachments, every session reset
    /// (both ends told), connections closed within 5 s, telemetry flushed, exit status 0.
    /// A second signal exits at once.
    Relay {
        /// Address to listen on (HOST:PORT).
        #[arg(long, default_value = "127.0.0.1:7080")]
        listen: String,
        /// Require this attach token (also TRACEWIRE_RELAY_TOKEN). Required on a
        /// non-loopback address.
        #[arg(long, env = "TRACEWIRE_RELAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Reset an end (Reset IDLE) that sends no frame, not even a heartbeat, for this
        /// many milliseconds.
        #[arg(long, default_value_t = 30_000)]
        idle_timeout_ms: u64,
        /// Clients one session serves at once; one more gets a retryable
        /// Reset(SESSION_FULL).
        #[arg(long, default_value_t = 64)]
        max_clients: usize,
    },
    /// Run a command on an exec-server, streaming its output; exits with its exit code
    /// (128 + signal when a signal ended it). Continues the trace of a `TRACEPARENT` (with
    /// `TRACESTATE`, `BAGGAGE`) in its environment. Through a relay, a retryable refusal
    /// (the session serves its limit of clients, or no exec-server is attached yet) is
    /// retried after 50 ms, doubling up to 1 s (jittered), for at most 10 s in all; then
    /// exec fails naming the reason.
    Exec {
        /// The exec-server: HOST:PORT or unix:PATH.
        #[arg(long, default_value = "127.0.0.1:7070")]
        server: String,
        /// Print the trace id to stderr.
        #[arg(long)]
        print_trace_id: bool,
        /// Working directory on the server.
        #[arg(long)]
        cwd: Option<String>,
        /// Kill the command after this many milliseconds.
        #[arg(long)]
        timeout_ms: Option<u64>,
        #[command(flatten)]
        relay: RelayArgs,
        /// The exec-server's public key (PATH.pub from `tracewire keygen`), with --relay.
        #[arg(long, requires = "relay")]
        server_key: Option<std::path::PathBuf>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// How the demo's client reaches its exec-server.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    /// Through the Noise-encrypted relay.
    Relay,
    /// Straight over gRPC.
    Direct,
}

/// Service-level objectives to check.
#[derive(clap::Args)]
struct SloArgs {
    /// An objective, METRIC.STAT<=THRESHOLD, e.g. 'e2e.p99<=250ms', 'first_output.p90<=50ms',
    /// 'process.spawn.p50<=5ms' (repeatable). Exit status 3 when one fails.
    #[arg(long)]
    slo: Vec<String>,
    /// A TOML file of objectives: slos = ["e2e.p99<=250ms", ...].
    #[arg(long)]
    slo_file: Option<std::path::PathBuf>,
}

impl SloArgs {
    fn load(&self) -> Result<Vec<tracewire_collector::Slo>> {
        report::load_slos(&self.slo, self.slo_file.as_deref())
    }
}

/// The admin listener (worker dashboard, metrics, profiles); off unless --admin is given.
#[derive(clap::Args)]
struct AdminArgs {
    /// Serve the admin routes (dashboard at /metrics, /api/metrics, Prometheus, CPU
    /// profiles) on HOST:PORT. Needs a token: --admin-token-file or TRACEWIRE_ADMIN_TOKEN.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// A file holding the admin token (a trailing newline is ignored). Without it, the
    /// token is read from TRACEWIRE_ADMIN_TOKEN.
    #[arg(long, value_name = "PATH", requires = "admin")]
    admin_token_file: Option<std::path::PathBuf>,
    /// Flag a worker as a zombie after this many seconds without output.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    reap_ttl: u64,
}

impl AdminArgs {
    /// Binds the admin listener when asked for (before anything else starts, so a missing
    /// token stops the server at once).
    async fn bind(&self) -> Result<Option<tracewire_admin::AdminServer>> {
        let Some(addr) = &self.admin else { return Ok(None) };
        let addr: std::net::SocketAddr = addr.parse().with_context(|| format!("--admin {addr:?} is not HOST:PORT"))?;
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
        config.reap_ttl = std::time::Duration::from_secs(self.reap_ttl);
        config
    }
}

/// Going through a relay instead of a direct connection.
#[derive(clap::Args)]
struct RelayArgs {
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

impl RelayArgs {
    fn endpoint(&self) -> Result<Option<tracewire_relay::RelayEndpoint>> {
        let Some(relay) = &self.relay else { return Ok(None) };
        let session = self.session.clone().context("--relay needs --session")?;
        let mut ep = tracewire_relay::RelayEndpoint::new(relay.clone(), session);
        ep.token.clone_from(&self.relay_token);
        ep.expose_traceparent = self.expose_traceparent;
        Ok(Some(ep))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tracewire: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli));
    // Work still running (a connection past its grace, a blocking read of stdin, a CPU
    // profile) does not hold up the exit.
    runtime.shutdown_timeout(shutdown::KILL_GRACE);
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprintln!("tracewire: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    // These analyze spans rather than emit them: no telemetry of their own.
    match cli.command {
        Command::Demo { execs, via, out, slo } => {
            let mut slos = slo.load()?;
            if slo.slo.is_empty() && slo.slo_file.is_none() {
                slos = demo::default_slos()?;
            }
            return demo::run(execs, via == Via::Relay, &out, &slos).await;
        }
        Command::Collect { grpc, http, db, memory, retain, max_spans, prune_every, out, slo } => {
            let slos = slo.load()?;
            let mut retention = tracewire_store::Retention::default();
            if let Some(age) = retain {
                retention = retention.max_age(age);
            }
            if let Some(n) = max_spans {
                retention = retention.max_spans(n);
            }
            let prune_every = std::time::Duration::from_secs(prune_every);
            let options = collect::Options { grpc, http, db, memory, out, slos, retention, prune_every };
            let stop = shutdown::listen()?;
            return collect::run(options, stop).await;
        }
        Command::Report { inputs, out, slo } => return report::from_inputs(&inputs, &slo.load()?, &out).await,
        Command::Export(args) => return export::run(args, shutdown::listen()?).await,
        Command::Diff(args) => return diff::run(args).await,
        _ => {}
    }
    let telemetry = init(Config::from_env()?)?;
    let code = match cli.command {
        Command::ExecServer {
            listen,
            keep_on_disconnect,
            no_child_trace_context,
            insecure_allow_remote,
            relay,
            key,
            db,
            admin,
            drain_timeout_ms,
        } => {
            let export = telemetry.export_stats();
            let drain = std::time::Duration::from_millis(drain_timeout_ms);
            async {
                // Before anything is bound: from here on a signal stops the server gracefully.
                let stop = shutdown::listen()?;
                let ep = relay.endpoint()?;
                let h = Arc::new(handler(keep_on_disconnect, !no_child_trace_context, db.as_deref())?);
                let admin = match admin.bind().await? {
                    Some(server) => {
                        let mut monitor = tracewire_admin::Monitor::new(Arc::clone(&h), admin.config());
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
                    Some(ep) => exec_server_via_relay(ep, key, Arc::clone(&h), &stop, drain).await,
                    None => exec_server(&listen, Arc::clone(&h), insecure_allow_remote, &stop, drain).await,
                };
                // The admin listener stopped accepting at the signal; its requests in
                // flight (a CPU profile, say) get a short grace, then are dropped.
                if let Some(mut admin) = admin {
                    let _ = tokio::time::timeout(shutdown::KILL_GRACE, &mut admin.0).await;
                }
                shutdown::flush_store(&h).await;
                served
            }
            .await
            .map(|()| 0)
        }
        Command::Exec { server, print_trace_id, cwd, timeout_ms, relay, server_key, command } => {
            match (relay.endpoint(), server_key) {
                (Ok(Some(ep)), Some(key)) => {
                    exec(&Target::Relay(ep, key), print_trace_id, cwd, timeout_ms, command).await
                }
                (Ok(Some(_)), None) => {
                    Err(anyhow::anyhow!("--relay needs --server-key (the exec-server's public key)"))
                }
                (Ok(None), _) => exec(&Target::Direct(server), print_trace_id, cwd, timeout_ms, command).await,
                (Err(e), _) => Err(e),
            }
        }
        Command::Keygen { out } => keygen(&out).map(|()| 0),
        Command::Demo { .. }
        | Command::Collect { .. }
        | Command::Report { .. }
        | Command::Export(_)
        | Command::Diff(_) => Ok(0),
        Command::Relay { listen, token, idle_timeout_ms, max_clients } => {
            relay(&listen, token, std::time::Duration::from_millis(idle_timeout_ms), max_clients).await.map(|()| 0)
        }
    };
    if let Err(tracewire_telemetry::Error::Shutdown { reason, stats, .. }) = telemetry.shutdown() {
        eprintln!("tracewire: telemetry shutdown: {reason} ({} spans dropped)", stats.dropped());
    }
    code
}

/// The exec-server handler the flags describe.
fn handler(keep_on_disconnect: bool, child_trace_context: bool, db: Option<&std::path::Path>) -> Result<ExecServer> {
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
async fn exec_server(
    listen: &str,
    handler: Arc<ExecServer>,
    insecure_allow_remote: bool,
    stop: &shutdown::Stop,
    drain: std::time::Duration,
) -> Result<()> {
    let address: Address = listen.parse()?;
    if let Address::Tcp(a) = &address
        && !a.ip().is_loopback()
        && !insecure_allow_remote
    {
        bail!(
            "refusing to run commands for anyone who can reach {a}: direct connections are not authenticated. \
             Listen on 127.0.0.1 or a unix: socket, serve through a relay (--relay, end-to-end encrypted), \
             or pass --insecure-allow-remote"
        );
    }
    let bound = BoundServer::bind(&address).await?;
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
    let grace = if shutdown::drain(&handler, drain).await { shutdown::KILL_GRACE } else { std::time::Duration::ZERO };
    match tokio::time::timeout(grace, &mut server).await {
        Ok(served) => served??,
        Err(_) => server.abort(),
    }
    Ok(())
}

/// Where `tracewire exec` sends the command.
enum Target {
    Direct(String),
    Relay(tracewire_relay::RelayEndpoint, std::path::PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct(s) => f.write_str(s),
            Self::Relay(ep, _) => write!(f, "session {} via {}", ep.session, ep.relay),
        }
    }
}

impl Target {
    /// Connects. tracewire-exec makes the spans: the connection's `rpc.connect` (one per
    /// attempt through a relay), inside the `exec` root the exec then adopts, which
    /// continues the trace in `parent` when one is given. `before` runs first, inside that
    /// root.
    async fn connect(
        &self,
        parent: Option<&tracewire_context::EnvCarrier>,
        before: impl FnOnce(),
    ) -> Result<ExecClient> {
        let connecting = async {
            before();
            match self {
                Self::Direct(server) => {
                    tracewire_exec::connect_grpc(server).await.with_context(|| format!("connecting to {server}"))
                }
                Self::Relay(ep, key_path) => {
                    let key = tracewire_relay::read_public_key(key_path)?;
                    let link = connect_retrying(ep, &key).await.with_context(|| format!("connecting to {self}"))?;
                    Ok(tracewire_rpc::Transport::into_link(link))
                }
            }
        };
        match parent {
            Some(env) => ExecClient::connect_via_from(connecting, env).await,
            None => ExecClient::connect_via(connecting).await,
        }
    }
}

/// The first wait before attaching again after a retryable refusal; it doubles up to
/// [`RETRY_MAX_DELAY`], each wait jittered (between half and all of it).
const RETRY_FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
/// The longest wait between two attempts.
const RETRY_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long `tracewire exec --relay` keeps retrying a retryable refusal in all.
const RETRY_TOTAL: std::time::Duration = std::time::Duration::from_secs(10);

/// [`tracewire_relay::connect`], retrying a refusal that may succeed later
/// ([`tracewire_relay::RelayError::is_retryable`]: the session is at its limit of clients,
/// or no exec-server is attached yet) with a jittered, doubling, bounded backoff.
async fn connect_retrying(ep: &tracewire_relay::RelayEndpoint, key: &[u8; 32]) -> Result<tracewire_relay::RelayLink> {
    use std::hash::{BuildHasher, Hasher};
    let give_up = tokio::time::Instant::now() + RETRY_TOTAL;
    let mut delay = RETRY_FIRST_DELAY;
    let mut attempts = 1u32;
    loop {
        let error = match tracewire_relay::connect(ep, key).await {
            Ok(link) => return Ok(link),
            Err(e) if e.is_retryable() => e,
            Err(e) => return Err(e.into()),
        };
        // Between half and all of `delay`, so that clients refused together spread out.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(attempts);
        let permille = u32::try_from(h.finish() % 1000).unwrap_or(0);
        let jittered = delay / 2 + delay.mul_f64(f64::from(permille) / 2000.0);
        if tokio::time::Instant::now() + jittered > give_up {
            return Err(anyhow::Error::new(error).context(format!(
                "the relay refused {attempts} times in {:.1} s (retryable; retried for at most {} s)",
                (tokio::time::Instant::now() + RETRY_TOTAL - give_up).as_secs_f64(),
                RETRY_TOTAL.as_secs()
            )));
        }
        tokio::time::sleep(jittered).await;
        delay = (delay * 2).min(RETRY_MAX_DELAY);
        attempts += 1;
    }
}

fn keygen(out: &std::path::Path) -> Result<()> {
    let kp = tracewire_relay::Keypair::generate()?;
    kp.write(out)?;
    eprintln!("wrote {} (private, mode 0600) and {}", out.display(), tracewire_relay::public_path(out).display());
    Ok(())
}

async fn relay(
    listen: &str,
    token: Option<String>,
    idle_timeout: std::time::Duration,
    max_clients: usize,
) -> Result<()> {
    // Before anything is bound: from here on a signal stops the relay gracefully.
    let stop = shutdown::listen()?;
    let addr: std::net::SocketAddr = listen.parse().with_context(|| format!("{listen:?} is not HOST:PORT"))?;
    if token.is_none() && !addr.ip().is_loopback() {
        bail!("refusing to run an open relay on {addr}: give --token (or TRACEWIRE_RELAY_TOKEN)");
    }
    let (listener, local) = tracewire_relay::RelayServer::bind(addr).await?;
    println!("listening on {local}");
    std::io::stdout().flush()?;
    let mut config = tracewire_relay::RelayConfig::default();
    config.token = token;
    config.idle_timeout = idle_timeout;
    config.max_clients_per_session = max_clients;
    // The relay's own graceful stop: no new attachments, every session reset, its
    // connections closed within a bound.
    tracewire_relay::RelayServer::new(config).serve(listener, stop.requested()).await?;
    Ok(())
}

async fn exec_server_via_relay(
    ep: tracewire_relay::RelayEndpoint,
    key: Option<std::path::PathBuf>,
    handler: Arc<ExecServer>,
    stop: &shutdown::Stop,
    drain: std::time::Duration,
) -> Result<()> {
    let key = key.context("--relay needs --key (the server's private key)")?;
    let keypair = tracewire_relay::Keypair::read(&key)?;
    println!("serving session {} via {}", ep.session, ep.relay);
    std::io::stdout().flush()?;
    // Serving goes on while the processes drain; new Starts are refused meanwhile.
    let shutdown = async {
        stop.requested().await;
        let _ = shutdown::drain(&handler, drain).await;
    };
    tracewire_relay::serve_via_relay(ep, keypair, Arc::clone(&handler), ServerConfig::default(), shutdown).await;
    Ok(())
}

async fn exec(
    target: &Target,
    print_trace_id: bool,
    cwd: Option<String>,
    timeout_ms: Option<u64>,
    command: Vec<String>,
) -> Result<i32> {
    if command.is_empty() {
        bail!("no command given (put it after --)");
    }
    // tracewire-exec makes the spans: `rpc.connect` for the connection, inside the `exec`
    // root of the exec, so that one trace covers both. A caller that runs `tracewire exec`
    // inside its own trace passes it in the environment (`TRACEPARENT`, `TRACESTATE`,
    // `BAGGAGE`, as tracewire gives every child it starts): the exec continues it. Without
    // a `TRACEPARENT` the exec starts its own trace.
    let env = tracewire_context::EnvCarrier::from_process();
    let parent = tracewire_context::Carrier::get(&env, tracewire_context::TRACEPARENT).is_some().then_some(&env);
    // The trace id is printed first, inside the root (a failed connect has its trace too).
    let print = || {
        if print_trace_id {
            match tracewire_telemetry::current_trace_id() {
                Some(id) => eprintln!("trace_id={id}"),
                None => eprintln!("trace_id=none (instrumentation compiled out or filtered)"),
            }
        }
    };
    let client = target.connect(parent, print).await?;
    let start = Start { argv: command, cwd: cwd.unwrap_or_default(), timeout_ms, ..Start::default() };
    let mut process = match parent {
        Some(env) => client.start_from(start, env).await?,
        None => client.start(start).await?,
    };
    let root = process.span().clone();
    // Forward our stdin until it ends, then close the remote one.
    let stdin_client = client.clone();
    let process_id = process.process_id;
    let forward = tokio::spawn(
        async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = bytes::Bytes::copy_from_slice(&buf[..n]);
                        if stdin_client.write_stdin(process_id, data).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = stdin_client.close_stdin(process_id).await;
        }
        // Its calls belong to the exec.
        .instrument(root),
    );
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let status = loop {
        match process.next_event().await {
            Some(Event::Output { stream: OutputStream::Stdout, data, .. }) => {
                stdout.write_all(&data)?;
                stdout.flush()?;
            }
            Some(Event::Output { stream: OutputStream::Stderr, data, .. }) => {
                stderr.write_all(&data)?;
                stderr.flush()?;
            }
            Some(Event::Exited(status)) => break status,
            None => bail!("the connection to {target} ended before the command exited"),
        }
    };
    // Stop forwarding and wait for the task to go, so its spans end inside this trace
    // (and before telemetry shuts down).
    forward.abort();
    let _ = forward.await;
    Ok(status.shell_code())
}
