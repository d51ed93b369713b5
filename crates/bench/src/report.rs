//! `tracewire report` at scale: the real binary on databases of 100k and 1M generated spans
//! (remote-exec traces of 17 spans over 3 services, with the attributes tracewire's stages
//! carry), written once with the store's API and cached under `target/tracewire-bench/`.
//! Measured: wall time and peak RSS of the `tracewire report` process (`wait4`'s rusage),
//! and how both grow from 100k to 1M spans.
#![allow(unsafe_code)]
// wait4 is a C function; one call on our own child with local out-parameters.
// Seconds and MiB as f64: far below f64's precision limits.
#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tracewire_store::{FullPolicy, SpanRecord, Store, StoreConfig};

use crate::{Row, Scale};

/// Spans per trace.
const SPANS_PER_TRACE: usize = 17;

/// The stages of one remote exec: (service, stage, parent index, start, end) in µs.
const SHAPE: [(&str, &str, Option<usize>, i64, i64); SPANS_PER_TRACE] = [
    ("agent", "exec", None, 0, 9_000),
    ("agent", "rpc.call", Some(0), 50, 1_200),
    ("agent", "relay.frame", Some(1), 60, 90),
    ("agent", "relay.encrypt", Some(1), 90, 120),
    ("agent", "relay.send", Some(1), 120, 200),
    ("relay", "relay.forward", Some(4), 210, 400),
    ("exec-server", "relay.recv", Some(5), 410, 450),
    ("exec-server", "relay.reorder", Some(6), 450, 460),
    ("exec-server", "relay.decrypt", Some(6), 460, 490),
    ("exec-server", "relay.decode", Some(6), 490, 520),
    ("exec-server", "rpc.queue", Some(6), 520, 600),
    ("exec-server", "rpc.dispatch", Some(6), 600, 1_100),
    ("exec-server", "process", Some(11), 650, 8_800),
    ("exec-server", "process.spawn", Some(12), 660, 1_050),
    ("exec-server", "process.stdout", Some(12), 1_400, 1_500),
    ("exec-server", "process.exit", Some(12), 8_700, 8_790),
    ("agent", "terminal.deliver", Some(0), 1_600, 1_700),
];

/// The spans of trace `t` (durations vary with `t`, one trace in 50 has a failed spawn).
fn trace(t: u64) -> Vec<SpanRecord> {
    let trace_id = format!("{:032x}", t.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5bd1_e995);
    let base = 1_750_000_000_000_000_000 + i64::try_from(t).unwrap_or(0) * 20_000_000;
    let stretch = 1 + i64::try_from(t % 13).unwrap_or(0);
    let id = |i: usize| format!("{:08x}{:08x}", t & 0xffff_ffff, i + 1);
    SHAPE
        .iter()
        .enumerate()
        .map(|(i, &(service, stage, parent, start, end))| {
            let mut attributes = BTreeMap::from([
                ("tracewire.stage".to_owned(), stage.to_owned()),
                ("host.name".to_owned(), format!("worker-{}", t % 8)),
            ]);
            match stage {
                "rpc.call" | "rpc.dispatch" => {
                    attributes.insert("rpc.system".into(), "grpc".into());
                    attributes.insert("rpc.method".into(), "Start".into());
                    attributes.insert("rpc.service".into(), "tracewire.exec.v1.ExecServer".into());
                }
                "process" | "process.spawn" => {
                    attributes.insert("process.command_line".into(), format!("cargo test -p crate-{}", t % 31));
                    attributes.insert("process.pid".into(), (10_000 + t % 50_000).to_string());
                }
                "terminal.deliver" => {
                    attributes.insert("tracewire.event".into(), "Output".into());
                    attributes.insert("tracewire.bytes".into(), (t % 4096).to_string());
                }
                _ => {}
            }
            SpanRecord {
                trace_id: trace_id.clone(),
                span_id: id(i),
                parent_id: parent.map(id),
                name: stage.to_owned(),
                service: service.to_owned(),
                start_ns: base + start * 1_000 * stretch,
                end_ns: base + end * 1_000 * stretch,
                status_code: if stage == "process.spawn" && t % 50 == 0 { 2 } else { 0 },
                attributes,
                ..SpanRecord::default()
            }
        })
        .collect()
}

