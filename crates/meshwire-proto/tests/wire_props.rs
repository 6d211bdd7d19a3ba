//! Property tests for the wire codec (DESIGN.md §6): every valid frame
//! survives encode → decode unchanged, streams of frames split anywhere
//! decode in order, and no byte string makes the decoder panic or allocate
//! what a hostile length prefix announces.

use bytes::{BufMut, Bytes, BytesMut};
use meshwire_proto::wire::{
    encode_data, Ack, Close, CloseCode, Data, DecodeError, Decoder, Frame, Grants, Hello, Lane,
    LaneAck, LaneResume, Limits, Message, NodeId, OpRules, Operation, Resume, Role, Sack, Subject,
    Welcome, MAGIC, MAX_SACK_RANGES,
};
use proptest::prelude::*;

/// The longest close reason `Frame::encode` writes unchanged.
const MAX_REASON: usize = 1024;

// ---------------------------------------------------------------------------
// Strategies: valid values for every field of every frame.
// ---------------------------------------------------------------------------

/// Cuts `s` to at most `max` bytes on a char boundary.
fn truncate_utf8(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// `c` repeated, then padded with ASCII, to exactly `len` bytes.
fn exactly(c: char, len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() + c.len_utf8() <= len {
        s.push(c);
    }
    while s.len() < len {
        s.push('x');
    }
    s
}

/// Non-empty UTF-8 text of at most `max` bytes: mostly short subject-like
/// ASCII, sometimes arbitrary unicode, sometimes long, sometimes exactly
/// `max` bytes.
fn text(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        6 => "[a-z0-9_*>-]{1,12}(\\.[a-z0-9_*>-]{1,12}){0,4}",
        3 => prop::collection::vec(any::<char>(), 1..24)
            .prop_map(move |cs| truncate_utf8(cs.into_iter().collect(), max)),
        1 => prop::collection::vec(any::<char>(), 1..400)
            .prop_map(move |cs| truncate_utf8(cs.into_iter().collect(), max)),
        1 => any::<char>().prop_map(move |c| exactly(c, max)),
    ]
    .prop_filter("non-empty", |s| !s.is_empty())
    .boxed()
}

fn subject() -> BoxedStrategy<Subject> {
    text(Subject::DEFAULT_MAX_LEN)
        .prop_map(|s| Subject::from_bytes(Bytes::from(s)).expect("strategy yields non-empty UTF-8"))
        .boxed()
}

fn opt_subject() -> BoxedStrategy<Option<Subject>> {
    prop::option::of(subject()).boxed()
}

fn node_id() -> BoxedStrategy<NodeId> {
    any::<[u8; 16]>().prop_map(NodeId::from_bytes).boxed()
}

fn role() -> BoxedStrategy<Role> {
    prop_oneof![Just(Role::Client), Just(Role::Router)].boxed()
}

/// Any u64, with the edges over-represented.
fn u64_edgy() -> BoxedStrategy<u64> {
    prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(u64::MAX),
        0u64..1000,
        u64::MAX - 1000..=u64::MAX,
        any::<u64>(),
    ]
    .boxed()
}

/// A sequence number: at least 1.
fn seq() -> BoxedStrategy<u64> {
    u64_edgy().prop_map(|v| v.max(1)).boxed()
}

fn lane_resume() -> BoxedStrategy<LaneResume> {
    (seq(), seq())
        .prop_map(|(recv_next, send_base)| LaneResume {
            recv_next,
            send_base,
        })
        .boxed()
}

fn payload() -> BoxedStrategy<Bytes> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 0..8192),
    ]
    .prop_map(Bytes::from)
    .boxed()
}

