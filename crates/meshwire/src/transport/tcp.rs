//! TCP: Nagle off (we coalesce frames ourselves, one write per batch).

use super::Stream;
use tokio::net::{TcpListener, TcpStream};

fn prepare(s: TcpStream) -> std::io::Result<(TcpStream, String)> {
    s.set_nodelay(true)?;
    let remote = s
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    Ok((s, remote))
}

/// A plaintext TCP connection as a [`Stream`].
pub(crate) fn split(s: TcpStream, remote: String) -> Stream {
    let (r, w) = s.into_split();
    Stream {
        read: Box::new(r),
        write: Box::new(w),
        remote,
    }
}

/// A connect burst larger than the backlog makes the kernel drop SYNs and
/// the client retry after a second; 1024 absorbs floods of reconnects.
const BACKLOG: u32 = 1024;

pub(crate) async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for sa in tokio::net::lookup_host(addr).await? {
        let sock = if sa.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        sock.set_reuseaddr(true)?;
        match sock.bind(sa).and_then(|()| sock.listen(BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "address resolved to nothing",
        )
    }))
}

pub(crate) async fn accept(l: &TcpListener) -> std::io::Result<(TcpStream, String)> {
    let (s, _) = l.accept().await?;
    prepare(s)
}

pub(crate) async fn connect(addr: &str) -> std::io::Result<(TcpStream, String)> {
    prepare(TcpStream::connect(addr).await?)
}
