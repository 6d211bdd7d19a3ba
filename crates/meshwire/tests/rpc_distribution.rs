//! Balancing measured on real calls (not just the balancer's picks):
//! three instances in one process over the in-memory transport.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use meshwire::balance::Policy;
use meshwire::rpc::{CallOpts, Client, Codec, Context, Service, Serving};
use meshwire::{Node, NodeId};
use std::collections::BTreeMap;
use support::wait_instances;

async fn instances(router: &str, weights: &[u32]) -> Vec<(Node, Serving)> {
    let mut out = Vec::new();
    for &w in weights {
        let n = support::builder().connect(router).start().await.unwrap();
        let s =
            n.serve(Service::new("dist").weight(w).unary(
                "id",
                true,
                |_c: Context, (): ()| async { Ok::<(), String>(()) },
            ))
            .await
            .unwrap();
        out.push((n, s));
    }
    out
}

async fn client(node: &Node, policy: Policy, expect: usize) -> Client {
    let c = Client::builder(node, "dist")
        .balance(policy)
        .build()
        .await
        .unwrap();
    wait_instances(&c, expect).await;
    c
}

/// Makes `n` calls (16 in flight) and counts who answered.
async fn spread(
    c: &Client,
    n: usize,
    key: impl Fn(usize) -> Option<Vec<u8>>,
) -> BTreeMap<NodeId, usize> {
    let mut by = BTreeMap::new();
    let mut batch = Vec::new();
    for i in 0..n {
        let c = c.clone();
        let mut opts = CallOpts::default();
        opts.codec = Codec::Json;
        opts.key = key(i);
        batch.push(tokio::spawn(async move {
            c.call_raw("id", b"null".to_vec(), opts).await
        }));
        if batch.len() == 16 || i + 1 == n {
            for h in batch.drain(..) {
                let (_, _, id) = h.await.unwrap().unwrap();
                *by.entry(id).or_insert(0) += 1;
            }
        }
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_one_two_three_over_6000_calls() {
    let _r = support::builder()
        .listen("mem:dist-weighted")
        .start()
        .await
        .unwrap();
    let inst = instances("mem:dist-weighted", &[1, 2, 3]).await;
    let caller = support::builder()
        .connect("mem:dist-weighted")
        .start()
        .await
        .unwrap();
    let c = client(&caller, Policy::Weighted, 3).await;
    let by = spread(&c, 6000, |_| None).await;
    for ((node, _), w) in inst.iter().zip([1usize, 2, 3]) {
        let got = by.get(&node.id()).copied().unwrap_or(0) as f64 / 6000.0;
        let want = w as f64 / 6.0;
        assert!(
            (got - want).abs() <= 0.03,
            "weight {w}: share {got:.3}, expected {want:.3}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_exact_over_real_calls() {
    let _r = support::builder()
        .listen("mem:dist-rr")
        .start()
        .await
        .unwrap();
    let inst = instances("mem:dist-rr", &[100, 100, 100]).await;
    let caller = support::builder()
        .connect("mem:dist-rr")
        .start()
        .await
        .unwrap();
    let c = client(&caller, Policy::RoundRobin, 3).await;
    let by = spread(&c, 3000, |_| None).await;
    for (node, _) in &inst {
        assert_eq!(by.get(&node.id()).copied(), Some(1000), "{by:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_moves_only_the_keys_of_a_leaving_instance() {
    let _r = support::builder()
        .listen("mem:dist-ch")
        .start()
        .await
        .unwrap();
    let mut inst = instances("mem:dist-ch", &[100, 100, 100, 100]).await;
    let caller = support::builder()
        .connect("mem:dist-ch")
        .start()
        .await
        .unwrap();
    let c = client(&caller, Policy::ConsistentHash, 4).await;
    let keys = 400;
    let owner = |c: Client| async move {
        let mut map = BTreeMap::new();
        for k in 0..keys {
            let mut opts = CallOpts::default();
            opts.codec = Codec::Json;
            opts.key = Some(format!("key-{k}").into_bytes());
            let (_, _, id) = c.call_raw("id", b"null".to_vec(), opts).await.unwrap();
            map.insert(k, id);
        }
        map
    };
    let before = owner(c.clone()).await;
    // Every key always lands on the same instance.
    assert_eq!(before, owner(c.clone()).await);
    // One instance leaves: only its keys move.
    let (gone_node, gone) = inst.pop().unwrap();
    let gone_id = gone_node.id();
    gone.stop().await;
    wait_instances(&c, 3).await;
    let after = owner(c.clone()).await;
    let mut moved = 0;
    for k in 0..keys {
        if before[&k] == gone_id {
            assert_ne!(after[&k], gone_id);
            moved += 1;
        } else {
            assert_eq!(
                after[&k], before[&k],
                "key {k} moved although its instance stayed"
            );
        }
    }
    // About 1/4 of the keys were on the leaver.
    assert!(
        (keys / 8..=keys / 2).contains(&moved),
        "{moved} of {keys} moved"
    );
}
