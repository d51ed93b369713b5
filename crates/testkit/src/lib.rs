//! Test support for tracewire (not published): a real `rotel-agent` OTLP collector on
//! loopback ports, with every span it receives parsed from its debug log; free ports; the
//! project's Python venv; a loopback HTTP/1.1 stub server ([`HttpStub`]) that records what
//! it is sent; [`eventually`] and its kin, which wait for a condition with a deadline;
//! [`SplitMix64`], a seeded generator for reproducible test data.
//! Processes started here are stopped by their own pid.
//!
//! The collector and the Python packages are installed by `scripts/setup-test-deps.sh`
//! (which `scripts/test.sh` runs first), as is Debian's `chromium` for [`browser`].
#![allow(clippy::missing_errors_doc)]

pub mod browser;
pub mod http_stub;
pub mod rng;
pub mod wait;

pub use http_stub::{HttpStub, StubRequest};
pub use rng::SplitMix64;
pub use wait::{TimedOut, eventually, eventually_async, eventually_some, eventually_some_async};

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

fn venv_site_file(rel: &str) -> Result<PathBuf, String> {
    let lib = workspace_root().join(".venv/lib");
    let entries = std::fs::read_dir(&lib).map_err(|e| {
        format!("{}: {e}; run ./scripts/setup-test-deps.sh to install the test dependencies", lib.display())
    })?;
    for e in entries.flatten() {
        let p = e.path().join("site-packages").join(rel);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(format!("{rel} not found under {}; run ./scripts/setup-test-deps.sh", lib.display()))
}

/// The venv's Python interpreter.
pub fn python() -> Result<PathBuf, String> {
    let p = workspace_root().join(".venv/bin/python");
    if p.exists() { Ok(p) } else { Err(format!("{} missing; run ./scripts/setup-test-deps.sh", p.display())) }
}

/// The `rotel-agent` binary: `TRACEWIRE_ROTEL_AGENT`, else the venv's.
pub fn rotel_agent() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TRACEWIRE_ROTEL_AGENT") {
        return Ok(PathBuf::from(p));
    }
    venv_site_file("rotel/rotel-agent")
}

/// The example binary `name` of the running test's build, `target/<profile>/examples/<name>`
/// (`cargo test` builds a package's examples alongside its tests).
pub fn example_binary(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("the test binary's path: {e}"))?;
    let profile_dir =
        exe.parent().and_then(Path::parent).ok_or_else(|| format!("{} is not in target/", exe.display()))?;
    let path = profile_dir.join("examples").join(name);
    if path.exists() { Ok(path) } else { Err(format!("{} not built; run `cargo test --workspace`", path.display())) }
}

