//! A client's half-close is "no more requests", not "I am gone": the connection finishes
//! its work and delivers it, then ends (gRPC status OK). Only the client going away (a
//! reset, a dropped call, a lost connection) cancels. Checked with the generated tonic
//! client of `tracewire.v1.Exec` (raw frames, none of this crate's client code) and over
//! in-memory links.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::watch;
use tracewire_context::TraceCarrier;
use tracewire_proto::Frame;
use tracewire_proto::exec_service::exec_client::ExecClient;
use tracewire_proto::v1::{
    Ack, Envelope, Exited, Kill, Notification, Output, Request, Response, envelope::Body, exited, notification,
    request::Method, response,
};
use tracewire_rpc::grpc::{Address, BoundServer};
use tracewire_rpc::{Connection, Handler, RpcError, ServerConfig, link_pair, serve};

/// Each request starts a piece of work that, after `delay`, pushes an Output `out` and
/// an Exited, as a process would. `finish` waits for the work; `disconnected` cancels it.
struct Work {
    delay: Duration,
    /// Every piece of work holds a receiver until its Exited is queued.
    pending: watch::Sender<()>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    finished: AtomicBool,
    disconnected: AtomicBool,
}

impl Work {
    fn new(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            delay,
            pending: watch::Sender::new(()),
            tasks: Mutex::default(),
            finished: AtomicBool::new(false),
            disconnected: AtomicBool::new(false),
        })
    }
}

fn note(event: notification::Event) -> Notification {
    Notification { event: Some(event) }
}

impl Handler for Work {
    async fn handle(&self, _r: Request, conn: &Connection) -> Result<Response, RpcError> {
        let (conn, held, delay) = (conn.clone(), self.pending.subscribe(), self.delay);
        let task = tokio::spawn(async move {
            let _held = held;
            tokio::time::sleep(delay).await;
            let out = Output { process_id: 1, data: Bytes::from_static(b"out"), ..Output::default() };
            conn.notify(note(notification::Event::Output(out)), TraceCarrier::default()).await?;
            let exited = Exited { process_id: 1, status: Some(exited::Status::Code(0)), duration_us: 0 };
            conn.notify(note(notification::Event::Exited(exited)), TraceCarrier::default()).await
        });
        self.tasks.lock().unwrap().push(task.abort_handle());
        Ok(Response { result: Some(response::Result::Ack(Ack {})) })
    }

    async fn finish(&self, _conn: &Connection) {
        self.pending.closed().await;
        self.finished.store(true, Ordering::SeqCst);
    }

    fn disconnected(&self, _conn: &Connection) {
        self.disconnected.store(true, Ordering::SeqCst);
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

fn request(id: u64) -> Bytes {
    let method = Some(Method::Kill(Kill { process_id: 1 }));
    Bytes::from(Envelope { id, body: Some(Body::Request(Request { method })), ..Envelope::default() }.encode_to_vec())
}

/// What an envelope is, in a word: `Ack`, `Output:<data>`, `Exited:<code>`.
fn describe(frame: &[u8]) -> String {
    match Envelope::decode(frame).unwrap().body {
        Some(Body::Response(Response { result: Some(response::Result::Ack(_)) })) => "Ack".into(),
        Some(Body::Notification(Notification { event: Some(notification::Event::Output(o)) })) => {
            format!("Output:{}", String::from_utf8_lossy(&o.data))
        }
        Some(Body::Notification(Notification { event: Some(notification::Event::Exited(e)) })) => {
            format!("Exited:{:?}", e.status)
        }
        other => format!("{other:?}"),
    }
}

const DONE: [&str; 3] = ["Ack", "Output:out", "Exited:Some(Code(0))"];

async fn grpc_server(handler: &Arc<Work>) -> String {
    let bound = BoundServer::bind(&"127.0.0.1:0".parse::<Address>().unwrap()).await.unwrap();
    let address = bound.local_address().to_string();
    let handler = Arc::clone(handler);
    tokio::spawn(async move { bound.run(handler, ServerConfig::default(), std::future::pending()).await });
    address
}

async fn generated_client(address: &str) -> ExecClient<tonic::transport::Channel> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    ExecClient::new(channel)
}

async fn wait_until(what: &str, deadline: Duration, cond: impl Fn() -> bool) {
    tracewire_testkit::eventually_async(deadline, || std::future::ready(cond()))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// gRPC (the HTTP/2 END_STREAM of the request side) ends the client's messages; the
/// server still owes it the responses of a bidirectional stream, then the status
/// (gRPC over HTTP/2, "Responses": trailers end the response stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_grpc_stream_gets_its_work_then_ends_with_status_ok() {
    let handler = Work::new(Duration::from_millis(200));
    let address = grpc_server(&handler).await;
    let mut client = generated_client(&address).await;
    // The request stream ends after its one message: the half-close.
    let requests = tokio_stream::iter(vec![Frame(request(1))]);
    let mut responses = client.connect(requests).await.unwrap().into_inner();
    let mut got = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), responses.message()).await.expect("the stream ends");
        match next {
            Ok(Some(frame)) => got.push(describe(&frame.0)),
            Ok(None) => break, // trailers with grpc-status 0
            Err(status) => panic!("the stream ended with {status:?} after {got:?}"),
        }
    }
    assert_eq!(got, DONE);
    assert!(handler.finished.load(Ordering::SeqCst), "the work was finished, not cancelled");
    wait_until("disconnected after finishing", Duration::from_secs(5), || handler.disconnected.load(Ordering::SeqCst))
        .await;
}

