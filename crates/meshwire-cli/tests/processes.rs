//! Real `meshwire` processes on 127.0.0.1: three routers, links cut again
//! and again by proxies in this test (TCP resets), a bystander router killed
//! with SIGKILL, and 100 000 reliable messages that must all arrive once, in
//! order.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use meshwire::testkit::CutProxy;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshwire");

/// A child process killed when dropped, so a failing test leaves nothing.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts `meshwire node` and waits (bounded) for its JSON ready line.
fn start_node(name: &'static str, args: &[String]) -> (Proc, String) {
    let mut child = Command::new(BIN)
        .arg("node")
        .args(["--listen", "127.0.0.1:0", "--name", name])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn meshwire node");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let proc = Proc { child, name };
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{name} printed no ready line"));
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{name} ready line {line:?} is not JSON: {e}"));
    assert_eq!(v["event"], "ready", "{line}");
    assert_eq!(v["node"].as_str().unwrap().len(), 26, "{line}");
    (proc, v["listen"].as_str().unwrap().to_owned())
}

/// A `meshwire sub` whose output lines arrive on a channel.
fn start_sub(addr: &str, topic: &str) -> (Proc, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["sub", "--connect", addr, "--topic", topic])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn meshwire sub");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Proc { child, name: "sub" }, rx)
}

/// Publishes one line via `meshwire pub` (stdin mode); true on exit 0.
fn publish_line(addr: &str, topic: &str, line: &str) -> bool {
    let mut child = Command::new(BIN)
        .args(["pub", "--connect", addr, "--topic", topic])
        .args(["--connect-timeout", "3000"])
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meshwire pub");
    let mut stdin = child.stdin.take().unwrap();
    let _ = writeln!(stdin, "{line}");
    drop(stdin);
    child.wait().map(|s| s.success()).unwrap_or(false)
}

/// Publishes warm-up lines until the subscriber prints one, proving that
/// its interest reached the publishing side (bounded).
fn warm_up(pub_addr: &str, topic: &str, sub: &mpsc::Receiver<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        assert!(
            publish_line(pub_addr, topic, "warmup"),
            "warm-up publish failed"
        );
        if let Ok(line) = sub.recv_timeout(Duration::from_millis(300)) {
            assert_eq!(line, "warmup");
            // Drain any further warm-ups already on their way.
            while let Ok(l) = sub.recv_timeout(Duration::from_millis(300)) {
                assert_eq!(l, "warmup");
            }
            return;
        }
    }
    panic!("subscription never reached the publishing router");
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
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
    let (a, a_listen) = start_node("A", &["--advertise".into(), pa.addr().to_string()]);
    pa.set_target(&a_listen);
    let peer_a = ["--peer".to_string(), pa.addr().to_string()];
    let (b, b_listen) = start_node(
        "B",
        &[&peer_a[..], &["--advertise".into(), pb.addr().to_string()]].concat(),
    );
    pb.set_target(&b_listen);
    let (mut c, c_listen) = start_node(
        "C",
        &[&peer_a[..], &["--advertise".into(), pc.addr().to_string()]].concat(),
    );
    pc.set_target(&c_listen);

    let (sub, lines) = start_sub(&pa.addr().to_string(), "chaos.>");
    warm_up(&pb.addr().to_string(), "chaos.stream", &lines);

    let publisher = Command::new(BIN)
        .args([
            "pub",
            "--connect",
            &pb.addr().to_string(),
            "--topic",
            "chaos.stream",
        ])
        .args(["--count", &N.to_string(), "--size", "16"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn meshwire pub");
    let publisher = Proc {
        child: publisher,
        name: "pub",
    };

    // Read on this side while cutting the links every 50 ms.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut next = 0u64;
    let mut last_cut = Instant::now();
    let mut killed_c = false;
    let mut rss_a_max = 0;
    while next < N {
        assert!(
            Instant::now() < deadline,
            "only {next} of {N} messages arrived in time (cuts: {}/{})",
            pa.cuts(),
            pb.cuts()
        );
        if last_cut.elapsed() >= Duration::from_millis(50) {
            last_cut = Instant::now();
            pa.cut();
            pb.cut();
            rss_a_max = rss_a_max.max(vm_rss_kib(a.pid()).unwrap_or(0));
        }
        if !killed_c && next >= N / 2 {
            // A router on neither end of the path dies mid-stream.
            c.child.kill().expect("SIGKILL C");
            let _ = c.child.wait();
            killed_c = true;
        }
        let Ok(line) = lines.recv_timeout(Duration::from_millis(20)) else {
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

    // pub exits 0 once everything is acknowledged and says so.
    let out = publisher_output(publisher);
    let summary: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("pub summary {out:?} is not JSON: {e}"));
    assert_eq!(summary["published"], N);
    assert_eq!(summary["acked"], N);
    // Nothing more arrives: no duplicate came late.
    if let Ok(extra) = lines.recv_timeout(Duration::from_millis(500)) {
        panic!("unexpected extra delivery {extra:?}");
    }
    assert!(killed_c);
    eprintln!(
        "{N} messages, {cuts} cuts of every link through A's and B's proxies, C killed midway: \
         all delivered once in order in {:.2} s; router A peak RSS {} KiB",
        elapsed.as_secs_f64(),
        rss_a_max
    );

    // The survivors still serve a fresh exchange.
    let (sub2, lines2) = start_sub(&pb.addr().to_string(), "after.kill");
    warm_up(&pa.addr().to_string(), "after.kill", &lines2);
    assert!(publish_line(
        &pa.addr().to_string(),
        "after.kill",
        "still here"
    ));
    assert_eq!(
        lines2.recv_timeout(Duration::from_secs(10)).unwrap(),
        "still here"
    );
    drop((sub, sub2, a, b));
}

fn publisher_output(mut p: Proc) -> String {
    let mut stdout = p.child.stdout.take().unwrap();
    let status = wait_bounded(&mut p.child, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{} did not exit", p.name));
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    assert!(status.success(), "pub exited with {status}: {out}");
    out
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn node_exits_zero_on_sigterm() {
    let (mut node, _) = start_node("T", &[]);
    let pid = node.pid();
    // SIGTERM via the kill command: no extra crate for one signal.
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = wait_bounded(&mut node.child, Duration::from_secs(20)).expect("node exits");
    assert!(status.success(), "node exited with {status}");
}