/// Ack state of one lane with valid sack ranges: ascending, non-empty,
/// disjoint (with a gap: adjacent ranges would be one range) and strictly
/// above `recv_next`, at most [`MAX_SACK_RANGES`].
fn lane_ack() -> BoxedStrategy<LaneAck> {
    let step = || prop_oneof![4 => 1u64..8, 1 => 1u64..1_000_000, 1 => 1u64..=u64::MAX];
    (
        u64_edgy(),
        u64_edgy(),
        prop::collection::vec((step(), step()), 0..=MAX_SACK_RANGES),
    )
        .prop_map(|(recv_next, limit, steps)| {
            let mut sacks = Vec::new();
            let mut floor = recv_next;
            for (gap, len) in steps {
                let Some(start) = floor.checked_add(gap) else {
                    break;
                };
                let Some(end) = start.checked_add(len) else {
                    break;
                };
                sacks.push(Sack { start, end });
                floor = end;
            }
            LaneAck {
                recv_next,
                limit,
                sacks,
            }
        })
        .boxed()
}

/// Close codes that round-trip: the named ones, and `Other(c)` for codes
/// with no name (`Other(0..=8)` would decode as the named variant).
fn close_code() -> BoxedStrategy<CloseCode> {
    prop_oneof![
        Just(CloseCode::Normal),
        Just(CloseCode::ProtocolError),
        Just(CloseCode::VersionMismatch),
        Just(CloseCode::IdleTimeout),
        Just(CloseCode::HandshakeTimeout),
        Just(CloseCode::SlowConsumer),
        Just(CloseCode::Duplicate),
        Just(CloseCode::Shutdown),
        Just(CloseCode::Refused),
        (9u16..=u16::MAX).prop_map(CloseCode::Other),
    ]
    .boxed()
}

fn close_reason() -> BoxedStrategy<String> {
    prop_oneof![Just(String::new()), text(MAX_REASON),].boxed()
}

fn message() -> BoxedStrategy<Message> {
    prop_oneof![
        (subject(), opt_subject(), payload()).prop_map(|(subject, reply_to, payload)| {
            Message::Publish {
                subject,
                reply_to,
                payload,
            }
        }),
        (
            subject(),
            opt_subject(),
            payload(),
            any::<bool>(),
            prop::collection::vec(subject(), 0..6),
        )
            .prop_map(
                |(subject, reply_to, payload, plain, groups)| Message::Forward {
                    subject,
                    reply_to,
                    payload,
                    plain,
                    groups,
                }
            ),
        (u64_edgy(), subject(), opt_subject(), payload()).prop_map(
            |(sid, subject, reply_to, payload)| Message::Deliver {
                sid,
                subject,
                reply_to,
                payload,
            }
        ),
        (u64_edgy(), subject(), opt_subject()).prop_map(|(sid, pattern, group)| {
            Message::Subscribe {
                sid,
                pattern,
                group,
            }
        }),
        u64_edgy().prop_map(|sid| Message::Unsubscribe { sid }),
        (subject(), opt_subject(), any::<bool>()).prop_map(|(pattern, group, add)| {
            Message::Interest {
                pattern,
                group,
                add,
            }
        }),
        prop::collection::vec((node_id(), subject()), 0..6)
            .prop_map(|routers| Message::Peers { routers }),
        subject().prop_map(|reply_to| Message::NoResponders { reply_to }),
        prop::option::of(grants().prop_map(Box::new)).prop_map(|rules| Message::Grants { rules }),
        (
            operation(),
            subject(),
            prop::option::of(u64_edgy()),
            opt_subject()
        )
            .prop_map(|(op, subject, sid, reply_to)| Message::Denied {
                op,
                subject,
                sid,
                reply_to,
            }),
    ]
    .boxed()
}

fn operation() -> BoxedStrategy<Operation> {
    prop::sample::select(Operation::ALL.to_vec()).boxed()
}

fn grants() -> BoxedStrategy<Grants> {
    let list = || prop::collection::vec(subject(), 0..4);
    prop::collection::vec((list(), list()), 4)
        .prop_map(|rules| {
            let mut g = Grants::default();
            for (slot, (allow, deny)) in g.ops.iter_mut().zip(rules) {
                *slot = OpRules { allow, deny };
            }
            g
        })
        .boxed()
}

fn data() -> BoxedStrategy<Data> {
    prop_oneof![
        (seq(), message()).prop_map(|(seq, msg)| Data {
            lane: Some(Lane::Ordered),
            seq,
            msg,
        }),
        (seq(), message()).prop_map(|(seq, msg)| Data {
            lane: Some(Lane::Unordered),
            seq,
            msg,
        }),
        // Best effort carries no sequence number: 0 on both sides.
        message().prop_map(|msg| Data {
            lane: None,
            seq: 0,
            msg,
        }),
    ]
    .boxed()
}

