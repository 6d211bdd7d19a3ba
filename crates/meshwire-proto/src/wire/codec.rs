//! Encoding frames into bytes and decoding bytes into frames.

use super::frame::{kind, ty};
use super::*;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before a frame's body: `u32` length and `u8` type.
pub const HEADER_LEN: usize = 5;

/// Size limits the decoder enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame accepted (type byte + body), checked before any
    /// allocation.
    pub max_frame: u32,
    /// Longest subject accepted.
    pub max_subject: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 1 MiB of payload plus room for subjects and headers.
            max_frame: 1024 * 1024 + 64 * 1024,
            max_subject: Subject::DEFAULT_MAX_LEN as u16,
        }
    }
}

/// Why bytes are not a valid frame. Every variant is fatal for the link:
/// after it the stream is out of step and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The length prefix exceeds [`Limits::max_frame`].
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A zero length prefix (no room for the type byte).
    #[error("empty frame")]
    EmptyFrame,
    /// The type byte names no frame.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// The message kind byte names no message.
    #[error("unknown message kind {0}")]
    UnknownMessageKind(u8),
    /// The body ended in the middle of a field.
    #[error("frame body truncated while reading {0}")]
    Truncated(&'static str),
    /// The body is longer than its fields.
    #[error("{extra} unexpected bytes after frame type 0x{frame_type:02x}")]
    TrailingBytes {
        /// The frame's type byte.
        frame_type: u8,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A field holds a value it cannot hold.
    #[error("invalid {0}")]
    InvalidValue(&'static str),
    /// A subject is longer than [`Limits::max_subject`], empty or not UTF-8.
    #[error("invalid subject in {what}: {err}")]
    BadSubject {
        /// Which field.
        what: &'static str,
        /// What is wrong with it.
        err: SubjectError,
    },
    /// `Hello`/`Welcome` without the magic bytes: not a meshwire peer.
    #[error("not a meshwire peer (bad magic bytes)")]
    BadMagic,
    /// The bytes are a TLS record (a ClientHello or an alert): the peer
    /// runs TLS and this link is plaintext.
    #[error(
        "the peer speaks TLS but this link is plaintext: run both ends with TLS (drop \
         --insecure), or both with --insecure"
    )]
    TlsRecord,
}

/// Splits a byte stream into frames.
///
/// Call [`Decoder::decode`] repeatedly on the read buffer until it returns
/// `Ok(None)` (need more bytes). Decoded frames share the buffer's memory:
/// payloads are slices of it, not copies.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    limits: Limits,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes one frame off the front of `buf`, or returns `Ok(None)` when
    /// `buf` does not hold a whole frame yet. On `Err` the stream is broken.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len == 0 {
            return Err(DecodeError::EmptyFrame);
        }
        if len > self.limits.max_frame {
            // A TLS record header (content type 0x14..=0x17, version 3.x)
            // read as a length is hundreds of MiB: say what it really is.
            if (0x14..=0x17).contains(&buf[0]) && buf[1] == 0x03 {
                return Err(DecodeError::TlsRecord);
            }
            return Err(DecodeError::FrameTooLarge {
                len: u64::from(len),
                max: self.limits.max_frame,
            });
        }
        let total = 4 + len as usize;
        if buf.len() < total {
            // Reserve only what the (already bounded) frame needs.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        let body = buf.split_to(len as usize).freeze();
        decode_body(body, &self.limits).map(Some)
    }
}

