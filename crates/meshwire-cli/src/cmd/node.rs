//! `meshwire node`: a router that runs until told to stop.

use super::{stop_signal, Hangups, Security};
use meshwire::{Node, NodeConfig};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Run a router node.
///
/// When ready it prints one JSON line to stdout:
/// {"event":"ready","node":"<NodeId>","listen":"<ADDR>"} — port 0 picks a
/// free port and the line says which. Logs go to stderr. SIGINT/SIGTERM
/// drain and exit 0; SIGHUP reloads --trust (or --ca), closing the links
/// of nodes no longer admitted, and --permissions.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to listen on: HOST:PORT (port 0 picks a free one), or
    /// unix:PATH for a Unix socket (a stale socket file there is replaced;
    /// the file is removed at exit).
    #[arg(long, short = 'l', value_name = "ADDR")]
    listen: String,
    /// Another router to peer with (repeatable); further peers are learned.
    #[arg(long, short = 'p', value_name = "ADDR")]
    peer: Vec<String>,
    /// Directory for the node's state (its identity is kept there).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// A name for logs.
    #[arg(long)]
    name: Option<String>,
    /// Address other routers should dial to reach this one (default: the
    /// listen address).
    #[arg(long, value_name = "ADDR")]
    advertise: Option<String>,
    /// Enforce the permissions in FILE on the clients attached to this
    /// router: what each NodeId (or group of NodeIds) may publish,
    /// subscribe to, serve and call. SIGHUP re-reads the file, and so does
    /// a change to it (checked every second); links stay up, and an
    /// invalid file leaves the rules in force. Without it everything is
    /// allowed. Use with TLS (--key/--trust), so NodeIds are authenticated.
    /// The file is TOML:
    ///
    ///   [groups]
    ///   ops = ["<nodeid>", "<nodeid>"]
    ///
    ///   [nodes."<nodeid>"]       # or [nodes."group:ops"], or [nodes."*"] for every node
    ///   publish   = { allow = ["orders.>"], deny = ["orders.secret.>"] }
    ///   subscribe = { allow = ["orders.*"] }
    ///   serve     = { allow = ["Calculator"] }
    ///   call      = { allow = ["*"], deny = ["Admin"] }
    ///
    /// A node's rules are its entry, its groups' and "*", merged; deny
    /// wins; a node no entry names may do nothing. A subscription must be
    /// covered by an allow pattern as a whole. Replies and a node's own
    /// inbox are always allowed; RPC subjects follow serve and call.
    #[arg(long, value_name = "FILE", verbatim_doc_comment)]
    permissions: Option<PathBuf>,
    /// Be a member of the Raft group that holds linearizable maps
    /// (`meshwire kv`). Needs --data DIR: the Raft log and snapshots live
    /// in DIR/raft, fsynced before a write is acknowledged. The first
    /// member, started without --peer, bootstraps the group; members
    /// started with --peer ask the group to add them, so three commands
    /// form a three-member group:
    ///
    ///   meshwire node --raft --data d1 --listen 127.0.0.1:4701
    ///   meshwire node --raft --data d2 --listen 127.0.0.1:4702 --peer 127.0.0.1:4701
    ///   meshwire node --raft --data d3 --listen 127.0.0.1:4703 --peer 127.0.0.1:4701
    ///
    /// A restarted member rejoins from its log. See `meshwire kv members`.
    #[arg(long, requires = "data", verbatim_doc_comment)]
    raft: bool,
    /// Links are mutually authenticated TLS 1.3: --key FILE (default: DIR/
    /// node.key with --data DIR), --trust FILE or --ca FILE; --insecure for
    /// plaintext.
    #[command(flatten)]
    security: super::SecurityArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Every abuse limit, with the library's defaults (`meshwire::NodeConfig`).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Abuse limits")]
