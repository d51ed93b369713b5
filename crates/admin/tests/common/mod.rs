//! An exec-server on a loopback port, its client, and an admin listener on another.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracewire_admin::{AdminConfig, AdminServer, Monitor, Token};
use tracewire_exec::{ExecClient, ExecConfig, ExecServer, RemoteProcess, Start};
use tracewire_rpc::ServerConfig;
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_testkit::eventually_some_async;

pub(crate) const TOKEN: &str = "test-admin-token";

/// Stops the servers it started when dropped.
pub(crate) struct Stop(Vec<tokio::sync::oneshot::Sender<()>>);

impl Drop for Stop {
    fn drop(&mut self) {
        for s in self.0.drain(..) {
            let _ = s.send(());
        }
    }
}

pub(crate) struct Exec {
    pub(crate) server: Arc<ExecServer>,
    pub(crate) client: ExecClient,
    _stop: Stop,
}

pub(crate) async fn exec() -> Exec {
    let bound = BoundServer::bind(&"127.0.0.1:0".parse::<Address>().unwrap()).await.unwrap();
    let address = bound.local_address().to_string();
    let server = Arc::new(ExecServer::new(ExecConfig::default()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = Arc::clone(&server);
    tokio::spawn(async move {
        bound
            .run(s, ServerConfig::default(), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let client = ExecClient::connect(&address).await.unwrap();
    Exec { server, client, _stop: Stop(vec![stop]) }
}

pub(crate) fn argv(args: &[&str]) -> Start {
    Start { argv: args.iter().map(|s| (*s).to_owned()).collect(), ..Start::default() }
}

impl Exec {
    pub(crate) async fn start(&self, args: &[&str]) -> RemoteProcess {
        self.client.start(argv(args)).await.unwrap()
    }
}

/// An admin listener for `exec` on 127.0.0.1:0; returns its base URL.
pub(crate) async fn admin(exec: &Exec, config: AdminConfig) -> (String, Stop) {
    admin_with(Monitor::new(Arc::clone(&exec.server), config)).await
}

/// An admin listener on 127.0.0.1:0 sampling with `monitor`; returns its base URL.
pub(crate) async fn admin_with(monitor: Monitor) -> (String, Stop) {
    let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), Some(Token::new(TOKEN).unwrap())).await.unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .serve(monitor, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, Stop(vec![stop]))
}

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// `GET /api/metrics` with the token, as JSON.
pub(crate) async fn metrics(url: &str) -> serde_json::Value {
    let body = http().get(format!("{url}/api/metrics")).bearer_auth(TOKEN).send().await.unwrap().bytes().await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Polls `/api/metrics` until `done` holds, failing after `limit` with the last metrics.
pub(crate) async fn metrics_until(
    url: &str,
    limit: Duration,
    done: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    // Shared with each look's future, which may not borrow the closure's state mutably.
    let (done, last) = (Mutex::new(done), Mutex::new(serde_json::Value::Null));
    let found = eventually_some_async(limit, || {
        let (done, last) = (&done, &last);
        async move {
            let v = metrics(url).await;
            if (done.lock().unwrap())(&v) {
                return Some(v);
            }
            *last.lock().unwrap() = v;
            None
        }
    })
    .await;
    found.unwrap_or_else(|e| panic!("{e}; last metrics: {:#}", last.lock().unwrap()))
}

/// The worker row of `pid` in a JSON metrics document.
pub(crate) fn worker(v: &serde_json::Value, pid: u32) -> Option<&serde_json::Value> {
    v["workers"].as_array()?.iter().find(|w| w["pid"] == pid)
}
