//! `meshwire pub`: publish stdin lines or generated payloads.

use super::{ConnectArgs, UsageError};
use bytes::Bytes;
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

/// Publish each stdin line as one message (without its newline), or
/// generate --count payloads of --size bytes.
///
/// Exits 0 only once every message is acknowledged by the router, then
/// prints one JSON summary line: {"published":N,"acked":N,...}.
/// Generated payloads are the message's index as zero-padded decimal
/// (`000…0042`), so subscribers can check order and completeness.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Subject to publish on (no wildcards), e.g. `orders.created`.
    #[arg(long, short = 't', value_name = "TOPIC")]
    topic: String,
    /// Generate this many messages instead of reading stdin.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    /// Size of each generated payload in bytes (with --count).
    #[arg(long, short = 's', value_name = "BYTES", default_value_t = 64)]
    size: usize,
    /// At most once: no acknowledgement, no retransmission, lowest cost.
    #[arg(long, conflicts_with = "unordered")]
    best_effort: bool,
    /// Reliable but delivered on arrival rather than in order.
    #[arg(long)]
    unordered: bool,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    if a.count.is_none() && std::io::stdin().is_terminal() {
        eprintln!("meshwire pub: reading messages from the terminal, one per line; Ctrl-D ends");
    }
    if a.count.is_some() && a.size == 0 {
        return Err(UsageError("--size must be at least 1".into()).into());
    }
    // Check the subject before connecting, so a typo is a usage error.
    meshwire::proto::wire::Subject::literal(&a.topic)
        .map_err(|e| UsageError(format!("--topic {:?}: {e}", a.topic)))?;
    let node = a.connect.attach().await?;
    let started = Instant::now();
    let mut published = 0u64;
    let mut bytes = 0u64;
    let progress = std::io::stderr().is_terminal();
    let mut last_report = Instant::now();

    let publish = |payload: Bytes| {
        let mut p = node.publish(&a.topic, payload);
        if a.best_effort {
            p = p.best_effort();
        } else if a.unordered {
            p = p.unordered();
        }
        p.send()
    };

    match a.count {
        Some(n) => {
            let width = a.size;
            for i in 0..n {
                let payload = Bytes::from(format!("{i:0width$}"));
                bytes += payload.len() as u64;
                publish(payload).await?;
                published += 1;
                if progress && last_report.elapsed() >= Duration::from_secs(1) {
                    last_report = Instant::now();
                    eprint!("\rpublished {published}/{n}");
                }
            }
        }
        None => {
            // Blocking stdin is read on a blocking thread and handed over
            // line by line, so the runtime keeps serving the link.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
            let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let stdin = std::io::stdin();
                let mut lock = stdin.lock();
                loop {
                    let mut line = Vec::new();
                    if lock.read_until(b'\n', &mut line)? == 0 {
                        return Ok(());
                    }
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(line).is_err() {
                        return Ok(());
                    }
                }
            });
            while let Some(line) = rx.recv().await {
                bytes += line.len() as u64;
                publish(Bytes::from(line)).await?;
                published += 1;
            }
            reader.await??;
        }
    }
    node.flush().await?;
    if progress && published > 0 {
        eprintln!("\rpublished {published}, all acknowledged");
    }
    let secs = started.elapsed().as_secs_f64();
    let acked = if a.best_effort { 0 } else { published };
    let summary = serde_json::json!({
        "published": published,
        "acked": acked,
        "delivery": if a.best_effort { "best-effort" } else if a.unordered { "reliable-unordered" } else { "reliable" },
        "bytes": bytes,
        "seconds": (secs * 1e6).round() / 1e6,
        "msgs_per_sec": if secs > 0.0 { (published as f64 / secs).round() } else { 0.0 },
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{summary}")?;
    out.flush()?;
    drop(out);
    node.shutdown().await;
    Ok(())
}
