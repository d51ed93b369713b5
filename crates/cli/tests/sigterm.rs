//! Stopping the long-running subcommands with SIGTERM (what systemd, docker and kubernetes
//! send) and SIGINT, as real processes exporting to a real OTLP receiver (the collector
//! crate's, in this process, or `tracewire collect`): each exits 0, and every span of the
//! work that finished before the signal has arrived by then.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracewire_collector::SpanRecord;
use tracewire_collector::receiver::{SpanStore, bind, serve_grpc};

mod common;
use common::{BIN, Service, first_line, keygen, try_exit_within};

/// The collector crate's OTLP/gRPC receiver on a free loopback port, in this process.
struct Receiver {
    /// Runs the receiver; dropped with it.
    _runtime: tokio::runtime::Runtime,
    store: Arc<SpanStore>,
    addr: SocketAddr,
}

impl Receiver {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let store = Arc::new(SpanStore::new(1_000_000));
        let (listener, addr) = runtime.block_on(bind("127.0.0.1:0".parse().unwrap())).unwrap();
        runtime.spawn(serve_grpc(listener, Arc::clone(&store), std::future::pending()));
        Self { _runtime: runtime, store, addr }
    }

    /// Everything received so far (acknowledged exports only: a sender that exited after
    /// its flush has nothing more on the way).
    fn spans(&self) -> Vec<SpanRecord> {
        self.store.snapshot()
    }

    fn env(&self, service: &str) -> Vec<(&'static str, String)> {
        otlp_env(&format!("http://{}", self.addr), "grpc", service)
    }
}

/// The `OTEL_*` variables of a process exporting to `endpoint`. The batch delay stays at
/// its default (5 s), so that what a stopping process has not flushed is still queued.
fn otlp_env(endpoint: &str, protocol: &str, service: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_SERVICE_NAME", service.to_owned()),
    ]
}

/// How `tracewire exec` reaches the exec-server.
enum Target {
    Direct(String),
    Relay { url: String, session: String, server_key: PathBuf },
}

impl Target {
    fn args(&self) -> Vec<String> {
        match self {
            Self::Direct(address) => vec!["--server".into(), address.clone()],
            Self::Relay { url, session, server_key } => vec![
                "--relay".into(),
                url.clone(),
                "--session".into(),
                session.clone(),
                "--expose-traceparent".into(),
                "--server-key".into(),
                server_key.display().to_string(),
            ],
        }
    }

    fn command(&self, env: &[(&str, String)], command: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("exec")
            .args(self.args())
            .arg("--print-trace-id")
            .arg("--")
            .args(command)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `command` to its end; returns its output and trace id.
    fn exec(&self, env: &[(&str, String)], command: &[&str]) -> (Output, String) {
        let out = self.command(env, command).output().unwrap();
        let trace = trace_id(&String::from_utf8_lossy(&out.stderr));
        (out, trace)
    }
}

fn trace_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("trace_id="))
        .unwrap_or_else(|| panic!("no trace id: {stderr}"))
        .to_owned()
}

/// `n` execs of `echo exec-I`, each of which must succeed; their trace ids.
fn execs(target: &Target, env: &[(&str, String)], n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let word = format!("exec-{i}");
            let (out, trace) = target.exec(env, &["echo", &word]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), word);
            trace
        })
        .collect()
}

/// Checks that each of `traces` arrived whole: every `(service, span)` of `want` is in it,
/// and none of its spans is an orphan (its parent missing), so it has one root.
fn assert_complete(spans: &[SpanRecord], traces: &[String], want: &[(&str, &str)]) {
    for trace in traces {
        let of: Vec<&SpanRecord> = spans.iter().filter(|s| &s.trace_id == trace).collect();
        let have: BTreeSet<(&str, &str)> = of.iter().map(|s| (s.service.as_str(), s.name.as_str())).collect();
        for w in want {
            assert!(have.contains(w), "trace {trace}: no {w:?} in {have:?}");
        }
        let ids: HashSet<&str> = of.iter().map(|s| s.span_id.as_str()).collect();
        let orphans: Vec<(&str, &str)> = of
            .iter()
            .filter(|s| s.parent_id.as_deref().is_some_and(|p| !ids.contains(p)))
            .map(|s| (s.service.as_str(), s.name.as_str()))
            .collect();
        assert!(orphans.is_empty(), "trace {trace}: orphans {orphans:?} among {have:?}");
        let roots: Vec<&str> = of.iter().filter(|s| s.parent_id.is_none()).map(|s| s.name.as_str()).collect();
        assert_eq!(roots, ["exec"], "trace {trace}: one root, the client's exec");
    }
}

