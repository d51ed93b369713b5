//! The dashboard in headless chromium: it renders a row per worker with its own and its
//! process tree's figures, highlights busy and zombie workers, and refreshes from
//! /api/metrics.
//!
//! Chromium cannot add an `Authorization` header to a page load by itself, so it goes
//! through a loopback proxy (test-only, below) that adds the header to every request it
//! forwards — as an authenticating reverse proxy would in front of the admin listener.
//!
//! The page is what is tested here, not the measurement (`monitor.rs` checks real CPU%):
//! the sampler pins the busy loop at 100 % so that chromium competing for the cores
//! cannot change which row is highlighted.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;
use tracewire_admin::{AdminConfig, Monitor, ProcessReading, ProcessSampler, Sample, SysinfoSampler};
use tracewire_testkit::TempDir;
use tracewire_testkit::browser::{dump_dom, pixel_stats, screenshot};

use common::{TOKEN, admin_with, exec, http, metrics_until, worker};

/// Real readings, except that `busy` used one core since `t0`.
struct Pinned {
    real: SysinfoSampler,
    t0: Instant,
    busy: u32,
}

impl ProcessSampler for Pinned {
    fn sample(&mut self, pids: &[u32]) -> Sample {
        let mut sample = self.real.sample(pids);
        let rss = sample.processes.get(&self.busy).map_or(1 << 20, |r| r.rss_bytes);
        sample.processes.insert(self.busy, ProcessReading::new(sample.at - self.t0, rss));
        sample
    }
}

async fn forward(State(upstream): State<String>, request: Request) -> Response {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let r = http().get(format!("{upstream}{path}")).bearer_auth(TOKEN).send().await.unwrap();
    let mut out = Response::builder().status(r.status());
    for name in ["content-type", "content-security-policy", "cache-control"] {
        if let Some(v) = r.headers().get(name) {
            out = out.header(name, v);
        }
    }
    out.body(Body::from(r.bytes().await.unwrap())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_renders_rows_refreshes_and_is_not_blank() {
    let e = exec().await;
    let busy = e.start(&["sh", "-c", "while :; do :; done"]).await;
    let sleeper = e.start(&["sleep", "30"]).await;
    let talker = e.start(&["sh", "-c", "while :; do echo '<b>tick</b>'; sleep 0.1; done"]).await;
    // A worker with one child, `cat`, which ends when the worker's stdin is closed.
    let parent = e.start(&["sh", "-c", "cat >/dev/null; :"]).await;
    let mut config = AdminConfig::default();
    config.sample_interval = Duration::from_millis(500);
    config.reap_ttl = Duration::from_secs(1);
    let sampler = Pinned { real: SysinfoSampler::new(), t0: Instant::now(), busy: busy.pid };
    let (upstream, _stop) = admin_with(Monitor::with_sampler(Arc::clone(&e.server), config, sampler)).await;
    // Wait until the monitor sees the busy loop busy and the sleeper idle past the TTL.
    metrics_until(&upstream, Duration::from_secs(30), |v| {
        worker(v, busy.pid).is_some_and(|w| w["busy"] == true)
            && worker(v, sleeper.pid).is_some_and(|w| w["zombie"] == true)
            && worker(v, parent.pid).is_some_and(|w| w["descendants"] == 1)
    })
    .await;

    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page = format!("http://{}/metrics", proxy.local_addr().unwrap());
    let app = axum::Router::new().fallback(forward).with_state(upstream.clone());
    tokio::spawn(async move { axum::serve(proxy, app).await.unwrap() });

    // 2.5 s of virtual time: the load's fetch, then one 2 s refresh.
    let dom = {
        let page = page.clone();
        tokio::task::spawn_blocking(move || dump_dom(&page, 2500)).await.unwrap().unwrap()
    };
    assert!(dom.contains(r#"<span id="refreshes">2</span>"#), "one refresh after the first load: {dom}");
    let row = |pid: u32| {
        let start = dom.find(&format!(r#"data-pid="{pid}""#)).unwrap_or_else(|| panic!("no row for {pid}: {dom}"));
        let open = dom[..start].rfind("<tr").unwrap();
        let end = start + dom[start..].find("</tr>").unwrap();
        dom[open..end].to_owned()
    };
    let (b, s, t) = (row(busy.pid), row(sleeper.pid), row(talker.pid));
    let with_child = row(parent.pid);
    assert!(b.contains(r#"class="busy zombie""#) && b.contains("while :; do :; done"), "{b}");
    assert!(s.contains(r#"class="zombie""#) && s.contains("zombie (idle past ttl)"), "{s}");
    assert!(t.contains(r#"<tr data-pid=""#) && !t.contains("zombie") && !t.contains("chip busy"), "{t}");
    // argv is shown as text, never parsed as markup.
    assert!(t.contains("&lt;b&gt;tick&lt;/b&gt;"), "{t}");
    assert!(!dom.contains("not signed in"), "{dom}");
    // The process-tree columns: the parent's `cat` is its one descendant.
    assert!(
        dom.contains(
            "<th class=\"num\" title=\"the worker, its descendants and the children they reaped\">tree CPU %</th>"
        ),
        "{dom}"
    );
    assert!(with_child.contains(r#"<td class="num descendants">1</td>"#), "{with_child}");
    assert!(s.contains(r#"<td class="num descendants">0</td>"#), "{s}");
    assert!(b.contains(r#"<td class="num tree-cpu">"#) && b.contains(r#"<td class="num tree-rss">"#), "{b}");

    let dir = TempDir::new("tw-admin-shot").unwrap();
    let png = dir.path().join("dashboard.png");
    {
        let (page, png) = (page.clone(), png.clone());
        tokio::task::spawn_blocking(move || screenshot(&page, &png, 1200, 700, 2500)).await.unwrap().unwrap();
    }
    let stats = pixel_stats(&png).unwrap();
    assert_eq!(stats.size, (1200, 700));
    assert!(stats.ink > 0.01 && stats.colours > 10, "the dashboard is blank: {stats:?}");
    if let Some(keep) = std::env::var_os("TRACEWIRE_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    for p in [busy, sleeper, talker] {
        e.client.kill(p.process_id).await.unwrap();
    }
    e.client.close_stdin(parent.process_id).await.unwrap();
    parent.wait_with_output().await.unwrap();
}
