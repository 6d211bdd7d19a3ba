//! The two halves of a lane: the sending outbox and the receiving window.

use super::INITIAL_CREDIT;
use crate::wire::{encode_data, Lane, LaneAck, Message, Sack, MAX_SACK_RANGES};
use bytes::BytesMut;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Entry {
    msg: Message,
    sent_at: Option<Instant>,
    transmissions: u32,
    sacked: bool,
}

/// Outgoing half: messages `base..next_seq` wait in `outbox` (index =
/// `seq - base`) until the peer's cumulative ack passes them.
#[derive(Debug)]
pub(super) struct SendLane {
    pub(super) next_seq: u64,
    pub(super) base: u64,
    pub(super) outbox: VecDeque<Entry>,
    pub(super) bytes: usize,
    /// Credit: the peer accepts sequence numbers below this.
    pub(super) limit: u64,
    /// Everything below this went out on the current link at least once.
    sent_upto: u64,
    /// Reference point of the retransmission timer (last progress).
    progress_at: Option<Instant>,
}

impl SendLane {
    pub(super) fn new() -> Self {
        Self {
            next_seq: 1,
            base: 1,
            outbox: VecDeque::new(),
            bytes: 0,
            limit: 1 + INITIAL_CREDIT,
            sent_upto: 1,
            progress_at: None,
        }
    }

    pub(super) fn push(&mut self, msg: Message) -> u64 {
        let seq = self.next_seq;
        self.bytes += msg.payload_len();
        self.outbox.push_back(Entry {
            msg,
            sent_at: None,
            transmissions: 0,
            sacked: false,
        });
        self.next_seq += 1;
        seq
    }

    /// Pops everything below `upto`; returns how many, and a round-trip
    /// sample when the newest of them was sent once only (Karn's rule).
    fn pop_until(&mut self, upto: u64, now: Instant) -> (u64, Option<Duration>) {
        let mut n = 0;
        let mut sample = None;
        while self.base < upto {
            let Some(e) = self.outbox.pop_front() else {
                break;
            };
            self.bytes -= e.msg.payload_len();
            sample = match (e.transmissions, e.sent_at) {
                (1, Some(t)) => Some(now.saturating_duration_since(t)),
                _ => None,
            };
            self.base += 1;
            n += 1;
        }
        (n, sample)
    }

    /// A new link: `peer_recv_next` is what the peer says it has. Within
    /// our outstanding range it is an acknowledgement; otherwise the peer
    /// starts over at our `base` and everything outstanding goes again.
    pub(super) fn resume(&mut self, peer_recv_next: u64, now: Instant) -> u64 {
        let mut acked = 0;
        if (self.base..=self.next_seq).contains(&peer_recv_next) {
            acked = self.pop_until(peer_recv_next, now).0;
        }
        for e in &mut self.outbox {
            e.sacked = false;
            e.sent_at = None;
        }
        self.sent_upto = self.base;
        self.limit = self.base + INITIAL_CREDIT;
        self.progress_at = None;
        acked
    }

    pub(super) fn ack(
        &mut self,
        recv_next: u64,
        sacks: &[Sack],
        now: Instant,
    ) -> (u64, Option<Duration>) {
        let (n, sample) = if recv_next > self.base {
            self.pop_until(recv_next, now)
        } else {
            (0, None)
        };
        if self.sent_upto < self.base {
            self.sent_upto = self.base;
        }
        if n > 0 {
            self.progress_at = (self.base < self.sent_upto).then_some(now);
        }
        for s in sacks {
            let start = s.start.max(self.base);
            let end = s.end.min(self.next_seq);
            for seq in start..end {
                if let Some(e) = self.outbox.get_mut((seq - self.base) as usize) {
                    e.sacked = true;
                }
            }
        }
        (n, sample)
    }

    pub(super) fn has_sendable(&self) -> bool {
        self.sent_upto < self.next_seq && self.sent_upto < self.limit
    }

    /// Messages are waiting for the peer's credit.
    pub(super) fn credit_blocked(&self) -> bool {
        self.sent_upto < self.next_seq && self.sent_upto >= self.limit
    }

