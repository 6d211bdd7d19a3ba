//! `meshwire node`: a router that runs until told to stop.

use super::stop_signal;
use meshwire::Node;
use std::io::Write;
use std::path::PathBuf;

/// Run a router node.
///
/// When ready it prints one JSON line to stdout:
/// {"event":"ready","node":"<NodeId>","listen":"<ADDR>"} — port 0 picks a
/// free port and the line says which. Logs go to stderr. SIGINT/SIGTERM
/// drain and exit 0.
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
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let mut b = Node::builder().listen(&a.listen);
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
    stop_signal().await;
    tracing::info!("stop requested; draining");
    node.shutdown().await;
    Ok(())
}