fn hello() -> BoxedStrategy<Hello> {
    (
        any::<u16>(),
        any::<u16>(),
        node_id(),
        role(),
        opt_subject(),
        opt_subject(),
        any::<u32>(),
    )
        .prop_map(
            |(min_version, max_version, node, role, session, listen, max_frame)| Hello {
                min_version,
                max_version,
                node,
                role,
                session,
                listen,
                max_frame,
            },
        )
        .boxed()
}

fn resume() -> BoxedStrategy<Resume> {
    (u64_edgy(), [lane_resume(), lane_resume()])
        .prop_map(|(epoch, lanes)| Resume { epoch, lanes })
        .boxed()
}

fn welcome() -> BoxedStrategy<Welcome> {
    (
        any::<u16>(),
        node_id(),
        role(),
        opt_subject(),
        any::<u32>(),
        resume(),
    )
        .prop_map(|(version, node, role, listen, max_frame, resume)| Welcome {
            version,
            node,
            role,
            listen,
            max_frame,
            resume,
        })
        .boxed()
}

/// Every frame type, with valid field values.
fn frame() -> BoxedStrategy<Frame> {
    prop_oneof![
        1 => hello().prop_map(Frame::Hello),
        1 => welcome().prop_map(Frame::Welcome),
        1 => resume().prop_map(Frame::Resume),
        4 => data().prop_map(Frame::Data),
        1 => [lane_ack(), lane_ack()].prop_map(|lanes| Frame::Ack(Ack { lanes })),
        1 => u64_edgy().prop_map(Frame::Ping),
        1 => u64_edgy().prop_map(Frame::Pong),
        1 => (close_code(), close_reason())
            .prop_map(|(code, reason)| Frame::Close(Close { code, reason })),
    ]
    .boxed()
}

/// Default case count (overridable with `PROPTEST_CASES`); a failing case
/// is shrunk, printed, and saved beside this file in
/// `wire_props.proptest-regressions` so that it is replayed first next time
/// (commit that file: it is how a found bug becomes a regression test).
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(
            prop::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

/// The encoding of `frame`, header included.
fn encoded(frame: &Frame) -> BytesMut {
    let mut b = BytesMut::new();
    frame.encode(&mut b);
    b
}

/// A decoder with limits small enough that ordinary frames trip them.
fn small_limits() -> Limits {
    Limits {
        max_frame: 64,
        max_subject: 8,
    }
}

/// Decodes frames off `buf` until it needs more bytes or fails, checking on
/// the way that each decoded frame consumed bytes, that `Ok(None)` leaves
/// the buffer as it was, and that every decoded frame re-encodes to bytes
/// that decode to it again.
fn drain(dec: &mut Decoder, buf: &mut BytesMut) -> (Vec<Frame>, Option<DecodeError>) {
    let mut frames = Vec::new();
    loop {
        let before = buf.clone();
        match dec.decode(buf) {
            Ok(Some(f)) => {
                assert!(
                    buf.len() + 5 <= before.len(),
                    "a decoded frame consumed fewer than 5 bytes"
                );
                let consumed = &before[..before.len() - buf.len()];
                let mut again = encoded(&canonical(&f));
                assert_eq!(
                    Decoder::new(dec.limits()).decode(&mut again),
                    Ok(Some(canonical(&f))),
                    "re-encoding a decoded frame changed it (frame bytes {consumed:02x?})"
                );
                assert!(again.is_empty());
                frames.push(f);
            }
            Ok(None) => {
                assert_eq!(&buf[..], &before[..], "Ok(None) changed the buffer");
                return (frames, None);
            }
            Err(e) => {
                // The error renders (Display must not panic either).
                let _ = e.to_string();
                return (frames, Some(e));
            }
        }
    }
}

/// `f` as it survives one more encode: the encoder writes at most
/// [`MAX_REASON`] bytes of a close reason, but the decoder accepts longer
/// ones (up to 64 KiB), so a long reason decoded from a peer is cut on
/// re-encoding (by design: docs/PROTOCOL.md §3.7, "truncation on encode
/// only"). Every other field round-trips exactly.
fn canonical(f: &Frame) -> Frame {
    match f {
        Frame::Close(c) if c.reason.len() > MAX_REASON => Frame::Close(Close {
            code: c.code,
            reason: truncate_utf8(c.reason.clone(), MAX_REASON),
        }),
        other => other.clone(),
    }
}

/// One way to damage a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip bit `bit` of the byte at `at` (modulo the length).
    Flip { at: usize, bit: u8 },
    /// Keep only the first `len` bytes (modulo the length + 1).
    Truncate { len: usize },
    /// Insert `bytes` at `at` (modulo the length + 1).
    Insert { at: usize, bytes: Vec<u8> },
    /// Overwrite the byte at `at` with `value`.
    Set { at: usize, value: u8 },
}

