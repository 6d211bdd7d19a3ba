//! A peer driven by hand, for hostile tests: TLS with the library's own
//! configurations, then MWIR frames written and read one at a time, so a
//! test can do what no well-behaved node does (flood pings, stop reading,
//! stall half-way through a handshake).
//!
//! Include it with `#[path = "support/raw_peer.rs"] mod raw_peer;`. Every
//! read is bounded by [`WAIT`].

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use bytes::{Bytes, BytesMut};
use meshwire::proto::wire::{
    Close, Decoder, Frame, Hello, LaneResume, Limits, NodeId, Resume, Role, Welcome,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use meshwire::security::tls::{self, rustls, ClientTlsStream};
use meshwire::security::{Identity, Trust, NAME_SUFFIX};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound on every wait here.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A TLS link to a node, spoken frame by frame.
pub(crate) struct RawPeer {
    pub(crate) tls: ClientTlsStream<TcpStream>,
    buf: BytesMut,
    decoder: Decoder,
}

impl RawPeer {
    /// TCP to `addr`, then TLS as `id`, trusting `trust`.
    pub(crate) async fn connect(addr: &str, id: &Identity, trust: &Trust) -> RawPeer {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Self::over(tcp, id, trust).await
    }

    /// TLS as `id` over a connected socket.
    pub(crate) async fn over(tcp: TcpStream, id: &Identity, trust: &Trust) -> RawPeer {
        let config = tls::client_config(id, trust, None).unwrap();
        let (tls, _) = tls::connect(&config, tcp, WAIT).await.unwrap();
        RawPeer {
            tls,
            buf: BytesMut::new(),
            decoder: Decoder::new(Limits::default()),
        }
    }

    /// The client half of the MWIR handshake as `node`: `Hello`, the
    /// router's `Welcome`, then a `Resume` for a fresh session.
    pub(crate) async fn attach(&mut self, node: NodeId) -> Result<Welcome, String> {
        self.send(&[hello(node)]).await;
        let welcome = match self.next().await? {
            Frame::Welcome(w) => w,
            other => return Err(format!("expected Welcome, got {other:?}")),
        };
        let fresh = LaneResume {
            recv_next: 1,
            send_base: 1,
        };
        self.send(&[Frame::Resume(Resume {
            epoch: 7,
            lanes: [fresh; 2],
        })])
        .await;
        Ok(welcome)
    }

    /// Writes `frames` in one write.
    pub(crate) async fn send(&mut self, frames: &[Frame]) {
        let mut out = BytesMut::new();
        for f in frames {
            f.encode(&mut out);
        }
        self.send_raw(&out).await;
    }

    /// Writes bytes as they are.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    /// The next frame, within [`WAIT`]; `Err` says how the link ended.
    pub(crate) async fn next(&mut self) -> Result<Frame, String> {
        let read = async {
            loop {
                match self.decoder.decode(&mut self.buf) {
                    Ok(Some(f)) => return Ok(f),
                    Ok(None) => {}
                    Err(e) => return Err(format!("undecodable: {e}")),
                }
                match self.tls.read_buf(&mut self.buf).await {
                    Ok(0) => return Err("EOF".to_owned()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| Err(format!("nothing within {WAIT:?}")))
    }

    /// Reads until a `Close` frame (returned) or the end of the link
    /// (`Err` says how it ended, and what came before).
    pub(crate) async fn until_close(&mut self) -> Result<Close, String> {
        let mut seen = Vec::new();
        loop {
            match self.next().await {
                Ok(Frame::Close(c)) => return Ok(c),
                Ok(f) => seen.push(f.name()),
                Err(e) => return Err(format!("{e} after {seen:?}")),
            }
        }
    }
}

/// A client `Hello` naming `node`.
pub(crate) fn hello(node: NodeId) -> Frame {
    Frame::Hello(Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        node,
        role: Role::Client,
        session: None,
        listen: None,
        max_frame: Limits::default().max_frame,
    })
}

/// The TLS records a client opens a handshake with (its ClientHello), as
/// `id` would send them.
pub(crate) fn client_hello(id: &Identity, trust: &Trust) -> Bytes {
    let config = tls::client_config(id, trust, None).unwrap();
    let name = rustls::pki_types::ServerName::try_from(NAME_SUFFIX).unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    Bytes::from(out)
}
