//! Collector ingest, decoded on both sides: spans per second that tracewire's embedded
//! OTLP/gRPC receiver takes *and decodes into its span model* (`SpanRecord`, by
//! `SpanStore::snapshot`, timed with the load), against rotel-agent (blackhole exporter:
//! tonic decodes every request into prost's span structs, then it drops them), on the same
//! machine, in the same run, with the same load: 4 concurrent senders each sending a fixed
//! number of 512-span requests (6 attributes per span) over loopback; rounds alternate,
//! best of each. Sent == received is checked on both: every request acknowledged with no
//! rejected spans, and for tracewire the receiver's count and the decoded records equal
//! the spans sent (rotel-agent's blackhole exposes no count: its acknowledgements are it).
//! Each receiver runs on its own 2 worker threads (rotel-agent in its own process); the
//! senders share the 2 cores with it, as a co-located collector would.
//!
//! And `collector_ingest.sqlite` (section `collect_db`, [`run_db`]): spans per second
//! stored by the receiver with a database, with the settings of `tracewire collect --db`
//! (`receiver::db_config`); no peer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixtures::{INGEST_BATCH as BATCH, RotelBlackhole, export_request, otlp_client, runtime, start_receiver};
use crate::{Row, Scale};
use anyhow::{Result, ensure};
use tracewire_collector::receiver::{self, SpanStore};

const SENDERS: u64 = 4;

