//! Transports: how bytes get between nodes. TCP for real deployments, Unix
//! domain sockets (`unix:/path`) between processes of one host, and an
//! in-memory transport (`mem:NAME` addresses) for tests in one process.
//!
//! All yield a pair of byte streams; everything above (framing, sessions)
//! is the same, so a test over `mem:` exercises the same code as TCP.
//!
//! Nodes run mutually authenticated TLS 1.3 on their TCP and Unix
//! connections unless built [`insecure`](crate::NodeBuilder::insecure)
//! ([`secure`]); `mem:` connections stay plaintext, since they never leave
//! the process.

pub(crate) mod mem;
pub(crate) mod secure;
pub(crate) mod tcp;
#[cfg(unix)]
pub(crate) mod uds;

use crate::Error;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connected byte stream, split into halves.
pub(crate) struct Stream {
    pub(crate) read: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) write: Box<dyn AsyncWrite + Send + Unpin>,
    pub(crate) remote: String,
}

/// An operating-system socket, still whole so that TLS can wrap it.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl Socket {
    /// The peer's IP address, for per-source limits; `None` for a Unix
    /// socket (the peer is on this host).
    pub(crate) fn peer_ip(&self) -> Option<IpAddr> {
        match self {
            Socket::Tcp(s) => s.peer_addr().ok().map(|a| a.ip()),
            #[cfg(unix)]
            Socket::Unix(_) => None,
        }
    }

    /// Writes what fits without waiting (a refusal notice); never blocks.
    pub(crate) fn try_write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_write(bytes),
            #[cfg(unix)]
            Socket::Unix(s) => s.try_write(bytes),
        }
    }

    /// The socket as plaintext halves (owned halves: no lock between them).
    fn split(self, remote: String) -> Stream {
        match self {
            Socket::Tcp(s) => tcp::split(s, remote),
            #[cfg(unix)]
            Socket::Unix(s) => uds::split(s, remote),
        }
    }
}

/// Forwards to the socket inside, whichever kind it is.
macro_rules! each_socket {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Socket::Tcp($s) => $e,
            #[cfg(unix)]
            Socket::Unix($s) => $e,
        }
    };
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each_socket!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each_socket!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each_socket!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Socket::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_socket!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_socket!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A connection before any TLS: an OS socket still whole (so TLS can wrap
/// it), or an already split in-memory pipe.
pub(crate) enum Raw {
    Socket(Socket, String),
    Mem(Stream),
}

impl Raw {
    /// Who is at the other end, for logs.
    pub(crate) fn remote(&self) -> &str {
        match self {
            Raw::Socket(_, r) => r,
            Raw::Mem(s) => &s.remote,
        }
    }

    /// The peer's IP address, for per-source limits; `None` for Unix
    /// sockets and in-memory pipes.
    pub(crate) fn peer_ip(&self) -> Option<IpAddr> {
        match self {
            Raw::Socket(s, _) => s.peer_ip(),
            Raw::Mem(_) => None,
        }
    }

    /// The connection as plaintext halves.
    pub(crate) fn plain(self) -> Stream {
        match self {
            Raw::Socket(s, remote) => s.split(remote),
            Raw::Mem(s) => s,
        }
    }
}

/// Where to listen or dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    Tcp(String),
    Unix(PathBuf),
    Mem(String),
}

impl std::fmt::Display for Addr {
    /// The address as it is written (and parsed back).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Tcp(a) => f.write_str(a),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
            Addr::Mem(n) => write!(f, "mem:{n}"),
        }
    }
}

impl Addr {
    pub(crate) fn parse(s: &str) -> Result<Self, Error> {
        if let Some(name) = s.strip_prefix("mem:") {
            if name.is_empty() {
                return Err(Error::Address(s.to_owned()));
            }
            return Ok(Addr::Mem(name.to_owned()));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(Error::Address(s.to_owned()));
            }
            return Ok(Addr::Unix(PathBuf::from(path)));
        }
        // HOST:PORT; the host may be a name, so only the shape is checked
        // here and resolution errors surface when dialling.
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Addr::Tcp(s.to_owned()))
            }
            _ => Err(Error::Address(s.to_owned())),
        }
    }
}

/// A bound listener.
pub(crate) enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(uds::UdsListener),
    Mem(mem::MemListener),
}

#[cfg(not(unix))]
fn unsupported() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "Unix sockets need a Unix system",
    )
}

impl Listener {
    pub(crate) async fn bind(addr: &Addr) -> Result<(Self, String), Error> {
        let bind_error = |source| Error::Bind {
            addr: addr.to_string(),
            source,
        };
        match addr {
            Addr::Tcp(a) => {
                let l = tcp::bind(a).await.map_err(bind_error)?;
                let local = l.local_addr().map_err(bind_error)?;
                Ok((Listener::Tcp(l), local.to_string()))
            }
            #[cfg(unix)]
            Addr::Unix(path) => {
                let l = uds::bind(path).await.map_err(bind_error)?;
                Ok((Listener::Unix(l), addr.to_string()))
            }
            #[cfg(not(unix))]
            Addr::Unix(_) => Err(bind_error(unsupported())),
            Addr::Mem(name) => {
                let l = mem::MemListener::bind(name).map_err(bind_error)?;
                Ok((Listener::Mem(l), addr.to_string()))
            }
        }
    }

    pub(crate) async fn accept(&mut self) -> std::io::Result<Raw> {
        match self {
            Listener::Tcp(l) => tcp::accept(l)
                .await
                .map(|(s, r)| Raw::Socket(Socket::Tcp(s), r)),
            #[cfg(unix)]
            Listener::Unix(l) => l
                .accept()
                .await
                .map(|(s, r)| Raw::Socket(Socket::Unix(s), r)),
            Listener::Mem(l) => l.accept().await.map(Raw::Mem),
        }
    }
}

pub(crate) async fn connect(addr: &Addr) -> std::io::Result<Raw> {
    match addr {
        Addr::Tcp(a) => tcp::connect(a)
            .await
            .map(|(s, r)| Raw::Socket(Socket::Tcp(s), r)),
        #[cfg(unix)]
        Addr::Unix(path) => uds::connect(path)
            .await
            .map(|(s, r)| Raw::Socket(Socket::Unix(s), r)),
        #[cfg(not(unix))]
        Addr::Unix(_) => Err(unsupported()),
        Addr::Mem(name) => mem::connect(name).await.map(Raw::Mem),
    }
}
