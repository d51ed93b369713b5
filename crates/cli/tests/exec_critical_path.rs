//! The exec-server's spans as the collector's analysis reads them: a real exec-server and
//! client on loopback, their spans from an in-memory pipeline installed once for this test
//! binary, and `tracewire_collector::critical_path` over them. It lives here because the
//! CLI is the crate allowed to depend on both `tracewire-exec` and `tracewire-collector`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_sdk::trace::SpanData;
use tracewire_collector::{SpanRecord, critical_path};
use tracewire_exec::{ExecClient, ExecConfig, ExecServer, Start};
use tracewire_rpc::ServerConfig;
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_telemetry::span_context;
use tracewire_testkit::eventually_some_async;

/// An exec-server on a free loopback port (serving until the test's runtime ends) and a
/// client connected to it.
async fn exec_client() -> ExecClient {
    let bound = BoundServer::bind(&"127.0.0.1:0".parse::<Address>().unwrap()).await.unwrap();
    let address = bound.local_address().to_string();
    let server = Arc::new(ExecServer::new(ExecConfig::default()));
    tokio::spawn(bound.run(server, ServerConfig::default(), std::future::pending()));
    ExecClient::connect(&address).await.unwrap()
}

/// The spans as the collector's analysis reads them: a span whose parent is not in the
/// set is a root.
fn records(spans: &[SpanData]) -> Vec<SpanRecord> {
    let ns =
        |t: SystemTime| i64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()).unwrap_or(i64::MAX);
    let ids: Vec<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
    spans
        .iter()
        .map(|s| SpanRecord {
            trace_id: s.span_context.trace_id().to_string(),
            span_id: s.span_context.span_id().to_string(),
            parent_id: ids.contains(&s.parent_span_id).then(|| s.parent_span_id.to_string()),
            name: s.name.to_string(),
            start_ns: ns(s.start_time),
            end_ns: ns(s.end_time),
            ..SpanRecord::default()
        })
        .collect()
}

/// The critical path names what the time was: a child that sleeps 0.2 s spends it in
/// `process.run`, not in its pipe readers, whether they see EOF as `wait` sees the exit
/// or (a grandchild holding the pipes 50 ms longer) after it; the time a reader adds
/// after the exit belongs to `process.exit`, which waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_critical_path_names_process_run_not_the_pipe_readers() {
    let telemetry = tracewire_telemetry::testing::install();
    let c = exec_client().await;
    for (command, after_exit) in
        [(&["sleep", "0.2"][..], None), (&["sh", "-c", "sleep 0.2; sleep 0.05 &"][..], Some(50))]
    {
        let start = Start { argv: command.iter().map(|s| (*s).to_owned()).collect(), ..Start::default() };
        let process = c.start(start).await.unwrap();
        let trace_id = span_context(process.span()).unwrap().trace_id.to_string();
        assert_eq!(process.wait_with_output().await.unwrap().status.code, Some(0));
        // The server's last spans end as Exited is delivered.
        let trace_id = trace_id.as_str();
        let spans = eventually_some_async(Duration::from_secs(10), move || async move {
            let spans = telemetry.spans_of(trace_id);
            let has = |name: &str| spans.iter().any(|x| x.name == name);
            (has("exec") && has("process") && has("terminal.deliver")).then_some(spans)
        })
        .await
        .expect("the exec's spans are exported");
        let trace = records(&spans);
        let mut on_path: HashMap<&str, Duration> = HashMap::new();
        for (i, ns) in critical_path(&trace) {
            *on_path.entry(trace[i].name.as_str()).or_default() += Duration::from_nanos(u64::try_from(ns).unwrap());
        }
        let at = |name: &str| on_path.get(name).copied().unwrap_or_default();
        let run = at("process.run");
        assert!(run >= Duration::from_millis(195), "{command:?}: process.run {run:?} on the path: {on_path:?}");
        let readers = at("process.stdout") + at("process.stderr");
        assert!(
            readers < Duration::from_millis(5),
            "{command:?}: the pipe readers {readers:?} on the path: {on_path:?}"
        );
        if let Some(ms) = after_exit {
            let exit = at("process.exit");
            assert!(exit >= Duration::from_millis(ms - 5), "{command:?}: process.exit {exit:?}: {on_path:?}");
        }
    }
}
