//! Unit tests of the session state machine: inputs through `handle_*`,
//! assertions on what `poll_transmit` (decoded), `poll_event` and
//! `poll_timeout` return. Time is virtual: `base + ms`.

use super::*;
use crate::wire::{Decoder, LaneAck, Sack, Subject};
use bytes::Bytes;

const A_EPOCH: u64 = 0xA;
const B_EPOCH: u64 = 0xB;

/// The timings these tests assert on, spelled out (not taken from
/// `Default`) so that retuning the defaults cannot silently change what the
/// tests check.
fn config() -> SessionConfig {
    SessionConfig {
        recv_window: 1000,
        ack_delay: Duration::from_millis(2),
        ack_every: 256,
        rto_initial: Duration::from_secs(1),
        rto_min: Duration::from_millis(200),
        rto_max: Duration::from_secs(10),
        heartbeat_interval: Duration::from_secs(3),
        idle_timeout: Duration::from_secs(10),
        ..SessionConfig::default()
    }
}

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

/// A publication whose payload is `n`.
fn msg(n: u32) -> Message {
    Message::Publish {
        subject: Subject::literal("t").unwrap(),
        reply_to: None,
        payload: Bytes::copy_from_slice(&n.to_be_bytes()),
    }
}

fn number(m: &Message) -> u32 {
    match m {
        Message::Publish { payload, .. } => u32::from_be_bytes(payload[..4].try_into().unwrap()),
        other => panic!("not one of ours: {other:?}"),
    }
}

fn data(lane: Lane, seq: u64, n: u32) -> Frame {
    Frame::Data(Data {
        lane: Some(lane),
        seq,
        msg: msg(n),
    })
}

fn lane_ack(recv_next: u64, limit: u64, sacks: &[(u64, u64)]) -> LaneAck {
    LaneAck {
        recv_next,
        limit,
        sacks: sacks
            .iter()
            .map(|&(start, end)| Sack { start, end })
            .collect(),
    }
}

fn ack(ordered: LaneAck, unordered: LaneAck) -> Frame {
    Frame::Ack(Ack {
        lanes: [ordered, unordered],
    })
}

/// Everything `poll_transmit` writes at `now`, decoded.
fn transmit(s: &mut Session, now: Instant) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let n = s.poll_transmit(now, &mut buf, 1 << 20);
    let mut dec = Decoder::default();
    let mut frames = Vec::new();
    while let Some(f) = dec.decode(&mut buf).unwrap() {
        frames.push(f);
    }
    assert!(buf.is_empty(), "poll_transmit wrote a partial frame");
    assert_eq!(n, frames.len(), "poll_transmit miscounted its frames");
    frames
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// `(lane, seq, payload number)` of each reliable data frame.
fn data_of(frames: &[Frame]) -> Vec<(Lane, u64, u32)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data(Data {
                lane: Some(l),
                seq,
                msg,
            }) => Some((*l, *seq, number(msg))),
            _ => None,
        })
        .collect()
}

fn acks_of(frames: &[Frame]) -> Vec<Ack> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Ack(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// Payload numbers of the delivered messages, with their lane.
fn delivered(evs: &[Event]) -> Vec<(Option<Lane>, u32)> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Message { lane, msg } => Some((*lane, number(msg))),
            _ => None,
        })
        .collect()
}

/// Expected deliveries: payload numbers `ns`, in this order, on `lane`.
fn on(lane: Lane, ns: &[u32]) -> Vec<(Option<Lane>, u32)> {
    ns.iter().map(|&n| (Some(lane), n)).collect()
}

/// Expected data frames on `lane` whose payload number is their seq.
fn seqs(lane: Lane, seqs: &[u64]) -> Vec<(Lane, u64, u32)> {
    seqs.iter().map(|&s| (lane, s, s as u32)).collect()
}

fn acked(lane: Lane, upto: u64) -> Event {
    Event::Acked { lane, upto }
}

fn feed(s: &mut Session, now: Instant, frames: impl IntoIterator<Item = Frame>) {
    for f in frames {
        s.handle_frame(now, f).unwrap();
    }
}

/// The handshake: each side presents its epoch and resume state, then
/// both resume.
fn link(a: &mut Session, b: &mut Session, now: Instant) {
    let (ea, ra) = (a.epoch(), a.resume_state());
    let (eb, rb) = (b.epoch(), b.resume_state());
    a.handle_link_up(now, eb, rb);
    b.handle_link_up(now, ea, ra);
}

