//! The byte layout of deltas, digests and bucket sets.
//!
//! Like the wire codec (`crate::wire`): big-endian integers, strings as
//! `u16` length + UTF-8, values as `u32` length + bytes, no padding. Each
//! message opens with a tag byte so a digest is never read as a delta, and
//! so a later layout can take a new tag:
//!
//! ```text
//! Delta   = 0xC1 | count: u32 | Entry * count
//! Entry   = key_len: u16 | key: UTF-8 | time: u64 | origin: [u8; 16]
//!         | kind: u8 (0 = deletion, 1 = value) | [value_len: u32 | value]
//! Digest  = 0xC2 | count: u16 | bucket: u64 * count     (count: power of two ≤ 1024)
//! Buckets = 0xC3 | count: u16 | n: u16 | id: u16 * n    (ids ascending, < count)
//! ```
//!
//! Decoding checks the layout only (lengths, tags, UTF-8, a non-zero
//! time); the size limits of a map are checked by
//! [`LwwMap::merge`](super::LwwMap::merge), which knows them. Nothing is
//! allocated that the input does not hold: counts are checked against the
//! bytes left before any vector is reserved.

use super::delta::{Delta, DeltaEntry, Stamp};
use super::error::CodecError;
use super::hlc::Timestamp;
use super::sync::{Buckets, Digest};
use crate::wire::NodeId;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The tag of an encoded [`Delta`].
const TAG_DELTA: u8 = 0xC1;
/// The tag of an encoded [`Digest`].
const TAG_DIGEST: u8 = 0xC2;
/// The tag of an encoded [`Buckets`].
const TAG_BUCKETS: u8 = 0xC3;

/// Bytes of an entry besides its key and value: key length, time, origin,
/// kind. The smallest an entry can be, which bounds a count.
const ENTRY_FIXED_LEN: usize = 2 + 8 + 16 + 1;

impl Delta {
    /// The size of [`Delta::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        1 + 4 + self.entries.iter().map(entry_len).sum::<usize>()
    }

    /// Appends the encoded delta to `dst`. Fails, writing nothing, if a
    /// key is longer than 65 535 bytes or a value than `u32::MAX` (a
    /// delta made by a map never is: its limits are within those).
    pub fn encode(&self, dst: &mut BytesMut) -> Result<(), CodecError> {
        let count = u32::try_from(self.entries.len()).map_err(|_| CodecError::TooLong {
            what: "entry count",
            len: self.entries.len(),
        })?;
        for e in &self.entries {
            check_len(e.key.len(), u16::MAX.into(), "key")?;
            if let Some(v) = &e.value {
                check_len(v.len(), u32::MAX as usize, "value")?;
            }
        }
        dst.reserve(self.encoded_len());
        dst.put_u8(TAG_DELTA);
        dst.put_u32(count);
        for e in &self.entries {
            // Lengths checked above.
            dst.put_u16(e.key.len() as u16);
            dst.put_slice(e.key.as_bytes());
            dst.put_u64(e.stamp.time.as_u64());
            dst.put_slice(e.stamp.origin.as_bytes());
            match &e.value {
                None => dst.put_u8(0),
                Some(v) => {
                    dst.put_u8(1);
                    dst.put_u32(v.len() as u32);
                    dst.put_slice(v);
                }
            }
        }
        Ok(())
    }

    /// The encoded delta in a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, CodecError> {
        let mut b = BytesMut::new();
        self.encode(&mut b)?;
        Ok(b.freeze())
    }

    /// Decodes a whole message. Values are slices of `bytes`, not copies.
    pub fn decode(bytes: Bytes) -> Result<Delta, CodecError> {
        let mut r = Reader::new(bytes, TAG_DELTA)?;
        let count = r.u32("entry count")? as usize;
        r.need(count.saturating_mul(ENTRY_FIXED_LEN), "entries")?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let key_len = r.u16("key length")? as usize;
            let key = r.take(key_len, "key")?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| CodecError::InvalidValue("key (not UTF-8)"))?;
            let time = Timestamp::from_u64(r.u64("time")?);
            if time == Timestamp::ZERO {
                return Err(CodecError::InvalidValue("time 0"));
            }
            let mut origin = [0u8; 16];
            r.need(16, "origin")?;
            r.b.copy_to_slice(&mut origin);
            let value = match r.u8("kind")? {
                0 => None,
                1 => {
                    let n = r.u32("value length")? as usize;
                    Some(r.take(n, "value")?)
                }
                _ => return Err(CodecError::InvalidValue("entry kind")),
            };
            entries.push(DeltaEntry {
                key,
                stamp: Stamp::new(time, NodeId::from_bytes(origin)),
                value,
            });
        }
        r.finish()?;
        Ok(Delta { entries })
    }

    /// Cuts the delta into deltas of at most `max_encoded` bytes each
    /// (one entry larger than that travels alone), in order: anti-entropy
    /// batches can be larger than a frame.
    pub fn split(self, max_encoded: usize) -> Vec<Delta> {
        let mut out = Vec::new();
        let mut cur = Delta::new();
        let mut cur_len = 1 + 4;
        for e in self.entries {
            let n = entry_len(&e);
            if !cur.is_empty() && cur_len + n > max_encoded {
                out.push(std::mem::take(&mut cur));
                cur_len = 1 + 4;
            }
            cur_len += n;
            cur.push(e);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }
}

