//! The shared-state face of [`Node`]: replicated maps and the Raft group.

use crate::state::eventual::ReplicaHandle;
use crate::state::map::Backend;
use crate::state::raft::{self, Command};
use crate::state::wire::KvRequest;
use crate::state::{Consistency, GroupClient, GroupInfo, MapError, SharedMap};
use crate::Node;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// How long map calls wait for the Raft group by default: room for a
/// leader election (under a second) and a few retries.
const MAP_TIMEOUT: Duration = Duration::from_secs(10);

impl Node {
    /// Opens the replicated map `name`, creating it if it does not exist
    /// (a Raft write for linearizable maps), with serde keys and values.
    ///
    /// - [`Consistency::Linearizable`]: held by the Raft group of the
    ///   routers started with [`raft`](crate::NodeBuilder::raft); any node
    ///   may call, and requests reach the leader.
    /// - [`Consistency::Eventual`]: every node that opens it keeps a
    ///   replica and writes locally; replicas converge over the mesh.
    ///
    /// A node that serves shared state (a Raft member, or any node with an
    /// eventual map open) holds itself alive: stop it with
    /// [`Node::shutdown`].
    pub async fn shared_map<K, V>(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<SharedMap<K, V>, MapError>
    where
        K: Serialize + DeserializeOwned + Send + 'static,
        V: Serialize + DeserializeOwned + Send + 'static,
    {
        self.open_map(name, consistency, true).await
    }

    /// Opens an existing map without creating it: operations on a map
    /// nobody created fail with [`MapError::UnknownMap`] (what the CLI
    /// wants: a typo in a map name must not create a map).
    pub async fn existing_map<K, V>(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<SharedMap<K, V>, MapError>
    where
        K: Serialize + DeserializeOwned + Send + 'static,
        V: Serialize + DeserializeOwned + Send + 'static,
    {
        self.open_map(name, consistency, false).await
    }

    /// Opens `name`; `create`: make it if nobody has (a Raft write for a
    /// linearizable map), otherwise operations on it fail with `UnknownMap`.
    async fn open_map<K, V>(
        &self,
        name: &str,
        consistency: Consistency,
        create: bool,
    ) -> Result<SharedMap<K, V>, MapError>
    where
        K: Serialize + DeserializeOwned + Send + 'static,
        V: Serialize + DeserializeOwned + Send + 'static,
    {
        raft::validate_map_name(name).map_err(|e| MapError::Invalid(e.to_string()))?;
        let backend = match consistency {
            Consistency::Linearizable => {
                let client = GroupClient::new(self.clone(), MAP_TIMEOUT);
                if create {
                    let map = name.to_owned();
                    client.write(Command::CreateMap { map }).await?;
                }
                Backend::Linearizable(client)
            }
            Consistency::Eventual => {
                let replicas = self.replicas().await?;
                if create {
                    replicas.open(name).await?;
                } else {
                    replicas.open_existing(name).await?;
                }
                Backend::Eventual(replicas)
            }
        };
        Ok(SharedMap::new(name.to_owned(), backend))
    }

    /// The Raft group as one of its members sees it: members, leader, term.
    pub async fn raft_group(&self) -> Result<GroupInfo, MapError> {
        GroupClient::new(self.clone(), MAP_TIMEOUT).members().await
    }

    /// Adds a router to the Raft group by its NodeId and address (it must
    /// run with [`raft`](crate::NodeBuilder::raft); a member started with
    /// peers joins by itself, so this is for operators).
    pub async fn add_raft_member(&self, node: crate::NodeId, addr: &str) -> Result<(), MapError> {
        let member = raft::Member {
            node: node.to_string(),
            addr: addr.to_owned(),
        };
        let id = crate::state::group::raft_id(node);
        GroupClient::new(self.clone(), Duration::from_secs(60))
            .membership(KvRequest::Join { id, member })
            .await
    }

    /// Removes a member from the Raft group. Its log stays on its disk;
    /// a removed member should be stopped (or its data directory cleared
    /// before it joins again).
    pub async fn remove_raft_member(&self, node: crate::NodeId) -> Result<(), MapError> {
        let id = crate::state::group::raft_id(node);
        GroupClient::new(self.clone(), Duration::from_secs(30))
            .membership(KvRequest::Remove { id })
            .await
    }

    /// This node's replicas of eventual maps, started on first use.
    pub(crate) async fn replicas(&self) -> Result<ReplicaHandle, MapError> {
        self.inner
            .replicas
            .get_or_try_init(|| ReplicaHandle::start(self.clone()))
            .await
            .cloned()
    }
}
