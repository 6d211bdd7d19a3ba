//! Two sessions, a hostile network between them, and a discrete-event loop
//! on virtual time.
//!
//! Every frame `poll_transmit` writes is decoded and then travels on its
//! own: it may be lost, duplicated, delayed by a random latency (so frames
//! overtake each other) or dropped by a partition, both ways or one way
//! (half-open links). A connection ends in one of three ways: an abrupt
//! reset tears it down on both sides at once and discards everything in
//! flight on it; a graceful `close` by one side sends a `Close` frame (which
//! may be lost like any other), and the other side notices the closed
//! socket once what was in flight has landed; or a session gives up by
//! itself (idle timeout), which looks the same as a close. After a random
//! delay a new connection exchanges epochs and resume state, exactly what
//! the handshake carries (a connection attempt during a full partition
//! fails and is retried). Receivers freeze and thaw their credit now and
//! then. After the fault phase the network heals (no loss, duplication,
//! partition or reset; latency and reordering stay) and the run continues
//! until both sides have published everything and every reliable message
//! is acknowledged.

use super::ledger::{payload, Books, Kind, Tally};
use bytes::BytesMut;
use meshwire_proto::session::{Event, Session, SessionConfig};
use meshwire_proto::wire::{CloseCode, Decoder, Frame, Message, Subject};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Loop iterations after which a run counts as stuck.
const MAX_STEPS: u64 = 3_000_000;
/// Virtual time the healed network gets to drain everything.
const QUIET_MAX: Duration = Duration::from_secs(120);

/// Everything drawn from the seed before the run starts.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) config: SessionConfig,
    /// Per-frame loss probability during the fault phase.
    pub(crate) loss: f64,
    /// Per-frame duplication probability during the fault phase.
    pub(crate) dup: f64,
    pub(crate) latency: Duration,
    /// Extra random latency, uniform in `0..jitter` (reordering).
    pub(crate) jitter: Duration,
    /// Mean time between connection resets, if any.
    pub(crate) reset_every: Option<Duration>,
    /// Periods in which frames are dropped: both ways (`None`, and no
    /// connection can be made) or only those sent by one side (a half-open
    /// link: one side still hears the other).
    pub(crate) partitions: Vec<(Duration, Duration, Option<usize>)>,
    /// When faults stop.
    pub(crate) fault_end: Duration,
    /// Messages each side publishes.
    pub(crate) messages: u32,
    pub(crate) best_effort_share: f64,
    pub(crate) ordered_share: f64,
    pub(crate) tick: Duration,
    pub(crate) burst: u32,
    pub(crate) max_padding: usize,
    /// `poll_transmit` budget.
    pub(crate) budget: usize,
    /// How late the driver's timer fires after `poll_timeout`.
    pub(crate) timer_late: Duration,
    /// Periods in which a side freezes the credit it grants.
    pub(crate) freezes: Vec<(usize, Duration, Duration)>,
}

fn ms(rng: &mut SmallRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..=hi))
}

