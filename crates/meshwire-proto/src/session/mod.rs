//! One link session: the reliable, resumable conversation between two
//! nodes, independent of the transport connection that carries it.
//!
//! A [`Session`] outlives connections. While a connection is up it numbers
//! outgoing messages per [`Lane`], keeps them in a bounded outbox until the
//! peer acknowledges them, retransmits on timeout, drops duplicates, puts
//! ordered traffic back in order, honours the peer's credit, sends
//! heartbeats and notices silence. When the connection breaks the session
//! waits; when a new connection is made (same peer, handshake exchanged),
//! [`Session::handle_link_up`] resumes it: acknowledged messages are
//! dropped, the rest are sent again, and the receiver discards what it had
//! already seen. Nothing accepted is lost, nothing is delivered twice.
//!
//! # Call order
//!
//! ```text
//! let mut s = Session::new(config, epoch, now);   // epoch: random per Session object
//! // per connection:
//! let mine = s.resume();                         // into Welcome / Resume
//! s.handle_link_up(now, peer_epoch, peer_lanes);  // with the peer's Resume
//! loop {
//!     s.handle_frame(now, frame)?;                // each decoded frame (not Hello/Welcome/Resume)
//!     s.send(lane, msg, now);  s.send_best_effort(msg);   // user traffic
//!     s.handle_timeout(now);                      // when poll_timeout() passes
//!     while let Some(ev) = s.poll_event() { .. }  // deliveries, acks, link death
//!     s.poll_transmit(now, &mut buf, budget);     // write buf to the socket
//!     next_wakeup = s.poll_timeout();
//! }
//! s.handle_link_down(now);                        // connection lost
//! ```
//!
//! # Epochs
//!
//! Every `Session` object has a random `epoch`. A peer that presents a new
//! epoch has lost its state about us (it restarted, or expired the session),
//! so the receiving lanes start over at the peer's `send_base`, and
//! [`Event::LinkUp::peer_fresh`] tells the driver to re-establish whatever it
//! had built on that session (subscriptions, interest).

mod lanes;

use crate::wire::{Ack, Close, CloseCode, Data, Frame, Lane, LaneResume, Message};
use bytes::BytesMut;
use lanes::{RecvLane, SendLane};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Credit a sender may use right after a handshake, before the receiver's
/// first `Ack` states its real window (a protocol constant).
pub const INITIAL_CREDIT: u64 = 64;

/// Tunables of a session. The defaults suit loopback and LAN links.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// [`Session::can_send`] turns false at this many unacknowledged
    /// messages (per lane).
    pub outbox_max_messages: usize,
    /// ... or at this many payload bytes (per lane).
    pub outbox_max_bytes: usize,
    /// How far beyond its cumulative ack a receiver lets the sender go.
    pub recv_window: u64,
    /// Longest an acknowledgement waits to be piggybacked or batched.
    pub ack_delay: Duration,
    /// Acknowledge at once after this many unacknowledged receptions.
    pub ack_every: u32,
    /// Retransmission timeout before any round trip was measured.
    pub rto_initial: Duration,
    /// Lower bound of the retransmission timeout.
    pub rto_min: Duration,
    /// Upper bound of the retransmission timeout (after back-off).
    pub rto_max: Duration,
    /// Send a ping when nothing was sent for this long.
    pub heartbeat_interval: Duration,
    /// Declare the link dead when nothing was received for this long.
    pub idle_timeout: Duration,
    /// Best-effort messages queued while waiting for the socket; beyond
    /// this the oldest are dropped (and counted).
    pub best_effort_queue: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            outbox_max_messages: 16 * 1024,
            outbox_max_bytes: 64 * 1024 * 1024,
            recv_window: 16 * 1024,
            ack_delay: Duration::from_millis(2),
            ack_every: 256,
            rto_initial: Duration::from_secs(1),
            rto_min: Duration::from_millis(200),
            rto_max: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(10),
            best_effort_queue: 4096,
        }
    }
}

