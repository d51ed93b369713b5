//! `tracewire exec`: runs a command on an exec-server, directly or through a relay,
//! streaming its output and forwarding stdin; exits with the command's exit code.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncReadExt;
use tracewire_exec::{Event, ExecClient, OutputStream, Start};
use tracewire_rpc::grpc::Address;
use tracing::Instrument;

use crate::flags::{self, ViaRelay};

/// `tracewire exec`'s arguments.
#[derive(clap::Args)]
pub(crate) struct ExecArgs {
    /// The exec-server: HOST:PORT (an IP address) or unix:PATH.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070", value_parser = flags::exec_address)]
    server: Address,
    /// Print the trace id to stderr.
    #[arg(long)]
    print_trace_id: bool,
    /// Working directory on the server.
    #[arg(long)]
    cwd: Option<String>,
    /// Kill the command after this long (250ms, 30s, 5m).
    #[arg(long, value_name = "DURATION", value_parser = flags::duration)]
    timeout: Option<Duration>,
    /// --timeout in milliseconds.
    #[arg(long, hide = true, value_name = "MS")]
    timeout_ms: Option<u64>,
    #[command(flatten)]
    relay: ViaRelay,
    /// The exec-server's public key (PATH.pub from `tracewire keygen`), with --relay.
    #[arg(long, requires = "relay")]
    server_key: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs `tracewire exec`; the command's exit code.
pub(crate) async fn run(args: ExecArgs) -> Result<i32> {
    let timeout = args.timeout.or(args.timeout_ms.map(Duration::from_millis));
    let target = match (args.relay.endpoint()?, args.server_key) {
        (Some(ep), Some(key)) => Target::Relay(ep, key),
        (Some(_), None) => bail!("--relay needs --server-key (the exec-server's public key)"),
        (None, _) => Target::Direct(args.server.to_string()),
    };
    exec(&target, args.print_trace_id, args.cwd, timeout, args.command).await
}

/// Where `tracewire exec` sends the command.
enum Target {
    Direct(String),
    Relay(tracewire_relay::RelayEndpoint, PathBuf),
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
const RETRY_FIRST_DELAY: Duration = Duration::from_millis(50);
/// The longest wait between two attempts.
const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);
/// How long `tracewire exec --relay` keeps retrying a retryable refusal in all.
const RETRY_TOTAL: Duration = Duration::from_secs(10);

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

async fn exec(
    target: &Target,
    print_trace_id: bool,
    cwd: Option<String>,
    timeout: Option<Duration>,
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
    let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
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
