//! `meshwire node --permissions FILE` between real processes (TLS, so the
//! NodeIds the file names are authenticated): a permitted publication
//! goes through; after the file is rewritten and the node gets SIGHUP, the
//! same publication is refused with a message that says what to change,
//! while the node keeps running.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use std::time::{Duration, Instant};
use support::{keygen, run, run_with_stdin, NodeProc};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn sighup_reload_revokes_a_publish() {
    let dir = tempfile::tempdir().unwrap();
    let (kr, kp) = (dir.path().join("router.key"), dir.path().join("pub.key"));
    let (router_id, pub_id) = (keygen(&kr), keygen(&kp));
    let trust = dir.path().join("trust");
    std::fs::write(&trust, format!("{router_id}\n{pub_id}\n")).unwrap();
    let perms = dir.path().join("perms.toml");
    std::fs::write(
        &perms,
        format!("[nodes.\"{pub_id}\"]\npublish = {{ allow = [\"orders.>\"] }}\n"),
    )
    .unwrap();
    let t = trust.to_str().unwrap();

    let node = NodeProc::start(&[
        "--key",
        kr.to_str().unwrap(),
        "--trust",
        t,
        "--permissions",
        perms.to_str().unwrap(),
    ]);
    let tool = |verb: &str, flag: &str, topic: &str| {
        vec![
            verb.to_owned(),
            "--connect".into(),
            node.listen.clone(),
            "--key".into(),
            kp.to_str().unwrap().into(),
            "--trust".into(),
            t.into(),
            flag.into(),
            topic.into(),
        ]
    };
    let publish = tool("pub", "--topic", "orders.eu");
    let publish: Vec<&str> = publish.iter().map(String::as_str).collect();
    run_with_stdin(&publish, b"one\n", LIMIT).assert_code(0);

    // Denied from the start: subscribing (no subscribe rule at all).
    let sub = tool("sub", "--topic", "orders.>");
    let sub: Vec<&str> = sub.iter().map(String::as_str).collect();
    let refused = run(&sub, LIMIT);
    refused.assert_code(1);
    assert!(
        refused.stderr.contains("permission denied") && refused.stderr.contains("allow"),
        "{}",
        refused.stderr
    );

    // Revoke the publish, and tell the node.
    std::fs::write(
        &perms,
        format!("[nodes.\"{pub_id}\"]\npublish = {{ allow = [\"status.>\"] }}\n"),
    )
    .unwrap();
    node.signal_hup();
    let deadline = Instant::now() + LIMIT;
    while !node.stderr().contains("permissions reloaded") {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            node.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let denied = run_with_stdin(&publish, b"two\n", LIMIT);
    denied.assert_code(1);
    assert!(
        denied.stderr.contains("permission denied")
            && denied.stderr.contains("\"orders.eu\"")
            && denied.stderr.contains("allow"),
        "{}",
        denied.stderr
    );
    // A broken file is reported and changes nothing.
    std::fs::write(&perms, "[nodes.\"nobody\"]\n").unwrap();
    node.signal_hup();
    let deadline = Instant::now() + LIMIT;
    while !node.stderr().contains("not reloaded") {
        assert!(Instant::now() < deadline, "{}", node.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(node.stderr().contains("perms.toml:1"), "{}", node.stderr());
    let status = tool("pub", "--topic", "status.up");
    let status: Vec<&str> = status.iter().map(String::as_str).collect();
    run_with_stdin(&status, b"up\n", LIMIT).assert_code(0);

    node.terminate(LIMIT).assert_code(0);
}

#[test]
fn a_bad_permissions_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let perms = dir.path().join("perms.toml");
    std::fs::write(&perms, "[nodes.\"*\"]\npublsh = {}\n").unwrap();
    let done = run(
        &[
            "node",
            "--listen",
            "127.0.0.1:0",
            "--insecure",
            "--permissions",
            perms.to_str().unwrap(),
        ],
        LIMIT,
    );
    done.assert_code(2);
    assert!(
        done.stderr.contains("perms.toml:2") && done.stderr.contains("publish"),
        "{}",
        done.stderr
    );
}