/// Sends `per_sender` requests from each of [`SENDERS`] concurrent senders to `endpoint`
/// (request `k` of sender `s` made by `export_request(seed(s, k))`, built before the clock
/// starts; `at_start` runs just before it); returns the wall time until every request was
/// acknowledged. Fails unless every request was acknowledged with no rejected spans.
fn load(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    per_sender: u64,
    seed: impl Fn(u64, u64) -> u64,
    at_start: impl FnOnce(),
) -> Result<Duration> {
    rt.block_on(async {
        let mut clients = Vec::new();
        for s in 0..SENDERS {
            let requests: Vec<_> = (0..per_sender).map(|k| export_request(seed(s, k))).collect();
            clients.push((otlp_client(endpoint).await?, requests));
        }
        at_start();
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (mut client, requests) in clients {
            tasks.push(tokio::spawn(async move {
                let mut rejected = 0;
                for req in requests {
                    // Throttled (the database's queue is full): sent again, as OTLP
                    // exporters do, after a short pause.
                    let answer = loop {
                        match client.export(req.clone()).await {
                            Err(status) if status.code() == tonic::Code::Unavailable => {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            answer => break answer?.into_inner(),
                        }
                    };
                    rejected += answer.partial_success.map_or(0, |p| p.rejected_spans);
                }
                anyhow::Ok(rejected)
            }));
        }
        for t in tasks {
            let rejected = t.await??;
            ensure!(rejected == 0, "{rejected} spans rejected by {endpoint}");
        }
        Ok(t0.elapsed())
    })
}

#[allow(clippy::cast_precision_loss)]
fn per_s(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

// Spans and allocations are counted in u64 and shown as f64.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let client_rt = runtime()?;
    let per_sender: u64 = 150;
    let sent = SENDERS * per_sender * BATCH as u64;
    let rounds = scale.pick(2, 3);
    let same = |s: u64, _k: u64| s;

    // rotel-agent, in its own process, stopped by its pid (when dropped).
    let rotel = RotelBlackhole::start()?;
    let theirs = rotel.endpoint().to_owned();
    load(&client_rt, &theirs, 10, same, || ())?;

    let (mut ours_best, mut theirs_best) = (0.0f64, 0.0f64);
    let mut decode_share = 0.0;
    // Of the best round, per span: CPU of the whole process (senders included) over the
    // load, and over the decode.
    let (mut load_cpu, mut decode_cpu) = (0.0, 0.0);
    for _ in 0..rounds {
        // tracewire's receiver, on its own runtime, a fresh store each round.
        let server_rt = runtime()?;
        let capacity = usize::try_from(sent)?;
        let (ours, store) = start_receiver(&server_rt, capacity)?;
        let cpu0 = crate::cpu::process_time();
        let ingest = load(&client_rt, &ours, per_sender, same, || ())?;
        let (t0, cpu1) = (Instant::now(), crate::cpu::process_time());
        let records = store.snapshot();
        let decode = t0.elapsed();
        let cpu2 = crate::cpu::process_time();
        ensure!(
            store.received() == sent && records.len() as u64 == sent,
            "sent {sent}, the receiver counted {} and decoded {}",
            store.received(),
            records.len()
        );
        drop(records);
        let rate = per_s(sent, ingest + decode);
        if rate > ours_best {
            ours_best = rate;
            decode_share = decode.as_secs_f64() / (ingest + decode).as_secs_f64();
            let per_span = |d: Duration| d.as_secs_f64() * 1e6 / sent as f64;
            (load_cpu, decode_cpu) = (per_span(cpu1.saturating_sub(cpu0)), per_span(cpu2.saturating_sub(cpu1)));
        }
        drop(server_rt);
        theirs_best = theirs_best.max(per_s(sent, load(&client_rt, &theirs, per_sender, same, || ())?));
    }
    drop(rotel);
    // Allocations of the decode, counted in one more round, untimed (counting costs every
    // allocation an atomic add, which rotel-agent's process would not pay).
    let decode_allocs = {
        let server_rt = runtime()?;
        let (ours, store) = start_receiver(&server_rt, usize::try_from(sent)?)?;
        load(&client_rt, &ours, per_sender, same, || ())?;
        let (records, allocs) = crate::alloc::counted(|| store.snapshot());
        ensure!(records.len() as u64 == sent, "sent {sent}, decoded {}", records.len());
        allocs as f64 / sent as f64
    };

    Ok(vec![Row::higher_is_better(
        "collector_ingest.decoded",
        ours_best,
        theirs_best,
        "spans/s",
        1.0,
        &format!(
            "both decode every request into their span model (tracewire: SpanRecord via SpanStore::snapshot, {:.0}% of its time, {decode_cpu:.2} us of CPU and {decode_allocs:.1} allocations per span (counted in one more, untimed round), after a load of {load_cpu:.2} us of CPU per span, senders included; rotel-agent: prost, blackhole exporter); OTLP/gRPC, {SENDERS} senders x {per_sender} x {BATCH}-span requests; sent == received checked ({sent} per round, every request acknowledged, none rejected); best of {rounds} alternating rounds",
            decode_share * 100.0
        ),
    )])
}

/// Peak resident memory of this process (`VmHWM`, bytes), and the resident memory now
/// (`VmRSS`); `None` where `/proc` does not say.
fn memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// The receiver with a database at `path` on `rt` (its own workers), as `tracewire collect
/// --db` opens it ([`receiver::db_config`]: `synchronous=NORMAL`); its endpoint and store.
fn start_collect_db(
    rt: &tokio::runtime::Runtime,
    capacity: usize,
    path: &std::path::Path,
) -> Result<(String, Arc<SpanStore>)> {
    let store = rt.block_on(async {
        let db = tracewire_store::Store::open_with(path, receiver::db_config())?;
        anyhow::Ok(Arc::new(SpanStore::new(capacity).with_db(db)))
    })?;
    let endpoint = rt.block_on(async {
        let (listener, addr) = receiver::bind("127.0.0.1:0".parse()?).await?;
        tokio::spawn(receiver::serve_grpc(listener, Arc::clone(&store), std::future::pending()));
        anyhow::Ok(format!("http://{addr}"))
    })?;
    Ok((endpoint, store))
}

/// `collect_db`: spans per second stored by the receiver with a database (`tracewire collect
/// --db`, its settings): distinct ids in every request (the store keys spans by trace and span id), load
/// and the store's flush timed, the database's row count checked against the spans sent;
/// the peak memory the receiver and its writer add (the process's peak, reset before the
/// load, above its resident memory then: the requests are built before). No peer.
pub(crate) fn run_db(scale: Scale) -> Result<Vec<Row>> {
    let client_rt = runtime()?;
    let db_per_sender: u64 = scale.pick(60, 150);
    let db_sent = SENDERS * db_per_sender * BATCH as u64;
    let dir = tracewire_testkit::TempDir::new("tw-bench-ingest-db")?;
    let server_rt = runtime()?;
    let (ours, store) = start_collect_db(&server_rt, 1 << 16, &dir.path().join("spans.db"))?;
    // Warm-up (connections, the first pages), then the timed load.
    load(&client_rt, &ours, 2, |s, k| 1_000_000 + s * 10_000 + k, || ())?;
    // Peak memory from the start of the load (the requests are built; Linux: "5" resets
    // `VmHWM`).
    let mut before = None;
    let mut cpu0 = Duration::ZERO;
    let ingest = load(
        &client_rt,
        &ours,
        db_per_sender,
        |s, k| 1 + s * 10_000 + k,
        || {
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            before = memory();
            cpu0 = crate::cpu::process_time();
        },
    )?;
    let db = Arc::clone(&store);
    let (flush, stored) = server_rt.block_on(async move {
        let t0 = Instant::now();
        let Some(db) = db.db() else { anyhow::bail!("no database") };
        db.flush().await?;
        let flush = t0.elapsed();
        anyhow::Ok((flush, db.span_count().await?))
    })?;
    let cpu = crate::cpu::process_time().saturating_sub(cpu0);
    let after = memory();
    let warm = SENDERS * 2 * BATCH as u64;
    ensure!(stored == db_sent + warm, "sent {}, stored {stored} (refused {})", db_sent + warm, store.refused());
    let sqlite = per_s(db_sent, ingest + flush);
    // CPU of the whole process (senders included) per span stored: what the figure would be
    // bounded by on 2 idle cores, whatever else runs on the machine.
    #[allow(clippy::cast_precision_loss)]
    let cpu_per_span = cpu.as_secs_f64() * 1e6 / db_sent as f64;
    #[allow(clippy::cast_precision_loss)]
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let rss = match (before, after) {
        (Some((_, rss0)), Some((peak, _))) => {
            format!(
                "peak RSS {:.0} MiB, {:.0} MiB above the {:.0} MiB resident at the start of the load (requests built)",
                mib(peak),
                mib(peak.saturating_sub(rss0)),
                mib(rss0)
            )
        }
        _ => "peak RSS not available".to_owned(),
    };
    let mut row = Row::higher_is_better(
        "collector_ingest.sqlite",
        sqlite,
        0.0,
        "spans/s",
        0.0,
        &format!(
            "spans stored per second by the receiver with a database as tracewire collect --db opens it (synchronous=NORMAL: synced at checkpoints, not at each commit), OTLP/gRPC, {SENDERS} senders x {db_per_sender} distinct {BATCH}-span requests, load + flush timed ({cpu_per_span:.1} us of CPU per span, senders included); stored == sent ({db_sent}, and the warm-up's {warm}) checked by the row count; {rss}; no peer"
        ),
    );
    row.ratio = 0.0;
    row.goal = ">= 100k/s".into();
    row.met = sqlite >= 100_000.0;
    Ok(vec![row])
}
