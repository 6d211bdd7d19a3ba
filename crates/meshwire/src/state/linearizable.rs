//! The client side of linearizable maps: any node (member or not) sends
//! its request to `_KV.req`, one member of the Raft group takes it and, if
//! it does not lead, forwards it to the leader.
//!
//! Every write carries a random request id ([`Command::Once`]): the state
//! machine applies a request once and answers a second copy with the first
//! answer. So a write whose reply is lost (a member or the leader died, the
//! forward timed out) is simply sent again until the call's timeout, and a
//! failover costs a pause instead of an error. Only when the timeout ends
//! with a copy unanswered does the call fail with
//! [`MapError::Indeterminate`].

use super::raft::{Change, Command, CommandResult};
use super::wire::{self, Failure, GroupInfo, KvEnvelope, KvReply, KvRequest};
use super::MapError;
use crate::{Error, Node};
use std::time::Duration;
use tokio::time::Instant;

/// Talks to the Raft group on behalf of one node.
#[derive(Debug, Clone)]
pub(crate) struct GroupClient {
    node: Node,
    timeout: Duration,
}

/// The longest one attempt waits before it is sent again (to whichever
/// member takes it next). Longer than a member's forward to the leader, so
/// a member's own verdict usually arrives first.
const ATTEMPT: Duration = Duration::from_millis(2500);

impl GroupClient {
    pub(crate) fn new(node: Node, timeout: Duration) -> Self {
        Self { node, timeout }
    }

    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Proposes a command and returns what the state machine made of it.
    pub(crate) async fn write(&self, cmd: Command) -> Result<CommandResult, MapError> {
        // Refused here, without a round through Raft (the state machine
        // checks again when it applies).
        cmd.validate()
            .map_err(|e| MapError::Invalid(e.to_string()))?;
        let cmd = Command::Once {
            id: rand::random(),
            command: Box::new(cmd),
        };
        match self.call(KvRequest::Write(cmd), true).await? {
            KvReply::Written(CommandResult::UnknownMap { map }) => {
                Err(MapError::UnknownMap { map })
            }
            KvReply::Written(CommandResult::Rejected { reason }) => Err(MapError::Invalid(reason)),
            KvReply::Written(result) => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn get(
        &self,
        map: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, u64)>, MapError> {
        super::raft::validate_key(key).map_err(|e| MapError::Invalid(e.to_string()))?;
        let req = KvRequest::Get {
            map: map.to_owned(),
            key: key.to_owned(),
        };
        match self.call(req, false).await? {
            KvReply::Value(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn list(
        &self,
        map: &str,
        prefix: &str,
    ) -> Result<super::RawListing, MapError> {
        let req = KvRequest::List {
            map: map.to_owned(),
            prefix: prefix.to_owned(),
        };
        match self.call(req, false).await? {
            KvReply::Listed { entries, version } => Ok((entries, version)),
            other => Err(unexpected(other)),
        }
    }

    /// One long poll: changes after `after`, or none within `wait`.
    pub(crate) async fn poll_changes(
        &self,
        map: &str,
        prefix: &str,
        after: u64,
        wait: Duration,
    ) -> Result<(Vec<Change>, u64), MapError> {
        let req = KvRequest::Watch {
            map: map.to_owned(),
            prefix: prefix.to_owned(),
            after,
            wait_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
            max: 1024,
        };
        // The member holds the poll up to `wait`: give the reply room.
        let client = self
            .clone()
            .with_timeout(self.timeout.max(wait + Duration::from_secs(5)));
        match client.call(req, false).await {
            Ok(KvReply::Changes { changes, upto }) => Ok((changes, upto)),
            Ok(other) => Err(unexpected(other)),
            Err(MapError::Compacted { oldest, .. }) => Err(MapError::Compacted {
                from: after,
                oldest,
            }),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn members(&self) -> Result<GroupInfo, MapError> {
        match self.call(KvRequest::Members, false).await? {
            KvReply::Members(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    pub(crate) async fn membership(&self, req: KvRequest) -> Result<(), MapError> {
        match self.call(req, true).await? {
            KvReply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sends `request` to the group until it is answered or the client's
    /// timeout passes. `write`: the request may be applied by an attempt
    /// whose answer is lost (safe to repeat: writes are deduplicated,
    /// membership changes check first).
    async fn call(&self, request: KvRequest, write: bool) -> Result<KvReply, MapError> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        let bytes = wire::encode(&KvEnvelope { hops: 0, request });
        let mut pause = Duration::from_millis(20);
        // Whether some attempt may have been applied without our hearing.
        let mut unanswered = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let retry_why = if left.is_zero() {
                MapError::Timeout(self.timeout)
            } else {
                match self
                    .node
                    .request(wire::REQUESTS, bytes.clone())
                    .timeout(left.min(ATTEMPT))
                    .await
                {
                    Ok(reply) => match wire::decode::<KvReply>(reply.payload()) {
                        Ok(KvReply::Failed(Failure::NoLeader(why))) => MapError::NoLeader(why),
                        Ok(KvReply::Failed(Failure::Internal(why))) if write => {
                            unanswered = true;
                            MapError::Group(why)
                        }
                        Ok(KvReply::Failed(f)) => return Err(failure(f)),
                        Ok(reply) => return Ok(reply),
                        Err(e) => return Err(MapError::Protocol(e)),
                    },
                    Err(Error::NoResponders { .. }) => MapError::NoGroup,
                    Err(Error::Timeout(_)) => {
                        unanswered |= write;
                        MapError::Timeout(self.timeout)
                    }
                    Err(e) => return Err(MapError::Node(e)),
                }
            };
            if Instant::now() + pause >= deadline {
                return Err(if unanswered {
                    MapError::Indeterminate {
                        waited: started.elapsed(),
                    }
                } else {
                    retry_why
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
}

fn failure(f: Failure) -> MapError {
    match f {
        Failure::UnknownMap(map) => MapError::UnknownMap { map },
        Failure::Invalid(reason) => MapError::Invalid(reason),
        Failure::Compacted { oldest } => MapError::Compacted { from: 0, oldest },
        Failure::NoLeader(why) => MapError::NoLeader(why),
        Failure::Malformed(why) => {
            MapError::Protocol(format!("the member could not decode our request: {why}"))
        }
        Failure::Internal(why) => MapError::Group(why),
    }
}

fn unexpected(reply: KvReply) -> MapError {
    MapError::Protocol(format!("unexpected reply {reply:?}"))
}