impl Params {
    pub(crate) fn draw(rng: &mut SmallRng) -> Self {
        let heartbeat = ms(rng, 100, 500);
        let rto_min = ms(rng, 20, 200);
        let config = SessionConfig {
            outbox_max_messages: rng.random_range(4..=200),
            outbox_max_bytes: rng.random_range(256..=64 * 1024),
            recv_window: rng.random_range(8..=512),
            ack_delay: ms(rng, 0, 10),
            ack_every: rng.random_range(1..=64),
            rto_initial: ms(rng, 100, 1000),
            rto_min,
            rto_max: rto_min + ms(rng, 300, 2500),
            heartbeat_interval: heartbeat,
            idle_timeout: heartbeat * rng.random_range(3..=8),
            best_effort_queue: rng.random_range(1..=64),
        };
        // A few calm seeds, most stormy, some very stormy.
        let storm = rng.random::<f64>();
        let (loss, dup) = if storm < 0.1 {
            (0.0, 0.0)
        } else if storm < 0.8 {
            (rng.random_range(0.0..0.15), rng.random_range(0.0..0.1))
        } else {
            (rng.random_range(0.15..0.4), rng.random_range(0.0..0.3))
        };
        let latency = ms(rng, 0, 40);
        // Mostly mild reordering, sometimes frames overtake each other by
        // several round trips.
        let jitter = if rng.random_bool(0.8) {
            ms(rng, 0, 60)
        } else {
            ms(rng, 60, 600)
        };
        let fault_end = ms(rng, 2_000, 12_000);
        let reset_every = match rng.random_range(0..10) {
            0..=2 => None,
            3 => Some(ms(rng, 20, 200)),
            _ => Some(ms(rng, 200, 4_000)),
        };
        let mut partitions = Vec::new();
        for _ in 0..rng.random_range(0..=4) {
            let start = Duration::from_millis(rng.random_range(0..fault_end.as_millis() as u64));
            // Sometimes longer than the idle timeout.
            let len = if rng.random_bool(0.3) {
                config.idle_timeout + ms(rng, 0, 3_000)
            } else {
                ms(rng, 20, 1_000)
            };
            let one_way = match rng.random_range(0..4) {
                0 => Some(0),
                1 => Some(1),
                _ => None,
            };
            partitions.push((start, start + len, one_way));
        }
        let mut freezes = Vec::new();
        for _ in 0..rng.random_range(0..=3) {
            let start = Duration::from_millis(rng.random_range(0..fault_end.as_millis() as u64));
            freezes.push((rng.random_range(0..2), start, start + ms(rng, 10, 2_000)));
        }
        let messages = rng.random_range(50..=1000);
        let burst: u32 = rng.random_range(1..=8);
        // Spread publishing over most of the fault phase.
        let ticks = (messages / burst.div_ceil(2)).max(1);
        let tick = (fault_end * 3 / 4) / ticks;
        Self {
            config,
            loss,
            dup,
            latency,
            jitter,
            reset_every,
            partitions,
            fault_end,
            messages,
            best_effort_share: rng.random_range(0.0..0.1),
            ordered_share: rng.random_range(0.2..0.8),
            tick,
            burst,
            max_padding: rng.random_range(0..=200),
            budget: rng.random_range(64..=8192),
            timer_late: ms(rng, 0, 3),
            freezes,
        }
    }
}

/// Counters of one run (added up over seeds by the test).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Report {
    pub(crate) tally: Tally,
    pub(crate) retransmitted: u64,
    pub(crate) duplicates: u64,
    pub(crate) timeouts: u64,
    pub(crate) over_credit: u64,
    pub(crate) frames: u64,
    pub(crate) frames_lost: u64,
    pub(crate) resets: u64,
    pub(crate) closes: u64,
    pub(crate) idle_timeouts: u64,
    pub(crate) links: u64,
    pub(crate) backpressured: u64,
    pub(crate) virtual_time: Duration,
}

enum Action {
    /// A frame of connection `conn` reaches side `to`.
    Arrive { to: usize, conn: u64, frame: Frame },
    /// Side `side`'s application publishes a few messages.
    AppTick { side: usize },
    /// The connection breaks.
    Reset,
    /// A new connection is attempted.
    Reconnect,
    /// The side still up notices that the other closed connection `conn`.
    Eof { conn: u64 },
    /// Side `side` freezes (`+1`) or unfreezes (`-1`) its credit.
    Freeze { side: usize, delta: i32 },
}

struct Scheduled {
    at: Duration,
    id: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.id) == (other.at, other.id)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    // Reversed: BinaryHeap is a max-heap, we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.id).cmp(&(self.at, self.id))
    }
}