/// A linked pair at `base` whose link-up acks have been exchanged and
/// whose events are drained.
fn pair_with(config: SessionConfig, base: Instant) -> (Session, Session) {
    let mut a = Session::new(config.clone(), A_EPOCH, base);
    let mut b = Session::new(config, B_EPOCH, base);
    link(&mut a, &mut b, base);
    assert_eq!(events(&mut a), [Event::LinkUp { peer_fresh: true }]);
    assert_eq!(events(&mut b), [Event::LinkUp { peer_fresh: true }]);
    let fa = transmit(&mut a, base);
    let fb = transmit(&mut b, base);
    assert_eq!(acks_of(&fa).len(), 1, "a link-up states the window at once");
    assert_eq!(acks_of(&fb).len(), 1, "a link-up states the window at once");
    feed(&mut b, base, fa);
    feed(&mut a, base, fb);
    assert_eq!(events(&mut a), []);
    assert_eq!(events(&mut b), []);
    (a, b)
}

fn pair(base: Instant) -> (Session, Session) {
    pair_with(config(), base)
}

#[test]
fn a_zero_ack_delay_acks_with_the_next_transmit_without_a_timer() {
    let t = Instant::now();
    let (mut a, mut b) = pair_with(
        SessionConfig {
            ack_delay: Duration::ZERO,
            ..config()
        },
        t,
    );
    for n in 1..=2 {
        a.send(Lane::Ordered, msg(n));
    }
    feed(&mut b, at(t, 1), transmit(&mut a, at(t, 1)));
    assert_eq!(delivered(&events(&mut b)), on(Lane::Ordered, &[1, 2]));
    // No timer: the ack is owed, rides on data if any goes back this
    // turn, and otherwise goes alone as soon as the driver flushes it.
    assert!(b.owes_ack());
    assert!(!b.wants_transmit(), "not alone yet: a reply may carry it");
    b.send(Lane::Ordered, msg(9));
    let frames = transmit(&mut b, at(t, 1));
    assert_eq!(acks_of(&frames).len(), 1, "the ack rode on the reply");
    assert_eq!(acks_of(&frames)[0].lanes[0].recv_next, 3);
    assert!(!b.owes_ack());
    // Another batch, nothing sent back: flushed alone.
    a.send(Lane::Ordered, msg(3));
    feed(&mut b, at(t, 2), transmit(&mut a, at(t, 2)));
    assert!(b.owes_ack());
    b.flush_ack();
    assert!(b.wants_transmit());
    let frames = transmit(&mut b, at(t, 2));
    let acks = acks_of(&frames);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].lanes[0].recv_next, 4);
}

#[test]
fn in_order_delivery_with_delayed_ack() {
    let t = Instant::now();
    let (mut a, mut b) = pair(t);
    for n in 1..=3 {
        assert_eq!(a.send(Lane::Ordered, msg(n)), u64::from(n));
    }
    let frames = transmit(&mut a, at(t, 1));
    assert_eq!(data_of(&frames), seqs(Lane::Ordered, &[1, 2, 3]));
    feed(&mut b, at(t, 2), frames);
    assert_eq!(delivered(&events(&mut b)), on(Lane::Ordered, &[1, 2, 3]));
    // The ack waits for ack_delay (2 ms), then goes out on its own.
    assert!(transmit(&mut b, at(t, 2)).is_empty());
    assert_eq!(b.poll_timeout(), Some(at(t, 4)));
    b.handle_timeout(at(t, 4));
    let frames = transmit(&mut b, at(t, 4));
    let acks = acks_of(&frames);
    assert_eq!(frames.len(), 1);
    assert_eq!(acks[0].lanes[0].recv_next, 4);
    assert_eq!(acks[0].lanes[1].recv_next, 1);
    feed(&mut a, at(t, 5), frames);
    assert_eq!(events(&mut a), [acked(Lane::Ordered, 4)]);
    assert_eq!(a.outbox_len(), 0);
    assert_eq!(a.outbox_bytes(), 0);
    assert_eq!(a.stats().sent, 3);
    assert_eq!(b.stats().delivered, 3);
}

#[test]
fn ack_rides_along_with_data() {
    let t = Instant::now();
    let (mut a, mut b) = pair(t);
    a.send(Lane::Ordered, msg(1));
    feed(&mut b, at(t, 1), transmit(&mut a, at(t, 1)));
    events(&mut b);
    // b has an ack pending (not yet due) and data to send: one write.
    b.send(Lane::Unordered, msg(7));
    let frames = transmit(&mut b, at(t, 1));
    assert_eq!(acks_of(&frames).len(), 1);
    assert_eq!(acks_of(&frames)[0].lanes[0].recv_next, 2);
    assert_eq!(data_of(&frames), [(Lane::Unordered, 1, 7)]);
}

