//! Nodes whose TCP links run mutual TLS 1.3 (`NodeBuilder::tls`), over
//! 127.0.0.1: trusted nodes exchange messages across routers; untrusted
//! keys and plaintext clients are refused while the router keeps serving.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use meshwire::security::{Identity, Trust};
mod support;

use meshwire::{Error, Node};
use std::time::Duration;
use support::{recv, wait_remote_interest, WAIT};

/// How long a refused client tries before `start` gives up.
const SHORT: Duration = Duration::from_millis(1500);

fn trusting(ids: &[&Identity]) -> Trust {
    Trust::default().with_nodes(ids.iter().map(|i| i.node_id()))
}

async fn tls_router(id: &Identity, trust: Trust, peer: Option<&str>) -> Node {
    let mut b = Node::builder().listen("127.0.0.1:0").tls(id.clone(), trust);
    if let Some(p) = peer {
        b = b.peer(p);
    }
    let node = b.start().await.expect("router starts");
    assert_eq!(node.id(), id.node_id(), "a TLS node's id is its key's");
    node
}

async fn tls_client(id: &Identity, trust: Trust, router: &Node) -> meshwire::Result<Node> {
    Node::builder()
        .connect(router.listen_addr().unwrap())
        .tls(id.clone(), trust)
        .connect_timeout(SHORT)
        .start()
        .await
}

/// Why a client could not attach, as `Error::Unreachable` tells it.
fn unreachable_because(r: meshwire::Result<Node>) -> String {
    match r {
        Err(
            e @ Error::Unreachable {
                last_error: Some(_),
                ..
            },
        ) => e.to_string(),
        other => panic!("expected Unreachable with a reason, got {other:?}"),
    }
}

/// A trusted client still attaches and gets its messages through.
async fn assert_router_serves(router: &Node, id: &Identity, trust: Trust) {
    let c = tls_client(id, trust, router)
        .await
        .expect("trusted client attaches");
    let mut sub = router.subscribe("still.serving").await.unwrap();
    c.publish("still.serving", "yes").await.unwrap();
    assert_eq!(recv(&mut sub).await.payload(), "yes".as_bytes());
    c.shutdown().await;
}

