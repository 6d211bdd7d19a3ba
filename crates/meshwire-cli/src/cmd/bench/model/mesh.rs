//! The nodes of `bench model` and what one exchange, one call and one round
//! are (the module docs of [`super`] say why they are defined so). All of
//! it runs on the client side's one pinned thread: the n client nodes, one
//! handler task per node, and the coordinator (the methods of [`Mesh`])
//! that drives the rounds and times them. The router and the shared state
//! ([`state_service`]) run on the server side.
//!
//! Node k subscribes to `bench.model.k`. Every message and every call
//! carries a 16-byte header, then filler up to `--size`:
//!
//! | bytes | what |
//! |---|---|
//! | 0..2 | sender (node index) |
//! | 2..4 | receiver (node index, or [`STATE`] for the shared state) |
//! | 4..8 | CRC-32 of bytes 8.. |
//! | 8..16 | tag: which message this is, unique in the run |
//!
//! The processing (tp) is checking all of it: decode the header, check the
//! message is for this receiver, checksum the rest ([`process`]).

use super::super::harness::Security;
use super::super::report::{Latencies, Progress};
use anyhow::Context as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use meshwire::rpc::{Client, Service};
use meshwire::{Node, Subscription};
use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Sleep;

/// The header every payload starts with; payloads are at least this long.
pub(super) const HEADER: usize = 16;
/// The receiver field of a call to the shared state.
const STATE: u16 = u16::MAX;
/// The RPC service on the router that holds the shared state.
const STATE_SERVICE: &str = "model";
/// Its one method: store the caller's checksum, answer it.
const PUT: &str = "put";
/// A round (or one exchange of the parts) that takes longer has lost a
/// message or the machine is far too busy to measure anything.
const ROUND_WITHIN: Duration = Duration::from_secs(30);
/// How long a new node's first message may take before it is sent again
/// (its subscription reaches the router asynchronously).
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// How long a new node may take to become reachable at all.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// What is wrong with a message a handler received. Any of these is a bug
/// in meshwire (or in this benchmark): the bench stops and says so.
#[derive(Debug, thiserror::Error)]
pub(super) enum Malformed {
    /// Too short to hold the header.
    #[error("{len} bytes, shorter than the {HEADER}-byte header")]
    Short {
        /// Its length.
        len: usize,
    },
    /// Delivered to another receiver than the one it names.
    #[error("addressed to {to}, delivered to {me}")]
    Misrouted {
        /// The receiver it names.
        to: u16,
        /// The receiver it reached.
        me: u16,
    },
    /// Its bytes changed on the way.
    #[error("CRC-32 {got:#010x} does not match the {sent:#010x} it was sent with")]
    Checksum {
        /// The checksum in the header.
        sent: u32,
        /// The checksum of what arrived.
        got: u32,
    },
}

/// What a receiver learns from a header it checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Letterhead {
    from: u16,
    tag: u64,
    crc: u32,
}

/// The handler's work, tp: decode the header, check the message is for
/// `me`, and checksum the rest of the payload against the header.
pub(super) fn process(payload: &[u8], me: u16) -> Result<Letterhead, Malformed> {
    if payload.len() < HEADER {
        return Err(Malformed::Short { len: payload.len() });
    }
    let mut head = &payload[..HEADER];
    let (from, to, sent, tag) = (
        head.get_u16(),
        head.get_u16(),
        head.get_u32(),
        head.get_u64(),
    );
    if to != me {
        return Err(Malformed::Misrouted { to, me });
    }
    let got = crc32fast::hash(&payload[8..]);
    if got != sent {
        return Err(Malformed::Checksum { sent, got });
    }
    Ok(Letterhead {
        from,
        tag,
        crc: got,
    })
}

/// The payload of message `tag` from `from` to `to`, `size` bytes
/// (at least [`HEADER`]).
fn payload(from: u16, to: u16, tag: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER));
    b.put_u16(from);
    b.put_u16(to);
    b.put_u32(0);
    b.put_u64(tag);
    b.resize(size.max(HEADER), 0xA5);
    let crc = crc32fast::hash(&b[8..]);
    b[4..8].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// The shared state the RPC rounds call, served by the router: a table of
/// the last checksum each node put. `put` processes the request as a
/// message handler does, stores, and answers the checksum.
pub(super) fn state_service() -> Service {
    let table: Arc<Mutex<HashMap<u16, u32>>> = Arc::default();
    Service::new(STATE_SERVICE).unary(PUT, true, move |_ctx, body: Vec<u8>| {
        let table = table.clone();
        async move {
            let head = process(&body, STATE).map_err(|e| e.to_string())?;
            table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(head.from, head.crc);
            Ok::<u32, String>(head.crc)
        }
    })
}

