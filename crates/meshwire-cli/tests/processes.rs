//! Real `meshwire` processes on 127.0.0.1: three routers, links cut again
//! and again by proxies in this test (TCP resets), a bystander router killed
//! with SIGKILL, and 100 000 reliable messages that must all arrive once, in
//! order.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use meshwire::testkit::CutProxy;
use std::time::{Duration, Instant};
use support::{run_with_stdin, NodeProc, Proc};

/// Publishes warm-up lines until the subscriber prints one, proving that
/// its interest reached the publishing side (bounded).
fn warm_up(pub_addr: &str, topic: &str, sub: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let args = ["pub", "--connect", pub_addr, "--topic", topic];
    while Instant::now() < deadline {
        run_with_stdin(&args, b"warmup\n", Duration::from_secs(10)).assert_code(0);
        if let Some(line) = sub.next_line(Duration::from_millis(300)) {
            assert_eq!(line, "warmup");
            // Drain any further warm-ups already on their way.
            while let Some(l) = sub.next_line(Duration::from_millis(300)) {
                assert_eq!(l, "warmup");
            }
            return;
        }
    }
    panic!("subscription never reached the publishing router");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_messages_survive_link_cuts_and_a_killed_bystander() {
    const N: u64 = 100_000;
    // Each router is reachable only through its own cuttable proxy: other
    // routers learn the proxy address (--advertise), clients dial it.
    let (pa, pb, pc) = (
        CutProxy::bind().await.unwrap(),
        CutProxy::bind().await.unwrap(),
        CutProxy::bind().await.unwrap(),
    );
    let (pa_addr, pb_addr, pc_addr) = (
        pa.addr().to_string(),
        pb.addr().to_string(),
        pc.addr().to_string(),
    );
    let a = NodeProc::start_named("A", &["--advertise", &pa_addr]);
    pa.set_target(&a.listen);
    let b = NodeProc::start_named("B", &["--peer", &pa_addr, "--advertise", &pb_addr]);
    pb.set_target(&b.listen);
    let mut c = NodeProc::start_named("C", &["--peer", &pa_addr, "--advertise", &pc_addr]);
    pc.set_target(&c.listen);

    let sub = Proc::spawn("sub", &["sub", "--connect", &pa_addr, "--topic", "chaos.>"]);
    warm_up(&pb_addr, "chaos.stream", &sub);

    let n = N.to_string();
    let publisher = Proc::spawn(
        "pub",
        &[
            "pub",
            "--connect",
            &pb_addr,
            "--topic",
            "chaos.stream",
            "--count",
            &n,
            "--size",
            "16",
        ],
    );

    // Read on this side while cutting every link through A's and B's
    // proxies every 50 ms; kill C (on neither end of the path) midway.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut next = 0u64;
    let mut last_cut = Instant::now();
    let mut killed_c = false;
    let mut rss_a_max = 0;
    while next < N {
        assert!(
            Instant::now() < deadline,
            "only {next} of {N} messages arrived in time (cuts: {})",
            pa.cuts()
        );
        if last_cut.elapsed() >= Duration::from_millis(50) {
            last_cut = Instant::now();
            pa.cut();
            pb.cut();
            rss_a_max = rss_a_max.max(a.vm_rss_kib().unwrap_or(0));
        }
        if !killed_c && next >= N / 2 {
            c.kill();
            killed_c = true;
        }
        let Some(line) = sub.next_line(Duration::from_millis(20)) else {
            continue;
        };
        if line == "warmup" {
            continue;
        }
        let i: u64 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("unexpected line {line:?}"));
        assert!(i >= next, "message {i} delivered twice (expected {next})");
        assert_eq!(i, next, "message {next} lost or reordered (got {i})");
        next += 1;
    }
    let elapsed = started.elapsed();
    let cuts = pa.cuts();

    // pub exits 0 once everything is acknowledged, and says so.
    let done = publisher.finish(Duration::from_secs(60));
    done.assert_code(0);
    let out = done.stdout.join("\n");
    let summary: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("pub summary {out:?} is not JSON: {e}"));
    assert_eq!(summary["published"], N);
    assert_eq!(summary["acked"], N);
    // Nothing more arrives: no duplicate came late.
    if let Some(extra) = sub.next_line(Duration::from_millis(500)) {
        panic!("unexpected extra delivery {extra:?}");
    }
    eprintln!(
        "{N} messages, {cuts} cuts of every link through A's and B's proxies, C killed midway: \
         all delivered once in order in {:.2} s; router A peak RSS {} KiB",
        elapsed.as_secs_f64(),
        rss_a_max
    );

    // The survivors still serve a fresh exchange.
    let sub2 = Proc::spawn(
        "sub2",
        &["sub", "--connect", &pb_addr, "--topic", "after.kill"],
    );
    warm_up(&pa_addr, "after.kill", &sub2);
    let args = ["pub", "--connect", &pa_addr, "--topic", "after.kill"];
    run_with_stdin(&args, b"still here\n", Duration::from_secs(10)).assert_code(0);
    assert_eq!(
        sub2.next_line(Duration::from_secs(10)).as_deref(),
        Some("still here")
    );
    drop((sub, sub2, a, b));
}

#[test]
fn node_exits_zero_on_sigterm() {
    let node = NodeProc::start_named("T", &[]);
    node.terminate(Duration::from_secs(20)).assert_code(0);
}
