//! Frame and message types, and how each is laid out in bytes.

use super::{NodeId, Subject};
use bytes::Bytes;

/// The most selective-ack ranges one [`LaneAck`] carries. More gaps than
/// this means a badly damaged path; the sender's timer recovers the rest.
pub const MAX_SACK_RANGES: usize = 16;

/// What kind of node speaks: a router listens and forwards, a client
/// attaches to routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// Attaches to routers; does not forward.
    Client = 0,
    /// Listens, forwards, peers with other routers.
    Router = 1,
}

/// A reliable stream inside a session. Each lane has its own sequence
/// numbers, so unordered traffic never waits behind ordered traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Lane {
    /// Delivered in sequence order, exactly once.
    Ordered = 0,
    /// Delivered on arrival, exactly once.
    Unordered = 1,
}

impl Lane {
    /// Both lanes, in index order.
    pub const ALL: [Lane; 2] = [Lane::Ordered, Lane::Unordered];

    /// The lane's index into per-lane arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Where a lane stands, exchanged in the handshake so that a reconnecting
/// pair can resume: what the receiver expects next, and the oldest sequence
/// number the sender still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaneResume {
    /// The receiver's next expected sequence number (everything below it
    /// was received): a cumulative acknowledgement.
    pub recv_next: u64,
    /// The sender's oldest unacknowledged sequence number, or its next
    /// sequence number when nothing is outstanding.
    pub send_base: u64,
}

/// First frame on a link, from the side that dialled: who it is. Session
/// state follows only once the dialler knows who answered (see [`Resume`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Oldest protocol version the dialler speaks.
    pub min_version: u16,
    /// Newest protocol version the dialler speaks.
    pub max_version: u16,
    /// The dialler's identity.
    pub node: NodeId,
    /// Client or router.
    pub role: Role,
    /// A persistent session name, kept by the router while the client is
    /// away; `None` for a session tied to the node id.
    pub session: Option<Subject>,
    /// The address other routers should dial to reach the dialler (routers).
    pub listen: Option<Subject>,
    /// The largest frame the dialler accepts.
    pub max_frame: u32,
}

/// The acceptor's answer to a [`Hello`]: who it is, and where its session
/// with the dialler stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The version both will speak.
    pub version: u16,
    /// The acceptor's identity.
    pub node: NodeId,
    /// Client or router.
    pub role: Role,
    /// The address other routers should dial to reach the acceptor.
    pub listen: Option<Subject>,
    /// The largest frame the acceptor accepts.
    pub max_frame: u32,
    /// The acceptor's session state (see [`Resume`]).
    pub resume: Resume,
}

/// Where one side's session stands; the dialler sends it after `Welcome`,
/// the acceptor inside `Welcome`. After both, the link is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Random per session object: a changed epoch means the sender lost
    /// its state and its sequence numbers started over.
    pub epoch: u64,
    /// Per-lane state (see [`LaneResume`]), indexed by [`Lane::index`].
    pub lanes: [LaneResume; 2],
}

/// A selective acknowledgement: `start..end` (end exclusive) was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sack {
    /// First sequence number in the range.
    pub start: u64,
    /// One past the last.
    pub end: u64,
}

/// Acknowledgement state of one lane.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LaneAck {
    /// Everything below this was received (cumulative ack).
    pub recv_next: u64,
    /// The sender may send sequence numbers below this (credit).
    pub limit: u64,
    /// Ranges above `recv_next` that were also received, ascending.
    pub sacks: Vec<Sack>,
}

/// Acknowledgements and credit for both lanes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ack {
    /// Indexed by [`Lane::index`].
    pub lanes: [LaneAck; 2],
}

/// Why a link is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCode {
    /// Orderly shutdown; the session may still be resumed.
    Normal,
    /// The peer broke the protocol (bad frame, frame before handshake...).
    ProtocolError,
    /// No common protocol version.
    VersionMismatch,
    /// Nothing heard for the idle timeout.
    IdleTimeout,
    /// Handshake not finished in time.
    HandshakeTimeout,
    /// The consumer stayed behind its limit past the deadline.
    SlowConsumer,
    /// Another link to the same peer won the tie-break.
    Duplicate,
    /// The node is shutting down and will not come back soon.
    Shutdown,
    /// Too many links, or the peer is not allowed.
    Refused,
    /// A code this implementation does not know.
    Other(u16),
}