/// What the session tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The link is up after a handshake.
    LinkUp {
        /// The peer's session is new to us (first link, or the peer lost
        /// its state): whatever was built on the old one must be redone.
        peer_fresh: bool,
    },
    /// A message arrived: in sequence order on [`Lane::Ordered`], on
    /// arrival otherwise; exactly once on both lanes.
    Message {
        /// Its lane, `None` for best effort.
        lane: Option<Lane>,
        /// The message.
        msg: Message,
    },
    /// Every message sent on `lane` with a sequence number below `upto` is
    /// now acknowledged by the peer.
    Acked {
        /// The lane.
        lane: Lane,
        /// Exclusive upper bound.
        upto: u64,
    },
    /// The peer no longer holds messages `from..to` it once numbered (it
    /// dropped them), so they will never arrive. Reported, then skipped.
    Gap {
        /// The lane.
        lane: Lane,
        /// First missing sequence number.
        from: u64,
        /// One past the last.
        to: u64,
    },
    /// The link must be closed: nothing heard for the idle timeout, or the
    /// peer closed it. The session itself lives on (see `handle_link_up`).
    LinkDown {
        /// Why.
        code: CloseCode,
        /// Detail for logs.
        reason: String,
    },
}

/// A peer broke the session protocol. Fatal for the link (close it with
/// [`CloseCode::ProtocolError`]); the session can still be resumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// An ack for sequence numbers never sent.
    #[error("peer acknowledged {lane:?} up to {upto} but only {sent} were sent")]
    AckBeyondSent {
        /// Lane.
        lane: Lane,
        /// What was acknowledged.
        upto: u64,
        /// What was sent (next sequence number).
        sent: u64,
    },
    /// A frame that belongs to the handshake, after it.
    #[error("unexpected {0} after the handshake")]
    Unexpected(&'static str),
    /// A frame while no link is up.
    #[error("frame received while the link is down")]
    LinkDown,
}

/// Counters a driver exports as metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Reliable messages sent for the first time.
    pub sent: u64,
    /// Reliable transmissions after the first.
    pub retransmitted: u64,
    /// Messages delivered to the driver (all lanes).
    pub delivered: u64,
    /// Reliable arrivals dropped as duplicates.
    pub duplicates: u64,
    /// Arrivals beyond the credit we granted (dropped, will be resent).
    pub over_credit: u64,
    /// Best-effort messages dropped because the queue was full or the link
    /// down.
    pub best_effort_dropped: u64,
    /// Retransmission timeouts fired.
    pub timeouts: u64,
}

/// One side of a link session. See the module docs for the call order.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    epoch: u64,
    peer_epoch: Option<u64>,
    up: bool,
    send: [SendLane; 2],
    recv: [RecvLane; 2],
    best_effort: VecDeque<Message>,
    /// Payload bytes in `best_effort`.
    best_effort_bytes: usize,
    events: VecDeque<Event>,
    /// Receptions not yet acknowledged; `ack_deadline` is when we must.
    unacked_recv: u32,
    ack_deadline: Option<Instant>,
    /// With a zero `ack_delay`: an ack is owed, to ride on the next data
    /// this turn or to go alone when the driver has nothing else to do
    /// ([`Session::flush_ack`]).
    ack_soon: bool,
    /// An ack must go out with the next transmit (credit changed, link up).
    ack_now: bool,
    pongs: Vec<u64>,
    ping_nonce: u64,
    ping_due: bool,
    /// While a lane waits for credit: when to ping the peer, whose answer
    /// carries a fresh `Ack`. Without it a lost credit update (after the
    /// peer unfreezes) stalls the lane for good: nothing is outstanding, so
    /// no retransmission would ever make the peer repeat it.
    credit_probe_at: Option<Instant>,
    last_send: Instant,
    last_recv: Instant,
    down_since: Option<Instant>,
    credit_frozen: bool,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    stats: SessionStats,
    close: Option<Close>,
}

