//! TCP: Nagle off (we coalesce frames ourselves, one write per batch).

use super::Stream;
use tokio::net::{TcpListener, TcpStream};

fn wrap(s: TcpStream) -> std::io::Result<Stream> {
    s.set_nodelay(true)?;
    let remote = s
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let (r, w) = s.into_split();
    Ok(Stream {
        read: Box::new(r),
        write: Box::new(w),
        remote,
    })
}

pub(crate) async fn accept(l: &TcpListener) -> std::io::Result<Stream> {
    let (s, _) = l.accept().await?;
    wrap(s)
}

pub(crate) async fn connect(addr: &str) -> std::io::Result<Stream> {
    wrap(TcpStream::connect(addr).await?)
}
