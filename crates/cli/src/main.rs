//! `tracewire`: run an exec-server, or run a command on one.
//!
//! ```text
//! tracewire exec-server --listen 127.0.0.1:7070          # or --listen unix:/path/to.sock
//! tracewire exec --server 127.0.0.1:7070 [--print-trace-id] -- CMD [ARGS...]
//! ```
//!
//! Both export spans with tracewire-telemetry, configured by the `OTEL_*` variables.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio::io::AsyncReadExt;
use tracewire_exec::{Event, ExecClient, ExecConfig, ExecServer, OutputStream, Start};
use tracewire_rpc::ServerConfig;
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_telemetry::{Config, current_trace_id, init, stage_span};
use tracing::Instrument;

#[derive(Parser)]
#[command(name = "tracewire", version, about = "Distributed tracing for remote execution")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an exec-server.
    ExecServer {
        /// Address to listen on: HOST:PORT (an IP address) or unix:PATH.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Keep a client's processes running when it disconnects.
        #[arg(long)]
        keep_on_disconnect: bool,
    },
    /// Run a command on an exec-server, streaming its output; exits with its exit code
    /// (128 + signal when a signal ended it).
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
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
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
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(e) => {
            eprintln!("tracewire: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    let telemetry = init(Config::from_env()?)?;
    let code = match cli.command {
        Command::ExecServer { listen, keep_on_disconnect } => {
            exec_server(&listen, keep_on_disconnect).await.map(|()| 0)
        }
        Command::Exec { server, print_trace_id, cwd, timeout_ms, command } => {
            exec(&server, print_trace_id, cwd, timeout_ms, command).await
        }
    };
    if let Err(tracewire_telemetry::Error::Shutdown { reason, stats, .. }) = telemetry.shutdown() {
        eprintln!("tracewire: telemetry shutdown: {reason} ({} spans dropped)", stats.dropped());
    }
    code
}

async fn exec_server(listen: &str, keep_on_disconnect: bool) -> Result<()> {
    let address: Address = listen.parse()?;
    let bound = BoundServer::bind(&address).await?;
    // Tests and scripts read this line to learn the bound address (port 0 works).
    println!("listening on {}", bound.local_address());
    std::io::stdout().flush()?;
    let mut config = ExecConfig::default();
    config.kill_on_disconnect = !keep_on_disconnect;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    bound.run(Arc::new(ExecServer::new(config)), ServerConfig::default(), shutdown).await?;
    Ok(())
}

async fn exec(
    server: &str,
    print_trace_id: bool,
    cwd: Option<String>,
    timeout_ms: Option<u64>,
    command: Vec<String>,
) -> Result<i32> {
    if command.is_empty() {
        bail!("no command given (put it after --)");
    }
    let root = stage_span!(Exec, process.command_args = command.join(" ").as_str());
    async move {
        if print_trace_id {
            match current_trace_id() {
                Some(id) => eprintln!("trace_id={id}"),
                None => eprintln!("trace_id=none (telemetry disabled)"),
            }
        }
        let client = ExecClient::connect(server).await.with_context(|| format!("connecting to {server}"))?;
        let start = Start { argv: command, cwd: cwd.unwrap_or_default(), timeout_ms, ..Start::default() };
        let mut process = client.start(start).await?;
        // Forward our stdin until it ends, then close the remote one.
        let stdin_client = client.clone();
        let process_id = process.process_id;
        let forward = tokio::spawn(async move {
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
        });
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
                None => bail!("the connection to {server} ended before the command exited"),
            }
        };
        forward.abort();
        Ok(status.shell_code())
    }
    .instrument(root)
    .await
}
