//! `tracewire demo`: everything in one process, no external service.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracewire_collector::receiver::{SpanStore, bind, serve_grpc};
use tracewire_collector::{Slo, SpanRecord, analyze};
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

pub(crate) async fn run(execs: usize, via_relay: bool, out: &Path, slo_exprs: &[String]) -> Result<i32> {
    let slos = slo_exprs.iter().map(|e| Slo::parse(e)).collect::<Result<Vec<_>, _>>()?;
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
    let summary = analyze(&spans, &slos);

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&summary)?)?;
    std::fs::write(out.join("report.html"), tracewire_collector::report::render_html(&summary, &spans, &slos))?;
    std::fs::write(
        out.join("traces.jaeger.json"),
        serde_json::to_string(&tracewire_collector::jaeger::to_jaeger(&spans))?,
    )?;

    print_table(&summary, execs, elapsed, stats.dropped());
    println!("wrote {0}/summary.json, {0}/report.html, {0}/traces.jaeger.json", out.display());
    Ok(if summary.slos.iter().all(|s| s.pass) { 0 } else { 3 })
}

fn print_table(summary: &tracewire_collector::Summary, execs: usize, elapsed: Duration, dropped: u64) {
    println!(
        "{execs} remote execs in {elapsed:.2?}: {} traces, {} spans, {} orphans, {dropped} spans dropped",
        summary.traces, summary.spans, summary.orphans
    );
    println!("{:<18} {:>6} {:>10} {:>10} {:>10} {:>10}", "stage", "count", "p50 ms", "p90 ms", "p99 ms", "max ms");
    let mut stages = summary.stages.clone();
    stages.sort_by(|a, b| b.stats.p50_ms.total_cmp(&a.stats.p50_ms));
    for s in &stages {
        let st = s.stats;
        println!(
            "{:<18} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            s.stage, st.count, st.p50_ms, st.p90_ms, st.p99_ms, st.max_ms
        );
    }
    println!("where the time went:");
    println!(
        "  end to end p50 {:.3} ms, p99 {:.3} ms; first output p50 {:.3} ms",
        summary.e2e.p50_ms, summary.e2e.p99_ms, summary.first_output.p50_ms
    );
    let top: Vec<String> = stages
        .iter()
        .filter(|s| s.stage != "exec")
        .take(3)
        .map(|s| format!("{} ({:.3} ms p50)", s.stage, s.stats.p50_ms))
        .collect();
    println!("  slowest stages: {}", top.join(", "));
    println!("  unattributed: {:.2}% of end-to-end time (goal < 2%)", summary.unattributed_fraction * 100.0);
    for r in &summary.slos {
        println!(
            "  SLO {}: {:.3} ms, {:.1}% of traces over, {}",
            r.expr,
            r.value_ms,
            r.violation_rate * 100.0,
            if r.pass { "pass" } else { "FAIL" }
        );
    }
}
