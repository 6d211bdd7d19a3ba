//! On-disk primitives shared by the log, its metadata and snapshots:
//! checksummed frames, and replacing a whole file so that a crash leaves
//! either the old or the new contents, never a mix.
//!
//! A frame is `len: u32 LE | crc: u32 LE | payload[len]`, where the CRC-32
//! covers the length bytes and the payload, so a flipped length is caught
//! like a flipped payload byte.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::Corruption;

/// Bytes in a frame's header (length and checksum).
pub(super) const FRAME_HEADER: usize = 8;

/// What [`decode_frame`] found at an offset.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Frame<'a> {
    /// A whole frame whose checksum matches; the next one starts at `next`.
    Complete {
        /// The payload.
        payload: &'a [u8],
        /// Offset just past this frame.
        next: usize,
    },
    /// The bytes end inside the frame's header or payload.
    Incomplete,
    /// A length of 0: never written by us (every payload has bytes), so
    /// this is zeroed space or damage.
    ZeroLength,
    /// A length beyond the limit the caller gave.
    TooLong(u32),
    /// The checksum does not match.
    Checksum,
}

/// Appends one frame holding `payload` to `out`.
pub(super) fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    // Payloads are bounded far below 4 GiB by the callers (entries by the
    // value limit, snapshots by `MAX_SNAPSHOT_LEN`), so this never saturates
    // in practice; if it did, the reader would reject the frame rather than
    // misread it.
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Reads the frame starting at `at` in `buf`, accepting payloads of at
/// most `max_len` bytes.
pub(super) fn decode_frame(buf: &[u8], at: usize, max_len: u32) -> Frame<'_> {
    let Some(header) = buf.get(at..at.saturating_add(FRAME_HEADER)) else {
        return Frame::Incomplete;
    };
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let len = u32::from_le_bytes(len_bytes);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Frame::ZeroLength;
    }
    if len > max_len {
        return Frame::TooLong(len);
    }
    let start = at + FRAME_HEADER;
    let end = start.saturating_add(len as usize);
    let Some(payload) = buf.get(start..end) else {
        return Frame::Incomplete;
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Frame::Checksum;
    }
    Frame::Complete { payload, next: end }
}

/// Bytes of the format tag that starts every file replaced whole.
pub(super) const MAGIC_LEN: usize = 8;

/// The contents of a file replaced whole (metadata, snapshots): an 8-byte
/// format tag naming what the file is and its format version, then one
/// frame.
pub(super) fn encode_file(magic: &[u8; MAGIC_LEN], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC_LEN + FRAME_HEADER + payload.len());
    out.extend_from_slice(magic);
    encode_frame(payload, &mut out);
    out
}

/// The payload of a file written by [`encode_file`], or what is wrong with
/// it and at which offset. Such files are replaced atomically, so any
/// damage, even at the end, is corruption rather than a torn write.
pub(super) fn decode_file<'a>(
    magic: &[u8; MAGIC_LEN],
    bytes: &'a [u8],
    max_len: u32,
) -> Result<&'a [u8], (u64, Corruption)> {
    if bytes.get(..MAGIC_LEN) != Some(magic.as_slice()) {
        return Err((0, Corruption::BadMagic));
    }
    match decode_frame(bytes, MAGIC_LEN, max_len) {
        Frame::Complete { payload, .. } => Ok(payload),
        other => Err((MAGIC_LEN as u64, other.damage())),
    }
}

impl Frame<'_> {
    /// The corruption this frame shows, when it is not complete.
    pub(super) fn damage(&self) -> Corruption {
        match self {
            Frame::Complete { .. } | Frame::Incomplete => Corruption::Truncated,
            Frame::ZeroLength => Corruption::ZeroLength,
            Frame::TooLong(len) => Corruption::TooLong(*len),
            Frame::Checksum => Corruption::Checksum,
        }
    }
}

/// Replaces `path` with `bytes` so that a crash at any point leaves either
/// the old file or the new one: write a temporary file beside it, fsync it,
/// rename it over `path`, fsync the directory (which makes the rename
/// itself durable).
pub(super) fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(parent_of(path))
}

/// The temporary name [`replace_file`] writes first; files with it are
/// leftovers of a crash and may be removed on open.
pub(super) fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Fsyncs a directory, making the creation, removal or renaming of its
/// entries durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    // Opening a directory read-only and calling fsync on it is how POSIX
    // systems persist directory entries.
    OpenOptions::new().read(true).open(dir)?.sync_all()
}

/// Creates `dir` (and its parents) and makes the new entries durable.
pub(super) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    sync_dir(dir)?;
    sync_dir(parent_of(dir))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_decodes_to_its_payload() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        encode_frame(b"world!", &mut buf);
        assert_eq!(
            decode_frame(&buf, 0, 64),
            Frame::Complete {
                payload: b"hello",
                next: 13
            }
        );
        assert_eq!(
            decode_frame(&buf, 13, 64),
            Frame::Complete {
                payload: b"world!",
                next: buf.len()
            }
        );
        assert_eq!(decode_frame(&buf, buf.len(), 64), Frame::Incomplete);
    }

    #[test]
    fn damage_is_told_apart_from_a_short_read() {
        let mut buf = Vec::new();
        encode_frame(b"payload", &mut buf);
        for cut in 1..buf.len() {
            assert_eq!(
                decode_frame(&buf[..cut], 0, 64),
                Frame::Incomplete,
                "cut at {cut}"
            );
        }
        assert_eq!(decode_frame(&buf, 0, 3), Frame::TooLong(7));
        assert_eq!(decode_frame(&[0; 16], 0, 64), Frame::ZeroLength);
        // Every single-bit flip, in the length or in the payload, is caught.
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_frame(&bad, 0, 1 << 20), Frame::Complete { .. }),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn a_whole_file_checks_its_tag_and_checksum() {
        let file = encode_file(b"MWTEST01", b"state");
        assert_eq!(decode_file(b"MWTEST01", &file, 64), Ok(&b"state"[..]));
        assert_eq!(
            decode_file(b"MWOTHER1", &file, 64),
            Err((0, Corruption::BadMagic))
        );
        assert_eq!(
            decode_file(b"MWTEST01", &file[..file.len() - 1], 64),
            Err((8, Corruption::Truncated))
        );
        let mut bad = file.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x20;
        assert_eq!(
            decode_file(b"MWTEST01", &bad, 64),
            Err((8, Corruption::Checksum))
        );
    }

    #[test]
    fn replacing_a_file_leaves_no_temporary_behind() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("meta");
        replace_file(&path, b"one")?;
        replace_file(&path, b"two")?;
        assert_eq!(fs::read(&path)?, b"two");
        assert!(!temp_path(&path).exists());
        Ok(())
    }
}
