//! `tracewire demo`: everything in one process, no external service.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracewire_collector::receiver::{SpanStore, bind, serve_grpc};
use tracewire_collector::{Slo, SpanRecord};
use tracewire_exec::{ExecClient, ExecConfig, ExecServer, Start};
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_rpc::{Client, ClientConfig, ServerConfig};
use tracewire_telemetry::{Config, init, stage_span};
use tracing::Instrument;

/// The commands the demo runs, in turn: short ones and one with a lot of output.
const COMMANDS: &[&[&str]] = &[
    &["true"],
    &["echo", "hello from a remote process"],
    &["sh", "-c", "ls / | wc -l"],
    &["sh", "-c", "head -c 262144 /dev/zero | od | tail -n 1"],
    &["sh", "-c", "echo $TRACEPARENT"],
];

/// The objectives the demo checks unless given others.
pub(crate) fn default_slos() -> Result<Vec<Slo>> {
    Ok(["e2e.p90<=250ms", "first_output.p90<=50ms", "process.spawn.p50<=5ms"]
        .iter()
        .map(|e| Slo::parse(e))
        .collect::<Result<Vec<_>, _>>()?)
}

pub(crate) async fn run(execs: usize, via_relay: bool, out: &Path, slos: &[Slo]) -> Result<i32> {
    // 1. The embedded collector, and telemetry exporting to it.
    let store = Arc::new(SpanStore::new(1_000_000));
    let (listener, collector) = bind("127.0.0.1:0".parse()?).await?;
    tokio::spawn(serve_grpc(listener, Arc::clone(&store), std::future::pending()));
    let endpoint = format!("http://{collector}");
    let mut config = Config::from_vars([
        ("OTEL_SERVICE_NAME", "tracewire-demo"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
    ])?;
    config.batch.schedule_delay = Duration::from_millis(100);
    config.batch.max_queue_size = 65_536;
    config.shutdown_timeout = Duration::from_secs(5);
    let telemetry = init(config)?;

    // 2. An exec-server, behind a relay or not, and a client.
    let server = Arc::new(ExecServer::new(ExecConfig::default()));
    let client = if via_relay {
        let (listener, relay) = tracewire_relay::RelayServer::bind("127.0.0.1:0".parse()?).await?;
        tokio::spawn(
            tracewire_relay::RelayServer::new(tracewire_relay::RelayConfig::default())
                .serve(listener, std::future::pending()),
        );
        let mut ep = tracewire_relay::RelayEndpoint::new(relay.to_string(), "demo");
        ep.expose_traceparent = true;
        let keypair = tracewire_relay::Keypair::generate()?;
        let public = keypair.public;
        tokio::spawn(tracewire_relay::serve_via_relay(
            ep.clone(),
            keypair,
            server,
            ServerConfig::default(),
            std::future::pending(),
        ));
        let mut attempt = 0;
        let link = loop {
            match tracewire_relay::connect(&ep, &public).await {
                Ok(l) => break l,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!("relay not ready: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e).context("connecting through the relay"),
            }
        };
        ExecClient::new(Client::new(link, ClientConfig::default()))
    } else {
        let bound = BoundServer::bind(&"127.0.0.1:0".parse::<Address>()?).await?;
        let address = bound.local_address().to_string();
        tokio::spawn(bound.run(server, ServerConfig::default(), std::future::pending()));
        ExecClient::connect(&address).await?
    };

    // 3. The execs, each one trace.
    let t0 = Instant::now();
    let mut stderr = std::io::stderr();
    for i in 0..execs {
        let argv: Vec<String> = COMMANDS[i % COMMANDS.len()].iter().map(|s| (*s).to_owned()).collect();
        let root = stage_span!(Exec, process.command_args = argv.join(" ").as_str());
        let start = Start { argv, ..Start::default() };
        async { client.start(start).await?.wait_with_output().await }.instrument(root).await?;
        let _ =
            write!(stderr, "\rremote execs: {}/{execs} ({})", i + 1, if via_relay { "via relay" } else { "direct" });
        let _ = stderr.flush();
    }
    let elapsed = t0.elapsed();
    let _ = writeln!(stderr);

    // 4. Let the spans that end just after the client saw Exited (the server's process and
    //    delivery spans, the relay's) finish and arrive: flush until nothing new comes.
    let settle = Instant::now() + Duration::from_secs(3);
    let mut last = u64::MAX;
    while Instant::now() < settle {
        let _ = telemetry.flush();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = store.received();
        if now == last {
            break;
        }
        last = now;
    }
    let stats = telemetry.shutdown().or_else(tracewire_telemetry::Error::into_stats)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.received() < stats.exported && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spans: Vec<SpanRecord> = store.snapshot();
    println!(
        "{execs} remote execs ({}) in {elapsed:.2?}; {} spans dropped",
        if via_relay { "via relay" } else { "direct" },
        stats.dropped()
    );
    let summary = crate::report::write(out, &spans, slos)?;
    crate::report::print_table(&summary);
    println!("wrote {0}/summary.json, {0}/report.html, {0}/traces.jaeger.json", out.display());
    Ok(crate::report::exit_code(&summary))
}
