//! Making connections: the accept loop, dialers for router peers, and a
//! client's link to its router. Each runs as a small task and hands new
//! connections to the engine; reconnects back off exponentially with jitter.

use super::Engine;
use crate::abuse::admission::{Admission, Opened, Rejection};
use crate::config::NodeConfig;
use crate::link::{self, LinkInput};
use crate::transport::secure::{self, LinkTls};
use crate::transport::{self, Addr, Listener, Raw};
use meshwire_proto::wire::{Close, CloseCode, Frame};
use rand::Rng;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Addresses of routers we currently have a live link with; dialers skip
/// them (the link may have been dialled from the other end).
pub(crate) type Linked = Arc<Mutex<HashSet<String>>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that lived this long resets the back-off.
const STABLE: Duration = Duration::from_secs(5);
/// A dialer for a router learned by gossip gives up after this many
/// consecutive failures (a seed peer is retried forever).
const LEARNED_MAX_FAILURES: u32 = 40;

pub(crate) async fn accept_loop(
    mut listener: Listener,
    mut stop: oneshot::Receiver<()>,
    ids: Arc<AtomicU64>,
    cfg: Arc<NodeConfig>,
    tls: Option<LinkTls>,
    admission: Arc<Admission>,
    to_engine: mpsc::Sender<LinkInput>,
) {
    loop {
        let raw = tokio::select! {
            s = listener.accept() => s,
            _ = &mut stop => return,
        };
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The limits come first: a refused connection costs no TLS work.
        let now = Instant::now();
        let opened = match admission.admit(raw.peer_ip(), raw.remote(), now) {
            Ok(ticket) => Opened {
                at: now,
                ticket: Some(ticket),
            },
            Err(rejection) => {
                refuse_at_accept(raw, &rejection, tls.is_some());
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        if secure::wants_tls(&raw, tls.as_ref()) {
            // The TLS handshake runs in a task of its own, so a slow or
            // stalled peer holds up neither this loop nor the engine.
            // There are at most `max_handshakes` of these tasks.
            let (tls, cfg, to_engine) = (tls.clone(), cfg.clone(), to_engine.clone());
            tokio::spawn(async move {
                let remote = raw.remote().to_owned();
                match secure::accept(raw, tls.as_ref(), cfg.handshake_timeout).await {
                    Ok((stream, peer)) => {
                        let _ = link::start(id, stream, cfg.limits, to_engine, None, peer, opened)
                            .await;
                    }
                    Err(e) => handshake_failed(&remote, &e),
                }
            });
        } else if link::start(
            id,
            raw.plain(),
            cfg.limits,
            to_engine.clone(),
            None,
            None,
            opened,
        )
        .await
        .is_none()
        {
            return;
        }
        if to_engine.is_closed() {
            return;
        }
    }
}

/// Closes a connection the limits turned away. A plaintext peer is told
/// why with a `Close(Refused)` frame, if the socket takes it at once; a
/// TLS peer is not (telling it would take a handshake, which is what
/// refusing saves).
fn refuse_at_accept(raw: Raw, rejection: &Rejection, tls: bool) {
    if let (Raw::Socket(socket, _), false) = (&raw, tls) {
        let close = Frame::Close(Close {
            code: CloseCode::Refused,
            reason: rejection.to_string(),
        });
        let _ = socket.try_write(&close.to_bytes());
    }
}

/// Logs and counts a failed TLS handshake; the connection is dropped.
fn handshake_failed(remote: &str, e: &crate::security::HandshakeError) {
    metrics::counter!("meshwire_links_refused_total").increment(1);
    match e.peer() {
        Some(peer) => {
            tracing::warn!(%remote, %peer, error = %e, "TLS handshake failed; connection dropped")
        }
        None => tracing::warn!(%remote, error = %e, "TLS handshake failed; connection dropped"),
    }
}

/// How one connection attempt went.
enum Attempt {
    /// Connected; the link lived this long before it closed.
    Lived(Duration),
    /// Could not connect (refused, unreachable, timed out).
    Failed,
    /// The engine is gone: stop dialling.
    EngineGone,
}

/// Connects to `addr`, hands the connection to the engine and waits until
/// it is closed.
async fn connect_once(
    addr: &Addr,
    key: &str,
    cfg: &NodeConfig,
    ids: &AtomicU64,
    tls: Option<&LinkTls>,
    to_engine: &mpsc::Sender<LinkInput>,
) -> Attempt {
    match tokio::time::timeout(CONNECT_TIMEOUT, transport::connect(addr)).await {
        Ok(Ok(raw)) => {
            let opened = Instant::now();
            let remote = raw.remote().to_owned();
            let (stream, peer) = match secure::connect(raw, tls, cfg.handshake_timeout).await {
                Ok(secured) => secured,
                Err(e) => {
                    handshake_failed(&remote, &e);
                    return dial_failed(to_engine, key, e.to_string()).await;
                }
            };
            let started = Instant::now();
            let id = ids.fetch_add(1, Ordering::Relaxed);
            match link::start(
                id,
                stream,
                cfg.limits,
                to_engine.clone(),
                Some(key.to_owned()),
                peer,
                Opened::dialled(opened),
            )
            .await
            {
                Some(closed) => {
                    let _ = closed.await;
                    Attempt::Lived(started.elapsed())
                }
                None => Attempt::EngineGone,
            }
        }
        Ok(Err(e)) => {
            tracing::debug!(%key, error = %e, "connect failed");
            dial_failed(to_engine, key, format!("cannot connect: {e}")).await
        }
        Err(_) => {
            tracing::debug!(%key, "connect timed out");
            dial_failed(
                to_engine,
                key,
                format!("no answer within {CONNECT_TIMEOUT:?}"),
            )
            .await
        }
    }
}

/// Tells the engine why a dial failed (for [`Status::last_link_error`](super::Status)).
async fn dial_failed(to_engine: &mpsc::Sender<LinkInput>, key: &str, reason: String) -> Attempt {
    let _ = to_engine
        .send(LinkInput::DialFailed {
            addr: key.to_owned(),
            reason,
        })
        .await;
    Attempt::Failed
}

fn backoff_step(cur: Duration, cfg: &NodeConfig) -> Duration {
    (cur * 2).clamp(cfg.reconnect_min, cfg.reconnect_max)
}

fn jittered(d: Duration) -> Duration {
    // Full jitter in [d/2, d): peers that lost a link together do not
    // all come back in the same instant.
    let ms = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..ms))
}