/// One simulation run.
pub(crate) struct World {
    rng: SmallRng,
    params: Params,
    base: Instant,
    now: Duration,
    sessions: [Session; 2],
    books: Books,
    /// Id of the live connection, if any.
    conn: Option<u64>,
    next_conn: u64,
    reconnect_pending: bool,
    /// `LinkUp` events seen per side.
    link_ups: [u64; 2],
    /// The connection each side last reported `LinkDown` for.
    link_down_for: [u64; 2],
    /// Overlapping freeze periods in force per side.
    frozen: [i32; 2],
    queue: BinaryHeap<Scheduled>,
    next_id: u64,
    decoder: Decoder,
    buf: BytesMut,
    subject: Subject,
    report: Report,
    /// Print every step to stderr (`MESHWIRE_SIM_TRACE=1`).
    trace: bool,
}

/// One line per frame, for traces.
fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Data(d) => match d.lane {
            Some(lane) => format!("Data {lane:?} #{}", d.seq),
            None => "Data best-effort".to_owned(),
        },
        Frame::Ack(a) => {
            let l: Vec<String> = a
                .lanes
                .iter()
                .map(|l| {
                    let sacks: Vec<String> = l
                        .sacks
                        .iter()
                        .map(|s| format!("{}..{}", s.start, s.end))
                        .collect();
                    format!("<{} lim {} [{}]", l.recv_next, l.limit, sacks.join(" "))
                })
                .collect();
            format!("Ack {}", l.join(" | "))
        }
        other => format!("{other:?}"),
    }
}

impl World {
    pub(crate) fn new(seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let params = Params::draw(&mut rng);
        let base = Instant::now();
        let sessions = [
            Session::new(params.config.clone(), rng.random(), base),
            Session::new(params.config.clone(), rng.random(), base),
        ];
        Self {
            rng,
            params,
            base,
            now: Duration::ZERO,
            sessions,
            books: Books::default(),
            conn: None,
            next_conn: 0,
            reconnect_pending: false,
            link_ups: [0; 2],
            link_down_for: [0; 2],
            frozen: [0; 2],
            queue: BinaryHeap::new(),
            next_id: 0,
            decoder: Decoder::default(),
            buf: BytesMut::new(),
            subject: Subject::literal("sim.messages").expect("valid subject"),
            report: Report::default(),
            trace: std::env::var_os("MESHWIRE_SIM_TRACE").is_some(),
        }
    }

