//! The `tracewire` binary as real processes: an exec-server and clients, exporting to a
//! real OTLP collector (rotel-agent).

use std::io::BufReader;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tracewire_testkit::Rotel;

mod common;
use common::{BIN, CollectProcess, ServerProcess, announced, exit_within, first_line, keygen};

fn otel_env(rotel: &Rotel, service: &str) -> Vec<(&'static str, String)> {
    common::otel_env(&rotel.grpc_endpoint(), service)
}

#[test]
fn exec_streams_output_exits_with_the_code_and_shares_one_trace_with_the_server() {
    let rotel = Rotel::start().unwrap();
    let server = ServerProcess::start(&otel_env(&rotel, "exec-server"));
    let out = Command::new(BIN)
        .args([
            "exec",
            "--server",
            &server.address,
            "--print-trace-id",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ])
        .envs(otel_env(&rotel, "exec-client"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"out\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("err\n"), "{stderr}");
    let trace_id = stderr.lines().find_map(|l| l.strip_prefix("trace_id=")).unwrap().to_owned();

    // Client and server spans arrive in one trace, linked across the processes.
    let spans = rotel
        .wait_for(Duration::from_secs(20), |s| {
            let of = s.iter().filter(|x| x.trace_id == trace_id).collect::<Vec<_>>();
            of.iter().any(|x| x.name == "exec") && of.iter().any(|x| x.name == "process.exit")
        })
        .unwrap();
    let of: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let find = |n: &str| of.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n} in {of:#?}"));
    // The Start call (stdin forwarding also closes the remote stdin, with a call of its own).
    let start = |n: &str| {
        of.iter()
            .find(|s| s.name == n && s.attr("rpc.method") == Some("Start"))
            .unwrap_or_else(|| panic!("no Start {n} in {of:#?}"))
    };
    let (exec, call, dispatch, process) = (find("exec"), start("rpc.call"), start("rpc.dispatch"), find("process"));
    assert_eq!(exec.resource_attr("service.name"), Some("exec-client"));
    assert_eq!(dispatch.resource_attr("service.name"), Some("exec-server"));
    assert_eq!(call.parent_id, exec.span_id);
    // The connect is in the exec's trace, under its root (tracewire-exec makes both).
    assert_eq!(find("rpc.connect").parent_id, exec.span_id);
    assert_eq!(exec.parent_id, "", "the exec is the trace's root");
    assert_eq!(dispatch.parent_id, call.span_id, "the server continues the client's call");
    assert_eq!(process.parent_id, dispatch.span_id);
    assert_eq!(find("process.exit").attr("process.exit.code"), Some("7"));
    assert!(call.attr("tracewire.net.rtt_us").is_some());
}

#[test]
fn no_child_trace_context_leaves_the_trace_variables_out_of_the_childs_environment() {
    let rotel = Rotel::start().unwrap();
    let child_sees = |args: &[&str]| {
        let server = ServerProcess::start_with(args, &otel_env(&rotel, "exec-server"));
        let out = Command::new(BIN)
            .args(["exec", "--server", &server.address, "--", "sh", "-c", "echo ${TRACEPARENT-unset}"])
            .envs(otel_env(&rotel, "exec-client"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let by_default = child_sees(&[]);
    assert!(tracewire_context::TraceParent::parse(&by_default).is_ok(), "{by_default:?}");
    assert_eq!(child_sees(&["--no-child-trace-context"]), "unset");
}

#[test]
fn exec_forwards_stdin_and_reports_signals_as_128_plus() {
    let server = ServerProcess::start(&[("OTEL_SDK_DISABLED", "true".to_owned())]);
    let mut child = Command::new(BIN)
        .args(["exec", "--server", &server.address, "--", "cat"])
        .env("OTEL_SDK_DISABLED", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"through the server\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"through the server\n");
    assert_eq!(out.status.code(), Some(0));

    let out = Command::new(BIN)
        .args(["exec", "--server", &server.address, "--", "sh", "-c", "kill -TERM $$"])
        .env("OTEL_SDK_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(143));
}

#[test]
fn a_killed_exec_server_is_an_error_for_the_client_not_a_hang() {
    let mut server = ServerProcess::start(&[("OTEL_SDK_DISABLED", "true".to_owned())]);
    let mut client = Command::new(BIN)
        .args(["exec", "--server", &server.address, "--", "sh", "-c", "echo started; exec sleep 30"])
        .env("OTEL_SDK_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command runs on the server: it said so.
    let _stdout = first_line(&mut client, "started");
    server.child.kill().unwrap();
    let _ = server.child.wait();
    let status = exit_within(&mut client, Duration::from_secs(15), "the client hangs after the server died");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut client.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("ended before the command exited"), "{err}");
}

#[test]
fn bad_addresses_and_missing_commands_are_clear_errors() {
    let out = Command::new(BIN)
        .args(["exec", "--server", "nonsense", "--", "true"])
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .unwrap();
    // A malformed address is a usage error (exit status 2) naming the flag and the forms.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--server") && err.contains("nonsense") && err.contains("unix:PATH"), "{err}");
    for args in [&["exec-server", "--listen", "localhost:7070"][..], &["relay", "--listen", "7080"]] {
        let out = Command::new(BIN).args(args).env("OTEL_SDK_DISABLED", "true").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--listen") && err.contains("HOST:PORT"), "{args:?}: {err}");
    }
    let out = Command::new(BIN).args(["exec", "--server", "127.0.0.1:1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage error without a command");
    let port = tracewire_testkit::free_port();
    let out = Command::new(BIN)
        .args(["exec", "--server", &format!("127.0.0.1:{port}"), "--", "true"])
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A `tracewire relay` process on a given port (0: a free one), stopped by its pid.
fn relay_process(port: u16) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["relay", "--listen", &format!("127.0.0.1:{port}"), "--token", "tok"])
        .env("OTEL_SDK_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let address = announced(&mut BufReader::new(child.stdout.take().unwrap()), "listening on ");
    (child, address)
}

#[test]
fn exec_through_a_relay_and_survive_the_relay_restarting() {
    let dir = tracewire_testkit::TempDir::new("tracewire-cli-relay").unwrap();
    let key = keygen(dir.path());
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "private key is 0600");
    }
    let pubkey = tracewire_relay::public_path(&key);
    let (mut relay, address) = relay_process(0);
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let url = format!("http://{address}");
    let mut server = Command::new(BIN)
        .args(["exec-server", "--relay", &url, "--session", "cli", "--token", "tok", "--key"])
        .arg(&key)
        .env("OTEL_SDK_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let exec = |args: &[&str]| {
        Command::new(BIN)
            .args(["exec", "--relay", &url, "--session", "cli", "--token", "tok", "--server-key"])
            .arg(&pubkey)
            .arg("--")
            .args(args)
            .env("OTEL_SDK_DISABLED", "true")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    // The server attaches asynchronously: retry, within a deadline.
    let mut last = None;
    let _ = tracewire_testkit::eventually(Duration::from_secs(10), || {
        let out = last.insert(exec(&["sh", "-c", "echo relayed; exit 6"]));
        out.status.code() == Some(6)
    });
    let out = last.unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"relayed\n");

    // The relay dies mid-stream: the client gets an error, not a hang.
    let mut client = Command::new(BIN)
        .args(["exec", "--relay", &url, "--session", "cli", "--token", "tok", "--server-key"])
        .arg(&pubkey)
        .args(["--", "sh", "-c", "echo started; exec sleep 30"])
        .env("OTEL_SDK_DISABLED", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command runs behind the relay: it said so.
    let _stdout = first_line(&mut client, "started");
    relay.kill().unwrap();
    let _ = relay.wait();
    let status = exit_within(&mut client, Duration::from_secs(15), "the client hangs after the relay died");
    assert_eq!(status.code(), Some(1));

    // A relay on the same port again: the exec-server re-attaches and serves new clients.
    let (mut relay2, _) = relay_process(port);
    let mut last = None;
    let _ = tracewire_testkit::eventually(Duration::from_secs(20), || {
        last.insert(exec(&["echo", "again"])).status.success()
    });
    let out = last.unwrap();
    assert_eq!(out.stdout, b"again\n", "{}", String::from_utf8_lossy(&out.stderr));
    let _ = server.kill();
    let _ = server.wait();
    let _ = relay2.kill();
    let _ = relay2.wait();
}

/// Runs `tracewire ARGS` (no relay token in the environment), which must refuse to start
/// (exit status 1); its stderr.
fn refused(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("OTEL_SDK_DISABLED", "true")
        .env_remove("TRACEWIRE_RELAY_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    err
}

#[test]
fn an_open_relay_on_a_public_address_is_refused() {
    assert!(refused(&["relay", "--listen", "0.0.0.0:0"]).contains("--token"));
}

#[test]
fn demo_runs_ten_execs_into_ten_complete_traces_and_writes_the_report() {
    let dir = tracewire_testkit::TempDir::new("tracewire-demo-test").unwrap();
    let out = dir.path().join("out");
    for via in ["relay", "direct"] {
        let o = Command::new(BIN)
            .args(["demo", "--execs", "10", "--via", via, "--slo", "e2e.p99<=10s", "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains("remote execs: 10/10"), "progress is shown");
        assert!(stdout.contains("where the time went"), "{stdout}");
        // The database is closed before the process exits: its log is checkpointed into
        // traces.db and SQLite has removed the -wal and -shm files.
        for leftover in ["traces.db-wal", "traces.db-shm"] {
            assert!(!out.join(leftover).exists(), "{via}: {leftover} left beside traces.db");
        }
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["traces"], 10, "{via}: one trace per exec");
        assert_eq!(summary["orphans"], 0, "{via}: no orphans");
        assert_eq!(summary["e2e"]["count"], 10);
        assert_eq!(summary["slos"][0]["pass"], true);
        let stages: Vec<&str> =
            summary["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
        for s in [
            "exec",
            "rpc.call",
            "rpc.queue",
            "rpc.dispatch",
            "process",
            "process.spawn",
            "process.exit",
            "terminal.deliver",
        ] {
            assert!(stages.contains(&s), "{via}: no {s} in {stages:?}");
        }
        if via == "relay" {
            for s in [
                "relay.frame",
                "relay.encrypt",
                "relay.send",
                "relay.forward",
                "relay.recv",
                "relay.decrypt",
                "relay.decode",
            ] {
                assert!(stages.contains(&s), "no {s} in {stages:?}");
            }
        }
        let jaeger: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("traces.jaeger.json")).unwrap()).unwrap();
        assert_eq!(jaeger["data"].as_array().unwrap().len(), 10);
        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        assert!(html.contains("<svg") && html.contains("10 traces"));
        // `report --db` on the demo's database reads only the attributes the analysis
        // uses; it must find the same stages, critical path and attribution as the demo,
        // which analyzed whole spans (the relay's `net.transit` needs its sequence numbers).
        let again = out.join("again");
        let o = Command::new(BIN)
            .args(["report", "--quiet", "--slo", "e2e.p99<=10s", "--db"])
            .arg(out.join("traces.db"))
            .arg("--out")
            .arg(&again)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let from_db: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(again.join("summary.json")).unwrap()).unwrap();
        let f = |v: &serde_json::Value| v["unattributed_fraction"].as_f64().unwrap();
        assert!((f(&summary) - f(&from_db)).abs() < 1e-9, "{via}: {} vs {}", f(&summary), f(&from_db));
        let path = |v: &serde_json::Value| -> Vec<(String, f64)> {
            v["critical_path"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["stage"].as_str().unwrap().to_owned(), r["share"].as_f64().unwrap()))
                .collect()
        };
        let (demo_path, db_path) = (path(&summary), path(&from_db));
        assert_eq!(demo_path.len(), db_path.len(), "{via}: {demo_path:?} vs {db_path:?}");
        for ((a, x), (b, y)) in demo_path.iter().zip(&db_path) {
            assert!(a == b && (x - y).abs() < 1e-9, "{via}: {demo_path:?} vs {db_path:?}");
        }
        if via == "relay" {
            assert!(db_path.iter().any(|(s, _)| s == "net.transit"), "{via}: {db_path:?}");
        }
    }
    // A failing SLO makes the exit status 3, for CI gates.
    let o = Command::new(BIN)
        .args(["demo", "--execs", "3", "--via", "direct", "--slo", "e2e.p50<=1us", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let o = Command::new(BIN).args(["demo", "--execs", "1", "--slo", "nonsense"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nonsense"));
}

#[test]
fn an_exec_server_on_a_public_address_is_refused_unless_asked_for() {
    assert!(refused(&["exec-server", "--listen", "0.0.0.0:0"]).contains("--insecure-allow-remote"));
}

#[test]
fn collect_stores_spans_from_real_processes_and_report_reads_them_back() {
    let dir = tracewire_testkit::TempDir::new("tracewire-collect-test").unwrap();
    let db = dir.path().join("traces.db");
    let collector = CollectProcess::start(&db);
    // The server exports over gRPC, the client over HTTP: both land in the same trace.
    let server = ServerProcess::start(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc.clone()),
        ("OTEL_SERVICE_NAME", "server".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
    ]);
    let mut trace_ids = Vec::new();
    for _ in 0..3 {
        let o = Command::new(BIN)
            .args(["exec", "--print-trace-id", "--server", &server.address, "--", "echo", "hi"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.http)
            .env("OTEL_SERVICE_NAME", "client")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr);
        trace_ids.push(err.lines().find_map(|l| l.strip_prefix("trace_id=")).unwrap().to_owned());
    }
    // Stopped gracefully, the server flushes its spans; the progress line comes once a
    // second.
    server.stop_gracefully();
    collector.service.wait_stderr("received", Duration::from_secs(10));
    let (status, out, err) = collector.stop();
    assert!(status.success(), "{out}\n{err}");
    assert!(err.contains("received"), "progress is shown: {err}");
    // "received N spans, refused 0; M spans stored in DB"
    let stored: u64 = out
        .trim()
        .split("; ")
        .find(|p| p.ends_with(&format!("spans stored in {}", db.display())))
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no stored count in {out:?}"));
    assert!(out.contains(", refused 0;"), "{out}");
    assert!(stored >= 3 * 10, "{out}");

    let report = dir.path().join("report");
    let o = Command::new(BIN)
        .args(["report", "--slo", "e2e.p99<=10s", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("critical path:"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["spans"].as_u64(), Some(stored));
    assert_eq!(summary["e2e"]["count"], 3, "one root per exec: {summary}");
    let jaeger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("traces.jaeger.json")).unwrap()).unwrap();
    for id in &trace_ids {
        let trace = jaeger["data"].as_array().unwrap().iter().find(|t| t["traceID"] == id.as_str());
        let trace = trace.unwrap_or_else(|| panic!("trace {id} is not in the report"));
        let services: std::collections::BTreeSet<&str> =
            trace["processes"].as_object().unwrap().values().map(|p| p["serviceName"].as_str().unwrap()).collect();
        assert_eq!(services, ["client", "server"].into(), "both processes' spans in trace {id}");
    }

    // An SLO file that fails: exit status 3. Errors are clear: a bad file, a missing db.
    let slo_file = dir.path().join("slo.toml");
    std::fs::write(&slo_file, "slos = [\"e2e.p50<=1us\"]\n").unwrap();
    let o = Command::new(BIN)
        .args(["report", "--db"])
        .arg(&db)
        .arg("--slo-file")
        .arg(&slo_file)
        .arg("--out")
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stdout));
    std::fs::write(&slo_file, "slos = \"e2e.p50<=1us\"\n").unwrap();
    let o = Command::new(BIN).args(["report", "--db"]).arg(&db).arg("--slo-file").arg(&slo_file).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("slo.toml"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(BIN).args(["report", "--db"]).arg(dir.path().join("missing.db")).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such database"));
    assert!(!dir.path().join("missing.db").exists(), "report never creates a database");
}
