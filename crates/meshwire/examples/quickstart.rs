//! The README's example: a router, a client, pub/sub and request/reply.
//! Run: `cargo run -p meshwire --example quickstart`

use meshwire::security::Authority;
use meshwire::Node;

#[tokio::main]
async fn main() -> meshwire::Result<()> {
    // Links are mutually authenticated TLS 1.3, and a node admits only the
    // keys it is told to. Here an in-memory CA certifies both nodes; in
    // production give each node a trust file (--trust) or your own CA.
    let ca = Authority::generate("quickstart")?;

    // A router listens (port 0: any free port); a client attaches to it.
    let router = Node::builder()
        .listen("127.0.0.1:0")
        .certified_by(&ca)
        .start()
        .await?;
    let client = Node::builder()
        .connect(router.listen_addr().unwrap_or_default())
        .certified_by(&ca)
        .start()
        .await?;

    // Pub/sub with wildcards: reliable and ordered by default.
    let mut orders = router.subscribe("orders.*").await?;
    client.publish("orders.created", "order 42").await?; // resolves once the router owns it
    let msg = orders.recv().await.expect("subscription open");
    println!(
        "{} -> {}",
        msg.subject(),
        String::from_utf8_lossy(msg.payload())
    );

    // Request/reply: a responder answers, the requester awaits the reply.
    let mut questions = router.subscribe("math.double").group("doublers").await?;
    let responder = router.clone();
    tokio::spawn(async move {
        while let Some(q) = questions.recv().await {
            let n: i64 = std::str::from_utf8(q.payload())
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            let _ = responder.respond(&q, (n * 2).to_string()).await;
        }
    });
    let answer = client.request("math.double", "21").await?;
    println!(
        "21 doubled is {}",
        String::from_utf8_lossy(answer.payload())
    );

    client.shutdown().await;
    router.shutdown().await;
    Ok(())
}
