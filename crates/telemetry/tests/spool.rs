//! The disk spool (`TRACEWIRE_SPOOL_DIR`): spans emitted while the collector is down are
//! spooled, survive a restart of the process, and are replayed exactly once when it is
//! back; a full spool evicts its oldest spans and counts them; a torn record is skipped;
//! two processes never share a directory.
//!
//! Processes that must exit and start again are this test binary run again as a child,
//! through [`child_process_emits_spans`] (it does nothing unless `SPOOL_TEST_CHILD` is set).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tracewire_telemetry::{Config, ExportSnapshot, Pipeline, SpoolConfig};
use tracewire_testkit::{HttpStub, Rotel, TempDir, free_port};
use tracing_subscriber::layer::SubscriberExt;

const WAIT: Duration = Duration::from_secs(30);

/// An endpoint where nothing listens: every export is refused at once.
fn down_endpoint() -> String {
    format!("http://127.0.0.1:{}/v1/traces", free_port())
}

/// A test collector: records every request, answers `200` with an empty
/// `ExportTraceServiceResponse`.
fn collector() -> HttpStub {
    HttpStub::start(Duration::ZERO, "application/x-protobuf", b"").unwrap()
}

/// The span ids the collector received, with how often each arrived, and the `i`
/// attribute of each span.
/// Replays the spool in `dir` into a new collector: the replaying pipeline's final counts,
/// and what the collector received (as [`received`]).
fn replay(dir: &Path) -> (ExportSnapshot, HashMap<Vec<u8>, usize>, Vec<i64>) {
    let stub = collector();
    let replay = Pipeline::new(&config(dir, &stub.url("v1/traces"), &[])).unwrap();
    let r = replay.shutdown().unwrap();
    let (ids, index) = received(&stub);
    (r, ids, index)
}

fn received(stub: &HttpStub) -> (HashMap<Vec<u8>, usize>, Vec<i64>) {
    let mut ids = HashMap::new();
    let mut index = Vec::new();
    for req in stub.received() {
        let decoded = ExportTraceServiceRequest::decode(req.body.as_slice()).unwrap();
        for span in decoded.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            *ids.entry(span.span_id.clone()).or_default() += 1;
            for kv in &span.attributes {
                if let (Some(Value::IntValue(i)), "i") = (kv.value.as_ref().and_then(|v| v.value.as_ref()), &*kv.key) {
                    index.push(*i);
                }
            }
        }
    }
    (ids, index)
}

fn duplicates(ids: &HashMap<Vec<u8>, usize>) -> usize {
    ids.values().map(|n| n - 1).sum()
}

fn config(dir: &Path, endpoint: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars = vec![
        ("OTEL_SERVICE_NAME", "spool-test"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "16384"),
        ("TRACEWIRE_SHUTDOWN_TIMEOUT_MS", "10000"),
        ("TRACEWIRE_SPOOL_DIR", dir.to_str().unwrap()),
    ];
    vars.extend_from_slice(extra);
    Config::from_vars(vars).unwrap()
}

/// Emits `n` spans named `spool.test` with attribute `i` = `from..from + n`.
fn emit(pipeline: &Pipeline, from: i64, n: i64) {
    let subscriber = tracing_subscriber::registry().with(pipeline.layer());
    tracing::subscriber::with_default(subscriber, || {
        for i in from..from + n {
            let _span = tracing::info_span!("spool.test", i).entered();
        }
    });
}

/// Waits until `done` holds for the pipeline's counters.
fn wait_stats(pipeline: &Pipeline, done: impl Fn(&ExportSnapshot) -> bool) -> ExportSnapshot {
    tracewire_testkit::eventually_some(WAIT, || Some(pipeline.stats().snapshot()).filter(|s| done(s)))
        .unwrap_or_else(|_| panic!("timed out; stats {:?}", pipeline.stats().snapshot()))
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// The child process: with `SPOOL_TEST_CHILD=1`, builds the pipeline from its environment
/// (`OTEL_*`, `TRACEWIRE_SPOOL_*`), emits `SPOOL_TEST_SPANS` spans (attribute `i` from
/// `SPOOL_TEST_FROM`), shuts down and prints its counters on one `SPOOL-STATS` line.
#[test]
fn child_process_emits_spans() {
    if std::env::var_os("SPOOL_TEST_CHILD").is_none() {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap().parse::<i64>().unwrap();
    let pipeline = Pipeline::new(&Config::from_env().unwrap()).unwrap();
    emit(&pipeline, var("SPOOL_TEST_FROM"), var("SPOOL_TEST_SPANS"));
    let s = pipeline.shutdown().unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "SPOOL-STATS {} {} {} {} {} {} {} {}",
        s.emitted,
        s.exported,
        s.spooled,
        s.replayed,
        s.evicted,
        s.dropped(),
        s.spool_torn,
        s.pending()
    )
    .unwrap();
}

/// The counters a child printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChildStats {
    emitted: u64,
    exported: u64,
    spooled: u64,
    replayed: u64,
    evicted: u64,
    dropped: u64,
    torn: u64,
    pending: u64,
}

