//! End-to-end behaviour of nodes in one process, over TCP on 127.0.0.1 and
//! over the in-memory transport.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use meshwire::{Error, Node};
use std::time::Duration;
use support::{recv, wait_remote_interest, WAIT};

async fn router(peer: Option<&str>) -> Node {
    let mut b = support::builder().listen("127.0.0.1:0");
    if let Some(p) = peer {
        b = b.peer(p);
    }
    b.start().await.expect("router starts")
}

async fn client(router: &Node) -> Node {
    support::builder()
        .connect(router.listen_addr().unwrap())
        .start()
        .await
        .expect("client attaches")
}

#[tokio::test]
async fn client_to_router_pubsub_in_order() {
    let r = router(None).await;
    let c = client(&r).await;
    let mut sub = r.subscribe("orders.*").await.unwrap();
    for i in 0..1000u32 {
        c.publish("orders.created", i.to_string())
            .send()
            .await
            .unwrap();
    }
    c.flush().await.unwrap();
    for i in 0..1000u32 {
        let m = recv(&mut sub).await;
        assert_eq!(m.subject(), "orders.created");
        assert_eq!(m.payload(), i.to_string().as_bytes());
    }
    c.shutdown().await;
    r.shutdown().await;
}

#[tokio::test]
async fn across_two_routers_with_clients_on_both() {
    let a = router(None).await;
    let b = router(a.listen_addr()).await;
    let sub_client = client(&a).await;
    let pub_client = client(&b).await;
    let mut sub = sub_client.subscribe("t.>").await.unwrap();
    wait_remote_interest(&b, 1).await;
    for i in 0..500u32 {
        pub_client
            .publish("t.x.y", i.to_string())
            .send()
            .await
            .unwrap();
    }
    pub_client.flush().await.unwrap();
    for i in 0..500u32 {
        assert_eq!(recv(&mut sub).await.payload(), i.to_string().as_bytes());
    }
}

