//! Node identities and subjects (topic names), the two names on the wire.

use bytes::Bytes;
use std::fmt;

/// The identity of a node: 16 bytes, printed as 26 lowercase base32 chars.
///
/// Today it is random per process (or stored in the node's data directory);
/// with authenticated links it becomes a digest of the node's public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 16]);

const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

impl NodeId {
    /// The length of the text form.
    pub const TEXT_LEN: usize = 26;

    /// Builds an id from its 16 raw bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 4648 base32, lowercase, unpadded: 128 bits -> 26 symbols.
        let mut acc: u32 = 0;
        let mut bits = 0u32;
        let mut out = [0u8; Self::TEXT_LEN];
        let mut n = 0;
        for &b in &self.0 {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                out[n] = B32[((acc >> bits) & 31) as usize];
                n += 1;
            }
        }
        if bits > 0 {
            out[n] = B32[((acc << (5 - bits)) & 31) as usize];
            n += 1;
        }
        debug_assert_eq!(n, Self::TEXT_LEN);
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a [`NodeId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a node id is 26 characters of a-z and 2-7 (got {0:?})")]
pub struct ParseNodeIdError(pub String);

impl std::str::FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNodeIdError(s.chars().take(64).collect());
        if s.len() != Self::TEXT_LEN {
            return Err(err());
        }
        let mut out = [0u8; 16];
        let mut acc: u64 = 0;
        let mut bits = 0u32;
        let mut n = 0;
        for c in s.bytes() {
            let v = B32.iter().position(|&x| x == c).ok_or_else(err)? as u64;
            acc = (acc << 5) | v;
            bits += 5;
            if bits >= 8 {
                bits -= 8;
                if n < 16 {
                    out[n] = (acc >> bits) as u8;
                }
                n += 1;
            }
        }
        // The 2 leftover bits must be zero, or two texts would name one id.
        if n != 16 || (acc & ((1 << bits) - 1)) != 0 {
            return Err(err());
        }
        Ok(Self(out))
    }
}

/// Checks that `s` is a literal subject (no wildcards, no empty tokens, no
/// whitespace) without allocating; what routers apply to every publication.
pub fn check_literal(s: &str) -> Result<(), SubjectError> {
    // Every publish is checked (by the publisher and by its router): a
    // byte scan settles the usual ASCII subject without splitting it or
    // decoding chars; anything it does not pass takes the full check
    // below, which also names the error.
    if plainly_literal(s.as_bytes()) {
        return Ok(());
    }
    check_literal_in_full(s)
}

/// [`check_literal`] without the fast path: splits into tokens and checks
/// each char; names what is wrong.
fn check_literal_in_full(s: &str) -> Result<(), SubjectError> {
    if s.is_empty() {
        return Err(SubjectError::Empty);
    }
    for tok in s.split('.') {
        if tok.is_empty() || tok.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SubjectError::Malformed(s.chars().take(256).collect()));
        }
        if tok.contains('*') || tok.contains('>') {
            return Err(SubjectError::Wildcard(s.chars().take(256).collect()));
        }
    }
    Ok(())
}

/// True for a non-empty ASCII subject whose tokens are non-empty and hold
/// no space, control character or wildcard: exactly the ASCII subjects
/// [`check_literal`] accepts (for ASCII, `char::is_whitespace` and
/// `is_control` are space and the control bytes).
fn plainly_literal(b: &[u8]) -> bool {
    let mut token_start = true;
    for &c in b {
        match c {
            b'.' if token_start => return false,
            b'.' => token_start = true,
            b'*' | b'>' | b' ' | 0x80.. => return false,
            c if c.is_ascii_control() => return false,
            _ => token_start = false,
        }
    }
    !b.is_empty() && !token_start
}

/// A subject (topic, pattern, reply inbox or group name): non-empty UTF-8
/// held in [`Bytes`] so that decoding and forwarding it never copies.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(Bytes);

/// Why a string cannot be a [`Subject`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// Subjects are at least one character long.
    #[error("a subject must not be empty")]
    Empty,
    /// Longer than the configured limit.
    #[error("subject is {len} bytes; the limit is {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not UTF-8.
    #[error("subject is not valid UTF-8")]
    NotUtf8,
    /// Contains whitespace, a control character, or an empty token.
    #[error("subject {0:?} has an empty token or a space or control character; use tokens like `orders.eu.created`")]
    Malformed(String),
    /// A wildcard where a literal subject was required.
    #[error("subject {0:?} contains a wildcard (`*` or `>`), which only subscriptions may use")]
    Wildcard(String),
    /// `>` anywhere but as the last token, or a wildcard inside a token.
    #[error(
        "pattern {0:?} is not valid: `*` must be a whole token and `>` must be the last token"
    )]
    BadWildcard(String),
}

impl Subject {
    /// The longest subject accepted unless configured otherwise.
    pub const DEFAULT_MAX_LEN: usize = 1024;

    /// Wraps bytes that must be non-empty UTF-8 (no further syntax check:
    /// the codec uses this; syntax is checked where subjects are used).
    pub fn from_bytes(bytes: Bytes) -> Result<Self, SubjectError> {
        if bytes.is_empty() {
            return Err(SubjectError::Empty);
        }
        std::str::from_utf8(&bytes).map_err(|_| SubjectError::NotUtf8)?;
        Ok(Self(bytes))
    }

    /// A literal subject for publishing: tokens separated by `.`, no
    /// wildcards, no whitespace.
    pub fn literal(s: &str) -> Result<Self, SubjectError> {
        // Every publish, request and reply builds one (callgrind: ~2 000
        // instructions each by the full check below, 14% of a serial RPC):
        // the byte scan settles the usual ASCII subject at once.
        if s.len() <= Self::DEFAULT_MAX_LEN && plainly_literal(s.as_bytes()) {
            return Ok(Self(Bytes::copy_from_slice(s.as_bytes())));
        }
        let subj = Self::pattern(s)?;
        if subj.tokens().any(|t| t == "*" || t == ">") {
            return Err(SubjectError::Wildcard(s.to_owned()));
        }
        Ok(subj)
    }

    /// A subscription pattern: like [`Subject::literal`], and `*` may stand
    /// for one token anywhere, `>` for one or more tokens at the end.
    pub fn pattern(s: &str) -> Result<Self, SubjectError> {
        if s.is_empty() {
            return Err(SubjectError::Empty);
        }
        if s.len() > Self::DEFAULT_MAX_LEN {
            return Err(SubjectError::TooLong {
                len: s.len(),
                max: Self::DEFAULT_MAX_LEN,
            });
        }
        let n = s.split('.').count();
        for (i, tok) in s.split('.').enumerate() {
            if tok.is_empty() || tok.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(SubjectError::Malformed(s.to_owned()));
            }
            let wild = tok.contains('*') || tok.contains('>');
            if wild && !(tok == "*" || (tok == ">" && i + 1 == n)) {
                return Err(SubjectError::BadWildcard(s.to_owned()));
            }
        }
        Ok(Self(Bytes::copy_from_slice(s.as_bytes())))
    }

    /// The subject as text.
    pub fn as_str(&self) -> &str {
        // Validated as UTF-8 at construction; the fallback is unreachable.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The raw bytes (shared, cheap to clone).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: subjects are non-empty. Present for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `.`-separated tokens.
    pub fn tokens(&self) -> std::str::Split<'_, char> {
        self.as_str().split('.')
    }

    /// True when the subject contains a `*` or `>` token.
    pub fn is_pattern(&self) -> bool {
        self.tokens().any(|t| t == "*" || t == ">")
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The byte scan agrees with the full check on every ASCII
        /// string, and never passes a string the full check refuses.
        #[test]
        fn the_fast_literal_check_agrees_with_the_full_one(
            s in "[a-z.*> \\t\\x00\\x7fé]{0,12}",
        ) {
            let fast = super::plainly_literal(s.as_bytes());
            let full = super::check_literal_in_full(&s).is_ok();
            if s.is_ascii() {
                prop_assert_eq!(fast, full, "{:?}", s);
            } else {
                prop_assert!(!fast || full, "{:?}", s);
            }
            prop_assert_eq!(super::check_literal(&s).is_ok(), full);
            prop_assert_eq!(super::Subject::literal(&s).is_ok(), full, "{:?}", s);
        }
    }

    use super::*;

    #[test]
    fn node_id_text_round_trips() {
        for seed in 0u8..=255 {
            let id = NodeId([seed.wrapping_mul(37); 16].map(|b| b ^ seed));
            let text = id.to_string();
            assert_eq!(text.len(), NodeId::TEXT_LEN);
            assert_eq!(text.parse::<NodeId>().unwrap(), id);
        }
        assert!("short".parse::<NodeId>().is_err());
        assert!("zzzzzzzzzzzzzzzzzzzzzzzzz1".parse::<NodeId>().is_err());
        // Non-zero padding bits would alias another id.
        assert!("aaaaaaaaaaaaaaaaaaaaaaaaab".parse::<NodeId>().is_err());
    }

    #[test]
    fn subject_syntax() {
        assert!(Subject::literal("orders.eu.created").is_ok());
        assert!(Subject::literal("orders.*").is_err());
        assert!(Subject::pattern("orders.*.created").is_ok());
        assert!(Subject::pattern("orders.>").is_ok());
        assert!(Subject::pattern(">").is_ok());
        assert!(Subject::pattern("orders.>.x").is_err());
        assert!(Subject::pattern("orders.a*").is_err());
        assert!(Subject::pattern("orders..x").is_err());
        assert!(Subject::pattern("orders x").is_err());
        assert!(Subject::pattern("").is_err());
        assert!(Subject::pattern(&"a".repeat(2000)).is_err());
    }
}
