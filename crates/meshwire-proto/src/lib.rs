//! # meshwire-proto — the sans-IO core of meshwire
//!
//! Everything meshwire says on a link is decided here, without sockets,
//! tasks or clocks: time is a parameter, bytes go in and come out.
//!
//! ```text
//!   driver (crate `meshwire`)            this crate
//!   ─────────────────────────            ───────────────────────────────
//!   socket bytes ──► wire::Decoder ──► Frame ──► session::Session::handle_frame(now)
//!   timer fired  ──────────────────────────────► Session::handle_timeout(now)
//!   user command ──────────────────────────────► Session::send(msg, now)
//!   socket write ◄── Session::poll_transmit(buf)  (many frames, one buffer)
//!   events       ◄── Session::poll_event()        (delivered messages, acks)
//!   next timer   ◄── Session::poll_timeout()
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`wire`] | frame types, byte layout, the codec and its limits |
//! | [`session`] | one link session: sequence numbers, acks, retransmission, de-duplication, ordering, credit, heartbeats, resume |
//! | [`routing`] | the subscription table: `*` and `>` wildcards, queue groups |
//! | [`crdt`] | eventually consistent replicated maps: hybrid logical clock, LWW map, anti-entropy digests |
//!
//! The crate is `#![forbid(unsafe_code)]` and never panics on input that
//! came off the network: decoding returns [`wire::DecodeError`], protocol
//! violations return [`session::SessionError`].

#![forbid(unsafe_code)]

pub mod collections;
pub mod crdt;
pub mod routing;
pub mod session;
pub mod wire;