impl CloseCode {
    /// The code on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Normal => 0,
            Self::ProtocolError => 1,
            Self::VersionMismatch => 2,
            Self::IdleTimeout => 3,
            Self::HandshakeTimeout => 4,
            Self::SlowConsumer => 5,
            Self::Duplicate => 6,
            Self::Shutdown => 7,
            Self::Refused => 8,
            Self::Other(c) => c,
        }
    }

    /// The code for a wire value.
    pub fn from_u16(v: u16) -> Self {
        match v {
            0 => Self::Normal,
            1 => Self::ProtocolError,
            2 => Self::VersionMismatch,
            3 => Self::IdleTimeout,
            4 => Self::HandshakeTimeout,
            5 => Self::SlowConsumer,
            6 => Self::Duplicate,
            7 => Self::Shutdown,
            8 => Self::Refused,
            c => Self::Other(c),
        }
    }
}

/// Last frame on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Why.
    pub code: CloseCode,
    /// Human-readable detail, for logs.
    pub reason: String,
}

/// An operation that permissions govern (see [`Grants`], [`Message::Denied`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Operation {
    /// Publishing on a subject.
    Publish = 1,
    /// Subscribing to a pattern.
    Subscribe = 2,
    /// Serving an RPC service.
    Serve = 3,
    /// Calling an RPC service.
    Call = 4,
}

impl Operation {
    /// All four, in index order.
    pub const ALL: [Operation; 4] = [
        Operation::Publish,
        Operation::Subscribe,
        Operation::Serve,
        Operation::Call,
    ];

    /// The index into per-operation arrays ([`Grants::ops`]).
    pub const fn index(self) -> usize {
        self as usize - 1
    }

    /// The lowercase name, as in permissions files: `publish`, `subscribe`,
    /// `serve`, `call`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operation::Publish => "publish",
            Operation::Subscribe => "subscribe",
            Operation::Serve => "serve",
            Operation::Call => "call",
        }
    }

    /// The operation for a wire value.
    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|o| *o as u8 == v)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Allow and deny patterns for one [`Operation`]: allowed when an allow
/// pattern takes it in and no deny pattern touches it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpRules {
    /// Patterns that allow.
    pub allow: Vec<Subject>,
    /// Patterns that deny; they win over `allow`.
    pub deny: Vec<Subject>,
}

/// What a client may do, per operation: the rules its router applies to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grants {
    /// Indexed by [`Operation::index`].
    pub ops: [OpRules; 4],
}

impl Grants {
    /// The rules for `op`.
    pub fn get(&self, op: Operation) -> &OpRules {
        &self.ops[op.index()]
    }
}

/// An application message carried by a [`Data`] frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → router: publish `payload` on `subject`.
    Publish {
        /// Literal subject.
        subject: Subject,
        /// Where responses go (request/reply).
        reply_to: Option<Subject>,
        /// Opaque payload.
        payload: Bytes,
    },
    /// Router → router: a publication to deliver to the receiver's *local*
    /// subscribers only (one router hop at most).
    Forward {
        /// Literal subject.
        subject: Subject,
        /// Where responses go.
        reply_to: Option<Subject>,
        /// Opaque payload.
        payload: Bytes,
        /// Deliver to local subscriptions outside any queue group.
        plain: bool,
        /// Queue groups whose one chosen member is at the receiving router.
        groups: Vec<Subject>,
    },
    /// Router → client: a publication matching subscription `sid`.
    Deliver {
        /// The client's subscription id.
        sid: u64,
        /// Literal subject it was published on.
        subject: Subject,
        /// Where responses go.
        reply_to: Option<Subject>,
        /// Opaque payload.
        payload: Bytes,
    },
    /// Client → router: start subscription `sid`.
    Subscribe {
        /// Client-chosen id, unique per session.
        sid: u64,
        /// Subject pattern, wildcards allowed.
        pattern: Subject,
        /// Queue group: one member of the group receives each message.
        group: Option<Subject>,
    },
    /// Client → router: end subscription `sid`.
    Unsubscribe {
        /// The id given in `Subscribe`.
        sid: u64,
    },
    /// Router → router: the sender now has (`add`) or no longer has local
    /// interest in `pattern` (within `group`, if any).
    Interest {
        /// Pattern.
        pattern: Subject,
        /// Queue group.
        group: Option<Subject>,
        /// Added or removed.
        add: bool,
    },
    /// Router → router and router → client: routers known to the sender.
    Peers {
        /// `(id, address)` of each router.
        routers: Vec<(NodeId, Subject)>,
    },
    /// Router → client: a publication with `reply_to` found no subscriber
    /// anywhere in the mesh, so no reply will come.
    NoResponders {
        /// The requester's reply subject.
        reply_to: Subject,
    },
    /// Router → client: the rules the router applies to this client. Sent
    /// as the first message after every link-up and again whenever they
    /// change, so the client can refuse what would be refused anyway,
    /// with an error, before sending it.
    Grants {
        /// `None`: unrestricted (the router has no permissions configured).
        /// Boxed: rare, and it would triple the size of every message.
        rules: Option<Box<Grants>>,
    },
    /// Router → client: a `Publish` or `Subscribe` of this client was
    /// refused by the router's permissions (or a subscription was revoked
    /// by a change of them). Nothing of it was routed or registered.
    Denied {
        /// Which rules refused it.
        op: Operation,
        /// The subject published or the pattern subscribed.
        subject: Subject,
        /// The refused subscription (`None` for a publication).
        sid: Option<u64>,
        /// The refused publication's reply subject, so a requester can
        /// fail the request at once.
        reply_to: Option<Subject>,
    },
}

