//! The applications' books: what each side published, what the other side
//! received, what was acknowledged. Every invariant of the simulation is
//! checked here, at the moment the event that could break it happens, so a
//! failure names the first message that went wrong.

use bytes::{BufMut, Bytes, BytesMut};
use meshwire_proto::wire::Lane;

/// How a message was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Reliable, ordered lane.
    Ordered,
    /// Reliable, unordered lane.
    Unordered,
    /// Best effort (no lane, at most once).
    BestEffort,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Ordered => 0,
            Kind::Unordered => 1,
            Kind::BestEffort => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(Kind::Ordered),
            1 => Some(Kind::Unordered),
            2 => Some(Kind::BestEffort),
            _ => None,
        }
    }

    pub(crate) fn lane(self) -> Option<Lane> {
        match self {
            Kind::Ordered => Some(Lane::Ordered),
            Kind::Unordered => Some(Lane::Unordered),
            Kind::BestEffort => None,
        }
    }
}

/// The payload names its publisher, its kind and its per-publisher
/// sequence number, then `padding` filler bytes.
pub(crate) fn payload(sender: usize, kind: Kind, app_seq: u32, padding: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(6 + padding);
    b.put_u8(sender as u8);
    b.put_u8(kind.code());
    b.put_u32(app_seq);
    b.put_bytes(0xA5, padding);
    b.freeze()
}

fn parse(payload: &[u8]) -> Option<(usize, Kind, u32)> {
    if payload.len() < 6 {
        return None;
    }
    let kind = Kind::from_code(payload[1])?;
    let app_seq = u32::from_be_bytes([payload[2], payload[3], payload[4], payload[5]]);
    Some((usize::from(payload[0]), kind, app_seq))
}

/// One side's books.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// Kind of every message this side published, by app sequence number.
    kinds: Vec<Kind>,
    /// App sequence number of each reliable message, per lane, by session
    /// sequence number - 1 (sessions never restart in the simulation, so
    /// lane sequence numbers are dense from 1).
    by_seq: [Vec<u32>; 2],
    /// Highest `Acked { upto }` seen per lane.
    acked_upto: [u64; 2],
    /// How often each message of the *other* side arrived here.
    received: Vec<u8>,
    /// Ordered messages of the other side delivered here so far.
    ordered_delivered: usize,
}

/// What both ledgers add up to.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    pub(crate) reliable_sent: u64,
    pub(crate) reliable_acked: u64,
    pub(crate) reliable_delivered: u64,
    pub(crate) best_effort_sent: u64,
    pub(crate) best_effort_delivered: u64,
}

/// Both sides' books.
#[derive(Debug, Default)]
pub(crate) struct Books {
    pub(crate) sides: [Ledger; 2],
}

impl Books {
    /// Side `s` published message `app_seq` (the next one) of `kind`; for
    /// reliable kinds the session numbered it `seq`.
    pub(crate) fn published(
        &mut self,
        s: usize,
        kind: Kind,
        seq: Option<u64>,
    ) -> Result<(), String> {
        let l = &mut self.sides[s];
        l.kinds.push(kind);
        let app_seq = (l.kinds.len() - 1) as u32;
        if let Some(lane) = kind.lane() {
            let v = &mut l.by_seq[lane.index()];
            let expected = v.len() as u64 + 1;
            if seq != Some(expected) {
                return Err(format!(
                    "side {s}: send on {lane:?} returned seq {seq:?}, expected {expected}"
                ));
            }
            v.push(app_seq);
        }
        Ok(())
    }

    /// Next app sequence number of side `s`.
    pub(crate) fn next_app_seq(&self, s: usize) -> u32 {
        self.sides[s].kinds.len() as u32
    }