/// Decodes one frame from `type | body` (the bytes after the length).
pub(crate) fn decode_body(mut body: Bytes, limits: &Limits) -> Result<Frame, DecodeError> {
    let t = body.get_u8();
    let mut r = Reader { b: body, limits };
    let frame = match t {
        ty::HELLO => {
            r.magic()?;
            Frame::Hello(Hello {
                min_version: r.u16("min_version")?,
                max_version: r.u16("max_version")?,
                node: r.node_id()?,
                role: r.role()?,
                session: r.opt_subject("session")?,
                listen: r.opt_subject("listen")?,
                max_frame: r.u32("max_frame")?,
            })
        }
        ty::WELCOME => {
            r.magic()?;
            Frame::Welcome(Welcome {
                version: r.u16("version")?,
                node: r.node_id()?,
                role: r.role()?,
                listen: r.opt_subject("listen")?,
                max_frame: r.u32("max_frame")?,
                resume: r.resume()?,
            })
        }
        ty::RESUME => Frame::Resume(r.resume()?),
        ty::DATA_ORDERED | ty::DATA_UNORDERED => {
            let lane = if t == ty::DATA_ORDERED {
                Lane::Ordered
            } else {
                Lane::Unordered
            };
            let seq = r.u64("seq")?;
            if seq == 0 {
                return Err(DecodeError::InvalidValue("sequence number 0"));
            }
            Frame::Data(Data {
                lane: Some(lane),
                seq,
                msg: r.message()?,
            })
        }
        ty::DATA_BEST_EFFORT => Frame::Data(Data {
            lane: None,
            seq: 0,
            msg: r.message()?,
        }),
        ty::ACK => Frame::Ack(Ack {
            lanes: [r.lane_ack()?, r.lane_ack()?],
        }),
        ty::PING => Frame::Ping(r.u64("nonce")?),
        ty::PONG => Frame::Pong(r.u64("nonce")?),
        ty::CLOSE => Frame::Close(Close {
            code: CloseCode::from_u16(r.u16("close code")?),
            reason: {
                // Strict UTF-8: a lossy conversion would change the frame
                // (and its size) on the way through.
                let b = r.bytes16("close reason")?;
                String::from_utf8(b.to_vec())
                    .map_err(|_| DecodeError::InvalidValue("close reason (not UTF-8)"))?
            },
        }),
        other => return Err(DecodeError::UnknownFrameType(other)),
    };
    if r.b.has_remaining() {
        return Err(DecodeError::TrailingBytes {
            frame_type: t,
            extra: r.b.remaining(),
        });
    }
    Ok(frame)
}

/// Bounds-checked field reader over a frame body.
struct Reader<'a> {
    b: Bytes,
    limits: &'a Limits,
}

