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
//! And `collector_ingest.sqlite`: spans per second stored by the receiver with a database
//! (`tracewire collect --db`), load and the store's flush timed, the database's count
//! checked; no peer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixtures::{
    INGEST_BATCH as BATCH, RotelBlackhole, export_request, otlp_client, runtime, start_receiver, start_receiver_with_db,
};
use crate::{Row, Scale};
use anyhow::{Result, ensure};

const SENDERS: u64 = 4;

/// Sends `per_sender` requests from each of [`SENDERS`] concurrent senders to `endpoint`
/// (request `k` of sender `s` made by `export_request(seed(s, k))`, built before the clock
/// starts); returns the wall time until every request was acknowledged. Fails unless every
/// request was acknowledged with no rejected spans.
fn load(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    per_sender: u64,
    seed: impl Fn(u64, u64) -> u64,
) -> Result<Duration> {
    rt.block_on(async {
        let mut clients = Vec::new();
        for s in 0..SENDERS {
            let requests: Vec<_> = (0..per_sender).map(|k| export_request(seed(s, k))).collect();
            clients.push((otlp_client(endpoint).await?, requests));
        }
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for (mut client, requests) in clients {
            tasks.push(tokio::spawn(async move {
                let mut rejected = 0;
                for req in requests {
                    let answer = client.export(req).await?.into_inner();
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

pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let client_rt = runtime()?;
    let per_sender: u64 = 150;
    let sent = SENDERS * per_sender * BATCH as u64;
    let rounds = scale.pick(2, 3);
    let same = |s: u64, _k: u64| s;

    // rotel-agent, in its own process, stopped by its pid (when dropped).
    let rotel = RotelBlackhole::start()?;
    let theirs = rotel.endpoint().to_owned();
    load(&client_rt, &theirs, 10, same)?;

    let (mut ours_best, mut theirs_best) = (0.0f64, 0.0f64);
    let mut decode_share = 0.0;
    for _ in 0..rounds {
        // tracewire's receiver, on its own runtime, a fresh store each round.
        let server_rt = runtime()?;
        let capacity = usize::try_from(sent)?;
        let (ours, store) = start_receiver(&server_rt, capacity)?;
        let ingest = load(&client_rt, &ours, per_sender, same)?;
        let t0 = Instant::now();
        let records = store.snapshot();
        let decode = t0.elapsed();
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
        }
        drop(server_rt);
        theirs_best = theirs_best.max(per_s(sent, load(&client_rt, &theirs, per_sender, same)?));
    }
    drop(rotel);

    // With a database: distinct ids for every request (the store keys spans by trace and
    // span id), a smaller load (SQLite is the limit).
    let db_per_sender: u64 = 40;
    let db_sent = SENDERS * db_per_sender * BATCH as u64;
    let dir = tracewire_testkit::TempDir::new("tw-bench-ingest-db")?;
    let server_rt = runtime()?;
    let (ours, store) = start_receiver_with_db(&server_rt, 1 << 16, &dir.path().join("spans.db"))?;
    let ingest = load(&client_rt, &ours, db_per_sender, |s, k| 1 + s * 10_000 + k)?;
    let db = Arc::clone(&store);
    let (flush, stored) = server_rt.block_on(async move {
        let t0 = Instant::now();
        let Some(db) = db.db() else { anyhow::bail!("no database") };
        db.flush().await?;
        let flush = t0.elapsed();
        anyhow::Ok((flush, db.span_count().await?))
    })?;
    ensure!(stored == db_sent, "sent {db_sent}, stored {stored} (refused {})", store.refused());
    let sqlite = per_s(db_sent, ingest + flush);

    let mut sqlite_row = Row::higher_is_better(
        "collector_ingest.sqlite",
        sqlite,
        0.0,
        "spans/s",
        0.0,
        &format!(
            "spans stored per second by the receiver with a database (tracewire collect --db: WAL, batched commits), {SENDERS} senders x {db_per_sender} distinct {BATCH}-span requests, load + flush timed; stored == sent ({stored}) checked; no peer"
        ),
    );
    sqlite_row.ratio = 0.0;
    sqlite_row.goal = "none yet".into();
    sqlite_row.met = true;
    Ok(vec![
        Row::higher_is_better(
            "collector_ingest.decoded",
            ours_best,
            theirs_best,
            "spans/s",
            1.0,
            &format!(
                "both decode every request into their span model (tracewire: SpanRecord via SpanStore::snapshot, {:.0}% of its time; rotel-agent: prost, blackhole exporter); OTLP/gRPC, {SENDERS} senders x {per_sender} x {BATCH}-span requests; sent == received checked ({sent} per round, every request acknowledged, none rejected); best of {rounds} alternating rounds",
                decode_share * 100.0
            ),
        ),
        sqlite_row,
    ])
}
