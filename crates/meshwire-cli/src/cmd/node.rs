//! `meshwire node`: a router that runs until told to stop.

use super::{stop_signal, Hangups, Security};
use meshwire::Node;
use std::io::Write;
use std::path::PathBuf;

/// Run a router node.
///
/// When ready it prints one JSON line to stdout:
/// {"event":"ready","node":"<NodeId>","listen":"<ADDR>"} — port 0 picks a
/// free port and the line says which. Logs go to stderr. SIGINT/SIGTERM
/// drain and exit 0; SIGHUP reloads --permissions.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to listen on, HOST:PORT (port 0 picks a free one).
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
    /// A connection must complete its handshake within this many
    /// milliseconds or it is closed (guards against idle and slow peers).
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    handshake_timeout: u64,
    /// Most connections held at once; more are refused.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_links: usize,
    /// Largest frame accepted, in bytes; a peer announcing a larger one is
    /// disconnected before anything is allocated.
    #[arg(long, value_name = "BYTES", default_value_t = meshwire::proto::wire::Limits::default().max_frame)]
    max_frame: u32,
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
    /// Links are mutually authenticated TLS 1.3: --key FILE (default: DIR/
    /// node.key with --data DIR), --trust FILE or --ca FILE; --insecure for
    /// plaintext.
    #[command(flatten)]
    security: super::SecurityArgs,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    if a.max_frame < 128 * 1024 {
        return Err(super::UsageError(format!(
            "--max-frame {} is too small; use at least 131072",
            a.max_frame
        ))
        .into());
    }
    let (hs, max_links, max_frame) = (a.handshake_timeout, a.max_links, a.max_frame);
    let mut b = Node::builder().listen(&a.listen).configure(|c| {
        c.handshake_timeout = std::time::Duration::from_millis(hs);
        c.max_links = max_links;
        c.limits.max_frame = max_frame;
        c.max_payload = c.max_payload.min(max_frame as usize - 64 * 1024);
    });
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
                if a.permissions.is_none() {
                    tracing::info!("SIGHUP: nothing to reload (no --permissions)");
                } else {
                    // Success and failure (with the reason) are logged by the
                    // node; on failure the rules in force stay.
                    let _ = node.reload_permissions().await;
                }
            }
        }
    }
    tracing::info!("stop requested; draining");
    node.shutdown().await;
    Ok(())
}
