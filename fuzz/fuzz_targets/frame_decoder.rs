//! Fuzzes the frame decoder (DESIGN.md §6).
//!
//! Input layout: `n | n chunk-size bytes | stream`, where `n` is the first
//! byte modulo 8 (an empty input is an empty stream). The stream is fed to
//! a [`Decoder`] in chunks whose sizes cycle through `chunk byte + 1`
//! (`n == 0`: the whole stream at once), decoding after every chunk until
//! `Ok(None)` or `Err`. This is done with the default limits and with small
//! ones. Checked:
//!
//! - nothing panics, and every decoded frame consumed at least a header;
//! - `Ok(None)` leaves the buffer exactly as it was;
//! - chunked decoding yields the same frames and the same error as decoding
//!   the whole stream in one buffer;
//! - every decoded frame re-encodes to bytes that decode to it again.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meshwire_proto::wire::{Close, DecodeError, Decoder, Frame, Limits, HEADER_LEN};

/// The longest close reason `Frame::encode` writes unchanged.
const MAX_REASON: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let (chunks, stream) = match data.split_first() {
        None => (&[][..], data),
        Some((&n, rest)) => rest.split_at(usize::from(n % 8).min(rest.len())),
    };
    let small = Limits {
        max_frame: 256,
        max_subject: 16,
    };
    for limits in [Limits::default(), small] {
        let whole = decode_chunked(limits, stream, &[]);
        let chunked = decode_chunked(limits, stream, chunks);
        assert_eq!(whole, chunked, "chunking changed what was decoded");
    }
});

/// Feeds `stream` to a decoder in chunks of `sizes[i] + 1` bytes (cycling;
/// all at once when `sizes` is empty) and returns the frames decoded and
/// the error that ended decoding, if any.
fn decode_chunked(
    limits: Limits,
    stream: &[u8],
    sizes: &[u8],
) -> (Vec<Frame>, Option<DecodeError>) {
    let mut dec = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let size = match sizes.get(i % sizes.len().max(1)) {
            Some(&s) => usize::from(s) + 1,
            None => stream.len(),
        };
        i += 1;
        let end = (pos + size).min(stream.len());
        buf.extend_from_slice(&stream[pos..end]);
        pos = end;
        loop {
            let before = buf.clone();
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(buf.len() + HEADER_LEN <= before.len());
                    check_reencode(limits, &f);
                    frames.push(f);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) changed the buffer");
                    break;
                }
                Err(e) => {
                    let _ = e.to_string();
                    return (frames, Some(e));
                }
            }
        }
    }
    (frames, None)
}

/// Re-encodes `f` and checks that the bytes decode to it again.
fn check_reencode(limits: Limits, f: &Frame) {
    let f = canonical(f);
    let mut b = BytesMut::new();
    f.encode(&mut b);
    let n = b.len();
    let again = Decoder::new(limits).decode(&mut b);
    assert_eq!(
        again.as_ref(),
        Ok(&Some(f)),
        "re-encoded frame ({n} bytes) did not decode to itself"
    );
    assert!(b.is_empty(), "re-encoded frame left {} bytes", b.len());
}

/// `f` as it survives an encode: the encoder writes at most [`MAX_REASON`]
/// bytes of a close reason but the decoder accepts up to 64 KiB, so a long
/// reason from a peer is cut when re-encoded (by design: docs/PROTOCOL.md
/// §3.7). Everything else round-trips.
fn canonical(f: &Frame) -> Frame {
    match f {
        Frame::Close(c) if c.reason.len() > MAX_REASON => {
            let mut cut = MAX_REASON;
            while !c.reason.is_char_boundary(cut) {
                cut -= 1;
            }
            Frame::Close(Close {
                code: c.code,
                reason: c.reason[..cut].to_owned(),
            })
        }
        other => other.clone(),
    }
}
