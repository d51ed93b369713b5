//! `tracewire demo`: everything in one process, no external service.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracewire_collector::receiver::{SpanStore, bind, serve_grpc};
use tracewire_collector::{Analyzer, Slo};
use tracewire_exec::{ExecClient, ExecConfig, ExecServer, Start};
use tracewire_rpc::ServerConfig;
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_telemetry::{Config, init};

use crate::flags::SloArgs;

/// The commands the demo runs, in turn: short ones and one with a lot of output.
const COMMANDS: &[&[&str]] = &[
    &["true"],
    &["echo", "hello from a remote process"],
    &["sh", "-c", "ls / | wc -l"],
    &["sh", "-c", "head -c 262144 /dev/zero | od | tail -n 1"],
    &["sh", "-c", "echo $TRACEPARENT"],
];

/// `tracewire demo`'s arguments.
#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// How many remote execs.
    #[arg(long, default_value_t = 50)]
    execs: usize,
    /// Through the encrypted relay, or straight to the exec-server over gRPC.
    #[arg(long, value_enum, default_value_t = Via::Relay)]
    via: Via,
    /// Where to write the report files.
    #[arg(long, default_value = "tracewire-demo")]
    out: PathBuf,
    #[command(flatten)]
    slo: SloArgs,
}

/// How the demo's client reaches its exec-server.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    /// Through the Noise-encrypted relay.
    Relay,
    /// Straight over gRPC.
    Direct,
}

/// Runs `tracewire demo`; exit status 3 when an objective fails. Without --slo or
/// --slo-file it checks [`default_slos`].
pub(crate) async fn run(args: DemoArgs) -> Result<i32> {
    let slos = if args.slo.is_empty() { default_slos()? } else { args.slo.load()? };
    demo(args.execs, args.via == Via::Relay, &args.out, &slos).await
}

/// The objectives the demo checks unless given others.
fn default_slos() -> Result<Vec<Slo>> {
    Ok(["e2e.p90<=250ms", "first_output.p90<=50ms", "process.spawn.p50<=5ms"]
        .iter()
        .map(|e| Slo::parse(e))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The embedded collector's database, `out/traces.db` (what `tracewire diff` and
/// `tracewire report --db` read): created fresh, so it holds this run's spans only.
fn fresh_db(out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let db = out.join("traces.db");
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", file.display()));
            }
            _ => {}
        }
    }
    Ok(db)
}

/// This process's peak resident set size in bytes (`getrusage(RUSAGE_SELF)`'s `ru_maxrss`,
/// which Linux gives in KiB).
fn peak_rss() -> Option<u64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    u64::try_from(usage.max_rss()).ok().map(|kib| kib * 1024)
}

/// Spans the embedded collector keeps in memory besides its database (they are read back
/// from the database, trace by trace, for the report).
const IN_MEMORY_SPANS: usize = 1;

async fn demo(execs: usize, via_relay: bool, out: &Path, slos: &[Slo]) -> Result<i32> {
    // 1. The embedded collector, storing every span into out/traces.db (memory stays
    //    bounded whatever the number of execs), and telemetry exporting to it.
    let db = tracewire_store::Store::open(fresh_db(out)?).context("opening the demo's span database")?;
    let store = Arc::new(SpanStore::new(IN_MEMORY_SPANS).with_db(db.clone()));
    let (listener, collector) = bind("127.0.0.1:0".parse()?).await?;
    let (stop_collector, collector_stopped) = tokio::sync::oneshot::channel::<()>();
    let collector_task = tokio::spawn(serve_grpc(listener, Arc::clone(&store), async {
        let _ = collector_stopped.await;
    }));
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
    // The relay and the attached exec-server run as long as `_relay` lives: the whole demo.
    let mut _relay = None;
    let client = if via_relay {
        let mut ep = tracewire_relay::RelayEndpoint::new("", "demo");
        ep.expose_traceparent = true;
        // Returns once the exec-server is attached: the connect (in the first exec's trace)
        // is then one attempt, not retries against a session nobody serves yet.
        let started = tracewire_relay::LoopbackRelay::start(
            tracewire_relay::RelayConfig::default(),
            ep,
            server,
            ServerConfig::default(),
        );
        let relay = tokio::time::timeout(Duration::from_secs(10), started)
            .await
            .context("the exec-server did not attach to the relay within 10 s")??;
        // tracewire-exec puts the relay's `rpc.connect` in the first exec's trace.
        let client = ExecClient::connect_via(relay.connect()).await.context("connecting through the relay")?;
        _relay = Some(relay);
        client
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
        // tracewire-exec gives each exec its `exec` root span (the first one's holds the
        // connect).
        let start = Start { argv, ..Start::default() };
        client.start(start).await?.wait_with_output().await?;
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

    // 5. The analysis, streamed from the database one trace at a time.
    // (The reader thread may drop its handle on the analyzer just after it is done.)
    let analyzer = Arc::new(Mutex::new(Some(Analyzer::new(slos))));
    let feed = Arc::clone(&analyzer);
    db.for_each_trace(tracewire_store::SpanFilter::default(), move |trace| {
        if let Ok(mut a) = feed.lock()
            && let Some(a) = a.as_mut()
        {
            a.add_trace(trace);
        }
    })
    .await
    .context("reading the demo's spans back")?;
    let analyzer =
        analyzer.lock().ok().and_then(|mut a| a.take()).context("the analysis of the demo's spans stopped")?;
    let (summary, mut exports) = analyzer.finish_with_exports();
    if exports.median.is_none()
        && let Some(id) = exports.median_id.clone()
    {
        let filter = tracewire_store::SpanFilter { traces: vec![id], ..Default::default() };
        exports.set_median(db.spans_matching(filter).await?);
    }
    crate::report::write_files(out, &summary, &exports, slos)?;

    // 6. Close the database before exiting: the embedded collector stops, every handle on
    //    the store is dropped, and the writer checkpoints the log into traces.db (no -wal or
    //    -shm file is left beside it).
    let _ = stop_collector.send(());
    let _ = collector_task.await;
    let closed = db.closed();
    drop((db, store));
    if tokio::time::timeout(Duration::from_secs(5), closed.wait()).await.is_err() {
        eprintln!(
            "warning: {}/traces.db was not closed within 5 s; SQLite replays its log at the next open",
            out.display()
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let rss = peak_rss().map_or_else(|| "unknown".to_owned(), |b| format!("{:.1} MiB", b as f64 / 1_048_576.0));
    println!(
        "{execs} remote execs ({}) in {elapsed:.2?}; {} spans dropped; peak RSS {rss}",
        if via_relay { "via relay" } else { "direct" },
        stats.dropped()
    );
    crate::report::print_table(&summary);
    println!("wrote {0}/summary.json, {0}/report.html, {0}/traces.jaeger.json, {0}/traces.db", out.display());
    Ok(crate::report::exit_code(&summary))
}