/// A free loopback TCP port (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new(prefix: &str) -> std::io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One span as the collector printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// Hex trace id.
    pub trace_id: String,
    /// Hex parent span id; empty for a root.
    pub parent_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Span name.
    pub name: String,
    /// `SPAN_KIND_*`.
    pub kind: String,
    /// Start, Unix nanoseconds.
    pub start_ns: u128,
    /// End, Unix nanoseconds.
    pub end_ns: u128,
    /// Span attributes, values as printed (`Str(x)` unwrapped to `x`).
    pub attributes: Vec<(String, String)>,
    /// The resource attributes of its batch.
    pub resource: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    /// A resource attribute's value.
    pub fn resource_attr(&self, key: &str) -> Option<&str> {
        self.resource.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn unwrap_value(v: &str) -> String {
    // `Str(x)`, `Int(3)`, `Bool(true)`, `Double(1.5)` -> the inner text.
    match (v.find('('), v.ends_with(')')) {
        (Some(i), true) => v[i + 1..v.len() - 1].to_owned(),
        _ => v.to_owned(),
    }
}

/// Parses rotel-agent's `--debug-log traces --debug-log-verbosity detailed` output.
pub fn parse_rotel_log(log: &str) -> Vec<ReceivedSpan> {
    #[derive(PartialEq)]
    enum Section {
        None,
        Resource,
        Span,
        SpanAttributes,
        Other,
    }
    let mut out: Vec<ReceivedSpan> = Vec::new();
    let mut resource: Vec<(String, String)> = Vec::new();
    let mut section = Section::None;
    let mut current: Option<ReceivedSpan> = None;
    for raw in log.lines() {
        let line = raw.trim();
        if line.starts_with("ResourceSpans #") {
            out.extend(current.take());
            resource.clear();
            section = Section::None;
        } else if line == "Resource attributes:" {
            section = Section::Resource;
        } else if line.starts_with("ScopeSpans #") || line.starts_with("InstrumentationScope") {
            out.extend(current.take());
            section = Section::Other;
        } else if line.starts_with("Span #") {
            out.extend(current.take());
            current = Some(ReceivedSpan { resource: resource.clone(), ..ReceivedSpan::default() });
            section = Section::Span;
        } else if line == "Attributes:" && current.is_some() {
            section = Section::SpanAttributes;
        } else if line == "Events:"
            || line == "Links:"
            || line.starts_with("SpanEvent #")
            || line.starts_with("SpanLink #")
        {
            section = Section::Other;
        } else if let Some(kv) = line.strip_prefix("-> ") {
            if let Some((k, v)) = kv.split_once(": ") {
                let pair = (k.to_owned(), unwrap_value(v));
                match section {
                    Section::Resource => resource.push(pair),
                    Section::SpanAttributes => {
                        if let Some(s) = current.as_mut() {
                            s.attributes.push(pair);
                        }
                    }
                    _ => {}
                }
            }
        } else if let (Some(s), Some((k, v))) = (current.as_mut(), line.split_once(':')) {
            if section != Section::Span {
                continue;
            }
            let v = v.trim();
            match k.trim() {
                "Trace ID" => v.clone_into(&mut s.trace_id),
                "Parent ID" => v.clone_into(&mut s.parent_id),
                "ID" => v.clone_into(&mut s.span_id),
                "Name" => v.clone_into(&mut s.name),
                "Kind" => v.clone_into(&mut s.kind),
                "Start time" => s.start_ns = v.parse().unwrap_or(0),
                "End time" => s.end_ns = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    out.extend(current);
    out
}

/// A running `rotel-agent` on loopback, printing every span it receives. Stopped (by its
/// pid) when dropped.
#[derive(Debug)]
pub struct Rotel {
    child: Option<Child>,
    grpc: SocketAddr,
    http: SocketAddr,
    log: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl Rotel {
    /// Starts one on two free ports and waits until both accept connections.
    pub fn start() -> Result<Self, String> {
        Self::start_on(free_port(), free_port())
    }

    /// Starts one on the given ports (to restart a collector where clients expect it).
    pub fn start_on(grpc_port: u16, http_port: u16) -> Result<Self, String> {
        let agent = rotel_agent()?;
        let dir = TempDir::new("tracewire-rotel").map_err(|e| e.to_string())?;
        let grpc: SocketAddr = ([127, 0, 0, 1], grpc_port).into();
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let mut child = Command::new(&agent)
            .args(["start", "--otlp-grpc-endpoint", &grpc.to_string(), "--otlp-http-endpoint", &http.to_string()])
            .args(["--exporter", "blackhole", "--debug-log", "traces", "--debug-log-verbosity", "detailed"])
            .arg("--pid-file")
            .arg(dir.path().join("rotel.pid"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", agent.display()))?;
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let me = Self { child: Some(child), grpc, http, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if TcpStream::connect(grpc).is_ok() && TcpStream::connect(http).is_ok() {
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("rotel-agent did not start listening on {grpc} and {http}; log:\n{}", me.log()))
    }

    /// `http://127.0.0.1:<grpc port>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://127.0.0.1:<http port>` (OTLP/HTTP appends `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The gRPC and HTTP ports.
    pub fn ports(&self) -> (u16, u16) {
        (self.grpc.port(), self.http.port())
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The spans it printed so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        parse_rotel_log(&self.log())
    }

    /// Waits until `done` holds for the received spans (checked again after a short
    /// settle, so that a span still being printed is complete), or fails after `timeout`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.spans()) {
                std::thread::sleep(Duration::from_millis(150));
                let spans = self.spans();
                if done(&spans) {
                    return Ok(spans);
                }
            }
            if Instant::now() >= deadline {
                let spans = self.spans();
                return Err(format!("timed out after {timeout:?}; {} spans received: {spans:#?}", spans.len()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pid of the collector process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it (SIGKILL to its own pid) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs a Python script with the venv's interpreter; returns stdout, or an error with
/// stderr when it fails.
pub fn run_python(script: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let out =
        Command::new(python()?).arg(script).args(args).envs(env.iter().copied()).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{} failed: {}\n{}", script.display(), out.status, String::from_utf8_lossy(&out.stderr)))
    }
}

/// Replays every file of the checked-in fuzz corpus `fuzz/corpus/<target>/` through
/// `check` (the same function the cargo-fuzz target runs), failing on a panic or when the
/// corpus is missing.
pub fn replay_corpus(target: &str, check: fn(&[u8])) {
    let dir = workspace_root().join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map_or_else(|e| panic!("{}: {e}", dir.display()), |e| e.path()))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{}: the corpus is missing", dir.display());
    for path in files {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(std::panic::catch_unwind(|| check(&data)).is_ok(), "{} fails the {target} check", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rotel_output() {
        let log = "\
ResourceSpans #0
Resource attributes:
     -> service.name: Str(py)
ScopeSpans #0
InstrumentationScope x
Span #0
    Trace ID       : 87d2fcf32f17f7c6ce55e5954146598e
    Parent ID      : 11b5dbd7c942286b
    ID             : 74962f1fff98ce89
    Name           : child
    Kind           : SPAN_KIND_INTERNAL
Start time: 10
End time: 20
Attributes:
     -> a: Int(1)
     -> b: Str(x y)
Span #1
    Trace ID       : 87d2fcf32f17f7c6ce55e5954146598e
    Parent ID      : 
    ID             : 11b5dbd7c942286b
    Name           : parent
";
        let spans = parse_rotel_log(log);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].name, "child");
        assert_eq!(spans[0].parent_id, "11b5dbd7c942286b");
        assert_eq!((spans[0].start_ns, spans[0].end_ns), (10, 20));
        assert_eq!(spans[0].attr("b"), Some("x y"));
        assert_eq!(spans[0].resource_attr("service.name"), Some("py"));
        assert_eq!(spans[1].parent_id, "");
        assert!(spans[1].attributes.is_empty());
    }
}