#[test]
fn ack_every_acks_at_once() {
    let t = Instant::now();
    let (mut a, mut b) = pair_with(
        SessionConfig {
            ack_every: 3,
            ..config()
        },
        t,
    );
    for n in 1..=3 {
        a.send(Lane::Unordered, msg(n));
    }
    let frames = transmit(&mut a, at(t, 1));
    feed(&mut b, at(t, 1), frames[..2].to_vec());
    assert!(transmit(&mut b, at(t, 1)).is_empty(), "2 < ack_every");
    feed(&mut b, at(t, 1), frames[2..].to_vec());
    let acks = acks_of(&transmit(&mut b, at(t, 1)));
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].lanes[1].recv_next, 4);
}

#[test]
fn duplicate_is_dropped_and_acked_again_at_once() {
    let t = Instant::now();
    let (_, mut b) = pair(t);
    feed(&mut b, at(t, 1), [data(Lane::Ordered, 1, 10)]);
    assert_eq!(delivered(&events(&mut b)), on(Lane::Ordered, &[10]));
    b.handle_timeout(at(t, 3));
    assert_eq!(acks_of(&transmit(&mut b, at(t, 3))).len(), 1);

    // The sender did not get that ack and sends again.
    feed(&mut b, at(t, 50), [data(Lane::Ordered, 1, 10)]);
    assert_eq!(events(&mut b), []);
    assert_eq!(b.stats().duplicates, 1);
    assert_eq!(b.stats().delivered, 1);
    // Re-acked without waiting for ack_delay.
    let acks = acks_of(&transmit(&mut b, at(t, 50)));
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].lanes[0].recv_next, 2);
}

#[test]
fn ordered_lane_buffers_out_of_order_then_delivers_in_order() {
    let t = Instant::now();
    let (_, mut b) = pair(t);
    feed(&mut b, at(t, 1), [data(Lane::Ordered, 3, 30)]);
    feed(&mut b, at(t, 1), [data(Lane::Ordered, 2, 20)]);
    assert_eq!(events(&mut b), [], "nothing before seq 1");
    b.handle_timeout(at(t, 3));
    let acks = acks_of(&transmit(&mut b, at(t, 3)));
    assert_eq!(acks[0].lanes[0], lane_ack(1, 1 + 1000, &[(2, 4)]));

    // A duplicate of a buffered message is still a duplicate.
    feed(&mut b, at(t, 4), [data(Lane::Ordered, 3, 30)]);
    assert_eq!(b.stats().duplicates, 1);

    feed(&mut b, at(t, 5), [data(Lane::Ordered, 1, 10)]);
    assert_eq!(delivered(&events(&mut b)), on(Lane::Ordered, &[10, 20, 30]));
    assert_eq!(b.resume_state()[0].recv_next, 4);
}

#[test]
fn unordered_lane_delivers_on_arrival_exactly_once() {
    let t = Instant::now();
    let (_, mut b) = pair(t);
    for seq in [3, 1, 3, 2, 1] {
        feed(&mut b, at(t, 1), [data(Lane::Unordered, seq, seq as u32)]);
    }
    assert_eq!(delivered(&events(&mut b)), on(Lane::Unordered, &[3, 1, 2]));
    assert_eq!(b.stats().duplicates, 2);
    assert_eq!(b.resume_state()[1].recv_next, 4);
    // The ordered lane is untouched.
    assert_eq!(b.resume_state()[0].recv_next, 1);
}

#[test]
fn cumulative_and_selective_ack_then_rto_resends_only_the_missing() {
    let t = Instant::now();
    let (mut a, _) = pair(t);
    for n in 1..=6 {
        a.send(Lane::Ordered, msg(n));
    }
    assert_eq!(data_of(&transmit(&mut a, t)).len(), 6);
    assert_eq!(a.outbox_len(), 6);

    // 1 and 2 arrived, 3 was lost, 4 arrived, 5 was lost, 6 arrived.
    feed(
        &mut a,
        at(t, 10),
        [ack(
            lane_ack(3, 1003, &[(4, 5), (6, 7)]),
            lane_ack(1, 1001, &[]),
        )],
    );
    assert_eq!(events(&mut a), [acked(Lane::Ordered, 3)]);
    assert_eq!(a.outbox_len(), 4, "3..=6 stay until cumulatively acked");

    // The round trip (10 ms) sets the RTO to its floor, counted from the
    // progress at 10 ms.
    assert_eq!(a.rtt(), Some(Duration::from_millis(10)));
    assert_eq!(a.poll_timeout(), Some(at(t, 210)));
    a.handle_timeout(at(t, 209));
    assert!(transmit(&mut a, at(t, 209)).is_empty());
    a.handle_timeout(at(t, 210));
    let frames = transmit(&mut a, at(t, 210));
    assert_eq!(
        data_of(&frames),
        seqs(Lane::Ordered, &[3, 5]),
        "SACKed 4 and 6 are not sent again"
    );
    assert_eq!(a.stats().timeouts, 1);
    assert_eq!(a.stats().retransmitted, 2);
    // Backed off: twice the RTO, from the retransmission.
    assert_eq!(a.poll_timeout(), Some(at(t, 210 + 400)));

    feed(
        &mut a,
        at(t, 230),
        [ack(lane_ack(7, 1007, &[]), lane_ack(1, 1001, &[]))],
    );
    assert_eq!(events(&mut a), [acked(Lane::Ordered, 7)]);
    assert_eq!(a.outbox_len(), 0);
    // Nothing outstanding: no retransmission timer, only the heartbeat.
    assert_eq!(a.poll_timeout(), Some(at(t, 210 + 3000)));
}