/// What a handler reports for each message it processed.
#[derive(Debug)]
struct Report {
    /// The message's tag (0 when it could not be read).
    tag: u64,
    /// When the handler had the message in hand.
    has: Instant,
    /// When it was done processing it.
    done: Instant,
    verdict: Result<(), Malformed>,
}

/// A node's handler: processes every message addressed to `me` and reports
/// to the coordinator.
async fn handle(mut sub: Subscription, me: u16, reports: mpsc::UnboundedSender<Report>) {
    while let Some(m) = sub.recv().await {
        let has = Instant::now();
        let checked = process(m.payload(), me);
        let done = Instant::now();
        let (tag, verdict) = match checked {
            Ok(head) => (head.tag, Ok(())),
            Err(e) => (0, Err(e)),
        };
        let report = Report {
            tag,
            has,
            done,
            verdict,
        };
        if reports.send(report).is_err() {
            return;
        }
    }
}

/// The parts of one exchange, each over the measured exchanges.
pub(super) struct Parts {
    /// ts: `Publish::send()` on the sender.
    pub(super) send: Latencies,
    /// tr: from the send call's return until the receiver's handler has it.
    pub(super) receive: Latencies,
    /// tp: the handler's work ([`process`]).
    pub(super) process: Latencies,
    /// The exchange measured whole, from the send call until the
    /// coordinator hears the handler is done (ts+tr+tp and one wake-up).
    pub(super) whole: Latencies,
    /// `publish(..).await` until the router's ack (outside the model).
    pub(super) acked: Latencies,
}

/// One client node of the mesh.
struct Member {
    node: Node,
    /// Where its messages go.
    subject: String,
    /// Its RPC client of the shared state.
    state: Client,
}

/// A message ready to go.
struct Letter {
    from: usize,
    to: usize,
    tag: u64,
    payload: Bytes,
}

/// The client nodes and the coordinator's end of their handlers' reports.
pub(super) struct Mesh {
    security: Security,
    addr: String,
    size: usize,
    members: Vec<Member>,
    reports: mpsc::UnboundedReceiver<Report>,
    report_tx: mpsc::UnboundedSender<Report>,
    /// Dropping the set aborts the handlers.
    handlers: JoinSet<()>,
    next_tag: u64,
}

impl Mesh {
    /// No nodes yet; `size`-byte payloads (at least [`HEADER`]).
    pub(super) fn new(security: Security, addr: String, size: usize) -> Self {
        let (report_tx, reports) = mpsc::unbounded_channel();
        Self {
            security,
            addr,
            size: size.max(HEADER),
            members: Vec::new(),
            reports,
            report_tx,
            handlers: JoinSet::new(),
            next_tag: 1,
        }
    }

    /// Attaches nodes until there are `n`, each subscribed, with its
    /// handler, and with an RPC client that found the shared state; checks
    /// that a message reaches each new node before returning.
    pub(super) async fn grow(&mut self, n: usize) -> anyhow::Result<()> {
        while self.members.len() < n {
            let k = self.members.len();
            let me = u16::try_from(k).context("too many nodes; this is a bug")?;
            let node = self
                .security
                .client(&format!("model-{k}"), &self.addr)
                .await?;
            let subject = format!("bench.model.{k}");
            let sub = node
                .subscribe(&subject)
                .await
                .with_context(|| format!("bench node {k} could not subscribe; this is a bug"))?;
            self.handlers.spawn(handle(sub, me, self.report_tx.clone()));
            let state = Client::builder(&node, STATE_SERVICE)
                .build()
                .await
                .context("a bench node could not subscribe to discovery; this is a bug")?;
            if state.instances().is_empty() {
                anyhow::bail!(
                    "bench node {k} did not discover the shared state on the router within a \
                     second; the machine may be overloaded: retry, or use --pin none"
                );
            }
            self.members.push(Member {
                node,
                subject,
                state,
            });
            // Node 0's subscription is checked once node 1 can send to it.
            if k == 1 {
                self.probe(1, 0).await?;
            }
            if k >= 1 {
                self.probe(0, k).await?;
            }
        }
        Ok(())
    }

    /// Sends from `from` to `to` until one arrives: the router knows `to`'s
    /// subscription only some time after `subscribe` returned.
    async fn probe(&mut self, from: usize, to: usize) -> anyhow::Result<()> {
        let give_up = Instant::now() + READY_WITHIN;
        loop {
            let letter = self.letter(from, to);
            let tag = letter.tag;
            self.post(letter).await?;
            let mut deadline = armed(PROBE_EVERY).await;
            if self.await_tag(tag, &mut deadline).await?.is_some() {
                return Ok(());
            }
            if Instant::now() > give_up {
                anyhow::bail!(
                    "bench node {to} never received a message within {READY_WITHIN:?}; is the \
                     router up? retry, or use --pin none"
                );
            }
        }
    }