#[tokio::test]
async fn queue_group_shares_work_across_routers() {
    let a = router(None).await;
    let b = router(a.listen_addr()).await;
    let mut w1 = a.subscribe("jobs").group("workers").await.unwrap();
    let mut w2 = b.subscribe("jobs").group("workers").await.unwrap();
    wait_remote_interest(&a, 1).await;
    wait_remote_interest(&b, 1).await;
    let c = client(&a).await;
    for i in 0..100u32 {
        c.publish("jobs", i.to_string()).await.unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 100 {
        tokio::select! {
            Some(m) = w1.recv() => got.push(m),
            Some(m) = w2.recv() => got.push(m),
            _ = tokio::time::sleep(WAIT) => panic!("only {} of 100 jobs arrived", got.len()),
        }
    }
    // Each job exactly once across the group.
    let mut ids: Vec<u32> = got
        .iter()
        .map(|m| std::str::from_utf8(m.payload()).unwrap().parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    assert!(tokio::time::timeout(Duration::from_millis(100), w1.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn request_reply_and_no_responders() {
    let a = router(None).await;
    let b = router(a.listen_addr()).await;
    let responder = client(&b).await;
    let mut reqs = responder.subscribe("svc.echo").await.unwrap();
    let r2 = responder.clone();
    tokio::spawn(async move {
        while let Some(m) = reqs.recv().await {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(m.payload());
            r2.respond(&m, reply).await.unwrap();
        }
    });
    wait_remote_interest(&a, 1).await;
    let requester = client(&a).await;
    let reply = requester
        .request("svc.echo", "hi")
        .timeout(WAIT)
        .await
        .unwrap();
    assert_eq!(reply.payload(), "echo:hi".as_bytes());

    let started = std::time::Instant::now();
    let err = requester
        .request("svc.nobody", "hi")
        .timeout(WAIT)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoResponders { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reported at once"
    );
}

#[tokio::test]
async fn best_effort_and_unordered_arrive() {
    let r = support::builder()
        .listen("mem:be-router")
        .start()
        .await
        .unwrap();
    let c = support::builder()
        .connect("mem:be-router")
        .start()
        .await
        .unwrap();
    let mut sub = r.subscribe("x").await.unwrap();
    c.publish("x", "be").best_effort().await.unwrap();
    assert_eq!(recv(&mut sub).await.payload(), "be".as_bytes());
    c.publish("x", "un").unordered().await.unwrap();
    assert_eq!(recv(&mut sub).await.payload(), "un".as_bytes());
}

#[tokio::test]
async fn bad_names_are_typed_errors() {
    let r = router(None).await;
    assert!(matches!(
        r.publish("a.*", "x").await,
        Err(Error::Subject(_))
    ));
    assert!(matches!(r.subscribe("a..b").await, Err(Error::Subject(_))));
    let err = support::builder()
        .connect("nonsense")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Address(_)), "{err}");
}

#[tokio::test]
async fn a_named_session_keeps_what_arrived_while_away() {
    let r = router(None).await;
    let addr = r.listen_addr().unwrap().to_owned();
    let named = || {
        support::builder()
            .connect(&addr)
            .session_name("billing-worker")
            .start()
    };
    let first = named().await.unwrap();
    let mut sub = first.subscribe("invoices.>").await.unwrap();
    let publisher = client(&r).await;
    publisher.publish("invoices.1", "one").await.unwrap();
    assert_eq!(recv(&mut sub).await.payload(), "one".as_bytes());
    // The worker goes away (its subscription still stands: dropping it
    // would unsubscribe); work keeps arriving.
    first.shutdown().await;
    drop(sub);
    for i in 2..=5 {
        publisher
            .publish(format!("invoices.{i}"), i.to_string())
            .await
            .unwrap();
    }
    // A new process with the same session name picks it up, in order.
    let second = named().await.unwrap();
    let mut sub = second.subscribe("invoices.>").await.unwrap();
    for i in 2..=5 {
        assert_eq!(recv(&mut sub).await.payload(), i.to_string().as_bytes());
    }
}

#[tokio::test]
async fn a_router_seeded_with_its_own_address_stops_dialling_it() {
    let proxy = meshwire::testkit::CutProxy::bind().await.unwrap();
    let r = support::builder()
        .listen("127.0.0.1:0")
        .peer(proxy.addr().to_string())
        .start()
        .await
        .unwrap();
    proxy.set_target(r.listen_addr().unwrap());
    // Let the dialer find out, then count what it does over a second.
    tokio::time::timeout(WAIT, async {
        while proxy.accepted() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = proxy.accepted();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(proxy.accepted(), before, "kept dialling itself");
    assert!(r.status().await.unwrap().peers.is_empty());
}

#[tokio::test]
async fn a_request_can_receive_a_stream_of_replies() {
    let r = router(None).await;
    let mut reqs = r.subscribe("count.to").await.unwrap();
    let r2 = r.clone();
    tokio::spawn(async move {
        while let Some(m) = reqs.recv().await {
            let n: u32 = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
            for i in 1..=n {
                r2.respond(&m, i.to_string()).await.unwrap();
            }
        }
    });
    let c = client(&r).await;
    let mut replies = c.request_many("count.to", "3").await.unwrap();
    assert!(replies.inbox().starts_with("_INBOX."));
    for i in 1..=3u32 {
        let m = tokio::time::timeout(WAIT, replies.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m.payload(), i.to_string().as_bytes());
    }
    let mut none = c.request_many("count.nobody", "3").await.unwrap();
    let err = tokio::time::timeout(WAIT, none.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::NoResponders { .. }), "{err}");

    // A detached publish arrives like any other.
    let mut sub = r.subscribe("bye").await.unwrap();
    c.publish_detached("bye", "from drop").unwrap();
    assert_eq!(recv(&mut sub).await.payload(), "from drop".as_bytes());
}
