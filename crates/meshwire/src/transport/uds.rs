//! Unix domain sockets: `unix:/path/to.sock` addresses, for nodes on one
//! host that would rather not open a TCP port (a sidecar, a local agent).
//!
//! The socket file is the listener's to manage:
//! - **bind**: a file left at the path by a process that died without
//!   cleaning up is removed, but only when it is a socket and nothing
//!   answers on it; a live listener is never taken over (`AddrInUse`).
//! - **drop** (shutdown): the file is removed, unless it is no longer the
//!   one this listener created (someone else bound the path meanwhile).
//!
//! Links over Unix sockets run TLS exactly like TCP links when the node
//! has TLS: the kernel keeps other hosts out, but not other users of this
//! one, and a peer's NodeId still has to be proved.

use super::Stream;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

/// How long bind waits for an answer on an existing socket file before
/// deciding that something is alive there after all.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A bound Unix listener that removes its socket file when dropped.
#[derive(Debug)]
pub(crate) struct UdsListener {
    inner: UnixListener,
    path: PathBuf,
    /// Device and inode of the file we created, so that drop removes only
    /// that file.
    file: Option<(u64, u64)>,
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

pub(crate) async fn bind(path: &Path) -> std::io::Result<UdsListener> {
    let inner = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            remove_if_stale(path).await.map_err(|_| e)?;
            UnixListener::bind(path)?
        }
        Err(e) => return Err(e),
    };
    Ok(UdsListener {
        inner,
        path: path.to_owned(),
        file: file_id(path),
    })
}

/// Removes the socket file at `path` if nothing listens on it. An error
/// means the file stays: it is not a socket, or something answered.
async fn remove_if_stale(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        return Err(std::io::ErrorKind::AddrInUse.into());
    }
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale socket file");
            std::fs::remove_file(path)
        }
        // Answered, or too busy to answer: in use either way.
        _ => Err(std::io::ErrorKind::AddrInUse.into()),
    }
}

impl UdsListener {
    pub(crate) async fn accept(&self) -> std::io::Result<(UnixStream, String)> {
        let (s, _) = self.inner.accept().await?;
        // Accepted Unix sockets are unnamed; the peer's pid says more.
        let remote = match s.peer_cred().ok().and_then(|c| c.pid()) {
            Some(pid) => format!("unix:{} (pid {pid})", self.path.display()),
            None => format!("unix:{}", self.path.display()),
        };
        Ok((s, remote))
    }
}

impl Drop for UdsListener {
    fn drop(&mut self) {
        if self.file.is_some() && file_id(&self.path) == self.file {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub(crate) async fn connect(path: &Path) -> std::io::Result<(UnixStream, String)> {
    let s = UnixStream::connect(path).await?;
    Ok((s, format!("unix:{}", path.display())))
}

/// A plaintext Unix connection as a [`Stream`].
pub(crate) fn split(s: UnixStream, remote: String) -> Stream {
    let (r, w) = s.into_split();
    Stream {
        read: Box::new(r),
        write: Box::new(w),
        remote,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic is how a test reports failure
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        // A socket file whose listener is gone (std's listener does not
        // remove its file).
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = bind(&path).await.expect("a stale file is replaced");
        let err = bind(&path).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(live);
        assert!(!path.exists(), "the file goes with the listener");
        // A regular file at the path is never removed.
        std::fs::write(&path, b"data").unwrap();
        assert!(bind(&path).await.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
