//! The contract between the Raft group and the rest of meshwire: what is
//! proposed ([`Command`]), what applying it answers ([`CommandResult`]),
//! what a watcher sees ([`Change`]), and the input rules shared by the
//! client side and the state machine ([`validate_map_name`],
//! [`validate_key`], [`validate_value`]).

use std::fmt;
use std::io::Cursor;

/// A Raft member's id. The integrator derives it from the member's
/// meshwire [`NodeId`](crate::NodeId); Raft needs a small ordered id, and
/// a `u64` keeps every log record and vote small.
pub type RaftNodeId = u64;

/// What the Raft group knows about a member: enough for the network layer
/// to reach it. Stored in membership log entries and snapshots, so keep it
/// small and stable.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The member's meshwire NodeId, in its text form.
    pub node: String,
    /// An address the member listens on (`HOST:PORT`, `unix:PATH`, `mem:NAME`).
    pub addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node, self.addr)
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of meshwire's Raft group: [`Command`]s
    /// in, [`CommandResult`]s out, members named by [`RaftNodeId`] and
    /// described by [`Member`], snapshots as in-memory byte cursors, tokio.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = RaftNodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The name of the map that always exists, without a `CreateMap`.
pub const DEFAULT_MAP: &str = "default";

/// The longest map name, in bytes.
pub const MAX_MAP_NAME_LEN: usize = 128;
/// The longest key, in bytes of UTF-8.
pub const MAX_KEY_LEN: usize = 1024;
/// The largest value, in bytes: 256 KiB, so that a write, its Raft entry
/// and its forwarding all fit one mesh message (1 MiB by default) with
/// room to spare.
pub const MAX_VALUE_LEN: usize = 256 * 1024;

/// A write to the replicated maps, proposed through Raft. Every command is
/// applied on every member in log order; applying is deterministic, so all
/// members hold the same maps at the same log index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// Create a map; creating one that exists changes nothing.
    CreateMap {
        /// The map's name ([`validate_map_name`]).
        map: String,
    },
    /// Set a key to a value.
    Put {
        /// The map.
        map: String,
        /// The key ([`validate_key`]).
        key: String,
        /// Opaque bytes ([`validate_value`]).
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The map.
        map: String,
        /// The key.
        key: String,
    },
    /// Set a key only if its version is `expected` (0: only if absent).
    Cas {
        /// The map.
        map: String,
        /// The key.
        key: String,
        /// The version the key must have now; 0 means it must be absent.
        expected: u64,
        /// The new value.
        value: Vec<u8>,
    },
    /// `command`, applied at most once per `id`: a client that did not
    /// hear back may propose the same request again, and a second copy
    /// answers what the first did instead of writing again (Raft §8).
    Once {
        /// Unique per request (random 128 bits chosen by the client).
        id: u128,
        /// What to apply; never itself a `Once`.
        command: Box<Command>,
    },
}

impl Command {
    /// The map this command acts on.
    pub fn map(&self) -> &str {
        match self {
            Command::CreateMap { map }
            | Command::Put { map, .. }
            | Command::Delete { map, .. }
            | Command::Cas { map, .. } => map,
            Command::Once { command, .. } => command.map(),
        }
    }

    /// Checks every field against the input rules: what the state machine
    /// does before applying, and what a client should do before proposing
    /// (a rejected command still costs a round of consensus).
    pub fn validate(&self) -> Result<(), InvalidInput> {
        validate_map_name(self.map())?;
        match self {
            Command::CreateMap { .. } => Ok(()),
            Command::Once { command, .. } => match **command {
                Command::Once { .. } => Err(InvalidInput::NestedOnce),
                ref inner => inner.validate(),
            },
            Command::Delete { key, .. } => validate_key(key),
            Command::Put { key, value, .. } | Command::Cas { key, value, .. } => {
                validate_key(key)?;
                validate_value(value)
            }
        }
    }
}

/// What applying one log entry answered. A key's **version** is the Raft
/// log index of the entry that last wrote it, so versions only grow and
/// are comparable across keys and maps.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CommandResult {
    /// `CreateMap` applied; `existed` if the map was already there.
    MapCreated {
        /// Whether the map existed before.
        existed: bool,
    },
    /// `Put` or a successful `Cas` applied.
    Written {
        /// The key's new version (the entry's log index).
        version: u64,
    },
    /// `Delete` applied.
    Deleted {
        /// Whether the key existed.
        existed: bool,
        /// The entry's log index.
        version: u64,
    },
    /// `Cas` found another version: nothing was written.
    CasFailed {
        /// The key's version now, 0 if it is absent.
        current: u64,
    },
    /// A write to a map never created: nothing was written.
    UnknownMap {
        /// The map named by the command.
        map: String,
    },
    /// The command broke an input rule (see [`InvalidInput`]): nothing was
    /// written.
    Rejected {
        /// Why, for the user.
        reason: String,
    },
    /// The entry was Raft's own (a new leader's blank entry or a
    /// membership change), not a [`Command`]. Added to the contract because
    /// openraft wants one answer per applied entry; clients never see it.
    Internal,
}

