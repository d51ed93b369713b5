//! `examples/tower_http.rs` as two real processes, `front --downstream leaf`, exporting to a
//! real collector (rotel-agent): one request with a traceparent makes one trace across both,
//! `caller -> front SERVER -> front CLIENT -> leaf SERVER`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use tracewire_testkit::Rotel;

mod common;
use common::Listening;

/// Starts one instance of the example, exporting to `rotel` as `service`, calling
/// `downstream` when given.
fn start(rotel: &Rotel, service: &str, downstream: Option<&str>) -> Listening {
    let exe = tracewire_testkit::example_binary("tower_http").unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(exe);
    cmd.args(["--listen", "127.0.0.1:0"]);
    if let Some(d) = downstream {
        cmd.args(["--downstream", &format!("http://{d}")]);
    }
    cmd.env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", rotel.grpc_endpoint())
        .env("OTEL_SERVICE_NAME", service)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .stderr(Stdio::inherit());
    Listening::spawn(&mut cmd)
}

/// `GET /hello` over raw HTTP/1.1 with a traceparent; the status line and body.
fn get_hello(addr: &str, traceparent: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(stream, "GET /hello HTTP/1.1\r\nhost: {addr}\r\ntraceparent: {traceparent}\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[test]
fn two_instances_make_one_trace_through_the_tower_layers() {
    let rotel = Rotel::start().unwrap();
    let leaf = start(&rotel, "leaf", None);
    let front = start(&rotel, "front", Some(&leaf.addr));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (status, body) = get_hello(&front.addr, &format!("00-{trace}-00f067aa0ba902b7-01"));
    assert!(status.contains(" 200 "), "{status}\n{body}");
    assert!(body.contains(&format!("hello from {} in trace {trace}", front.addr)), "{body}");
    assert!(body.contains(&format!("hello from {} in trace {trace}", leaf.addr)), "{body}");

    let spans =
        rotel.wait_for(Duration::from_secs(20), |s| s.iter().filter(|x| x.trace_id == trace).count() >= 3).unwrap();
    let of: Vec<_> = spans.iter().filter(|s| s.trace_id == trace).collect();
    let find = |service: &str, kind: &str| {
        of.iter()
            .find(|s| s.resource_attr("service.name") == Some(service) && s.kind == kind)
            .unwrap_or_else(|| panic!("no {service} {kind} in {of:#?}"))
    };
    let front_server = find("front", "SPAN_KIND_SERVER");
    let front_client = find("front", "SPAN_KIND_CLIENT");
    let leaf_server = find("leaf", "SPAN_KIND_SERVER");
    assert_eq!(front_server.parent_id, "00f067aa0ba902b7", "front continues the caller");
    assert_eq!(front_client.parent_id, front_server.span_id);
    assert_eq!(leaf_server.parent_id, front_client.span_id, "leaf continues front's client span");
    for server in [front_server, leaf_server] {
        assert_eq!(server.name, "GET /hello");
        assert_eq!(server.attr("http.route"), Some("/hello"));
        assert_eq!(server.attr("http.response.status_code"), Some("200"));
    }
    assert_eq!(front_client.name, "GET");
    let url = format!("http://{}/hello", leaf.addr);
    assert_eq!(front_client.attr("url.full"), Some(url.as_str()));
}