#[test]
fn rto_fires_at_the_initial_timeout_before_any_rtt() {
    let t = Instant::now();
    let (mut a, _) = pair(t);
    a.send(Lane::Unordered, msg(1));
    assert_eq!(
        data_of(&transmit(&mut a, at(t, 5))),
        [(Lane::Unordered, 1, 1)]
    );
    assert_eq!(a.poll_timeout(), Some(at(t, 1005)));
    a.handle_timeout(at(t, 1004));
    assert!(transmit(&mut a, at(t, 1004)).is_empty());
    a.handle_timeout(at(t, 1005));
    assert_eq!(
        data_of(&transmit(&mut a, at(t, 1005))),
        [(Lane::Unordered, 1, 1)]
    );
    assert_eq!(a.stats().retransmitted, 1);
    // Back-off doubles the timeout.
    assert_eq!(a.poll_timeout(), Some(at(t, 1005 + 2000)));
    // An ack of a retransmitted message gives no RTT sample (Karn).
    feed(
        &mut a,
        at(t, 1010),
        [ack(lane_ack(1, 1001, &[]), lane_ack(2, 1002, &[]))],
    );
    assert_eq!(a.rtt(), None);
}

#[test]
fn credit_stops_the_sender_until_the_receiver_acks() {
    let t = Instant::now();
    let mut a = Session::new(config(), A_EPOCH, t);
    let mut b = Session::new(config(), B_EPOCH, t);
    link(&mut a, &mut b, t);
    events(&mut a);
    events(&mut b);
    // The link-up acks are lost: a only has the initial credit.
    transmit(&mut a, t);
    transmit(&mut b, t);

    let total = INITIAL_CREDIT as u32 + 10;
    for n in 1..=total {
        a.send(Lane::Ordered, msg(n));
    }
    let frames = transmit(&mut a, at(t, 1));
    let sent = data_of(&frames);
    assert_eq!(sent.len() as u64, INITIAL_CREDIT);
    assert_eq!(
        sent.last(),
        Some(&(Lane::Ordered, INITIAL_CREDIT, INITIAL_CREDIT as u32))
    );
    assert!(!a.wants_transmit());
    assert!(transmit(&mut a, at(t, 2)).is_empty());

    feed(&mut b, at(t, 3), frames);
    assert_eq!(delivered(&events(&mut b)).len() as u64, INITIAL_CREDIT);
    b.handle_timeout(at(t, 5));
    let acks = transmit(&mut b, at(t, 5));
    assert_eq!(
        acks_of(&acks)[0].lanes[0],
        lane_ack(INITIAL_CREDIT + 1, INITIAL_CREDIT + 1 + 1000, &[])
    );
    feed(&mut a, at(t, 6), acks);
    let rest = data_of(&transmit(&mut a, at(t, 6)));
    assert_eq!(rest.len(), 10);
    assert_eq!(rest[0].1, INITIAL_CREDIT + 1);
}

#[test]
fn frozen_credit_stops_growing_until_thawed() {
    let t = Instant::now();
    let (mut a, mut b) = pair_with(
        SessionConfig {
            recv_window: 100,
            ..config()
        },
        t,
    );
    b.set_credit_frozen(true);
    for n in 1..=150 {
        a.send(Lane::Ordered, msg(n));
    }
    // b granted 1 + 100 at link-up.
    let frames = transmit(&mut a, at(t, 1));
    assert_eq!(data_of(&frames).len(), 100);
    feed(&mut b, at(t, 2), frames);
    assert_eq!(delivered(&events(&mut b)).len(), 100);
    b.handle_timeout(at(t, 4));
    let acks = transmit(&mut b, at(t, 4));
    assert_eq!(
        acks_of(&acks)[0].lanes[0],
        lane_ack(101, 101, &[]),
        "frozen"
    );
    feed(&mut a, at(t, 5), acks);
    assert!(data_of(&transmit(&mut a, at(t, 5))).is_empty());

    // Thawing sends the grown credit at once.
    b.set_credit_frozen(false);
    let acks = transmit(&mut b, at(t, 6));
    assert_eq!(acks_of(&acks)[0].lanes[0], lane_ack(101, 201, &[]));
    feed(&mut a, at(t, 7), acks);
    assert_eq!(data_of(&transmit(&mut a, at(t, 7))).len(), 50);
}