/// The client drops the call, both its halves (tonic resets the stream): the server
/// cancels the connection's work at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_grpc_call_cancels_its_work() {
    let handler = Work::new(Duration::from_secs(30));
    let address = grpc_server(&handler).await;
    let mut client = generated_client(&address).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(4);
    tx.send(Frame(request(1))).await.unwrap();
    let mut responses = client.connect(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let ack = tokio::time::timeout(Duration::from_secs(10), responses.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(describe(&ack.0), "Ack");
    drop(responses);
    drop(tx);
    wait_until("cancelled after the reset", Duration::from_secs(5), || handler.disconnected.load(Ordering::SeqCst))
        .await;
    assert!(!handler.finished.load(Ordering::SeqCst));
}

/// A TCP proxy to `target` that can be cut: both sockets closed at once.
async fn cuttable_proxy(target: String) -> (String, tokio::task::AbortHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut inbound, _) = listener.accept().await.unwrap();
        let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    (address, task.abort_handle())
}

/// The connection is lost while the client's request side is still open (the server's
/// stream of requests ends with an error, not a clean end): cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_grpc_connection_cancels_its_work() {
    let handler = Work::new(Duration::from_secs(30));
    let address = grpc_server(&handler).await;
    let (proxy, cut) = cuttable_proxy(address).await;
    let mut client = generated_client(&proxy).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(4);
    tx.send(Frame(request(1))).await.unwrap();
    let mut responses = client.connect(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let ack = tokio::time::timeout(Duration::from_secs(10), responses.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(describe(&ack.0), "Ack");
    cut.abort();
    wait_until("cancelled after the disconnect", Duration::from_secs(5), || {
        handler.disconnected.load(Ordering::SeqCst)
    })
    .await;
    assert!(!handler.finished.load(Ordering::SeqCst));
    drop((tx, responses));
}

/// Half-closed first, then the call is dropped: that still cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_half_closed_grpc_call_cancels_its_work() {
    let handler = Work::new(Duration::from_secs(30));
    let address = grpc_server(&handler).await;
    let mut client = generated_client(&address).await;
    let mut responses = client.connect(tokio_stream::iter(vec![Frame(request(1))])).await.unwrap().into_inner();
    let ack = tokio::time::timeout(Duration::from_secs(10), responses.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(describe(&ack.0), "Ack");
    // Half-closed and still served: nothing is cancelled yet.
    tokio::task::yield_now().await;
    assert!(!handler.disconnected.load(Ordering::SeqCst));
    drop(responses);
    wait_until("cancelled after the reset", Duration::from_secs(5), || handler.disconnected.load(Ordering::SeqCst))
        .await;
    assert!(!handler.finished.load(Ordering::SeqCst));
}

async fn collect(rx: &mut tokio::sync::mpsc::Receiver<Bytes>) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("the link ends") {
        got.push(describe(&frame));
    }
    got
}

/// Any transport: the end of the incoming frames is a half-close, and `serve` returns
/// once the work is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_link_gets_its_work_then_closes() {
    let handler = Work::new(Duration::from_millis(100));
    let (mut client, server) = link_pair(16);
    let served = tokio::spawn(serve(server, Arc::clone(&handler), ServerConfig::default()));
    client.tx.send(request(1)).await.unwrap();
    client.tx.send(request(2)).await.unwrap();
    drop(client.tx);
    let got = collect(&mut client.rx).await;
    assert_eq!(got.iter().filter(|e| *e == "Ack").count(), 2, "{got:?}");
    assert_eq!(got.iter().filter(|e| *e == "Output:out").count(), 2, "{got:?}");
    assert_eq!(got.iter().filter(|e| e.starts_with("Exited")).count(), 2, "{got:?}");
    tokio::time::timeout(Duration::from_secs(5), served).await.expect("serve returns").unwrap();
    assert!(handler.finished.load(Ordering::SeqCst) && handler.disconnected.load(Ordering::SeqCst));
}

/// Any transport: the peer dropping its receiving side is the peer going away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_peer_stops_receiving_is_cancelled() {
    let handler = Work::new(Duration::from_secs(30));
    let (mut client, server) = link_pair(16);
    let served = tokio::spawn(serve(server, Arc::clone(&handler), ServerConfig::default()));
    client.tx.send(request(1)).await.unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(10), client.rx.recv()).await.unwrap().unwrap();
    assert_eq!(describe(&ack), "Ack");
    drop(client.rx);
    tokio::time::timeout(Duration::from_secs(5), served).await.expect("serve returns").unwrap();
    assert!(handler.disconnected.load(Ordering::SeqCst) && !handler.finished.load(Ordering::SeqCst));
    drop(client.tx);
}
