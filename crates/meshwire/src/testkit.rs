//! Tools for testing systems built on meshwire (and meshwire itself).
//!
//! [`CutProxy`] is a TCP proxy that can reset every connection through it
//! on demand: put one in front of a node, point peers at the proxy, and
//! call [`CutProxy::cut`] to simulate a network failure mid-stream. The
//! `demo` command and the process tests use it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy on 127.0.0.1 whose connections can be reset at will.
#[derive(Debug, Clone)]
pub struct CutProxy {
    inner: Arc<ProxyInner>,
}

#[derive(Debug)]
struct ProxyInner {
    addr: SocketAddr,
    target: Mutex<Option<String>>,
    /// Bumped by `cut`; connection tasks watch it and reset.
    generation: watch::Sender<u64>,
    /// When true, new connections are refused (a partition).
    blocked: watch::Sender<bool>,
    cuts: AtomicU64,
    accepted: AtomicU64,
}

impl CutProxy {
    /// Binds on 127.0.0.1 with a free port. Connections arriving before
    /// [`CutProxy::set_target`] are closed.
    pub async fn bind() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(ProxyInner {
            addr,
            target: Mutex::new(None),
            generation: watch::channel(0).0,
            blocked: watch::channel(false).0,
            cuts: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                inner.accepted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(pipe(inner, client));
            }
        });
        Ok(Self { inner })
    }

    /// The proxy's own address: give this to the peers.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Where connections are forwarded.
    pub fn set_target(&self, target: impl Into<String>) {
        *self.inner.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(target.into());
    }

    /// Resets every connection currently through the proxy (TCP RST).
    pub fn cut(&self) {
        self.inner.cuts.fetch_add(1, Ordering::Relaxed);
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Refuses new connections (and cuts the current ones) until
    /// [`CutProxy::heal`].
    pub fn partition(&self) {
        self.inner.blocked.send_replace(true);
        self.cut();
    }

    /// Ends a partition.
    pub fn heal(&self) {
        self.inner.blocked.send_replace(false);
    }

    /// How many times [`CutProxy::cut`] was called.
    pub fn cuts(&self) -> u64 {
        self.inner.cuts.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }
}

async fn pipe(inner: Arc<ProxyInner>, client: TcpStream) {
    let target = inner
        .target
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if *inner.blocked.borrow() {
        reset(client);
        return;
    }
    let Some(target) = target else {
        reset(client);
        return;
    };
    let Ok(server) = TcpStream::connect(&target).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut generation = inner.generation.subscribe();
    generation.mark_unchanged();
    drop(inner);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = generation.changed() => {
            // Reassemble and reset both sides: the peers see a broken
            // connection, not an orderly close.
            if let (Ok(c), Ok(s)) = (cr.reunite(cw), sr.reunite(sw)) {
                reset(c);
                reset(s);
            }
        }
    }
}

fn reset(s: TcpStream) {
    // SO_LINGER 0 turns the close into an RST.
    #[allow(deprecated)] // set_linger is the only way without another crate
    let _ = s.set_linger(Some(std::time::Duration::ZERO));
    drop(s);
}
