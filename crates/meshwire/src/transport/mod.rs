//! Transports: how bytes get between nodes. TCP for real deployments, an
//! in-memory transport (`mem:NAME` addresses) for tests in one process.
//!
//! Both yield a pair of byte streams; everything above (framing, sessions)
//! is the same, so a test over `mem:` exercises the same code as TCP.
//!
//! Nodes run mutually authenticated TLS 1.3 on their TCP connections
//! unless built [`insecure`](crate::NodeBuilder::insecure)
//! ([`secure`]); `mem:` connections stay plaintext, since they never leave
//! the process.

pub(crate) mod mem;
pub(crate) mod secure;
pub(crate) mod tcp;

use crate::Error;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connected byte stream, split into halves.
pub(crate) struct Stream {
    pub(crate) read: Box<dyn AsyncRead + Send + Unpin>,
    pub(crate) write: Box<dyn AsyncWrite + Send + Unpin>,
    pub(crate) remote: String,
}

/// A connection before any TLS: a TCP socket still whole (so TLS can wrap
/// it), or an already split in-memory pipe.
pub(crate) enum Raw {
    Tcp(tokio::net::TcpStream, String),
    Mem(Stream),
}

impl Raw {
    /// Who is at the other end, for logs.
    pub(crate) fn remote(&self) -> &str {
        match self {
            Raw::Tcp(_, r) => r,
            Raw::Mem(s) => &s.remote,
        }
    }

    /// The connection as plaintext halves.
    pub(crate) fn plain(self) -> Stream {
        match self {
            Raw::Tcp(s, remote) => tcp::split(s, remote),
            Raw::Mem(s) => s,
        }
    }
}

/// Where to listen or dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addr {
    Tcp(String),
    Mem(String),
}

impl Addr {
    pub(crate) fn parse(s: &str) -> Result<Self, Error> {
        if let Some(name) = s.strip_prefix("mem:") {
            if name.is_empty() {
                return Err(Error::Address(s.to_owned()));
            }
            return Ok(Addr::Mem(name.to_owned()));
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
    Mem(mem::MemListener),
}

impl Listener {
    pub(crate) async fn bind(addr: &Addr) -> Result<(Self, String), Error> {
        match addr {
            Addr::Tcp(a) => {
                let l = tcp::bind(a).await.map_err(|e| Error::Bind {
                    addr: a.clone(),
                    source: e,
                })?;
                let local = l.local_addr().map_err(|e| Error::Bind {
                    addr: a.clone(),
                    source: e,
                })?;
                Ok((Listener::Tcp(l), local.to_string()))
            }
            Addr::Mem(name) => {
                let l = mem::MemListener::bind(name).map_err(|e| Error::Bind {
                    addr: format!("mem:{name}"),
                    source: e,
                })?;
                Ok((Listener::Mem(l), format!("mem:{name}")))
            }
        }
    }

    pub(crate) async fn accept(&mut self) -> std::io::Result<Raw> {
        match self {
            Listener::Tcp(l) => tcp::accept(l).await.map(|(s, r)| Raw::Tcp(s, r)),
            Listener::Mem(l) => l.accept().await.map(Raw::Mem),
        }
    }
}

pub(crate) async fn connect(addr: &Addr) -> std::io::Result<Raw> {
    match addr {
        Addr::Tcp(a) => tcp::connect(a).await.map(|(s, r)| Raw::Tcp(s, r)),
        Addr::Mem(name) => mem::connect(name).await.map(Raw::Mem),
    }
}
