//! An attacker on the path of a TLS link (`testkit::TamperProxy`): a bit
//! flipped inside an application-data record, or a record cut short and
//! the connection closed. rustls refuses the damaged record, the link
//! closes, and nothing altered is ever delivered; reliable sessions resume
//! over a new link and deliver every message intact, once, in order.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

#[path = "support/raw_peer.rs"]
mod raw_peer;
mod support;

use bytes::Bytes;
use meshwire::proto::wire::Frame;
use meshwire::security::Authority;
use meshwire::testkit::{Direction, Tamper, TamperProxy};
use meshwire::Node;
use raw_peer::RawPeer;
use std::time::Duration;
use support::{recv, WAIT};

async fn tls_router(ca: &Authority) -> Node {
    Node::builder()
        .listen("127.0.0.1:0")
        .tls(ca.issue().unwrap(), ca.trust())
        .start()
        .await
        .unwrap()
}

/// Waits until the proxy has damaged `n` records.
async fn wait_tampered(proxy: &TamperProxy, n: u64) {
    tokio::time::timeout(WAIT, async {
        while proxy.tampered() < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} records damaged", proxy.tampered()));
}

/// What a raw TLS peer behind the proxy sees after the router's next
/// record to it is damaged with `tamper`: the link's end, never a frame.
async fn damaged_record_to_peer(tamper: Tamper) -> String {
    let ca = Authority::generate("tamper raw").unwrap();
    let r = tls_router(&ca).await;
    let proxy = TamperProxy::bind(r.listen_addr().unwrap()).await.unwrap();
    let id = ca.issue().unwrap();
    let mut peer = RawPeer::connect(&proxy.addr().to_string(), &id, &ca.trust()).await;
    peer.attach(id.node_id()).await.unwrap();
    proxy.arm(Direction::ToDialler, tamper);
    // The router answers a ping with a pong (and an ack): a record to us.
    peer.send(&[Frame::Ping(1)]).await;
    let mut seen = Vec::new();
    let end = loop {
        match peer.next().await {
            Ok(f) => seen.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(proxy.tampered(), 1);
    // Nothing after the damage reached us: only what came before the ping
    // was answered (the router's first ack) may have been read.
    assert!(
        seen.iter().all(|f| !matches!(f, Frame::Pong(_))),
        "a frame from the damaged record was delivered: {seen:?}"
    );
    r.shutdown().await;
    end
}

#[tokio::test]
async fn rustls_refuses_a_flipped_bit_and_a_truncated_record() {
    let flipped = damaged_record_to_peer(Tamper::FlipBit).await;
    assert!(
        flipped.contains("decrypt") || flipped.contains("BadRecordMac"),
        "a flipped bit is a decryption error: {flipped}"
    );
    let truncated = damaged_record_to_peer(Tamper::Truncate).await;
    assert!(
        truncated.contains("close_notify") || truncated.contains("EOF"),
        "a record cut short then closed is an unexpected end: {truncated}"
    );
    eprintln!("flipped bit: {flipped}; truncated record: {truncated}");
}

/// The payload of message `i`: long enough to span most of a record, and
/// different in every byte position, so any flipped bit would show.
fn payload(i: u32) -> Bytes {
    Bytes::from(
        (0..600u32)
            .map(|k| (i.wrapping_mul(31).wrapping_add(k * 7) % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test]
async fn tampered_links_close_and_deliver_nothing_altered() {
    let ca = Authority::generate("tamper nodes").unwrap();
    let r = tls_router(&ca).await;
    let addr = r.listen_addr().unwrap().to_owned();
    // The subscriber's link and the publisher's link each go through a
    // tampering proxy.
    let sub_path = TamperProxy::bind(&addr).await.unwrap();
    let pub_path = TamperProxy::bind(&addr).await.unwrap();
    let attach = |via: &TamperProxy| {
        Node::builder()
            .connect(via.addr().to_string())
            .tls(ca.issue().unwrap(), ca.trust())
            .start()
    };
    let subscriber = attach(&sub_path).await.unwrap();
    let publisher = attach(&pub_path).await.unwrap();
    let mut sub = subscriber.subscribe("tamper.>").await.unwrap();
    wait_subscribed(&r).await;

    // Five rounds of 100 messages; in each of the last four, one record is
    // damaged: two to the subscriber, then two to the router.
    let damage = [
        None,
        Some((&sub_path, Direction::ToDialler, Tamper::FlipBit)),
        Some((&sub_path, Direction::ToDialler, Tamper::Truncate)),
        Some((&pub_path, Direction::ToTarget, Tamper::FlipBit)),
        Some((&pub_path, Direction::ToTarget, Tamper::Truncate)),
    ];
    let mut next = 0u32;
    for (round, d) in damage.iter().enumerate() {
        let round = round as u32;
        if let Some((proxy, direction, tamper)) = d {
            proxy.arm(*direction, *tamper);
        }
        // Published without waiting, so the damage lands mid-stream.
        for i in 0..100u32 {
            let n = round * 100 + i;
            publisher
                .publish("tamper.x", payload(n))
                .send()
                .await
                .unwrap();
        }
        if let Some((proxy, ..)) = d {
            wait_tampered(proxy, proxy_count(&damage[..=round as usize], proxy)).await;
        }
        publisher.flush().await.unwrap();
        // Everything so far arrives intact, once, in order.
        while next < (round + 1) * 100 {
            let m = recv(&mut sub).await;
            assert_eq!(
                m.payload(),
                &payload(next),
                "message {next}: not what was published"
            );
            next += 1;
        }
    }
    // Nothing more (no duplicate, no altered copy) arrives.
    let extra = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(extra.is_err(), "unexpected delivery: {extra:?}");
    // Each damaged record cost its link: the clients came back.
    assert!(sub_path.accepted() >= 3, "{}", sub_path.accepted());
    assert!(pub_path.accepted() >= 3, "{}", pub_path.accepted());
    eprintln!(
        "500 messages intact through 4 damaged records; links opened: subscriber {}, publisher {}",
        sub_path.accepted(),
        pub_path.accepted()
    );
    for n in [publisher, subscriber, r] {
        n.shutdown().await;
    }
}

/// How many of `damage` go through `proxy`.
fn proxy_count(damage: &[Option<(&TamperProxy, Direction, Tamper)>], proxy: &TamperProxy) -> u64 {
    damage
        .iter()
        .flatten()
        .filter(|(p, ..)| p.addr() == proxy.addr())
        .count() as u64
}

/// Waits until the router holds the subscriber's subscription.
async fn wait_subscribed(r: &Node) {
    tokio::time::timeout(WAIT, async {
        while r.status().await.unwrap().local_subscriptions < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the subscription reached the router");
}
