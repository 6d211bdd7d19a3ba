//! A router's permissions file, loaded at start and reloaded without
//! dropping links: on demand ([`Node::reload_permissions`](crate::Node::reload_permissions),
//! SIGHUP in the CLI) and when the file changes.
//!
//! Changes are found by polling: every `NodeConfig::permissions_poll`
//! (1 s) the watcher reads the file and compares a hash of its contents
//! with the one in force. Polling rather than inotify/kqueue works on
//! every filesystem (network mounts, bind mounts, the symlink swaps of
//! Kubernetes config maps, editors that replace the file instead of
//! writing it) and needs no extra crate; reading a small file once a
//! second costs nothing measurable. Comparing contents, not mtime and
//! length, also catches two same-sized writes within the mtime's
//! granularity. A file caught half-written fails to parse, is reported,
//! and is read again at the next poll.

use crate::engine::Command;
use crate::security::permissions::read_text;
use crate::security::{Permissions, PermissionsError};
use crate::{Error, Result};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The file and which version of it is in force.
#[derive(Debug)]
pub(crate) struct Source {
    path: PathBuf,
    /// Hash of the text in force.
    loaded: Mutex<u64>,
}

impl Source {
    /// Reads the file for the first time; its rules go into the engine at
    /// start.
    pub(crate) fn open(path: &Path) -> Result<(Arc<Self>, Permissions)> {
        let (hash, text) = read(path)?;
        let permissions = Permissions::parse(&text, path)?;
        let source = Arc::new(Self {
            path: path.to_path_buf(),
            loaded: Mutex::new(hash),
        });
        Ok((source, permissions))
    }

    fn loaded(&self) -> u64 {
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads and installs the file: `Ok(false)` when `only_if_changed` and
    /// it has not changed. On any error the rules in force stay.
    pub(crate) async fn reload(
        &self,
        cmd: &mpsc::Sender<Command>,
        only_if_changed: bool,
    ) -> Result<bool> {
        let (hash, text) = read(&self.path)?;
        if only_if_changed && hash == self.loaded() {
            return Ok(false);
        }
        let permissions = Arc::new(Permissions::parse(&text, &self.path)?);
        let (done, rx) = oneshot::channel();
        cmd.send(Command::SetPermissions { permissions, done })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?;
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = hash;
        Ok(true)
    }
}

/// The file's text and a hash of it. (A small file read with blocking
/// I/O, once a second at most: not worth a thread hop.)
fn read(path: &Path) -> Result<(u64, String), PermissionsError> {
    let text = read_text(path)?;
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    Ok((h.finish(), text))
}

/// Reloads the file whenever its contents change, until the node stops
/// (it holds only a weak handle on the engine's command channel, so it
/// never keeps a node alive). A failed reload is logged once per version
/// of the file, and the rules in force stay.
pub(crate) async fn watch(cmd: mpsc::WeakSender<Command>, source: Arc<Source>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now: the file was just loaded
    let mut failed: Option<String> = None;
    loop {
        tick.tick().await;
        let Some(cmd) = cmd.upgrade() else { return };
        match source.reload(&cmd, true).await {
            Ok(true) => {
                failed = None;
                tracing::info!(path = %source.path.display(), "permissions reloaded (the file changed)");
            }
            Ok(false) => failed = None,
            Err(Error::Closed) => return,
            Err(e) => {
                let msg = e.to_string();
                if failed.as_ref() != Some(&msg) {
                    tracing::error!(error = %msg, "permissions file changed but cannot be used; the rules in force stay");
                    failed = Some(msg);
                }
            }
        }
    }
}
