//! No plaintext and no secrets in logs, at the most verbose level: a relay, an exec-server
//! behind it and a client, all with `RUST_LOG=trace` and exporting spans to a real
//! collector. The command's input and output carry a marker (through stdin, so it is in no
//! command line) and every process is given the attach token; neither may appear in any
//! log line of any process, nor in any span the collector received. The client's stdout is
//! the one place the marker belongs.

use std::io::{BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tracewire_testkit::{Rotel, TempDir};

mod common;
use common::{BIN, announced, keygen, signal, try_exit_within};
const TOKEN: &str = "tok-5ecr3t-a7c0b1e9d4f2";
const MARKER: &str = "PLAINTEXT-MARKER-9f8e7d6c5b4a";

fn env(rotel: &Rotel, service: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RUST_LOG", "trace".to_owned()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.grpc_endpoint()),
        ("OTEL_SERVICE_NAME", service.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
        // Export every span the libraries make, not only tracewire's stages.
        ("TRACEWIRE_EXPORT_FILTER", "trace".to_owned()),
    ]
}

/// Collects a child's output on a thread until it closes.
fn drain(stream: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = BufReader::new(stream).read_to_end(&mut out);
        out
    })
}

/// SIGINT to its own pid; killed if it is still running 10 s later.
fn stop(mut child: Child) {
    signal(&child, "-INT");
    if try_exit_within(&mut child, Duration::from_secs(10)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn assert_clean(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(!text.contains(TOKEN), "{what} contains the token:\n{text}");
    assert!(!text.contains(MARKER), "{what} contains the plaintext marker:\n{text}");
}

#[test]
fn neither_the_token_nor_plaintext_appears_in_any_log_or_span() {
    let rotel = Rotel::start().unwrap();
    let dir = TempDir::new("tracewire-cli-secrets").unwrap();
    let key = keygen(dir.path());
    let pubkey = tracewire_relay::public_path(&key);

    let mut relay = Command::new(BIN)
        .args(["relay", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .envs(env(&rotel, "relay"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut relay_out = BufReader::new(relay.stdout.take().unwrap());
    let address = announced(&mut relay_out, "listening on ");
    let relay_stdout = drain(relay_out);
    let relay_stderr = drain(relay.stderr.take().unwrap());
    let url = format!("http://{address}");

    let mut server = Command::new(BIN)
        .args(["exec-server", "--relay", &url, "--session", "s", "--token", TOKEN, "--expose-traceparent", "--key"])
        .arg(&key)
        .envs(env(&rotel, "exec-server"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server_stdout = drain(server.stdout.take().unwrap());
    let server_stderr = drain(server.stderr.take().unwrap());

    // The server attaches asynchronously: retry until the exec goes through.
    let mut client_logs = Vec::new();
    let mut last = None;
    let _ = tracewire_testkit::eventually(Duration::from_secs(20), || {
        let mut client = Command::new(BIN)
            .args(["exec", "--relay", &url, "--session", "s", "--token", TOKEN, "--expose-traceparent", "--server-key"])
            .arg(&pubkey)
            .args(["--", "cat"])
            .envs(env(&rotel, "client"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = client.stdin.take().unwrap();
        let _ = stdin.write_all(format!("{MARKER}\n").as_bytes());
        drop(stdin);
        let out = client.wait_with_output().unwrap();
        client_logs.extend_from_slice(&out.stderr);
        last.insert(out).status.success()
    });
    let out = last.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&client_logs));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{MARKER}\n"), "the marker went through");

    stop(server);
    stop(relay);
    let (relay_stdout, relay_stderr) = (relay_stdout.join().unwrap(), relay_stderr.join().unwrap());
    let (server_stdout, server_stderr) = (server_stdout.join().unwrap(), server_stderr.join().unwrap());
    // Trace-level logging is really on: each process logged something.
    for (what, log) in [("relay", &relay_stderr), ("exec-server", &server_stderr), ("client", &client_logs)] {
        assert!(String::from_utf8_lossy(log).contains("TRACE"), "{what} logged nothing at trace level");
    }
    assert_clean("relay stdout", &relay_stdout);
    assert_clean("relay log", &relay_stderr);
    assert_clean("exec-server stdout", &server_stdout);
    assert_clean("exec-server log", &server_stderr);
    assert_clean("client log", &client_logs);

    // The spans: wait for the three services, then check every attribute the collector printed.
    rotel
        .wait_for(Duration::from_secs(20), |s| {
            ["relay", "exec-server", "client"]
                .iter()
                .all(|svc| s.iter().any(|x| x.resource_attr("service.name") == Some(*svc)))
        })
        .unwrap();
    assert_clean("collector (spans)", rotel.log().as_bytes());
}
