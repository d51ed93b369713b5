//! `tracewire collect`: the embedded OTLP receiver as a standalone collector.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracewire_collector::Slo;
use tracewire_collector::receiver::{SpanStore, bind, serve_grpc, serve_http};
use tracewire_store::{Pruned, Retention};

use crate::flags::{self, SloArgs};
use crate::shutdown::{self, Stop};

/// `tracewire collect`'s arguments.
#[derive(clap::Args)]
pub(crate) struct CollectArgs {
    /// OTLP/gRPC address, HOST:PORT (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4317", value_parser = flags::socket_address)]
    grpc: SocketAddr,
    /// OTLP/HTTP address (`POST /v1/traces`), HOST:PORT.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4318", value_parser = flags::socket_address)]
    http: SocketAddr,
    /// Store every span in this SQLite file (created if missing).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Spans kept in memory (the oldest go first; the database keeps all).
    #[arg(long, default_value_t = 1_000_000)]
    memory: usize,
    /// Remove from the database every trace that ended longer ago than this (7d, 12h); a
    /// trace goes whole, never part of it.
    #[arg(long, value_name = "DURATION", requires = "db", value_parser = flags::duration)]
    retain: Option<Duration>,
    /// Keep at most N spans in the database: over it, the oldest traces (by first start)
    /// go, whole, until at most N are left.
    #[arg(long, value_name = "N", requires = "db")]
    max_spans: Option<u64>,
    /// How often --retain and --max-spans run while collecting (and once more on exit).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = flags::interval)]
    prune_every: Duration,
    /// On exit, write the report files here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    slo: SloArgs,
}

/// What `collect` was asked to do.
struct Options {
    grpc: SocketAddr,
    http: SocketAddr,
    db: Option<PathBuf>,
    memory: usize,
    out: Option<PathBuf>,
    slos: Vec<Slo>,
    /// What the database keeps (`--retain`, `--max-spans`).
    retention: Retention,
    /// How often retention runs while collecting (and once more at the end).
    prune_every: Duration,
}

/// Runs `tracewire collect` until SIGINT or SIGTERM; exit status 3 when an objective fails.
pub(crate) async fn run(args: CollectArgs) -> Result<i32> {
    let slos = args.slo.load()?;
    let mut retention = Retention::default();
    if let Some(age) = args.retain {
        retention = retention.max_age(age);
    }
    if let Some(n) = args.max_spans {
        retention = retention.max_spans(n);
    }
    let CollectArgs { grpc, http, db, memory, out, prune_every, .. } = args;
    let options = Options { grpc, http, db, memory, out, slos, retention, prune_every };
    collect(options, shutdown::listen()?).await
}

/// How long the receivers get, once stopped, to finish the exports in flight.
const RECEIVER_GRACE: Duration = Duration::from_secs(5);

