//! In-process transport: `mem:NAME` listeners in a process-wide registry,
//! connections are `tokio::io::duplex` pipes. For tests and examples that
//! want many nodes in one process without ports.

use super::Stream;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

type Registry = Mutex<HashMap<String, mpsc::Sender<DuplexStream>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Pipe capacity per direction; small enough to exercise backpressure.
const PIPE_BYTES: usize = 256 * 1024;

pub(crate) struct MemListener {
    name: String,
    rx: mpsc::Receiver<DuplexStream>,
}

impl MemListener {
    pub(crate) fn bind(name: &str) -> std::io::Result<Self> {
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        if reg.get(name).is_some_and(|tx| !tx.is_closed()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("mem:{name} is already bound"),
            ));
        }
        let (tx, rx) = mpsc::channel(64);
        reg.insert(name.to_owned(), tx);
        Ok(Self {
            name: name.to_owned(),
            rx,
        })
    }

    pub(crate) async fn accept(&mut self) -> std::io::Result<Stream> {
        match self.rx.recv().await {
            Some(s) => {
                let (r, w) = tokio::io::split(s);
                Ok(Stream {
                    read: Box::new(r),
                    write: Box::new(w),
                    remote: format!("mem:{}#peer", self.name),
                })
            }
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        let mut reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.remove(&self.name);
    }
}

pub(crate) async fn connect(name: &str) -> std::io::Result<Stream> {
    let tx = {
        let reg = registry().lock().unwrap_or_else(|e| e.into_inner());
        reg.get(name).cloned()
    };
    let tx = tx.ok_or(std::io::ErrorKind::ConnectionRefused)?;
    let (a, b) = tokio::io::duplex(PIPE_BYTES);
    tx.send(b)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
    let (r, w) = tokio::io::split(a);
    Ok(Stream {
        read: Box::new(r),
        write: Box::new(w),
        remote: format!("mem:{name}"),
    })
}