#[tokio::test]
async fn reliable_pubsub_across_two_tls_routers() {
    let ids: Vec<Identity> = (0..4).map(|_| Identity::generate().unwrap()).collect();
    let all: Vec<&Identity> = ids.iter().collect();
    let trust = trusting(&all);
    let a = tls_router(&ids[0], trust.clone(), None).await;
    let b = tls_router(&ids[1], trust.clone(), a.listen_addr()).await;
    let sub_client = tls_client(&ids[2], trust.clone(), &a).await.unwrap();
    let pub_client = tls_client(&ids[3], trust.clone(), &b).await.unwrap();
    assert_eq!(sub_client.id(), ids[2].node_id());

    let mut sub = sub_client.subscribe("t.>").await.unwrap();
    wait_remote_interest(&b, 1).await;
    for i in 0..500u32 {
        pub_client
            .publish("t.x", i.to_string())
            .send()
            .await
            .unwrap();
    }
    pub_client.flush().await.unwrap();
    for i in 0..500u32 {
        let m = recv(&mut sub).await;
        assert_eq!(m.payload(), i.to_string().as_bytes());
    }
    // The routers know each other by the ids their keys prove.
    let peers = a.status().await.unwrap().peers;
    assert!(peers.iter().any(|p| p.router && p.node == ids[1].node_id()));
    for n in [pub_client, sub_client, b, a] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn an_untrusted_key_is_refused_and_a_trusted_one_attaches() {
    let router_id = Identity::generate().unwrap();
    let friend = Identity::generate().unwrap();
    let stranger = Identity::generate().unwrap();
    let r = tls_router(&router_id, trusting(&[&friend]), None).await;

    // The stranger trusts the router, but the router does not trust it.
    let started = std::time::Instant::now();
    let refused = tls_client(&stranger, trusting(&[&router_id]), &r).await;
    let why = unreachable_because(refused);
    assert!(why.contains("trust list"), "{why}");
    assert!(started.elapsed() < SHORT + Duration::from_secs(3));
    let peers = r.status().await.unwrap().peers;
    assert!(
        peers.iter().all(|p| p.node != stranger.node_id()),
        "the stranger never attached: {peers:?}"
    );

    // A client that does not trust the router refuses it, too.
    let wary = tls_client(&friend, Trust::default(), &r).await;
    let why = unreachable_because(wary);
    assert!(why.contains(&router_id.node_id().to_string()), "{why}");

    assert_router_serves(&r, &friend, trusting(&[&router_id])).await;
    r.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_client_is_refused_by_a_tls_router() {
    let router_id = Identity::generate().unwrap();
    let friend = Identity::generate().unwrap();
    let r = tls_router(&router_id, trusting(&[&friend]), None).await;

    let plain = Node::builder()
        .insecure()
        .connect(r.listen_addr().unwrap())
        .connect_timeout(SHORT)
        .start()
        .await;
    // The plaintext side is told why, in its own framing.
    let why = unreachable_because(plain);
    assert!(why.contains("requires TLS"), "{why}");

    // ... and a TLS client cannot attach to a plaintext router either.
    let plain_router = Node::builder()
        .insecure()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let mismatched = tls_client(&friend, Trust::default(), &plain_router).await;
    let why = unreachable_because(mismatched);
    assert!(why.contains("--insecure"), "{why}");
    plain_router.shutdown().await;

    assert_router_serves(&r, &friend, trusting(&[&router_id])).await;
    r.shutdown().await;
}

#[tokio::test]
async fn a_node_in_a_data_dir_keeps_its_key_by_default() {
    let dir = tempfile::tempdir().unwrap();
    // No security configured: TLS with the data directory's key.
    let start = || {
        Node::builder()
            .listen("127.0.0.1:0")
            .data_dir(dir.path())
            .start()
    };
    let first = start().await.unwrap();
    let id = first.id();
    first.shutdown().await;
    let key = Identity::load(dir.path().join(Identity::KEY_FILE)).unwrap();
    assert_eq!(key.node_id(), id);
    let second = start().await.unwrap();
    assert_eq!(second.id(), id);

    // It admits no other key.
    let stranger = Identity::generate().unwrap();
    let refused = tls_client(&stranger, trusting(&[&key]), &second).await;
    assert!(
        matches!(refused, Err(Error::Unreachable { .. })),
        "{refused:?}"
    );
    second.shutdown().await;
}

#[tokio::test]
async fn a_hello_naming_another_node_than_the_tls_key_is_refused() {
    use bytes::BytesMut;
    use meshwire::proto::wire::{
        CloseCode, Decoder, Frame, Hello, Limits, Role, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
    };
    use meshwire::security::tls;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let router_id = Identity::generate().unwrap();
    let friend = Identity::generate().unwrap();
    let someone_else = Identity::generate().unwrap();
    let r = tls_router(&router_id, trusting(&[&friend, &someone_else]), None).await;

    // A trusted key whose MWIR Hello claims to be another (also trusted) node.
    let config = tls::client_config(&friend, &trusting(&[&router_id]), None).unwrap();
    let tcp = tokio::net::TcpStream::connect(r.listen_addr().unwrap())
        .await
        .unwrap();
    let (mut stream, server) = tls::connect(&config, tcp, WAIT).await.unwrap();
    assert_eq!(server, router_id.node_id());
    let hello = Frame::Hello(Hello {
        min_version: MIN_PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        node: someone_else.node_id(),
        role: Role::Client,
        session: None,
        listen: None,
        max_frame: Limits::default().max_frame,
    });
    stream.write_all(&hello.to_bytes()).await.unwrap();
    stream.flush().await.unwrap();

    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let frame = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(f) = decoder.decode(&mut buf).unwrap() {
                return Some(f);
            }
            if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    })
    .await
    .expect("the router answers in time");
    match frame {
        Some(Frame::Close(c)) => {
            assert_eq!(c.code, CloseCode::Refused, "{c:?}");
            assert!(c.reason.contains("TLS key"), "{c:?}");
        }
        other => panic!("expected Close(Refused), got {other:?}"),
    }
    let peers = r.status().await.unwrap().peers;
    assert!(peers.is_empty(), "nobody attached: {peers:?}");
    assert_router_serves(&r, &friend, trusting(&[&router_id])).await;
    r.shutdown().await;
}

/// Waits until the router sees `node` up (or not).
async fn wait_link(router: &Node, node: meshwire::security::NodeId, up: bool) {
    tokio::time::timeout(support::WAIT, async {
        loop {
            let peers = router.status().await.unwrap().peers;
            if peers.iter().any(|p| p.node == node && p.up) == up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("link of {node} up = {up} in time"));
}

#[tokio::test]
async fn a_trust_reload_closes_the_links_of_nodes_no_longer_trusted() {
    let router_id = Identity::generate().unwrap();
    let (kept, dropped) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let r = tls_router(&router_id, trusting(&[&kept, &dropped]), None).await;
    let a = tls_client(&kept, trusting(&[&router_id]), &r)
        .await
        .unwrap();
    let b = tls_client(&dropped, trusting(&[&router_id]), &r)
        .await
        .unwrap();

    // Revoke `dropped`: its link closes at once, `kept` keeps working.
    let closed = r.reload_trust(trusting(&[&kept])).await.unwrap();
    assert_eq!(closed, 1);
    wait_link(&r, dropped.node_id(), false).await;
    let mut sub = r.subscribe("after.revoke").await.unwrap();
    a.publish("after.revoke", "still here").await.unwrap();
    assert_eq!(recv(&mut sub).await.payload(), "still here".as_bytes());
    // ... and it cannot come back, while revoked.
    let again = tls_client(&dropped, trusting(&[&router_id]), &r).await;
    assert!(
        unreachable_because(again).contains("trust list"),
        "a revoked key is refused"
    );

    // Admitted again: the revoked node's own reconnect attempts get in.
    assert_eq!(
        r.reload_trust(trusting(&[&kept, &dropped])).await.unwrap(),
        0
    );
    wait_link(&r, dropped.node_id(), true).await;

    // An insecure node has no trust to reload.
    let plain = Node::builder()
        .insecure()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    assert!(plain.reload_trust(Trust::default()).await.is_err());
    for n in [a, b, r, plain] {
        n.shutdown().await;
    }
}
