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

use crate::shutdown::Stop;

/// What `collect` was asked to do.
pub(crate) struct Options {
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) db: Option<PathBuf>,
    pub(crate) memory: usize,
    pub(crate) out: Option<PathBuf>,
    pub(crate) slos: Vec<Slo>,
}

/// How long the receivers get, once stopped, to finish the exports in flight.
const RECEIVER_GRACE: Duration = Duration::from_secs(5);

/// Collects until `stop`: then the receivers stop accepting and finish the exports in
/// flight (within [`RECEIVER_GRACE`]), the database commits everything acknowledged, and
/// the report is written.
pub(crate) async fn run(o: Options, stop: Stop) -> Result<i32> {
    let mut store = SpanStore::new(o.memory);
    if let Some(path) = &o.db {
        store =
            store.with_db(tracewire_store::Store::open(path).with_context(|| format!("opening {}", path.display()))?);
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
    finish(&store, o.db.as_deref(), o.out.as_deref(), &o.slos).await
}

/// After the receivers stopped: the database's barrier, the totals, the report if asked.
async fn finish(store: &SpanStore, db: Option<&Path>, out: Option<&Path>, slos: &[Slo]) -> Result<i32> {
    let mut line = format!("received {} spans, refused {}", store.received(), store.refused());
    if let (Some(handle), Some(path)) = (store.db(), db) {
        handle.flush().await.with_context(|| format!("writing {}", path.display()))?;
        let stored = handle.span_count().await?;
        let _ = write!(line, "; {stored} spans stored in {}", path.display());
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
