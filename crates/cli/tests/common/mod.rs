//! What the CLI tests share: the binary, the address line a server prints, signals,
//! waiting for an exit with a deadline, a process whose stderr is read as it comes
//! ([`Service`]), and `tracewire exec-server` and `tracewire collect` processes on free
//! ports.
#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
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

/// Waits for `child` to exit, at most `limit`.
pub(crate) fn try_exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    tracewire_testkit::eventually_some(limit, || child.try_wait().unwrap()).ok()
}

/// Waits for `child` to exit, at most `limit`; past it, kills it (by its own pid) and fails
/// with `hang`.
pub(crate) fn exit_within(child: &mut Child, limit: Duration, hang: &str) -> ExitStatus {
    try_exit_within(child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{hang} (within {limit:?})");
    })
}

/// Reads the first line of `child`'s stdout (a command that says it started, e.g. `echo
/// started; exec sleep 30`) and checks it is `expected`; returns the rest of its stdout.
pub(crate) fn first_line(child: &mut Child, expected: &str) -> BufReader<ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), expected);
    out
}

/// A `tracewire` process whose stdout is read by the test and whose stderr is collected
/// as it comes (so a test can wait for a message), killed by its pid on drop.
pub(crate) struct Service {
    pub(crate) child: Child,
    pub(crate) stdout: BufReader<ChildStdout>,
    stderr: Arc<(Mutex<Stderr>, Condvar)>,
}

/// What a [`Service`] wrote to stderr so far, and whether the pipe closed.
#[derive(Default)]
pub(crate) struct Stderr {
    pub(crate) text: String,
    pub(crate) closed: bool,
}

impl Service {
    pub(crate) fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let stderr = Arc::new((Mutex::new(Stderr::default()), Condvar::new()));
        let (mut pipe, sink) = (child.stderr.take().unwrap(), Arc::clone(&stderr));
        std::thread::spawn(move || {
            let (state, changed) = &*sink;
            // Chunks, not lines: a progress line (`\rreceived ...`) has no newline yet.
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                state.lock().unwrap().text.push_str(&String::from_utf8_lossy(&buf[..n]));
                changed.notify_all();
            }
            state.lock().unwrap().closed = true;
            changed.notify_all();
        });
        Self { child, stdout, stderr }
    }

    /// The next stdout line, which must start with `prefix`; returns the rest (servers
    /// print their bound address once they listen).
    pub(crate) fn announced(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        match line.trim().strip_prefix(prefix) {
            Some(rest) => rest.to_owned(),
            None => panic!("expected {prefix:?}..., got {line:?}; stderr: {}", self.stderr()),
        }
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.0.lock().unwrap().text.clone()
    }

    /// Waits until `done` holds for its stderr; false at `limit`.
    pub(crate) fn wait_stderr_until(&self, limit: Duration, done: impl Fn(&Stderr) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let (state, changed) = &*self.stderr;
        let mut state = state.lock().unwrap();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = changed.wait_timeout(state, left).unwrap().0;
        }
        true
    }

    /// Waits until stderr contains `needle`.
    pub(crate) fn wait_stderr(&self, needle: &str, limit: Duration) {
        let found = self.wait_stderr_until(limit, |s| s.text.contains(needle));
        assert!(found, "no {needle:?} on stderr within {limit:?}: {}", self.stderr());
    }

    /// Sends `sig` (`-TERM`, `-INT`) to its own pid.
    pub(crate) fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }

    /// Waits for it to exit; its stderr is then complete.
    pub(crate) fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let status = try_exit_within(&mut self.child, limit)
            .unwrap_or_else(|| panic!("still running after {limit:?}; stderr: {}", self.stderr()));
        // Its stderr is complete once the reader saw the pipe close.
        let _ = self.wait_stderr_until(Duration::from_secs(2), |s| s.closed);
        status
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tracewire keygen` into `dir`; the private key's path (`dir/server.key`; the public
/// key is `dir/server.key.pub`).
pub(crate) fn keygen(dir: &Path) -> PathBuf {
    let key = dir.join("server.key");
    let out = Command::new(BIN).args(["keygen", "--out"]).arg(&key).env("OTEL_SDK_DISABLED", "true").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    key
}

/// A `tracewire exec-server` process on a free port, stopped by its pid on drop.
pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) address: String,
}

impl ServerProcess {
    pub(crate) fn start(env: &[(&str, String)]) -> Self {
        Self::start_with(&[], env)
    }

    pub(crate) fn start_with(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = Command::new(BIN)
            .args(["exec-server", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let address = announced(&mut BufReader::new(child.stdout.take().unwrap()), "listening on ");
        Self { child, address }
    }

    /// SIGINT to its own pid: it stops serving and flushes its telemetry before exiting.
    pub(crate) fn stop_gracefully(mut self) {
        signal(&self.child, "-INT");
        let st = exit_within(&mut self.child, Duration::from_secs(10), "exec-server did not stop on SIGINT");
        assert!(st.success(), "{st}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `OTEL_*` variables that send a process's spans to `endpoint` over OTLP/gRPC as
/// `service`, in small, quick batches.
pub(crate) fn otel_env(endpoint: &str, service: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_SERVICE_NAME", service.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
    ]
}

/// A `tracewire collect --db` process on free ports, stopped by its pid on drop.
pub(crate) struct CollectProcess {
    pub(crate) service: Service,
    /// `http://HOST:PORT` of its OTLP/gRPC receiver.
    pub(crate) grpc: String,
    /// `http://HOST:PORT` of its OTLP/HTTP receiver (without `/v1/traces`).
    pub(crate) http: String,
}

impl CollectProcess {
    pub(crate) fn start(db: &Path) -> Self {
        let db = db.display().to_string();
        let mut service =
            Service::start(&["collect", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--db", &db], &[]);
        let mut line = String::new();
        service.stdout.read_line(&mut line).unwrap();
        // "collecting OTLP/gRPC on A, OTLP/HTTP on http://B/v1/traces, storing in DB"
        let grpc = line.split("gRPC on ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default().to_owned();
        let http = line.split("HTTP on ").nth(1).and_then(|r| r.split("/v1").next()).unwrap_or_default().to_owned();
        assert!(!grpc.is_empty() && http.starts_with("http://"), "unexpected: {line:?}");
        Self { service, grpc: format!("http://{grpc}"), http }
    }

    /// SIGTERM to its own pid; returns its exit status, stdout and stderr.
    pub(crate) fn stop(mut self) -> (ExitStatus, String, String) {
        self.service.signal("-TERM");
        let status = self.service.exit_within(Duration::from_secs(15));
        let mut out = String::new();
        self.service.stdout.read_to_string(&mut out).unwrap();
        (status, out, self.service.stderr())
    }
}
