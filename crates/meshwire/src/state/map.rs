//! The typed handle users hold: [`SharedMap<K, V>`].

use super::codec::{decode_key, decode_value, encode_key, encode_value};
use super::linearizable::GroupClient;
use super::raft::{Command, CommandResult};
use super::{Consistency, MapError};
use futures_core::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// A value with the version of the write that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<V> {
    /// The value.
    pub value: V,
    /// The version of the write that set it: the Raft log index for
    /// linearizable maps, the hybrid-logical-clock stamp for eventual ones.
    /// Versions of a key only grow.
    pub version: u64,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Whether the key had a value.
    pub existed: bool,
    /// The version of the delete.
    pub version: u64,
}

/// The outcome of [`SharedMap::compare_and_swap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Cas {
    /// The key was at the expected version; the new value is in, at
    /// `version`.
    Swapped {
        /// The new version.
        version: u64,
    },
    /// The key was not at the expected version; nothing was written.
    Mismatch {
        /// The key's version (0: absent).
        current: u64,
    },
}

/// One change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<K, V> {
    /// The key that changed.
    pub key: K,
    /// The new value; `None` when the key was deleted.
    pub value: Option<V>,
    /// The version of the change; resume a watch after it with
    /// [`SharedMap::watch_from`].
    pub version: u64,
}

/// The keys under a prefix at one moment, in key order.
#[derive(Debug, Clone)]
pub struct MapSnapshot<K, V> {
    entries: Vec<(K, Versioned<V>)>,
    version: u64,
}