    pub(crate) fn params(&self) -> &Params {
        &self.params
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn faulty(&self) -> bool {
        self.now < self.params.fault_end
    }

    /// True when a frame sent by `from` (any side: `None`) is dropped at
    /// `t` by a partition.
    fn partitioned(&self, t: Duration, from: Option<usize>) -> bool {
        t < self.params.fault_end
            && self.params.partitions.iter().any(|&(s, e, one_way)| {
                s <= t && t < e && (one_way.is_none() || from.is_none() || one_way == from)
            })
    }

    fn schedule(&mut self, at: Duration, action: Action) {
        self.next_id += 1;
        self.queue.push(Scheduled {
            at,
            id: self.next_id,
            action,
        });
    }

    fn schedule_reset(&mut self) {
        if let Some(mean) = self.params.reset_every {
            // Exponential inter-arrival times.
            let u: f64 = self.rng.random_range(1e-9..1.0);
            let at = self.now + mean.mul_f64(-u.ln());
            if at < self.params.fault_end {
                self.schedule(at, Action::Reset);
            }
        }
    }

    /// Runs to the end; `Err` describes the first broken invariant.
    pub(crate) fn run(mut self) -> Result<Report, String> {
        self.schedule(Duration::ZERO, Action::Reconnect);
        self.reconnect_pending = true;
        for side in 0..2 {
            let first = ms(&mut self.rng, 0, 20);
            self.schedule(first, Action::AppTick { side });
        }
        self.schedule_reset();
        for (side, start, end) in self.params.freezes.clone() {
            self.schedule(start, Action::Freeze { side, delta: 1 });
            self.schedule(end, Action::Freeze { side, delta: -1 });
        }
        let deadline = self.params.fault_end + QUIET_MAX;
        let mut steps = 0u64;
        loop {
            steps += 1;
            if steps > MAX_STEPS {
                return Err(format!("stuck: {MAX_STEPS} steps by {:?}", self.now));
            }
            if self.finished() {
                break;
            }
            let t_queue = self.queue.peek().map(|s| s.at);
            let t_timer = self
                .sessions
                .iter()
                .filter_map(|s| s.poll_timeout())
                .min()
                .map(|t| t.saturating_duration_since(self.base) + self.params.timer_late);
            let next = match (t_queue, t_timer) {
                (Some(q), Some(t)) => q.min(t),
                (Some(q), None) => q,
                (None, Some(t)) => t,
                (None, None) => return Err(self.stalled("nothing left to happen")),
            };
            if next > deadline {
                return Err(self.stalled("not drained"));
            }
            self.now = self.now.max(next);
            if t_queue.is_some_and(|q| q <= next) {
                let Some(s) = self.queue.pop() else {
                    unreachable!("peeked")
                };
                self.act(s.action)?;
            } else {
                let now = self.instant();
                if self.trace {
                    eprintln!("{:>12?} timers", self.now);
                }
                for s in &mut self.sessions {
                    if s.poll_timeout()
                        .is_some_and(|t| t + self.params.timer_late <= now)
                    {
                        s.handle_timeout(now);
                    }
                }
            }
            self.settle()?;
        }
        // Let what is still in flight land: a late duplicate must still be
        // dropped.
        while let Some(s) = self.queue.pop() {
            self.now = self.now.max(s.at);
            if let Action::Arrive { .. } = s.action {
                self.act(s.action)?;
                self.settle()?;
            }
        }
        self.books.check_complete()?;
        let mut r = self.report;
        r.tally = self.books.tally();
        for s in &self.sessions {
            let st = s.stats();
            r.retransmitted += st.retransmitted;
            r.duplicates += st.duplicates;
            r.timeouts += st.timeouts;
            r.over_credit += st.over_credit;
        }
        r.virtual_time = self.now;
        Ok(r)
    }

    fn finished(&self) -> bool {
        !self.faulty()
            && (0..2).all(|s| self.books.next_app_seq(s) >= self.params.messages)
            && self.sessions.iter().all(|s| s.outbox_len() == 0)
            && self.books.all_acked()
    }

    fn stalled(&self, what: &str) -> String {
        format!(
            "{what} at {:?}: link {}, sent {}/{} and {}/{}, outboxes {} and {}",
            self.now,
            if self.conn.is_some() { "up" } else { "down" },
            self.books.next_app_seq(0),
            self.params.messages,
            self.books.next_app_seq(1),
            self.params.messages,
            self.sessions[0].outbox_len(),
            self.sessions[1].outbox_len(),
        )
    }

    fn act(&mut self, action: Action) -> Result<(), String> {
        match action {
            Action::Arrive { to, conn, frame } => {
                // Nothing reaches a side that closed its end.
                if self.conn != Some(conn)
                    || !self.sessions[to].is_up()
                    || self.partitioned(self.now, Some(1 - to))
                {
                    return Ok(());
                }
                let now = self.instant();
                if self.trace {
                    eprintln!("{:>12?} {} -> {to}: {}", self.now, 1 - to, describe(&frame));
                }
                self.sessions[to].handle_frame(now, frame).map_err(|e| {
                    format!("side {to}: handle_frame returned SessionError: {e} ({e:?})")
                })?;
            }
            Action::AppTick { side } => self.app_tick(side)?,
            Action::Freeze { side, delta } => {
                self.frozen[side] += delta;
                self.sessions[side].set_credit_frozen(self.frozen[side] > 0);
            }
            Action::Reset => {
                if self.trace {
                    eprintln!("{:>12?} reset", self.now);
                }
                let both_up = self.sessions.iter().all(Session::is_up);
                if self.conn.is_some() && both_up && self.rng.random_bool(0.3) {
                    // A graceful close by one side: its Close frame travels
                    // (or is lost) like any other.
                    self.report.closes += 1;
                    let side = self.rng.random_range(0..2);
                    self.sessions[side].close(CloseCode::Normal, "simulated close");
                } else if self.conn.is_some() {
                    self.report.resets += 1;
                    self.teardown();
                }
                self.schedule_reset();
            }
            Action::Eof { conn } => {
                if self.conn == Some(conn) {
                    self.teardown();
                }
            }
            Action::Reconnect => {
                self.reconnect_pending = false;
                if self.conn.is_some() {
                    return Ok(());
                }
                if self.partitioned(self.now, None) {
                    // The connection attempt fails; try again later.
                    let retry = self.now + ms(&mut self.rng, 50, 500);
                    self.reconnect_pending = true;
                    self.schedule(retry, Action::Reconnect);
                    return Ok(());
                }
                self.next_conn += 1;
                self.conn = Some(self.next_conn);
                if self.trace {
                    eprintln!("{:>12?} connection {} up", self.now, self.next_conn);
                }
                self.report.links += 1;
                // The handshake: each side presents its epoch and resume
                // state as they are now, then both resume.
                let now = self.instant();
                let (ea, ra) = (self.sessions[0].epoch(), self.sessions[0].resume_state());
                let (eb, rb) = (self.sessions[1].epoch(), self.sessions[1].resume_state());
                self.sessions[0].handle_link_up(now, eb, rb);
                self.sessions[1].handle_link_up(now, ea, ra);
            }
        }
        Ok(())
    }

    /// Both sides lose the connection; what is in flight on it is gone.
    fn teardown(&mut self) {
        if self.conn.take().is_none() {
            return;
        }
        let now = self.instant();
        for s in &mut self.sessions {
            s.handle_link_down(now);
        }
        if !self.reconnect_pending {
            self.reconnect_pending = true;
            let at = self.now + ms(&mut self.rng, 1, 800);
            self.schedule(at, Action::Reconnect);
        }
    }

    fn app_tick(&mut self, side: usize) -> Result<(), String> {
        let burst = self.rng.random_range(1..=self.params.burst);
        for _ in 0..burst {
            let app_seq = self.books.next_app_seq(side);
            if app_seq >= self.params.messages {
                break;
            }
            let roll = self.rng.random::<f64>();
            let kind = if roll < self.params.best_effort_share {
                Kind::BestEffort
            } else if self.rng.random_bool(self.params.ordered_share) {
                Kind::Ordered
            } else {
                Kind::Unordered
            };
            if let Some(lane) = kind.lane() {
                if !self.sessions[side].can_send(lane) {
                    // Backpressure: the application waits.
                    self.report.backpressured += 1;
                    continue;
                }
            }
            let padding = self.rng.random_range(0..=self.params.max_padding);
            let msg = Message::Publish {
                subject: self.subject.clone(),
                reply_to: None,
                payload: payload(side, kind, app_seq, padding),
            };
            let seq = match kind.lane() {
                Some(lane) => Some(self.sessions[side].send(lane, msg)),
                None => {
                    self.sessions[side].send_best_effort(msg);
                    None
                }
            };
            self.books.published(side, kind, seq)?;
        }
        if self.books.next_app_seq(side) < self.params.messages {
            let at = self.now + self.params.tick;
            self.schedule(at, Action::AppTick { side });
        }
        Ok(())
    }

    /// Drains events and transmissions of both sides until neither has
    /// anything more to say.
    fn settle(&mut self) -> Result<(), String> {
        loop {
            // Drivers differ in whether they look at events or write first.
            let events_first = self.rng.random_bool(0.5);
            let mut progress = events_first && self.drain_events()?;
            for side in 0..2 {
                if self.conn.is_none() {
                    break;
                }
                let now = self.instant();
                self.buf.clear();
                let mut buf = std::mem::take(&mut self.buf);
                let n = self.sessions[side].poll_transmit(now, &mut buf, self.params.budget);
                if n > 0 {
                    progress = true;
                    self.route(side, n, &mut buf)?;
                }
                self.buf = buf;
            }
            if !events_first {
                progress |= self.drain_events()?;
            }
            if !progress {
                return Ok(());
            }
        }
    }

    fn drain_events(&mut self) -> Result<bool, String> {
        let mut any = false;
        for side in 0..2 {
            while let Some(ev) = self.sessions[side].poll_event() {
                any = true;
                self.on_event(side, ev)?;
            }
        }
        Ok(any)
    }

    fn on_event(&mut self, side: usize, ev: Event) -> Result<(), String> {
        if self.trace && !matches!(ev, Event::Message { .. }) {
            eprintln!("{:>12?} {side} event {ev:?}", self.now);
        }
        match ev {
            Event::Message { lane, msg } => match msg {
                Message::Publish { payload, .. } => self.books.delivered(side, lane, &payload),
                other => Err(format!(
                    "side {side}: delivered a message never sent: {other:?}"
                )),
            },
            Event::Acked { lane, upto } => self.books.acked(side, lane, upto),
            Event::Gap { lane, from, to } => Err(format!(
                "side {side}: Gap on {lane:?} {from}..{to} although the peer never drops messages"
            )),
            Event::LinkUp { peer_fresh } => {
                self.link_ups[side] += 1;
                let first = self.link_ups[side] == 1;
                if peer_fresh != first {
                    return Err(format!(
                        "side {side}: LinkUp {{ peer_fresh: {peer_fresh} }} on link #{}",
                        self.link_ups[side]
                    ));
                }
                Ok(())
            }
            Event::LinkDown { code, reason } => {
                // Events are drained right after the input that caused
                // them, so this is the connection the event is about.
                let conn = self.next_conn;
                if self.link_down_for[side] == conn {
                    return Err(format!(
                        "side {side}: a second LinkDown ({code:?}: {reason}) for connection {conn}"
                    ));
                }
                self.link_down_for[side] = conn;
                if code == CloseCode::IdleTimeout {
                    self.report.idle_timeouts += 1;
                }
                if self.sessions[1 - side].is_up() {
                    // This side closed its end (after writing Close); the
                    // other learns once what was in flight has landed.
                    if let Some(conn) = self.conn {
                        let at = self.now
                            + self.params.latency
                            + self.params.jitter
                            + ms(&mut self.rng, 1, 50);
                        self.schedule(at, Action::Eof { conn });
                    }
                } else {
                    self.teardown();
                }
                Ok(())
            }
        }
    }

    /// Splits what `from` wrote into frames and sends each across the
    /// network on its own.
    fn route(&mut self, from: usize, written: usize, buf: &mut BytesMut) -> Result<(), String> {
        let Some(conn) = self.conn else {
            return Ok(());
        };
        let mut frames = Vec::with_capacity(written);
        loop {
            match self.decoder.decode(buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return Err(format!("side {from}: wrote an undecodable frame: {e}")),
            }
        }
        if !buf.is_empty() || frames.len() != written {
            return Err(format!(
                "side {from}: poll_transmit said {written} frames, {} decoded, {} bytes left",
                frames.len(),
                buf.len()
            ));
        }
        for frame in frames {
            self.report.frames += 1;
            if self.trace {
                eprintln!("{:>12?} {from} sends {}", self.now, describe(&frame));
            }
            let copies = if self.faulty() {
                if self.partitioned(self.now, Some(from)) || self.rng.random_bool(self.params.loss)
                {
                    self.report.frames_lost += 1;
                    continue;
                }
                // Best-effort frames carry no sequence number, so nothing
                // could tell a copy from a new message: at-most-once rests
                // on the transport never duplicating (TCP does not). Every
                // other frame may be duplicated.
                let best_effort = matches!(&frame, Frame::Data(d) if d.lane.is_none());
                1 + usize::from(!best_effort && self.rng.random_bool(self.params.dup))
            } else {
                1
            };
            for _ in 0..copies {
                let delay =
                    self.params.latency + self.params.jitter.mul_f64(self.rng.random::<f64>());
                let at = self.now + delay;
                let action = Action::Arrive {
                    to: 1 - from,
                    conn,
                    frame: frame.clone(),
                };
                self.schedule(at, action);
            }
        }
        Ok(())
    }
}
