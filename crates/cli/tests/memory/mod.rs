//! What the bounded-memory tests of `report` and `diff` share: OTLP JSON inputs whose traces
//! are spread over the whole file, and the peak RSS of a real `tracewire` process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tracewire_collector::SpanRecord;

/// `n` spans, 1000 at a time (never all at once: the peak RSS of this process would count in
/// its children's, which `exec` from it): traces of 10 (a root `exec` and 9 children of 3
/// stages), written stage by stage across all traces, so each trace's spans lie far apart
/// in the file; every 97th trace has an error. `spread` (at least 1) varies the durations
/// between inputs.
pub(crate) fn spans(n: u32, spread: u32, mut each: impl FnMut(Vec<SpanRecord>)) {
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
                end_ns: start + 1_000_000 - i64::from(s) * 50_000 + i64::from(t * spread % 1000) * 1_000,
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

/// Writes [`spans`]`(n, spread)` to `path` as OTLP JSON lines.
pub(crate) fn write_jsonl(path: &Path, n: u32, spread: u32) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    spans(n, spread, |chunk| {
        tracewire_collector::otlp_json::write_lines(&chunk, &mut file).unwrap();
    });
    std::io::Write::flush(&mut file).unwrap();
}

/// The inputs of a bounded-memory test: `small.jsonl` (50k spans) and `large.jsonl` (200k)
/// written by [`write_jsonl`] with `spread`, the large one's size in MiB, and an empty
/// `tmp` directory (the process's TMPDIR, to see it clean up).
pub(crate) struct SmallAndLarge {
    pub(crate) small: PathBuf,
    pub(crate) large: PathBuf,
    pub(crate) large_mib: f64,
    pub(crate) tmp: PathBuf,
}

impl SmallAndLarge {
    pub(crate) fn write(dir: &Path, spread: u32) -> Self {
        let (small, large) = (dir.join("small.jsonl"), dir.join("large.jsonl"));
        write_jsonl(&small, 50_000, spread);
        write_jsonl(&large, 200_000, spread);
        #[allow(clippy::cast_precision_loss)]
        let large_mib = std::fs::metadata(&large).unwrap().len() as f64 / (1024.0 * 1024.0);
        let tmp = dir.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        Self { small, large, large_mib, tmp }
    }
}

/// Runs `cmd` with its stdout and stderr piped; its output (exit status 0 asserted) and
/// peak RSS in MiB (`wait4`'s rusage).
pub(crate) fn run_measured(cmd: &mut Command) -> (Output, f64) {
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
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