impl<K, V> MapSnapshot<K, V> {
    /// The map's version when the snapshot was taken: watch from it to see
    /// every later change ([`SharedMap::watch_from`]).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key matched.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Versioned<V>)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

impl<K, V> IntoIterator for MapSnapshot<K, V> {
    type Item = (K, Versioned<V>);
    type IntoIter = std::vec::IntoIter<(K, Versioned<V>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Linearizable(GroupClient),
    Eventual(super::eventual::ReplicaHandle),
}

/// A replicated map shared by the nodes of a mesh, with serde keys and
/// values; get one from [`Node::shared_map`](crate::Node::shared_map).
///
/// Cloning is cheap; clones share the connection to the map.
pub struct SharedMap<K, V> {
    name: String,
    backend: Backend,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for SharedMap<K, V> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            backend: self.backend.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V> std::fmt::Debug for SharedMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMap")
            .field("name", &self.name)
            .field(
                "consistency",
                &match self.backend {
                    Backend::Linearizable(_) => Consistency::Linearizable,
                    Backend::Eventual(_) => Consistency::Eventual,
                },
            )
            .finish()
    }
}

impl<K, V> SharedMap<K, V>
where
    K: Serialize + DeserializeOwned + Send + 'static,
    V: Serialize + DeserializeOwned + Send + 'static,
{
    pub(crate) fn new(name: String, backend: Backend) -> Self {
        Self {
            name,
            backend,
            _types: PhantomData,
        }
    }

    /// The map's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consistency the map was opened with.
    pub fn consistency(&self) -> Consistency {
        match self.backend {
            Backend::Linearizable(_) => Consistency::Linearizable,
            Backend::Eventual(_) => Consistency::Eventual,
        }
    }

    /// How long calls on a linearizable map wait for the group (default
    /// 5 s). Eventual maps answer locally and ignore it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        if let Backend::Linearizable(c) = self.backend {
            self.backend = Backend::Linearizable(c.with_timeout(timeout));
        }
        self
    }

    /// The value of `key` and its version, or `None`.
    ///
    /// Linearizable: reflects every write acknowledged before the call.
    /// Eventual: this node's replica.
    pub async fn get(&self, key: &K) -> Result<Option<Versioned<V>>, MapError> {
        let key = encode_key(key)?;
        let raw = match &self.backend {
            Backend::Linearizable(c) => c.get(&self.name, &key).await?,
            Backend::Eventual(r) => r.get(&self.name, &key)?,
        };
        raw.map(|(bytes, version)| {
            Ok(Versioned {
                value: decode_value(&bytes)?,
                version,
            })
        })
        .transpose()
    }

    /// Sets `key` to `value`; returns the new version.
    ///
    /// Linearizable: returns once a majority of the group has the write on
    /// disk. Eventual: once this node's replica has it and it is handed to
    /// the mesh.
    pub async fn put(&self, key: &K, value: &V) -> Result<u64, MapError> {
        let (key, value) = (encode_key(key)?, encode_value(value)?);
        match &self.backend {
            Backend::Linearizable(c) => {
                let cmd = Command::Put {
                    map: self.name.clone(),
                    key,
                    value,
                };
                match c.write(cmd).await? {
                    CommandResult::Written { version } => Ok(version),
                    other => Err(unexpected(other)),
                }
            }
            Backend::Eventual(r) => r.put(&self.name, key, value).await,
        }
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &K) -> Result<Deleted, MapError> {
        let key = encode_key(key)?;
        match &self.backend {
            Backend::Linearizable(c) => {
                let cmd = Command::Delete {
                    map: self.name.clone(),
                    key,
                };
                match c.write(cmd).await? {
                    CommandResult::Deleted { existed, version } => Ok(Deleted { existed, version }),
                    other => Err(unexpected(other)),
                }
            }
            Backend::Eventual(r) => r.delete(&self.name, key).await,
        }
    }

    /// Sets `key` to `value` only if its version is `expected` (0: only if
    /// the key is absent).
    ///
    /// Linearizable: of any number of concurrent swaps from the same
    /// version, exactly one wins. Eventual: checked against this node's
    /// replica only, so two nodes may both win; the later stamp then
    /// prevails everywhere (see docs/CONSISTENCY.md).
    pub async fn compare_and_swap(
        &self,
        key: &K,
        expected: u64,
        value: &V,
    ) -> Result<Cas, MapError> {
        let (key, value) = (encode_key(key)?, encode_value(value)?);
        match &self.backend {
            Backend::Linearizable(c) => {
                let cmd = Command::Cas {
                    map: self.name.clone(),
                    key,
                    expected,
                    value,
                };
                match c.write(cmd).await? {
                    CommandResult::Written { version } => Ok(Cas::Swapped { version }),
                    CommandResult::CasFailed { current } => Ok(Cas::Mismatch { current }),
                    other => Err(unexpected(other)),
                }
            }
            Backend::Eventual(r) => r.cas(&self.name, key, expected, value).await,
        }
    }

    /// The keys whose stored form starts with `prefix` ("" for all), at one
    /// moment, in key order.
    pub async fn snapshot(&self, prefix: &str) -> Result<MapSnapshot<K, V>, MapError> {
        let (raw, version) = match &self.backend {
            Backend::Linearizable(c) => c.list(&self.name, prefix).await?,
            Backend::Eventual(r) => r.list(&self.name, prefix)?,
        };
        let entries = raw
            .into_iter()
            .map(|(k, v, version)| {
                Ok((
                    decode_key(&k)?,
                    Versioned {
                        value: decode_value(&v)?,
                        version,
                    },
                ))
            })
            .collect::<Result<Vec<_>, MapError>>()?;
        Ok(MapSnapshot { entries, version })
    }

    /// Changes to keys under `prefix` from now on, in commit order.
    pub async fn watch(&self, prefix: &str) -> Result<Watch<K, V>, MapError> {
        let now = match &self.backend {
            Backend::Linearizable(c) => c.members().await?.applied,
            Backend::Eventual(r) => r.version(&self.name)?,
        };
        Ok(self.watch_from(prefix, now))
    }

    /// Changes to keys under `prefix` with versions above `after`, in
    /// commit order: resume a watch after the last change it delivered, or
    /// watch from a [`MapSnapshot::version`] to miss nothing after it.
    ///
    /// Linearizable maps keep a bounded history (100 000 changes by
    /// default); resuming from before it yields [`MapError::Compacted`].
    pub fn watch_from(&self, prefix: &str, after: u64) -> Watch<K, V> {
        let (tx, rx) = mpsc::channel(256);
        let task = match &self.backend {
            Backend::Linearizable(c) => tokio::spawn(super::watch::poll_group(
                c.clone(),
                self.name.clone(),
                prefix.to_owned(),
                after,
                tx,
            )),
            Backend::Eventual(r) => tokio::spawn(super::watch::follow_replica(
                r.clone(),
                self.name.clone(),
                prefix.to_owned(),
                after,
                tx,
            )),
        };
        Watch {
            rx,
            task,
            _types: PhantomData,
        }
    }
}

fn unexpected(result: CommandResult) -> MapError {
    MapError::Protocol(format!("unexpected result {result:?}"))
}

/// A stream of [`Change`]s in commit order; see [`SharedMap::watch`].
///
/// Ends with one `Err` when the watch cannot go on (history compacted, the
/// node shut down); dropping it stops the watch.
pub struct Watch<K, V> {
    rx: mpsc::Receiver<Result<super::raft::Change, MapError>>,
    task: tokio::task::JoinHandle<()>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> std::fmt::Debug for Watch<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl<K, V> Drop for Watch<K, V> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K: DeserializeOwned, V: DeserializeOwned> Watch<K, V> {
    /// The next change; `None` once the watch ended.
    pub async fn next(&mut self) -> Option<Result<Change<K, V>, MapError>> {
        std::future::poll_fn(|cx| self.poll_change(cx)).await
    }

    fn poll_change(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Change<K, V>, MapError>>> {
        self.rx.poll_recv(cx).map(|item| {
            item.map(|r| {
                r.and_then(|c| {
                    Ok(Change {
                        key: decode_key(&c.key)?,
                        value: c.value.as_deref().map(decode_value).transpose()?,
                        version: c.version,
                    })
                })
            })
        })
    }
}

impl<K: DeserializeOwned, V: DeserializeOwned> Stream for Watch<K, V> {
    type Item = Result<Change<K, V>, MapError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_change(cx)
    }
}
