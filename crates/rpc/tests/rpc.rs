//! The RPC layer over in-memory links: timeouts, closing, bounded in-flight calls,
//! notifications, missing trace carriers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tracewire_context::TraceCarrier;
use tracewire_proto::v1::{
    Ack, Envelope, Kill, Notification, Output, Request, Response, envelope::Body, notification, request::Method,
    response,
};
use tracewire_rpc::{Client, ClientConfig, Connection, Handler, RpcError, ServerConfig, link_pair, serve};

/// Answers after `delay`, counting how many requests run at once.
struct Slow {
    delay: Duration,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Handler for Slow {
    async fn handle(&self, _r: Request, conn: &Connection) -> Result<Response, RpcError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_running.fetch_max(now, Ordering::SeqCst);
        let out = Output { process_id: 1, data: Bytes::from_static(b"x"), ..Output::default() };
        conn.notify(Notification { event: Some(notification::Event::Output(out)) }, TraceCarrier::default()).await?;
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(Response { result: Some(response::Result::Ack(Ack {})) })
    }
}

fn kill() -> Request {
    Request { method: Some(Method::Kill(Kill { process_id: 1 })) }
}

fn slow(delay: Duration) -> Arc<Slow> {
    Arc::new(Slow { delay, running: AtomicUsize::new(0), max_running: AtomicUsize::new(0) })
}

#[tokio::test]
async fn a_call_times_out_and_the_client_keeps_working() {
    let (c, s) = link_pair(16);
    tokio::spawn(serve(s, slow(Duration::from_millis(300)), ServerConfig::default()));
    let client = Client::new(c, ClientConfig::default());
    let _notes = client.take_notifications();
    let err = client.call_with_timeout(kill(), Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(err, RpcError::Timeout(Duration::from_millis(50)));
    // The late response is dropped; the next call gets its own.
    assert!(matches!(client.call(kill()).await, Ok(response::Result::Ack(_))));
}

#[tokio::test]
async fn calls_in_flight_are_bounded() {
    let (c, s) = link_pair(64);
    let handler = slow(Duration::from_millis(50));
    let mut config = ServerConfig::default();
    config.workers = 16;
    tokio::spawn(serve(s, Arc::clone(&handler), config));
    let mut cc = ClientConfig::default();
    cc.max_in_flight = 3;
    let client = Client::new(c, cc);
    let mut notes = client.take_notifications().unwrap();
    tokio::spawn(async move { while notes.recv().await.is_some() {} });
    let calls: Vec<_> = (0..12)
        .map(|_| {
            tokio::spawn({
                let client = client.clone();
                async move { client.call(kill()).await }
            })
        })
        .collect();
    for c in calls {
        assert!(c.await.unwrap().is_ok());
    }
    assert_eq!(handler.max_running.load(Ordering::SeqCst), 3, "never more than max_in_flight at the server");
}

#[tokio::test]
async fn closing_the_connection_fails_pending_calls() {
    let (c, mut s) = link_pair(16);
    let client = Client::new(c, ClientConfig::default());
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(kill()).await }
    });
    // The "server" reads the request and hangs up without answering.
    let _req = s.rx.recv().await.unwrap();
    drop(s);
    assert_eq!(call.await.unwrap(), Err(RpcError::Closed));
    assert!(client.is_closed());
    assert_eq!(client.call(kill()).await, Err(RpcError::Closed));
}

#[tokio::test]
async fn notifications_are_pushed_with_their_context() {
    let (c, s) = link_pair(16);
    tokio::spawn(serve(s, slow(Duration::ZERO), ServerConfig::default()));
    let client = Client::new(c, ClientConfig::default());
    let mut notes = client.take_notifications().unwrap();
    assert!(client.take_notifications().is_none(), "one stream per client");
    client.call(kill()).await.unwrap();
    let env = notes.recv().await.unwrap().into_inner();
    assert!(matches!(env.body, Some(Body::Notification(_))));
    assert_eq!(env.id, 0);
}

#[tokio::test]
async fn a_request_without_trace_context_is_served_and_counted() {
    let (mut c, s) = link_pair(16);
    tokio::spawn(serve(s, slow(Duration::ZERO), ServerConfig::default()));
    let before = tracewire_telemetry::propagation_stats().missing;
    let env = Envelope { id: 9, trace: None, timing: None, body: Some(Body::Request(kill())) };
    c.tx.send(Bytes::from(env.encode_to_vec())).await.unwrap();
    loop {
        let reply = Envelope::decode(c.rx.recv().await.unwrap()).unwrap();
        if let Some(Body::Response(r)) = reply.body {
            assert_eq!(reply.id, 9);
            assert!(matches!(r.result, Some(response::Result::Ack(_))));
            let t = reply.timing.unwrap();
            assert!(t.server_recv_unix_nanos > 0 && t.server_send_unix_nanos >= t.server_recv_unix_nanos);
            break;
        }
    }
    assert!(tracewire_telemetry::propagation_stats().missing > before, "counted as a new root");
}

/// Holds every request until released; remembers its connections.
struct Gate {
    open: tokio::sync::Semaphore,
    conns: std::sync::Mutex<Vec<Connection>>,
    ended: AtomicUsize,
}

impl Handler for Gate {
    async fn handle(&self, _r: Request, _conn: &Connection) -> Result<Response, RpcError> {
        self.open.acquire().await.map_err(|_| RpcError::Closed)?.forget();
        Ok(Response { result: Some(response::Result::Ack(Ack {})) })
    }

    fn connected(&self, conn: &Connection) {
        self.conns.lock().unwrap().push(conn.clone());
    }

    fn disconnected(&self, conn: &Connection) {
        // A handler lets go of the connection here: the server waits for its writer,
        // which ends once every handle is dropped.
        self.conns.lock().unwrap().retain(|c| c.id() != conn.id());
        self.ended.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_announced_and_the_dispatch_queue_depth_is_visible() {
    let gate = Arc::new(Gate {
        open: tokio::sync::Semaphore::new(0),
        conns: std::sync::Mutex::default(),
        ended: AtomicUsize::new(0),
    });
    let (c, s) = link_pair(16);
    let mut config = ServerConfig::default();
    config.workers = 1;
    let served = tokio::spawn(serve(s, Arc::clone(&gate), config));
    let client = Client::new(c, ClientConfig::default());
    // Announced before any request.
    let conn = loop {
        if let Some(conn) = gate.conns.lock().unwrap().first().cloned() {
            break conn;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(conn.dispatch_queue_depth(), 0);
    // One request is with the single worker, three wait for it.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(kill()).await })
        })
        .collect();
    tracewire_testkit::eventually_async(Duration::from_secs(10), || {
        std::future::ready(conn.dispatch_queue_depth() == 3)
    })
    .await
    .unwrap_or_else(|e| panic!("dispatch queue depth {} (want 3): {e}", conn.dispatch_queue_depth()));
    gate.open.add_permits(4);
    for call in calls {
        assert!(matches!(call.await.unwrap(), Ok(response::Result::Ack(_))));
    }
    assert_eq!(conn.dispatch_queue_depth(), 0);
    drop(client);
    drop(conn);
    tokio::time::timeout(Duration::from_secs(10), served).await.expect("serve returns").unwrap();
    assert_eq!(gate.ended.load(Ordering::SeqCst), 1);
}
