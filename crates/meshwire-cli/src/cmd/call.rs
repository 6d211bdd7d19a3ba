//! `meshwire call`: call any service method with JSON.

use super::{ConnectArgs, UsageError};
use meshwire::balance::Policy;
use meshwire::rpc::{CallOpts, Client, Codec, RpcError};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// Call SERVICE.METHOD with a JSON argument and print each result as one
/// JSON line. With --count, call repeatedly; with --stats, print last one
/// summary object: {"calls","ok","errors","by_node":{..},"p50_us","p99_us"}.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// What to call: SERVICE.METHOD, e.g. `calc.add`.
    #[arg(value_name = "SERVICE.METHOD")]
    target: String,
    /// The argument, as JSON (e.g. '{"a":1,"b":2}').
    #[arg(value_name = "JSON", default_value = "{}")]
    json: String,
    /// How many calls to make.
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Balancing: round-robin, random, weighted, least-loaded, hash:KEY.
    #[arg(long, default_value = "least-loaded")]
    balance: String,
    /// Deadline per call in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    timeout: u64,
    /// Treat the method as idempotent (retried on another instance if its
    /// instance fails). Methods the service declares idempotent are
    /// treated so without this flag.
    #[arg(long)]
    idempotent: bool,
    /// Print results only for failures, then the summary (implies --stats).
    #[arg(long)]
    quiet: bool,
    /// Print a JSON summary line at the end.
    #[arg(long)]
    stats: bool,
}

fn parse_policy(s: &str) -> Result<(Policy, Option<Vec<u8>>), UsageError> {
    if let Some(k) = s.strip_prefix("hash:") {
        if !k.is_empty() {
            return Ok((Policy::ConsistentHash, Some(k.as_bytes().to_vec())));
        }
    }
    match s.parse::<Policy>() {
        Ok(Policy::ConsistentHash) => Err(UsageError(format!(
            "--balance {s:?}: consistent hashing needs a key: hash:KEY"
        ))),
        Ok(p) => Ok((p, None)),
        Err(_) => Err(UsageError(format!(
            "--balance {s:?}: use round-robin, random, weighted, least-loaded or hash:KEY"
        ))),
    }
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let Some((service, method)) = a.target.split_once('.') else {
        return Err(UsageError(format!(
            "{:?}: write SERVICE.METHOD, e.g. calc.add",
            a.target
        ))
        .into());
    };
    let arg: serde_json::Value = serde_json::from_str(&a.json)
        .map_err(|e| UsageError(format!("argument {:?} is not JSON: {e}", a.json)))?;
    let (policy, key) = parse_policy(&a.balance)?;
    if a.count == 0 || a.concurrency == 0 {
        return Err(UsageError("--count and --concurrency must be at least 1".into()).into());
    }
    let node = a.connect.attach().await?;
    let client = Client::builder(&node, service)
        .balance(policy)
        .build()
        .await?;
    let body = serde_json::to_vec(&arg)?;
    let mut opts = CallOpts::default();
    opts.idempotent = a.idempotent;
    opts.key = key;
    opts.timeout = Some(Duration::from_millis(a.timeout));
    opts.codec = Codec::Json;

    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut by_node: BTreeMap<String, u64> = BTreeMap::new();
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut issued = 0u64;
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    let quiet = a.quiet;
    while issued < a.count || !inflight.is_empty() {
        while issued < a.count && inflight.len() < a.concurrency {
            issued += 1;
            let (c, b, o, m) = (
                client.clone(),
                body.clone(),
                opts.clone(),
                method.to_owned(),
            );
            inflight.push(async move {
                let t = Instant::now();
                let r = c.call_raw(&m, b, o).await;
                (t.elapsed(), r)
            });
        }
        let Some((took, r)) = futures_util::StreamExt::next(&mut inflight).await else {
            break;
        };
        hist.record(took.as_micros().max(1) as u64).ok();
        match r {
            Ok((body, _, id)) => {
                ok += 1;
                *by_node.entry(id.to_string()).or_insert(0) += 1;
                if !quiet {
                    out.write_all(&body)?;
                    out.write_all(b"\n")?;
                }
            }
            Err(e @ RpcError::PermissionDenied { .. }) => {
                // Every further call would be refused the same way.
                out.flush()?;
                drop(out);
                node.shutdown().await;
                anyhow::bail!("{e}");
            }
            Err(e) => {
                errors += 1;
                let msg = match e {
                    RpcError::Application(body) => serde_json::json!({
                        "error": "application",
                        "detail": serde_json::from_slice::<serde_json::Value>(&body)
                            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into()),
                    }),
                    other => serde_json::json!({
                        "error": other.map_app(|b| String::from_utf8_lossy(&b).into_owned()).to_string()
                    }),
                };
                writeln!(out, "{msg}")?;
            }
        }
    }
    if a.stats || a.quiet {
        let summary = serde_json::json!({
            "calls": ok + errors,
            "ok": ok,
            "errors": errors,
            "by_node": by_node,
            "p50_us": hist.value_at_quantile(0.5),
            "p99_us": hist.value_at_quantile(0.99),
            "max_us": hist.max(),
        });
        writeln!(out, "{summary}")?;
    }
    out.flush()?;
    drop(out);
    node.shutdown().await;
    if errors > 0 {
        if a.count == 1 {
            anyhow::bail!("the call failed");
        }
        anyhow::bail!("{errors} of {} calls failed", ok + errors);
    }
    Ok(())
}
