//! What the CLI tests share: the binary, the address line a server prints, signals,
//! waiting for an exit with a deadline, a `tracewire collect` process.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tracewire");

/// Reads the next line of a server's stdout and returns what follows `prefix` (servers
/// print e.g. `listening on ADDR` once bound, so port 0 works).
pub(crate) fn announced(stdout: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    line.trim().strip_prefix(prefix).unwrap_or_else(|| panic!("expected {prefix:?}..., got {line:?}")).to_owned()
}

/// Sends `signal` (e.g. `-INT`) to `child`'s own pid.
pub(crate) fn signal(child: &Child, signal: &str) {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
}

/// Waits for `child` to exit, at most `limit`; past it, kills it (by its own pid) and fails
/// with `hang`.
pub(crate) fn exit_within(child: &mut Child, limit: Duration, hang: &str) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{hang} (within {limit:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `tracewire collect --db` process on free ports, stopped by its pid on drop.
pub(crate) struct CollectProcess {
    pub(crate) child: Child,
    /// `http://HOST:PORT` of its OTLP/gRPC receiver.
    pub(crate) grpc: String,
    /// `http://HOST:PORT` of its OTLP/HTTP receiver (without `/v1/traces`).
    pub(crate) http: String,
}

impl CollectProcess {
    pub(crate) fn start(db: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["collect", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--db"])
            .arg(db)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // "collecting OTLP/gRPC on A, OTLP/HTTP on http://B/v1/traces, storing in DB"
        let grpc = line.split("gRPC on ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default().to_owned();
        let http = line.split("HTTP on ").nth(1).and_then(|r| r.split("/v1").next()).unwrap_or_default().to_owned();
        assert!(!grpc.is_empty() && http.starts_with("http://"), "unexpected: {line:?}");
        child.stdout = Some(stdout.into_inner());
        Self { child, grpc: format!("http://{grpc}"), http }
    }

    /// SIGTERM to its own pid; returns its exit status, stdout and stderr.
    pub(crate) fn stop(mut self) -> (ExitStatus, String, String) {
        signal(&self.child, "-TERM");
        let status = exit_within(&mut self.child, Duration::from_secs(15), "collect did not stop on SIGTERM");
        let (mut out, mut err) = (String::new(), String::new());
        self.child.stdout.as_mut().unwrap().read_to_string(&mut out).unwrap();
        self.child.stderr.as_mut().unwrap().read_to_string(&mut err).unwrap();
        (status, out, err)
    }
}

impl Drop for CollectProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