struct LimitArgs {
    /// A connection must complete its handshake (TLS and MWIR) within this
    /// many milliseconds of being accepted, or it is closed.
    #[arg(long, value_name = "MS", default_value_t = millis(DEFAULTS.handshake_timeout))]
    handshake_timeout: u64,
    /// Most connections held at once; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = DEFAULTS.max_links)]
    max_links: usize,
    /// Most connections one IP address may hold at once (0: no limit).
    /// Unix-socket connections are exempt.
    #[arg(long, value_name = "N", default_value_t = DEFAULTS.max_links_per_ip)]
    max_links_per_ip: usize,
    /// Most accepted connections still in their handshake at once; more
    /// are closed at accept.
    #[arg(long, value_name = "N", default_value_t = DEFAULTS.max_handshakes)]
    max_handshakes: usize,
    /// Most connections from one IP address still in their handshake at
    /// once (0: no limit), so that a few addresses cannot take every slot.
    #[arg(long, value_name = "N", default_value_t = DEFAULTS.max_handshakes_per_ip)]
    max_handshakes_per_ip: usize,
    /// Largest frame accepted, in bytes; a peer announcing a larger one is
    /// disconnected before anything is allocated.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULTS.limits.max_frame)]
    max_frame: u32,
    /// Payload bytes queued for one consumer beyond which it counts as
    /// behind: publishers wait, best-effort messages to it are dropped.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULTS.max_pending_bytes)]
    max_pending_bytes: usize,
    /// A consumer behind (messages or bytes) for this many milliseconds is
    /// cut off with Close(SlowConsumer).
    #[arg(long, value_name = "MS", default_value_t = millis(DEFAULTS.slow_consumer_timeout))]
    slow_consumer_timeout: u64,
    /// Strikes are counted over windows of this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = millis(DEFAULTS.strikes.window))]
    strike_window: u64,
    /// Pings one node may send per window before a strike (0: no limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULTS.strikes.max_pings)]
    max_pings: u32,
    /// Links one node may open per window before a strike (0: no limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULTS.strikes.max_links_per_node)]
    max_links_per_node: u32,
    /// Connections one IP address may open per window before a strike (0:
    /// no limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULTS.strikes.max_connections_per_ip)]
    max_connections_per_ip: u32,
    /// Strikes after which a node or address is refused.
    #[arg(long, value_name = "N", default_value_t = DEFAULTS.strikes.strikes_to_refuse)]
    strikes: u32,
    /// How long a struck-out node or address is refused, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = millis(DEFAULTS.strikes.cool_off))]
    cool_off: u64,
}

static DEFAULTS: std::sync::LazyLock<NodeConfig> = std::sync::LazyLock::new(NodeConfig::default);

fn millis(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl LimitArgs {
    fn apply(&self, c: &mut NodeConfig) -> Result<(), super::UsageError> {
        if self.max_frame < 128 * 1024 {
            return Err(super::UsageError(format!(
                "--max-frame {} is too small; use at least 131072",
                self.max_frame
            )));
        }
        if self.strikes == 0 {
            return Err(super::UsageError(
                "--strikes 0 would refuse everyone; use at least 1 (or turn a count off with 0)"
                    .into(),
            ));
        }
        c.handshake_timeout = Duration::from_millis(self.handshake_timeout);
        c.max_links = self.max_links;
        c.max_links_per_ip = self.max_links_per_ip;
        c.max_handshakes = self.max_handshakes;
        c.max_handshakes_per_ip = self.max_handshakes_per_ip;
        c.limits.max_frame = self.max_frame;
        c.max_payload = c.max_payload.min(self.max_frame as usize - 64 * 1024);
        c.max_pending_bytes = self.max_pending_bytes;
        c.slow_consumer_timeout = Duration::from_millis(self.slow_consumer_timeout);
        c.strikes.window = Duration::from_millis(self.strike_window);
        c.strikes.max_pings = self.max_pings;
        c.strikes.max_links_per_node = self.max_links_per_node;
        c.strikes.max_connections_per_ip = self.max_connections_per_ip;
        c.strikes.strikes_to_refuse = self.strikes;
        c.strikes.cool_off = Duration::from_millis(self.cool_off);
        Ok(())
    }
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let mut cfg = NodeConfig::default();
    a.limits.apply(&mut cfg)?;
    let mut b = Node::builder().listen(&a.listen).config(cfg);
    for p in &a.peer {
        b = b.peer(p);
    }
    if let Some(d) = &a.data {
        b = b.data_dir(d);
    }
    if let Some(n) = &a.name {
        b = b.name(n);
    }
    if let Some(adv) = &a.advertise {
        b = b.advertise(adv);
    }
    if let Some(p) = &a.permissions {
        b = b.permissions_file(p);
    }
    if a.raft {
        b = b.raft();
    }
    let (b, security) = a.security.apply(b, a.data.as_deref())?;
    if let (Security::Tls { node, .. }, false) = (security, a.security.admits_others()) {
        tracing::warn!(
            "no --trust or --ca: this node (id {node}) admits no other node's key; to admit \
             peers, list their node ids (as `meshwire keygen` prints them) in a file, one per \
             line, and pass --trust FILE"
        );
    }
    let stop = stop_signal();
    let mut hangups = Hangups::install();
    let node = b.start().await?;
    let ready = serde_json::json!({
        "event": "ready",
        "node": node.id().to_string(),
        "listen": node.listen_addr().unwrap_or_default(),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    tracing::info!(listen = node.listen_addr().unwrap_or_default(), "ready");
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangups.recv() => {
                let trust = a.security.reload_trust(&node).await;
                if a.permissions.is_some() {
                    // Success and failure (with the reason) are logged by the
                    // node; on failure the rules in force stay.
                    let _ = node.reload_permissions().await;
                } else if !trust {
                    tracing::info!("SIGHUP: nothing to reload (no --trust, --ca or --permissions)");
                }
            }
        }
    }
    tracing::info!("stop requested; draining");
    node.shutdown().await;
    Ok(())
}
