//! RPC failover with real processes: `meshwire serve` instances behind a
//! router, one killed with SIGKILL while `meshwire call` is running.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use std::time::Duration;
use support::{run, NodeProc, Proc};

/// Starts `meshwire serve` and waits for its ready line; returns its id.
fn serve(router: &str, name: &'static str) -> (Proc, String) {
    let p = Proc::spawn(name, &["serve", "--connect", router, "--service", "calc"]);
    let line = p
        .next_line(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("{name} did not start: {}", p.stderr()));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["event"], "serving", "{line}");
    (p, v["node"].as_str().unwrap().to_owned())
}

/// A router and three `serve` instances of `calc`: (router, the instance
/// that will be killed and its id, the two others).
fn three_instances() -> (NodeProc, Proc, String, [Proc; 2]) {
    let router = NodeProc::start_named("router", &[]);
    let addr = router.listen.clone();
    let (a, a_id) = serve(&addr, "serve-a");
    let (b, _) = serve(&addr, "serve-b");
    let (c, _) = serve(&addr, "serve-c");
    (router, a, a_id, [b, c])
}

fn summary(done: &support::Finished) -> serde_json::Value {
    let last = done.stdout.last().cloned().unwrap_or_default();
    serde_json::from_str(&last).unwrap_or_else(|e| {
        panic!(
            "no summary ({e}); stdout {:?} stderr {}",
            done.stdout, done.stderr
        )
    })
}

#[test]
fn idempotent_calls_survive_a_killed_instance() {
    let (router, mut a, a_id, _others) = three_instances();
    let addr = router.listen.clone();
    let call = Proc::spawn(
        "call",
        &[
            "call",
            "--connect",
            &addr,
            "calc.echo",
            r#"{"x":1}"#,
            "--count",
            "10000",
            "--concurrency",
            "8",
            // No --idempotent: `serve` declares echo idempotent and the
            // client learns that from its heartbeats.
            "--quiet",
            "--balance",
            "round-robin",
        ],
    );
    // Let it run, then kill one instance mid-stream.
    std::thread::sleep(Duration::from_millis(700));
    a.kill();
    let done = call.finish(Duration::from_secs(120));
    done.assert_code(0);
    let s = summary(&done);
    assert_eq!(s["calls"], 10_000, "{s}");
    assert_eq!(s["errors"], 0, "failed calls during failover: {s}");
    let killed_share = s["by_node"][&a_id].as_u64().unwrap_or(0);
    assert!(
        killed_share > 0,
        "the killed instance served nothing before it died: {s}"
    );
    assert!(
        killed_share < 10_000 / 3,
        "the killed instance kept getting calls: {s}"
    );
    eprintln!(
        "10 000 idempotent calls, one of three instances SIGKILLed mid-run: 0 failed; \
         worst latency {} µs, p99 {} µs, by instance {}",
        s["max_us"], s["p99_us"], s["by_node"]
    );
}

#[test]
fn a_non_idempotent_method_never_runs_twice() {
    let (router, mut a, a_id, _others) = three_instances();
    let addr = router.listen.clone();
    let call = Proc::spawn(
        "call",
        &[
            "call",
            "--connect",
            &addr,
            "calc.note",
            "{}",
            "--count",
            "3000",
            "--concurrency",
            "8",
            "--quiet",
            "--balance",
            "round-robin",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    a.kill();
    let done = call.finish(Duration::from_secs(120));
    let s = summary(&done);
    assert_eq!(s["calls"], 3000, "{s}");
    // Calls caught on the dead instance fail: they are never re-sent.
    assert!(s["errors"].as_u64().unwrap() > 0, "{s}");
    // Each survivor ran `note` exactly as often as it answered.
    let mut executed = 0;
    let mut asked = std::collections::BTreeSet::new();
    // Ask until both survivors answered (round robin alternates them).
    for _ in 0..20 {
        let out = run(
            &["call", "--connect", &addr, "calc.stats", "{}"],
            Duration::from_secs(30),
        );
        out.assert_code(0);
        let v: serde_json::Value = serde_json::from_str(out.stdout.first().unwrap()).unwrap();
        let node = v["node"].as_str().unwrap().to_owned();
        if asked.insert(node.clone()) {
            let ran = v["calls"]["note"].as_u64().unwrap_or(0);
            let answered = s["by_node"][&node].as_u64().unwrap_or(0);
            assert_eq!(
                ran, answered,
                "{node} ran note {ran} times but answered {answered}"
            );
            executed += ran;
        }
        if asked.len() == 2 {
            break;
        }
    }
    assert_eq!(asked.len(), 2, "could not reach both survivors");
    assert!(!asked.contains(&a_id));
    assert!(executed > 0);
}
