//! `meshwire node --listen unix:PATH` and tools with `--connect unix:PATH`:
//! a TLS router on a Unix socket answers requests, its ready line names
//! the socket, and the socket file is gone after a graceful stop.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use std::time::Duration;
use support::{echo_request_answered, echo_responder, NodeProc, TlsKeys};

#[test]
fn request_and_reply_over_a_unix_socket_with_tls() {
    let keys = TlsKeys::make(&["router", "reply", "request"]);
    let sock = keys.dir().join("node.sock");
    let addr = format!("unix:{}", sock.display());
    let mut args = vec!["--listen", &addr];
    args.extend(keys.args(0));
    let node = NodeProc::start(&args);
    assert_eq!(node.listen, addr, "the ready line names the socket");

    let _reply = echo_responder(&addr, &keys.args(1));
    let done = echo_request_answered(&addr, &keys.args(2), "over unix");
    assert_eq!(done.stdout_text().trim(), "over unix");

    node.terminate(Duration::from_secs(10)).assert_code(0);
    assert!(!sock.exists(), "the socket file is removed at exit");
}
