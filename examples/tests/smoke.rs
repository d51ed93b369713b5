//! Runs the example binaries as real processes.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tracewire_testkit::{Rotel, eventually_some, free_port};

mod common;
use common::Listening;

/// `target/<profile>/examples/<name>`, built by `cargo test` alongside this test.
fn example(name: &str) -> PathBuf {
    tracewire_testkit::example_binary(name).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn propagate_continues_a_valid_traceparent_and_explains_an_invalid_one() {
    let out = Command::new(example("propagate"))
        .args(["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "rojo=1", "user=alice"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("continued trace 4bf92f3577b34da6a3ce929d0e0e4736 from remote parent span 00f067aa0ba902b7"),
        "{text}"
    );
    assert!(text.contains("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(text.contains("tracestate: rojo=1") && text.contains("baggage: user=alice"));

    let out = Command::new(example("propagate")).arg("00-bad").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("started a new trace") && text.contains("length 6"), "{text}");
}

#[test]
fn telemetry_smoke_exports_its_tree_over_grpc() {
    let rotel = Rotel::start().unwrap();
    let out = Command::new(example("telemetry_smoke"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.grpc_endpoint())
        .env("OTEL_SERVICE_NAME", "smoke")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let trace_id = stdout.trim().strip_prefix("trace_id=").unwrap().to_owned();
    let spans =
        rotel.wait_for(Duration::from_secs(15), |s| s.iter().filter(|x| x.trace_id == trace_id).count() >= 4).unwrap();
    let of: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let find = |n: &str| of.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n} in {of:#?}"));
    assert_eq!(find("exec").parent_id, "");
    assert_eq!(find("rpc.dispatch").parent_id, find("exec").span_id);
    assert_eq!(find("rpc.queue").parent_id, find("rpc.dispatch").span_id);
    assert_eq!(find("process.spawn").parent_id, find("rpc.dispatch").span_id);
    assert_eq!(find("exec").resource_attr("service.name"), Some("smoke"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("emitted=4 exported=4 dropped=0"));
}

#[test]
fn telemetry_smoke_exits_0_with_the_collector_down_and_counts_the_drops() {
    let t0 = Instant::now();
    let out = Command::new(example("telemetry_smoke"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", free_port()))
        .env("TRACEWIRE_SHUTDOWN_TIMEOUT_MS", "1500")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("emitted=4 exported=0 dropped=4"), "{stderr}");
    // Bounded: the shutdown deadline plus process start-up, never a hang.
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn telemetry_smoke_reports_a_bad_variable_by_name() {
    let out = Command::new(example("telemetry_smoke")).env("OTEL_EXPORTER_OTLP_PROTOCOL", "smtp").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && stderr.contains("smtp"), "{stderr}");
}

#[test]
fn remote_exec_examples_run_a_command_end_to_end() {
    let server = Listening::spawn(
        Command::new(example("remote_exec_server")).arg("127.0.0.1:0").env("OTEL_SDK_DISABLED", "true"),
    );
    let out = Command::new(example("remote_exec_client"))
        .args([server.addr.as_str(), "sh", "-c", "echo remote; exit 4"])
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"remote\n");
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn relay_examples_run_a_command_end_to_end_encrypted() {
    let dir = tracewire_testkit::TempDir::new("tracewire-example-relay").unwrap();
    let key = dir.path().join("server.key");
    tracewire_relay::Keypair::generate().unwrap().write(&key).unwrap();
    let relay = Listening::spawn(Command::new(example("relay")).arg("127.0.0.1:0").env("OTEL_SDK_DISABLED", "true"));
    let url = format!("http://{}", relay.addr);
    let _server = Listening::spawn_announcing(
        Command::new(example("remote_exec_server"))
            .args(["relay", url.as_str(), "ex"])
            .arg(&key)
            .env("OTEL_SDK_DISABLED", "true"),
        "serving session ex",
    );
    let run = || {
        Command::new(example("remote_exec_client"))
            .args([url.as_str(), "echo", "sealed"])
            .env("OTEL_SDK_DISABLED", "true")
            .env("RELAY_SESSION", "ex")
            .env("RELAY_SERVER_KEY", tracewire_relay::public_path(&key))
            .output()
            .unwrap()
    };
    // The server announces itself before it has attached to the relay: until it has, a
    // client's connect fails.
    let mut failed = None;
    let out = eventually_some(Duration::from_secs(10), || {
        let out = run();
        if out.status.success() {
            Some(out)
        } else {
            failed = Some(out);
            None
        }
    })
    .unwrap_or_else(|e| {
        let stderr = failed.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
        panic!("the client never ran its command through the relay ({e}): {stderr}")
    });
    assert_eq!(out.stdout, b"sealed\n", "{}", String::from_utf8_lossy(&out.stderr));
}