/// Seed 16 of the simulation: the thawed credit update was lost, and with
/// nothing outstanding nothing ever made the receiver repeat it.
#[test]
fn credit_wait_probes_the_peer_so_a_lost_credit_update_is_repeated() {
    let t = Instant::now();
    let (mut a, mut b) = pair_with(
        SessionConfig {
            recv_window: 100,
            ..config()
        },
        t,
    );
    b.set_credit_frozen(true);
    for n in 1..=101 {
        a.send(Lane::Ordered, msg(n));
    }
    let frames = transmit(&mut a, at(t, 1));
    assert_eq!(data_of(&frames).len(), 100);
    feed(&mut b, at(t, 2), frames);
    b.handle_timeout(at(t, 4));
    feed(&mut a, at(t, 5), transmit(&mut b, at(t, 5)));
    assert!(transmit(&mut a, at(t, 5)).is_empty());
    // All acknowledged, one message waits for credit.
    assert_eq!(a.outbox_len(), 1);

    b.set_credit_frozen(false);
    let lost = transmit(&mut b, at(t, 6));
    assert_eq!(acks_of(&lost).len(), 1);

    // a probes one RTO (then the initial 1 s) after it started to wait.
    let probe_at = at(t, 1 + 1000);
    assert_eq!(a.poll_timeout(), Some(probe_at));
    a.handle_timeout(probe_at);
    let probe = transmit(&mut a, probe_at);
    assert!(matches!(probe[..], [Frame::Ping(_)]), "{probe:?}");
    feed(&mut b, probe_at, probe);
    let answer = transmit(&mut b, probe_at);
    assert!(answer.iter().any(|f| matches!(f, Frame::Pong(_))));
    assert_eq!(
        acks_of(&answer)[0].lanes[0].limit,
        201,
        "the pong carries the credit"
    );
    feed(&mut a, probe_at, answer);
    assert_eq!(
        data_of(&transmit(&mut a, probe_at)),
        [(Lane::Ordered, 101, 101)]
    );
}

#[test]
fn resume_after_link_down_resends_exactly_the_unacknowledged() {
    let t = Instant::now();
    let (mut a, mut b) = pair(t);
    for n in 1..=5 {
        a.send(Lane::Ordered, msg(n));
    }
    a.send(Lane::Unordered, msg(100));
    let frames = transmit(&mut a, at(t, 1));
    // 1..=3 arrive, the rest and every ack are lost with the connection.
    feed(&mut b, at(t, 2), frames[..3].to_vec());
    assert_eq!(data_of(&frames[..3]), seqs(Lane::Ordered, &[1, 2, 3]));
    assert_eq!(delivered(&events(&mut b)).len(), 3);
    a.handle_link_down(at(t, 3));
    b.handle_link_down(at(t, 3));
    assert!(!a.is_up() && a.down_since() == Some(at(t, 3)));
    assert_eq!(a.poll_timeout(), None);
    assert!(transmit(&mut a, at(t, 4)).is_empty());

    link(&mut a, &mut b, at(t, 100));
    assert_eq!(
        events(&mut a),
        [acked(Lane::Ordered, 4), Event::LinkUp { peer_fresh: false }]
    );
    assert_eq!(events(&mut b), [Event::LinkUp { peer_fresh: false }]);
    let frames = transmit(&mut a, at(t, 100));
    assert_eq!(
        data_of(&frames),
        [
            (Lane::Ordered, 4, 4),
            (Lane::Ordered, 5, 5),
            (Lane::Unordered, 1, 100)
        ]
    );
    feed(&mut b, at(t, 101), frames);
    assert_eq!(
        delivered(&events(&mut b)),
        [
            (Some(Lane::Ordered), 4),
            (Some(Lane::Ordered), 5),
            (Some(Lane::Unordered), 100)
        ]
    );
    assert_eq!(b.stats().duplicates, 0);
}