    /// Measures the parts of an exchange between nodes 0 and 1 (taking
    /// turns to send): `warmup` unmeasured exchanges, then `rounds`
    /// measured; then as many again with the send awaited to the router's
    /// ack. One progress tick per exchange.
    pub(super) async fn parts(
        &mut self,
        warmup: u32,
        rounds: u32,
        progress: &Progress,
    ) -> anyhow::Result<Parts> {
        let mut parts = Parts {
            send: Latencies::new()?,
            receive: Latencies::new()?,
            process: Latencies::new()?,
            whole: Latencies::new()?,
            acked: Latencies::new()?,
        };
        for acked in [false, true] {
            for i in 0..warmup + rounds {
                let (from, to) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
                let Letter { tag, payload, .. } = self.letter(from, to);
                let (node, subject) = (&self.members[from].node, &self.members[to].subject);
                let mut deadline = armed(ROUND_WITHIN).await;
                let t0 = Instant::now();
                let sent = if acked {
                    node.publish(subject, payload).await
                } else {
                    node.publish(subject, payload).send().await
                };
                let sent_at = Instant::now();
                sent.with_context(|| format!("bench node {from} could not send"))?;
                let r = self
                    .await_tag(tag, &mut deadline)
                    .await?
                    .with_context(|| lost(ROUND_WITHIN))?;
                let seen = Instant::now();
                if i >= warmup {
                    if acked {
                        parts.acked.record(sent_at - t0);
                    } else {
                        parts.send.record(sent_at - t0);
                        parts
                            .receive
                            .record(r.has.saturating_duration_since(sent_at));
                        parts
                            .process
                            .record(r.done.saturating_duration_since(r.has));
                        parts.whole.record(seen - t0);
                    }
                }
                progress.tick();
            }
        }
        Ok(parts)
    }

    /// One all-to-all round among the first `n` nodes: every pair
    /// exchanges one message; returns the time until the last handler is
    /// done. Serial: each exchange starts once the previous is complete;
    /// `pipelined`: every message is sent at once.
    pub(super) async fn all_to_all(
        &mut self,
        n: usize,
        pipelined: bool,
    ) -> anyhow::Result<Duration> {
        let letters: Vec<Letter> = pairs(n)
            .into_iter()
            .map(|(from, to)| self.letter(from, to))
            .collect();
        let (first, count) = (letters.first().map_or(0, |l| l.tag), letters.len());
        let mut deadline = armed(ROUND_WITHIN).await;
        let start = Instant::now();
        if pipelined {
            for letter in letters {
                self.post(letter).await?;
            }
            let mut seen = vec![false; count];
            let mut left = count;
            while left > 0 {
                let r = self
                    .next_report(&mut deadline)
                    .await?
                    .with_context(|| lost(ROUND_WITHIN))?;
                // Reports of earlier probes carry older tags: skipped.
                let i = r.tag.wrapping_sub(first);
                if let Some(s) = usize::try_from(i).ok().and_then(|i| seen.get_mut(i)) {
                    if !*s {
                        *s = true;
                        left -= 1;
                    }
                }
            }
        } else {
            for letter in letters {
                let tag = letter.tag;
                self.post(letter).await?;
                self.await_tag(tag, &mut deadline)
                    .await?
                    .with_context(|| lost(ROUND_WITHIN))?;
            }
        }
        Ok(start.elapsed())
    }

    /// One RPC round: each of the first `n` nodes calls `put` on the shared
    /// state once; returns the time until the last answer. Serial: one call
    /// after the other; `pipelined`: all at once.
    pub(super) async fn rpc(&mut self, n: usize, pipelined: bool) -> anyhow::Result<Duration> {
        let calls: Vec<(usize, Vec<u8>)> = (0..n)
            .map(|k| {
                let tag = self.take_tag();
                (k, payload(k as u16, STATE, tag, self.size).to_vec())
            })
            .collect();
        let expect: Vec<u32> = calls
            .iter()
            .map(|(_, body)| crc32fast::hash(&body[8..]))
            .collect();
        let start = Instant::now();
        let answers = if pipelined {
            futures_util::future::join_all(calls.into_iter().map(|(k, body)| {
                self.members[k]
                    .state
                    .call::<Vec<u8>, u32, String>(PUT, body)
                    .into_future()
            }))
            .await
        } else {
            let mut answers = Vec::with_capacity(n);
            for (k, body) in calls {
                answers.push(
                    self.members[k]
                        .state
                        .call::<Vec<u8>, u32, String>(PUT, body)
                        .await,
                );
            }
            answers
        };
        let elapsed = start.elapsed();
        for (k, (answer, want)) in answers.into_iter().zip(expect).enumerate() {
            let got: u32 = answer.map_err(|e: meshwire::rpc::RpcError<String>| {
                anyhow::anyhow!(
                    "bench node {k}'s call to the shared state failed: {e}; retry, or rerun with \
                     --log debug to see why"
                )
            })?;
            if got != want {
                anyhow::bail!(
                    "the shared state answered node {k} with checksum {got:#010x}, not the \
                     {want:#010x} it put; this is a bug"
                );
            }
        }
        Ok(elapsed)
    }

