//! Tools for testing systems built on meshwire (and meshwire itself).
//!
//! [`CutProxy`] is a TCP proxy that can reset every connection through it
//! on demand: put one in front of a node, point peers at the proxy, and
//! call [`CutProxy::cut`] to simulate a network failure mid-stream. The
//! `demo` command and the process tests use it.
//!
//! [`TamperProxy`] is a TCP proxy that damages TLS records on demand (one
//! bit flipped, or a record cut short and the connection closed): an
//! attacker on the path, for tests that links notice and deliver nothing
//! altered.
//!
//! [`linearizability`] records what concurrent clients did to a replicated
//! map and checks that the history is linearizable (Wing & Gong's search
//! with Lowe's memoization, per key, as porcupine does it).

pub mod linearizability;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        accept_loop(listener, &inner, pipe);
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

/// Accepts on `listener` for as long as the proxy (`inner`) lives, and
/// runs `pipe` on each connection.
fn accept_loop<I, F>(listener: TcpListener, inner: &Arc<I>, pipe: fn(Arc<I>, TcpStream) -> F)
where
    I: Send + Sync + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Some(inner) = weak.upgrade() else {
                return;
            };
            tokio::spawn(pipe(inner, client));
        }
    });
}

async fn pipe(inner: Arc<ProxyInner>, client: TcpStream) {
    inner.accepted.fetch_add(1, Ordering::Relaxed);
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

/// Which way through a [`TamperProxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Direction {
    /// From the dialling side to the target.
    ToTarget,
    /// From the target back to the dialling side.
    ToDialler,
}

/// What a [`TamperProxy`] does to the record it damages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tamper {
    /// Flips one bit in the middle of the record's encrypted body.
    FlipBit,
    /// Forwards the record's header and half its body, then closes the
    /// connection (both ways, orderly: no reset).
    Truncate,
}

/// A TCP proxy on 127.0.0.1 in front of a TLS endpoint that, when armed,
/// damages the next TLS application-data record going one way (through
/// whichever connection carries it first). Everything else passes
/// untouched, record by record.
#[derive(Debug, Clone)]
pub struct TamperProxy {
    inner: Arc<TamperInner>,
}

#[derive(Debug)]
struct TamperInner {
    addr: SocketAddr,
    target: String,
    /// Armed damage per direction (`ToTarget`, `ToDialler`).
    armed: [Mutex<Option<Tamper>>; 2],
    tampered: AtomicU64,
    accepted: AtomicU64,
}

/// TLS record content type of application data (and, in TLS 1.3, of every
/// encrypted record).
const APPLICATION_DATA: u8 = 23;

impl TamperProxy {
    /// Binds on 127.0.0.1 with a free port, forwarding to `target`.
    pub async fn bind(target: impl Into<String>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let inner = Arc::new(TamperInner {
            addr: listener.local_addr()?,
            target: target.into(),
            armed: [Mutex::new(None), Mutex::new(None)],
            tampered: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        accept_loop(listener, &inner, tamper_pipe);
        Ok(Self { inner })
    }

    /// The proxy's own address: give this to the dialling side.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Damages the next application-data record going `direction` (once).
    pub fn arm(&self, direction: Direction, tamper: Tamper) {
        *self.inner.slot(direction) = Some(tamper);
    }

    /// Records damaged so far.
    pub fn tampered(&self) -> u64 {
        self.inner.tampered.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }
}

impl TamperInner {
    fn slot(&self, direction: Direction) -> std::sync::MutexGuard<'_, Option<Tamper>> {
        let i = match direction {
            Direction::ToTarget => 0,
            Direction::ToDialler => 1,
        };
        self.armed[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn tamper_pipe(inner: Arc<TamperInner>, client: TcpStream) {
    inner.accepted.fetch_add(1, Ordering::Relaxed);
    let Ok(server) = TcpStream::connect(&inner.target).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Whichever direction ends (a truncation, or a close) ends both.
    tokio::select! {
        _ = records(&inner, Direction::ToTarget, cr, sw) => {}
        _ = records(&inner, Direction::ToDialler, sr, cw) => {}
    }
}

/// Forwards TLS records from `from` to `to`, damaging one when armed.
async fn records(
    inner: &TamperInner,
    direction: Direction,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let mut header = [0u8; 5];
    loop {
        if from.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        let mut body = vec![0u8; len];
        if from.read_exact(&mut body).await.is_err() {
            break;
        }
        let damage = if header[0] == APPLICATION_DATA && len > 0 {
            inner.slot(direction).take()
        } else {
            None
        };
        if damage.is_some() {
            inner.tampered.fetch_add(1, Ordering::Relaxed);
        }
        let forward = match damage {
            Some(Tamper::FlipBit) => {
                body[len / 2] ^= 0x10;
                &body[..]
            }
            Some(Tamper::Truncate) => &body[..len / 2],
            None => &body[..],
        };
        if to.write_all(&header).await.is_err() || to.write_all(forward).await.is_err() {
            break;
        }
        if damage == Some(Tamper::Truncate) {
            break;
        }
    }
    let _ = to.shutdown().await;
}