    /// Side `r` delivered a message to its application.
    pub(crate) fn delivered(
        &mut self,
        r: usize,
        lane: Option<Lane>,
        payload: &[u8],
    ) -> Result<(), String> {
        let Some((sender, kind, app_seq)) = parse(payload) else {
            return Err(format!(
                "side {r}: delivered a payload that is not ours: {payload:02x?}"
            ));
        };
        if sender != 1 - r {
            return Err(format!("side {r}: delivered its own message #{app_seq}"));
        }
        let published = self.sides[sender].kinds.get(app_seq as usize).copied();
        if published != Some(kind) {
            return Err(format!(
                "side {r}: delivered #{app_seq} as {kind:?}, published as {published:?}"
            ));
        }
        if kind.lane() != lane {
            return Err(format!(
                "side {r}: delivered #{app_seq} ({kind:?}) on lane {lane:?}"
            ));
        }
        let [a, b] = &mut self.sides;
        let (me, them) = if r == 0 { (a, &*b) } else { (b, &*a) };
        let ordered = &them.by_seq[Lane::Ordered.index()];
        if me.received.len() <= app_seq as usize {
            me.received.resize(app_seq as usize + 1, 0);
        }
        me.received[app_seq as usize] += 1;
        if me.received[app_seq as usize] > 1 {
            return Err(format!(
                "side {r}: message #{app_seq} ({kind:?}) from side {sender} delivered twice"
            ));
        }
        if kind == Kind::Ordered {
            let expected = ordered.get(me.ordered_delivered).copied();
            if expected != Some(app_seq) {
                return Err(format!(
                    "side {r}: ordered lane delivered #{app_seq} where #{expected:?} was next in send order"
                ));
            }
            me.ordered_delivered += 1;
        }
        Ok(())
    }

    /// Side `s` saw `Acked { lane, upto }`: everything newly covered must
    /// already have been delivered on the other side.
    pub(crate) fn acked(&mut self, s: usize, lane: Lane, upto: u64) -> Result<(), String> {
        let i = lane.index();
        let prev = self.sides[s].acked_upto[i].max(1);
        let sent = self.sides[s].by_seq[i].len() as u64;
        if upto < prev {
            return Err(format!(
                "side {s}: Acked {lane:?} upto {upto} went back from {prev}"
            ));
        }
        if upto > sent + 1 {
            return Err(format!(
                "side {s}: Acked {lane:?} upto {upto} but only {sent} messages were sent"
            ));
        }
        for seq in prev..upto {
            let app_seq = self.sides[s].by_seq[i][(seq - 1) as usize];
            let got = self.sides[1 - s]
                .received
                .get(app_seq as usize)
                .copied()
                .unwrap_or(0);
            if got != 1 {
                return Err(format!(
                    "side {s}: {lane:?} seq {seq} (#{app_seq}) acknowledged but delivered {got} times on side {}",
                    1 - s
                ));
            }
        }
        self.sides[s].acked_upto[i] = upto;
        Ok(())
    }

    /// True when every reliable message of both sides is acknowledged.
    pub(crate) fn all_acked(&self) -> bool {
        self.sides.iter().all(|l| {
            Lane::ALL.iter().all(|lane| {
                l.acked_upto[lane.index()].max(1) == l.by_seq[lane.index()].len() as u64 + 1
            })
        })
    }

    /// The end-of-run check: every reliable message delivered exactly once,
    /// the ordered lane complete.
    pub(crate) fn check_complete(&self) -> Result<(), String> {
        for s in 0..2 {
            let other = &self.sides[1 - s];
            for (app_seq, kind) in self.sides[s].kinds.iter().enumerate() {
                let got = other.received.get(app_seq).copied().unwrap_or(0);
                if *kind != Kind::BestEffort && got != 1 {
                    return Err(format!(
                        "side {s}: message #{app_seq} ({kind:?}) delivered {got} times at the end"
                    ));
                }
            }
            let ordered = self.sides[s].by_seq[Lane::Ordered.index()].len();
            if other.ordered_delivered != ordered {
                return Err(format!(
                    "side {s}: {ordered} ordered messages sent, {} delivered",
                    other.ordered_delivered
                ));
            }
        }
        Ok(())
    }

    /// Totals over both sides.
    pub(crate) fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for s in 0..2 {
            let l = &self.sides[s];
            let other = &self.sides[1 - s];
            for (app_seq, kind) in l.kinds.iter().enumerate() {
                let got = u64::from(other.received.get(app_seq).copied().unwrap_or(0));
                if *kind == Kind::BestEffort {
                    t.best_effort_sent += 1;
                    t.best_effort_delivered += got;
                } else {
                    t.reliable_sent += 1;
                    t.reliable_delivered += got;
                }
            }
            t.reliable_acked += l.acked_upto.iter().map(|u| u.max(&1) - 1).sum::<u64>();
        }
        t
    }
}
