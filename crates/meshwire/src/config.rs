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
    /// A connection must finish its handshake within this time.
    pub handshake_timeout: Duration,
    /// A router keeps a disconnected peer's session (and what was routed to
    /// it) this long before dropping it.
    pub session_retention: Duration,
    /// ... and this long for a client session with a persistent name.
    pub named_session_retention: Duration,
    /// Most connections a node holds at once (handshaking or up).
    pub max_links: usize,
    /// Unacknowledged messages to one peer beyond which the router stops
    /// granting credit to publishers (backpressure).
    pub peer_high_water: usize,
    /// A consumer behind `peer_high_water` for this long is cut off.
    pub slow_consumer_timeout: Duration,
    /// A disconnected client session holding more than this many messages
    /// is dropped (persistent sessions are bounded by count and bytes).
    pub retained_max_messages: usize,
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
            peer_high_water: 8 * 1024,
            slow_consumer_timeout: Duration::from_secs(30),
            retained_max_messages: 64 * 1024,
            reconnect_min: Duration::from_millis(20),
            reconnect_max: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(10),
            permissions_poll: Duration::from_secs(1),
        }
    }
}
