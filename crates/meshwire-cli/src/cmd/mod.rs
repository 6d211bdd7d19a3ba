//! One module per subcommand.

pub(crate) mod bench;
pub(crate) mod call;
pub(crate) mod demo;
pub(crate) mod keygen;
pub(crate) mod kv;
pub(crate) mod node;
pub(crate) mod publish;
pub(crate) mod reply;
pub(crate) mod request;
pub(crate) mod serve;
pub(crate) mod subscribe;

use meshwire::security::{Identity, NodeId, Trust};
use meshwire::{Node, NodeBuilder};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An argument combination clap cannot check; exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// An outcome that is not a failure of the tool but has its own exit code
/// (`kv cas` on a version mismatch: 3); the message goes to stderr.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Exit {
    pub(crate) code: u8,
    pub(crate) message: String,
}

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
        let (b, security) = self.security.apply(b, None)?;
        match b.start().await {
            Ok(node) => Ok(node),
            Err(e @ meshwire::Error::Unreachable { .. }) => match security {
                Security::Tls {
                    node,
                    fresh_key: true,
                } => Err(anyhow::anyhow!(
                    "{e}\nhint: without --key this tool ran with a fresh key (node {node}) that \
                     no router admits; create one with `meshwire keygen --out tool.key`, add the \
                     node id it prints to the router's --trust file, and pass --key tool.key \
                     --trust FILE (a file listing the router's node id)"
                )),
                _ => Err(e.into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

/// Security options, shared by `node` and every tool that attaches to a
/// router.
///
/// Links are mutually authenticated TLS 1.3 unless --insecure is given.
/// Each end admits only the keys its --trust file lists (or that its --ca
/// certified) plus its own: both ends of a link must admit each other.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct SecurityArgs {
    /// This process's Ed25519 key (PKCS#8 PEM, as `meshwire keygen`
    /// writes). Default: DIR/node.key for `node --data DIR` (created on
    /// first start), otherwise a fresh key held in memory, which no router
    /// admits: tools that attach to routers need --key.
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// Admit these NodeIds (one per line, `#` comments), besides this
    /// process's own. Without --trust or --ca no other key is admitted.
    #[arg(long, value_name = "FILE", conflicts_with = "ca")]
    pub(crate) trust: Option<PathBuf>,
    /// Admit nodes whose certificate chain leads to these CA roots (PEM)
    /// and names their NodeId, instead of a list of NodeIds. Pair with
    /// --cert.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// The certificate chain (PEM, end-entity first) a CA issued for --key,
    /// presented instead of the self-signed one; for --ca mode.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Plaintext links: no encryption, no authentication. Both ends must
    /// agree (a TLS node refuses a plaintext peer); a warning is logged.
    #[arg(long, conflicts_with_all = ["key", "trust", "ca", "cert"])]
    pub(crate) insecure: bool,
}

/// How [`SecurityArgs::apply`] set a node up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Security {
    /// TLS as `node`; `fresh_key` when no key was given or kept.
    Tls { node: NodeId, fresh_key: bool },
    /// Plaintext (--insecure).
    Insecure,
}

impl SecurityArgs {
    /// Sets `b` up as asked. `data` is the node's data directory, where its
    /// key is kept when no --key is given.
    pub(crate) fn apply(
        &self,
        b: NodeBuilder,
        data: Option<&Path>,
    ) -> anyhow::Result<(NodeBuilder, Security)> {
        if self.insecure {
            return Ok((b.insecure(), Security::Insecure));
        }
        let trust = match (&self.trust, &self.ca) {
            (Some(t), _) => Trust::load(t)?,
            (None, Some(ca)) => Trust::load_ca(ca)?,
            (None, None) => Trust::default(),
        };
        let (identity, fresh_key) = match (&self.key, data) {
            (Some(k), _) => (Identity::load(k)?, false),
            (None, Some(dir)) => (Identity::load_or_create(dir)?, false),
            (None, None) => (Identity::generate()?, true),
        };
        let identity = match &self.cert {
            Some(c) => identity.with_certificate_file(c)?,
            None => identity,
        };
        let node = identity.node_id();
        Ok((b.tls(identity, trust), Security::Tls { node, fresh_key }))
    }

    /// On SIGHUP: reads --trust (or --ca) again and puts it in force,
    /// closing the links of nodes no longer admitted; logs what happened
    /// (on an error the trust in force stays). False when there is no
    /// trust file to reload.
    pub(crate) async fn reload_trust(&self, node: &Node) -> bool {
        let loaded = match (&self.trust, &self.ca) {
            (Some(t), _) => Trust::load(t),
            (None, Some(ca)) => Trust::load_ca(ca),
            (None, None) => return false,
        };
        let result = match loaded {
            Ok(trust) => node.reload_trust(trust).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(closed) => tracing::info!(
                links_closed = closed,
                "trust reloaded; links of nodes no longer admitted are closed"
            ),
            Err(e) => tracing::error!(error = %e, "trust not reloaded; the trust in force stays"),
        }
        true
    }

    /// Whether peers can be admitted at all (a --trust file or a CA).
    pub(crate) fn admits_others(&self) -> bool {
        self.trust.is_some() || self.ca.is_some()
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

/// SIGHUP, the conventional "reload your configuration" signal. Install
/// before announcing readiness (like [`stop_signal`]): until a handler is
/// installed, SIGHUP kills the process.
pub(crate) struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    pub(crate) fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Hangups {
                signal: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Hangups {}
        }
    }

    /// Resolves at the next SIGHUP (never where there is none).
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}
