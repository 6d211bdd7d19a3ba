//! Connection phases: the three-message handshake, duplicate links,
//! frames after it, and connections that end.
//!
//! ```text
//! dialler                         acceptor
//!   ── Hello {id, role, versions} ──►   looks up (or plans) its session
//!   ◄── Welcome {id, version, Resume} ──
//!   link up with the acceptor's Resume
//!   ── Resume {epoch, lanes} ──────►   link up with the dialler's Resume
//! ```
//!
//! The dialler's session state is sent only after it knows who answered:
//! a seed address says nothing about the node behind it.

use super::{Engine, PeerKey};
use crate::abuse::admission::{Opened, Ticket};
use crate::link::{LinkError, Out};
use meshwire_proto::wire::{
    Close, CloseCode, Frame, Hello, LaneResume, NodeId, Resume, Role, Subject, Welcome,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use std::sync::Arc;
use std::time::Instant;

pub(crate) enum Phase {
    /// Accepted; waiting for `Hello`.
    AwaitHello { deadline: Instant },
    /// Dialled and `Hello` sent; waiting for `Welcome`.
    AwaitWelcome { deadline: Instant, addr: String },
    /// `Welcome` sent; waiting for `Resume`. `epoch` is what we promised
    /// for a session that does not exist yet.
    AwaitResume {
        deadline: Instant,
        key: PeerKey,
        hello: Hello,
        epoch: u64,
    },
    /// Carrying a session.
    Up { peer: u64 },
}

pub(crate) struct Conn {
    pub(crate) out: Arc<Out>,
    pub(crate) phase: Phase,
    pub(crate) remote: String,
    /// The peer's NodeId as TLS authenticated it; `None` on plaintext.
    pub(crate) authenticated: Option<NodeId>,
    /// An accepted connection's places under the node's connection limits,
    /// given back when this `Conn` is dropped.
    pub(crate) ticket: Option<Ticket>,
}

impl Conn {
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::AwaitHello { deadline }
            | Phase::AwaitWelcome { deadline, .. }
            | Phase::AwaitResume { deadline, .. } => Some(*deadline),
            Phase::Up { .. } => None,
        }
    }

    pub(crate) fn peer(&self) -> Option<u64> {
        match self.phase {
            Phase::Up { peer } => Some(peer),
            _ => None,
        }
    }
}

/// Which of two links between the same pair survives. A peer that dials
/// again replaces its own older link (the old one is probably dead); two
/// links dialled from opposite ends keep the one dialled by the smaller id,
/// which both ends compute alike.
fn new_link_wins(old_dialer: NodeId, new_dialer: NodeId, a: NodeId, b: NodeId) -> bool {
    old_dialer == new_dialer || new_dialer == a.min(b)
}

impl Engine {
    /// A connection was accepted (`dialed == None`) or dialled.
    #[allow(clippy::too_many_arguments)] // the fields of `LinkInput::New`
    pub(crate) fn on_new_conn(
        &mut self,
        now: Instant,
        conn: u64,
        out: Arc<Out>,
        remote: String,
        dialed: Option<String>,
        authenticated: Option<NodeId>,
        opened: Opened,
    ) {
        if self.shutting_down.is_some() {
            out.close();
            return;
        }
        if self.conns.len() >= self.cfg.max_links {
            metrics::counter!("meshwire_links_refused_total").increment(1);
            tracing::warn!(%remote, max = self.cfg.max_links, "link refused: too many links");
            send_close(&out, CloseCode::Refused, "too many links");
            return;
        }
        // From accept (or connect), not from now: the TLS handshake spent
        // part of the time already.
        let deadline = opened.at.min(now) + self.cfg.handshake_timeout;
        let phase = match dialed {
            None => Phase::AwaitHello { deadline },
            Some(addr) => {
                let hello = Frame::Hello(Hello {
                    min_version: MIN_PROTOCOL_VERSION,
                    max_version: PROTOCOL_VERSION,
                    node: self.id,
                    role: self.role,
                    session: self.session_name.clone(),
                    listen: self.advertise.clone(),
                    max_frame: self.cfg.limits.max_frame,
                });
                out.with_buf(|b| hello.encode(b));
                Phase::AwaitWelcome { deadline, addr }
            }
        };
        self.conns.insert(
            conn,
            Conn {
                out,
                phase,
                remote,
                authenticated,
                ticket: opened.ticket,
            },
        );
    }