impl Session {
    /// A session with no link yet. `epoch` must be random per `Session`
    /// object (the sans-IO core reads no randomness).
    pub fn new(config: SessionConfig, epoch: u64, now: Instant) -> Self {
        let rto = config.rto_initial;
        Self {
            config,
            epoch,
            peer_epoch: None,
            up: false,
            send: [SendLane::new(), SendLane::new()],
            recv: [RecvLane::new(), RecvLane::new()],
            best_effort: VecDeque::new(),
            best_effort_bytes: 0,
            events: VecDeque::new(),
            unacked_recv: 0,
            ack_deadline: None,
            ack_soon: false,
            ack_now: false,
            pongs: Vec::new(),
            ping_nonce: 0,
            ping_due: false,
            credit_probe_at: None,
            last_send: now,
            last_recv: now,
            down_since: Some(now),
            credit_frozen: false,
            srtt: None,
            rttvar: Duration::ZERO,
            rto,
            stats: SessionStats::default(),
            close: None,
        }
    }

    /// This session's epoch (goes into `Welcome`/`Resume`).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The epoch of the peer session last linked, if any.
    pub fn peer_epoch(&self) -> Option<u64> {
        self.peer_epoch
    }

    /// Per-lane resume state for the handshake.
    pub fn resume_state(&self) -> [LaneResume; 2] {
        Lane::ALL.map(|l| LaneResume {
            recv_next: self.recv[l.index()].next,
            send_base: self.send[l.index()].base,
        })
    }

    /// This side's half of the handshake (`Welcome::resume` or `Resume`).
    pub fn resume(&self) -> crate::wire::Resume {
        crate::wire::Resume {
            epoch: self.epoch,
            lanes: self.resume_state(),
        }
    }

    /// Per lane, the sequence number the next message will get; everything
    /// sent so far is acknowledged once `resume_state()[lane].send_base`
    /// reaches it.
    pub fn next_seqs(&self) -> [u64; 2] {
        Lane::ALL.map(|l| self.send[l.index()].next_seq)
    }

    /// True while a link is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// When the link went down (`None` while up). Drivers expire sessions
    /// that stay down past their retention window.
    pub fn down_since(&self) -> Option<Instant> {
        self.down_since
    }

    /// Counters.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// A new link carries this session, after a handshake in which the peer
    /// presented `peer_epoch` and `peer_lanes`.
    pub fn handle_link_up(&mut self, now: Instant, peer_epoch: u64, peer_lanes: [LaneResume; 2]) {
        let peer_fresh = self.peer_epoch != Some(peer_epoch);
        self.peer_epoch = Some(peer_epoch);
        self.up = true;
        self.down_since = None;
        self.last_recv = now;
        self.last_send = now;
        self.clear_best_effort();
        self.pongs.clear();
        self.ping_due = false;
        self.credit_probe_at = None;
        self.close = None;
        for lane in Lane::ALL {
            let i = lane.index();
            let peer = peer_lanes[i];
            // Receiving: a fresh peer numbers from its send_base; a known
            // peer that dropped messages we never got leaves a gap.
            if peer_fresh {
                self.recv[i].reset(peer.send_base);
            } else if let Some((from, to)) = self.recv[i].skip_to(peer.send_base) {
                self.events.push_back(Event::Gap { lane, from, to });
                // What was held beyond the hole is deliverable now; left in
                // the lane it waited for the next arrival, or forever.
                for msg in self.recv[i].drain_ready() {
                    self.stats.delivered += 1;
                    self.events.push_back(Event::Message {
                        lane: Some(lane),
                        msg,
                    });
                }
            }
            // Sending: what the peer has is acknowledged, the rest goes again.
            let acked = self.send[i].resume(peer.recv_next, now);
            if acked > 0 {
                self.events.push_back(Event::Acked {
                    lane,
                    upto: self.send[i].base,
                });
            }
        }
        // Tell the peer our real window straight away.
        self.ack_now = true;
        self.unacked_recv = 0;
        self.ack_deadline = None;
        self.ack_soon = false;
        self.events.push_back(Event::LinkUp { peer_fresh });
    }

    /// The connection carrying the session is gone. Unacknowledged messages
    /// stay in the outbox for the next link; queued best-effort ones are
    /// dropped.
    pub fn handle_link_down(&mut self, now: Instant) {
        if !self.up {
            return;
        }
        self.up = false;
        self.down_since = Some(now);
        self.stats.best_effort_dropped += self.best_effort.len() as u64;
        self.clear_best_effort();
        self.pongs.clear();
        self.ack_deadline = None;
        self.ack_soon = false;
    }