/// A frame carrying a [`Message`]: reliable (on a lane, with a sequence
/// number) or best effort (`lane == None`, never acknowledged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// `None` for best effort.
    pub lane: Option<Lane>,
    /// Sequence number in the lane (0 for best effort).
    pub seq: u64,
    /// The message.
    pub msg: Message,
}

/// Everything that travels on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a link (dialler).
    Hello(Hello),
    /// Answers `Hello` (acceptor).
    Welcome(Welcome),
    /// Completes the handshake (dialler).
    Resume(Resume),
    /// An application message.
    Data(Data),
    /// Acknowledgements and credit.
    Ack(Ack),
    /// Liveness probe.
    Ping(u64),
    /// Answer to `Ping`, echoing its nonce.
    Pong(u64),
    /// Closes the link.
    Close(Close),
}

impl Frame {
    /// The frame's type name, for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "Hello",
            Frame::Welcome(_) => "Welcome",
            Frame::Resume(_) => "Resume",
            Frame::Data(_) => "Data",
            Frame::Ack(_) => "Ack",
            Frame::Ping(_) => "Ping",
            Frame::Pong(_) => "Pong",
            Frame::Close(_) => "Close",
        }
    }
}

/// Frame type bytes (see `docs/PROTOCOL.md`).
pub(crate) mod ty {
    pub(crate) const HELLO: u8 = 0x01;
    pub(crate) const WELCOME: u8 = 0x02;
    pub(crate) const RESUME: u8 = 0x03;
    pub(crate) const DATA_ORDERED: u8 = 0x10;
    pub(crate) const DATA_UNORDERED: u8 = 0x11;
    pub(crate) const DATA_BEST_EFFORT: u8 = 0x12;
    pub(crate) const ACK: u8 = 0x20;
    pub(crate) const PING: u8 = 0x21;
    pub(crate) const PONG: u8 = 0x22;
    pub(crate) const CLOSE: u8 = 0x23;
}

/// Message kind bytes.
pub(crate) mod kind {
    pub(crate) const PUBLISH: u8 = 1;
    pub(crate) const FORWARD: u8 = 2;
    pub(crate) const DELIVER: u8 = 3;
    pub(crate) const SUBSCRIBE: u8 = 4;
    pub(crate) const UNSUBSCRIBE: u8 = 5;
    pub(crate) const INTEREST: u8 = 6;
    pub(crate) const PEERS: u8 = 7;
    pub(crate) const NO_RESPONDERS: u8 = 8;
    pub(crate) const GRANTS: u8 = 9;
    pub(crate) const DENIED: u8 = 10;
}

impl Message {
    /// Bytes of application payload (0 for control messages); what
    /// outbox byte limits count.
    pub fn payload_len(&self) -> usize {
        match self {
            Message::Publish { payload, .. }
            | Message::Forward { payload, .. }
            | Message::Deliver { payload, .. } => payload.len(),
            _ => 0,
        }
    }
}
