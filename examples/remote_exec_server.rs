//! An exec-server in a few lines: the library API behind `tracewire exec-server`.
//!
//! ```text
//! cargo run --example remote_exec_server -- 127.0.0.1:7070     # or unix:/tmp/exec.sock
//! cargo run --example remote_exec_server -- relay http://127.0.0.1:7080 SESSION server.key [TOKEN]
//! ```

use std::sync::Arc;

use anyhow::Result;
use tracewire_exec::{ExecConfig, ExecServer};
use tracewire_rpc::ServerConfig;
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_telemetry::{Config, init};

#[tokio::main]
async fn main() -> Result<()> {
    let telemetry = init(Config::from_env()?)?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("relay") {
        // Through a relay: end-to-end Noise, the relay sees only ciphertext.
        let [_, relay, session, key, rest @ ..] = args.as_slice() else {
            anyhow::bail!("usage: remote_exec_server relay URL SESSION KEYFILE [TOKEN]");
        };
        let mut ep = tracewire_relay::RelayEndpoint::new(relay.clone(), session.clone());
        ep.token = rest.first().cloned();
        let keypair = tracewire_relay::Keypair::read(std::path::Path::new(key))?;
        println!("serving session {session} via {relay}");
        let server = Arc::new(ExecServer::new(ExecConfig::default()));
        tracewire_relay::serve_via_relay(ep, keypair, server, ServerConfig::default(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
        telemetry.shutdown()?;
        return Ok(());
    }
    let listen: Address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:7070".into()).parse()?;
    let bound = BoundServer::bind(&listen).await?;
    println!("listening on {}", bound.local_address());
    let server = Arc::new(ExecServer::new(ExecConfig::default()));
    bound
        .run(server, ServerConfig::default(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    telemetry.shutdown()?;
    Ok(())
}