fn mutation() -> BoxedStrategy<Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::Set { at, value }),
    ]
    .boxed()
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip { at, bit } if !bytes.is_empty() => {
            let i = at % bytes.len();
            bytes[i] ^= 1 << bit;
        }
        Mutation::Set { at, value } if !bytes.is_empty() => {
            let i = at % bytes.len();
            bytes[i] = *value;
        }
        Mutation::Truncate { len } => bytes.truncate(len % (bytes.len() + 1)),
        Mutation::Insert { at, bytes: ins } => {
            let i = at % (bytes.len() + 1);
            bytes.splice(i..i, ins.iter().copied());
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// (a) encode → decode is the identity and consumes exactly the frame.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn encode_then_decode_is_identity(
        f in frame(),
        tail in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut buf = encoded(&f);
        let len = buf.len();
        prop_assert_eq!(&buf[..], &f.to_bytes()[..], "encode and to_bytes disagree");
        if let Frame::Data(d) = &f {
            let mut b = BytesMut::new();
            encode_data(&mut b, d.lane, d.seq, &d.msg);
            prop_assert_eq!(&buf[..], &b[..], "encode_data and Frame::encode disagree");
        }
        prop_assert_eq!(
            u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize,
            len - 4,
            "length prefix does not count the rest of the frame"
        );
        // Whatever follows the frame stays in the buffer untouched.
        buf.put_slice(&tail);
        let got = Decoder::new(Limits::default()).decode(&mut buf);
        prop_assert_eq!(got, Ok(Some(f)));
        prop_assert_eq!(&buf[..], &tail[..]);
    }

    /// Every strict prefix of an encoding is "need more bytes", leaves the
    /// buffer alone, and the frame decodes once the rest arrives.
    #[test]
    fn short_buffer_loses_nothing(f in frame(), cut in any::<prop::sample::Index>()) {
        let full = encoded(&f);
        let cut = cut.index(full.len());
        let mut buf = BytesMut::from(&full[..cut]);
        let mut dec = Decoder::new(Limits::default());
        prop_assert_eq!(dec.decode(&mut buf), Ok(None));
        prop_assert_eq!(&buf[..], &full[..cut]);
        buf.put_slice(&full[cut..]);
        prop_assert_eq!(dec.decode(&mut buf), Ok(Some(f)));
        prop_assert!(buf.is_empty());
    }
}

// ---------------------------------------------------------------------------
// (b) many frames back to back, whole or in arbitrary chunks.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn back_to_back_frames_decode_in_order(
        frames in prop::collection::vec(frame(), 1..12),
        chunks in prop::collection::vec(
            prop_oneof![3 => 1usize..8, 2 => 1usize..256, 1 => 1usize..20_000],
            1..32,
        ),
    ) {
        let mut all = BytesMut::new();
        for f in &frames {
            f.encode(&mut all);
        }

        // All at once.
        let mut buf = all.clone();
        let mut dec = Decoder::new(Limits::default());
        let (got, err) = drain(&mut dec, &mut buf);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&got, &frames);
        prop_assert!(buf.is_empty());

        // Streaming: fed in chunks whose sizes cycle through `chunks`,
        // decoding as far as possible after every chunk.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut pos = 0;
        for size in chunks.iter().cycle() {
            if pos == all.len() {
                break;
            }
            let end = (pos + size).min(all.len());
            buf.put_slice(&all[pos..end]);
            pos = end;
            let (mut fs, err) = drain(&mut dec, &mut buf);
            prop_assert_eq!(err, None);
            got.append(&mut fs);
        }
        prop_assert_eq!(&got, &frames);
        prop_assert!(buf.is_empty());
    }
}

