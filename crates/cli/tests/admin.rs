//! `tracewire exec-server --admin`: the admin listener of the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tracewire_testkit::TempDir;

mod common;
use common::{BIN, exit_within};
const TOKEN: &str = "cli-admin-token";

/// An exec-server with an admin listener, stopped by its pid on drop.
struct Server {
    child: Child,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut child = Command::new(BIN)
        .args(["exec-server", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(args)
        .env("OTEL_SDK_DISABLED", "true")
        .env_remove("TRACEWIRE_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut admin = None;
    let mut listening = false;
    while admin.is_none() || !listening {
        let line = lines.next().unwrap_or_else(|| panic!("the server stopped before printing its addresses")).unwrap();
        if let Some(a) = line.strip_prefix("admin listening on ") {
            admin = Some(a.to_owned());
        } else if line.starts_with("listening on ") {
            listening = true;
        }
    }
    Server { child, admin: admin.unwrap() }
}

/// A GET over a plain TCP connection: (status, body).
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Waits for `child` to exit (failing after `limit`); its status and stderr.
fn exited(child: &mut Child, limit: Duration) -> std::process::Output {
    let status = exit_within(child, limit, "the server did not exit");
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    std::process::Output { status, stdout: Vec::new(), stderr: stderr.into_bytes() }
}

#[test]
fn admin_needs_the_token_from_a_file_or_the_environment() {
    let dir = TempDir::new("tw-cli-admin").unwrap();
    let file = dir.path().join("admin.token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let server = start(&["--admin-token-file", file.to_str().unwrap(), "--reap-ttl", "7s"], &[]);
    for path in ["/metrics", "/api/metrics", "/api/metrics/prometheus", "/api/debug/pprof/profile?seconds=1"] {
        let (status, body) = get(&server.admin, path, None);
        assert_eq!((status, body.as_str()), (401, ""), "{path} without a token");
        let (status, body) = get(&server.admin, path, Some("wrong"));
        assert_eq!((status, body.as_str()), (401, ""), "{path} with a wrong token");
    }
    let (status, body) = get(&server.admin, "/api/metrics", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reap_ttl_seconds"], 7.0);
    assert!(v["workers"].as_array().is_some_and(Vec::is_empty), "{v}");
    let (status, page) = get(&server.admin, "/metrics", Some(TOKEN));
    assert_eq!(status, 200);
    assert!(page.contains("/api/metrics") || page.contains("metrics.js"), "{page}");
    drop(server);

    // The token from the environment.
    let server = start(&[], &[("TRACEWIRE_ADMIN_TOKEN", TOKEN)]);
    assert_eq!(get(&server.admin, "/api/metrics", Some(TOKEN)).0, 200);
    assert_eq!(get(&server.admin, "/api/metrics", None).0, 401);
}

#[test]
fn admin_without_a_token_is_refused() {
    let dir = TempDir::new("tw-cli-admin").unwrap();
    let empty = dir.path().join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    for (args, expect) in [
        (vec!["--admin", "0.0.0.0:0"], "reachable from other machines"),
        (vec!["--admin", "127.0.0.1:0"], "without a token"),
        (vec!["--admin", "127.0.0.1:0", "--admin-token-file", empty.to_str().unwrap()], "token is empty"),
    ] {
        let mut child = Command::new(BIN)
            .args(["exec-server", "--listen", "127.0.0.1:0"])
            .args(&args)
            .env("OTEL_SDK_DISABLED", "true")
            .env_remove("TRACEWIRE_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = exited(&mut child, Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        if expect != "token is empty" {
            assert!(stderr.contains("--admin-token-file") && stderr.contains("TRACEWIRE_ADMIN_TOKEN"), "{stderr}");
        }
    }
}
