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
