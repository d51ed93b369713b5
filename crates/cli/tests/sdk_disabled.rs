//! `OTEL_SDK_DISABLED=true` on every process (what the README recommends without a
//! collector): nothing is exported, but the trace context still propagates, as
//! OpenTelemetry's API behaves without an SDK. The exec-server continues the client's trace
//! and the child it starts gets a `TRACEPARENT` in it, directly and through a relay.

use std::io::BufReader;
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tracewire_context::TraceParent;

mod common;
use common::{BIN, announced, exit_within, keygen, signal};

/// A process stopped by its own pid when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Export disabled, with an OTLP endpoint that would see any export attempt.
struct Disabled {
    endpoint: TcpListener,
    url: String,
}

impl Disabled {
    fn new() -> Self {
        let endpoint = TcpListener::bind("127.0.0.1:0").unwrap();
        endpoint.set_nonblocking(true).unwrap();
        let url = format!("http://{}", endpoint.local_addr().unwrap());
        Self { endpoint, url }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("OTEL_SDK_DISABLED", "true")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &self.url)
            .env("OTEL_BSP_SCHEDULE_DELAY", "10")
            .env_remove("TRACEPARENT")
            .env_remove("TRACESTATE")
            .env_remove("BAGGAGE")
            .stdin(Stdio::null());
        c
    }

    /// A server (`exec-server`, `relay`) started with `args`, and the address it listens on.
    fn serve(&self, args: &[&str]) -> (Proc, String) {
        let mut server = Proc(self.command(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap());
        let address = announced(&mut BufReader::new(server.0.stdout.take().unwrap()), "listening on ");
        (server, address)
    }

    /// Nothing ever connected to the OTLP endpoint.
    fn assert_nothing_exported(&self) {
        match self.endpoint.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("something connected to the OTLP endpoint: {other:?}"),
        }
    }
}

/// The trace id `exec --print-trace-id` printed and the `TRACEPARENT` its child printed.
fn client_and_child(out: &Output) -> (String, TraceParent) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let client = stderr.lines().find_map(|l| l.strip_prefix("trace_id=")).unwrap_or_else(|| panic!("{stderr}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let child = TraceParent::parse(stdout.trim()).unwrap_or_else(|e| panic!("child saw {stdout:?}: {e}"));
    (client.to_owned(), child)
}

const CHILD: [&str; 4] = ["--", "sh", "-c", "echo ${TRACEPARENT-unset}"];

#[test]
fn with_export_disabled_the_child_continues_the_clients_trace() {
    let disabled = Disabled::new();
    let (mut server, address) = disabled.serve(&["exec-server", "--listen", "127.0.0.1:0"]);

    let mut seen = Vec::new();
    for _ in 0..2 {
        let out = disabled.command(&["exec", "--print-trace-id", "--server", &address]).args(CHILD).output().unwrap();
        let (client, child) = client_and_child(&out);
        assert_eq!(child.trace_id.to_string(), client, "the child is in the client's trace");
        assert!(child.flags.is_sampled(), "the client's sampled flag (parentbased_always_on) is kept");
        seen.push(client);
    }
    assert_ne!(seen[0], seen[1], "each exec is its own trace");

    // Stopped gracefully (what flushes telemetry when export is on): still nothing sent.
    signal(&server.0, "-INT");
    exit_within(&mut server.0, Duration::from_secs(10), "exec-server did not stop on SIGINT");
    disabled.assert_nothing_exported();
}

#[test]
fn with_export_disabled_the_child_continues_the_clients_trace_through_a_relay() {
    let disabled = Disabled::new();
    let dir = tracewire_testkit::TempDir::new("tracewire-sdk-disabled").unwrap();
    let key = keygen(dir.path());
    let key_arg = key.to_str().unwrap();
    let pubkey = tracewire_relay::public_path(&key);

    let (_relay, address) = disabled.serve(&["relay", "--listen", "127.0.0.1:0", "--token", "tok"]);
    let url = format!("http://{address}");
    let attach = ["--relay", url.as_str(), "--session", "sdk-disabled", "--token", "tok"];
    let _server = Proc(
        disabled
            .command(&["exec-server", "--key", key_arg])
            .args(attach)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let exec = || {
        disabled
            .command(&["exec", "--print-trace-id", "--server-key", pubkey.to_str().unwrap()])
            .args(attach)
            .args(CHILD)
            .output()
            .unwrap()
    };
    // The exec-server attaches asynchronously: retry until it is there.
    let mut last = None;
    let _ = tracewire_testkit::eventually(Duration::from_secs(15), || last.insert(exec()).status.success());
    let out = last.unwrap();
    let (client, child) = client_and_child(&out);
    assert_eq!(child.trace_id.to_string(), client, "the child is in the client's trace");
    disabled.assert_nothing_exported();
}

#[test]
fn exec_continues_the_trace_of_a_traceparent_in_its_environment() {
    let disabled = Disabled::new();
    let (_server, address) = disabled.serve(&["exec-server", "--listen", "127.0.0.1:0"]);

    // A caller's context, as tracewire (or any OpenTelemetry SDK) gives a child process.
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let out = disabled
        .command(&["exec", "--print-trace-id", "--server", &address])
        .env("TRACEPARENT", caller)
        .env("TRACESTATE", "vendor=opaque")
        .args(["--", "sh", "-c", "echo ${TRACEPARENT-unset}; echo ${TRACESTATE-unset} >&2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let child = TraceParent::parse(stdout.trim()).unwrap_or_else(|e| panic!("child saw {stdout:?}: {e}"));
    let caller = TraceParent::parse(caller).unwrap();
    assert_eq!(child.trace_id, caller.trace_id, "the exec continues the caller's trace");
    assert_ne!(child.parent_id, caller.parent_id, "the child's parent is a span of this trace, not the caller's");
    assert!(stderr.contains(&format!("trace_id={}", caller.trace_id)), "{stderr}");
    assert!(stderr.lines().any(|l| l == "vendor=opaque"), "the caller's tracestate reaches the child: {stderr}");
}
