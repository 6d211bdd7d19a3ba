//! The wire format: frames, their byte layout, and the codec.
//!
//! Every frame is `length: u32 BE | type: u8 | body`, where `length` counts
//! the type byte and the body. All integers are big-endian. Strings are
//! `u16` length + UTF-8, payloads `u32` length + bytes. `docs/PROTOCOL.md`
//! is the normative description; this module is the reference codec.
//!
//! The decoder checks the length prefix against [`Limits::max_frame`]
//! *before* it reserves or copies anything, so a hostile length costs the
//! receiver nothing, and it never panics on any input (a property test and a
//! fuzz target hold it to that).

mod codec;
mod frame;
mod id;

pub use codec::{encode_data, DecodeError, Decoder, Limits, HEADER_LEN};
pub use frame::{
    Ack, Close, CloseCode, Data, Frame, Grants, Hello, Lane, LaneAck, LaneResume, Message, OpRules,
    Operation, Resume, Role, Sack, Welcome, MAX_SACK_RANGES,
};
pub use id::{check_literal, NodeId, ParseNodeIdError, Subject, SubjectError};

/// Magic bytes that open every `Hello` and `Welcome`, so a stray client
/// (an HTTP request, a TLS ClientHello) is recognised at its first frame.
pub const MAGIC: [u8; 4] = *b"MWIR";
/// The newest protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest protocol version this implementation still accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// The first protocol version with permissions: a router sends `Grants`
/// and `Denied` only on links that negotiated at least this version.
pub const PERMISSIONS_VERSION: u16 = 2;
