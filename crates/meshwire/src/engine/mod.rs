//! The engine: one task per node that owns every session, the routing
//! tables and the user's subscriptions.
//!
//! Inputs arrive on two channels — [`LinkInput`] from connection tasks
//! (batches of decoded frames) and [`Command`] from the public API — plus
//! one timer. Each wake-up processes everything available, then runs the
//! work list: sessions with new events are drained (routing may queue
//! messages on other sessions), then every touched session encodes what it
//! has into its connection's out-buffer, once. One task owning all state
//! means no locks on the message path and one place to reason about order.

mod dial;
mod handshake;
mod limits;
mod permissions;
mod router;

use crate::abuse::admission::Admission;
use crate::abuse::strikes::Strikes;
use crate::abuse::LogThrottle;
use crate::config::NodeConfig;
use crate::link::{LinkInput, OUT_HIGH_WATER};
use crate::pubsub::{Message, SubShared, SubSink, Subscription};
use crate::security::permissions::{Granted, Permissions, Rules};
use crate::transport::secure::LinkTls;
use crate::transport::{Addr, Listener};
use crate::Error;
use bytes::Bytes;
use meshwire_proto::collections::{HashMap, HashSet};
use meshwire_proto::routing::{Matches, SubscriptionTable};
use meshwire_proto::session::{Event, Session};
use meshwire_proto::wire::{CloseCode, Lane, Message as Wire, NodeId, Role, Subject};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// How a publication travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Reliable on the given lane.
    Reliable(Lane),
    /// At most once.
    BestEffort,
}

type Reply = oneshot::Sender<Result<(), Error>>;

/// Requests from the public API to the engine.
pub(crate) enum Command {
    Publish {
        subject: Subject,
        reply_to: Option<Subject>,
        payload: Bytes,
        level: Level,
        /// Resolved when the first router owns the message; `None` when the
        /// caller does not wait (it may `flush` later).
        ack: Option<Reply>,
    },
    Subscribe {
        pattern: Subject,
        group: Option<Subject>,
        done: oneshot::Sender<Result<Subscription, Error>>,
    },
    Request {
        subject: Subject,
        payload: Bytes,
        reply: ReplySink,
        /// Told the reply inbox before the request goes out (to cancel it).
        inbox: Option<oneshot::Sender<Subject>>,
    },
    Flush {
        done: Reply,
    },
    Status {
        done: oneshot::Sender<Status>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// A reloaded permissions file (routers).
    SetPermissions {
        permissions: Arc<Permissions>,
        done: oneshot::Sender<()>,
    },
    /// New trust: admit what it admits from now on, and close the links of
    /// nodes it no longer admits. Answers how many links were closed.
    SetTrust {
        trust: crate::security::Trust,
        done: oneshot::Sender<Result<usize, Error>>,
    },
}

/// Where the replies to a request go: the first one only, or every one
/// until the receiver is dropped (server streaming).
pub(crate) enum ReplySink {
    Once(oneshot::Sender<Result<Message, Error>>),
    Many(mpsc::UnboundedSender<Result<Message, Error>>),
}

impl ReplySink {
    fn is_closed(&self) -> bool {
        match self {
            ReplySink::Once(tx) => tx.is_closed(),
            ReplySink::Many(tx) => tx.is_closed(),
        }
    }

