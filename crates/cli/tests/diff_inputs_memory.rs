//! `tracewire diff` reads its inputs as `tracewire report` does, with bounded memory: the
//! peak RSS of the real process (`wait4`'s rusage) barely grows from 50k to 200k spans of
//! OTLP JSON, every trace's spans spread over the whole file; large inputs print progress
//! on stderr, none with `--quiet`. (Alone in its test binary: a child's peak RSS counts
//! this process's, so no other test may hold spans here.)
#![allow(unsafe_code)] // wait4 on our own child

use std::path::Path;
use std::process::{Command, Output};

mod common;
mod memory;
use common::BIN;
use memory::{SmallAndLarge, run_measured};

/// Runs `tracewire diff BASE NEW ARGS` with `TMPDIR=TMP`; its output (exit status 0
/// asserted) and peak RSS in MiB.
fn diff(base: &Path, new: &Path, args: &[&str], tmp: &Path) -> (Output, f64) {
    run_measured(Command::new(BIN).arg("diff").arg(base).arg(new).args(args).env("TMPDIR", tmp))
}

#[test]
fn a_large_json_input_is_compared_with_bounded_memory_and_progress() {
    let dir = tracewire_testkit::TempDir::new("tw-diff-inputs-memory").unwrap();
    let SmallAndLarge { small, large, large_mib: file_mib, tmp } = SmallAndLarge::write(dir.path(), 7);
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
