//! `meshwire kv` against three real `meshwire node --raft` processes on
//! 127.0.0.1 (TLS, data on disk): the leader is killed with SIGKILL while
//! clients write, no acknowledged write is lost after it restarts, and
//! `cas` never lets two writers both win.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use support::{run, NodeProc};

const LIMIT: Duration = Duration::from_secs(30);

fn kv(addrs: &[&str], op: &[&str]) -> support::Finished {
    let mut args = vec!["kv"];
    for a in addrs {
        args.extend(["--connect", a]);
    }
    args.extend_from_slice(op);
    run(&args, LIMIT)
}

/// `kv members` as JSON, if some member answered.
fn members(addr: &str) -> Option<Value> {
    let out = kv(&[addr], &["members"]);
    (out.code() == Some(0)).then(|| serde_json::from_str(out.stdout_text().trim()).ok())?
}

/// Waits (bounded) until the group has `n` voters and a leader; returns
/// the leader's NodeId.
fn wait_for_group(addr: &str, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(m) = members(addr) {
            let voters = m["voters"].as_array().map_or(0, Vec::len);
            if let (true, Some(leader)) = (voters == n, m["leader"].as_str()) {
                let node = m["voters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|v| v["raft_id"] == leader)
                    .map(|v| v["node"].as_str().unwrap().to_owned());
                if let Some(node) = node {
                    return node;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no group of {n} voters with a leader within 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_member(dir: &std::path::Path, name: &str, peer: Option<&str>) -> NodeProc {
    let data = dir.join(name);
    let data = data.to_str().unwrap();
    let mut args = vec!["--raft", "--data", data];
    if let Some(p) = peer {
        args.extend(["--peer", p]);
    }
    NodeProc::start_named(name, &args)
}

#[test]
fn a_killed_leader_loses_no_acknowledged_write_and_cas_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_member(dir.path(), "a", None);
    let b = start_member(dir.path(), "b", Some(&a.listen));
    let c = start_member(dir.path(), "c", Some(&a.listen));
    let leader_id = wait_for_group(&a.listen, 3);
    let mut nodes = vec![("a", a), ("b", b), ("c", c)];
    let leader_at = nodes.iter().position(|(_, n)| n.id == leader_id).unwrap();
    let (leader_name, mut leader) = nodes.remove(leader_at);
    let survivors: Vec<String> = nodes.iter().map(|(_, n)| n.listen.clone()).collect();

    // Two writers through the two other routers; the leader is killed once
    // a few writes are in.
    const WRITES: usize = 20;
    let acked = Arc::new(Mutex::new(Vec::<(String, String, u64)>::new()));
    let started = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (acked, started, addrs) = (acked.clone(), started.clone(), survivors.clone());
            std::thread::spawn(move || {
                let mut unknown = 0;
                for i in 0..WRITES {
                    let (key, value) = (format!("w{w}/{i}"), format!("v{w}.{i}"));
                    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
                    let out = kv(&addrs, &["put", &key, &value]);
                    started.fetch_add(1, Ordering::SeqCst);
                    match out.code() {
                        Some(0) => {
                            let version = out.stdout_text().trim().parse().unwrap();
                            acked.lock().unwrap().push((key, value, version));
                        }
                        // Indeterminate or no leader yet: allowed, not acknowledged.
                        Some(1) => unknown += 1,
                        other => panic!("kv put exited {other:?}"),
                    }
                }
                unknown
            })
        })
        .collect();
    let deadline = Instant::now() + LIMIT;
    while started.load(Ordering::SeqCst) < 6 {
        assert!(Instant::now() < deadline, "writers made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    leader.kill();
    let unknown: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "leader {leader_name} killed after {} writes began: {} of {} writes acknowledged, {unknown} not",
        6,
        acked.len(),
        2 * WRITES
    );
    assert!(
        acked.len() >= WRITES,
        "most writes should be acknowledged despite the failover ({} of {}, {unknown} unknown)",
        acked.len(),
        2 * WRITES
    );

    // The killed leader restarts from its data directory and catches up.
    drop(leader);
    let restarted = start_member(dir.path(), leader_name, Some(&survivors[0]));
    assert_eq!(restarted.id, leader_id, "same key, same node");
    wait_for_group(&restarted.listen, 3);

    // Kill another member: a majority now needs the restarted one, so
    // every read below goes through a log it recovered.
    let (_, mut other) = nodes.remove(0);
    other.kill();
    let majority = [restarted.listen.as_str(), nodes[0].1.listen.as_str()];
    for (key, value, version) in &acked {
        let out = kv(&majority, &["get", key]);
        out.assert_code(0);
        let got: Value = serde_json::from_str(out.stdout_text().trim()).unwrap();
        assert_eq!(got["value"], Value::String(value.clone()), "{key} lost");
        assert_eq!(got["version"], *version, "{key} changed");
    }

    // Two writers race `cas` from the same version, round after round:
    // never both win.
    let first = kv(&majority, &["put", "counter", "0"]);
    first.assert_code(0);
    let rounds = 8;
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = (0..2)
        .map(|r| {
            let barrier = barrier.clone();
            let addrs: Vec<String> = majority.iter().map(|s| (*s).to_owned()).collect();
            std::thread::spawn(move || {
                let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
                let mut results = Vec::new();
                for round in 0..rounds {
                    barrier.wait();
                    let got = kv(&addrs, &["get", "counter"]);
                    got.assert_code(0);
                    let v: Value = serde_json::from_str(got.stdout_text().trim()).unwrap();
                    let version = v["version"].as_u64().unwrap().to_string();
                    barrier.wait();
                    let out = kv(
                        &addrs,
                        &["cas", "counter", &version, &format!("{r}.{round}")],
                    );
                    results.push((version, out.code()));
                }
                results
            })
        })
        .collect();
    let results: Vec<Vec<(String, Option<i32>)>> =
        racers.into_iter().map(|r| r.join().unwrap()).collect();
    let mut wins = 0;
    for (round, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        let won = [a, b].iter().filter(|(_, code)| *code == Some(0)).count();
        assert!(
            won <= 1 || a.0 != b.0,
            "round {round}: both cas from version {} won",
            a.0
        );
        for (_, code) in [a, b] {
            assert!(matches!(code, Some(0 | 3)), "cas exited {code:?}");
        }
        wins += won;
    }
    assert!(
        wins >= rounds,
        "each round has a winner ({wins} wins in {rounds} rounds)"
    );
    eprintln!("cas: {wins} winners in {rounds} rounds of two racers");
}

#[test]
fn bad_input_gives_typed_errors_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = start_member(dir.path(), "solo", None);
    wait_for_group(&a.listen, 1);
    let addr = [a.listen.as_str()];
    let unknown = kv(&addr, &["--map", "nope", "put", "k", "1"]);
    unknown.assert_code(2);
    assert!(unknown.stderr.contains("unknown map"), "{}", unknown.stderr);
    let control = kv(&addr, &["put", "bad\u{7}key", "1"]);
    control.assert_code(2);
    let big = "x".repeat(300 * 1024);
    let too_big = support::run_with_stdin(
        &["kv", "--connect", addr[0], "put", "big", "-"],
        big.as_bytes(),
        LIMIT,
    );
    assert_eq!(too_big.code(), Some(2), "{}", too_big.stderr);
    assert!(too_big.stderr.contains("limit"), "{}", too_big.stderr);
    let bad_map = kv(&addr, &["--map", "no spaces", "get", "k"]);
    bad_map.assert_code(2);
    let got = kv(&addr, &["get", "big"]);
    got.assert_code(0);
    assert_eq!(got.stdout_text().trim(), "null", "nothing was written");
    let mismatch = kv(&addr, &["cas", "fresh", "5", "1"]);
    mismatch.assert_code(3);
    let created = kv(&addr, &["cas", "fresh", "0", "1"]);
    created.assert_code(0);
    // The eventual `default` map exists without being created, and a fresh
    // `kv` process reads what another wrote (through the router's replica).
    kv(&addr, &["--eventual", "put", "hits", "7"]).assert_code(0);
    let got = kv(&addr, &["--eventual", "get", "hits"]);
    got.assert_code(0);
    let v: serde_json::Value = serde_json::from_str(got.stdout_text().trim()).unwrap();
    assert_eq!(v["value"], 7, "{v}");
    kv(&addr, &["--eventual", "--map", "nope", "get", "k"]).assert_code(2);
}
