//! Fuzzes a session's receive path (DESIGN.md §6): whatever a peer sends
//! after the handshake must give a delivery, an ack, a typed error or
//! nothing, never a panic, and the session's own invariants must hold.
//!
//! Input layout: a script of operations, each selected by one byte:
//! - `0..=3`: the next `u16` bytes are decoded as frames and fed to
//!   `handle_frame` (decode errors end the link, as the driver does);
//! - `4`: advance time by the next byte in milliseconds (×16) and fire
//!   `handle_timeout`;
//! - `5`: the app sends a reliable message (lane from the next byte) if
//!   `can_send`;
//! - `6`: `poll_transmit` with a small budget;
//! - `7`: link down, then up again with a peer resume state made of the
//!   next 33 bytes (epoch, then per lane `recv_next`, `send_base` as `u32`).
//!
//! Checked after every step: events drain; acknowledged sequence numbers
//! never go back; what `poll_transmit` writes decodes; an ordered lane
//! delivers data only in sequence-number order is held by the session
//! itself and checked by the simulation, so here the focus is no panic and
//! bounded memory (the outbox never exceeds what the app sent).

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use meshwire_proto::session::{Event, Session, SessionConfig};
use meshwire_proto::wire::{Decoder, Lane, LaneResume, Limits, Message, Subject};
use std::time::{Duration, Instant};

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u32(&mut self) -> u32 {
        let b = self.take(4);
        let mut a = [0u8; 4];
        a[..b.len()].copy_from_slice(b);
        u32::from_be_bytes(a)
    }
}

fn resume(c: &mut Cursor<'_>) -> (u64, [LaneResume; 2]) {
    let epoch = u64::from(c.byte().unwrap_or(0) % 3);
    let lane = |c: &mut Cursor<'_>| LaneResume {
        recv_next: u64::from(c.u32()).max(1),
        send_base: u64::from(c.u32()).max(1),
    };
    (epoch, [lane(c), lane(c)])
}

fuzz_target!(|data: &[u8]| {
    let mut c = Cursor(data);
    let base = Instant::now();
    let mut now = base;
    let cfg = SessionConfig {
        outbox_max_messages: 64,
        recv_window: 128,
        ..SessionConfig::default()
    };
    let mut s = Session::new(cfg, 7, now);
    let (epoch, lanes) = resume(&mut c);
    s.handle_link_up(now, epoch, lanes);
    let decoder_limits = Limits {
        max_frame: 64 * 1024,
        max_subject: 256,
    };
    let subject = Subject::literal("fuzz.topic").expect("valid subject");
    let mut sent = 0usize;
    let mut acked = [0u64; 2];
    let mut out = BytesMut::new();
    for _ in 0..256 {
        let Some(op) = c.byte() else { break };
        match op % 8 {
            0..=3 => {
                let n = c.u32() as usize % 4096;
                let mut buf = BytesMut::from(c.take(n));
                let mut d = Decoder::new(decoder_limits);
                loop {
                    match d.decode(&mut buf) {
                        Ok(Some(f)) => {
                            if s.is_up() {
                                let _ = s.handle_frame(now, f);
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            s.handle_link_down(now);
                            break;
                        }
                    }
                }
            }
            4 => {
                now += Duration::from_millis(u64::from(c.byte().unwrap_or(0)) * 16);
                s.handle_timeout(now);
            }
            5 => {
                let lane = if c.byte().unwrap_or(0) % 2 == 0 {
                    Lane::Ordered
                } else {
                    Lane::Unordered
                };
                if s.can_send(lane) {
                    s.send(
                        lane,
                        Message::Publish {
                            subject: subject.clone(),
                            reply_to: None,
                            payload: Bytes::from_static(b"payload"),
                        },
                    );
                    sent += 1;
                }
            }
            6 => {
                out.clear();
                s.poll_transmit(now, &mut out, 4096);
                let mut d = Decoder::new(Limits::default());
                let mut check = out.clone();
                while let Some(f) = d.decode(&mut check).expect("our own frames decode") {
                    let _ = f;
                }
                assert!(check.is_empty(), "poll_transmit wrote a partial frame");
            }
            _ => {
                s.handle_link_down(now);
                let (epoch, lanes) = resume(&mut c);
                s.handle_link_up(now, epoch, lanes);
            }
        }
        while let Some(ev) = s.poll_event() {
            if let Event::Acked { lane, upto } = ev {
                assert!(upto >= acked[lane.index()], "acknowledgements went back");
                acked[lane.index()] = upto;
            }
        }
        assert!(s.outbox_len() <= sent, "outbox holds more than was sent");
    }
});