    fn send(self, r: Result<Message, Error>) {
        match self {
            ReplySink::Once(tx) => {
                let _ = tx.send(r);
            }
            ReplySink::Many(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// Messages that must never be lost to a full channel (sent from `Drop`
/// and from the consumer side of a subscription).
#[derive(Debug)]
pub(crate) enum Control {
    Unsubscribe {
        sid: u64,
    },
    Thaw,
    /// The receiver of a multi-reply request is gone: forget the request.
    EndRequest {
        inbox: Subject,
    },
    /// A reliable publication from a place that cannot wait (a `Drop`).
    Publish {
        subject: Subject,
        payload: Bytes,
    },
}

/// A snapshot of a node's links, for tools and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Peers with a session (up or retained).
    pub peers: Vec<PeerStatus>,
    /// Subscriptions held by this router for its clients and itself, not
    /// counting those of the shared-state services every router runs
    /// (subjects under `_KV.`, `_RAFT.` and `_CRDT.`).
    pub local_subscriptions: usize,
    /// Interest learned from other routers, not counting the shared-state
    /// services' (as for `local_subscriptions`).
    pub remote_interest: usize,
    /// Credit to publishers is frozen (a consumer is behind).
    pub frozen: bool,
    /// Publications waiting for outbox room or a router.
    pub blocked: usize,
    /// Why the latest link this node dialled failed before it came up
    /// (refused, not TLS, unreachable), if one did: what a client that
    /// cannot attach should tell its user.
    pub last_link_error: Option<String>,
    /// Operations of clients this router refused by its permissions
    /// (also counted in `meshwire_permission_denied_total`).
    pub permission_denied: u64,
}

/// One peer in [`Status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStatus {
    /// Its id.
    pub node: NodeId,
    /// Router or client.
    pub router: bool,
    /// Link up now.
    pub up: bool,
    /// Messages awaiting its acknowledgement.
    pub outbox: usize,
    /// The connection carrying the session (a new id after a reconnect).
    pub connection: Option<u64>,
    /// Session internals, for debugging.
    pub detail: String,
}

/// Who is on the other end of a session, as the router keys it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    Node(NodeId),
    Named(Subject),
    /// A client's one session with whichever router it is attached to.
    Upstream,
}

/// A session and what the engine keeps beside it.
pub(crate) struct Peer {
    pub(crate) key: PeerKey,
    pub(crate) node: NodeId,
    pub(crate) role: Role,
    pub(crate) listen: Option<Subject>,
    pub(crate) session: Session,
    /// The connection carrying it, while up.
    pub(crate) conn: Option<u64>,
    /// Who dialled that connection (for the duplicate-link tie-break).
    pub(crate) conn_dialer: NodeId,
    /// The protocol version negotiated on the current (or last) link.
    pub(crate) version: u16,
    /// A client peer's permissions at this router (`None`: unrestricted).
    pub(crate) rules: Option<Arc<Rules>>,
    /// The address we dialled to reach it, if we did.
    pub(crate) dial_addr: Option<String>,
    /// Publish acknowledgements waiting, per lane, by sequence number.
    pub(crate) acks: [VecDeque<(u64, Reply)>; 2],
    /// A client's subscriptions at this router, by its sid.
    pub(crate) subs: HashMap<u64, (Subject, Option<Subject>)>,
    pub(crate) congested_since: Option<Instant>,
    pub(crate) queued: bool,
}

/// A user subscription on this node.
pub(crate) struct UserSub {
    pub(crate) pattern: Subject,
    pub(crate) group: Option<Subject>,
    pub(crate) sink: Option<SubSink>,
}

/// Where a publication entered this router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Local,
    Client(u64),
}

/// A peer index that means "this node's own user".
pub(crate) const SELF: u64 = 0;

pub(crate) struct Engine {
    pub(crate) cfg: Arc<NodeConfig>,
    pub(crate) id: NodeId,
    pub(crate) role: Role,
    pub(crate) name: String,
    pub(crate) advertise: Option<Subject>,
    pub(crate) session_name: Option<Subject>,
    pub(crate) link_tx: mpsc::Sender<LinkInput>,
    pub(crate) conn_ids: Arc<AtomicU64>,
    /// TLS for TCP links; `None`: plaintext.
    pub(crate) tls: Option<LinkTls>,
    pub(crate) conns: HashMap<u64, handshake::Conn>,
    pub(crate) peers: HashMap<u64, Peer>,
    pub(crate) peer_by_key: HashMap<PeerKey, u64>,
    next_peer: u64,
    work: Vec<u64>,
    // Routing (routers).
    pub(crate) local_subs: SubscriptionTable<(u64, u64)>,
    pub(crate) remote: SubscriptionTable<u64>,
    pub(crate) interest: HashMap<(Subject, Option<Subject>), usize>,
    pub(crate) m_local: Matches<(u64, u64)>,
    pub(crate) m_remote: Matches<u64>,
    /// `route`'s forwarding list, reused: (router, plain, groups).
    pub(crate) fwd: Vec<(u64, bool, Vec<Subject>)>,
    pub(crate) rr: usize,
    pub(crate) congested: HashSet<u64>,
    frozen: bool,
    routers_frozen: bool,
    // Dialling.
    pub(crate) dialing: HashSet<String>,
    pub(crate) linked: dial::Linked,
    /// See [`Status::last_link_error`].
    pub(crate) last_link_error: Option<String>,
    /// Addresses that turned out to be this node.
    pub(crate) self_addrs: HashSet<String>,
    pub(crate) known_routers: HashMap<NodeId, Subject>,
    pub(crate) upstream_addrs: watch::Sender<Vec<String>>,
    // The user side.
    pub(crate) user_subs: HashMap<u64, UserSub>,
    next_sid: u64,
    inbox_prefix: String,
    pub(crate) inbox_sid: Option<u64>,
    pub(crate) requests: HashMap<u64, (Subject, ReplySink)>,
    next_request: u64,
    blocked: VecDeque<Command>,
    /// Deliveries for subscriptions a resumed named session has not
    /// re-created yet.
    held: VecDeque<(u64, Message)>,
    flushes: Vec<([u64; 2], Reply)>,
    ctl_tx: mpsc::UnboundedSender<Control>,
    pub(crate) ready: watch::Sender<bool>,
    // Permissions. A router's table (`None`: everything allowed), what it
    // logged, how many operations it refused; a client's grants, and
    // whether it waits for them before it is ready.
    pub(crate) permissions: Option<Arc<Permissions>>,
    pub(crate) denial_log: permissions::DenialLog,
    pub(crate) denied: u64,
    pub(crate) granted: Arc<Granted>,
    pub(crate) awaiting_grants: bool,
    shutting_down: Option<(Instant, Vec<oneshot::Sender<()>>)>,
    listener_stop: Option<oneshot::Sender<()>>,
    /// Strikes against nodes (pings, reconnects); see `limits.rs`.
    pub(crate) strikes: Strikes<NodeId>,
    pub(crate) strike_log: LogThrottle,
}

/// What `Node::start` gets back.
pub(crate) struct Started {
    pub(crate) cmd: mpsc::Sender<Command>,
    pub(crate) ctl: mpsc::UnboundedSender<Control>,
    pub(crate) listen: Option<String>,
    pub(crate) ready: watch::Receiver<bool>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// Parameters of a new engine.
pub(crate) struct Spec {
    pub(crate) cfg: NodeConfig,
    pub(crate) id: NodeId,
    pub(crate) name: String,
    pub(crate) listen: Option<Addr>,
    pub(crate) advertise: Option<String>,
    pub(crate) peers: Vec<Addr>,
    pub(crate) connect: Vec<Addr>,
    pub(crate) session_name: Option<Subject>,
    /// TLS for TCP links; `None`: plaintext.
    pub(crate) tls: Option<LinkTls>,
    /// A router's permissions (`None`: everything allowed).
    pub(crate) permissions: Option<Arc<Permissions>>,
    /// Where a client keeps what its router granted.
    pub(crate) granted: Arc<Granted>,
}

pub(crate) async fn start(spec: Spec) -> Result<Started, Error> {
    let role = if spec.listen.is_some() {
        Role::Router
    } else {
        Role::Client
    };
    if role == Role::Client && spec.connect.is_empty() {
        return Err(Error::Config(
            "a node needs `listen` (to be a router) or at least one `connect` address (to attach to a router)".into(),
        ));
    }
    if role == Role::Router && !spec.connect.is_empty() {
        return Err(Error::Config(
            "a router peers with other routers: use `peer`, not `connect`".into(),
        ));
    }
    let (link_tx, link_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(1024);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = watch::channel(role == Role::Router);
    let conn_ids = Arc::new(AtomicU64::new(1));
    let cfg = Arc::new(spec.cfg);

    let mut listen_str = None;
    let mut listener_stop = None;
    if let Some(addr) = &spec.listen {
        let (listener, bound) = Listener::bind(addr).await?;
        listen_str = Some(bound.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        listener_stop = Some(stop_tx);
        tokio::spawn(dial::accept_loop(
            listener,
            stop_rx,
            conn_ids.clone(),
            cfg.clone(),
            spec.tls.clone(),
            Admission::new(&cfg),
            link_tx.clone(),
        ));
    }
    let advertise = match (&spec.advertise, &listen_str) {
        (Some(a), _) => Some(Subject::from_bytes(Bytes::from(a.clone()))?),
        (None, Some(l)) => Some(Subject::from_bytes(Bytes::from(l.clone()))?),
        _ => None,
    };
    let (up_tx, up_rx) =
        watch::channel(spec.connect.iter().map(Addr::to_string).collect::<Vec<_>>());
    let mut engine = Engine {
        cfg: cfg.clone(),
        id: spec.id,
        role,
        name: spec.name,
        advertise,
        session_name: spec.session_name,
        link_tx: link_tx.clone(),
        conn_ids: conn_ids.clone(),
        tls: spec.tls.clone(),
        conns: HashMap::default(),
        peers: HashMap::default(),
        peer_by_key: HashMap::default(),
        next_peer: 1,
        work: Vec::new(),
        local_subs: SubscriptionTable::new(),
        remote: SubscriptionTable::new(),
        interest: HashMap::default(),
        m_local: Matches::new(),
        m_remote: Matches::new(),
        fwd: Vec::new(),
        rr: 0,
        congested: HashSet::default(),
        frozen: false,
        routers_frozen: false,
        dialing: HashSet::default(),
        linked: Default::default(),
        last_link_error: None,
        self_addrs: HashSet::default(),
        known_routers: HashMap::default(),
        upstream_addrs: up_tx,
        user_subs: HashMap::default(),
        next_sid: 1,
        inbox_prefix: format!("_INBOX.{}", spec.id),
        inbox_sid: None,
        requests: HashMap::default(),
        next_request: 1,
        blocked: VecDeque::new(),
        held: VecDeque::new(),
        flushes: Vec::new(),
        ctl_tx: ctl_tx.clone(),
        ready: ready_tx,
        permissions: spec.permissions,
        denial_log: Default::default(),
        denied: 0,
        granted: spec.granted,
        awaiting_grants: false,
        shutting_down: None,
        listener_stop,
        strikes: Strikes::new(cfg.strikes),
        strike_log: LogThrottle::default(),
    };
    if role == Role::Client {
        tokio::spawn(dial::upstream_loop(
            up_rx,
            cfg.clone(),
            conn_ids.clone(),
            spec.tls.clone(),
            link_tx.clone(),
        ));
    }
    for p in spec.peers {
        engine.start_dialer(p, true);
    }
    let span = tracing::info_span!("node", name = %engine.name);
    let task = tokio::spawn(tracing::Instrument::instrument(
        engine.run(link_rx, cmd_rx, ctl_rx),
        span,
    ));
    Ok(Started {
        cmd: cmd_tx,
        ctl: ctl_tx,
        listen: listen_str,
        ready: ready_rx,
        task,
    })
}

impl Engine {
    async fn run(
        mut self,
        mut link_rx: mpsc::Receiver<LinkInput>,
        mut cmd_rx: mpsc::Receiver<Command>,
        mut ctl_rx: mpsc::UnboundedReceiver<Control>,
    ) {
        tracing::debug!(role = ?self.role, "engine started");
        let tick = Duration::from_millis(100);
        let mut next_housekeeping = Instant::now() + tick;
        loop {
            // A fresh timer per turn. (Keeping one and resetting it was
            // measured: twice the serial RPC latency on one CPU.)
            let (deadline, owes_acks) = self.next_wake(next_housekeeping);
            let accept_cmds = self.blocked.is_empty() && !self.frozen_for_local();
            tokio::select! {
                biased;
                Some(input) = link_rx.recv() => {
                    let now = Instant::now();
                    self.on_link_input(now, input);
                    // Take whatever else is already waiting: one flush per batch.
                    for _ in 0..256 {
                        match link_rx.try_recv() {
                            Ok(i) => self.on_link_input(now, i),
                            Err(_) => break,
                        }
                    }
                }
                Some(ctl) = ctl_rx.recv() => {
                    let now = Instant::now();
                    self.on_control(now, ctl);
                    while let Ok(c) = ctl_rx.try_recv() {
                        self.on_control(now, c);
                    }
                }
                cmd = cmd_rx.recv(), if accept_cmds => {
                    let Some(cmd) = cmd else { break };
                    let now = Instant::now();
                    self.on_command(now, cmd);
                    for _ in 0..256 {
                        if !self.blocked.is_empty() || self.frozen_for_local() {
                            break;
                        }
                        match cmd_rx.try_recv() {
                            Ok(c) => self.on_command(now, c),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    self.on_timers(now);
                    if now >= next_housekeeping {
                        self.housekeeping(now);
                        next_housekeeping = now + tick;
                    }
                }
                // Last, and only after yielding once: acks owed for what
                // arrived. Tasks of this runtime (an RPC handler, a
                // responder) run first, so a reply they send back comes in
                // above and carries the ack; otherwise it goes alone now,
                // not at the next timer tick.
                _ = tokio::task::yield_now(), if owes_acks => {
                    let owed: Vec<u64> = self
                        .peers
                        .iter_mut()
                        .filter(|(_, p)| p.session.owes_ack())
                        .map(|(&idx, p)| {
                            p.session.flush_ack();
                            idx
                        })
                        .collect();
                    for idx in owed {
                        self.touch(idx);
                    }
                }
            }
            let now = Instant::now();
            self.run_work(now);
            self.retry_blocked(now);
            if self.shutdown_done(now) {
                break;
            }
        }
        self.finish();
    }

    /// The next timer (at the latest `bound`), and whether a session owes
    /// an ack to flush once idle: one pass over the peers per turn.
    fn next_wake(&self, bound: Instant) -> (Instant, bool) {
        let mut t = bound;
        let mut owes_acks = false;
        for p in self.peers.values() {
            if let Some(d) = p.session.poll_timeout() {
                t = t.min(d);
            }
            owes_acks |= p.session.owes_ack();
        }
        for c in self.conns.values() {
            if let Some(d) = c.deadline() {
                t = t.min(d);
            }
        }
        (t, owes_acks)
    }

    fn on_timers(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.session.poll_timeout().is_some_and(|d| d <= now))
            .map(|(&i, _)| i)
            .collect();
        for i in due {
            if let Some(p) = self.peers.get_mut(&i) {
                p.session.handle_timeout(now);
            }
            self.touch(i);
        }
        self.handshake_timeouts(now);
    }

    /// Marks a peer for the work list.
    pub(crate) fn touch(&mut self, idx: u64) {
        if let Some(p) = self.peers.get_mut(&idx) {
            if !p.queued {
                p.queued = true;
                self.work.push(idx);
            }
        }
    }

    /// Drains events of touched sessions, then transmits. Routing may touch
    /// more sessions; the loop runs until the list is empty (bounded).
    fn run_work(&mut self, now: Instant) {
        let mut rounds = 0;
        while let Some(idx) = self.work.pop() {
            rounds += 1;
            if rounds > 1_000_000 {
                tracing::error!("work list did not settle; continuing next turn");
                break;
            }
            if let Some(p) = self.peers.get_mut(&idx) {
                p.queued = false;
            }
            self.drain_events(now, idx);
            self.transmit(now, idx);
            // Transmitting can raise events (a Close written): handle them.
            if self
                .peers
                .get(&idx)
                .is_some_and(|p| p.session.is_up() != p.conn.is_some())
            {
                self.drain_events(now, idx);
            }
        }
    }

    fn drain_events(&mut self, now: Instant, idx: u64) {
        loop {
            let Some(ev) = self
                .peers
                .get_mut(&idx)
                .and_then(|p| p.session.poll_event())
            else {
                return;
            };
            match ev {
                Event::LinkUp { peer_fresh } => self.on_link_up(now, idx, peer_fresh),
                Event::Message { lane, msg } => self.on_message(now, idx, lane, msg),
                Event::Acked { lane, upto } => self.on_acked(idx, lane, upto),
                Event::Gap { lane, from, to } => {
                    metrics::counter!("meshwire_messages_lost_total").increment(to - from);
                    tracing::warn!(?lane, from, to, "peer dropped messages it had numbered");
                }
                Event::LinkDown { code, reason } => self.on_session_down(idx, code, &reason),
            }
        }
    }

    fn transmit(&mut self, now: Instant, idx: u64) {
        let Some(p) = self.peers.get_mut(&idx) else {
            return;
        };
        let Some(conn_id) = p.conn else {
            return;
        };
        let Some(conn) = self.conns.get(&conn_id) else {
            return;
        };
        if !p.session.wants_transmit() {
            return;
        }
        let out = conn.out.clone();
        let ((), len) = out.with_buf(|buf| {
            let budget = OUT_HIGH_WATER.saturating_sub(buf.len());
            if budget > 0 {
                p.session.poll_transmit(now, buf, budget);
            }
        });
        if len >= OUT_HIGH_WATER && p.session.wants_transmit() {
            out.engine_waiting.store(true, Ordering::Release);
        }
    }

    fn on_link_input(&mut self, now: Instant, input: LinkInput) {
        match input {
            LinkInput::New {
                conn,
                out,
                remote,
                dialed,
                authenticated,
                opened,
            } => self.on_new_conn(now, conn, out, remote, dialed, authenticated, opened),
            LinkInput::DialerStopped { addr } => {
                self.dialing.remove(&addr);
            }
            LinkInput::DialFailed { addr, reason } => {
                self.last_link_error = Some(format!("{addr}: {reason}"));
            }
            LinkInput::Frames { conn, frames } => self.on_frames(now, conn, frames),
            LinkInput::Closed { conn, error } => self.on_conn_closed(now, conn, error),
            LinkInput::Writable { conn } => {
                if let Some(idx) = self.conns.get(&conn).and_then(|c| c.peer()) {
                    self.touch(idx);
                }
            }
        }
    }

    pub(crate) fn new_peer(&mut self, key: PeerKey, node: NodeId, role: Role, epoch: u64) -> u64 {
        let idx = self.next_peer;
        self.next_peer += 1;
        let mut session = Session::new(self.cfg.session.clone(), epoch, Instant::now());
        session.set_credit_frozen(match role {
            Role::Router => self.routers_frozen,
            Role::Client => self.frozen,
        });
        self.peers.insert(
            idx,
            Peer {
                key: key.clone(),
                node,
                role,
                listen: None,
                session,
                conn: None,
                conn_dialer: node,
                version: meshwire_proto::wire::MIN_PROTOCOL_VERSION,
                rules: None,
                dial_addr: None,
                acks: [VecDeque::new(), VecDeque::new()],
                subs: HashMap::default(),
                congested_since: None,
                queued: false,
            },
        );
        self.peer_by_key.insert(key, idx);
        idx
    }

    /// A session's link went down (idle timeout, peer's Close, our Close).
    fn on_session_down(&mut self, idx: u64, code: CloseCode, reason: &str) {
        let Some(p) = self.peers.get_mut(&idx) else {
            return;
        };
        tracing::info!(peer = %p.node, ?code, reason, "link down");
        if let Some(conn) = p.conn.take() {
            if let Some(c) = self.conns.remove(&conn) {
                c.out.close();
            }
        }
        self.after_link_down(idx);
        let named = self
            .peers
            .get(&idx)
            .is_some_and(|p| matches!(p.key, PeerKey::Named(_)));
        if (code == CloseCode::Shutdown && !named) || code == CloseCode::SlowConsumer {
            // The peer will not resume this session (a named one may: it
            // is kept for the named-session retention).
            if self.role == Role::Router {
                self.expire_peer(idx, "peer shut down");
            }
        }
    }

    /// Bookkeeping when a session loses its link, however that happened.
    pub(crate) fn after_link_down(&mut self, idx: u64) {
        metrics::gauge!("meshwire_links_up").decrement(1.0);
        if self.role == Role::Client {
            let _ = self.ready.send(false);
        }
        // A disconnected client does not hold the mesh back: its retained
        // session is bounded by `retained_max_messages` and retention.
        let client = self.peers.get(&idx).is_some_and(|p| p.role == Role::Client);
        if client && self.congested.remove(&idx) {
            if let Some(p) = self.peers.get_mut(&idx) {
                p.congested_since = None;
            }
            self.update_freeze();
        }
        self.refresh_linked();
    }

    fn on_acked(&mut self, idx: u64, lane: Lane, upto: u64) {
        let Some(p) = self.peers.get_mut(&idx) else {
            return;
        };
        let q = &mut p.acks[lane.index()];
        while q.front().is_some_and(|(seq, _)| *seq < upto) {
            if let Some((_, reply)) = q.pop_front() {
                let _ = reply.send(Ok(()));
            }
        }
        let drained = limits::drained(&self.cfg, &p.session);
        if drained {
            p.congested_since = None;
        }
        let upstream = p.key == PeerKey::Upstream;
        let sent = Lane::ALL.map(|l| p.session.resume_state()[l.index()].send_base);
        if drained && self.congested.remove(&idx) {
            self.update_freeze();
        }
        if upstream && !self.flushes.is_empty() {
            let done: Vec<usize> = self
                .flushes
                .iter()
                .enumerate()
                .filter(|(_, (t, _))| sent[0] >= t[0] && sent[1] >= t[1])
                .map(|(i, _)| i)
                .collect();
            for i in done.into_iter().rev() {
                let (_, reply) = self.flushes.swap_remove(i);
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Freezes or thaws credit: while a consumer we feed (or a local
    /// subscription) is behind, publishers wait. Router peers are frozen only
    /// for congestion toward *clients* (which the slow-consumer cut-off
    /// always ends), never for congestion toward other routers, so two
    /// routers can never wait on each other in a cycle.
    pub(crate) fn update_freeze(&mut self) {
        let behind = self.user_subs.values().any(|s| {
            s.sink.as_ref().is_some_and(|k| {
                k.shared
                    .throttled
                    .load(std::sync::atomic::Ordering::Acquire)
            })
        });
        let client_congested = behind
            || self
                .congested
                .iter()
                .any(|i| self.peers.get(i).is_some_and(|p| p.role == Role::Client));
        let frozen = !self.congested.is_empty() || behind;
        let routers_frozen = client_congested;
        if frozen != self.frozen || routers_frozen != self.routers_frozen {
            self.frozen = frozen;
            self.routers_frozen = routers_frozen;
            tracing::debug!(frozen, routers_frozen, "credit");
            let idxs: Vec<u64> = self.peers.keys().copied().collect();
            for i in idxs {
                if let Some(p) = self.peers.get_mut(&i) {
                    let f = match p.role {
                        Role::Router => routers_frozen,
                        Role::Client => frozen,
                    };
                    p.session.set_credit_frozen(f);
                }
                self.touch(i);
            }
        }
    }

    fn frozen_for_local(&self) -> bool {
        self.role == Role::Router && !self.congested.is_empty()
    }

    /// Sends a message on a peer's session; tracks congestion.
    pub(crate) fn send_to(&mut self, now: Instant, idx: u64, level: Level, msg: Wire) {
        let Some(p) = self.peers.get_mut(&idx) else {
            return;
        };
        match level {
            Level::Reliable(lane) => {
                p.session.send(lane, msg);
                if p.congested_since.is_none() && limits::over_limits(&self.cfg, &p.session) {
                    if !p.session.is_up()
                        && p.role == Role::Client
                        && limits::over_retention(&self.cfg, &p.session)
                    {
                        self.expire_peer(idx, "retained session over its message limit");
                        return;
                    }
                    if p.session.is_up() || p.role == Role::Router {
                        p.congested_since = Some(now);
                        self.congested.insert(idx);
                        self.update_freeze();
                    }
                }
            }
            Level::BestEffort => limits::send_best_effort(&self.cfg, p, msg),
        }
        self.touch(idx);
    }

    /// Drops a peer's session and everything built on it.
    pub(crate) fn expire_peer(&mut self, idx: u64, why: &str) {
        let Some(mut p) = self.peers.remove(&idx) else {
            return;
        };
        tracing::info!(peer = %p.node, why, outbox = p.session.outbox_len(), "session dropped");
        if p.session.outbox_len() > 0 {
            metrics::counter!("meshwire_messages_lost_total")
                .increment(p.session.outbox_len() as u64);
        }
        self.peer_by_key.remove(&p.key);
        if let Some(conn) = p.conn.take() {
            if let Some(c) = self.conns.remove(&conn) {
                c.out.close();
            }
        }
        for q in &mut p.acks {
            for (_, reply) in q.drain(..) {
                let _ = reply.send(Err(Error::Closed));
            }
        }
        if self.congested.remove(&idx) {
            self.update_freeze();
        }
        self.drop_peer_routes(idx, &p);
        self.refresh_linked();
    }

    fn housekeeping(&mut self, now: Instant) {
        // Expire sessions that stayed down past retention.
        let expired: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                let keep = match p.key {
                    PeerKey::Named(_) => self.cfg.named_session_retention,
                    PeerKey::Upstream => Duration::MAX,
                    PeerKey::Node(_) => self.cfg.session_retention,
                };
                p.session
                    .down_since()
                    .is_some_and(|t| now.saturating_duration_since(t) > keep)
            })
            .map(|(&i, _)| i)
            .collect();
        for i in expired {
            self.expire_peer(i, "disconnected past the retention window");
        }
        // Cut off consumers that stayed behind past the deadline.
        let slow: Vec<u64> = self
            .congested
            .iter()
            .copied()
            .filter(|i| {
                self.peers.get(i).is_some_and(|p| {
                    p.role == Role::Client
                        && p.session.is_up()
                        && p.congested_since.is_some_and(|t| {
                            now.saturating_duration_since(t) > self.cfg.slow_consumer_timeout
                        })
                })
            })
            .collect();
        for i in slow {
            if let Some(p) = self.peers.get_mut(&i) {
                let reason = limits::slow_consumer_reason(&self.cfg, &p.session);
                tracing::warn!(peer = %p.node, %reason, "slow consumer cut off");
                metrics::counter!("meshwire_slow_consumers_total").increment(1);
                p.session.close(CloseCode::SlowConsumer, reason);
                self.touch(i);
            }
            self.run_work(now);
            self.expire_peer(i, "slow consumer");
        }
        // Requests whose caller gave up.
        self.requests.retain(|_, (_, tx)| !tx.is_closed());
        self.update_freeze();
    }

    fn on_command(&mut self, now: Instant, cmd: Command) {
        if self.shutting_down.is_some() {
            if let Command::Shutdown { done } = cmd {
                if let Some((_, w)) = &mut self.shutting_down {
                    w.push(done);
                }
            }
            return;
        }
        match cmd {
            Command::Publish {
                subject,
                reply_to,
                payload,
                level,
                ack,
            } => self.publish(now, subject, reply_to, payload, level, ack),
            Command::Subscribe {
                pattern,
                group,
                done,
            } => {
                let sub = self.subscribe_user(now, pattern, group, true);
                let _ = done.send(sub);
            }
            Command::Request {
                subject,
                payload,
                reply,
                inbox,
            } => self.request(now, subject, payload, reply, inbox),
            Command::Flush { done } => self.flush(done),
            Command::Status { done } => {
                let _ = done.send(self.status());
            }
            Command::Shutdown { done } => {
                tracing::info!("shutting down: draining");
                if let Some(stop) = self.listener_stop.take() {
                    let _ = stop.send(());
                }
                self.shutting_down = Some((now + self.cfg.drain_timeout, vec![done]));
            }
            Command::SetPermissions { permissions, done } => {
                self.set_permissions(now, permissions);
                let _ = done.send(());
            }
            Command::SetTrust { trust, done } => {
                let _ = done.send(self.set_trust(&trust));
            }
        }
    }

    fn on_control(&mut self, now: Instant, ctl: Control) {
        match ctl {
            Control::Unsubscribe { sid } => self.unsubscribe_user(now, sid),
            Control::Thaw => self.update_freeze(),
            Control::EndRequest { inbox } => {
                if let Some(token) = self.request_token(&inbox) {
                    self.requests.remove(&token);
                }
            }
            Control::Publish { subject, payload } => self.publish(
                now,
                subject,
                None,
                payload,
                Level::Reliable(Lane::Ordered),
                None,
            ),
        }
    }

    fn status(&self) -> Status {
        Status {
            peers: self
                .peers
                .values()
                .map(|p| PeerStatus {
                    node: p.node,
                    router: p.role == Role::Router,
                    up: p.session.is_up(),
                    outbox: p.session.outbox_len(),
                    connection: p.conn,
                    detail: format!(
                        "conn={:?} congested={:?} next={:?} resume={:?} wants_tx={} {:?}",
                        p.conn,
                        p.congested_since.map(|t| t.elapsed()),
                        p.session.next_seqs(),
                        p.session.resume_state(),
                        p.session.wants_transmit(),
                        p.session.stats(),
                    ),
                })
                .collect(),
            local_subscriptions: self
                .local_subs
                .iter()
                .filter(|(pattern, ..)| !is_state_service(pattern))
                .count(),
            remote_interest: self
                .remote
                .iter()
                .filter(|(pattern, ..)| !is_state_service(pattern))
                .count(),
            frozen: self.frozen,
            blocked: self.blocked.len(),
            last_link_error: self.last_link_error.clone(),
            permission_denied: self.denied,
        }
    }

    fn upstream(&self) -> Option<u64> {
        self.peer_by_key.get(&PeerKey::Upstream).copied()
    }

    fn publish(
        &mut self,
        now: Instant,
        subject: Subject,
        reply_to: Option<Subject>,
        payload: Bytes,
        level: Level,
        ack: Option<Reply>,
    ) {
        metrics::counter!("meshwire_messages_published_total").increment(1);
        if self.role == Role::Router {
            self.route(now, Origin::Local, level, subject, reply_to, payload);
            if let Some(ack) = ack {
                let _ = ack.send(Ok(()));
            }
            return;
        }
        // Hold it while no router is attached or the outbox is full (the
        // command channel, which stops being read meanwhile, bounds this).
        let up = self.upstream().filter(|up| match level {
            Level::Reliable(lane) => self.peers.get(up).is_some_and(|p| p.session.can_send(lane)),
            Level::BestEffort => true,
        });
        let Some(p) = up.and_then(|up| self.peers.get_mut(&up)) else {
            self.blocked.push_back(Command::Publish {
                subject,
                reply_to,
                payload,
                level,
                ack,
            });
            return;
        };
        let msg = Wire::Publish {
            subject,
            reply_to,
            payload,
        };
        match level {
            Level::Reliable(lane) => {
                let seq = p.session.send(lane, msg);
                if let Some(ack) = ack {
                    p.acks[lane.index()].push_back((seq, ack));
                }
            }
            Level::BestEffort => {
                limits::send_best_effort(&self.cfg, p, msg);
                if let Some(ack) = ack {
                    let _ = ack.send(Ok(()));
                }
            }
        }
        if let Some(up) = up {
            self.touch(up);
        }
    }

    /// Publications that waited for outbox room or for a router.
    fn retry_blocked(&mut self, now: Instant) {
        let mut n = 0;
        while let Some(cmd) = self.blocked.pop_front() {
            n += 1;
            let before = self.blocked.len();
            if let Command::Flush { done } = cmd {
                if self.upstream().is_none() {
                    self.blocked.push_front(Command::Flush { done });
                    break;
                }
                self.flush(done);
                continue;
            }
            if let Command::Publish {
                subject,
                reply_to,
                payload,
                level,
                ack,
            } = cmd
            {
                let can = match (self.upstream(), level) {
                    (None, _) => false,
                    (Some(up), Level::Reliable(lane)) => self
                        .peers
                        .get(&up)
                        .is_some_and(|p| p.session.can_send(lane)),
                    (Some(_), Level::BestEffort) => true,
                };
                if !can {
                    self.blocked.push_front(Command::Publish {
                        subject,
                        reply_to,
                        payload,
                        level,
                        ack,
                    });
                    break;
                }
                self.publish(now, subject, reply_to, payload, level, ack);
                debug_assert!(self.blocked.len() <= before);
            }
            if n > 100_000 {
                break;
            }
        }
        if n > 0 {
            self.run_work(now);
        }
    }

    fn flush(&mut self, done: Reply) {
        if self.role == Role::Router {
            let _ = done.send(Ok(()));
            return;
        }
        let up = self.upstream().and_then(|i| self.peers.get(&i));
        let Some(up) = up.filter(|_| self.blocked.is_empty()) else {
            // Behind publications still waiting: answered in their turn.
            self.blocked.push_back(Command::Flush { done });
            return;
        };
        let target = up.session.next_seqs();
        let base = Lane::ALL.map(|l| up.session.resume_state()[l.index()].send_base);
        if base[0] >= target[0] && base[1] >= target[1] {
            let _ = done.send(Ok(()));
        } else {
            self.flushes.push((target, done));
        }
    }

    pub(crate) fn subscribe_user(
        &mut self,
        now: Instant,
        pattern: Subject,
        group: Option<Subject>,
        user: bool,
    ) -> Result<Subscription, Error> {
        let sid = self.next_sid;
        self.next_sid += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(SubShared::default());
        self.user_subs.insert(
            sid,
            UserSub {
                pattern: pattern.clone(),
                group: group.clone(),
                sink: Some(SubSink {
                    tx,
                    shared: shared.clone(),
                }),
            },
        );
        let _ = user;
        self.register_sub(now, sid, &pattern, group.as_ref());
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            for (hsid, m) in held {
                if hsid == sid {
                    self.deliver_user(sid, m.subject, m.reply_to, m.payload);
                } else {
                    self.held.push_back((hsid, m));
                }
            }
        }
        Ok(Subscription {
            sid,
            pattern,
            rx,
            shared,
            ctl: self.ctl_tx.clone(),
        })
    }

    /// Makes a user subscription known where messages are routed.
    fn register_sub(&mut self, now: Instant, sid: u64, pattern: &Subject, group: Option<&Subject>) {
        match self.role {
            Role::Router => {
                if self.local_subs.insert(pattern, group, (SELF, sid)) {
                    self.interest_add(now, pattern, group);
                }
            }
            Role::Client => {
                if let Some(up) = self.upstream() {
                    self.send_to(
                        now,
                        up,
                        Level::Reliable(Lane::Ordered),
                        Wire::Subscribe {
                            sid,
                            pattern: pattern.clone(),
                            group: group.cloned(),
                        },
                    );
                }
                // Otherwise sent when the upstream link comes up.
            }
        }
    }

    fn unsubscribe_user(&mut self, now: Instant, sid: u64) {
        let Some(sub) = self.user_subs.remove(&sid) else {
            return;
        };
        match self.role {
            Role::Router => {
                if self
                    .local_subs
                    .remove(&sub.pattern, sub.group.as_ref(), &(SELF, sid))
                {
                    self.interest_remove(now, &sub.pattern, sub.group.as_ref());
                }
            }
            Role::Client => {
                if let Some(up) = self.upstream() {
                    self.send_to(
                        now,
                        up,
                        Level::Reliable(Lane::Ordered),
                        Wire::Unsubscribe { sid },
                    );
                }
            }
        }
        self.update_freeze();
    }

    /// Delivers to a user subscription on this node.
    pub(crate) fn deliver_user(
        &mut self,
        sid: u64,
        subject: Subject,
        reply_to: Option<Subject>,
        payload: Bytes,
    ) {
        if Some(sid) == self.inbox_sid {
            self.on_reply(subject, payload);
            return;
        }
        let Some(sub) = self.user_subs.get(&sid) else {
            if self.session_name.is_some() && sid >= self.next_sid {
                // A resumed named session: the router kept messages for
                // subscriptions this process has not re-created yet. Hold
                // them (bounded) until it does.
                if self.held.len() < self.cfg.retained_max_messages {
                    self.held.push_back((
                        sid,
                        Message {
                            subject,
                            reply_to,
                            payload,
                        },
                    ));
                    return;
                }
            }
            metrics::counter!("meshwire_messages_unroutable_total").increment(1);
            return;
        };
        if let Some(sink) = &sub.sink {
            metrics::counter!("meshwire_messages_delivered_total").increment(1);
            if sink.push(Message {
                subject,
                reply_to,
                payload,
            }) && !self.frozen
            {
                self.update_freeze();
            }
        }
    }

    fn request(
        &mut self,
        now: Instant,
        subject: Subject,
        payload: Bytes,
        reply: ReplySink,
        inbox_tx: Option<oneshot::Sender<Subject>>,
    ) {
        if self.inbox_sid.is_none() {
            let pattern = match Subject::pattern(&format!("{}.>", self.inbox_prefix)) {
                Ok(p) => p,
                Err(e) => {
                    reply.send(Err(e.into()));
                    return;
                }
            };
            let sid = self.next_sid;
            self.next_sid += 1;
            self.user_subs.insert(
                sid,
                UserSub {
                    pattern: pattern.clone(),
                    group: None,
                    sink: None,
                },
            );
            self.inbox_sid = Some(sid);
            self.register_sub(now, sid, &pattern, None);
        }
        let token = self.next_request;
        self.next_request += 1;
        let inbox = match Subject::literal(&format!("{}.{token}", self.inbox_prefix)) {
            Ok(s) => s,
            Err(e) => {
                reply.send(Err(e.into()));
                return;
            }
        };
        if let Some(tx) = inbox_tx {
            let _ = tx.send(inbox.clone());
        }
        self.requests.insert(token, (subject.clone(), reply));
        self.publish(
            now,
            subject,
            Some(inbox),
            payload,
            Level::Reliable(Lane::Ordered),
            None,
        );
    }

    pub(crate) fn request_token(&self, subject: &Subject) -> Option<u64> {
        subject
            .as_str()
            .strip_prefix(&self.inbox_prefix)?
            .strip_prefix('.')?
            .parse()
            .ok()
    }

    fn on_reply(&mut self, subject: Subject, payload: Bytes) {
        let Some(token) = self.request_token(&subject) else {
            return;
        };
        let msg = Message {
            subject,
            reply_to: None,
            payload,
        };
        match self.requests.remove(&token) {
            // Streams stay registered until their receiver goes away.
            Some((s, ReplySink::Many(tx))) if tx.send(Ok(msg.clone())).is_ok() => {
                self.requests.insert(token, (s, ReplySink::Many(tx)));
            }
            Some((_, ReplySink::Many(_))) => {}
            Some((_, sink)) => sink.send(Ok(msg)),
            None => {}
        }
    }

    pub(crate) fn on_no_responders(&mut self, reply_to: &Subject) {
        if let Some(token) = self.request_token(reply_to) {
            if let Some((subject, sink)) = self.requests.remove(&token) {
                sink.send(Err(Error::NoResponders {
                    subject: subject.as_str().to_owned(),
                }));
            }
        }
    }

    fn shutdown_done(&mut self, now: Instant) -> bool {
        let Some((deadline, _)) = &self.shutting_down else {
            return false;
        };
        let drained = self.blocked.is_empty()
            && self
                .peers
                .values()
                .all(|p| p.session.outbox_len() == 0 || !p.session.is_up());
        drained || now >= *deadline
    }

    fn finish(&mut self) {
        let now = Instant::now();
        let idxs: Vec<u64> = self.peers.keys().copied().collect();
        for i in &idxs {
            if let Some(p) = self.peers.get_mut(i) {
                if p.session.is_up() {
                    p.session.close(CloseCode::Shutdown, "node shutting down");
                }
            }
            self.touch(*i);
        }
        self.run_work(now);
        for c in self.conns.values() {
            c.out.close();
        }
        let pending = self.blocked.len()
            + self
                .peers
                .values()
                .map(|p| p.session.outbox_len())
                .sum::<usize>();
        if pending > 0 {
            tracing::warn!(pending, "shut down with messages not yet acknowledged");
        }
        if let Some((_, waiters)) = self.shutting_down.take() {
            for w in waiters {
                let _ = w.send(());
            }
        }
        tracing::info!("node stopped");
    }
}

/// Subjects of the shared-state services (`crate::state`) that every router
/// subscribes to at start: left out of the counts in [`Status`], which tell
/// tools and tests about the subscriptions users made.
fn is_state_service(pattern: &Subject) -> bool {
    let s = pattern.as_str();
    ["_KV.", "_RAFT.", "_CRDT."]
        .iter()
        .any(|p| s.starts_with(p))
}
