//! What a child gets from the exec-server's spawn: exactly the server's environment plus
//! the request's variables (which win) plus the trace variables (which win over both),
//! its working directory, the OS error when it cannot start, and death when its server
//! drops it. Real processes (`/usr/bin/env -0`, `pwd`, `sleep`) run by a real server over
//! gRPC on loopback, with tracing on (an in-memory pipeline) so the trace variables exist.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tracewire_exec::{ExecConfig, ExecError, ExecServer, Start};
use tracewire_rpc::{ErrorCode, RpcError, ServerConfig};
use tracewire_telemetry::span_context;
use tracewire_testkit::eventually;

use common::{argv, client, serve_handler, server, server_with};

const TRACE_VARS: [&str; 3] = ["TRACEPARENT", "TRACESTATE", "BAGGAGE"];

fn harness() {
    tracewire_telemetry::testing::install();
}

/// This process's environment (the server runs in it), as text.
fn server_env() -> BTreeMap<String, String> {
    std::env::vars_os().map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned())).collect()
}

/// Runs `env -0` (NUL-separated, so values may hold newlines) with `start`'s variables;
/// returns the child's environment and the exec's trace id.
async fn child_env(
    c: &tracewire_exec::ExecClient,
    program: &str,
    env: HashMap<String, String>,
) -> (BTreeMap<String, String>, String) {
    let p = c.start(Start { env, ..argv(&[program, "-0"]) }).await.unwrap();
    let trace_id = span_context(p.span()).unwrap().trace_id.to_string();
    let out = p.wait_with_output().await.unwrap();
    assert_eq!(out.status.code, Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let vars = text
        .split('\0')
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((e, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (vars, trace_id)
}

/// A request that overrides one of the server's variables, adds one, and sets
/// `TRACEPARENT` (which the server's trace context must replace).
fn request_env() -> HashMap<String, String> {
    let overridden = server_env().into_keys().find(|k| k != "PATH" && !TRACE_VARS.contains(&k.as_str())).unwrap();
    HashMap::from([
        (overridden, "from the request".to_owned()),
        ("TRACEWIRE_TEST_ADDED".to_owned(), "a=b c\nd".to_owned()),
        ("TRACEPARENT".to_owned(), "00-not-a-valid-traceparent".to_owned()),
    ])
}

/// The server's environment with the request's variables over it, without the trace
/// variables.
fn expected(request: &HashMap<String, String>) -> BTreeMap<String, String> {
    let mut want = server_env();
    want.extend(request.iter().map(|(k, v)| (k.clone(), v.clone())));
    for k in TRACE_VARS {
        want.remove(k);
    }
    want
}

fn split_trace_vars(mut vars: BTreeMap<String, String>) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let trace = TRACE_VARS.iter().filter_map(|k| vars.remove_entry(*k)).collect();
    (vars, trace)
}

async fn assert_env_with_trace(program: &str, request: HashMap<String, String>) {
    let s = server().await;
    let c = client(&s).await;
    let (vars, trace_id) = child_env(&c, program, request.clone()).await;
    let (rest, trace) = split_trace_vars(vars);
    assert_eq!(rest, expected(&request), "{program}: the server's environment and the request's variables");
    // The trace variables win over the request's: TRACEPARENT names the exec's trace
    // (W3C Trace Context, section 3.2), and only the trace variables were added.
    // The exec's root has no tracestate and no baggage: TRACEPARENT alone.
    assert_eq!(trace.keys().collect::<Vec<_>>(), ["TRACEPARENT"], "{program}: {trace:?}");
    let tp = &trace["TRACEPARENT"];
    let parsed = tracewire_context::TraceParent::parse(tp).unwrap();
    assert_eq!(parsed.trace_id.to_string(), trace_id, "{program}: {tp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_childs_environment_is_the_servers_plus_the_requests_plus_the_trace_variables() {
    harness();
    assert_env_with_trace("/usr/bin/env", request_env()).await;
}

/// A request that sets `PATH` for a program named without a `/` is looked up in the
/// child's `PATH` (the standard library's rule), through the other spawn path: the same
/// environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_requests_path_the_environment_is_the_same() {
    harness();
    let mut request = request_env();
    let path = std::env::var("PATH").unwrap_or_default();
    request.insert("PATH".into(), format!("/usr/bin:{path}"));
    assert_env_with_trace("env", request).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_child_trace_context_off_the_environment_is_the_servers_plus_the_requests() {
    harness();
    let mut config = ExecConfig::default();
    config.child_trace_context = false;
    let s = server_with(config, ServerConfig::default()).await;
    let c = client(&s).await;
    let mut request = request_env();
    request.remove("TRACEPARENT");
    let (vars, _) = child_env(&c, "/usr/bin/env", request.clone()).await;
    let mut want = server_env();
    want.extend(request);
    assert_eq!(vars, want);
}

fn spawn_failed_message(err: &ExecError) -> &str {
    match err {
        ExecError::Rpc(RpcError::Remote { code: ErrorCode::SpawnFailed, message }) => message,
        other => panic!("not SpawnFailed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_or_directory_is_spawn_failed_with_the_os_error() {
    harness();
    let s = server().await;
    let c = client(&s).await;
    let os = std::io::Error::from_raw_os_error(2).to_string(); // ENOENT
    for (start, program) in [
        (argv(&["/definitely/not/here"]), "/definitely/not/here"),
        (argv(&["definitely-not-on-the-path-tracewire"]), "definitely-not-on-the-path-tracewire"),
        (Start { cwd: "/no/such/dir".into(), ..argv(&["true"]) }, "true"),
    ] {
        let err = c.start(start).await.unwrap_err();
        assert_eq!(spawn_failed_message(&err), format!("{program}: {os}"));
    }
    // A NUL in an argument cannot reach a C argv.
    let err = c.start(argv(&["echo", "a\0b"])).await.unwrap_err();
    assert!(spawn_failed_message(&err).contains("nul byte"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_working_directory_applies() {
    harness();
    let s = server().await;
    let c = client(&s).await;
    let dir = std::fs::canonicalize(std::env::temp_dir()).unwrap();
    let start = Start { cwd: dir.to_string_lossy().into_owned(), ..argv(&["pwd"]) };
    let out = c.start(start).await.unwrap().wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim_end(), dir.to_string_lossy());
    // A relative program is found from the new directory.
    let start = Start { cwd: "/usr/bin".into(), ..argv(&["./env"]) };
    let out = c.start(start).await.unwrap().wait_with_output().await.unwrap();
    assert_eq!(out.status.code, Some(0));
}

/// Whether `/proc/PID` exists: a zombie (killed, not reaped) still has one.
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The server's runtime going away drops its process tasks: each child is killed and
/// reaped, with `kill_on_disconnect` off so that only the drop can kill it.
#[test]
fn a_dropped_child_is_killed_and_reaped() {
    harness();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pid = rt.block_on(async {
        let mut config = ExecConfig::default();
        config.kill_on_disconnect = false;
        let s = serve_handler(ExecServer::new(config), ServerConfig::default()).await;
        let c = client(&s).await;
        let p = c.start(argv(&["sleep", "30"])).await.unwrap();
        assert!(exists(p.pid));
        std::mem::forget(s); // the server stays up until the runtime goes
        p.pid
    });
    drop(rt);
    eventually(Duration::from_secs(10), || !exists(pid))
        .unwrap_or_else(|e| panic!("the child {pid} outlived the dropped task (or was never reaped): {e}"));
}
