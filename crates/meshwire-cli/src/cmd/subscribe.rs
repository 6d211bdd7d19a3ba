//! `meshwire sub`: print what arrives.

use super::{stop_signal, ConnectArgs, UsageError};
use futures_util::FutureExt;
use std::io::Write;

/// Print one payload per line as messages arrive (flushing as it goes), or
/// one JSON object per line with --json. Exits after --count messages, or
/// on SIGINT/SIGTERM.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Pattern to subscribe to: `*` matches one token, `>` the rest
    /// (e.g. `orders.*`, `orders.>`).
    #[arg(long, short = 't', value_name = "PATTERN")]
    topic: String,
    /// Queue group: each message goes to one member of the group.
    #[arg(long, short = 'g', value_name = "GROUP")]
    group: Option<String>,
    /// Exit after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    /// Print {"topic":...,"payload":...} objects instead of raw payloads.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    meshwire::proto::wire::Subject::pattern(&a.topic)
        .map_err(|e| UsageError(format!("--topic {:?}: {e}", a.topic)))?;
    if a.count == Some(0) {
        return Ok(());
    }
    let node = a.connect.attach().await?;
    let mut s = node.subscribe(&a.topic);
    if let Some(g) = &a.group {
        s = s.group(g);
    }
    let mut sub = s.await?;
    tracing::info!(topic = %a.topic, "subscribed");
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut seen = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    'outer: loop {
        let first = tokio::select! {
            m = sub.recv() => m,
            _ = &mut stop => break,
        };
        let Some(mut msg) = first else {
            if let Some(e) = sub.error() {
                // The router's permissions refused or revoked it.
                out.flush()?;
                return Err(e.into());
            }
            break;
        };
        // Write everything already waiting, then flush once.
        loop {
            if a.json {
                let line = serde_json::json!({
                    "topic": msg.subject(),
                    "payload": String::from_utf8_lossy(msg.payload()),
                });
                writeln!(out, "{line}")?;
            } else {
                out.write_all(msg.payload())?;
                out.write_all(b"\n")?;
            }
            seen += 1;
            if a.count.is_some_and(|n| seen >= n) {
                break 'outer;
            }
            match sub.recv().now_or_never() {
                Some(Some(m)) => msg = m,
                _ => break,
            }
        }
        out.flush()?;
    }
    out.flush()?;
    drop(out);
    drop(sub);
    node.shutdown().await;
    Ok(())
}
