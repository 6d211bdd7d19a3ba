//! `meshwire serve`: a built-in demo service, for trying RPC, balancing
//! and failover from the shell.

use super::{stop_signal, ConnectArgs, UsageError};
use meshwire::rpc::{Context, Service};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Serve the demo service SERVICE until SIGINT/SIGTERM.
///
/// Methods (JSON in, JSON out):
///   echo  ANY            → ANY (idempotent)
///   add   {"a":1,"b":2}  → 3   (idempotent)
///   note  ANY            → how many times `note` ran here (NOT idempotent:
///                          never retried, so never runs twice per call)
///   stats {}             → {"node":..,"calls":{"echo":N,...}} (idempotent)
///
/// Prints {"event":"serving","service":..,"node":..} on stdout when ready.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Service name to serve (a subject token, e.g. `calc`).
    #[arg(long, short = 's', value_name = "NAME")]
    service: String,
    /// Weight advertised to weighted balancers.
    #[arg(long, default_value_t = 100)]
    weight: u32,
    /// Delay every call by this many milliseconds (to play with
    /// least-loaded balancing and deadlines).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    delay_ms: u64,
}

#[derive(Debug, Deserialize, Serialize)]
struct AddReq {
    a: i64,
    b: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct DemoError {
    error: String,
}

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

fn count(c: &Counts, method: &str) -> u64 {
    let mut m = c.lock().unwrap_or_else(|e| e.into_inner());
    let n = m.entry(method.to_owned()).or_insert(0);
    *n += 1;
    *n
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    if a.service.is_empty() || a.service.contains(['.', '*', '>', ' ']) {
        return Err(UsageError(format!(
            "--service {:?}: use one token of letters, digits, `-` or `_`",
            a.service
        ))
        .into());
    }
    let stop = stop_signal();
    let node = a.connect.attach().await?;
    let counts: Counts = Default::default();
    let delay = Duration::from_millis(a.delay_ms);
    let id = node.id().to_string();
    let (c1, c2, c3, c4) = (
        counts.clone(),
        counts.clone(),
        counts.clone(),
        counts.clone(),
    );
    let id2 = id.clone();
    let service = Service::new(&a.service)
        .weight(a.weight)
        .unary("echo", true, move |_ctx: Context, v: Value| {
            let c = c1.clone();
            async move {
                count(&c, "echo");
                tokio::time::sleep(delay).await;
                Ok::<_, DemoError>(v)
            }
        })
        .unary("add", true, move |_ctx: Context, r: AddReq| {
            let c = c2.clone();
            async move {
                count(&c, "add");
                tokio::time::sleep(delay).await;
                r.a.checked_add(r.b).ok_or(DemoError {
                    error: "overflow".into(),
                })
            }
        })
        .unary("note", false, move |_ctx: Context, _v: Value| {
            let c = c3.clone();
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, DemoError>(count(&c, "note"))
            }
        })
        .unary("stats", true, move |_ctx: Context, _v: Value| {
            let c = c4.clone();
            let id = id2.clone();
            async move {
                let calls = c.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Ok::<_, DemoError>(serde_json::json!({ "node": id, "calls": calls }))
            }
        });
    let serving = node.serve(service).await?;
    println!(
        "{}",
        serde_json::json!({"event": "serving", "service": a.service, "node": id})
    );
    stop.await;
    drop(serving);
    node.shutdown().await;
    Ok(())
}