impl Reader<'_> {
    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.b.remaining() < n {
            Err(DecodeError::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.b.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        Ok(self.b.get_u16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.b.get_u32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        Ok(self.b.get_u64())
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidValue(what)),
        }
    }
    fn magic(&mut self) -> Result<(), DecodeError> {
        if self.b.remaining() < 4 || self.b[..4] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        self.b.advance(4);
        Ok(())
    }
    fn node_id(&mut self) -> Result<NodeId, DecodeError> {
        self.need(16, "node id")?;
        let mut id = [0u8; 16];
        self.b.copy_to_slice(&mut id);
        Ok(NodeId(id))
    }
    fn role(&mut self) -> Result<Role, DecodeError> {
        match self.u8("role")? {
            0 => Ok(Role::Client),
            1 => Ok(Role::Router),
            _ => Err(DecodeError::InvalidValue("role")),
        }
    }
    fn lane_resume(&mut self) -> Result<LaneResume, DecodeError> {
        let recv_next = self.u64("recv_next")?;
        let send_base = self.u64("send_base")?;
        if recv_next == 0 || send_base == 0 {
            return Err(DecodeError::InvalidValue(
                "lane resume (sequence numbers start at 1)",
            ));
        }
        Ok(LaneResume {
            recv_next,
            send_base,
        })
    }
    fn resume(&mut self) -> Result<Resume, DecodeError> {
        Ok(Resume {
            epoch: self.u64("epoch")?,
            lanes: [self.lane_resume()?, self.lane_resume()?],
        })
    }
    fn lane_ack(&mut self) -> Result<LaneAck, DecodeError> {
        let recv_next = self.u64("ack recv_next")?;
        let limit = self.u64("ack limit")?;
        let n = self.u8("sack count")? as usize;
        if n > MAX_SACK_RANGES {
            return Err(DecodeError::InvalidValue("sack count"));
        }
        self.need(n * 16, "sack ranges")?;
        let mut sacks = Vec::with_capacity(n);
        let mut floor = recv_next;
        for _ in 0..n {
            let start = self.b.get_u64();
            let end = self.b.get_u64();
            // Ranges are ascending, non-empty, disjoint and above recv_next.
            if start <= floor || end <= start {
                return Err(DecodeError::InvalidValue("sack range"));
            }
            floor = end;
            sacks.push(Sack { start, end });
        }
        Ok(LaneAck {
            recv_next,
            limit,
            sacks,
        })
    }
    fn bytes16(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let n = self.u16(what)? as usize;
        self.need(n, what)?;
        Ok(self.b.split_to(n))
    }
    fn subject(&mut self, what: &'static str) -> Result<Subject, DecodeError> {
        let b = self.bytes16(what)?;
        if b.len() > self.limits.max_subject as usize {
            return Err(DecodeError::BadSubject {
                what,
                err: SubjectError::TooLong {
                    len: b.len(),
                    max: self.limits.max_subject as usize,
                },
            });
        }
        Subject::from_bytes(b).map_err(|err| DecodeError::BadSubject { what, err })
    }
    fn opt_subject(&mut self, what: &'static str) -> Result<Option<Subject>, DecodeError> {
        if self.bool(what)? {
            Ok(Some(self.subject(what)?))
        } else {
            Ok(None)
        }
    }
    /// `count: u16` then that many subjects.
    fn subjects(&mut self, what: &'static str) -> Result<Vec<Subject>, DecodeError> {
        let n = self.u16(what)? as usize;
        // Each subject takes at least 3 bytes: bound before allocating.
        self.need(n.saturating_mul(3), what)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.subject(what)?);
        }
        Ok(v)
    }
    fn payload(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32("payload length")? as usize;
        self.need(n, "payload")?;
        Ok(self.b.split_to(n))
    }
    fn message(&mut self) -> Result<Message, DecodeError> {
        Ok(match self.u8("message kind")? {
            kind::PUBLISH => Message::Publish {
                subject: self.subject("subject")?,
                reply_to: self.opt_subject("reply_to")?,
                payload: self.payload()?,
            },
            kind::FORWARD => {
                let subject = self.subject("subject")?;
                let reply_to = self.opt_subject("reply_to")?;
                let payload = self.payload()?;
                let plain = self.bool("plain")?;
                let groups = self.subjects("groups")?;
                Message::Forward {
                    subject,
                    reply_to,
                    payload,
                    plain,
                    groups,
                }
            }
            kind::DELIVER => Message::Deliver {
                sid: self.u64("sid")?,
                subject: self.subject("subject")?,
                reply_to: self.opt_subject("reply_to")?,
                payload: self.payload()?,
            },
            kind::SUBSCRIBE => Message::Subscribe {
                sid: self.u64("sid")?,
                pattern: self.subject("pattern")?,
                group: self.opt_subject("group")?,
            },
            kind::UNSUBSCRIBE => Message::Unsubscribe {
                sid: self.u64("sid")?,
            },
            kind::INTEREST => Message::Interest {
                pattern: self.subject("pattern")?,
                group: self.opt_subject("group")?,
                add: self.bool("add")?,
            },
            kind::PEERS => {
                let n = self.u16("peer count")? as usize;
                self.need(n.saturating_mul(19), "peers")?;
                let mut routers = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = self.node_id()?;
                    routers.push((id, self.subject("peer address")?));
                }
                Message::Peers { routers }
            }
            kind::NO_RESPONDERS => Message::NoResponders {
                reply_to: self.subject("reply_to")?,
            },
            kind::GRANTS => Message::Grants {
                rules: if self.bool("restricted")? {
                    let mut g = Grants::default();
                    for rules in &mut g.ops {
                        rules.allow = self.subjects("allow patterns")?;
                        rules.deny = self.subjects("deny patterns")?;
                    }
                    Some(Box::new(g))
                } else {
                    None
                },
            },
            kind::DENIED => Message::Denied {
                op: Operation::from_u8(self.u8("operation")?)
                    .ok_or(DecodeError::InvalidValue("operation"))?,
                subject: self.subject("subject")?,
                sid: if self.bool("sid")? {
                    Some(self.u64("sid")?)
                } else {
                    None
                },
                reply_to: self.opt_subject("reply_to")?,
            },
            other => return Err(DecodeError::UnknownMessageKind(other)),
        })
    }
}

