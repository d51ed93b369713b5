//! A relay in a few lines: the library API behind `tracewire relay`.
//!
//! ```text
//! cargo run --example relay -- 127.0.0.1:7080 [TOKEN]
//! ```

use anyhow::Result;
use tracewire_relay::{RelayConfig, RelayServer};
use tracewire_telemetry::{Config, init};

#[tokio::main]
async fn main() -> Result<()> {
    let telemetry = init(Config::from_env()?)?;
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:7080".into()).parse()?;
    let mut config = RelayConfig::default();
    config.token = args.next();
    let (listener, local) = RelayServer::bind(listen).await?;
    println!("listening on {local}");
    RelayServer::new(config)
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    telemetry.shutdown()?;
    Ok(())
}
