//! The first bytes of an accepted connection, read before TLS sees them:
//! a plaintext meshwire peer is told in its own framing why it is refused
//! (a TLS alert would mean nothing to it), and anything else that is not a
//! TLS handshake is dropped without a TLS round trip.
//!
//! Our own small type, because what is needed is "read a few bytes, then
//! hand the stream on with those bytes put back": tokio's `chain` gives a
//! reader only, and rustls needs the writer too.

use meshwire_proto::wire::{Close, CloseCode, Frame, MAGIC};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Bytes needed to tell a TLS record from a meshwire `Hello` frame: the
/// frame's 4-byte length, its type byte and the 4 magic bytes.
pub(crate) const SNIFF_LEN: usize = 9;

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// A TLS handshake record.
    Tls,
    /// A plaintext meshwire `Hello`.
    PlainMeshwire,
    /// Something else (described for the log).
    Other(String),
}

/// Classifies the first [`SNIFF_LEN`] bytes of a connection.
pub(crate) fn classify(head: &[u8; SNIFF_LEN]) -> Opening {
    // TLS: handshake record (22), protocol version major 3.
    if head[0] == 0x16 && head[1] == 0x03 {
        return Opening::Tls;
    }
    if head[4] == 0x01 && head[5..9] == MAGIC {
        return Opening::PlainMeshwire;
    }
    let printable = head.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    Opening::Other(if printable {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        format!("bytes {head:02x?}")
    })
}

/// Reads the opening bytes of `io`; the stream is handed back with them
/// put back in front.
pub(crate) async fn read_opening<S>(mut io: S) -> io::Result<(Opening, Rewound<S>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = [0u8; SNIFF_LEN];
    io.read_exact(&mut head).await?;
    Ok((
        classify(&head),
        Rewound {
            head,
            pos: 0,
            inner: io,
        },
    ))
}

/// Tells a plaintext meshwire peer, in its framing, that this node runs
/// TLS; best effort, as the connection is dropped next.
pub(crate) async fn refuse_plaintext<S: AsyncWrite + Unpin>(io: &mut S) {
    let mut buf = bytes::BytesMut::new();
    Frame::Close(Close {
        code: CloseCode::Refused,
        reason: "this node requires TLS, and this link is plaintext: drop --insecure \
                 (and give --key/--trust) to talk to it"
            .to_owned(),
    })
    .encode(&mut buf);
    let _ = io.write_all(&buf).await;
    let _ = io.shutdown().await;
}

/// A stream whose first bytes were read ahead and are replayed before the
/// rest.
#[derive(Debug)]
pub struct Rewound<S> {
    head: [u8; SNIFF_LEN],
    pos: usize,
    inner: S,
}

impl<S> Rewound<S> {
    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.pos < SNIFF_LEN {
            let n = (SNIFF_LEN - me.pos).min(buf.remaining());
            buf.put_slice(&me.head[me.pos..me.pos + n]);
            me.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings_are_told_apart() {
        let tls = [0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0];
        assert_eq!(classify(&tls), Opening::Tls);
        let hello = [0, 0, 0, 40, 0x01, b'M', b'W', b'I', b'R'];
        assert_eq!(classify(&hello), Opening::PlainMeshwire);
        assert!(matches!(classify(b"GET / HTT"), Opening::Other(s) if s.contains("GET")));
    }

    #[tokio::test]
    async fn the_opening_is_replayed_before_the_rest() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"\x16\x03\x01hello world").await.unwrap();
        drop(a);
        let (opening, mut rest) = read_opening(b).await.unwrap();
        assert_eq!(opening, Opening::Tls);
        let mut all = Vec::new();
        rest.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"\x16\x03\x01hello world");
    }
}