impl Frame {
    /// Appends this frame, header included, to `dst`.
    ///
    /// # Panics
    /// Never on frames built from valid parts; strings longer than `u16`
    /// and more than 255 sack ranges are truncated by construction
    /// elsewhere (subjects are length-checked, sacks are capped).
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = dst.len();
        dst.put_u32(0); // patched below
        match self {
            Frame::Hello(h) => {
                dst.put_u8(ty::HELLO);
                dst.put_slice(&MAGIC);
                dst.put_u16(h.min_version);
                dst.put_u16(h.max_version);
                dst.put_slice(&h.node.0);
                dst.put_u8(h.role as u8);
                put_opt_subject(dst, h.session.as_ref());
                put_opt_subject(dst, h.listen.as_ref());
                dst.put_u32(h.max_frame);
            }
            Frame::Welcome(w) => {
                dst.put_u8(ty::WELCOME);
                dst.put_slice(&MAGIC);
                dst.put_u16(w.version);
                dst.put_slice(&w.node.0);
                dst.put_u8(w.role as u8);
                put_opt_subject(dst, w.listen.as_ref());
                dst.put_u32(w.max_frame);
                put_resume(dst, &w.resume);
            }
            Frame::Resume(r) => {
                dst.put_u8(ty::RESUME);
                put_resume(dst, r);
            }
            Frame::Data(d) => {
                // Header written by encode_data; undo ours.
                dst.truncate(start);
                encode_data(dst, d.lane, d.seq, &d.msg);
                return;
            }
            Frame::Ack(a) => {
                dst.put_u8(ty::ACK);
                for l in &a.lanes {
                    dst.put_u64(l.recv_next);
                    dst.put_u64(l.limit);
                    let n = l.sacks.len().min(MAX_SACK_RANGES);
                    dst.put_u8(n as u8);
                    for s in &l.sacks[..n] {
                        dst.put_u64(s.start);
                        dst.put_u64(s.end);
                    }
                }
            }
            Frame::Ping(n) => {
                dst.put_u8(ty::PING);
                dst.put_u64(*n);
            }
            Frame::Pong(n) => {
                dst.put_u8(ty::PONG);
                dst.put_u64(*n);
            }
            Frame::Close(c) => {
                dst.put_u8(ty::CLOSE);
                dst.put_u16(c.code.to_u16());
                let mut reason = c.reason.as_bytes();
                if reason.len() > 1024 {
                    // Cut on a char boundary so the reason stays UTF-8.
                    let mut cut = 1024;
                    while !c.reason.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    reason = &reason[..cut];
                }
                dst.put_u16(reason.len() as u16);
                dst.put_slice(reason);
            }
        }
        let len = (dst.len() - start - 4) as u32;
        dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame encoded into a fresh buffer (tests and tools; the hot path
    /// encodes many frames into one buffer with [`Frame::encode`]).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

/// Appends a `Data` frame built from borrowed parts, so an outbox can
/// (re)transmit a message without cloning it.
pub fn encode_data(dst: &mut BytesMut, lane: Option<Lane>, seq: u64, msg: &Message) {
    let start = dst.len();
    dst.put_u32(0);
    match lane {
        Some(Lane::Ordered) => {
            dst.put_u8(ty::DATA_ORDERED);
            dst.put_u64(seq);
        }
        Some(Lane::Unordered) => {
            dst.put_u8(ty::DATA_UNORDERED);
            dst.put_u64(seq);
        }
        None => dst.put_u8(ty::DATA_BEST_EFFORT),
    }
    put_message(dst, msg);
    let len = (dst.len() - start - 4) as u32;
    dst[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_resume(dst: &mut BytesMut, r: &Resume) {
    dst.put_u64(r.epoch);
    for l in &r.lanes {
        dst.put_u64(l.recv_next);
        dst.put_u64(l.send_base);
    }
}

fn put_subject(dst: &mut BytesMut, s: &Subject) {
    let b = s.as_bytes();
    let n = b.len().min(u16::MAX as usize);
    dst.put_u16(n as u16);
    dst.put_slice(&b[..n]);
}

fn put_opt_subject(dst: &mut BytesMut, s: Option<&Subject>) {
    match s {
        Some(s) => {
            dst.put_u8(1);
            put_subject(dst, s);
        }
        None => dst.put_u8(0),
    }
}

fn put_subjects(dst: &mut BytesMut, v: &[Subject]) {
    let n = v.len().min(u16::MAX as usize);
    dst.put_u16(n as u16);
    for s in &v[..n] {
        put_subject(dst, s);
    }
}

fn put_payload(dst: &mut BytesMut, p: &Bytes) {
    dst.put_u32(p.len() as u32);
    dst.put_slice(p);
}

fn put_message(dst: &mut BytesMut, m: &Message) {
    match m {
        Message::Publish {
            subject,
            reply_to,
            payload,
        } => {
            dst.put_u8(kind::PUBLISH);
            put_subject(dst, subject);
            put_opt_subject(dst, reply_to.as_ref());
            put_payload(dst, payload);
        }
        Message::Forward {
            subject,
            reply_to,
            payload,
            plain,
            groups,
        } => {
            dst.put_u8(kind::FORWARD);
            put_subject(dst, subject);
            put_opt_subject(dst, reply_to.as_ref());
            put_payload(dst, payload);
            dst.put_u8(u8::from(*plain));
            put_subjects(dst, groups);
        }
        Message::Deliver {
            sid,
            subject,
            reply_to,
            payload,
        } => {
            dst.put_u8(kind::DELIVER);
            dst.put_u64(*sid);
            put_subject(dst, subject);
            put_opt_subject(dst, reply_to.as_ref());
            put_payload(dst, payload);
        }
        Message::Subscribe {
            sid,
            pattern,
            group,
        } => {
            dst.put_u8(kind::SUBSCRIBE);
            dst.put_u64(*sid);
            put_subject(dst, pattern);
            put_opt_subject(dst, group.as_ref());
        }
        Message::Unsubscribe { sid } => {
            dst.put_u8(kind::UNSUBSCRIBE);
            dst.put_u64(*sid);
        }
        Message::Interest {
            pattern,
            group,
            add,
        } => {
            dst.put_u8(kind::INTEREST);
            put_subject(dst, pattern);
            put_opt_subject(dst, group.as_ref());
            dst.put_u8(u8::from(*add));
        }
        Message::Peers { routers } => {
            dst.put_u8(kind::PEERS);
            let n = routers.len().min(u16::MAX as usize);
            dst.put_u16(n as u16);
            for (id, addr) in &routers[..n] {
                dst.put_slice(&id.0);
                put_subject(dst, addr);
            }
        }
        Message::NoResponders { reply_to } => {
            dst.put_u8(kind::NO_RESPONDERS);
            put_subject(dst, reply_to);
        }
        Message::Grants { rules } => {
            dst.put_u8(kind::GRANTS);
            dst.put_u8(u8::from(rules.is_some()));
            for r in rules.iter().flat_map(|g| &g.ops) {
                put_subjects(dst, &r.allow);
                put_subjects(dst, &r.deny);
            }
        }
        Message::Denied {
            op,
            subject,
            sid,
            reply_to,
        } => {
            dst.put_u8(kind::DENIED);
            dst.put_u8(*op as u8);
            put_subject(dst, subject);
            match sid {
                Some(sid) => {
                    dst.put_u8(1);
                    dst.put_u64(*sid);
                }
                None => dst.put_u8(0),
            }
            put_opt_subject(dst, reply_to.as_ref());
        }
    }
}
