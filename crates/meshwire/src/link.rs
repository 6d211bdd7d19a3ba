//! Connection I/O: one reader task and one writer task per connection.
//!
//! The engine never touches a socket. It encodes frames into a connection's
//! shared out-buffer (many frames, one buffer) and wakes the writer, which
//! takes the whole buffer and writes it with one `write_all`. The reader
//! reads as much as the socket has, decodes every complete frame in it, and
//! hands the batch to the engine in one message. Reads and writes are in
//! separate tasks so that two peers writing large batches at each other
//! cannot deadlock on full socket buffers.

use crate::abuse::admission::Opened;
use crate::transport::Stream;
use bytes::BytesMut;
use meshwire_proto::wire::{DecodeError, Decoder, Frame, Limits, NodeId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::Instrument;

/// Why a connection ended, as the reader saw it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("bad frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Messages from connection tasks to the engine.
pub(crate) enum LinkInput {
    New {
        conn: u64,
        out: Arc<Out>,
        remote: String,
        /// The address we dialled; `None` for an accepted connection.
        dialed: Option<String>,
        /// The peer's NodeId as TLS authenticated it (its key); `None` on a
        /// plaintext link. The MWIR handshake must name the same node.
        authenticated: Option<NodeId>,
        /// When it was opened (its handshake deadline counts from then),
        /// and an accepted one's admission ticket.
        opened: Opened,
    },
    Frames {
        conn: u64,
        frames: Vec<Frame>,
    },
    DialerStopped {
        addr: String,
    },
    /// A connection this node dialled failed before becoming a link.
    DialFailed {
        addr: String,
        reason: String,
    },
    Closed {
        conn: u64,
        error: Option<LinkError>,
    },
    Writable {
        conn: u64,
    },
}

/// The engine's handle on a connection's writing side.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) buf: Mutex<BytesMut>,
    notify: Notify,
    closing: AtomicBool,
    /// Set by the engine when it stopped filling `buf` (high water).
    pub(crate) engine_waiting: AtomicBool,
    stop_reading: Notify,
}

/// Above this many buffered bytes the engine stops encoding for a link
/// until the writer drains it.
pub(crate) const OUT_HIGH_WATER: usize = 1024 * 1024;

/// After the engine closes a connection, the writer has this long to get
/// what is buffered (the `Close` frame that says why) to a peer that does
/// not read; then the connection is dropped all the same, so that a peer
/// that stopped reading cannot hold a task, a socket and a buffer forever.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

impl Out {
    /// Appends with `f` and wakes the writer if anything was added.
    pub(crate) fn with_buf<R>(&self, f: impl FnOnce(&mut BytesMut) -> R) -> (R, usize) {
        let mut b = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let before = b.len();
        let r = f(&mut b);
        let after = b.len();
        drop(b);
        if after > before {
            self.notify.notify_one();
        }
        (r, after)
    }

    /// Writes what is buffered, then closes the connection.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.notify.notify_one();
        self.stop_reading.notify_one();
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }
}

/// Announces a new connection to the engine, then starts its reader and
/// writer tasks (in that order, so the engine knows the connection before
/// its first frames arrive). The receiver resolves when the connection is
/// gone. `None` when the engine has stopped.
pub(crate) async fn start(
    conn: u64,
    stream: Stream,
    limits: Limits,
    to_engine: mpsc::Sender<LinkInput>,
    dialed: Option<String>,
    authenticated: Option<NodeId>,
    opened: Opened,
) -> Option<oneshot::Receiver<()>> {
    let out = Arc::new(Out {
        buf: Mutex::new(BytesMut::with_capacity(64 * 1024)),
        notify: Notify::new(),
        closing: AtomicBool::new(false),
        engine_waiting: AtomicBool::new(false),
        stop_reading: Notify::new(),
    });
    let Stream {
        mut read,
        mut write,
        remote,
    } = stream;
    let span = tracing::debug_span!("link", conn, %remote);
    to_engine
        .send(LinkInput::New {
            conn,
            out: out.clone(),
            remote,
            dialed,
            authenticated,
            opened,
        })
        .await
        .ok()?;
    let (done_tx, done_rx) = oneshot::channel();

    let w_out = out.clone();
    let w_tx = to_engine.clone();
    tokio::spawn(async move {
        loop {
            let chunk = {
                let mut b = w_out.buf.lock().unwrap_or_else(|e| e.into_inner());
                if b.is_empty() {
                    None
                } else {
                    Some(b.split())
                }
            };
            match chunk {
                Some(chunk) => {
                    if let Err(e) = write_or_abandon(&mut write, &chunk, &w_out).await {
                        tracing::debug!(conn, error = %e, "write failed");
                        // The reader reports the close; make sure it stops.
                        w_out.stop_reading.notify_one();
                        break;
                    }
                    if w_out.engine_waiting.swap(false, Ordering::AcqRel)
                        && w_tx.send(LinkInput::Writable { conn }).await.is_err()
                    {
                        break;
                    }
                }
                None if w_out.is_closing() => break,
                None => w_out.notify.notified().await,
            }
        }
        let _ = write.shutdown().await;
    });

    let r_out = out.clone();
    tokio::spawn(
        async move {
            let mut decoder = Decoder::new(limits);
            let mut buf = BytesMut::with_capacity(64 * 1024);
            let error = loop {
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                let n = tokio::select! {
                    r = read.read_buf(&mut buf) => r,
                    _ = r_out.stop_reading.notified() => break None,
                };
                match n {
                    Ok(0) => break None,
                    Ok(_) => {}
                    Err(e) => break Some(LinkError::Io(e)),
                }
                let mut frames = Vec::new();
                let mut bad = None;
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break,
                        Err(e) => {
                            bad = Some(e);
                            break;
                        }
                    }
                }
                if !frames.is_empty()
                    && to_engine
                        .send(LinkInput::Frames { conn, frames })
                        .await
                        .is_err()
                {
                    return;
                }
                if let Some(e) = bad {
                    break Some(LinkError::Decode(e));
                }
            };
            // The engine closes the writer after queueing any Close frame (so
            // a peer that sent garbage is told why); if the engine is gone,
            // close it here.
            if to_engine
                .send(LinkInput::Closed { conn, error })
                .await
                .is_err()
            {
                r_out.close();
            }
            let _ = done_tx.send(());
        }
        .instrument(span),
    );
    Some(done_rx)
}

/// Writes `chunk`, unless the connection is closing and the peer has not
/// taken it within [`CLOSE_GRACE`].
async fn write_or_abandon<W: AsyncWrite + Unpin + ?Sized>(
    write: &mut W,
    chunk: &[u8],
    out: &Out,
) -> std::io::Result<()> {
    let written = write.write_all(chunk);
    tokio::pin!(written);
    loop {
        if out.is_closing() {
            return tokio::time::timeout(CLOSE_GRACE, written)
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer did not read what was left before the close",
                    ))
                });
        }
        tokio::select! {
            r = &mut written => return r,
            // A wake-up while writing: maybe the close. (A wake-up for more
            // data is not lost: the loop looks at the buffer after this.)
            _ = out.notify.notified() => {}
        }
    }
}