impl Engine {
    /// Starts dialling a router at `addr` unless a dialer already exists.
    pub(crate) fn start_dialer(&mut self, addr: Addr, seed: bool) {
        let key = addr.to_string();
        if !self.dialing.insert(key.clone()) {
            return;
        }
        tracing::debug!(%key, seed, "dialling router");
        tokio::spawn(dial_loop(
            addr,
            key,
            seed,
            self.cfg.clone(),
            self.conn_ids.clone(),
            self.tls.clone(),
            self.link_tx.clone(),
            self.linked.clone(),
        ));
    }

    /// Recomputes which router addresses have a live link.
    pub(crate) fn refresh_linked(&self) {
        let mut set = self.linked.lock().unwrap_or_else(|e| e.into_inner());
        set.clear();
        for p in self.peers.values() {
            if p.session.is_up() {
                if let Some(l) = &p.listen {
                    set.insert(l.as_str().to_owned());
                }
                if let Some(a) = &p.dial_addr {
                    set.insert(a.clone());
                }
            }
        }
        set.extend(self.self_addrs.iter().cloned());
    }
}

#[allow(clippy::too_many_arguments)] // what one dialler needs, each cloned from the engine
async fn dial_loop(
    addr: Addr,
    key: String,
    seed: bool,
    cfg: Arc<NodeConfig>,
    ids: Arc<AtomicU64>,
    tls: Option<LinkTls>,
    to_engine: mpsc::Sender<LinkInput>,
    linked: Linked,
) {
    let mut backoff = cfg.reconnect_min;
    let mut failures = 0u32;
    loop {
        if to_engine.is_closed() {
            return;
        }
        let already = linked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key);
        if already {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        match connect_once(&addr, &key, &cfg, &ids, tls.as_ref(), &to_engine).await {
            Attempt::EngineGone => return,
            Attempt::Lived(lived) if lived >= STABLE => {
                backoff = cfg.reconnect_min;
                failures = 0;
            }
            Attempt::Lived(_) => backoff = backoff_step(backoff, &cfg),
            Attempt::Failed => {
                failures += 1;
                backoff = backoff_step(backoff, &cfg);
            }
        }
        if !seed && failures >= LEARNED_MAX_FAILURES {
            tracing::info!(%key, "giving up on a router learned by gossip");
            let _ = to_engine.send(LinkInput::DialerStopped { addr: key }).await;
            return;
        }
        tokio::time::sleep(jittered(backoff)).await;
    }
}

/// A client's link to a router: stays with the current router while it
/// answers (so the session resumes), moves to the next known router after
/// repeated failures.
pub(crate) async fn upstream_loop(
    addrs: watch::Receiver<Vec<String>>,
    cfg: Arc<NodeConfig>,
    ids: Arc<AtomicU64>,
    tls: Option<LinkTls>,
    to_engine: mpsc::Sender<LinkInput>,
) {
    let mut backoff = cfg.reconnect_min;
    let mut cur = 0usize;
    let mut failures_here = 0u32;
    loop {
        if to_engine.is_closed() {
            return;
        }
        let list = addrs.borrow().clone();
        if list.is_empty() {
            return;
        }
        let key = list[cur % list.len()].clone();
        let addr = match Addr::parse(&key) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "skipping router address");
                cur += 1;
                continue;
            }
        };
        match connect_once(&addr, &key, &cfg, &ids, tls.as_ref(), &to_engine).await {
            Attempt::EngineGone => return,
            Attempt::Lived(lived) => {
                // The router answered: stay with it (a session resumes
                // only with the router that holds it).
                failures_here = 0;
                backoff = if lived >= STABLE {
                    cfg.reconnect_min
                } else {
                    backoff_step(backoff, &cfg)
                };
            }
            Attempt::Failed => {
                failures_here += 1;
                backoff = backoff_step(backoff, &cfg);
            }
        }
        if failures_here >= 3 && list.len() > 1 {
            cur += 1;
            failures_here = 0;
        }
        tokio::time::sleep(jittered(backoff)).await;
    }
}