// ---------------------------------------------------------------------------
// (c) any bytes: frames or a typed error, never a panic.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        for limits in [Limits::default(), small_limits()] {
            let mut buf = BytesMut::from(&bytes[..]);
            drain(&mut Decoder::new(limits), &mut buf);
        }
    }

    /// Random bytes rarely get past the length and type checks; a plausible
    /// header in front makes the decoder walk into the frame bodies.
    #[test]
    fn arbitrary_bodies_never_panic(
        ty in prop::sample::select(vec![
            0x01u8, 0x02, 0x03, 0x10, 0x11, 0x12, 0x20, 0x21, 0x22, 0x23, 0x00, 0xff,
        ]),
        magic in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut b = BytesMut::new();
        let magic_len = if magic { MAGIC.len() } else { 0 };
        b.put_u32((1 + magic_len + body.len()) as u32);
        b.put_u8(ty);
        if magic {
            b.put_slice(&MAGIC);
        }
        b.put_slice(&body);
        for limits in [Limits::default(), small_limits()] {
            let mut buf = b.clone();
            let (frames, err) = drain(&mut Decoder::new(limits), &mut buf);
            // The header is whole, so the decoder cannot ask for more.
            prop_assert_eq!(frames.len() + usize::from(err.is_some()), 1);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        frames in prop::collection::vec(frame(), 1..4),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut bytes = Vec::new();
        for f in &frames {
            bytes.extend_from_slice(&encoded(f));
        }
        for m in &mutations {
            apply(&mut bytes, m);
        }
        for limits in [Limits::default(), small_limits()] {
            let mut buf = BytesMut::from(&bytes[..]);
            drain(&mut Decoder::new(limits), &mut buf);
        }
    }
}

// ---------------------------------------------------------------------------
// Values the types can hold but the protocol forbids are refused.
// ---------------------------------------------------------------------------

/// How to break the ordering of one sack range.
#[derive(Debug, Clone, Copy)]
enum SackBreak {
    /// Start at (not above) the previous range's end or `recv_next`.
    StartAtFloor,
    /// An empty range.
    Empty,
    /// End before start.
    Reversed,
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn disordered_sack_ranges_rejected(
        ack in lane_ack().prop_filter("has sacks", |a| !a.sacks.is_empty()),
        other in lane_ack(),
        which in any::<prop::sample::Index>(),
        how in prop_oneof![
            Just(SackBreak::StartAtFloor),
            Just(SackBreak::Empty),
            Just(SackBreak::Reversed),
        ],
        second in any::<bool>(),
    ) {
        let mut ack = ack;
        let i = which.index(ack.sacks.len());
        let floor = if i == 0 { ack.recv_next } else { ack.sacks[i - 1].end };
        let s = &mut ack.sacks[i];
        match how {
            SackBreak::StartAtFloor => s.start = floor,
            SackBreak::Empty => s.end = s.start,
            SackBreak::Reversed => std::mem::swap(&mut s.start, &mut s.end),
        }
        let lanes = if second { [other, ack] } else { [ack, other] };
        let mut buf = encoded(&Frame::Ack(Ack { lanes }));
        prop_assert_eq!(
            Decoder::new(Limits::default()).decode(&mut buf),
            Err(DecodeError::InvalidValue("sack range"))
        );
    }

    #[test]
    fn reliable_data_with_seq_zero_rejected(d in data()) {
        let mut d = d;
        d.lane = Some(d.lane.unwrap_or(Lane::Unordered));
        d.seq = 0;
        let mut buf = encoded(&Frame::Data(d));
        prop_assert_eq!(
            Decoder::new(Limits::default()).decode(&mut buf),
            Err(DecodeError::InvalidValue("sequence number 0"))
        );
    }