    /// Asks the link to close with `code` after what is queued: the next
    /// [`Session::poll_transmit`] writes a `Close` frame and the session
    /// goes down.
    pub fn close(&mut self, code: CloseCode, reason: impl Into<String>) {
        self.close = Some(Close {
            code,
            reason: reason.into(),
        });
    }

    /// True when `lane`'s outbox has room (for backpressure on publishers).
    pub fn can_send(&self, lane: Lane) -> bool {
        let s = &self.send[lane.index()];
        s.outbox.len() < self.config.outbox_max_messages && s.bytes < self.config.outbox_max_bytes
    }

    /// Unacknowledged messages over both lanes.
    pub fn outbox_len(&self) -> usize {
        self.send.iter().map(|s| s.outbox.len()).sum()
    }

    /// Unacknowledged payload bytes over both lanes.
    pub fn outbox_bytes(&self) -> usize {
        self.send.iter().map(|s| s.bytes).sum()
    }

    /// Payload bytes this session holds for its peer: unacknowledged
    /// reliable messages and best-effort messages not yet transmitted.
    /// Drivers bound it per peer (a consumer that does not keep up).
    pub fn queued_bytes(&self) -> usize {
        self.outbox_bytes() + self.best_effort_bytes
    }

    fn clear_best_effort(&mut self) {
        self.best_effort.clear();
        self.best_effort_bytes = 0;
    }

    fn pop_best_effort(&mut self) -> Option<Message> {
        let msg = self.best_effort.pop_front()?;
        self.best_effort_bytes -= msg.payload_len();
        Some(msg)
    }

    /// Queues a reliable message and returns its sequence number; its
    /// acknowledgement is reported as [`Event::Acked`]. Never refuses:
    /// callers that must respect limits check [`Session::can_send`] first.
    pub fn send(&mut self, lane: Lane, msg: Message) -> u64 {
        self.stats.sent += 1;
        self.send[lane.index()].push(msg)
    }

    /// Queues a best-effort message: sent if the link is up and the queue
    /// has room, never retransmitted. Returns false when it was dropped.
    pub fn send_best_effort(&mut self, msg: Message) -> bool {
        if !self.up {
            self.stats.best_effort_dropped += 1;
            return false;
        }
        if self.best_effort.len() >= self.config.best_effort_queue {
            self.pop_best_effort();
            self.stats.best_effort_dropped += 1;
        }
        self.best_effort_bytes += msg.payload_len();
        self.best_effort.push_back(msg);
        true
    }

    /// While frozen, the credit we grant the peer stops growing (it never
    /// shrinks). Routers freeze credit while a consumer they feed is behind.
    pub fn set_credit_frozen(&mut self, frozen: bool) {
        if self.credit_frozen && !frozen {
            self.ack_now = true;
        }
        self.credit_frozen = frozen;
    }

    /// Feeds one received frame (not `Hello`/`Welcome`/`Resume`).
    pub fn handle_frame(&mut self, now: Instant, frame: Frame) -> Result<(), SessionError> {
        if !self.up {
            return Err(SessionError::LinkDown);
        }
        self.last_recv = now;
        match frame {
            Frame::Data(Data {
                lane: None, msg, ..
            }) => {
                self.stats.delivered += 1;
                self.events.push_back(Event::Message { lane: None, msg });
            }
            Frame::Data(Data {
                lane: Some(lane),
                seq,
                msg,
            }) => self.on_data(now, lane, seq, msg),
            Frame::Ack(ack) => self.on_ack(now, ack)?,
            Frame::Ping(n) => {
                self.pongs.push(n);
                // The pong carries our ack and credit: a peer pings to ask
                // for them when it waits for credit.
                self.ack_now = true;
            }
            Frame::Pong(_) => {}
            Frame::Close(c) => {
                self.events.push_back(Event::LinkDown {
                    code: c.code,
                    reason: c.reason,
                });
                self.handle_link_down(now);
            }
            Frame::Hello(_) => return Err(SessionError::Unexpected("Hello")),
            Frame::Welcome(_) => return Err(SessionError::Unexpected("Welcome")),
            Frame::Resume(_) => return Err(SessionError::Unexpected("Resume")),
        }
        Ok(())
    }