/// This binary as a child process that emits `n` spans and exits.
fn child(dir: &Path, endpoint: &str, from: i64, n: i64) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_process_emits_spans", "--nocapture", "--test-threads=1"])
        .env("SPOOL_TEST_CHILD", "1")
        .env("SPOOL_TEST_FROM", from.to_string())
        .env("SPOOL_TEST_SPANS", n.to_string())
        .env("OTEL_SERVICE_NAME", "spool-child")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "16384")
        .env("TRACEWIRE_SHUTDOWN_TIMEOUT_MS", "10000")
        .env("TRACEWIRE_SPOOL_DIR", dir)
        .stdin(Stdio::null());
    cmd
}

/// Runs [`child`] to its end; its counters.
fn run_child(dir: &Path, endpoint: &str, from: i64, n: i64) -> ChildStats {
    let out = child(dir, endpoint, from, n).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let line =
        stdout.lines().find_map(|l| l.split_once("SPOOL-STATS ").map(|(_, r)| r)).unwrap_or_else(|| panic!("{stdout}"));
    let v: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
    ChildStats {
        emitted: v[0],
        exported: v[1],
        spooled: v[2],
        replayed: v[3],
        evicted: v[4],
        dropped: v[5],
        torn: v[6],
        pending: v[7],
    }
}

/// Two processes emit 10 000 spans each while the collector is down, one after the other
/// on the same spool; a third starts with the collector back and replays them within its
/// run and bounded shutdown. Every span arrives exactly once, and the counters of the
/// three processes agree with what the collector received.
#[test]
fn twenty_thousand_spans_spooled_across_a_restart_arrive_exactly_once() {
    let dir = TempDir::new("tracewire-spool").unwrap();
    let down = down_endpoint();
    let first = run_child(dir.path(), &down, 0, 10_000);
    let second = run_child(dir.path(), &down, 10_000, 10_000);
    for s in [first, second] {
        assert_eq!(
            (s.emitted, s.exported, s.spooled, s.replayed, s.evicted, s.dropped, s.pending),
            (10_000, 0, 10_000, 0, 0, 0, 0),
            "{s:?}"
        );
    }
    assert!(!segments(dir.path()).is_empty());

    let stub = collector();
    let endpoint = stub.url("v1/traces");
    let third = run_child(dir.path(), &endpoint, 20_000, 100);
    let (ids, index) = received(&stub);
    assert_eq!(duplicates(&ids), 0, "every span exactly once");
    assert_eq!(ids.len(), 20_100);
    let mut index = index;
    index.sort_unstable();
    assert_eq!(index, (0..20_100).collect::<Vec<_>>());
    // The counters agree: what the first two spooled, the third replayed (with whatever of
    // its own it queued behind them); with what it sent live, that is all the collector got.
    assert_eq!(third.replayed, first.spooled + second.spooled + third.spooled, "{third:?}");
    assert_eq!(third.exported + third.replayed, 20_100, "{third:?}");
    assert_eq!((third.emitted, third.dropped, third.evicted, third.torn, third.pending), (100, 0, 0, 0, 0));
    assert!(segments(dir.path()).is_empty(), "a replayed spool is empty");
}

