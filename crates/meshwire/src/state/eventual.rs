//! Replicas of eventual maps on one node, and their replication over the
//! mesh; the CRDT itself is [`meshwire_proto::crdt`] (sans-IO).
//!
//! ```text
//! local write ──► LwwMap (this node) ──► delta ── _CRDT.d.<map> (reliable) ──► every replica
//! every 2 s   ──► digest ── _CRDT.sync (queue group "crdt": one router) ──► buckets + their entries
//!                 our entries of those buckets ── _CRDT.d.<map> ──────────────► every replica
//! ```
//!
//! Routers keep a replica of every map they hear of (up to [`MAX_MAPS`]),
//! so data outlives the clients that wrote it, and answer anti-entropy
//! requests. Other nodes keep replicas of the maps they open.

use super::map::{Cas, Deleted};
use super::raft::Change;
use super::MapError;
use crate::{Error, Message, Node};
use bytes::Bytes;
use meshwire_proto::crdt::{self, Buckets, Delta, Digest, LwwMap, MergeReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Deltas of map `M` travel on `_CRDT.d.M`.
const DELTAS: &str = "_CRDT.d";
/// Anti-entropy requests, served by routers in queue group [`SYNC_GROUP`].
const SYNC: &str = "_CRDT.sync";
const SYNC_GROUP: &str = "crdt";
/// How often each replica compares digests with a router.
const ANTI_ENTROPY_EVERY: Duration = Duration::from_secs(2);
/// How long one anti-entropy exchange may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// The most maps a router keeps replicas of (a bound against a peer that
/// invents map names).
pub(crate) const MAX_MAPS: usize = 1024;
/// Changes buffered per watcher before it is told it fell behind.
const WATCH_BUFFER: usize = 4096;

fn delta_subject(map: &str) -> String {
    format!("{DELTAS}.{map}")
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An anti-entropy request: "here is my digest of `map`".
#[derive(Debug, Serialize, Deserialize)]
struct SyncRequest {
    map: String,
    /// Create the map at the router if it has none (false when a node only
    /// asks whether the map exists).
    create: bool,
    digest: Vec<u8>,
}

/// The answer: the buckets that differ and the router's entries in them.
#[derive(Debug, Serialize, Deserialize)]
enum SyncReply {
    Diff { buckets: Vec<u8>, delta: Vec<u8> },
    UnknownMap,
    Failed(String),
}

/// One map's replica and its watchers.
struct Replica {
    map: LwwMap,
    watchers: broadcast::Sender<Change>,
}

impl Replica {
    fn new(node: crate::NodeId) -> Self {
        Self {
            map: LwwMap::new(node),
            watchers: broadcast::channel(WATCH_BUFFER).0,
        }
    }

    fn announce(&self, name: &str, changes: impl IntoIterator<Item = crdt::Change>) {
        for c in changes {
            // No watcher: nothing to do.
            let _ = self.watchers.send(to_change(name, c));
        }
    }
}

fn to_change(map: &str, c: crdt::Change) -> Change {
    Change {
        map: map.to_owned(),
        version: c.stamp.version(),
        key: c.key,
        value: c.value.map(|v| v.to_vec()),
    }
}

struct Replicas {
    node: Node,
    router: bool,
    maps: Mutex<BTreeMap<String, Replica>>,
    /// Per-map delta subscriptions of a non-router node.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// This node's replicas of eventual maps. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ReplicaHandle(Arc<Replicas>);

impl std::fmt::Debug for ReplicaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaHandle")
            .field("router", &self.0.router)
            .finish_non_exhaustive()
    }
}

impl ReplicaHandle {
    /// Starts replication for `node`: a router takes every map's deltas and
    /// answers anti-entropy; every node compares digests periodically.
    pub(crate) async fn start(node: Node) -> Result<Self, MapError> {
        let router = node.listen_addr().is_some();
        let handle = ReplicaHandle(Arc::new(Replicas {
            node: node.clone(),
            router,
            maps: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(Vec::new()),
        }));
        if router {
            let deltas = node.subscribe(format!("{DELTAS}.>")).await?;
            handle.spawn(handle.clone().take_deltas(deltas));
            let sync = node.subscribe(SYNC).group(SYNC_GROUP).await?;
            handle.spawn(handle.clone().serve_sync(sync));
        }
        handle.spawn(handle.clone().anti_entropy());
        Ok(handle)
    }

    /// Stops replication (the replicas stay readable in memory).
    pub(crate) fn shutdown(&self) {
        for t in std::mem::take(&mut *self.tasks()) {
            t.abort();
        }
    }

    fn tasks(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.0.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn maps(&self) -> MutexGuard<'_, BTreeMap<String, Replica>> {
        self.0.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let t = tokio::spawn(f);
        self.tasks().push(t);
    }

    /// Opens (creating if needed) this node's replica of `name` and brings
    /// it up to date with a router's.
    pub(crate) async fn open(&self, name: &str) -> Result<(), MapError> {
        let fresh = self.ensure(name)?;
        if fresh {
            self.follow(name).await?;
        }
        match self.sync(name, true).await {
            // Alone (no router reachable): the replica works locally.
            Ok(_) | Err(MapError::NoGroup | MapError::Timeout(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Opens `name` only if some replica already has it.
    pub(crate) async fn open_existing(&self, name: &str) -> Result<(), MapError> {
        if self.maps().contains_key(name) {
            return Ok(());
        }
        // `default` always exists, in both modes.
        if name == crate::state::raft::DEFAULT_MAP {
            return self.open(name).await;
        }
        let unknown = || MapError::UnknownMap {
            map: name.to_owned(),
        };
        let fresh = self.ensure(name)?;
        match self.sync(name, false).await {
            Ok(true) => {
                if fresh {
                    self.follow(name).await?;
                }
                Ok(())
            }
            Ok(false) | Err(MapError::NoGroup) => {
                self.maps().remove(name);
                Err(unknown())
            }
            Err(e) => {
                self.maps().remove(name);
                Err(e)
            }
        }
    }

    /// Makes sure a replica of `name` exists; true if it was just made.
    fn ensure(&self, name: &str) -> Result<bool, MapError> {
        let mut maps = self.maps();
        if maps.contains_key(name) {
            return Ok(false);
        }
        if maps.len() >= MAX_MAPS {
            return Err(MapError::Invalid(format!(
                "this node already holds {MAX_MAPS} eventual maps"
            )));
        }
        maps.insert(name.to_owned(), Replica::new(self.0.node.id()));
        Ok(true)
    }

    /// A non-router node takes the map's deltas (a router takes them all).
    async fn follow(&self, name: &str) -> Result<(), MapError> {
        if self.0.router {
            return Ok(());
        }
        let sub = self.0.node.subscribe(delta_subject(name)).await?;
        self.spawn(self.clone().take_deltas(sub));
        Ok(())
    }

    fn with_map<T>(&self, name: &str, f: impl FnOnce(&mut Replica) -> T) -> Result<T, MapError> {
        let mut maps = self.maps();
        let replica = maps.get_mut(name).ok_or_else(|| MapError::UnknownMap {
            map: name.to_owned(),
        })?;
        Ok(f(replica))
    }

    pub(crate) fn get(&self, name: &str, key: &str) -> Result<Option<(Vec<u8>, u64)>, MapError> {
        self.with_map(name, |r| {
            r.map
                .get(key)
                .map(|e| (e.value.to_vec(), e.stamp.version()))
        })
    }

    pub(crate) fn list(&self, name: &str, prefix: &str) -> Result<super::RawListing, MapError> {
        self.with_map(name, |r| {
            let entries = r
                .map
                .iter_prefix(prefix)
                .map(|e| (e.key.to_owned(), e.value.to_vec(), e.stamp.version()))
                .collect();
            (entries, r.map.clock().last().as_u64())
        })
    }

    /// The replica's clock: every change merged from now on is stamped
    /// above it or arrives late from a partition.
    pub(crate) fn version(&self, name: &str) -> Result<u64, MapError> {
        self.with_map(name, |r| r.map.clock().last().as_u64())
    }

    pub(crate) fn subscribe(&self, name: &str) -> Result<broadcast::Receiver<Change>, MapError> {
        self.with_map(name, |r| r.watchers.subscribe())
    }

    pub(crate) fn changes_since(
        &self,
        name: &str,
        prefix: &str,
        after: u64,
    ) -> Result<Vec<Change>, MapError> {
        self.with_map(name, |r| {
            r.map
                .changes_since(after, prefix)
                .into_iter()
                .map(|c| to_change(name, c))
                .collect()
        })
    }

    pub(crate) async fn put(
        &self,
        name: &str,
        key: String,
        value: Vec<u8>,
    ) -> Result<u64, MapError> {
        let update = self.write(name, |m, now| m.put(&key, Bytes::from(value), now))?;
        let version = update.change.stamp.version();
        self.gossip(name, update.delta).await?;
        Ok(version)
    }

    pub(crate) async fn delete(&self, name: &str, key: String) -> Result<Deleted, MapError> {
        let update = self.write(name, |m, now| m.delete(&key, now))?;
        match update {
            Some(update) => {
                let version = update.change.stamp.version();
                self.gossip(name, update.delta).await?;
                Ok(Deleted {
                    existed: true,
                    version,
                })
            }
            None => Ok(Deleted {
                existed: false,
                version: self.get(name, &key)?.map_or(0, |(_, v)| v),
            }),
        }
    }

    pub(crate) async fn cas(
        &self,
        name: &str,
        key: String,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<Cas, MapError> {
        // A mismatch is an answer, not an error: Err(current version).
        let outcome = self.write(name, |m, now| {
            match m.cas(&key, expected, Bytes::from(value), now) {
                Ok(update) => Ok(Ok(update)),
                Err(crdt::MapError::VersionMismatch { actual, .. }) => Ok(Err(actual)),
                Err(e) => Err(e),
            }
        })?;
        match outcome {
            Ok(update) => {
                let version = update.change.stamp.version();
                self.gossip(name, update.delta).await?;
                Ok(Cas::Swapped { version })
            }
            Err(current) => Ok(Cas::Mismatch { current }),
        }
    }

    /// Runs a local write on the replica and tells its watchers.
    fn write<T: WriteOutcome>(
        &self,
        name: &str,
        op: impl FnOnce(&mut LwwMap, u64) -> Result<T, crdt::MapError>,
    ) -> Result<T, MapError> {
        self.with_map(name, |r| {
            let out = op(&mut r.map, wall_ms()).map_err(local_error)?;
            if let Some(change) = out.change() {
                r.announce(name, [change.clone()]);
            }
            Ok(out)
        })?
    }

    /// Hands a delta to the mesh (reliably: it resolves once the first
    /// router owns it; alone, the node keeps the write and anti-entropy
    /// ships it later).
    async fn gossip(&self, name: &str, delta: Delta) -> Result<(), MapError> {
        let bytes = delta
            .to_bytes()
            .map_err(|e| MapError::Invalid(e.to_string()))?;
        match self.0.node.publish(delta_subject(name), bytes).await {
            Ok(()) => Ok(()),
            // Written locally; the mesh learns of it at the next exchange.
            Err(Error::NoResponders { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Merges deltas from `sub` until it ends.
    async fn take_deltas(self, mut sub: crate::Subscription) {
        while let Some(msg) = sub.recv().await {
            let Some(name) = msg
                .subject()
                .strip_prefix(DELTAS)
                .and_then(|s| s.strip_prefix('.'))
            else {
                continue;
            };
            if let Err(e) = self.merge_bytes(name, msg.payload().clone(), true) {
                tracing::warn!(map = name, "dropped a delta: {e}");
            }
        }
    }

    /// Decodes and merges a delta; creates the replica if `create` and the
    /// map is new here.
    fn merge_bytes(&self, name: &str, bytes: Bytes, create: bool) -> Result<(), MapError> {
        crate::state::raft::validate_map_name(name)
            .map_err(|e| MapError::Invalid(e.to_string()))?;
        let delta = Delta::decode(bytes).map_err(|e| MapError::Protocol(e.to_string()))?;
        if create {
            self.ensure(name)?;
        }
        let report = self.with_map(name, |r| {
            let report = r.map.merge(delta, wall_ms()).map_err(local_error)?;
            r.announce(name, report.changes.iter().cloned());
            Ok::<MergeReport, MapError>(report)
        })??;
        for s in &report.skipped {
            tracing::warn!(map = name, key = %s.key, "left out an entry stamped too far in the future: {}", s.error);
        }
        Ok(())
    }

    /// Answers anti-entropy requests (routers).
    async fn serve_sync(self, mut sub: crate::Subscription) {
        while let Some(msg) = sub.recv().await {
            let reply = self.answer_sync(&msg);
            let bytes = postcard::to_allocvec(&reply).unwrap_or_default();
            if let Err(e) = self.0.node.respond(&msg, bytes).await {
                tracing::debug!("could not answer an anti-entropy request: {e}");
            }
        }
    }

    fn answer_sync(&self, msg: &Message) -> SyncReply {
        let req: SyncRequest = match postcard::from_bytes(msg.payload()) {
            Ok(r) => r,
            Err(e) => return SyncReply::Failed(format!("malformed request: {e}")),
        };
        if let Err(e) = crate::state::raft::validate_map_name(&req.map) {
            return SyncReply::Failed(e.to_string());
        }
        let theirs = match Digest::decode(Bytes::from(req.digest)) {
            Ok(d) => d,
            Err(e) => return SyncReply::Failed(format!("malformed digest: {e}")),
        };
        if !self.maps().contains_key(&req.map) {
            if !req.create {
                return SyncReply::UnknownMap;
            }
            if let Err(e) = self.ensure(&req.map) {
                return SyncReply::Failed(e.to_string());
            }
        }
        let limit = self.0.node.max_payload() / 2;
        let diff = self.with_map(&req.map, |r| {
            let ours = r
                .map
                .digest_with(theirs.bucket_count())
                .map_err(|e| e.to_string())?;
            let mut buckets = ours.diff(&theirs);
            // Keep the reply within one message: halve the buckets until it
            // fits (the next exchange carries the rest).
            loop {
                let delta = r.map.entries_in(&buckets);
                let bytes = delta.to_bytes().map_err(|e| e.to_string())?;
                if bytes.len() <= limit || buckets.len() <= 1 {
                    return Ok::<_, String>((buckets, bytes));
                }
                let keep = buckets.ids()[..buckets.len() / 2].to_vec();
                buckets = Buckets::new(buckets.count(), keep).map_err(|e| e.to_string())?;
            }
        });
        match diff {
            Ok(Ok((buckets, delta))) => SyncReply::Diff {
                buckets: buckets.to_bytes().to_vec(),
                delta: delta.to_vec(),
            },
            Ok(Err(e)) => SyncReply::Failed(e),
            Err(e) => SyncReply::Failed(e.to_string()),
        }
    }

    /// One anti-entropy exchange for `name` with some router: their entries
    /// of differing buckets are merged here, ours are published to all.
    /// Returns whether the router knows the map.
    async fn sync(&self, name: &str, create: bool) -> Result<bool, MapError> {
        let digest = self.with_map(name, |r| r.map.digest())?;
        let req = SyncRequest {
            map: name.to_owned(),
            create,
            digest: digest.to_bytes().to_vec(),
        };
        let bytes = postcard::to_allocvec(&req).map_err(|e| MapError::Protocol(e.to_string()))?;
        let reply = match self.0.node.request(SYNC, bytes).timeout(SYNC_TIMEOUT).await {
            Ok(r) => r,
            Err(Error::NoResponders { .. }) => return Err(MapError::NoGroup),
            Err(Error::Timeout(t)) => return Err(MapError::Timeout(t)),
            Err(e) => return Err(e.into()),
        };
        let reply: SyncReply =
            postcard::from_bytes(reply.payload()).map_err(|e| MapError::Protocol(e.to_string()))?;
        let (buckets, delta) = match reply {
            SyncReply::Diff { buckets, delta } => (buckets, delta),
            SyncReply::UnknownMap => return Ok(false),
            SyncReply::Failed(e) => return Err(MapError::Protocol(e)),
        };
        let buckets =
            Buckets::decode(Bytes::from(buckets)).map_err(|e| MapError::Protocol(e.to_string()))?;
        if buckets.is_empty() {
            return Ok(true);
        }
        // Ours before merging theirs, so that we do not echo their entries.
        let ours = self.with_map(name, |r| r.map.entries_in(&buckets))?;
        self.merge_bytes(name, Bytes::from(delta), false)?;
        if !ours.is_empty() {
            for part in ours.split(self.0.node.max_payload() / 2) {
                self.gossip(name, part).await?;
            }
        }
        Ok(true)
    }

    /// Every [`ANTI_ENTROPY_EVERY`], one exchange per map held here.
    async fn anti_entropy(self) {
        let mut tick = tokio::time::interval(ANTI_ENTROPY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let names: Vec<String> = self.maps().keys().cloned().collect();
            for name in names {
                match self.sync(&name, true).await {
                    Ok(_) | Err(MapError::NoGroup) => {}
                    Err(e) => tracing::debug!(map = %name, "anti-entropy: {e}"),
                }
            }
        }
    }
}

/// What a local write returns: its visible change, if any.
trait WriteOutcome {
    fn change(&self) -> Option<&crdt::Change>;
}

impl WriteOutcome for crdt::Update {
    fn change(&self) -> Option<&crdt::Change> {
        Some(&self.change)
    }
}

impl WriteOutcome for Option<crdt::Update> {
    fn change(&self) -> Option<&crdt::Change> {
        self.as_ref().map(|u| &u.change)
    }
}

impl WriteOutcome for Result<crdt::Update, u64> {
    fn change(&self) -> Option<&crdt::Change> {
        self.as_ref().ok().map(|u| &u.change)
    }
}

fn local_error(e: crdt::MapError) -> MapError {
    MapError::Invalid(e.to_string())
}
