//! The HTTP/2 settings both sides of a relay connection announce, read off the wire: large
//! frames (a 60 KiB record crosses as one DATA frame) and large flow-control windows.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracewire_relay::{Keypair, RelayConfig, RelayEndpoint, RelayServer};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const ACK: u8 = 0x1;
const INITIAL_WINDOW_SIZE: u16 = 0x4;
const MAX_FRAME_SIZE: u16 = 0x5;

/// Reads frames until the peer's own (non-ACK) SETTINGS frame; returns its parameters.
async fn settings_of(stream: &mut TcpStream) -> Vec<(u16, u32)> {
    loop {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await.unwrap();
        let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        if header[3] == SETTINGS && header[4] & ACK == 0 {
            return payload
                .chunks_exact(6)
                .map(|p| (u16::from_be_bytes([p[0], p[1]]), u32::from_be_bytes([p[2], p[3], p[4], p[5]])))
                .collect();
        }
    }
}

fn value(settings: &[(u16, u32)], id: u16) -> Option<u32> {
    settings.iter().rev().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_server_accepts_frames_of_a_whole_record() {
    let (listener, addr) = RelayServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(RelayServer::new(RelayConfig::default()).serve(listener, async {
        let _ = stopped.await;
    }));
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).await.unwrap();
    let settings = settings_of(&mut stream).await;
    assert_eq!(value(&settings, MAX_FRAME_SIZE), Some(256 << 10), "{settings:?}");
    assert_eq!(value(&settings, INITIAL_WINDOW_SIZE), Some(8 << 20), "{settings:?}");
    let _ = stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_accepts_frames_of_a_whole_record() {
    // A stand-in relay that only reads what the end announces.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ep = RelayEndpoint::new(listener.local_addr().unwrap().to_string(), "settings");
    let key = Keypair::generate().unwrap().public;
    let end = tokio::spawn(async move { tracewire_relay::connect(&ep, &key).await.map(|_| ()) });
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut preface = [0u8; PREFACE.len()];
    stream.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface[..], PREFACE);
    let settings = settings_of(&mut stream).await;
    assert_eq!(value(&settings, MAX_FRAME_SIZE), Some(256 << 10), "{settings:?}");
    assert_eq!(value(&settings, INITIAL_WINDOW_SIZE), Some(8 << 20), "{settings:?}");
    drop(stream);
    drop(listener);
    // Without a relay behind it, the end fails with a typed transport error.
    assert!(matches!(end.await.unwrap(), Err(tracewire_relay::RelayError::Transport(_))));
}
