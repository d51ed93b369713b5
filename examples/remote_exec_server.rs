//! An exec-server in a few lines: the library API behind `tracewire exec-server`.
//!
//! ```text
//! cargo run --example remote_exec_server -- 127.0.0.1:7070     # or unix:/tmp/exec.sock
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
