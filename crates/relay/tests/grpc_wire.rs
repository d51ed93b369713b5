//! The relay speaks gRPC itself (over hyper, without tonic's server): a stock tonic client
//! generated from `relay.proto` attaches to it, and frames cross it byte for byte, both
//! ways, whatever their size (on the client's virtual stream at the server's side); an
//! unknown method gets gRPC's UNIMPLEMENTED.

use bytes::Bytes;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracewire_proto::exec_service::exec_client::ExecClient;
use tracewire_proto::relay_service::relay_client::RelayClient;
use tracewire_proto::v1::{Data, Hello, RelayFrame, Role, relay_frame::Kind};
use tracewire_relay::{RelayConfig, RelayServer};

async fn start() -> (Channel, tokio::sync::oneshot::Sender<()>) {
    let (listener, addr) = RelayServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(RelayServer::new(RelayConfig::default()).serve(listener, async {
        let _ = stopped.await;
    }));
    let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    (channel, stop)
}

type Attached = (tokio::sync::mpsc::Sender<RelayFrame>, tonic::Streaming<RelayFrame>);

async fn attach(channel: &Channel, session: &str, role: Role) -> Attached {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let hello = Hello { session_id: session.into(), role: role.into(), attach_token: String::new() };
    tx.send(RelayFrame { kind: Some(Kind::Hello(hello)), stream: 0 }).await.unwrap();
    let mut client = RelayClient::new(channel.clone()).max_decoding_message_size(1 << 20);
    let inbound = client.attach(ReceiverStream::new(rx)).await.unwrap().into_inner();
    (tx, inbound)
}

fn data(seq: u64, len: usize, last_fragment: bool, traceparent: &str) -> RelayFrame {
    let record: Vec<u8> = (0..len).map(|i| u8::try_from((i * 7 + 3) % 256).unwrap()).collect();
    RelayFrame {
        kind: Some(Kind::Data(Data {
            seq,
            record: Bytes::from(record),
            last_fragment,
            traceparent: traceparent.into(),
        })),
        stream: 0,
    }
}

/// The next frame that is not a heartbeat.
async fn next(inbound: &mut tonic::Streaming<RelayFrame>) -> RelayFrame {
    loop {
        let f = inbound.next().await.unwrap().unwrap();
        if !matches!(f.kind, Some(Kind::Heartbeat(_))) {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_attaches_and_frames_cross_intact_both_ways() {
    let (channel, stop) = start().await;
    let (server_tx, mut server_rx) = attach(&channel, "interop", Role::Server).await;
    let (client_tx, mut client_rx) = attach(&channel, "interop", Role::Client).await;
    let frames = [
        data(0, 1, false, ""),
        data(1, 61_456, true, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        data(2, 0, true, ""),
        data(3, 200_000, false, "x"),
    ];
    let mut stream = None;
    for f in &frames {
        client_tx.send(f.clone()).await.unwrap();
        // The server receives the client's frames on the client's virtual stream...
        let got = next(&mut server_rx).await;
        assert_ne!(got.stream, 0, "a client's frame reaches the server tagged with its stream");
        assert_eq!(*stream.get_or_insert(got.stream), got.stream, "one stream per client");
        assert_eq!(&RelayFrame { stream: 0, ..got.clone() }, f);
        // ...and answers on it; the client sees the frame as the server sent it, untagged.
        server_tx.send(RelayFrame { stream: got.stream, ..f.clone() }).await.unwrap();
        assert_eq!(&next(&mut client_rx).await, f);
    }
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_method_is_unimplemented() {
    let (channel, stop) = start().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<tracewire_proto::Frame>(1);
    drop(tx);
    let status = ExecClient::new(channel).connect(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    let _ = stop.send(());
}
