//! TLS between real `meshwire` processes: `keygen` writes keys, a `node`
//! and `pub`/`sub` run with `--key`/`--trust`, and messages flow; a tool
//! whose key the node does not trust is refused.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use std::time::{Duration, Instant};
use support::{keygen, run, run_with_stdin, NodeProc, Proc};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn keygen_node_pub_and_sub_talk_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2, k3, k4) = (
        dir.path().join("router.key"),
        dir.path().join("sub.key"),
        dir.path().join("pub.key"),
        dir.path().join("stranger.key"),
    );
    let ids = [keygen(&k1), keygen(&k2), keygen(&k3)];
    let stranger_id = keygen(&k4);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k1).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key files are private");
    }

    // keygen never overwrites without --force.
    let before = std::fs::read(&k1).unwrap();
    let again = run(&["keygen", "--out", k1.to_str().unwrap()], LIMIT);
    again.assert_code(2);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(std::fs::read(&k1).unwrap(), before);

    let trust = dir.path().join("trust");
    std::fs::write(&trust, format!("# the mesh\n{}\n", ids.join("\n"))).unwrap();
    let t = trust.to_str().unwrap();

    let node = NodeProc::start(&["--key", k1.to_str().unwrap(), "--trust", t]);
    assert_eq!(node.id, ids[0], "the node's id is its key's");
    let addr = node.listen.clone();

    let sub = Proc::spawn(
        "sub",
        &[
            "sub",
            "--connect",
            &addr,
            "--topic",
            "secure.>",
            "--key",
            k2.to_str().unwrap(),
            "--trust",
            t,
        ],
    );
    let pub_args = [
        "pub",
        "--connect",
        &addr,
        "--topic",
        "secure.news",
        "--key",
        k3.to_str().unwrap(),
        "--trust",
        t,
    ];
    // Warm up until the subscription is in place.
    let deadline = Instant::now() + LIMIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "the subscriber never received\n{}",
            sub.stderr()
        );
        run_with_stdin(&pub_args, b"warmup\n", LIMIT).assert_code(0);
        if let Some(line) = sub.next_line(Duration::from_millis(300)) {
            assert_eq!(line, "warmup");
            while let Some(l) = sub.next_line(Duration::from_millis(300)) {
                assert_eq!(l, "warmup");
            }
            break;
        }
    }
    let done = run_with_stdin(&pub_args, b"one\ntwo\nthree\n", LIMIT);
    done.assert_code(0);
    assert!(
        done.stdout_text().contains("\"acked\":3"),
        "{}",
        done.stdout_text()
    );
    for want in ["one", "two", "three"] {
        assert_eq!(
            sub.next_line(LIMIT).as_deref(),
            Some(want),
            "{}",
            sub.stderr()
        );
    }

    // A key the node does not trust is refused (exit 1, not attached).
    let stranger = run_with_stdin(
        &[
            "pub",
            "--connect",
            &addr,
            "--topic",
            "secure.news",
            "--key",
            k4.to_str().unwrap(),
            "--trust",
            t,
            "--connect-timeout",
            "1500",
        ],
        b"intruder\n",
        LIMIT,
    );
    stranger.assert_code(1);
    // So is a plaintext one.
    let plain = run_with_stdin(
        &[
            "pub",
            "--connect",
            &addr,
            "--topic",
            "secure.news",
            "--connect-timeout",
            "1500",
        ],
        b"intruder\n",
        LIMIT,
    );
    plain.assert_code(1);
    assert!(
        sub.next_line(Duration::from_millis(500)).is_none(),
        "nothing from refused tools"
    );

    let node_done = node.terminate(LIMIT);
    node_done.assert_code(0);
    assert!(
        node_done.stderr.contains("TLS handshake failed"),
        "refusals are logged:\n{}",
        node_done.stderr
    );
    assert!(
        node_done.stderr.contains(&stranger_id),
        "the refusal names the offending NodeId:\n{}",
        node_done.stderr
    );
}

/// Without any security flag a node runs TLS with the key in its data
/// directory (kept across restarts), admits no other key, and says at
/// start, in one line, how to admit peers.
#[test]
fn a_node_told_nothing_is_safe_and_says_how_to_admit_peers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // Spawned without `support::command`, which would add credentials:
    // this node is told nothing.
    let start = || {
        let p = Proc::spawn_command(
            "node",
            {
                let mut c = std::process::Command::new(support::BIN);
                c.args(["node", "--listen", "127.0.0.1:0", "--data", d])
                    .env_remove("RUST_LOG")
                    .env("NO_COLOR", "1");
                c
            },
            None,
        );
        let line = p.next_line(support::READY_WITHIN).expect("ready line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let id = v["node"].as_str().unwrap().to_owned();
        let addr = v["listen"].as_str().unwrap().to_owned();
        (p, id, addr)
    };
    let (first, id, _) = start();
    assert!(
        data.join("node.key").exists(),
        "the key is kept in the data directory"
    );
    drop(first);
    let (second, id_again, addr) = start();
    assert_eq!(id, id_again, "a restarted node keeps its id");

    assert!(wait_for_stderr(&second, "--trust"), "{}", second.stderr());
    let hint = second.stderr();
    let lines: Vec<&str> = hint.lines().filter(|l| l.contains("--trust")).collect();
    assert_eq!(lines.len(), 1, "one line says how to admit peers:\n{hint}");
    assert!(lines[0].contains(&id), "{}", lines[0]);

    // A tool with a key of its own is refused, and told why; without
    // --key it is also told what to do about it.
    let k = dir.path().join("tool.key");
    keygen(&k);
    let trust = dir.path().join("trust");
    std::fs::write(&trust, format!("{id}\n")).unwrap();
    let t = trust.to_str().unwrap();
    let keyed = refused_request(&addr, &["--key", k.to_str().unwrap(), "--trust", t]);
    assert!(keyed.contains("trust list"), "{keyed}");
    let keyless = refused_request(&addr, &["--trust", t]);
    assert!(
        keyless.contains("meshwire keygen") && keyless.contains("--key"),
        "{keyless}"
    );
}