/// The encoded size of one entry.
fn entry_len(e: &DeltaEntry) -> usize {
    ENTRY_FIXED_LEN + e.key.len() + e.value.as_ref().map_or(0, |v| 4 + v.len())
}

fn check_len(len: usize, max: usize, what: &'static str) -> Result<(), CodecError> {
    if len > max {
        Err(CodecError::TooLong { what, len })
    } else {
        Ok(())
    }
}

impl Digest {
    /// Appends the encoded digest to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(3 + 8 * self.buckets().len());
        dst.put_u8(TAG_DIGEST);
        // At most MAX_BUCKETS (1024): fits.
        dst.put_u16(self.bucket_count() as u16);
        for &b in self.buckets() {
            dst.put_u64(b);
        }
    }

    /// The encoded digest in a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// Decodes a whole message.
    pub fn decode(bytes: Bytes) -> Result<Digest, CodecError> {
        let mut r = Reader::new(bytes, TAG_DIGEST)?;
        let count = r.u16("bucket count")? as usize;
        r.need(count * 8, "buckets")?;
        let buckets = (0..count).map(|_| r.b.get_u64()).collect();
        r.finish()?;
        Digest::from_buckets(buckets).map_err(|_| CodecError::InvalidValue("bucket count"))
    }
}

impl Buckets {
    /// Appends the encoded bucket set to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(5 + 2 * self.ids().len());
        dst.put_u8(TAG_BUCKETS);
        // count ≤ 1024 and the ids are fewer and smaller: all fit a u16.
        dst.put_u16(self.count() as u16);
        dst.put_u16(self.ids().len() as u16);
        for &id in self.ids() {
            dst.put_u16(id as u16);
        }
    }

    /// The encoded bucket set in a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// Decodes a whole message. Ids must be ascending and below the count
    /// (what [`Buckets::encode`] writes), so each set has one encoding.
    pub fn decode(bytes: Bytes) -> Result<Buckets, CodecError> {
        let mut r = Reader::new(bytes, TAG_BUCKETS)?;
        let count = u32::from(r.u16("bucket count")?);
        let n = r.u16("bucket id count")? as usize;
        r.need(n * 2, "bucket ids")?;
        let ids: Vec<u32> = (0..n).map(|_| u32::from(r.b.get_u16())).collect();
        r.finish()?;
        if ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CodecError::InvalidValue("bucket ids (not ascending)"));
        }
        Buckets::new(count, ids).map_err(|_| CodecError::InvalidValue("bucket count or id"))
    }
}

/// Bounds-checked field reader over one message.
struct Reader {
    b: Bytes,
}

impl Reader {
    /// Checks the tag and stands after it.
    fn new(mut b: Bytes, tag: u8) -> Result<Self, CodecError> {
        if !b.has_remaining() {
            return Err(CodecError::Truncated("tag"));
        }
        let t = b.get_u8();
        if t != tag {
            return Err(CodecError::UnknownTag(t));
        }
        Ok(Self { b })
    }
    fn need(&self, n: usize, what: &'static str) -> Result<(), CodecError> {
        if self.b.remaining() < n {
            Err(CodecError::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        self.need(1, what)?;
        Ok(self.b.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, CodecError> {
        self.need(2, what)?;
        Ok(self.b.get_u16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        self.need(4, what)?;
        Ok(self.b.get_u32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, CodecError> {
        self.need(8, what)?;
        Ok(self.b.get_u64())
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, CodecError> {
        self.need(n, what)?;
        Ok(self.b.split_to(n))
    }
    fn finish(self) -> Result<(), CodecError> {
        match self.b.remaining() {
            0 => Ok(()),
            extra => Err(CodecError::TrailingBytes(extra)),
        }
    }
}