/// The target directory (the bench binary lives in `target/<profile>/`).
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).context("the bench binary has no target directory")
}

/// The cached database of `spans` spans, written once.
fn database(spans: usize) -> Result<PathBuf> {
    let dir = target_dir()?.join("tracewire-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("report-{spans}.db"));
    if path.is_file() {
        return Ok(path);
    }
    let partial = dir.join(format!("report-{spans}.db.partial"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
    }
    eprintln!("writing {spans} spans to {} (once) ...", path.display());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let mut config = StoreConfig::default();
        config.full = FullPolicy::Wait(Duration::from_secs(60));
        let store = Store::open_with(&partial, config)?;
        let traces = spans.div_ceil(SPANS_PER_TRACE) as u64;
        let mut batch = Vec::with_capacity(1024);
        for t in 0..traces {
            batch.extend(trace(t));
            if batch.len() >= 1000 {
                store.append_spans(std::mem::take(&mut batch)).await?;
            }
        }
        store.append_spans(batch).await?;
        store.flush().await?;
        anyhow::Ok(())
    })?;
    drop(runtime);
    std::fs::rename(&partial, &path)?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
    }
    Ok(path)
}

/// Runs `tracewire report --db DB --quiet` and returns its wall time and peak RSS (bytes).
fn report(db: &Path) -> Result<(Duration, u64)> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("the bench binary has no directory")?.join("tracewire");
    if !bin.is_file() {
        bail!("no tracewire binary next to the bench: cargo build --release --all-features -p tracewire-cli");
    }
    let out = std::env::temp_dir().join(format!("tw-bench-report-{}", std::process::id()));
    let t0 = Instant::now();
    let child = std::process::Command::new(&bin)
        .args(["report", "--quiet", "--db"])
        .arg(db)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped; the pointers are to live locals.
    let rc = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let wall = t0.elapsed();
    let _ = std::fs::remove_dir_all(&out);
    if rc != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("tracewire report failed (status {status})");
    }
    // ru_maxrss is in KiB on Linux.
    Ok((wall, u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024))
}

/// The `report` rows.
pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let (small, large) = scale.pick((10_000, 100_000), (100_000, 1_000_000));
    let (small_db, large_db) = (database(small)?, database(large)?);
    // Warm the page cache, then measure.
    report(&small_db)?;
    let (t_small, m_small) = report(&small_db)?;
    report(&large_db)?;
    let (t_large, m_large) = report(&large_db)?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per_span = |t: Duration, n: usize| t.as_secs_f64() / n as f64;
    let time_growth = per_span(t_large, large) / per_span(t_small, small);
    let memory_growth = m_large as f64 / m_small.max(1) as f64;
    let label = |n: usize| if n >= 1_000_000 { format!("{}M", n / 1_000_000) } else { format!("{}k", n / 1000) };
    let note = format!(
        "tracewire report --db (release) on {} spans ({} traces of {SPANS_PER_TRACE}, 3 services): {:.2} s, {:.0} MiB peak RSS; on {} spans: {:.2} s, {:.0} MiB; peer column: the goal",
        large,
        large.div_ceil(SPANS_PER_TRACE),
        t_large.as_secs_f64(),
        mib(m_large),
        small,
        t_small.as_secs_f64(),
        mib(m_small)
    );
    Ok(vec![
        Row::lower_is_better(&format!("report.{}.wall", label(large)), t_large.as_secs_f64(), 5.0, "s", 1.0, &note),
        Row::lower_is_better(&format!("report.{}.peak_rss", label(large)), mib(m_large), 512.0, "MiB", 1.0, &note),
        Row::lower_is_better(
            &format!("report.time_per_span.{}/{}", label(large), label(small)),
            time_growth,
            1.5,
            "x",
            1.0,
            &note,
        ),
        Row::lower_is_better(
            &format!("report.peak_rss.{}/{}", label(large), label(small)),
            memory_growth,
            1.5,
            "x",
            1.0,
            &note,
        ),
    ])
}
