//! `tracewire diff` reads its inputs as `tracewire report` does, with bounded memory: the
//! peak RSS of the real process (`wait4`'s rusage) barely grows from 50k to 200k spans of
//! OTLP JSON, every trace's spans spread over the whole file; large inputs print progress
//! on stderr, none with `--quiet`. (Alone in its test binary: a child's peak RSS counts
//! this process's, so no other test may hold spans here.)
#![allow(unsafe_code)] // wait4 on our own child

use std::path::Path;
use std::process::{Command, Output, Stdio};

use tracewire_collector::SpanRecord;

mod common;
use common::BIN;

/// `n` spans, 1000 at a time (never all at once: the peak RSS of this process would count in
/// its children's, which `exec` from it): traces of 10 (a root `exec` and 9 children of 3
/// stages), written stage by stage across all traces, so each trace's spans lie far apart
/// in the file; every 97th trace has an error.
fn spans(n: u32, mut each: impl FnMut(Vec<SpanRecord>)) {
    let traces = n / 10;
    let mut chunk = Vec::with_capacity(1000);
    for s in 0..10u32 {
        for t in 0..traces {
            let stage = match s {
                0 => "exec",
                1 => "rpc.call",
                2..=5 => "rpc.dispatch",
                _ => "process.spawn",
            };
            let start = 1_750_000_000_000_000_000 + i64::from(t) * 10_000_000 + i64::from(s) * 10_000;
            chunk.push(SpanRecord {
                trace_id: format!("{:08x}{t:024x}", 0x5eed_u32 + t % 7),
                span_id: format!("{t:08x}{s:08x}"),
                parent_id: (s > 0).then(|| format!("{t:08x}{:08x}", 0)),
                name: stage.into(),
                service: if s % 2 == 0 { "client".into() } else { "server".into() },
                start_ns: start,
                end_ns: start + 1_000_000 - i64::from(s) * 50_000 + i64::from(t * 7 % 1000) * 1_000,
                status_code: i32::from(t % 97 == 3 && s == 9) * 2,
                attributes: [("tracewire.stage".to_owned(), stage.to_owned())].into(),
                ..SpanRecord::default()
            });
            if chunk.len() == 1000 {
                each(std::mem::take(&mut chunk));
            }
        }
    }
    if !chunk.is_empty() {
        each(chunk);
    }
}

fn write_jsonl(path: &Path, n: u32) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    spans(n, |chunk| {
        tracewire_collector::otlp_json::write_lines(&chunk, &mut file).unwrap();
    });
    std::io::Write::flush(&mut file).unwrap();
}

/// Runs `tracewire diff BASE NEW ARGS` with `TMPDIR=TMP`; its output (exit status 0
/// asserted) and peak RSS in MiB.
fn diff(base: &Path, new: &Path, args: &[&str], tmp: &Path) -> (Output, f64) {
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let mut child = Command::new(BIN)
        .arg("diff")
        .arg(base)
        .arg(new)
        .args(args)
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the pipes before waiting (a full pipe would block the child).
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut b).unwrap();
        b
    });
    let mut out_bytes = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut out_bytes).unwrap();
    let pid = nix::libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped; the pointers are to live locals.
    let rc = unsafe { nix::libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    assert_eq!(rc, pid);
    let code = if nix::libc::WIFEXITED(status) { Some(nix::libc::WEXITSTATUS(status)) } else { None };
    let output = Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: out_bytes,
        stderr: err.join().unwrap(),
    };
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    // ru_maxrss is in KiB on Linux.
    #[allow(clippy::cast_precision_loss)]
    let mib = usage.ru_maxrss as f64 / 1024.0;
    (output, mib)
}

#[test]
fn a_large_json_input_is_compared_with_bounded_memory_and_progress() {
    let dir = tracewire_testkit::TempDir::new("tw-diff-inputs-memory").unwrap();
    let (small, large) = (dir.path().join("small.jsonl"), dir.path().join("large.jsonl"));
    write_jsonl(&small, 50_000);
    write_jsonl(&large, 200_000);
    #[allow(clippy::cast_precision_loss)]
    let file_mib = std::fs::metadata(&large).unwrap().len() as f64 / (1024.0 * 1024.0);
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (_, rss_small) = diff(&small, &small, &["--resamples", "200"], &tmp);
    let (o, rss_large) = diff(&large, &large, &["--resamples", "200"], &tmp);
    eprintln!("peak RSS: {rss_small:.1} MiB at 50k spans, {rss_large:.1} MiB at 200k spans ({file_mib:.1} MiB file)");
    // Four times the spans: the peak barely moves. (Read whole, the file's spans were all
    // in memory with their OTLP form: 3.4 times the peak at a quarter of the spans.) The
    // margin is for the allocator: how much freed memory glibc's per-thread arenas hold
    // varies from run to run of the same input (by up to a third here).
    assert!(rss_large < rss_small * 2.0, "{rss_small:.1} MiB -> {rss_large:.1} MiB");
    let stderr = String::from_utf8_lossy(&o.stderr);
    // Progress lines every 100,000 spans (counted by batches of traces).
    assert!(
        stderr.lines().any(|l| l.contains(" spans, analyzed ") && l.ends_with(" traces ...")),
        "progress: {stderr}"
    );
    assert!(stderr.contains("read 20000 traces (200000 spans) from"), "{stderr}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("base: 20000 traces"), "{stdout}");
    // --quiet: nothing on stderr.
    let (o, _) = diff(&large, &large, &["--resamples", "200", "--quiet"], &tmp);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "", "--quiet");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "left in TMPDIR");
}
