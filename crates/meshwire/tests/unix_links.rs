//! Links over Unix domain sockets (`unix:/path`), with TLS exactly as on
//! TCP: two routers and a client exchange reliable pub/sub; the socket
//! file is cleaned up at shutdown and a stale one is replaced; a plaintext
//! peer is refused by a TLS router on a Unix socket too.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use meshwire::security::Authority;
use meshwire::{Error, Node};
use std::time::Duration;
use support::{recv, wait_remote_interest};

#[tokio::test]
async fn tls_routers_and_a_client_exchange_reliable_pubsub_over_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let (ua, ub) = (
        format!("unix:{}", pa.display()),
        format!("unix:{}", pb.display()),
    );
    let ca = Authority::generate("unix test").unwrap();
    let a = Node::builder()
        .listen(&ua)
        .tls(ca.issue().unwrap(), ca.trust())
        .start()
        .await
        .unwrap();
    assert_eq!(a.listen_addr(), Some(ua.as_str()));
    let b = Node::builder()
        .listen(&ub)
        .peer(&ua)
        .tls(ca.issue().unwrap(), ca.trust())
        .start()
        .await
        .unwrap();
    let sub_client = Node::builder()
        .connect(&ua)
        .tls(ca.issue().unwrap(), ca.trust())
        .start()
        .await
        .unwrap();
    let pub_client = Node::builder()
        .connect(&ub)
        .tls(ca.issue().unwrap(), ca.trust())
        .start()
        .await
        .unwrap();

    let mut sub = sub_client.subscribe("u.>").await.unwrap();
    wait_remote_interest(&b, 1).await;
    for i in 0..300u32 {
        pub_client
            .publish("u.x", i.to_string())
            .send()
            .await
            .unwrap();
    }
    pub_client.flush().await.unwrap();
    for i in 0..300u32 {
        assert_eq!(recv(&mut sub).await.payload(), i.to_string().as_bytes());
    }
    // The routers know each other by the ids their keys prove.
    let peers = a.status().await.unwrap().peers;
    assert!(
        peers.iter().any(|p| p.router && p.node == b.id() && p.up),
        "{peers:?}"
    );

    for n in [pub_client, sub_client, b, a] {
        n.shutdown().await;
    }
    // Shutdown returns once the engine stopped; the listener (and so the
    // socket file) goes with the accept task right after.
    tokio::time::timeout(Duration::from_secs(5), async {
        while pa.exists() || pb.exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("socket files removed at shutdown");
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_but_a_live_listener_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.sock");
    let addr = format!("unix:{}", path.display());
    // A socket file left by a listener that is gone (std's does not remove it).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let first = Node::builder().listen(&addr).insecure().start().await;
    let first = first.expect("the stale file is replaced");
    let second = Node::builder().listen(&addr).insecure().start().await;
    assert!(
        matches!(second, Err(Error::Bind { .. })),
        "a live listener is never taken over: {second:?}"
    );
    let client = Node::builder()
        .connect(&addr)
        .insecure()
        .start()
        .await
        .unwrap();
    let mut sub = first.subscribe("still.first").await.unwrap();
    client.publish("still.first", "yes").await.unwrap();
    assert_eq!(recv(&mut sub).await.payload(), "yes".as_bytes());
    client.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_client_is_refused_by_a_tls_router_on_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", dir.path().join("t.sock").display());
    let ca = Authority::generate("unix refusal").unwrap();
    let r = Node::builder()
        .listen(&addr)
        .tls(ca.issue().unwrap(), ca.trust())
        .start()
        .await
        .unwrap();
    let plain = Node::builder()
        .connect(&addr)
        .insecure()
        .connect_timeout(Duration::from_millis(1500))
        .start()
        .await;
    assert!(matches!(plain, Err(Error::Unreachable { .. })), "{plain:?}");
    assert!(r.status().await.unwrap().peers.is_empty());
    r.shutdown().await;
}
