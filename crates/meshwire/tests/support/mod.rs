//! Helpers shared by the integration tests. Every wait is bounded.

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use meshwire::rpc::Client;
use meshwire::security::Authority;
use meshwire::{Message, Node, NodeBuilder, Subscription};
use std::sync::OnceLock;
use std::time::Duration;

/// The bound on every wait in these tests.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The authority that certifies every node of a test binary, so that they
/// admit each other over mutually authenticated TLS (the default).
pub(crate) fn authority() -> &'static Authority {
    static CA: OnceLock<Authority> = OnceLock::new();
    CA.get_or_init(|| Authority::generate("meshwire tests").unwrap())
}

/// A node builder whose node is certified by [`authority`]: what tests use
/// instead of `Node::builder()`, which would admit no other key.
pub(crate) fn builder() -> NodeBuilder {
    Node::builder().certified_by(authority())
}

/// Waits until `node` knows of `n` subscriptions held at other routers.
pub(crate) async fn wait_remote_interest(node: &Node, n: usize) {
    tokio::time::timeout(WAIT, async {
        loop {
            if node.status().await.unwrap().remote_interest >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("interest propagated");
}

/// The next message on `sub`, within [`WAIT`].
pub(crate) async fn recv(sub: &mut Subscription) -> Message {
    tokio::time::timeout(WAIT, sub.recv())
        .await
        .expect("message in time")
        .expect("subscription open")
}

/// Waits until `client` knows exactly `n` instances.
pub(crate) async fn wait_instances(client: &Client, n: usize) {
    tokio::time::timeout(WAIT, async {
        while client.instances().len() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {n} instances known", client.instances().len()));
}
