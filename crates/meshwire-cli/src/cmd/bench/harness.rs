//! What every meshwire workload shares: nodes on TLS (or `--insecure`), a
//! server side that starts a router (and whatever else the workload puts
//! beside it) on its pinned thread, a client side that measures on its
//! pinned thread, a progress line, and an orderly stop.

use super::pin::{spawn_side, Placement, Side};
use super::report::{self, Progress};
use super::Stop;
use anyhow::Context as _;
use meshwire::security::Authority;
use meshwire::{Node, NodeBuilder};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long to wait for the server side to come up.
const SETUP_WITHIN: Duration = Duration::from_secs(15);

/// How the benchmark's nodes protect their links. With TLS (the default)
/// one in-memory authority certifies every node, so links are mutually
/// authenticated TLS 1.3 exactly as in production.
#[derive(Clone)]
pub(crate) struct Security(Option<Arc<Authority>>);

impl Security {
    pub(crate) fn new(tls: bool) -> anyhow::Result<Self> {
        Ok(Self(if tls {
            Some(Arc::new(Authority::generate("meshwire bench")?))
        } else {
            None
        }))
    }

    /// A builder for one node of the benchmark.
    pub(crate) fn builder(&self) -> NodeBuilder {
        match &self.0 {
            Some(ca) => Node::builder().certified_by(ca),
            None => Node::builder().insecure(),
        }
    }

    /// A client node attached to `addr`.
    pub(crate) async fn client(&self, name: &str, addr: &str) -> anyhow::Result<Node> {
        self.builder()
            .name(name)
            .connect(addr)
            .connect_timeout(Duration::from_secs(10))
            .start()
            .await
            .with_context(|| {
                format!(
                    "the bench {name} could not attach to its router at {addr}; check that \
                     loopback TCP works here"
                )
            })
    }

    /// A router on 127.0.0.1 with a free port.
    pub(crate) async fn router(&self) -> anyhow::Result<Node> {
        self.builder()
            .name("bench-router")
            .listen("127.0.0.1:0")
            .start()
            .await
            .context(
                "cannot start the bench router on 127.0.0.1:0; check that loopback TCP works \
                 here (firewall, sandbox, file descriptor limit)",
            )
    }
}

/// What the server side started: the address clients attach to, the nodes
/// to shut down at the end, and anything else to keep alive until then.
pub(crate) struct ServerUp {
    pub(crate) addr: String,
    pub(crate) nodes: Vec<Node>,
    pub(crate) keep: Vec<Box<dyn std::any::Any>>,
}

impl ServerUp {
    /// A router alone.
    pub(crate) fn router(node: Node) -> anyhow::Result<Self> {
        let addr = node
            .listen_addr()
            .context("the bench router has no listen address; this is a bug")?
            .to_owned();
        Ok(Self {
            addr,
            nodes: vec![node],
            keep: Vec::new(),
        })
    }
}

/// Runs `server` on the server side's pinned thread and, once it is up,
/// `client` (given the address) on the client side's; returns what the
/// client measured. The server side stops when the client side is done.
pub(crate) async fn run<T, S, SF, C, CF>(
    label: &str,
    placement: &Placement,
    security: Security,
    stop: Stop,
    warmup: u64,
    server: S,
    client: C,
) -> anyhow::Result<T>
where
    T: Send + 'static,
    S: FnOnce(Security) -> SF + Send + 'static,
    SF: Future<Output = anyhow::Result<ServerUp>>,
    C: FnOnce(Security, String, Arc<Progress>) -> CF + Send + 'static,
    CF: Future<Output = anyhow::Result<T>>,
{
    let (addr_tx, addr_rx) = oneshot::channel::<anyhow::Result<String>>();
    // Dropping `stop_tx` (on any path out of here) stops the server side.
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server_security = security.clone();
    let server_side = spawn_side("server", placement, Side::Server, move || async move {
        let up = match server(server_security).await {
            Ok(up) => up,
            Err(e) => {
                let _ = addr_tx.send(Err(e));
                return Ok(());
            }
        };
        let _ = addr_tx.send(Ok(up.addr.clone()));
        let _ = stop_rx.await;
        drop(up.keep);
        for node in up.nodes {
            node.shutdown().await;
        }
        Ok(())
    })?;

    let addr = match tokio::time::timeout(SETUP_WITHIN, addr_rx).await {
        Ok(Ok(Ok(addr))) => addr,
        Ok(Ok(Err(e))) => {
            drop(stop_tx);
            let _ = server_side.finish().await;
            return Err(e);
        }
        Ok(Err(_)) => {
            return Err(server_side.finish().await.err().unwrap_or_else(|| {
                anyhow::anyhow!("the bench server side ended before it started; this is a bug")
            }))
        }
        Err(_) => anyhow::bail!(
            "the bench server side did not start within {SETUP_WITHIN:?}; the machine may be \
             overloaded: retry, or use --pin none"
        ),
    };

    let progress = Arc::new(Progress::default());
    let p = progress.clone();
    let client_side = spawn_side("client", placement, Side::Client, move || {
        client(security, addr, p)
    })?;
    let measured = report::with_progress(
        &format!("meshwire bench {label}"),
        &progress,
        stop,
        warmup,
        client_side.finish(),
    )
    .await;
    drop(stop_tx);
    let served = server_side.finish().await;
    let measured = measured?;
    served?;
    Ok(measured)
}
