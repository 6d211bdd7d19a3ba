//! The node reports what it does through the `metrics` facade.
//! (Own test binary: a metrics recorder is process-wide.)

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::time::Duration;

#[tokio::test]
async fn counters_count_messages_and_links() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let r = support::builder()
        .listen("mem:metrics-router")
        .start()
        .await
        .unwrap();
    let c = support::builder()
        .connect("mem:metrics-router")
        .start()
        .await
        .unwrap();
    let mut sub = r.subscribe("m").await.unwrap();
    for _ in 0..10 {
        c.publish("m", "x").await.unwrap();
    }
    for _ in 0..10 {
        tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .unwrap()
            .unwrap();
    }
    // One snapshot: taking one drains the counters.
    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(k, ..)| k.key().name() == name)
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert!(counter("meshwire_messages_published_total") >= 10);
    assert!(counter("meshwire_messages_delivered_total") >= 10);
    assert!(
        counter("meshwire_links_opened_total") >= 2,
        "both ends count the link"
    );
}