#[test]
fn resume_drops_what_the_receiver_already_has() {
    let t = Instant::now();
    let (mut a, mut b) = pair(t);
    for n in 1..=3 {
        a.send(Lane::Ordered, msg(n));
    }
    let frames = transmit(&mut a, at(t, 1));
    // 1 lost, 2 and 3 arrive (buffered); the connection breaks.
    feed(&mut b, at(t, 2), frames[1..].to_vec());
    assert_eq!(events(&mut b), []);
    a.handle_link_down(at(t, 3));
    b.handle_link_down(at(t, 3));
    link(&mut a, &mut b, at(t, 10));
    events(&mut a);
    events(&mut b);
    // SACK state does not survive the connection: all three go again.
    let frames = transmit(&mut a, at(t, 10));
    assert_eq!(data_of(&frames).len(), 3);
    feed(&mut b, at(t, 11), frames);
    assert_eq!(delivered(&events(&mut b)), on(Lane::Ordered, &[1, 2, 3]));
    assert_eq!(b.stats().duplicates, 2);
}

#[test]
fn a_peer_with_a_new_epoch_restarts_the_receive_lanes() {
    let t = Instant::now();
    let (mut a, mut b) = pair(t);
    for n in 1..=3 {
        a.send(Lane::Ordered, msg(n));
    }
    feed(&mut b, at(t, 1), transmit(&mut a, at(t, 1)));
    assert_eq!(delivered(&events(&mut b)).len(), 3);
    b.send(Lane::Unordered, msg(50));
    transmit(&mut b, at(t, 1));
    b.handle_link_down(at(t, 2));

    // a restarted: a new session object, a new epoch, numbering from 1.
    let mut a2 = Session::new(config(), A_EPOCH + 1, at(t, 5));
    link(&mut a2, &mut b, at(t, 10));
    assert_eq!(events(&mut b), [Event::LinkUp { peer_fresh: true }]);
    assert_eq!(b.peer_epoch(), Some(A_EPOCH + 1));
    assert_eq!(events(&mut a2), [Event::LinkUp { peer_fresh: true }]);
    assert_eq!(b.resume_state()[0].recv_next, 1);

    a2.send(Lane::Ordered, msg(1001));
    let frames = transmit(&mut a2, at(t, 11));
    assert_eq!(data_of(&frames), [(Lane::Ordered, 1, 1001)]);
    feed(&mut b, at(t, 12), frames);
    assert_eq!(delivered(&events(&mut b)), on(Lane::Ordered, &[1001]));
    assert_eq!(b.stats().duplicates, 0);

    // b's own unacknowledged message goes to the new peer again.
    let frames = transmit(&mut b, at(t, 12));
    assert_eq!(data_of(&frames), [(Lane::Unordered, 1, 50)]);
}

/// The peer no longer holds 2..5: reported once, and what was buffered
/// beyond the hole is delivered rather than held forever.
#[test]
fn gap_is_reported_when_the_peer_send_base_is_ahead() {
    let t = Instant::now();
    let (mut a, mut b) = pair(t);
    feed(
        &mut b,
        at(t, 1),
        [data(Lane::Ordered, 1, 1), data(Lane::Ordered, 3, 3)],
    );
    assert_eq!(delivered(&events(&mut b)), on(Lane::Ordered, &[1]));
    a.handle_link_down(at(t, 2));
    b.handle_link_down(at(t, 2));

    let lane = |recv_next, send_base| LaneResume {
        recv_next,
        send_base,
    };
    b.handle_link_up(at(t, 10), A_EPOCH, [lane(1, 5), lane(1, 1)]);
    let evs = events(&mut b);
    assert_eq!(
        evs[0],
        Event::Gap {
            lane: Lane::Ordered,
            from: 2,
            to: 5
        }
    );
    assert_eq!(delivered(&evs), on(Lane::Ordered, &[3]));
    assert_eq!(evs.last(), Some(&Event::LinkUp { peer_fresh: false }));
    assert_eq!(b.resume_state()[0].recv_next, 5);

    feed(&mut b, at(t, 11), [data(Lane::Ordered, 5, 5)]);
    assert_eq!(delivered(&events(&mut b)), on(Lane::Ordered, &[5]));
    assert_eq!(b.stats().delivered, 3);
}

#[test]
fn no_gap_when_the_peer_kept_everything() {
    let t = Instant::now();
    let (mut a, mut b) = pair(t);
    a.handle_link_down(at(t, 1));
    b.handle_link_down(at(t, 1));
    link(&mut a, &mut b, at(t, 2));
    assert_eq!(events(&mut b), [Event::LinkUp { peer_fresh: false }]);
}

