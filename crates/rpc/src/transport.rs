//! The transport interface: a [`Link`] carries encoded envelopes both ways.

use bytes::Bytes;
use tokio::sync::mpsc;

/// One bidirectional connection carrying encoded envelopes: frames to send, frames
/// received. Both channels are bounded, so a slow peer applies backpressure instead of
/// growing memory.
///
/// The two directions end apart: dropping `tx` says "nothing more from me" (a half-close;
/// the peer may go on sending), while dropping `rx` says "I am gone" (a transport closes
/// the connection or resets the stream). A transport ends `rx` when the peer half-closed
/// or left, and closes `tx`'s receiving side when the peer left.
#[derive(Debug)]
pub struct Link {
    /// Frames to the peer.
    pub tx: mpsc::Sender<Bytes>,
    /// Frames from the peer; `None` once the peer sends no more.
    pub rx: mpsc::Receiver<Bytes>,
}

/// A transport: anything that yields a [`Link`] (gRPC streams, relay sessions, in-memory
/// pairs). The RPC layer sees nothing else of it.
pub trait Transport {
    /// The connection as a link.
    fn into_link(self) -> Link;
}

impl Transport for Link {
    fn into_link(self) -> Link {
        self
    }
}

/// Two connected in-memory links (each channel holds `capacity` frames).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (mut a, mut b) = tracewire_rpc::link_pair(4);
/// a.tx.send(bytes::Bytes::from_static(b"hi")).await.unwrap();
/// assert_eq!(b.rx.recv().await.unwrap(), "hi");
/// # });
/// ```
pub fn link_pair(capacity: usize) -> (Link, Link) {
    let (a_tx, b_rx) = mpsc::channel(capacity.max(1));
    let (b_tx, a_rx) = mpsc::channel(capacity.max(1));
    (Link { tx: a_tx, rx: a_rx }, Link { tx: b_tx, rx: b_rx })
}
