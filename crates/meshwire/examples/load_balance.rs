//! Load balancing, side by side: the same 600 calls over three instances
//! of a service (weights 1, 2, 3; the heavier ones slower), once per
//! policy, and how many calls each instance answered.
//! Run: `cargo run -p meshwire --example load_balance`

use meshwire::balance::Policy;
use meshwire::rpc::{CallOpts, Client, Codec, Context, Service};
use meshwire::{Node, NodeId};
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _router = Node::builder().listen("mem:lb-router").start().await?;
    let mut instances = Vec::new();
    for (weight, delay_ms) in [(1u32, 0u64), (2, 1), (3, 3)] {
        let node = Node::builder().connect("mem:lb-router").start().await?;
        let service = Service::new("work").weight(weight).unary(
            "run",
            true,
            move |_ctx: Context, job: u64| async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok::<u64, String>(job)
            },
        );
        let serving = node.serve(service).await?;
        instances.push((node, serving, weight, delay_ms));
    }
    let caller = Node::builder().connect("mem:lb-router").start().await?;
    println!("600 calls, 16 in flight, per instance (weight / delay):");
    let header: Vec<String> = instances
        .iter()
        .map(|(_, _, w, d)| format!("{:>8}", format!("w{w}/{d}ms")))
        .collect();
    println!("{:<16}{}", "", header.join("  "));

    for policy in [
        Policy::RoundRobin,
        Policy::Random,
        Policy::Weighted,
        Policy::LeastLoaded,
        Policy::ConsistentHash,
    ] {
        let client = Client::builder(&caller, "work")
            .balance(policy)
            .build()
            .await?;
        while client.instances().len() < instances.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut per: BTreeMap<NodeId, u32> = BTreeMap::new();
        let mut batch = Vec::new();
        for job in 0..600u64 {
            let c = client.clone();
            batch.push(tokio::spawn(async move {
                let mut opts = CallOpts::default();
                opts.idempotent = true;
                // JSON bodies through `call_raw`, which also reports which
                // instance answered.
                opts.codec = Codec::Json;
                // Consistent hashing routes by key: six customers, each
                // sticking to one instance.
                opts.key = Some(format!("customer-{}", job % 6).into_bytes());
                let body = serde_json::to_vec(&job).unwrap_or_default();
                c.call_raw("run", body, opts).await
            }));
            if batch.len() == 16 || job == 599 {
                for h in batch.drain(..) {
                    let (_, _, id) = h.await?.map_err(|e| e.to_string())?;
                    *per.entry(id).or_insert(0) += 1;
                }
            }
        }
        let counts: Vec<String> = instances
            .iter()
            .map(|(n, ..)| format!("{:>8}", per.get(&n.id()).copied().unwrap_or(0)))
            .collect();
        println!("{:<16}{}", policy.to_string(), counts.join("  "));
    }
    for (node, serving, ..) in instances {
        drop(serving);
        node.shutdown().await;
    }
    Ok(())
}