/// Collects until `stop`: then the receivers stop accepting and finish the exports in
/// flight (within [`RECEIVER_GRACE`]), the database commits everything acknowledged, and
/// the report is written.
async fn collect(o: Options, stop: Stop) -> Result<i32> {
    let mut store = SpanStore::new(o.memory);
    if let Some(path) = &o.db {
        let db = tracewire_store::Store::open_with(path, tracewire_collector::receiver::db_config());
        store = store.with_db(db.with_context(|| format!("opening {}", path.display()))?);
    }
    let store = Arc::new(store);
    let (gl, grpc) = bind(o.grpc).await?;
    let (hl, http) = bind(o.http).await?;
    let mut grpc_task = tokio::spawn(serve_grpc(gl, Arc::clone(&store), stop.future()));
    let mut http_task = tokio::spawn(serve_http(hl, Arc::clone(&store), stop.future()));
    // Tests and scripts read this line to learn the bound addresses (port 0 works).
    println!(
        "collecting OTLP/gRPC on {grpc}, OTLP/HTTP on http://{http}/v1/traces{}",
        o.db.as_ref().map(|p| format!(", storing in {}", p.display())).unwrap_or_default()
    );
    std::io::stdout().flush()?;

    // Retention on the database, every `prune_every`, until asked to stop (a prune in
    // progress finishes first, so what it removed is counted).
    let (prune_stop, mut prune_stopped) = tokio::sync::watch::channel(false);
    let pruner = store.db().filter(|_| !o.retention.is_empty()).cloned().map(|db| {
        let (retention, every) = (o.retention, o.prune_every);
        tokio::spawn(async move {
            let mut total = Pruned::default();
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = prune_stopped.changed() => break,
                    _ = tick.tick() => match db.prune(retention).await {
                        Ok(p) => total += p,
                        Err(e) => eprintln!("tracewire: pruning the database: {e}"),
                    },
                }
            }
            total
        })
    });

    // Progress once a second until asked to stop.
    let signal = stop.requested();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut last, mut last_at) = (0u64, Instant::now());
    let mut stderr = std::io::stderr();
    loop {
        tokio::select! {
            () = &mut signal => break,
            _ = tick.tick() => {
                let now = store.received();
                if now != last {
                    #[allow(clippy::cast_precision_loss)]
                    let rate = (now - last) as f64 / last_at.elapsed().as_secs_f64();
                    let _ = write!(stderr, "\rreceived {now} spans ({rate:.0}/s), refused {}   ", store.refused());
                    let _ = stderr.flush();
                }
                (last, last_at) = (now, Instant::now());
            }
        }
    }
    let _ = writeln!(stderr);
    // Both stopped accepting at the signal; an exporter that keeps its stream open past
    // the grace is cut off (what it sent before was acknowledged only once kept).
    let deadline = tokio::time::Instant::now() + RECEIVER_GRACE;
    for (task, name) in [(&mut grpc_task, "OTLP/gRPC receiver"), (&mut http_task, "OTLP/HTTP receiver")] {
        if let Ok(served) = tokio::time::timeout_at(deadline, &mut *task).await {
            served?.context(name)?;
        } else {
            task.abort();
            eprintln!(
                "tracewire: {name}: exports still in flight after {} s; stopping anyway",
                RECEIVER_GRACE.as_secs()
            );
        }
    }
    let _ = prune_stop.send(true);
    let pruned = match pruner {
        Some(task) => task.await?,
        None => Pruned::default(),
    };
    finish(&store, o.db.as_deref(), o.retention, pruned, o.out.as_deref(), &o.slos).await
}

/// After the receivers stopped: the database's barrier, the totals, the report if asked.
async fn finish(
    store: &SpanStore,
    db: Option<&Path>,
    retention: Retention,
    mut pruned: Pruned,
    out: Option<&Path>,
    slos: &[Slo],
) -> Result<i32> {
    let mut line = format!("received {} spans, refused {}", store.received(), store.refused());
    if let (Some(handle), Some(path)) = (store.db(), db) {
        handle.flush().await.with_context(|| format!("writing {}", path.display()))?;
        pruned += handle.prune(retention).await.with_context(|| format!("pruning {}", path.display()))?;
        let stored = handle.span_count().await?;
        let _ = write!(line, "; {stored} spans stored in {}", path.display());
        if !retention.is_empty() {
            let _ = write!(line, "; pruned {} spans ({} traces)", pruned.spans, pruned.traces);
        }
    }
    if store.invalid() > 0 {
        let _ = write!(line, "; {} rejected as invalid (answered as partial success)", store.invalid());
    }
    if store.dropped() > 0 {
        let _ = write!(line, "; {} dropped from memory (over --memory)", store.dropped());
    }
    println!("{line}");
    let Some(out) = out else { return Ok(0) };
    let spans = match store.db() {
        Some(db) => db.spans().await?,
        None => store.snapshot(),
    };
    let summary = crate::report::write(out, &spans, slos)?;
    crate::report::print_table(&summary);
    println!("wrote {0}/summary.json, {0}/report.html, {0}/traces.jaeger.json", out.display());
    Ok(crate::report::exit_code(&summary))
}