    #[test]
    fn lane_resume_zero_rejected(
        w in welcome(),
        lane in 0usize..2,
        send_side in any::<bool>(),
    ) {
        let mut w = w;
        let l = &mut w.resume.lanes[lane];
        if send_side {
            l.send_base = 0;
        } else {
            l.recv_next = 0;
        }
        let r = w.resume;
        for f in [Frame::Welcome(w), Frame::Resume(r)] {
            let mut buf = encoded(&f);
            let got = Decoder::new(Limits::default()).decode(&mut buf);
            prop_assert!(
                matches!(got, Err(DecodeError::InvalidValue(_))),
                "lane resume 0 decoded as {:?}",
                got
            );
        }
    }
}

// ---------------------------------------------------------------------------
// (d) an oversized length prefix is refused before the body arrives.
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn oversized_length_rejected_before_allocation(
        max_frame in prop_oneof![Just(Limits::default().max_frame), 1u32..=u32::MAX - 1],
        over in any::<prop::sample::Index>(),
    ) {
        let limits = Limits { max_frame, ..Limits::default() };
        // Any length in max_frame+1 ..= u32::MAX.
        let len = max_frame + 1 + over.index((u32::MAX - max_frame) as usize) as u32;
        let mut buf = BytesMut::with_capacity(4);
        buf.put_u32(len);
        let cap = buf.capacity();
        let got = Decoder::new(limits).decode(&mut buf);
        let [first, second, ..] = len.to_be_bytes();
        let expected = if (0x14..=0x17).contains(&first) && second == 0x03 {
            DecodeError::TlsRecord
        } else {
            DecodeError::FrameTooLarge { len: u64::from(len), max: max_frame }
        };
        prop_assert_eq!(got, Err(expected));
        prop_assert!(buf.capacity() <= cap.max(64), "decoder reserved {} bytes", buf.capacity());
        prop_assert_eq!(buf.len(), 4);
    }
}

#[test]
fn u32_max_length_rejected_with_default_limits() {
    let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    let cap = buf.capacity();
    assert_eq!(
        Decoder::new(Limits::default()).decode(&mut buf),
        Err(DecodeError::FrameTooLarge {
            len: u64::from(u32::MAX),
            max: Limits::default().max_frame,
        })
    );
    assert!(buf.capacity() <= cap.max(64));
}

#[test]
fn a_tls_client_hello_is_recognised() {
    // The first bytes of a TLS 1.3 ClientHello record.
    let mut buf = BytesMut::from(&[0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00][..]);
    let err = Decoder::new(Limits::default())
        .decode(&mut buf)
        .unwrap_err();
    assert_eq!(err, DecodeError::TlsRecord);
    assert!(err.to_string().contains("--insecure"), "{err}");
}

#[test]
fn zero_length_is_an_error() {
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0x21][..]);
    assert_eq!(
        Decoder::new(Limits::default()).decode(&mut buf),
        Err(DecodeError::EmptyFrame)
    );
}

#[test]
fn length_at_the_limit_waits_for_the_body() {
    let limits = small_limits();
    let mut buf = BytesMut::new();
    buf.put_u32(limits.max_frame);
    assert_eq!(Decoder::new(limits).decode(&mut buf), Ok(None));
    assert_eq!(&buf[..], &limits.max_frame.to_be_bytes()[..]);
}

#[test]
fn denied_with_an_unknown_operation_is_an_error() {
    for op in [0u8, 5, 0xff] {
        let mut b = BytesMut::new();
        encode_data(
            &mut b,
            None,
            0,
            &Message::Denied {
                op: Operation::Call,
                subject: Subject::literal("a").unwrap(),
                sid: None,
                reply_to: None,
            },
        );
        // length(4) type(1) kind(1) op(1)
        b[6] = op;
        assert_eq!(
            Decoder::new(Limits::default()).decode(&mut b),
            Err(DecodeError::InvalidValue("operation"))
        );
    }
}