/// The spans one direct exec leaves in its trace: the client's and the exec-server's.
const EXEC_SPANS: &[(&str, &str)] = &[
    ("client", "exec"),
    ("client", "rpc.call"),
    ("exec-server", "rpc.queue"),
    ("exec-server", "rpc.dispatch"),
    ("exec-server", "process"),
    ("exec-server", "process.spawn"),
    ("exec-server", "process.stdout"),
    ("exec-server", "process.exit"),
    ("exec-server", "terminal.deliver"),
];

fn exec_server(env: &[(&str, String)], extra: &[&str]) -> (Service, String) {
    let mut args = vec!["exec-server", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut server = Service::start(&args, env);
    let address = server.announced("listening on ");
    (server, address)
}

#[test]
fn sigterm_stops_an_exec_server_with_every_span_of_twenty_execs_exported() {
    let receiver = Receiver::start();
    let (mut server, address) = exec_server(&receiver.env("exec-server"), &[]);
    let target = Target::Direct(address);
    let traces = execs(&target, &receiver.env("client"), 20);

    server.signal("-TERM");
    let status = server.exit_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status 0 after SIGTERM: {status}; {}", server.stderr());
    // No waiting: the server flushed before exiting, and the receiver acknowledged.
    assert_complete(&receiver.spans(), &traces, EXEC_SPANS);
}

#[test]
fn sigterm_lets_a_running_exec_finish_and_refuses_new_ones() {
    let receiver = Receiver::start();
    let (mut server, address) = exec_server(&receiver.env("exec-server"), &[]);
    let target = Target::Direct(address);
    let client_env = receiver.env("client");
    let mut running = target
        .command(&client_env, &["sh", "-c", "echo started; read line; echo finished"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = first_line(&mut running, "started");

    server.signal("-TERM");
    server.wait_stderr("waiting up to 5000 ms for 1 processes", Duration::from_secs(10));
    // New work is refused while the running one drains.
    let (refused, _) = target.exec(&client_env, &["echo", "late"]);
    assert!(!refused.status.success() && refused.stdout.is_empty(), "a new exec after SIGTERM is refused");
    // The running one finishes: its stdin still reaches it, its output and exit come back.
    {
        use std::io::Write;
        let mut stdin = running.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "finished\n");
    let status = try_exit_within(&mut running, Duration::from_secs(10)).expect("the running exec ends");
    let mut err = String::new();
    std::io::Read::read_to_string(running.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");

    let status = server.exit_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}; {}", server.stderr());
    assert_complete(&receiver.spans(), &[trace_id(&err)], EXEC_SPANS);
}

#[test]
fn a_process_still_running_at_the_drain_bound_is_killed_and_the_server_exits_0() {
    let receiver = Receiver::start();
    let (mut server, address) = exec_server(&receiver.env("exec-server"), &["--drain-timeout", "300ms"]);
    let target = Target::Direct(address);
    let mut running = target
        .command(&receiver.env("client"), &["sh", "-c", "echo started; exec sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    first_line(&mut running, "started");

    let t0 = Instant::now();
    server.signal("-TERM");
    let status = server.exit_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}; {}", server.stderr());
    // 300 ms, the kill, the telemetry flush: nowhere near the 60 s of the command.
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(server.stderr().contains("killed 1 processes still running after 300 ms"), "{}", server.stderr());

    let status = try_exit_within(&mut running, Duration::from_secs(10)).expect("the killed exec's client ends");
    let mut err = String::new();
    std::io::Read::read_to_string(running.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(128 + 9), "the client sees its command killed: {err}");
    let trace = trace_id(&err);
    let spans = receiver.spans();
    assert_complete(&spans, std::slice::from_ref(&trace), EXEC_SPANS);
    let exit = spans.iter().find(|s| s.trace_id == trace && s.name == "process.exit").unwrap();
    assert_eq!(exit.attributes.get("tracewire.signal").map(String::as_str), Some("9"));
}

#[test]
fn a_second_signal_exits_at_once_without_waiting_for_the_drain() {
    let (mut server, address) = exec_server(&[("OTEL_SDK_DISABLED", "true".to_owned())], &[]);
    let target = Target::Direct(address);
    let mut running = target
        .command(&[("OTEL_SDK_DISABLED", "true".to_owned())], &["sh", "-c", "echo $$; exec sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(running.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let sleeper: u32 = line.trim().parse().unwrap();

    let t0 = Instant::now();
    server.signal("-TERM");
    server.wait_stderr("waiting up to 5000 ms", Duration::from_secs(10));
    server.signal("-INT");
    let status = server.exit_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "128 + SIGINT: {status}; {}", server.stderr());
    assert!(t0.elapsed() < Duration::from_secs(4), "well before the 5 s drain: {:?}", t0.elapsed());
    assert!(server.stderr().contains("SIGINT again: exiting"), "{}", server.stderr());

    // The forced exit left the command running: stop it by its pid.
    let _ = Command::new("kill").args(["-KILL", &sleeper.to_string()]).status();
    let _ = running.kill();
    let _ = running.wait();
}

#[test]
fn sigint_stops_an_exec_server_with_its_admin_listener_and_database_with_everything_kept() {
    let receiver = Receiver::start();
    let dir = tracewire_testkit::TempDir::new("tracewire-sigint-admin").unwrap();
    let db = dir.path().join("processes.db");
    let db_arg = db.display().to_string();
    let mut env = receiver.env("exec-server");
    env.push(("TRACEWIRE_ADMIN_TOKEN", "sigterm-test-token".to_owned()));
    let mut server =
        Service::start(&["exec-server", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--db", &db_arg], &env);
    let admin: SocketAddr = server.announced("admin listening on ").parse().unwrap();
    let target = Target::Direct(server.announced("listening on "));
    let traces = execs(&target, &receiver.env("client"), 5);
    // The admin listener answers (401 without the token) until the stop.
    assert!(std::net::TcpStream::connect(admin).is_ok());

    server.signal("-INT");
    let status = server.exit_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}; {}", server.stderr());
    assert!(std::net::TcpStream::connect(admin).is_err(), "the admin listener is closed");
    assert_complete(&receiver.spans(), &traces, EXEC_SPANS);
    // Every process's record, start and end, is in the database.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let records = rt.block_on(async { tracewire_store::Store::open(&db).unwrap().recent(100).await.unwrap() });
    let kept: BTreeSet<&str> = records.iter().map(|r| r.trace_id.as_str()).collect();
    assert_eq!(kept, traces.iter().map(String::as_str).collect(), "one record per exec");
    assert!(records.iter().all(|r| r.ended_unix_nanos > 0 && r.exit_code == Some(0)), "ends recorded");
}

#[test]
fn sigterm_stops_a_relay_and_the_exec_server_behind_it_with_every_span_exported() {
    let receiver = Receiver::start();
    let dir = tracewire_testkit::TempDir::new("tracewire-sigterm-relay").unwrap();
    let key = keygen(dir.path());
    let mut relay = Service::start(&["relay", "--listen", "127.0.0.1:0"], &receiver.env("relay"));
    let url = format!("http://{}", relay.announced("listening on "));
    let key_arg = key.display().to_string();
    let mut server = Service::start(
        &["exec-server", "--relay", &url, "--session", "sigterm", "--expose-traceparent", "--key", &key_arg],
        &receiver.env("exec-server"),
    );
    server.announced("serving session sigterm via ");
    let target = Target::Relay { url, session: "sigterm".into(), server_key: tracewire_relay::public_path(&key) };
    let client_env = receiver.env("client");
    // The exec-server attaches in the background: the first exec may find no peer.
    let mut last = String::new();
    let attached = tracewire_testkit::eventually(Duration::from_secs(20), || {
        let (out, _) = target.exec(&client_env, &["true"]);
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success()
    });
    assert!(attached.is_ok(), "no exec through the relay: {last}");
    let traces = execs(&target, &client_env, 10);

    relay.signal("-TERM");
    let status = relay.exit_within(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "relay: {status}; {}", relay.stderr());
    server.signal("-TERM");
    let status = server.exit_within(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exec-server: {status}; {}", server.stderr());

    let mut want = EXEC_SPANS.to_vec();
    want.extend([("client", "relay.send"), ("relay", "relay.forward"), ("exec-server", "relay.recv")]);
    assert_complete(&receiver.spans(), &traces, &want);
}

#[test]
fn sigterm_stops_collect_with_every_span_received_in_its_database() {
    let dir = tracewire_testkit::TempDir::new("tracewire-sigterm-collect").unwrap();
    let db = dir.path().join("traces.db");
    let db_arg = db.display().to_string();
    let mut collect =
        Service::start(&["collect", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--db", &db_arg], &[]);
    // "collecting OTLP/gRPC on A, OTLP/HTTP on http://B/v1/traces, storing in DB"
    let line = collect.announced("collecting OTLP/gRPC on ");
    let grpc = format!("http://{}", line.split(',').next().unwrap());
    let http = line.split("HTTP on ").nth(1).and_then(|r| r.split("/v1").next()).unwrap().to_owned();
    // The server exports over gRPC, the clients over HTTP.
    let (mut server, address) = exec_server(&otlp_env(&grpc, "grpc", "exec-server"), &[]);
    let traces = execs(&Target::Direct(address), &otlp_env(&http, "http/protobuf", "client"), 5);
    server.signal("-TERM");
    assert_eq!(server.exit_within(Duration::from_secs(10)).code(), Some(0), "{}", server.stderr());

    collect.signal("-TERM");
    let status = collect.exit_within(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status}; {}", collect.stderr());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let spans = rt.block_on(async { tracewire_store::Store::open(&db).unwrap().spans().await.unwrap() });
    assert_complete(&spans, &traces, EXEC_SPANS);
}
