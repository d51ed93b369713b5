//! The admin routes over real HTTP on loopback: the auth gate, JSON, Prometheus, the
//! browser login, and CPU profiles.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use tracewire_admin::{AdminConfig, AdminError, AdminServer, Token};
use tracewire_testkit::eventually_async;

use common::{TOKEN, admin, exec, http, metrics_until, worker};

const GATED: &[&str] = &[
    "/metrics",
    "/metrics.js",
    "/metrics.css",
    "/api/metrics",
    "/api/metrics/prometheus",
    "/api/debug/pprof/profile?seconds=1",
    "/api/debug/pprof/profile?seconds=1&format=svg",
    "/no-such-route",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_the_token() {
    let e = exec().await;
    let (url, _stop) = admin(&e, AdminConfig::default()).await;
    let c = http();
    for path in GATED {
        let u = format!("{url}{path}");
        let attempts = [
            ("no header", c.get(&u)),
            ("wrong token", c.get(&u).bearer_auth("test-admin-tokem")),
            ("prefix of the token", c.get(&u).bearer_auth("test-admin")),
            ("token plus more", c.get(&u).bearer_auth(format!("{TOKEN}x"))),
            ("other scheme", c.get(&u).header("authorization", format!("Basic {TOKEN}"))),
            ("raw token as cookie", c.get(&u).header("cookie", format!("tracewire_admin={TOKEN}"))),
        ];
        for (what, request) in attempts {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}: {path}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"tracewire-admin\"", "{what}: {path}");
            assert!(r.bytes().await.unwrap().is_empty(), "{what}: {path}: no data without the token");
        }
    }
    // With it.
    for path in ["/metrics", "/metrics.js", "/metrics.css", "/api/metrics", "/api/metrics/prometheus"] {
        let r = c.get(format!("{url}{path}")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    let r = c.get(format!("{url}/no-such-route")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_session_cookie_for_browsers() {
    let e = exec().await;
    let (url, _stop) = admin(&e, AdminConfig::default()).await;
    let c = http();
    // The form itself holds no data.
    let form = c.get(format!("{url}/login")).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert!(form.text().await.unwrap().contains("name=\"token\""));
    let post = |token: &str| {
        c.post(format!("{url}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    let bad = post("nope").await.unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert!(bad.headers().get("set-cookie").is_none());
    let ok = post(TOKEN).await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()["location"], "/metrics");
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains(TOKEN), "the cookie does not carry the token: {cookie}");
    let pair = cookie.split(';').next().unwrap();
    let r = c.get(format!("{url}/api/metrics")).header("cookie", pair).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_json_and_prometheus() {
    let ex = exec().await;
    let p = ex.start(&["sh", "-c", "echo started; exec sleep 30"]).await;
    let mut config = AdminConfig::default();
    config.sample_interval = Duration::from_millis(200);
    let (url, _stop) = admin(&ex, config).await;
    let v = metrics_until(&url, Duration::from_secs(20), |v| {
        worker(v, p.pid).is_some_and(|w| w["cpu_percent"].is_number())
    })
    .await;
    let row = worker(&v, p.pid).unwrap();
    assert_eq!(row["argv"], serde_json::json!(["sh", "-c", "echo started; exec sleep 30"]));
    assert_eq!(row["state"], "running");
    assert_eq!(row["process_id"], p.process_id);
    assert!(row["rss_bytes"].as_u64().is_some_and(|r| r > 0), "{row}");
    assert!(row["started_unix_ms"].as_i64().is_some_and(|t| t > 1_600_000_000_000), "{row}");
    assert_eq!(row["zombie"], false);
    // `exec sleep` replaced the shell: a tree of one process, the worker itself.
    assert_eq!(row["descendants"], 0, "{row}");
    assert!(row["tree_rss_bytes"].as_u64().is_some_and(|r| r > 0), "{row}");
    assert!(row["tree_cpu_percent"].is_number(), "{row}");
    let srv = &v["server"];
    assert_eq!(srv["pid"], std::process::id());
    assert_eq!(
        (srv["connections"].as_u64(), srv["subscribers"].as_u64(), srv["processes"].as_u64()),
        (Some(1), Some(1), Some(1))
    );
    assert!(srv["rss_bytes"].as_u64().is_some_and(|r| r > 0));
    assert!(srv["tokio_tasks_alive"].as_u64().is_some_and(|n| n > 0));
    assert!(srv["dropped_spans"].is_null() && srv["store_backlog"].is_null(), "not configured: null, not 0");
    assert!(v["sample"].as_u64().is_some_and(|n| n >= 2));

    let text = http()
        .get(format!("{url}/api/metrics/prometheus"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# TYPE tracewire_exec_server_connections gauge\ntracewire_exec_server_connections 1\n"),
        "{text}"
    );
    let labels = format!("{{process_id=\"{}\",pid=\"{}\",command=\"sh\"}}", p.process_id, p.pid);
    for name in [
        "cpu_percent",
        "resident_memory_bytes",
        "tree_cpu_percent",
        "tree_resident_memory_bytes",
        "descendants",
        "idle_seconds",
        "start_time_seconds",
        "zombie",
    ] {
        assert!(text.contains(&format!("tracewire_exec_worker_{name}{labels} ")), "{name}: {text}");
    }
    assert!(text.contains(&format!("tracewire_exec_worker_descendants{labels} 0\n")), "{text}");
    // Every sample line is NAME[{LABELS}] VALUE with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        value.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {line}"));
    }
    assert!(!text.contains("store_backlog"), "unknown figures are left out");
    ex.client.kill(p.process_id).await.unwrap();
}

#[tokio::test]
async fn refuses_to_start_without_a_token() {
    for addr in ["0.0.0.0:0", "127.0.0.1:0"] {
        let err = AdminServer::bind(addr.parse().unwrap(), None).await.unwrap_err();
        assert!(matches!(err, AdminError::TokenRequired { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("without a token"), "{msg}");
        assert_eq!(msg.contains("reachable from other machines"), addr.starts_with("0.0.0.0"), "{msg}");
    }
    assert!(matches!(Token::new("\n"), Err(AdminError::EmptyToken)));
}

/// Whether this process catches SIGPROF now (`SigCgt` in `/proc/self/status`): pprof
/// installs its handler when a profile starts and sets SIGPROF to ignored when it stops.
fn profiler_running() -> bool {
    let bit = 1u64 << (nix::sys::signal::Signal::SIGPROF as u32 - 1);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caught = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).map(str::trim).unwrap();
    u64::from_str_radix(caught, 16).unwrap() & bit != 0
}

/// Burns CPU on this thread (the profiled process is this test) until `stop`.
fn spin(stop: &std::sync::atomic::AtomicBool) -> u64 {
    let mut x = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i);
        }
        std::hint::black_box(x);
    }
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_one_at_a_time() {
    use pprof::protos::Message;
    let e = exec().await;
    let (url, _stop) = admin(&e, AdminConfig::default()).await;
    let c = http();
    for bad in ["seconds=0", "seconds=61", "seconds=abc", "seconds=-1", "seconds=2&format=png"] {
        let r = c.get(format!("{url}/api/debug/pprof/profile?{bad}")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let burner = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || spin(&stop))
    };
    assert!(!profiler_running(), "no profile runs yet");
    let first = tokio::spawn(c.get(format!("{url}/api/debug/pprof/profile?seconds=3")).bearer_auth(TOKEN).send());
    // Once the first profile runs (it holds the slot from before the profiler starts until
    // after it stops), a second one is refused.
    eventually_async(Duration::from_secs(10), || async { profiler_running() }).await.expect("the first profile starts");
    let second = c.get(format!("{url}/api/debug/pprof/profile?seconds=1")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::CONFLICT);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["content-type"], "application/octet-stream");
    let body = first.bytes().await.unwrap();
    let profile = pprof::protos::Profile::decode(body.as_ref()).unwrap();
    assert!(!profile.sample.is_empty(), "no samples");
    assert!(!profile.function.is_empty() && !profile.location.is_empty(), "no functions");
    assert!(profile.duration_nanos >= 2_900_000_000, "{}", profile.duration_nanos);
    let names: Vec<&str> = profile
        .function
        .iter()
        .filter_map(|f| profile.string_table.get(usize::try_from(f.name).ok()?))
        .map(String::as_str)
        .collect();
    assert!(names.iter().any(|n| n.contains("spin")), "the busy function is in the profile");

    // Released: the next one runs, as a flame graph.
    let svg =
        c.get(format!("{url}/api/debug/pprof/profile?seconds=1&format=svg")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(svg.status(), StatusCode::OK);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let text = svg.text().await.unwrap();
    assert!(text.contains("<svg"), "{}", &text[..text.len().min(200)]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    burner.join().unwrap();
}