/// A plaintext tool against a TLS node, and a TLS tool against a plaintext
/// node: refused, and both sides say why.
#[test]
fn plaintext_and_tls_refuse_each_other_with_clear_errors() {
    let secure = NodeProc::start(&[]);
    let plain_tool = refused_request(&secure.listen, &["--insecure"]);
    assert!(plain_tool.contains("requires TLS"), "{plain_tool}");
    let logged = wait_for_stderr(&secure, "plaintext");
    assert!(
        logged,
        "the TLS node logs the plaintext peer:\n{}",
        secure.stderr()
    );

    let plain = NodeProc::start(&["--insecure"]);
    assert!(
        plain.stderr().contains("plaintext") || wait_for_stderr(&plain, "plaintext"),
        "an insecure node warns at start:\n{}",
        plain.stderr()
    );
    let tls_tool = refused_request(&plain.listen, &[]);
    assert!(tls_tool.contains("--insecure"), "{tls_tool}");
    assert!(
        wait_for_stderr(&plain, "speaks TLS"),
        "the plaintext node logs the TLS peer:\n{}",
        plain.stderr()
    );
}

/// `keygen --add-to` appends the new id to a trust file that loads.
#[test]
fn keygen_adds_to_a_trust_file() {
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust.txt");
    let mut ids = Vec::new();
    for n in ["a", "b"] {
        let key = dir.path().join(format!("{n}.key"));
        let done = run(
            &[
                "keygen",
                "--out",
                key.to_str().unwrap(),
                "--add-to",
                trust.to_str().unwrap(),
            ],
            LIMIT,
        );
        done.assert_code(0);
        let v: serde_json::Value = serde_json::from_str(&done.stdout_text()).unwrap();
        ids.push(v["node"].as_str().unwrap().to_owned());
    }
    let node = NodeProc::start(&[
        "--key",
        dir.path().join("a.key").to_str().unwrap(),
        "--trust",
        trust.to_str().unwrap(),
    ]);
    assert_eq!(node.id, ids[0]);
    let text = std::fs::read_to_string(&trust).unwrap();
    for id in &ids {
        assert!(text.contains(id.as_str()), "{text}");
    }
}

/// The NodeId of key `i` of `keys` (the trust file lists them in order).
fn keys_id(keys: &support::TlsKeys, i: usize) -> String {
    let trust = std::fs::read_to_string(keys.dir().join("trust")).unwrap();
    trust.lines().nth(i).unwrap().to_owned()
}

/// Waits (bounded) until `p`'s stderr contains `needle`.
fn wait_for_stderr(p: &Proc, needle: &str) -> bool {
    wait_until(|| p.stderr().contains(needle))
}

/// Waits (at most 5 s) until `done` holds.
fn wait_until(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `meshwire request` to `addr` with `security` flags, which must fail to
/// attach (exit 1); returns its stderr.
fn refused_request(addr: &str, security: &[&str]) -> String {
    let mut args = vec!["request", "--connect", addr, "--connect-timeout", "1000"];
    args.extend_from_slice(security);
    args.extend(["--subject", "x", "hi"]);
    let done = run(&args, LIMIT);
    done.assert_code(1);
    done.stderr
}

/// SIGHUP re-reads --trust: a key taken out of the file has its link
/// closed and is refused after, while the others keep working; no restart.
#[test]
fn sighup_reloads_the_trust_file_and_closes_revoked_links() {
    let keys = support::TlsKeys::make(&["router", "responder", "asker", "revoked"]);
    let node = NodeProc::start(&keys.args(0));
    let _responder = support::echo_responder(&node.listen, &keys.args(1));
    support::echo_request_answered(&node.listen, &keys.args(2), "before");
    support::echo_request_answered(&node.listen, &keys.args(3), "before");
    // `revoked` also holds a link open (a subscriber) when the trust changes.
    let mut sub_args = vec!["sub", "--connect", &node.listen, "--topic", "t"];
    sub_args.extend_from_slice(&keys.args(3));
    let _sub = Proc::spawn("sub", &sub_args);
    // (Its first link was the request's.)
    let up = format!("link up peer={}", keys_id(&keys, 3));
    assert!(
        wait_until(|| node.stderr().matches(&up).count() >= 2),
        "{}",
        node.stderr()
    );

    // Take `revoked` out of the trust file, and tell the node.
    let trust = keys.dir().join("trust");
    let text = std::fs::read_to_string(&trust).unwrap();
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&trust, kept.join("\n")).unwrap();
    node.signal_hup();
    assert!(
        wait_for_stderr(&node, "links_closed=1"),
        "the subscriber's link is closed:\n{}",
        node.stderr()
    );

    let refused = refused_request(&node.listen, &keys.args(3));
    assert!(refused.contains("trust list"), "{refused}");
    // The others were not disturbed: the responder's link stayed up.
    let ok = support::echo_request(&node.listen, &keys.args(2), "after");
    ok.assert_code(0);
    assert_eq!(ok.stdout_text(), "after");
}
