//! A connection flood against a real `meshwire node` running TLS with its
//! default limits (issue 4: "a bounded connection flood on loopback leaves
//! memory under a stated cap and legitimate requests succeeding").
//!
//! 2000 connections, in 8 waves of 250, from four loopback addresses
//! (127.0.0.2-5), each of one kind: silent; half a TLS record; 1 KiB of
//! garbage; a real ClientHello (from a key the node does not trust) and
//! then nothing. Meanwhile a trusted `meshwire reply` and `meshwire
//! request` from 127.0.0.1 keep working, and the node's resident memory
//! (VmRSS in `/proc/PID/status`) is sampled every 10 ms.
//!
//! What must hold: every flood connection is closed by the node within the
//! handshake timeout (1 s) plus slack, most refused at accept by the
//! per-address handshake cap; every request during the flood succeeds; the
//! node's RSS stays under [`RSS_CAP_MIB`] during and after.
//!
//! Measured on the 2-core machine (debug build): an idle TLS node is about
//! 8.3 MiB; its peak under this flood was 11.5 MiB with the default limits
//! (and 22 MiB with the per-address caps off and `--max-handshakes 4096`,
//! i.e. some 1500 handshakes held at once). The cap, 64 MiB, leaves room
//! for a loaded machine and allocator slack.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use meshwire::security::tls::{self, rustls};
use meshwire::security::{Identity, Trust, NAME_SUFFIX};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{echo_request, echo_request_answered, echo_responder, NodeProc, TlsKeys};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// The node's resident memory must stay below this, during and after.
const RSS_CAP_MIB: u64 = 64;
const HANDSHAKE_MS: u64 = 1000;
/// Slack over the handshake timeout (timers, a loaded machine).
const SLACK: Duration = Duration::from_millis(1500);
const WAVES: usize = 8;
const PER_WAVE: usize = 250;
/// Between the starts of two waves.
const WAVE_EVERY: Duration = Duration::from_millis(150);
const LIMIT: Duration = Duration::from_secs(20);

/// What one flood connection sends before it stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Silent,
    HalfRecord,
    Garbage,
    ClientHello,
}

const KINDS: [Kind; 4] = [
    Kind::Silent,
    Kind::HalfRecord,
    Kind::Garbage,
    Kind::ClientHello,
];

fn opening(kind: Kind, hello: &[u8], seed: usize) -> Vec<u8> {
    match kind {
        Kind::Silent => Vec::new(),
        // A handshake record announcing 512 bytes, and 100 of them.
        Kind::HalfRecord => {
            let mut b = vec![22, 3, 1, 2, 0];
            b.extend_from_slice(&[0x42; 100]);
            b
        }
        Kind::Garbage => {
            let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            (0..1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        }
        Kind::ClientHello => hello.to_vec(),
    }
}

/// A real ClientHello, from a key nobody trusts.
fn client_hello() -> Vec<u8> {
    let stranger = Identity::generate().unwrap();
    let config = tls::client_config(&stranger, &Trust::default(), None).unwrap();
    let name = rustls::pki_types::ServerName::try_from(NAME_SUFFIX).unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// How one flood connection ended: when the node closed it (from connect),
/// or why the test could not tell.
type Outcome = (Kind, Result<Duration, String>);

async fn one(addr: SocketAddr, from: u8, kind: Kind, bytes: Vec<u8>) -> Outcome {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, from], 0)))
        .unwrap();
    let mut s = match socket.connect(addr).await {
        Ok(s) => s,
        Err(e) => return (kind, Err(format!("connect: {e}"))),
    };
    let opened = Instant::now();
    // A refused connection may be closed before this write lands.
    let _ = s.write_all(&bytes).await;
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(Duration::from_millis(HANDSHAKE_MS) + SLACK, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    match ended {
        Ok(()) => (kind, Ok(opened.elapsed())),
        Err(_) => (
            kind,
            Err(format!("still open after {:?}", opened.elapsed())),
        ),
    }
}

