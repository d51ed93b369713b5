//! `tracewire report` at scale: the real binary on databases of 100k and 1M generated spans
//! (remote-exec traces of 17 spans over 3 services, with the attributes tracewire's stages
//! carry), written once with the store's API and cached under `target/tracewire-bench/`.
//! Measured: wall time and peak RSS of the `tracewire report` process (`wait4`'s rusage, in a
//! freshly started `tracewire-bench measure` process, so that the bench's own memory does
//! not count),
//! the median of three runs after a warm-up, and how both grow from 100k to 1M spans; and
//! how long the large report's report.html takes to load in headless chromium.
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
    ("exec-server", "relay.decrypt", Some(6), 460, 490),
    ("exec-server", "relay.decode", Some(6), 490, 520),
    ("exec-server", "rpc.queue", Some(6), 520, 600),
    ("exec-server", "rpc.dispatch", Some(6), 600, 1_100),
    ("exec-server", "process", Some(11), 650, 8_800),
    ("exec-server", "process.spawn", Some(12), 660, 1_050),
    ("exec-server", "process.run", Some(12), 1_060, 8_700),
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

/// The cached database of `spans` spans, written once (the name changes with [`SHAPE`], so
/// that a database of an older shape is not reused).
fn database(spans: usize) -> Result<PathBuf> {
    let dir = target_dir()?.join("tracewire-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("report-v2-{spans}.db"));
    if path.is_file() {
        return Ok(path);
    }
    let partial = dir.join(format!("report-v2-{spans}.db.partial"));
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
///
/// Through a fresh `tracewire-bench measure` process ([`measure`]): Linux starts a child's
/// peak RSS at its parent's resident size, and this process holds whatever the earlier
/// sections left resident, while a freshly started one holds a few MiB.
fn report(db: &Path) -> Result<(Duration, u64)> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("the bench binary has no directory")?.join("tracewire");
    if !bin.is_file() {
        bail!("no tracewire binary next to the bench: cargo build --release --all-features -p tracewire-cli");
    }
    let out = std::env::temp_dir().join(format!("tw-bench-report-{}", std::process::id()));
    let measured = std::process::Command::new(&exe)
        .arg("measure")
        .arg(&bin)
        .args(["report", "--quiet", "--db"])
        .arg(db)
        .arg("--out")
        .arg(&out)
        .output()
        .with_context(|| format!("running {} measure", exe.display()))?;
    let _ = std::fs::remove_dir_all(&out);
    let text = String::from_utf8_lossy(&measured.stdout);
    if !measured.status.success() {
        bail!("tracewire report failed: {}{}", text.trim(), String::from_utf8_lossy(&measured.stderr).trim());
    }
    let mut fields = text.split_whitespace().map(str::parse::<u64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(wall_ns)), Some(Ok(max_rss))) => Ok((Duration::from_nanos(wall_ns), max_rss)),
        _ => bail!("tracewire-bench measure printed {text:?}"),
    }
}

/// Runs `argv` (stdout to /dev/null) and waits for it: its wall time and peak RSS in bytes
/// (`wait4`'s rusage), or an error if it failed. `tracewire-bench measure` prints both.
///
/// # Errors
/// The command not starting, or not exiting with status 0.
pub fn measure(argv: &[std::ffi::OsString]) -> Result<(Duration, u64)> {
    let (program, args) = argv.split_first().context("measure: no command")?;
    let t0 = Instant::now();
    let child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", program.to_string_lossy()))?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped; the pointers are to live locals.
    let rc = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let wall = t0.elapsed();
    if rc != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{} failed (status {status})", program.to_string_lossy());
    }
    // ru_maxrss is in KiB on Linux.
    Ok((wall, u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024))
}

/// Runs [`report`] [`RUNS`] times after a warm-up (which fills the page cache): the run of
/// median wall time (its peak RSS with it), and the wall times of all runs, in order.
fn median_report(db: &Path) -> Result<((Duration, u64), Vec<Duration>)> {
    report(db)?;
    let runs: Vec<(Duration, u64)> = (0..RUNS).map(|_| report(db)).collect::<Result<_>>()?;
    let walls: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    let mut sorted = runs;
    sorted.sort_by_key(|r| r.0);
    Ok((sorted[RUNS / 2], walls))
}

/// report.html of `tracewire report --db DB` in headless chromium: its size (bytes) and the
/// median of [`RUNS`] loads, each from the iframe pointed at it to its document laid out
/// (`tracewire_testkit::browser::load_ms`), in ms.
fn render(db: &Path) -> Result<(u64, f64)> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("the bench binary has no directory")?.join("tracewire");
    let out = tracewire_testkit::TempDir::new("tw-bench-render")?;
    let status = std::process::Command::new(&bin)
        .args(["report", "--quiet", "--db"])
        .arg(db)
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("tracewire report failed ({status})");
    }
    let page = out.path().join("report.html");
    let bytes = std::fs::metadata(&page)?.len();
    let mut loads = (0..RUNS)
        .map(|_| tracewire_testkit::browser::load_ms(&page).map_err(|e| anyhow::anyhow!("chromium: {e}")))
        .collect::<Result<Vec<f64>>>()?;
    loads.sort_by(f64::total_cmp);
    Ok((bytes, loads[RUNS / 2]))
}

/// Measured runs per size: one noisy run does not decide a row.
const RUNS: usize = 3;

/// The `report` rows.
pub(crate) fn run(scale: Scale) -> Result<Vec<Row>> {
    let (small, large) = scale.pick((10_000, 100_000), (100_000, 1_000_000));
    let (small_db, large_db) = (database(small)?, database(large)?);
    let ((t_small, m_small), runs_small) = median_report(&small_db)?;
    let ((t_large, m_large), runs_large) = median_report(&large_db)?;
    let seconds =
        |runs: &[Duration]| runs.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect::<Vec<_>>().join(", ");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per_span = |t: Duration, n: usize| t.as_secs_f64() / n as f64;
    let time_growth = per_span(t_large, large) / per_span(t_small, small);
    let memory_growth = m_large as f64 / m_small.max(1) as f64;
    let label = |n: usize| if n >= 1_000_000 { format!("{}M", n / 1_000_000) } else { format!("{}k", n / 1000) };
    let note = format!(
        "tracewire report --db (release) on {} spans ({} traces of {SPANS_PER_TRACE}, 3 services): {:.2} s (median of {RUNS} runs: {} s), {:.0} MiB peak RSS; on {} spans: {:.2} s ({} s), {:.0} MiB; peer column: the goal",
        large,
        large.div_ceil(SPANS_PER_TRACE),
        t_large.as_secs_f64(),
        seconds(&runs_large),
        mib(m_large),
        small,
        t_small.as_secs_f64(),
        seconds(&runs_small),
        mib(m_small)
    );
    let (html_bytes, html_ms) = render(&large_db)?;
    let html_note = format!(
        "report.html of the {} report ({:.0} KiB; bound: 2 MiB whatever the input) loaded in headless chromium (an iframe of 1200x900, parse, style and layout; chromium's start not counted), median of {RUNS} loads; peer column: the goal",
        label(large),
        html_bytes as f64 / 1024.0
    );
    Ok(vec![
        Row::lower_is_better(&format!("report.{}.wall", label(large)), t_large.as_secs_f64(), 5.0, "s", 1.0, &note),
        Row::lower_is_better(&format!("report.{}.html_load", label(large)), html_ms, 1000.0, "ms", 1.0, &html_note),
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
