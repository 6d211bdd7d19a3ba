//! One module per subcommand.

pub(crate) mod bench;
pub(crate) mod call;
pub(crate) mod demo;
pub(crate) mod keygen;
pub(crate) mod node;
pub(crate) mod publish;
pub(crate) mod reply;
pub(crate) mod request;
pub(crate) mod serve;
pub(crate) mod subscribe;

use meshwire::security::{Identity, Trust};
use meshwire::{Node, NodeBuilder};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An argument combination clap cannot check; exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// Options every tool that attaches to a router shares.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ConnectArgs {
    /// Router to attach to, HOST:PORT or unix:PATH (repeat for failover).
    #[arg(long, short = 'c', value_name = "ADDR", required = true)]
    pub(crate) connect: Vec<String>,
    /// Give up if no router answers within this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub(crate) connect_timeout: u64,
    #[command(flatten)]
    pub(crate) security: SecurityArgs,
}

impl ConnectArgs {
    pub(crate) async fn attach(&self) -> anyhow::Result<Node> {
        let mut b = Node::builder().connect_timeout(Duration::from_millis(self.connect_timeout));
        for c in &self.connect {
            b = b.connect(c);
        }
        b = self.security.apply(b, None)?;
        Ok(b.start().await?)
    }
}

/// TLS options, shared by `node` and every tool that attaches to a router.
///
/// Giving any of `--key`, `--trust`, `--ca` turns on mutually authenticated
/// TLS 1.3 for this process's links; without them links are plaintext.
/// (TLS will become the default in a later release.) Both ends of a link
/// must use TLS, and each must admit the other's NodeId.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct SecurityArgs {
    /// This node's Ed25519 key (PKCS#8 PEM, as `meshwire keygen` writes);
    /// turns TLS on. Without it a TLS node uses DIR/node.key when given
    /// --data DIR, otherwise a fresh key held in memory only (whose id no
    /// router will trust: a client that must be admitted needs --key).
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// Admit only these NodeIds (one per line, `#` comments) besides this
    /// node's own; turns TLS on. Without --trust or --ca a TLS node admits
    /// only its own key.
    #[arg(long, value_name = "FILE", conflicts_with = "ca")]
    pub(crate) trust: Option<PathBuf>,
    /// Admit nodes whose certificate chain leads to these CA roots (PEM),
    /// instead of a list of NodeIds; turns TLS on. Pair with --cert.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// The certificate chain (PEM, end-entity first) a CA issued for --key,
    /// presented instead of the self-signed one; for --ca mode.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Plaintext links: no encryption, no authentication. Both ends must
    /// agree; a warning is logged at start.
    #[arg(long, conflicts_with_all = ["key", "trust", "ca", "cert"])]
    pub(crate) insecure: bool,
}

impl SecurityArgs {
    /// Whether TLS is on.
    pub(crate) fn enabled(&self) -> bool {
        self.key.is_some() || self.trust.is_some() || self.ca.is_some()
    }

    /// Adds TLS to `b` when asked for. `data` is the node's data directory,
    /// where its key is kept when no --key is given.
    pub(crate) fn apply(&self, b: NodeBuilder, data: Option<&Path>) -> anyhow::Result<NodeBuilder> {
        if self.insecure {
            return Ok(b.insecure());
        }
        if !self.enabled() {
            return Ok(b);
        }
        let trust = match (&self.trust, &self.ca) {
            (Some(t), _) => Trust::load(t)?,
            (None, Some(ca)) => Trust::load_ca(ca)?,
            (None, None) => Trust::default(),
        };
        let identity = match (&self.key, data) {
            (Some(k), _) => Identity::load(k)?,
            (None, Some(_)) => return Ok(b.tls_from_data_dir(trust)),
            (None, None) => Identity::generate()?,
        };
        let identity = match &self.cert {
            Some(c) => identity.with_certificate_file(c)?,
            None => identity,
        };
        Ok(b.tls(identity, trust))
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