#[test]
fn heartbeat_ping_then_pong_with_ack() {
    let t = Instant::now();
    let (mut a, mut b) = pair(t);
    // Nothing sent since the link-up ack at t.
    assert_eq!(a.poll_timeout(), Some(at(t, 3000)));
    a.handle_timeout(at(t, 2999));
    assert!(transmit(&mut a, at(t, 2999)).is_empty());
    a.handle_timeout(at(t, 3000));
    let frames = transmit(&mut a, at(t, 3000));
    assert!(matches!(frames[..], [Frame::Ping(_)]), "{frames:?}");
    let Frame::Ping(nonce) = frames[0] else {
        unreachable!()
    };
    assert_eq!(a.poll_timeout(), Some(at(t, 6000)));

    feed(&mut b, at(t, 3001), frames);
    let answer = transmit(&mut b, at(t, 3001));
    assert_eq!(answer[0], Frame::Pong(nonce));
    assert_eq!(acks_of(&answer).len(), 1);
    feed(&mut a, at(t, 3002), answer);
    // Hearing from b pushed a's idle deadline back.
    a.handle_timeout(at(t, 10_000));
    assert!(a.is_up());
}

#[test]
fn silence_past_the_idle_timeout_takes_the_link_down_once() {
    let t = Instant::now();
    let (mut a, _) = pair(t);
    a.send(Lane::Ordered, msg(1));
    for ms in [0, 3000, 6000, 9000] {
        // Pings and retransmissions go out, nothing comes back.
        a.handle_timeout(at(t, ms));
        transmit(&mut a, at(t, ms));
    }
    assert!(a.is_up());
    assert_eq!(a.poll_timeout(), Some(at(t, 10_000)));
    a.handle_timeout(at(t, 10_000));
    // Down at once, whatever the driver does next (its socket may be backed
    // up by the dead peer, so nothing waits for a write), reported once.
    assert!(!a.is_up());
    assert_eq!(a.down_since(), Some(at(t, 10_000)));
    assert_eq!(a.poll_timeout(), None);
    let evs = events(&mut a);
    assert!(
        matches!(
            evs[..],
            [Event::LinkDown {
                code: CloseCode::IdleTimeout,
                ..
            }]
        ),
        "exactly one LinkDown: {evs:?}"
    );
    assert!(transmit(&mut a, at(t, 10_000)).is_empty());
    a.handle_timeout(at(t, 20_000));
    assert_eq!(events(&mut a), []);
    // The message survives for the next link.
    assert_eq!(a.outbox_len(), 1);
}

#[test]
fn close_is_sent_last_and_the_peer_goes_down_too() {
    let t = Instant::now();
    let (mut a, mut b) = pair(t);
    a.send(Lane::Ordered, msg(1));
    a.close(CloseCode::Shutdown, "bye");
    let frames = transmit(&mut a, at(t, 1));
    assert_eq!(data_of(&frames).len(), 1);
    assert_eq!(
        frames.last(),
        Some(&Frame::Close(Close {
            code: CloseCode::Shutdown,
            reason: "bye".into()
        }))
    );
    assert_eq!(
        events(&mut a),
        [Event::LinkDown {
            code: CloseCode::Shutdown,
            reason: "bye".into()
        }]
    );
    assert!(!a.is_up());
    feed(&mut b, at(t, 2), frames);
    let evs = events(&mut b);
    assert_eq!(delivered(&evs), on(Lane::Ordered, &[1]));
    assert_eq!(
        evs.last(),
        Some(&Event::LinkDown {
            code: CloseCode::Shutdown,
            reason: "bye".into()
        })
    );
    assert!(!b.is_up());
    assert_eq!(
        b.handle_frame(at(t, 3), Frame::Ping(1)),
        Err(SessionError::LinkDown)
    );
}

#[test]
fn ack_beyond_what_was_sent_is_a_protocol_error() {
    let t = Instant::now();
    let (mut a, _) = pair(t);
    a.send(Lane::Unordered, msg(1));
    a.send(Lane::Unordered, msg(2));
    transmit(&mut a, at(t, 1));
    let err = a
        .handle_frame(
            at(t, 2),
            ack(lane_ack(1, 1001, &[]), lane_ack(5, 1005, &[])),
        )
        .unwrap_err();
    assert_eq!(
        err,
        SessionError::AckBeyondSent {
            lane: Lane::Unordered,
            upto: 5,
            sent: 3
        }
    );
    // Acknowledging exactly what was sent is fine.
    a.handle_frame(
        at(t, 3),
        ack(lane_ack(1, 1001, &[]), lane_ack(3, 1003, &[])),
    )
    .unwrap();
    assert_eq!(a.outbox_len(), 0);
}

