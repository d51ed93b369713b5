//! `tracewire report --otlp-json` reads JSON lines with bounded memory: the peak RSS of the
//! real process (`wait4`'s rusage) barely grows from 50k to 200k spans, even with every
//! trace's spans spread over the whole file; the report equals the one `--db` gives for the
//! same spans; a malformed line is named by its number.
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
                end_ns: start + 1_000_000 - i64::from(s) * 50_000 + i64::from(t % 1000) * 1_000,
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

/// Runs `tracewire report ARGS --out OUT` with `TMPDIR=TMP`; its output and peak RSS in MiB.
fn report(args: &[&std::ffi::OsStr], out: &Path, tmp: &Path) -> (Output, f64) {
    #[allow(clippy::zombie_processes)] // reaped by wait4 below
    let mut child = Command::new(BIN)
        .arg("report")
        .args(args)
        .arg("--out")
        .arg(out)
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn json_lines_are_analyzed_with_bounded_memory_and_equal_the_database_path() {
    let dir = tracewire_testkit::TempDir::new("tracewire-report-inputs-memory").unwrap();
    let (small_file, large_file) = (dir.path().join("small.jsonl"), dir.path().join("large.jsonl"));
    write_jsonl(&small_file, 50_000);
    write_jsonl(&large_file, 200_000);
    #[allow(clippy::cast_precision_loss)]
    let file_mib = std::fs::metadata(&large_file).unwrap().len() as f64 / (1024.0 * 1024.0);

    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let flag = std::ffi::OsStr::new("--otlp-json");
    let (_, rss_small) = report(&[flag, small_file.as_os_str()], &dir.path().join("small"), &tmp);
    let (o, rss_large) = report(&[flag, large_file.as_os_str()], &dir.path().join("large"), &tmp);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(&format!("read 200000 spans from {}", large_file.display())), "{stderr}");
    eprintln!("peak RSS: {rss_small:.1} MiB at 50k spans, {rss_large:.1} MiB at 200k spans ({file_mib:.1} MiB file)");
    // Four times the spans: the peak barely moves. (Read whole, the file and its spans
    // were all in memory: several times the file's size, growing with it.)
    assert!(rss_large < rss_small * 1.35, "{rss_small:.1} MiB -> {rss_large:.1} MiB");

    // The same spans from a database give the same report, exports included.
    let db = dir.path().join("large.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut config = tracewire_store::StoreConfig::default();
        config.full = tracewire_store::FullPolicy::Wait(std::time::Duration::from_secs(60));
        let store = tracewire_store::Store::open_with(&db, config).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        spans(200_000, |chunk| tx.send(chunk).unwrap());
        drop(tx);
        while let Some(chunk) = rx.recv().await {
            store.append_spans(chunk).await.unwrap();
        }
        store.flush().await.unwrap();
    });
    report(&[std::ffi::OsStr::new("--db"), db.as_os_str()], &dir.path().join("db"), &tmp);
    let summary = |name: &str| -> serde_json::Value {
        serde_json::from_str(&read(&dir.path().join(name).join("summary.json"))).unwrap()
    };
    let from_db = summary("db");
    assert_eq!((from_db["spans"].as_u64(), from_db["traces"].as_u64()), (Some(200_000), Some(20_000)));
    assert_eq!(summary("large"), from_db);
    assert_eq!(read(&dir.path().join("large/traces.jaeger.json")), read(&dir.path().join("db/traces.jaeger.json")));
    // The temporary database the spans were gathered in is gone.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "left in TMPDIR");
}

#[test]
fn a_malformed_line_is_named_by_its_number() {
    let dir = tracewire_testkit::TempDir::new("tracewire-report-inputs-errors").unwrap();
    let mut lines = Vec::new();
    spans(100, |chunk| {
        tracewire_collector::otlp_json::write_lines_per(&chunk, &mut lines, 10).unwrap();
    });
    let mut lines: Vec<String> = String::from_utf8(lines).unwrap().lines().map(str::to_owned).collect();
    let run = |lines: &[String]| {
        let file = dir.path().join("in.jsonl");
        std::fs::write(&file, lines.join("\n")).unwrap();
        let o = Command::new(BIN)
            .arg("report")
            .arg("--otlp-json")
            .arg(&file)
            .arg("--out")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        (file, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    lines[6] = lines[6].replacen("\"spanId\":\"", "\"spanId\":\"x", 1);
    let (file, stderr) = run(&lines);
    assert!(
        stderr.contains(&format!("{}:7: resourceSpans[0].scopeSpans[0].spans[0].spanId: \"x", file.display())),
        "{stderr}"
    );
    lines[6] = "{\"resourceSpans\":[}".to_owned();
    let (file, stderr) = run(&lines);
    assert!(
        stderr.contains(&format!("{}: not valid JSON: expected value at line 7 column 19", file.display())),
        "{stderr}"
    );
    assert!(!dir.path().join("out").exists(), "no report from a bad input");
}

/// A Jaeger JSON file alone is analyzed trace object by trace object; a trace in two
/// objects is named, not analyzed as two traces.
#[test]
fn a_jaeger_file_alone_with_a_trace_split_over_two_objects_is_analyzed_whole() {
    let dir = tracewire_testkit::TempDir::new("tracewire-report-inputs-jaeger").unwrap();
    let mut all = Vec::new();
    spans(30, |chunk| all.extend(chunk));
    let doc = tracewire_collector::jaeger::to_jaeger(&all);
    let whole = dir.path().join("whole.json");
    std::fs::write(&whole, doc.to_string()).unwrap();
    // The same spans, one trace's split over two trace objects (its second half last).
    let mut split = doc.clone();
    let data = split["data"].as_array_mut().unwrap();
    let mut second = data[1].clone();
    let spans_of = data[1]["spans"].as_array_mut().unwrap();
    assert!(spans_of.len() >= 2, "{spans_of:?}");
    let rest = spans_of.split_off(spans_of.len() / 2);
    second["spans"] = serde_json::Value::Array(rest);
    data.push(second);
    let twice = dir.path().join("split.json");
    std::fs::write(&twice, split.to_string()).unwrap();
    let summary = |file: &std::path::Path, out: &str| -> serde_json::Value {
        let o = Command::new(BIN)
            .args(["report", "--quiet", "--jaeger-json"])
            .arg(file)
            .arg("--out")
            .arg(dir.path().join(out))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(out).join("summary.json")).unwrap()).unwrap()
    };
    let (a, b) = (summary(&whole, "whole"), summary(&twice, "split"));
    assert_eq!(a["traces"], b["traces"], "the split trace is one trace");
    assert_eq!(a["spans"], b["spans"]);
    assert_eq!(a["stages"], b["stages"]);
    assert_eq!(a["e2e"], b["e2e"]);
}