async fn flood(addr: SocketAddr) -> Vec<Outcome> {
    let hello = client_hello();
    let mut tasks = Vec::new();
    for wave in 0..WAVES {
        let started = Instant::now();
        for i in 0..PER_WAVE {
            let n = wave * PER_WAVE + i;
            let kind = KINDS[n % KINDS.len()];
            let from = 2 + (n / KINDS.len() % 4) as u8; // 127.0.0.2-5
            tasks.push(tokio::spawn(one(
                addr,
                from,
                kind,
                opening(kind, &hello, n),
            )));
        }
        // Pacing of the attack, not synchronisation.
        tokio::time::sleep(WAVE_EVERY.saturating_sub(started.elapsed())).await;
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    outcomes
}

#[test]
fn a_tls_node_survives_a_connection_flood_within_its_memory_cap() {
    let keys = TlsKeys::make(&["router", "reply", "request"]);
    let hs = HANDSHAKE_MS.to_string();
    let mut args = vec!["--handshake-timeout", &hs];
    args.extend(keys.args(0));
    let mut node = NodeProc::start(&args);
    let addr = node.listen.clone();
    let rss_idle = node.vm_rss_kib().unwrap();
    let _reply = echo_responder(&addr, &keys.args(1));
    let request = |payload: &str| echo_request(&addr, &keys.args(2), payload);
    echo_request_answered(&addr, &keys.args(2), "warm-up");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flood_started = Instant::now();
    let attack = rt.spawn(flood(addr.parse().unwrap()));

    // During the flood: requests succeed, and RSS is sampled.
    let mut rss_peak = 0;
    let mut answered = 0;
    let mut requests_took = Vec::new();
    while !attack.is_finished() {
        assert!(flood_started.elapsed() < LIMIT, "the flood did not end");
        rss_peak = rss_peak.max(node.vm_rss_kib().unwrap_or(0));
        if answered < 5 {
            let started = Instant::now();
            let done = request(&format!("during-{answered}"));
            done.assert_code(0);
            assert_eq!(done.stdout_text().trim(), format!("during-{answered}"));
            requests_took.push(started.elapsed());
            answered += 1;
        } else {
            std::thread::sleep(Duration::from_millis(10)); // sampling period
        }
    }
    let outcomes = rt.block_on(attack).unwrap();
    let flood_took = flood_started.elapsed();
    assert!(
        answered >= 1,
        "no request ran during the flood ({flood_took:?})"
    );
    let rss_after = node.vm_rss_kib().unwrap();
    assert!(node.is_running(), "node died\n{}", node.stderr());

    let failed: Vec<&Outcome> = outcomes.iter().filter(|(_, o)| o.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} flood connections were not closed in time: {:?}",
        failed.len(),
        outcomes.len(),
        &failed[..failed.len().min(10)]
    );
    let quick = outcomes
        .iter()
        .filter(|(_, o)| o.as_ref().is_ok_and(|d| *d < Duration::from_millis(200)))
        .count();
    let slowest = outcomes
        .iter()
        .filter_map(|(_, o)| o.as_ref().ok())
        .max()
        .copied()
        .unwrap_or_default();
    // Garbage is refused at once whatever the limits (500 connections);
    // the per-address handshake cap refuses most of the rest at accept.
    assert!(
        quick >= 1000,
        "only {quick} of 2000 flood connections were closed at once"
    );
    for (when, rss) in [("during", rss_peak), ("after", rss_after)] {
        assert!(
            rss < RSS_CAP_MIB * 1024,
            "node RSS {when} the flood: {rss} KiB (idle {rss_idle} KiB); cap {RSS_CAP_MIB} MiB"
        );
    }
    // Still serving after the flood.
    request("after").assert_code(0);
    eprintln!(
        "{} flood connections in {flood_took:?} ({quick} closed within 200 ms, slowest \
         {slowest:?}); {answered} requests answered during it ({requests_took:?}); node RSS \
         idle {rss_idle} KiB, peak {rss_peak} KiB, after {rss_after} KiB (cap {RSS_CAP_MIB} MiB)",
        outcomes.len()
    );
    node.terminate(Duration::from_secs(10)).assert_code(0);
}