    fn on_data(&mut self, now: Instant, lane: Lane, seq: u64, msg: Message) {
        let window = self.config.recv_window;
        let r = &mut self.recv[lane.index()];
        match r.accept(lane, seq, msg, window) {
            lanes::Accept::Duplicate => {
                self.stats.duplicates += 1;
                // Our earlier ack may have been lost: repeat it soon.
                self.ack_now = true;
            }
            lanes::Accept::OverCredit => {
                self.stats.over_credit += 1;
            }
            lanes::Accept::Accepted(n) => {
                for msg in r.drain_ready() {
                    self.events.push_back(Event::Message {
                        lane: Some(lane),
                        msg,
                    });
                }
                self.stats.delivered += n;
                self.unacked_recv += 1;
                // A zero delay means "as soon as the driver is idle": the
                // ack rides on whatever this turn sends back (an RPC reply),
                // and goes alone only when nothing else is coming
                // (`flush_ack`). Arming a deadline of `now` left a lone ack
                // to the driver's 1 ms timer (every awaited publish waited
                // for it); acking at once cost a write per request on the
                // path of a serial call (15.8 -> 23.3 µs p50 on one CPU).
                if self.unacked_recv >= self.config.ack_every {
                    self.ack_now = true;
                } else if self.config.ack_delay.is_zero() {
                    self.ack_soon = true;
                } else if self.ack_deadline.is_none() {
                    self.ack_deadline = Some(now + self.config.ack_delay);
                }
            }
        }
    }

    fn on_ack(&mut self, now: Instant, ack: Ack) -> Result<(), SessionError> {
        for lane in Lane::ALL {
            let s = &mut self.send[lane.index()];
            let la = &ack.lanes[lane.index()];
            if la.recv_next > s.next_seq {
                return Err(SessionError::AckBeyondSent {
                    lane,
                    upto: la.recv_next,
                    sent: s.next_seq,
                });
            }
            s.limit = s.limit.max(la.limit);
            let (acked, rtt_sample) = s.ack(la.recv_next, &la.sacks, now);
            if let Some(sample) = rtt_sample {
                self.update_rtt(sample);
            }
            if acked > 0 {
                self.events.push_back(Event::Acked {
                    lane,
                    upto: self.send[lane.index()].base,
                });
            }
        }
        Ok(())
    }

    fn update_rtt(&mut self, sample: Duration) {
        // RFC 6298.
        match self.srtt {
            None => {
                self.srtt = Some(sample);
                self.rttvar = sample / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(sample);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((srtt * 7 + sample) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(sample);
        self.rto = (srtt + self.rttvar * 4 + self.config.ack_delay)
            .clamp(self.config.rto_min, self.config.rto_max);
    }

    /// The smoothed round-trip time, once measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.up {
            return;
        }
        if now.saturating_duration_since(self.last_recv) >= self.config.idle_timeout {
            // Down at once, reported once. (Asking for a Close frame here
            // as well reported `LinkDown` a second time when poll_transmit
            // wrote it, and left the session up until then, which never
            // comes while the socket is backed up by a dead peer.)
            self.events.push_back(Event::LinkDown {
                code: CloseCode::IdleTimeout,
                reason: format!(
                    "nothing received for {} ms",
                    self.config.idle_timeout.as_millis()
                ),
            });
            self.handle_link_down(now);
            return;
        }
        if self.ack_deadline.is_some_and(|d| now >= d) {
            self.ack_now = true;
        }
        if now.saturating_duration_since(self.last_send) >= self.config.heartbeat_interval {
            self.ping_due = true;
        }
        if self.credit_probe_at.is_some_and(|t| now >= t) {
            // Re-armed by poll_transmit while the wait goes on.
            self.credit_probe_at = None;
            self.ping_due |= self.send.iter().any(|s| s.credit_blocked());
        }
        for s in &mut self.send {
            if s.rto_due(now, self.rto) {
                s.go_back(now);
                self.stats.timeouts += 1;
                self.rto = (self.rto * 2).min(self.config.rto_max);
            }
        }
    }

    /// The next instant at which [`Session::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.up {
            return None;
        }
        let mut t = self.last_recv + self.config.idle_timeout;
        t = t.min(self.last_send + self.config.heartbeat_interval);
        if let Some(d) = self.ack_deadline {
            t = t.min(d);
        }
        if let Some(d) = self.credit_probe_at {
            t = t.min(d);
        }
        for s in &self.send {
            if let Some(d) = s.rto_deadline(self.rto) {
                t = t.min(d);
            }
        }
        Some(t)
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// True when an ack is owed that should go out once the driver has
    /// nothing else to do (zero `ack_delay`); see [`Session::flush_ack`].
    pub fn owes_ack(&self) -> bool {
        self.up && self.ack_soon
    }