    /// Encodes sendable messages into `buf` until it reaches `stop_len`.
    /// Returns (frames written, of which retransmissions).
    pub(super) fn transmit(
        &mut self,
        lane: Lane,
        now: Instant,
        buf: &mut BytesMut,
        stop_len: usize,
    ) -> (usize, u64) {
        let (mut frames, mut retx) = (0, 0);
        while self.has_sendable() && buf.len() < stop_len {
            let seq = self.sent_upto;
            self.sent_upto += 1;
            let Some(e) = self.outbox.get_mut((seq - self.base) as usize) else {
                break;
            };
            if e.sacked {
                continue;
            }
            encode_data(buf, Some(lane), seq, &e.msg);
            if e.transmissions > 0 {
                retx += 1;
            }
            e.transmissions += 1;
            e.sent_at = Some(now);
            frames += 1;
            if self.progress_at.is_none() {
                self.progress_at = Some(now);
            }
        }
        (frames, retx)
    }

    pub(super) fn rto_deadline(&self, rto: Duration) -> Option<Instant> {
        if self.base < self.sent_upto {
            self.progress_at.map(|t| t + rto)
        } else {
            None
        }
    }

    pub(super) fn rto_due(&self, now: Instant, rto: Duration) -> bool {
        self.rto_deadline(rto).is_some_and(|d| now >= d)
    }

    /// Retransmission timeout: send everything not selectively acked again.
    pub(super) fn go_back(&mut self, now: Instant) {
        self.sent_upto = self.base;
        self.progress_at = Some(now);
    }
}

/// What became of an arriving message.
pub(super) enum Accept {
    /// Seen before: dropped.
    Duplicate,
    /// Beyond the window we can hold: dropped, the sender will retry.
    OverCredit,
    /// Kept; this many messages are now ready for delivery.
    Accepted(u64),
}

/// Incoming half: everything below `next` was received; `above` holds what
/// arrived beyond a gap (the message itself on the ordered lane, a marker on
/// the unordered lane, which delivers on arrival).
#[derive(Debug)]
pub(super) struct RecvLane {
    pub(super) next: u64,
    above: BTreeMap<u64, Option<Message>>,
    ready: VecDeque<Message>,
    pub(super) advertised_limit: u64,
}

impl RecvLane {
    pub(super) fn new() -> Self {
        Self {
            next: 1,
            above: BTreeMap::new(),
            ready: VecDeque::new(),
            advertised_limit: 1 + INITIAL_CREDIT,
        }
    }

    pub(super) fn reset(&mut self, next: u64) {
        self.next = next;
        self.above.clear();
        self.ready.clear();
        self.advertised_limit = next + INITIAL_CREDIT;
    }

    /// The sender no longer holds anything below `base`: deliver what we
    /// have below it and move on. Returns the skipped range, if any.
    pub(super) fn skip_to(&mut self, base: u64) -> Option<(u64, u64)> {
        if self.next >= base {
            return None;
        }
        let from = self.next;
        let rest = self.above.split_off(&base);
        for (_, m) in std::mem::replace(&mut self.above, rest) {
            if let Some(m) = m {
                self.ready.push_back(m);
            }
        }
        self.next = base;
        self.advance();
        Some((from, base))
    }

    fn advance(&mut self) {
        while let Some(m) = self.above.remove(&self.next) {
            if let Some(m) = m {
                self.ready.push_back(m);
            }
            self.next += 1;
        }
    }

    pub(super) fn accept(&mut self, lane: Lane, seq: u64, msg: Message, window: u64) -> Accept {
        if seq < self.next || self.above.contains_key(&seq) {
            return Accept::Duplicate;
        }
        if seq >= self.next.saturating_add(window.max(INITIAL_CREDIT)) {
            return Accept::OverCredit;
        }
        let before = self.ready.len();
        match lane {
            Lane::Ordered => {
                if seq == self.next {
                    self.ready.push_back(msg);
                    self.next += 1;
                    self.advance();
                } else {
                    self.above.insert(seq, Some(msg));
                }
            }
            Lane::Unordered => {
                self.ready.push_back(msg);
                if seq == self.next {
                    self.next += 1;
                    self.advance();
                } else {
                    self.above.insert(seq, None);
                }
            }
        }
        Accept::Accepted((self.ready.len() - before) as u64)
    }

    pub(super) fn drain_ready(&mut self) -> std::collections::vec_deque::Drain<'_, Message> {
        self.ready.drain(..)
    }

    pub(super) fn lane_ack(&self, limit: u64) -> LaneAck {
        let mut sacks: Vec<Sack> = Vec::new();
        for &seq in self.above.keys() {
            match sacks.last_mut() {
                Some(last) if last.end == seq => last.end += 1,
                _ => {
                    if sacks.len() == MAX_SACK_RANGES {
                        break;
                    }
                    sacks.push(Sack {
                        start: seq,
                        end: seq + 1,
                    });
                }
            }
        }
        LaneAck {
            recv_next: self.next,
            limit,
            sacks,
        }
    }
}