    /// Shuts every node down.
    pub(super) async fn shutdown(self) {
        drop(self.handlers);
        for m in self.members {
            drop(m.state);
            m.node.shutdown().await;
        }
    }

    fn take_tag(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    fn letter(&mut self, from: usize, to: usize) -> Letter {
        let tag = self.take_tag();
        Letter {
            from,
            to,
            tag,
            payload: payload(from as u16, to as u16, tag, self.size),
        }
    }

    /// Sends `letter` with `Publish::send()`: reliable, ordered, returning
    /// once the sender's node has it queued.
    async fn post(&self, letter: Letter) -> anyhow::Result<()> {
        let from = &self.members[letter.from].node;
        from.publish(&self.members[letter.to].subject, letter.payload)
            .send()
            .await
            .with_context(|| format!("bench node {} could not send", letter.from))
    }

    /// The next handler report, or `None` once `deadline` passes.
    async fn next_report(
        &mut self,
        deadline: &mut Pin<Box<Sleep>>,
    ) -> anyhow::Result<Option<Report>> {
        tokio::select! {
            biased;
            r = self.reports.recv() => {
                // The mesh holds a sender, so the channel stays open.
                let r = r.context("the bench handlers' channel closed; this is a bug")?;
                r.verdict.as_ref().map_err(|e| {
                    anyhow::anyhow!("a bench node received a bad message: {e}; this is a bug")
                })?;
                Ok(Some(r))
            }
            _ = deadline.as_mut() => Ok(None),
        }
    }

    /// The report for message `tag` (skipping older ones), or `None` once
    /// `deadline` passes.
    async fn await_tag(
        &mut self,
        tag: u64,
        deadline: &mut Pin<Box<Sleep>>,
    ) -> anyhow::Result<Option<Report>> {
        loop {
            match self.next_report(deadline).await? {
                Some(r) if r.tag == tag => return Ok(Some(r)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }
}

/// A timer for `d`, already registered with the runtime, so that arming it
/// is not inside the time it bounds.
async fn armed(d: Duration) -> Pin<Box<Sleep>> {
    let mut sleep = Box::pin(tokio::time::sleep(d));
    std::future::poll_fn(|cx| {
        let _ = sleep.as_mut().poll(cx);
        Poll::Ready(())
    })
    .await;
    sleep
}

fn lost(within: Duration) -> String {
    format!(
        "a bench exchange did not complete within {within:?}: a message was lost or the \
         machine is overloaded; retry, or use --pin none"
    )
}

/// Every pair of the first `n` nodes once: n(n−1)/2 (sender, receiver).
/// Who sends alternates with the distance between the two, so each node
/// sends about as many messages as it receives (rather than node 0 sending
/// all of its pairs' and node n−1 none).
pub(super) fn pairs(n: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            out.push(if (j - i) % 2 == 1 { (i, j) } else { (j, i) });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_once_and_sending_is_shared() {
        for n in 2..=32 {
            let p = pairs(n);
            assert_eq!(p.len(), n * (n - 1) / 2);
            let mut seen = std::collections::HashSet::new();
            for &(a, b) in &p {
                assert!(a < n && b < n && a != b);
                assert!(seen.insert((a.min(b), a.max(b))), "pair {a},{b} twice");
            }
            for k in 0..n {
                let sends = p.iter().filter(|(a, _)| *a == k).count();
                assert!(
                    sends.abs_diff((n - 1) / 2) <= 1,
                    "n {n}: node {k} sends {sends} of its {} pairs",
                    n - 1
                );
            }
        }
    }

    #[test]
    fn process_accepts_what_payload_writes_and_names_what_is_wrong() {
        let p = payload(3, 5, 42, 64);
        assert_eq!(p.len(), 64);
        let head = process(&p, 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((head.from, head.tag), (3, 42));
        assert!(matches!(
            process(&p, 4),
            Err(Malformed::Misrouted { to: 5, me: 4 })
        ));
        let mut bad = p.to_vec();
        bad[40] ^= 1;
        assert!(matches!(process(&bad, 5), Err(Malformed::Checksum { .. })));
        assert!(matches!(
            process(&p[..10], 5),
            Err(Malformed::Short { len: 10 })
        ));
        // Payloads never go below the header.
        assert_eq!(payload(0, 1, 7, 0).len(), HEADER);
    }
}
