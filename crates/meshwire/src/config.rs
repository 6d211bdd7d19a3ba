//! Node settings with their defaults.

use meshwire_proto::session::SessionConfig;
use meshwire_proto::wire::Limits;
use std::time::Duration;

/// Everything tunable about a node. Built by [`crate::NodeBuilder`]; the
/// defaults suit loopback and LAN deployments.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Per-link session tunables (outbox, window, acks, timers).
    pub session: SessionConfig,
    /// Frame and subject size limits.
    pub limits: Limits,
    /// Largest payload accepted by `publish`.
    pub max_payload: usize,
    /// A connection must finish its handshake within this time, counted
    /// from accept (or connect) and covering both the TLS handshake and the
    /// MWIR `Hello`/`Welcome`/`Resume`; a peer still short of a link then
    /// is closed with `HandshakeTimeout`. Default 5 s.
    pub handshake_timeout: Duration,
    /// A router keeps a disconnected peer's session (and what was routed to
    /// it) this long before dropping it.
    pub session_retention: Duration,
    /// ... and this long for a client session with a persistent name.
    pub named_session_retention: Duration,
    /// Most connections a node holds at once (handshaking or up). An
    /// accepted connection beyond it is closed at once, before any TLS
    /// work. Default 4096.
    pub max_links: usize,
    /// Most connections one IP address may hold at once (handshaking or
    /// up); beyond it new ones from that address are closed at accept.
    /// Unix-socket and `mem:` connections have no address and are exempt.
    /// Clients behind one NAT share an address: raise it for them. `0`: no
    /// limit. Default 256.
    pub max_links_per_ip: usize,
    /// Most accepted connections still in their handshake (TLS and MWIR)
    /// at once; beyond it new connections are closed at accept, so that a
    /// flood of half-open connections costs a bounded amount of memory and
    /// CPU. Default 512.
    pub max_handshakes: usize,
    /// Most accepted connections from one IP address still in their
    /// handshake at once, so that a few addresses cannot take every one of
    /// `max_handshakes` and shut others out. Unix-socket and `mem:`
    /// connections are exempt. `0`: no limit. Default 64.
    pub max_handshakes_per_ip: usize,
    /// Unacknowledged messages to one peer beyond which the router stops
    /// granting credit to publishers (backpressure). Default 8192.
    pub peer_high_water: usize,
    /// Bytes of payload queued for one peer (reliable messages not yet
    /// acknowledged, plus best-effort ones not yet written) beyond which it
    /// is congested like a peer past `peer_high_water`: publishers wait,
    /// best-effort messages to it are dropped (and counted), and a client
    /// that stays there past `slow_consumer_timeout` is cut off. A
    /// disconnected client session holding more is dropped. Default 64 MiB.
    pub max_pending_bytes: usize,
    /// A consumer behind `peer_high_water` or `max_pending_bytes` for this
    /// long is cut off with `Close(SlowConsumer)` saying which limit. Default
    /// 30 s.
    pub slow_consumer_timeout: Duration,
    /// A disconnected client session holding more than this many messages
    /// is dropped (persistent sessions are bounded by count and bytes).
    pub retained_max_messages: usize,
    /// Strikes against ping and reconnect floods.
    pub strikes: StrikeConfig,
    /// Reconnect back-off: first delay.
    pub reconnect_min: Duration,
    /// Reconnect back-off: ceiling.
    pub reconnect_max: Duration,
    /// How long `shutdown` waits for outboxes to drain.
    pub drain_timeout: Duration,
    /// How often a router looks at its permissions file for changes
    /// ([`crate::NodeBuilder::permissions_file`]).
    pub permissions_poll: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            session: SessionConfig {
                // The engine transmits once per batch of input, so an ack
                // "now" is already one ack per batch: cumulative under load,
                // immediate when idle (no timer on the latency path).
                ack_delay: Duration::ZERO,
                ..SessionConfig::default()
            },
            limits: Limits::default(),
            max_payload: 1024 * 1024,
            handshake_timeout: Duration::from_secs(5),
            session_retention: Duration::from_secs(60),
            named_session_retention: Duration::from_secs(3600),
            max_links: 4096,
            max_links_per_ip: 256,
            max_handshakes: 512,
            max_handshakes_per_ip: 64,
            peer_high_water: 8 * 1024,
            max_pending_bytes: 64 * 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(30),
            strikes: StrikeConfig::default(),
            retained_max_messages: 64 * 1024,
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(10),
            permissions_poll: Duration::from_secs(1),
        }
    }
}

/// Strikes: a source (an IP address, or a node by its id) that does
/// something too often within `window` gets a strike; at
/// `strikes_to_refuse` strikes its link is closed with `Close(Refused)`
/// saying why, and the source is refused for `cool_off`. Strikes are
/// forgotten one `cool_off` after the last.
///
/// The counts are fixed windows: a burst is struck at once, a sustained
/// rate once per window. A limit of `0` turns that count off. The
/// defaults sit well above what a well-behaved peer does (heartbeats every
/// 3 s, reconnects with exponential back-off to 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StrikeConfig {
    /// The counting window. Default 10 s.
    pub window: Duration,
    /// Pings one node may send per window: default 200 (20 a second
    /// sustained; a peer pings every 3 s, or once per retransmission
    /// timeout while it waits for credit).
    pub max_pings: u32,
    /// Links one node may open to this one per window (reconnects).
    /// Default 30.
    pub max_links_per_node: u32,
    /// Connections one IP address may open per window, however they end.
    /// Default 1000 (100 a second); Unix-socket and `mem:` connections are
    /// exempt.
    pub max_connections_per_ip: u32,
    /// Strikes that get a source refused. Default 3.
    pub strikes_to_refuse: u32,
    /// How long a struck-out source is refused. Default 30 s.
    pub cool_off: Duration,
    /// Sources tracked at once; the table never grows past it (when full,
    /// sources with nothing against them are forgotten first, and a source
    /// that finds no room is not counted). Default 4096.
    pub max_tracked: usize,
}

impl Default for StrikeConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            max_pings: 200,
            max_links_per_node: 30,
            max_connections_per_ip: 1000,
            strikes_to_refuse: 3,
            cool_off: Duration::from_secs(30),
            max_tracked: 4096,
        }
    }
}