/// In one process over OTLP/gRPC, with rotel-agent as the collector: spans spooled while
/// it is down are replayed once it starts on its port, and later spans go out live.
#[test]
fn a_collector_coming_back_gets_the_spool_replayed_by_the_running_process() {
    let dir = TempDir::new("tracewire-spool").unwrap();
    let (grpc, http) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{grpc}");
    let mut cfg = config(dir.path(), &endpoint, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
    cfg.batch.max_export_batch_size = 100;
    let pipeline = Pipeline::new(&cfg).unwrap();
    emit(&pipeline, 0, 300);
    let s = wait_stats(&pipeline, |s| s.spooled == 300);
    assert_eq!((s.exported, s.dropped(), s.replayed), (0, 0, 0));

    let rotel = Rotel::start_on(grpc, http).unwrap();
    let s = wait_stats(&pipeline, |s| s.replayed == 300);
    assert_eq!((s.exported, s.dropped(), s.evicted), (0, 0, 0));
    emit(&pipeline, 300, 50);
    let s = pipeline.shutdown().unwrap();
    assert_eq!((s.emitted, s.exported, s.spooled, s.replayed, s.dropped(), s.pending()), (350, 50, 300, 300, 0, 0));
    let spans = rotel.wait_for(WAIT, |s| s.iter().filter(|x| x.name == "spool.test").count() >= 350).unwrap();
    let mut ids: Vec<&str> = spans.iter().filter(|x| x.name == "spool.test").map(|x| x.span_id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!((n, ids.len()), (350, 350), "every span once");
    assert!(spans.iter().all(|x| x.name != "spool.test" || x.resource_attr("service.name") == Some("spool-test")));
}

/// A spool bounded to 64 KiB fills up: the oldest spans are evicted and counted, the
/// newest are the ones replayed, and the files never exceed the bound.
#[test]
fn a_full_spool_evicts_its_oldest_spans_and_counts_them() {
    let dir = TempDir::new("tracewire-spool").unwrap();
    let max = 64 << 10;
    let mut cfg = config(dir.path(), &down_endpoint(), &[("TRACEWIRE_SPOOL_MAX_BYTES", "65536")]);
    cfg.batch.max_export_batch_size = 50;
    assert_eq!(cfg.spool, Some(SpoolConfig::new(dir.path()).max_bytes(max)));
    let pipeline = Pipeline::new(&cfg).unwrap();
    emit(&pipeline, 0, 2000);
    let s = pipeline.shutdown().unwrap();
    assert_eq!((s.emitted, s.spooled, s.exported, s.dropped(), s.pending()), (2000, 2000, 0, 0, 0), "{s:?}");
    assert!(s.evicted > 0 && s.evicted < 2000, "{s:?}");
    let on_disk: u64 = segments(dir.path()).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(on_disk <= max, "{on_disk} bytes on disk");

    let (r, ids, mut index) = replay(dir.path());
    assert_eq!(r.replayed, 2000 - s.evicted, "{r:?}");
    assert_eq!((ids.len(), duplicates(&ids)), (usize::try_from(r.replayed).unwrap(), 0));
    index.sort_unstable();
    let first_kept = i64::try_from(s.evicted).unwrap();
    assert_eq!(index, (first_kept..2000).collect::<Vec<_>>(), "the oldest were evicted");
}

/// A crash mid-write leaves a torn record at the end of a segment: it is detected by its
/// length, counted and skipped; the records before it are replayed.
#[test]
fn a_torn_record_at_the_tail_is_skipped_and_the_earlier_ones_replayed() {
    let dir = TempDir::new("tracewire-spool").unwrap();
    let mut cfg = config(dir.path(), &down_endpoint(), &[]);
    cfg.batch.max_export_batch_size = 100;
    let pipeline = Pipeline::new(&cfg).unwrap();
    emit(&pipeline, 0, 300);
    let s = pipeline.shutdown().unwrap();
    assert_eq!((s.spooled, s.dropped()), (300, 0));
    // What a crash in the middle of an append leaves: a record header announcing 4000
    // bytes, and only the first 100 of them.
    let last = segments(dir.path()).pop().unwrap();
    let mut torn = 4000u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xab; 104]);
    std::fs::OpenOptions::new().append(true).open(&last).unwrap().write_all(&torn).unwrap();

    let (r, ids, mut index) = replay(dir.path());
    assert_eq!((r.replayed, r.spool_torn), (300, 1), "{r:?}");
    assert_eq!((ids.len(), duplicates(&ids)), (300, 0));
    index.sort_unstable();
    assert_eq!(index, (0..300).collect::<Vec<_>>());
}

/// A record whose bytes changed (a checksum mismatch) ends what is read of its segment:
/// counted as torn; the records of other segments and before it are replayed.
#[test]
fn a_record_failing_its_checksum_is_skipped_and_counted() {
    let dir = TempDir::new("tracewire-spool").unwrap();
    let mut cfg = config(dir.path(), &down_endpoint(), &[]);
    cfg.batch.max_export_batch_size = 100;
    let pipeline = Pipeline::new(&cfg).unwrap();
    emit(&pipeline, 0, 300);
    assert_eq!(pipeline.shutdown().unwrap().spooled, 300);
    // Flip one byte in the last record of the segment.
    let last = segments(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&last).unwrap();
    let at = data.len() - 10;
    data[at] ^= 0xff;
    std::fs::write(&last, &data).unwrap();

    let (r, ids, mut index) = replay(dir.path());
    assert_eq!(r.spool_torn, 1, "{r:?}");
    assert_eq!(duplicates(&ids), 0);
    assert_eq!(u64::try_from(ids.len()).unwrap(), r.replayed);
    assert!(r.replayed > 0 && r.replayed < 300, "{r:?}");
    // The damaged record held the last spans; every one before it arrives.
    index.sort_unstable();
    assert_eq!(index, (0..i64::try_from(r.replayed).unwrap()).collect::<Vec<_>>());
}