/// One change to a key, as `watch` reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// The map.
    pub map: String,
    /// The key.
    pub key: String,
    /// The new value, `None` when the key was deleted.
    pub value: Option<Vec<u8>>,
    /// The log index of the write (the key's new version).
    pub version: u64,
}

/// Why a map name, key or value breaks the input rules.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// A map name must be 1 to 128 characters of `[A-Za-z0-9_.-]`.
    #[error("invalid map name {0:?}: use 1 to 128 characters of A-Z, a-z, 0-9, '_', '.', '-'")]
    MapName(String),
    /// A key must not be empty.
    #[error("empty key: a key needs at least one character")]
    EmptyKey,
    /// A key longer than [`MAX_KEY_LEN`] bytes.
    #[error("key of {len} bytes is longer than the limit of {MAX_KEY_LEN} bytes")]
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// A key with a control character (they break line-oriented tools).
    #[error("key contains the control character {0:?}: keys must be printable")]
    KeyControlChar(char),
    /// A value larger than [`MAX_VALUE_LEN`] bytes.
    #[error("value of {len} bytes is larger than the limit of {MAX_VALUE_LEN} bytes")]
    ValueTooLarge {
        /// The value's length in bytes.
        len: usize,
    },
    /// A `Once` wrapping another `Once`.
    #[error("a request id wraps another request id")]
    NestedOnce,
}

/// Checks a map name: 1 to [`MAX_MAP_NAME_LEN`] characters of
/// `[A-Za-z0-9_.-]`.
pub fn validate_map_name(map: &str) -> Result<(), InvalidInput> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    if map.is_empty() || map.len() > MAX_MAP_NAME_LEN || !map.bytes().all(allowed) {
        return Err(InvalidInput::MapName(map.to_owned()));
    }
    Ok(())
}

/// Checks a key: not empty, at most [`MAX_KEY_LEN`] bytes of UTF-8, no
/// control characters.
pub fn validate_key(key: &str) -> Result<(), InvalidInput> {
    if key.is_empty() {
        return Err(InvalidInput::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(InvalidInput::KeyTooLong { len: key.len() });
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(InvalidInput::KeyControlChar(c));
    }
    Ok(())
}

/// Checks a value: at most [`MAX_VALUE_LEN`] bytes.
pub fn validate_value(value: &[u8]) -> Result<(), InvalidInput> {
    if value.len() > MAX_VALUE_LEN {
        return Err(InvalidInput::ValueTooLarge { len: value.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_names_follow_the_rule() {
        assert_eq!(validate_map_name("default"), Ok(()));
        assert_eq!(validate_map_name("a.B_c-9"), Ok(()));
        assert_eq!(validate_map_name(&"m".repeat(MAX_MAP_NAME_LEN)), Ok(()));
        for bad in [
            "",
            "with space",
            "slash/",
            "é",
            &"m".repeat(MAX_MAP_NAME_LEN + 1),
        ] {
            assert_eq!(
                validate_map_name(bad),
                Err(InvalidInput::MapName(bad.to_owned())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_follow_the_rule() {
        assert_eq!(validate_key("orders/42 é"), Ok(()));
        assert_eq!(validate_key(&"k".repeat(MAX_KEY_LEN)), Ok(()));
        assert_eq!(validate_key(""), Err(InvalidInput::EmptyKey));
        assert_eq!(
            validate_key(&"k".repeat(MAX_KEY_LEN + 1)),
            Err(InvalidInput::KeyTooLong {
                len: MAX_KEY_LEN + 1
            })
        );
        assert_eq!(
            validate_key("a\nb"),
            Err(InvalidInput::KeyControlChar('\n'))
        );
        assert_eq!(
            validate_key("a\u{7f}"),
            Err(InvalidInput::KeyControlChar('\u{7f}'))
        );
    }

    #[test]
    fn values_follow_the_rule() {
        assert_eq!(validate_value(&[]), Ok(()));
        assert_eq!(validate_value(&vec![0; MAX_VALUE_LEN]), Ok(()));
        assert_eq!(
            validate_value(&vec![0; MAX_VALUE_LEN + 1]),
            Err(InvalidInput::ValueTooLarge {
                len: MAX_VALUE_LEN + 1
            })
        );
    }

    #[test]
    fn a_command_is_checked_field_by_field() {
        let put = |map: &str, key: &str| Command::Put {
            map: map.into(),
            key: key.into(),
            value: vec![1],
        };
        assert_eq!(put("default", "k").validate(), Ok(()));
        assert_eq!(
            put("no such!", "k").validate(),
            Err(InvalidInput::MapName("no such!".into()))
        );
        assert_eq!(put("default", "").validate(), Err(InvalidInput::EmptyKey));
        let cas = Command::Cas {
            map: "m".into(),
            key: "k".into(),
            expected: 0,
            value: vec![0; MAX_VALUE_LEN + 1],
        };
        assert_eq!(
            cas.validate(),
            Err(InvalidInput::ValueTooLarge {
                len: MAX_VALUE_LEN + 1
            })
        );
        assert_eq!(
            Command::Delete {
                map: "m".into(),
                key: "\t".into()
            }
            .validate(),
            Err(InvalidInput::KeyControlChar('\t'))
        );
    }
}