    pub(crate) fn handshake_timeouts(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(&i, _)| i)
            .collect();
        for i in late {
            if let Some(c) = self.conns.remove(&i) {
                metrics::counter!("meshwire_handshake_timeouts_total").increment(1);
                tracing::info!(remote = %c.remote, "handshake timed out; closing");
                send_close(
                    &c.out,
                    CloseCode::HandshakeTimeout,
                    "handshake not completed in time",
                );
            }
        }
    }

    /// Refuses a connection in the handshake with a reason both sides log.
    pub(crate) fn refuse(&mut self, conn: u64, code: CloseCode, reason: String) {
        if let Some(c) = self.conns.remove(&conn) {
            metrics::counter!("meshwire_links_refused_total").increment(1);
            tracing::warn!(remote = %c.remote, ?code, %reason, "link refused");
            send_close(&c.out, code, &reason);
        }
    }

    /// Refuses (and returns true) when TLS authenticated this connection's
    /// peer as another node than the one its handshake message names.
    fn refuse_impostor(&mut self, conn: u64, claimed: NodeId) -> bool {
        let authenticated = self.conns.get(&conn).and_then(|c| c.authenticated);
        match authenticated {
            Some(id) if id != claimed => {
                self.refuse(
                    conn,
                    CloseCode::Refused,
                    format!(
                        "the link's TLS key is node {id}, but its handshake claims node {claimed}"
                    ),
                );
                true
            }
            _ => false,
        }
    }

    pub(crate) fn on_frames(
        &mut self,
        now: Instant,
        conn: u64,
        frames: Vec<meshwire_proto::wire::Frame>,
    ) {
        for frame in frames {
            let Some(c) = self.conns.get(&conn) else {
                return; // closed meanwhile; the rest is moot
            };
            match (&c.phase, frame) {
                (Phase::Up { peer }, frame) => {
                    let peer = *peer;
                    if matches!(frame, Frame::Ping(_)) && self.count_ping(now, peer) {
                        return;
                    }
                    let result = match self.peers.get_mut(&peer) {
                        Some(p) => p.session.handle_frame(now, frame),
                        None => Ok(()),
                    };
                    if let Err(e) = result {
                        metrics::counter!("meshwire_protocol_errors_total").increment(1);
                        tracing::warn!(error = %e, "protocol error; closing link");
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.session.close(CloseCode::ProtocolError, e.to_string());
                        }
                    }
                    self.touch(peer);
                }
                (Phase::AwaitHello { .. }, Frame::Hello(h)) => self.on_hello(now, conn, h),
                (Phase::AwaitWelcome { .. }, Frame::Welcome(w)) => self.on_welcome(now, conn, w),
                (Phase::AwaitResume { .. }, Frame::Resume(r)) => self.on_resume(now, conn, r),
                (_, Frame::Close(close)) => {
                    tracing::warn!(code = ?close.code, reason = %close.reason, "peer closed the link during the handshake");
                    if let Some(c) = self.conns.remove(&conn) {
                        if let Phase::AwaitWelcome { addr, .. } = &c.phase {
                            self.last_link_error =
                                Some(format!("{addr} refused the link: {}", close.reason));
                        }
                        c.out.close();
                    }
                    return;
                }
                (_, other) => {
                    let what = other.name();
                    self.refuse(
                        conn,
                        CloseCode::ProtocolError,
                        format!("unexpected {what} during the handshake"),
                    );
                    return;
                }
            }
        }
    }

    fn on_hello(&mut self, now: Instant, conn: u64, h: Hello) {
        if self.refuse_impostor(conn, h.node) || self.refuse_flooding_node(now, conn, h.node) {
            return;
        }
        if h.max_version < MIN_PROTOCOL_VERSION || h.min_version > PROTOCOL_VERSION {
            return self.refuse(
                conn,
                CloseCode::VersionMismatch,
                format!(
                    "peer speaks protocol versions {}..={}, this node {}..={}",
                    h.min_version, h.max_version, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION
                ),
            );
        }
        // Our own Hello (a seed address that is this node) gets a Welcome
        // all the same: that is how the dialling side learns the address is
        // itself and parks that dialer (`on_welcome`).
        if self.role != Role::Router {
            return self.refuse(
                conn,
                CloseCode::Refused,
                "this node does not accept links".into(),
            );
        }
        let key = match (&h.role, &h.session) {
            (Role::Router, _) => PeerKey::Node(h.node),
            (Role::Client, Some(name)) => PeerKey::Named(name.clone()),
            (Role::Client, None) => PeerKey::Node(h.node),
        };
        let existing = self.peer_by_key.get(&key).copied();
        let (resume, epoch) = match existing.and_then(|i| self.peers.get(&i)) {
            Some(p) => {
                if p.conn.is_some() && !new_link_wins(p.conn_dialer, h.node, self.id, h.node) {
                    return self.refuse(
                        conn,
                        CloseCode::Duplicate,
                        "a link to this peer already exists".into(),
                    );
                }
                (p.session.resume(), p.session.epoch())
            }
            None => {
                let epoch: u64 = rand::random();
                let fresh = LaneResume {
                    recv_next: 1,
                    send_base: 1,
                };
                (
                    Resume {
                        epoch,
                        lanes: [fresh; 2],
                    },
                    epoch,
                )
            }
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let welcome = Frame::Welcome(Welcome {
            version: PROTOCOL_VERSION.min(h.max_version),
            node: self.id,
            role: self.role,
            listen: self.advertise.clone(),
            max_frame: self.cfg.limits.max_frame,
            resume,
        });
        c.out.with_buf(|b| welcome.encode(b));
        let deadline = c.deadline().unwrap_or_else(Instant::now);
        c.phase = Phase::AwaitResume {
            deadline,
            key,
            hello: h,
            epoch,
        };
    }

    fn on_welcome(&mut self, now: Instant, conn: u64, w: Welcome) {
        let Some(Phase::AwaitWelcome { addr, .. }) = self.conns.get(&conn).map(|c| &c.phase) else {
            return;
        };
        let addr = addr.clone();
        if self.refuse_impostor(conn, w.node) {
            return;
        }
        if w.version < MIN_PROTOCOL_VERSION || w.version > PROTOCOL_VERSION {
            return self.refuse(
                conn,
                CloseCode::VersionMismatch,
                format!("peer chose protocol version {}", w.version),
            );
        }
        if w.node == self.id {
            // Keep the dialer parked on this address for good.
            self.self_addrs.insert(addr);
            self.refresh_linked();
            return self.refuse(conn, CloseCode::Refused, "dialled itself".into());
        }
        let key = match self.role {
            Role::Client => PeerKey::Upstream,
            Role::Router => {
                if w.role != Role::Router {
                    return self.refuse(
                        conn,
                        CloseCode::Refused,
                        format!("{addr} is not a router; routers only peer with routers"),
                    );
                }
                PeerKey::Node(w.node)
            }
        };
        let idx = match self.peer_by_key.get(&key) {
            Some(&i) => i,
            None => self.new_peer(key, w.node, w.role, rand::random()),
        };
        let Some(p) = self.peers.get(&idx) else {
            return;
        };
        if p.conn.is_some() && !new_link_wins(p.conn_dialer, self.id, self.id, w.node) {
            return self.refuse(
                conn,
                CloseCode::Duplicate,
                "a link to this peer already exists".into(),
            );
        }
        self.attach(
            now,
            conn,
            idx,
            w.node,
            w.role,
            w.listen,
            self.id,
            w.resume,
            Some(addr),
            w.version,
        );
    }

    fn on_resume(&mut self, now: Instant, conn: u64, r: Resume) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Phase::AwaitResume {
            key, hello, epoch, ..
        } = &c.phase
        else {
            return;
        };
        let (key, hello, epoch) = (key.clone(), hello.clone(), *epoch);
        if hello.node == self.id {
            return self.refuse(conn, CloseCode::Refused, "connected to itself".into());
        }
        if let (PeerKey::Node(_), Role::Client) = (&key, hello.role) {
            let stale = self
                .peer_by_key
                .get(&key)
                .and_then(|i| self.peers.get(i))
                .is_some_and(|p| p.session.peer_epoch().is_some_and(|e| e != r.epoch));
            if stale {
                // The same node id with a new session: a restarted client.
                // What was queued for its old subscriptions must not reach
                // the new ones. Drop it, and let the client come back fresh.
                if let Some(&old) = self.peer_by_key.get(&key) {
                    self.expire_peer(old, "client restarted with a new session");
                }
                return self.refuse(
                    conn,
                    CloseCode::Refused,
                    "stale session dropped; reconnect".into(),
                );
            }
        }
        let idx = match self.peer_by_key.get(&key) {
            Some(&i) => {
                let ok = self.peers.get(&i).is_some_and(|p| {
                    p.conn.is_none()
                        || new_link_wins(p.conn_dialer, hello.node, self.id, hello.node)
                });
                if !ok {
                    return self.refuse(
                        conn,
                        CloseCode::Duplicate,
                        "a link to this peer already exists".into(),
                    );
                }
                i
            }
            None => self.new_peer(key, hello.node, hello.role, epoch),
        };
        if self
            .peers
            .get(&idx)
            .is_some_and(|p| p.session.epoch() != epoch)
        {
            // The session we described in Welcome was replaced meanwhile.
            return self.refuse(
                conn,
                CloseCode::Duplicate,
                "session changed during handshake".into(),
            );
        }
        self.attach(
            now,
            conn,
            idx,
            hello.node,
            hello.role,
            hello.listen,
            hello.node,
            r,
            None,
            PROTOCOL_VERSION.min(hello.max_version),
        );
    }

    /// Puts `conn` under the session `idx` (replacing any older link).
    #[allow(clippy::too_many_arguments)] // one call site per handshake side
    fn attach(
        &mut self,
        now: Instant,
        conn: u64,
        idx: u64,
        node: NodeId,
        role: Role,
        listen: Option<Subject>,
        dialer: NodeId,
        peer_resume: Resume,
        dialed: Option<String>,
        version: u16,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.phase = Phase::Up { peer: idx };
        if let Some(t) = &mut c.ticket {
            t.handshake_done();
        }
        let out = c.out.clone();
        let Some(p) = self.peers.get_mut(&idx) else {
            return;
        };
        if let Some(old) = p.conn.take() {
            p.session.handle_link_down(now);
            metrics::gauge!("meshwire_links_up").decrement(1.0);
            if let Some(oc) = self.conns.remove(&old) {
                send_close(&oc.out, CloseCode::Duplicate, "replaced by a newer link");
            }
        }
        p.node = node;
        p.role = role;
        p.listen = listen;
        p.conn = Some(conn);
        p.conn_dialer = dialer;
        p.version = version;
        let we_dialed = dialed.is_some();
        if dialed.is_some() {
            p.dial_addr = dialed;
        }
        p.session
            .handle_link_up(now, peer_resume.epoch, peer_resume.lanes);
        if we_dialed {
            // Our half of the handshake, after link-up so that it states
            // what we hold now.
            let resume = Frame::Resume(p.session.resume());
            out.with_buf(|b| resume.encode(b));
        }
        metrics::gauge!("meshwire_links_up").increment(1.0);
        metrics::counter!("meshwire_links_opened_total").increment(1);
        tracing::info!(peer = %node, ?role, "link up");
        self.refresh_linked();
        self.touch(idx);
    }

    /// Puts `trust` in force for new connections and closes every link
    /// (up or handshaking) whose TLS-authenticated node it no longer
    /// admits; returns how many. In CA mode admission depends on the
    /// certificate chain, which a link does not keep: existing links stay,
    /// and new connections are checked against the new roots.
    pub(crate) fn set_trust(
        &mut self,
        trust: &crate::security::Trust,
    ) -> Result<usize, crate::Error> {
        let Some(tls) = &self.tls else {
            return Err(crate::Error::Config(
                "this node runs without TLS (insecure): it has no trust to reload".into(),
            ));
        };
        tls.set_trust(trust)?;
        let revoked: Vec<(u64, NodeId)> = self
            .conns
            .iter()
            .filter_map(|(&conn, c)| {
                let node = c.authenticated?;
                (tls.admits(node) == Some(false)).then_some((conn, node))
            })
            .collect();
        for &(conn, node) in &revoked {
            let reason = format!("node {node} is no longer trusted");
            tracing::warn!(%node, "trust reloaded: closing the link of a node it no longer admits");
            metrics::counter!("meshwire_links_revoked_total").increment(1);
            match self.conns.get(&conn).and_then(|c| c.peer()) {
                Some(idx) => {
                    if let Some(p) = self.peers.get_mut(&idx) {
                        p.session.close(CloseCode::Refused, reason);
                    }
                    self.touch(idx);
                }
                None => self.refuse(conn, CloseCode::Refused, reason),
            }
        }
        Ok(revoked.len())
    }

    pub(crate) fn on_conn_closed(&mut self, now: Instant, conn: u64, error: Option<LinkError>) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Phase::AwaitWelcome { addr, .. } = &c.phase {
            self.last_link_error = Some(format!("{addr}: {}", dial_failure(error.as_ref())));
        }
        match &error {
            Some(LinkError::Decode(e)) => {
                metrics::counter!("meshwire_frames_rejected_total").increment(1);
                tracing::warn!(remote = %c.remote, error = %e, "bad frame; link closed");
                // Tell the peer why, best effort.
                send_close(&c.out, CloseCode::ProtocolError, &e.to_string());
            }
            Some(LinkError::Io(e)) => {
                tracing::debug!(remote = %c.remote, error = %e, "link i/o error")
            }
            None => tracing::debug!(remote = %c.remote, "link closed by peer"),
        }
        c.out.close();
        if let Phase::Up { peer } = c.phase {
            if let Some(p) = self.peers.get_mut(&peer) {
                if p.conn == Some(conn) {
                    p.conn = None;
                    p.session.handle_link_down(now);
                    tracing::info!(peer = %p.node, "link lost; session kept for resume");
                    self.after_link_down(peer);
                }
            }
        }
    }
}

/// Why a connection this node dialled ended before the peer's `Welcome`.
fn dial_failure(error: Option<&LinkError>) -> String {
    match error {
        // A TLS server checks the client's certificate after the client
        // thinks the handshake is done: its refusal (an alert) arrives here.
        Some(LinkError::Io(e)) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => crate::security::HandshakeError::from_tls(tls).to_string(),
            None => format!("connection lost during the handshake: {e}"),
        },
        Some(LinkError::Decode(e)) => e.to_string(),
        None => "the peer closed the connection during the handshake".to_owned(),
    }
}

/// Queues a `Close` frame and closes the connection after it.
pub(crate) fn send_close(out: &Out, code: CloseCode, reason: &str) {
    let f = Frame::Close(Close {
        code,
        reason: reason.to_owned(),
    });
    out.with_buf(|b| f.encode(b));
    out.close();
}