#[test]
fn handshake_frames_after_link_up_are_errors() {
    let t = Instant::now();
    let (mut a, _) = pair(t);
    let resume = a.resume();
    assert_eq!(
        a.handle_frame(at(t, 1), Frame::Resume(resume)),
        Err(SessionError::Unexpected("Resume"))
    );
}

#[test]
fn best_effort_is_sent_once_and_dropped_while_down() {
    let t = Instant::now();
    let mut a = Session::new(config(), A_EPOCH, t);
    let mut b = Session::new(config(), B_EPOCH, t);
    assert!(!a.send_best_effort(msg(1)), "no link yet");
    assert_eq!(a.stats().best_effort_dropped, 1);

    link(&mut a, &mut b, t);
    assert!(a.send_best_effort(msg(2)));
    let frames = transmit(&mut a, at(t, 1));
    feed(&mut b, at(t, 2), frames);
    assert_eq!(delivered(&events(&mut b)), [(None, 2)]);
    assert!(transmit(&mut a, at(t, 3)).is_empty(), "never retransmitted");

    // Queued but not written when the link drops: dropped and counted.
    assert!(a.send_best_effort(msg(3)));
    a.handle_link_down(at(t, 4));
    assert_eq!(a.stats().best_effort_dropped, 2);
    link(&mut a, &mut b, at(t, 5));
    let frames = transmit(&mut a, at(t, 5));
    assert!(!frames.iter().any(|f| matches!(f, Frame::Data(_))));
}

#[test]
fn best_effort_queue_drops_the_oldest_when_full() {
    let t = Instant::now();
    let (mut a, mut b) = pair_with(
        SessionConfig {
            best_effort_queue: 2,
            ..config()
        },
        t,
    );
    for n in 1..=3 {
        assert!(a.send_best_effort(msg(n)));
    }
    assert_eq!(a.stats().best_effort_dropped, 1);
    feed(&mut b, at(t, 1), transmit(&mut a, at(t, 1)));
    assert_eq!(delivered(&events(&mut b)), [(None, 2), (None, 3)]);
}

#[test]
fn backpressure_follows_the_outbox_limit() {
    let t = Instant::now();
    let (mut a, _) = pair_with(
        SessionConfig {
            outbox_max_messages: 2,
            ..config()
        },
        t,
    );
    assert!(a.can_send(Lane::Ordered));
    a.send(Lane::Ordered, msg(1));
    a.send(Lane::Ordered, msg(2));
    assert!(!a.can_send(Lane::Ordered));
    assert!(a.can_send(Lane::Unordered), "per lane");
    transmit(&mut a, at(t, 1));
    a.handle_frame(
        at(t, 2),
        ack(lane_ack(2, 1002, &[]), lane_ack(1, 1001, &[])),
    )
    .unwrap();
    assert!(a.can_send(Lane::Ordered));
}

#[test]
fn over_credit_arrivals_are_dropped_unacknowledged() {
    let t = Instant::now();
    let (_, mut b) = pair_with(
        SessionConfig {
            recv_window: 100,
            ..config()
        },
        t,
    );
    feed(&mut b, at(t, 1), [data(Lane::Unordered, 101, 1)]);
    assert_eq!(events(&mut b), []);
    assert_eq!(b.stats().over_credit, 1);
    assert!(transmit(&mut b, at(t, 1)).is_empty());
    feed(&mut b, at(t, 1), [data(Lane::Unordered, 100, 2)]);
    assert_eq!(delivered(&events(&mut b)), on(Lane::Unordered, &[2]));
}

#[test]
fn queued_bytes_count_the_outbox_and_unsent_best_effort() {
    let base = Instant::now();
    let (mut a, mut b) = pair(base);
    // Every payload of `msg` is 4 bytes.
    a.send(Lane::Ordered, msg(1));
    a.send(Lane::Unordered, msg(2));
    assert!(a.send_best_effort(msg(3)));
    assert_eq!(a.queued_bytes(), 12);
    // Best effort leaves the queue when written; reliable stays until acked.
    let frames = transmit(&mut a, at(base, 1));
    assert_eq!(a.queued_bytes(), 8);
    feed(&mut b, at(base, 1), frames);
    let acks = transmit(&mut b, at(base, 10));
    feed(&mut a, at(base, 10), acks);
    assert_eq!(a.queued_bytes(), 0);
    // A full best-effort queue drops its oldest: the count follows.
    let mut small = pair_with(
        SessionConfig {
            best_effort_queue: 2,
            ..config()
        },
        base,
    )
    .0;
    for n in 0..5 {
        small.send_best_effort(msg(n));
    }
    assert_eq!(small.queued_bytes(), 8);
    small.handle_link_down(at(base, 20));
    assert_eq!(small.queued_bytes(), 0, "dropped with the link");
}
