//! Runs one command on an exec-server and prints its output as it arrives: the library
//! API behind `tracewire exec`.
//!
//! ```text
//! cargo run --example remote_exec_client -- 127.0.0.1:7070 sh -c 'echo $TRACEPARENT'
//! RELAY_SESSION=S RELAY_SERVER_KEY=server.key.pub cargo run --example remote_exec_client -- http://127.0.0.1:7080 ls
//! ```
//!
//! With `RELAY_SESSION` and `RELAY_SERVER_KEY` set (and `RELAY_TOKEN` if the relay needs
//! one), the first argument is a relay and the session is end-to-end encrypted.

use std::io::Write;

use anyhow::{Context, Result};
use tracewire_exec::{Event, ExecClient, OutputStream, Start};
use tracewire_telemetry::{Config, init, span_context};

#[tokio::main]
async fn main() -> Result<()> {
    let telemetry = init(Config::from_env()?)?;
    let mut args = std::env::args().skip(1);
    let server = args.next().context("usage: remote_exec_client SERVER CMD [ARGS...]")?;
    let argv: Vec<String> = args.collect();
    // tracewire-exec makes the spans: the exec's `exec` root, which (no span being
    // current) also holds the connection's `rpc.connect`.
    let code = async {
        let client = match (std::env::var("RELAY_SESSION"), std::env::var("RELAY_SERVER_KEY")) {
            (Ok(session), Ok(key)) => {
                let mut ep = tracewire_relay::RelayEndpoint::new(server.clone(), session);
                ep.token = std::env::var("RELAY_TOKEN").ok();
                let key = tracewire_relay::read_public_key(std::path::Path::new(&key))?;
                ExecClient::connect_via(tracewire_relay::connect(&ep, &key)).await?
            }
            _ => ExecClient::connect(&server).await?,
        };
        let mut process = client.start(Start { argv, ..Start::default() }).await?;
        eprintln!("trace_id={}", span_context(process.span()).map(|c| c.trace_id.to_string()).unwrap_or_default());
        while let Some(event) = process.next_event().await {
            match event {
                Event::Output { stream: OutputStream::Stdout, data, .. } => std::io::stdout().write_all(&data)?,
                Event::Output { stream: OutputStream::Stderr, data, .. } => std::io::stderr().write_all(&data)?,
                Event::Exited(status) => return Ok::<_, anyhow::Error>(status.shell_code()),
            }
        }
        anyhow::bail!("the connection ended before the command exited")
    }
    .await?;
    let _ = telemetry.shutdown();
    std::process::exit(code);
}
