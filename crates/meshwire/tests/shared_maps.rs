//! Shared maps over real TLS links in one process: a three-member Raft
//! group on routers (linearizable maps) and CRDT replicas (eventual maps).

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use meshwire::state::{Cas, Consistency, MapError, SharedMap};
use meshwire::Node;
use std::time::Duration;
use support::WAIT;

/// Three routers with `raft`, the later two peering with the first, and a
/// client attached to the third. Waits (bounded) until the group has three
/// voters.
async fn raft_mesh(dirs: &tempfile::TempDir) -> (Vec<Node>, Node) {
    let first = support::builder()
        .listen("127.0.0.1:0")
        .data_dir(dirs.path().join("a"))
        .raft()
        .start()
        .await
        .unwrap();
    let addr = first.listen_addr().unwrap().to_owned();
    let mut routers = vec![first];
    for name in ["b", "c"] {
        let r = support::builder()
            .listen("127.0.0.1:0")
            .peer(&addr)
            .data_dir(dirs.path().join(name))
            .raft()
            .start()
            .await
            .unwrap();
        routers.push(r);
    }
    let client = support::builder()
        .connect(routers[2].listen_addr().unwrap())
        .start()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(info) = client.raft_group().await {
                if info.voters.len() == 3 && info.leader.is_some() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("three voters within 30 s");
    (routers, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_map_works_from_any_node_and_cas_has_one_winner() {
    let dirs = tempfile::tempdir().unwrap();
    let (routers, client) = raft_mesh(&dirs).await;
    let map: SharedMap<String, serde_json::Value> = client
        .shared_map("jobs", Consistency::Linearizable)
        .await
        .unwrap();
    let v1 = map.put(&"job/1".into(), &"queued".into()).await.unwrap();
    let got = map.get(&"job/1".into()).await.unwrap().unwrap();
    assert_eq!((got.value.as_str(), got.version), (Some("queued"), v1));

    // Every router reads the same, linearizably.
    for r in &routers {
        let m: SharedMap<String, serde_json::Value> = r
            .existing_map("jobs", Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(m.get(&"job/1".into()).await.unwrap().unwrap().version, v1);
    }

    // Two swaps from the same version: exactly one wins.
    let other: SharedMap<String, serde_json::Value> = routers[0]
        .existing_map("jobs", Consistency::Linearizable)
        .await
        .unwrap();
    let key = "job/1".to_owned();
    let (va, vb) = (
        serde_json::json!("taken by a"),
        serde_json::json!("taken by b"),
    );
    let (a, b) = tokio::join!(
        map.compare_and_swap(&key, v1, &va),
        other.compare_and_swap(&key, v1, &vb),
    );
    let wins = [a.unwrap(), b.unwrap()]
        .iter()
        .filter(|c| matches!(c, Cas::Swapped { .. }))
        .count();
    assert_eq!(wins, 1, "exactly one cas from version {v1} wins");

    // Watch sees later writes in commit order, deletes included.
    let mut watch = map.watch("job/").await.unwrap();
    let v2 = map.put(&"job/2".into(), &1.into()).await.unwrap();
    let d = map.delete(&"job/2".into()).await.unwrap();
    assert!(d.existed && d.version > v2);
    let c1 = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let c2 = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (c1.key.as_str(), c1.version, c1.value.is_some()),
        ("job/2", v2, true)
    );
    assert_eq!(
        (c2.key.as_str(), c2.version, c2.value),
        ("job/2", d.version, None)
    );

    let snapshot = map.snapshot("job/").await.unwrap();
    assert_eq!(snapshot.len(), 1);
    assert!(snapshot.version() >= d.version);

    // Bad input: typed errors, nothing written.
    let unknown: SharedMap<String, u32> = client
        .existing_map("nope", Consistency::Linearizable)
        .await
        .unwrap();
    assert!(matches!(
        unknown.put(&"k".into(), &1).await,
        Err(MapError::UnknownMap { .. })
    ));
    assert!(matches!(
        map.put(&String::new(), &1.into()).await,
        Err(MapError::Invalid(_))
    ));
    let huge = serde_json::Value::String("x".repeat(2 << 20));
    assert!(matches!(
        map.put(&"big".into(), &huge).await,
        Err(MapError::Invalid(_))
    ));
    assert!(map.get(&"big".into()).await.unwrap().is_none());

    client.shutdown().await;
    for r in routers {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_maps_converge_through_routers() {
    let router = support::builder()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addr = router.listen_addr().unwrap().to_owned();
    let a = support::builder().connect(&addr).start().await.unwrap();
    let b = support::builder().connect(&addr).start().await.unwrap();
    let ma: SharedMap<String, u64> = a
        .shared_map("counters", Consistency::Eventual)
        .await
        .unwrap();
    let mb: SharedMap<String, u64> = b
        .shared_map("counters", Consistency::Eventual)
        .await
        .unwrap();
    let mut watch = mb.watch("c/").await.unwrap();
    let v = ma.put(&"c/1".into(), &7).await.unwrap();
    let change = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (change.key.as_str(), change.value, change.version),
        ("c/1", Some(7), v)
    );
    assert_eq!(mb.get(&"c/1".into()).await.unwrap().unwrap().value, 7);

    // A node that opens the map later gets its state by anti-entropy.
    let c = support::builder().connect(&addr).start().await.unwrap();
    let mc: SharedMap<String, u64> = c
        .existing_map("counters", Consistency::Eventual)
        .await
        .unwrap();
    assert_eq!(mc.get(&"c/1".into()).await.unwrap().unwrap().version, v);
    // A map nobody has is unknown.
    assert!(matches!(
        c.existing_map::<String, u64>("nobody", Consistency::Eventual)
            .await,
        Err(MapError::UnknownMap { .. })
    ));
    for n in [a, b, c, router] {
        n.shutdown().await;
    }
}

/// Two routers, linked only through a proxy the test cuts: both sides keep
/// writing an eventual map during the partition (concurrent writes to one
/// key included), and once it heals every replica holds the same entries,
/// the later stamp winning the contested key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventual_maps_converge_after_a_partition_heals() {
    use meshwire::testkit::CutProxy;
    // Each router is reachable by the other only through its proxy.
    let (pa, pb) = (
        CutProxy::bind().await.unwrap(),
        CutProxy::bind().await.unwrap(),
    );
    let ra = support::builder()
        .listen("127.0.0.1:0")
        .advertise(pa.addr().to_string())
        .start()
        .await
        .unwrap();
    pa.set_target(ra.listen_addr().unwrap());
    let rb = support::builder()
        .listen("127.0.0.1:0")
        .advertise(pb.addr().to_string())
        .peer(pa.addr().to_string())
        .start()
        .await
        .unwrap();
    pb.set_target(rb.listen_addr().unwrap());
    let ca = support::builder()
        .connect(ra.listen_addr().unwrap())
        .start()
        .await
        .unwrap();
    let cb = support::builder()
        .connect(rb.listen_addr().unwrap())
        .start()
        .await
        .unwrap();
    let ma: SharedMap<String, String> =
        ca.shared_map("prefs", Consistency::Eventual).await.unwrap();
    let mb: SharedMap<String, String> =
        cb.shared_map("prefs", Consistency::Eventual).await.unwrap();
    ma.put(&"before".into(), &"both see it".into())
        .await
        .unwrap();
    converge(&ma, &mb, "before the partition").await;

    pa.partition();
    pb.partition();
    for i in 0..20 {
        ma.put(&format!("a/{i}"), &"from a".into()).await.unwrap();
        mb.put(&format!("b/{i}"), &"from b".into()).await.unwrap();
    }
    let va = ma.put(&"contested".into(), &"a".into()).await.unwrap();
    let vb = mb.put(&"contested".into(), &"b".into()).await.unwrap();
    mb.delete(&"before".into()).await.unwrap();
    assert!(
        ma.get(&"b/0".into()).await.unwrap().is_none(),
        "the partition holds"
    );

    pa.heal();
    pb.heal();
    converge(&ma, &mb, "after the partition healed").await;
    // The greater stamp wins (clock reading, then node id on a tie), the
    // same on both sides (converge checked that).
    let contested = ma.get(&"contested".into()).await.unwrap().unwrap();
    assert_eq!(contested.version, va.max(vb), "the later stamp wins");
    let expected = match va.cmp(&vb) {
        std::cmp::Ordering::Greater => Some("a"),
        std::cmp::Ordering::Less => Some("b"),
        std::cmp::Ordering::Equal => None, // decided by node id
    };
    if let Some(e) = expected {
        assert_eq!(contested.value, e, "the later stamp wins");
    }
    assert!(
        ma.get(&"before".into()).await.unwrap().is_none(),
        "the delete reached A"
    );
    assert_eq!(ma.snapshot("").await.unwrap().len(), 41);
    for n in [ca, cb, rb, ra] {
        n.shutdown().await;
    }
}

/// Waits (bounded) until two replicas list the same entries.
async fn converge(a: &SharedMap<String, String>, b: &SharedMap<String, String>, when: &str) {
    let listing = |m: &SharedMap<String, String>| {
        let m = m.clone();
        async move {
            m.snapshot("")
                .await
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k, v.value, v.version))
                .collect::<Vec<_>>()
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (la, lb) = (listing(a).await, listing(b).await);
        if la == lb && !la.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replicas did not converge {when} within 30 s:\n{la:?}\n{lb:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