/// Two pipelines (two processes alike: the lock is `flock(2)`) on one directory: the
/// second finds it locked and drops what it cannot deliver, counted; the first one's
/// spool is intact and replayed later.
#[test]
fn a_second_user_of_a_spool_directory_is_locked_out() {
    let dir = TempDir::new("tracewire-spool").unwrap();
    let down = down_endpoint();
    let owner = Pipeline::new(&config(dir.path(), &down, &[])).unwrap();
    emit(&owner, 0, 100);
    // Spooled: the owner holds the lock.
    wait_stats(&owner, |s| s.spooled == 100);
    let other = Pipeline::new(&config(dir.path(), &down, &[])).unwrap();
    emit(&other, 1000, 100);
    let o = other.shutdown().unwrap();
    assert_eq!((o.spooled, o.dropped_export_failed, o.pending()), (0, 100, 0), "{o:?}");
    let s = owner.shutdown().unwrap();
    assert_eq!((s.spooled, s.dropped()), (100, 0), "{s:?}");

    let (r, ids, mut index) = replay(dir.path());
    assert_eq!(r.replayed, 100);
    assert_eq!((ids.len(), duplicates(&ids)), (100, 0));
    index.sort_unstable();
    assert_eq!(index, (0..100).collect::<Vec<_>>());
}

/// A process killed (SIGKILL) while it spools: what it spooled before is intact. The next
/// process replays every complete record once, and a record torn by the kill is at most
/// one, counted.
#[test]
fn a_process_killed_while_spooling_leaves_an_intact_spool() {
    let dir = TempDir::new("tracewire-spool").unwrap();
    let mut emitter = child(dir.path(), &down_endpoint(), 0, 10_000_000).stdout(Stdio::null()).spawn().unwrap();
    let on_disk =
        || -> u64 { segments(dir.path()).iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum() };
    assert!(
        tracewire_testkit::eventually(WAIT, || on_disk() > 512 << 10).is_ok(),
        "the child spooled {} bytes",
        on_disk()
    );
    emitter.kill().unwrap(); // SIGKILL to its own pid
    emitter.wait().unwrap();

    let (r, ids, mut index) = replay(dir.path());
    assert!(r.replayed > 0 && r.spool_torn <= 1, "{r:?}");
    assert_eq!((u64::try_from(ids.len()).unwrap(), duplicates(&ids)), (r.replayed, 0));
    index.sort_unstable();
    index.dedup();
    assert_eq!(u64::try_from(index.len()).unwrap(), r.replayed, "every replayed span is a distinct one");
    assert!(segments(dir.path()).is_empty());
}

/// `TRACEWIRE_SPOOL_DIR` turns the spool on; an unusable `TRACEWIRE_SPOOL_MAX_BYTES` is a
/// warning naming the variable and the default (as for the other numeric settings).
#[test]
fn the_spool_is_configured_from_the_environment() {
    assert_eq!(Config::from_vars([("OTEL_SERVICE_NAME", "x")]).unwrap().spool, None);
    let cfg = Config::from_vars([("TRACEWIRE_SPOOL_DIR", "/tmp/s"), ("TRACEWIRE_SPOOL_MAX_BYTES", "1048576")]).unwrap();
    assert_eq!(cfg.spool, Some(SpoolConfig::new("/tmp/s").max_bytes(1 << 20)));
    for bad in ["0", "-1", "64MiB"] {
        let cfg = Config::from_vars([("TRACEWIRE_SPOOL_DIR", "/tmp/s"), ("TRACEWIRE_SPOOL_MAX_BYTES", bad)]).unwrap();
        assert_eq!(cfg.spool.unwrap().max_bytes, SpoolConfig::DEFAULT_MAX_BYTES);
        assert!(cfg.warnings.iter().any(|w| w.starts_with("TRACEWIRE_SPOOL_MAX_BYTES")), "{:?}", cfg.warnings);
    }
}
