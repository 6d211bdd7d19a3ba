//! One module per subcommand.

pub(crate) mod bench;
pub(crate) mod call;
pub(crate) mod demo;
pub(crate) mod node;
pub(crate) mod publish;
pub(crate) mod reply;
pub(crate) mod request;
pub(crate) mod serve;
pub(crate) mod subscribe;

use meshwire::Node;
use std::time::Duration;

/// An argument combination clap cannot check; exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// Options every tool that attaches to a router shares.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConnectArgs {
    /// Router to attach to, HOST:PORT (repeat for failover).
    #[arg(long, short = 'c', value_name = "ADDR", required = true)]
    pub(crate) connect: Vec<String>,
    /// Give up if no router answers within this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub(crate) connect_timeout: u64,
}

impl ConnectArgs {
    pub(crate) async fn attach(&self) -> anyhow::Result<Node> {
        let mut b = Node::builder().connect_timeout(Duration::from_millis(self.connect_timeout));
        for c in &self.connect {
            b = b.connect(c);
        }
        Ok(b.start().await?)
    }
}

/// Installs SIGINT/SIGTERM handlers now and returns a future that resolves
/// when either arrives. Install before announcing readiness: a signal that
/// arrives between "ready" and the handler would kill the process instead
/// of draining it.
pub(crate) fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            match (int, term) {
                (Some(mut i), Some(mut t)) => {
                    tokio::select! {
                        _ = i.recv() => {}
                        _ = t.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
