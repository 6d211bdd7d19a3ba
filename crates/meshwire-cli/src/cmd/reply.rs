//! `meshwire reply`: a responder.

use super::{stop_signal, ConnectArgs, UsageError};
use bytes::{BufMut, BytesMut};

/// Answer requests on SUBJECT: echo each payload back (after --prefix).
/// Runs until --count requests were answered, or SIGINT/SIGTERM.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Subject (or pattern) to serve.
    #[arg(long, short = 's', value_name = "SUBJECT")]
    subject: String,
    /// Queue group, so several responders share the requests.
    #[arg(long, short = 'g', value_name = "GROUP")]
    group: Option<String>,
    /// Text put before the echoed payload.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Exit after answering this many requests.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    meshwire::proto::wire::Subject::pattern(&a.subject)
        .map_err(|e| UsageError(format!("--subject {:?}: {e}", a.subject)))?;
    let node = a.connect.attach().await?;
    let mut s = node.subscribe(&a.subject);
    if let Some(g) = &a.group {
        s = s.group(g);
    }
    let mut sub = s.await?;
    eprintln!("meshwire reply: answering requests on {:?}", a.subject);
    let mut answered = 0u64;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            m = sub.recv() => m,
            _ = &mut stop => break,
        };
        let Some(msg) = msg else { break };
        if msg.reply_to().is_none() {
            tracing::debug!(subject = msg.subject(), "not a request; ignored");
            continue;
        }
        let mut body = BytesMut::with_capacity(a.prefix.len() + msg.payload().len());
        body.put_slice(a.prefix.as_bytes());
        body.put_slice(msg.payload());
        node.respond(&msg, body.freeze()).await?;
        answered += 1;
        if a.count.is_some_and(|n| answered >= n) {
            break;
        }
    }
    drop(sub);
    node.flush().await?;
    node.shutdown().await;
    Ok(())
}