    /// Sends the owed ack with the next [`Session::poll_transmit`], alone if
    /// need be: the driver calls this when it is idle, after giving local
    /// work the chance to produce something the ack could ride on.
    pub fn flush_ack(&mut self) {
        if self.ack_soon {
            self.ack_soon = false;
            self.ack_now = true;
        }
    }

    /// True when [`Session::poll_transmit`] would write something now.
    pub fn wants_transmit(&self) -> bool {
        self.up
            && (self.close.is_some()
                || self.ack_now
                || self.ping_due
                || !self.pongs.is_empty()
                || !self.best_effort.is_empty()
                || self.send.iter().any(|s| s.has_sendable()))
    }

    /// Appends everything due to `buf` (many frames, one buffer, one write),
    /// stopping once `buf` holds about `budget` bytes. Returns the number of
    /// frames written. Acks ride along whenever anything else is written.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut BytesMut, budget: usize) -> usize {
        if !self.up {
            return 0;
        }
        let start = buf.len();
        let mut frames = 0;
        for n in self.pongs.drain(..) {
            Frame::Pong(n).encode(buf);
            frames += 1;
        }
        if self.ping_due {
            self.ping_due = false;
            self.ping_nonce += 1;
            Frame::Ping(self.ping_nonce).encode(buf);
            frames += 1;
        }
        let has_data = !self.best_effort.is_empty() || self.send.iter().any(|s| s.has_sendable());
        let ack_due = self.ack_now || self.ack_deadline.is_some_and(|d| now >= d);
        let owed = self.ack_deadline.is_some() || self.ack_soon;
        if ack_due || ((has_data || frames > 0) && owed) {
            self.encode_ack(buf);
            frames += 1;
        }
        while buf.len() - start < budget {
            let Some(msg) = self.pop_best_effort() else {
                break;
            };
            Frame::Data(Data {
                lane: None,
                seq: 0,
                msg,
            })
            .encode(buf);
            frames += 1;
        }
        for lane in Lane::ALL {
            let s = &mut self.send[lane.index()];
            let (n, retx) = s.transmit(lane, now, buf, start + budget);
            frames += n;
            self.stats.retransmitted += retx;
        }
        if self.send.iter().any(|s| s.credit_blocked()) {
            self.credit_probe_at.get_or_insert(now + self.rto);
        } else {
            self.credit_probe_at = None;
        }
        if let Some(close) = self.close.take() {
            Frame::Close(close.clone()).encode(buf);
            frames += 1;
            self.events.push_back(Event::LinkDown {
                code: close.code,
                reason: close.reason,
            });
            self.handle_link_down(now);
        }
        if frames > 0 {
            self.last_send = now;
        }
        frames
    }

    fn encode_ack(&mut self, buf: &mut BytesMut) {
        let mut ack = Ack::default();
        for lane in Lane::ALL {
            let r = &mut self.recv[lane.index()];
            let limit = if self.credit_frozen {
                r.advertised_limit.max(r.next)
            } else {
                r.next + self.config.recv_window
            };
            r.advertised_limit = r.advertised_limit.max(limit);
            ack.lanes[lane.index()] = r.lane_ack(r.advertised_limit);
        }
        Frame::Ack(ack).encode(buf);
        self.ack_now = false;
        self.ack_deadline = None;
        self.ack_soon = false;
        self.unacked_recv = 0;
    }
}

#[cfg(test)]
mod tests;
