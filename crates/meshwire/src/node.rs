//! [`Node`] and [`NodeBuilder`]: the public face of the library.

mod reload;
mod shared;

use crate::config::NodeConfig;
use crate::engine::{self, Command, Control, Level, ReplySink, Spec, Status};
use crate::pubsub::{Message, Subscription};
use crate::security::permissions::Granted;
use crate::security::{Authority, Identity, Trust};
use crate::transport::secure::LinkTls;
use crate::transport::Addr;
use crate::{Error, Result};
use bytes::Bytes;
use meshwire_proto::wire::{Lane, NodeId, Subject};
use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// A meshwire node: a router (it listens) or a client (it attaches to
/// routers). Cheap to clone; all clones drive the same node, which stops
/// when the last clone is dropped (or at [`Node::shutdown`]).
///
/// ```no_run
/// # async fn demo() -> meshwire::Result<()> {
/// use meshwire::{security::Authority, Node};
/// let ca = Authority::generate("example")?; // certifies both: they admit each other
/// let router = Node::builder().listen("127.0.0.1:0").certified_by(&ca).start().await?;
/// let addr = router.listen_addr().unwrap().to_owned();
/// let client = Node::builder().connect(&addr).certified_by(&ca).start().await?;
/// let mut sub = router.subscribe("orders.*").await?;
/// client.publish("orders.created", "hello").await?; // resolves when the router owns it
/// let msg = sub.recv().await.unwrap();
/// assert_eq!(msg.payload(), "hello".as_bytes());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: NodeId,
    listen: Option<String>,
    cmd: mpsc::Sender<Command>,
    ctl: mpsc::UnboundedSender<Control>,
    ready: watch::Receiver<bool>,
    max_payload: usize,
    /// What this client's router allows it (checked before sending).
    granted: Arc<Granted>,
    /// A router's permissions file.
    permissions: Option<Arc<reload::Source>>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// A Raft member's seat in the group of linearizable maps.
    raft: std::sync::OnceLock<Arc<crate::state::group::RaftGroup>>,
    /// Replicas of eventual maps (started on first use, or at start on a
    /// router).
    replicas: tokio::sync::OnceCell<crate::state::eventual::ReplicaHandle>,
}

/// Configures and starts a [`Node`].
#[derive(Debug, Default)]
#[must_use = "call .start().await to run the node"]
pub struct NodeBuilder {
    cfg: NodeConfig,
    name: Option<String>,
    listen: Option<String>,
    advertise: Option<String>,
    peers: Vec<String>,
    connect: Vec<String>,
    session: Option<String>,
    data_dir: Option<PathBuf>,
    connect_timeout: Option<Duration>,
    security: Security,
    permissions: Option<PathBuf>,
    raft: bool,
}

/// What protects the node's links.
#[derive(Debug, Default)]
enum Security {
    /// Nothing said: TLS, admitting only the node's own key.
    #[default]
    Default,
    /// TLS as `identity` (`None`: the data directory's key, or a fresh
    /// one), admitting what `trust` admits.
    Tls {
        identity: Option<Identity>,
        trust: Trust,
    },
    /// Plaintext, asked for.
    Insecure,
    /// Setting security up failed in a builder method; `start` says so.
    Failed(crate::security::SecurityError),
}

impl NodeBuilder {
    /// A name for logs (defaults to the short node id).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Listen on `addr` (`HOST:PORT`, port 0 picks one; `unix:PATH`, a Unix
    /// domain socket whose file is removed when the node stops; or
    /// `mem:NAME`): the node becomes a router.
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// The address other routers should dial to reach this one (defaults to
    /// the bound listen address). Useful behind NAT or a proxy.
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// A router to peer with (routers only). Peers learn further peers from
    /// each other, so one seed is enough to join a mesh.
    pub fn peer(mut self, addr: impl Into<String>) -> Self {
        self.peers.push(addr.into());
        self
    }

    /// A router to attach to (clients only); give several for failover.
    pub fn connect(mut self, addr: impl Into<String>) -> Self {
        self.connect.push(addr.into());
        self
    }

    /// A persistent session name: the router keeps what is routed to this
    /// client while it is away, and a restarted client with the same name
    /// picks it up.
    pub fn session_name(mut self, name: impl Into<String>) -> Self {
        self.session = Some(name.into());
        self
    }

    /// A directory for the node's state; its identity is kept there and
    /// reused on restart.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Replaces every tunable at once.
    pub fn config(mut self, cfg: NodeConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// Edits the tunables in place.
    pub fn configure(mut self, f: impl FnOnce(&mut NodeConfig)) -> Self {
        f(&mut self.cfg);
        self
    }

    /// How long `start` waits for a client to reach a router (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    /// Runs this node as `identity`, admitting the peers `trust` admits
    /// (its own key always). The node's id becomes `identity.node_id()`,
    /// and every peer's MWIR handshake must name the node whose key TLS
    /// authenticated.
    ///
    /// Links are mutually authenticated TLS 1.3 whatever the builder is
    /// told, unless it is told [`NodeBuilder::insecure`]; without this call
    /// a node uses its data directory's key (or a fresh one) and admits no
    /// other key. In-memory (`mem:`) links never leave the process and
    /// stay plaintext.
    pub fn tls(mut self, identity: Identity, trust: Trust) -> Self {
        self.security = Security::Tls {
            identity: Some(identity),
            trust,
        };
        self
    }

    /// Like [`NodeBuilder::tls`], with the key kept in the data directory
    /// ([`NodeBuilder::data_dir`]): `DIR/node.key`, created on first start
    /// and reused after. Without a data directory the key is fresh and
    /// lives in memory only.
    pub fn tls_from_data_dir(mut self, trust: Trust) -> Self {
        self.security = Security::Tls {
            identity: None,
            trust,
        };
        self
    }

    /// Runs this node with a fresh identity certified by `authority`,
    /// admitting every node it certified: one line to put the nodes of a
    /// test, a demo or an example on mutually authenticated TLS.
    pub fn certified_by(mut self, authority: &Authority) -> Self {
        self.security = match authority.issue() {
            Ok(identity) => Security::Tls {
                identity: Some(identity),
                trust: authority.trust(),
            },
            Err(e) => Security::Failed(e),
        };
        self
    }

    /// Plaintext links: no encryption, no authentication. For a network
    /// you trust completely, or to compare costs; a warning is logged at
    /// start. Both ends of a link must agree: a TLS node refuses a
    /// plaintext peer, and the reverse.
    pub fn insecure(mut self) -> Self {
        self.security = Security::Insecure;
        self
    }

    /// Enforces the permissions in `path` (TOML; format and rules in
    /// [`security::permissions`](crate::security::permissions)) on the
    /// clients attached to this router: what each NodeId, or group of
    /// NodeIds, may publish, subscribe to, serve and call. Without it
    /// everything is allowed.
    ///
    /// `start` fails if the file cannot be read or is not valid. The file
    /// is read again when it changes (polled every
    /// [`NodeConfig::permissions_poll`](crate::NodeConfig::permissions_poll))
    /// and on [`Node::reload_permissions`]; links stay up, and an invalid
    /// new version leaves the rules in force. Routers only. NodeIds are
    /// only as trustworthy as the links: use TLS ([`NodeBuilder::tls`]).
    pub fn permissions_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.permissions = Some(path.into());
        self
    }

    /// Makes this router a member of the Raft group that holds
    /// linearizable maps ([`Node::shared_map`]). It needs a listen address
    /// and a [`data_dir`](Self::data_dir) (the Raft log lives in
    /// `DIR/raft`). Without peers it bootstraps a new group (once: a
    /// restart finds its log); with peers it asks the group to add it.
    pub fn raft(mut self) -> Self {
        self.raft = true;
        self
    }

    /// Starts the node. A router is ready when this returns; a client has
    /// attached to a router and knows what the router permits it (or this
    /// fails after the connect timeout).
    pub async fn start(self) -> Result<Node> {
        let default_security = matches!(self.security, Security::Default);
        let (identity, trust) = match self.security {
            Security::Default => (None, Some(Trust::default())),
            Security::Tls { identity, trust } => (identity, Some(trust)),
            Security::Insecure => (None, None),
            Security::Failed(e) => return Err(e.into()),
        };
        // Plaintext nodes have a key too: the id is the same whichever way
        // the node runs, and a data directory keeps it across restarts.
        let identity = match (identity, &self.data_dir) {
            (Some(identity), _) => identity,
            (None, Some(dir)) => Identity::load_or_create(dir)?,
            (None, None) => Identity::generate()?,
        };
        let id = identity.node_id();
        let tls = trust
            .as_ref()
            .map(|trust| LinkTls::new(&identity, trust))
            .transpose()?;
        let listen = self.listen.as_deref().map(Addr::parse).transpose()?;
        let peers = self
            .peers
            .iter()
            .map(|p| Addr::parse(p))
            .collect::<Result<Vec<_>>>()?;
        let connect = self
            .connect
            .iter()
            .map(|p| Addr::parse(p))
            .collect::<Result<Vec<_>>>()?;
        if let Some(a) = &self.advertise {
            Addr::parse(a)?;
        }
        let networked = listen
            .iter()
            .chain(&peers)
            .chain(&connect)
            .any(|a| !matches!(a, Addr::Mem(_)));
        if networked {
            match (&tls, default_security) {
                (None, _) => tracing::warn!(
                    node = %id,
                    "links are plaintext (insecure): anyone on the network can read, alter \
                     and inject this node's traffic"
                ),
                (Some(_), true) => tracing::info!(
                    node = %id,
                    "links use TLS and admit no other node's key; to admit peers, build the \
                     node with .tls(identity, Trust::load(file)) or .certified_by(&authority)"
                ),
                (Some(_), false) => {}
            }
        }
        let session_name = self.session.as_deref().map(Subject::literal).transpose()?;
        if self.cfg.max_payload + 64 * 1024 > self.cfg.limits.max_frame as usize {
            return Err(Error::Config(format!(
                "max_payload ({}) must stay 64 KiB below the frame limit ({})",
                self.cfg.max_payload, self.cfg.limits.max_frame
            )));
        }
        let max_payload = self.cfg.max_payload;
        let name = self.name.unwrap_or_else(|| id.to_string()[..8].to_owned());
        let client = listen.is_none();
        let (source, permissions) = match &self.permissions {
            Some(_) if client => {
                return Err(Error::Config(
                    "permissions are enforced by routers on their clients: give the \
                     permissions file to the router (a node that listens)"
                        .into(),
                ))
            }
            Some(path) => {
                let (source, permissions) = reload::Source::open(path)?;
                if tls.is_none() {
                    tracing::warn!(
                        "permissions on plaintext links trust the NodeId each client claims; \
                         run TLS so that NodeIds are authenticated"
                    );
                }
                (Some(source), Some(Arc::new(permissions)))
            }
            None => (None, None),
        };
        let raft_dir =
            match (self.raft, &self.data_dir) {
                (false, _) => None,
                (true, _) if client => return Err(Error::Config(
                    "only routers (nodes that listen) can be Raft members: add a listen address"
                        .into(),
                )),
                (true, None) => return Err(Error::Config(
                    "a Raft member needs a data directory for its log: set data_dir (--data DIR)"
                        .into(),
                )),
                (true, Some(dir)) => Some(dir.join("raft")),
            };
        let join_group = !self.peers.is_empty();
        let raft_addr = self.advertise.clone();
        let granted = Arc::new(Granted::default());
        let poll = self.cfg.permissions_poll;
        let started = engine::start(Spec {
            cfg: self.cfg,
            id,
            name,
            listen,
            advertise: self.advertise,
            peers,
            connect: connect.clone(),
            session_name,
            tls,
            permissions,
            granted: granted.clone(),
        })
        .await?;
        if let Some(source) = &source {
            tokio::spawn(reload::watch(started.cmd.downgrade(), source.clone(), poll));
        }
        let node = Node {
            inner: Arc::new(Inner {
                id,
                listen: started.listen,
                cmd: started.cmd,
                ctl: started.ctl,
                ready: started.ready,
                max_payload,
                granted,
                permissions: source,
                task: std::sync::Mutex::new(Some(started.task)),
                raft: std::sync::OnceLock::new(),
                replicas: tokio::sync::OnceCell::new(),
            }),
        };
        if let Some(dir) = raft_dir {
            let addr = raft_addr
                .or_else(|| node.listen_addr().map(str::to_owned))
                .unwrap_or_default();
            match crate::state::group::RaftGroup::start(node.clone(), &dir, addr, join_group).await
            {
                Ok(group) => {
                    let _ = node.inner.raft.set(group);
                }
                Err(e) => {
                    node.shutdown().await;
                    return Err(e);
                }
            }
        }
        if !client {
            // Routers keep replicas of every eventual map they hear of, so
            // that data outlives the clients that wrote it.
            if let Err(e) = node.replicas().await {
                node.shutdown().await;
                return Err(match e {
                    crate::state::MapError::Node(e) => e,
                    other => Error::Config(format!("starting eventual-map replication: {other}")),
                });
            }
        }
        if client {
            let wait = self.connect_timeout.unwrap_or(Duration::from_secs(10));
            if !node.wait_attached(wait).await {
                let last_error = node.status().await.ok().and_then(|s| s.last_link_error);
                node.shutdown().await;
                return Err(Error::Unreachable {
                    addrs: self.connect,
                    waited: wait,
                    last_error,
                });
            }
        }
        Ok(node)
    }
}

impl Node {
    /// Starts configuring a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This node's identity.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The largest payload `publish` accepts.
    pub fn max_payload(&self) -> usize {
        self.inner.max_payload
    }

    /// The bound listen address of a router (with the real port when 0 was
    /// asked for); `None` for a client.
    pub fn listen_addr(&self) -> Option<&str> {
        self.inner.listen.as_deref()
    }

    /// Waits until a client is attached to a router (true), or `timeout`
    /// passes (false). Routers are always attached. Attached includes
    /// having the router's permissions for this node (its first `Grants`),
    /// so that the first operation after this is already checked.
    pub async fn wait_attached(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.ready.clone();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn command(&self, cmd: Command) -> Result<()> {
        self.inner.cmd.send(cmd).await.map_err(|_| Error::Closed)
    }

    /// Publishes `payload` on `subject`. Await the returned builder: by
    /// default it is reliable and ordered, and resolves once the first
    /// router owns the message.
    pub fn publish(&self, subject: impl AsRef<str>, payload: impl Into<Bytes>) -> Publish<'_> {
        Publish {
            node: self,
            subject: Subject::literal(subject.as_ref()).map_err(Error::from),
            payload: payload.into(),
            level: Level::Reliable(Lane::Ordered),
            reply_to: None,
        }
    }

    /// Subscribes to `pattern` (`*` matches one token, `>` the rest).
    pub fn subscribe(&self, pattern: impl AsRef<str>) -> Subscribe<'_> {
        Subscribe {
            node: self,
            pattern: Subject::pattern(pattern.as_ref()).map_err(Error::from),
            group: None,
        }
    }

    /// Sends a request and waits for one reply. Fails at once with
    /// [`Error::NoResponders`] when nobody subscribes to `subject`.
    pub fn request(&self, subject: impl AsRef<str>, payload: impl Into<Bytes>) -> Request<'_> {
        Request {
            node: self,
            subject: Subject::literal(subject.as_ref()).map_err(Error::from),
            payload: payload.into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Sends a request whose replies keep coming (server streaming): every
    /// message sent to the returned inbox arrives on [`Replies`] until it
    /// is dropped. Fails at once with [`Error::NoResponders`] when nobody
    /// subscribes to `subject`.
    pub async fn request_many(
        &self,
        subject: impl AsRef<str>,
        payload: impl Into<Bytes>,
    ) -> Result<Replies> {
        let subject = Subject::literal(subject.as_ref())?;
        self.inner.granted.check_publish(&subject)?;
        let payload = payload.into();
        if payload.len() > self.inner.max_payload {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max: self.inner.max_payload,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (itx, irx) = oneshot::channel();
        self.command(Command::Request {
            subject,
            payload,
            reply: ReplySink::Many(tx),
            inbox: Some(itx),
        })
        .await?;
        let inbox = irx.await.map_err(|_| Error::Closed)?;
        Ok(Replies {
            inbox,
            rx,
            ctl: self.inner.ctl.clone(),
        })
    }

    /// Publishes reliably without waiting, from anywhere (including `Drop`):
    /// queued even when the command channel is full. For rare control
    /// messages such as cancellations, not for bulk traffic.
    pub fn publish_detached(
        &self,
        subject: impl AsRef<str>,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        let subject = Subject::literal(subject.as_ref())?;
        self.inner.granted.check_publish(&subject)?;
        self.inner
            .ctl
            .send(Control::Publish {
                subject,
                payload: payload.into(),
            })
            .map_err(|_| Error::Closed)
    }

    /// Replies to a request message (no-op error if it has no reply subject).
    pub async fn respond(&self, request: &Message, payload: impl Into<Bytes>) -> Result<()> {
        let Some(to) = request.reply_to.clone() else {
            return Err(Error::Config(format!(
                "message on {:?} is not a request: it has no reply subject",
                request.subject()
            )));
        };
        self.publish_parts(
            to,
            None,
            payload.into(),
            Level::Reliable(Lane::Ordered),
            true,
        )
        .await
    }

    /// Admits what `trust` admits from now on, and closes the links of
    /// nodes it no longer admits (with a trust list; in CA mode existing
    /// links stay and new connections are checked against the new roots).
    /// Returns how many links were closed. The closed nodes' sessions are
    /// kept for the usual retention in case they are admitted again; their
    /// reconnections are refused during the TLS handshake.
    ///
    /// Fails on a node built [`insecure`](NodeBuilder::insecure), or when
    /// `trust` cannot be used (the trust in force stays).
    pub async fn reload_trust(&self, trust: Trust) -> Result<usize> {
        let (done, rx) = oneshot::channel();
        self.command(Command::SetTrust { trust, done }).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Reads the permissions file again now and puts it in force on every
    /// attached client, without dropping links: subscriptions it no longer
    /// allows end ([`Subscription::error`] says why), and each client is
    /// told its new rules. On an error (the file cannot be read or is not
    /// valid) the rules in force stay, and the error is returned and
    /// logged. The file is also reloaded by itself when it changes; this is
    /// for SIGHUP and for callers that must know the reload happened.
    pub async fn reload_permissions(&self) -> Result<()> {
        let Some(source) = &self.inner.permissions else {
            return Err(Error::Config(
                "this node has no permissions file to reload; start it with \
                 NodeBuilder::permissions_file (CLI: --permissions FILE)"
                    .into(),
            ));
        };
        match source.reload(&self.inner.cmd, false).await {
            Ok(_) => {
                tracing::info!("permissions reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "permissions not reloaded; the rules in force stay");
                Err(e)
            }
        }
    }

    /// Whether this node's router lets it call `service` (for the RPC
    /// client, so a denied call says so rather than "no instance").
    pub(crate) fn check_call(&self, service: &str) -> Result<()> {
        self.inner.granted.check_call(service)
    }

    /// Resolves once every message published so far is owned by a router.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Flush { done: tx }).await?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// A snapshot of links and routing state.
    pub async fn status(&self) -> Result<Status> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Status { done: tx }).await?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Stops the node gracefully: no new work, outboxes drained (bounded by
    /// the drain timeout), links closed.
    pub async fn shutdown(&self) {
        if let Some(group) = self.inner.raft.get() {
            group.shutdown().await;
        }
        if let Some(replicas) = self.inner.replicas.get() {
            replicas.shutdown();
        }
        let (tx, rx) = oneshot::channel();
        if self.command(Command::Shutdown { done: tx }).await.is_ok() {
            let _ = rx.await;
        }
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    async fn publish_parts(
        &self,
        subject: Subject,
        reply_to: Option<Subject>,
        payload: Bytes,
        level: Level,
        wait: bool,
    ) -> Result<()> {
        self.inner.granted.check_publish(&subject)?;
        if payload.len() > self.inner.max_payload {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max: self.inner.max_payload,
            });
        }
        let (ack, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.command(Command::Publish {
            subject,
            reply_to,
            payload,
            level,
            ack,
        })
        .await?;
        match rx {
            Some(rx) => rx.await.map_err(|_| Error::Closed)?,
            None => Ok(()),
        }
    }
}

/// Replies to [`Node::request_many`], in arrival order.
#[derive(Debug)]
pub struct Replies {
    inbox: Subject,
    rx: mpsc::UnboundedReceiver<Result<Message>>,
    ctl: mpsc::UnboundedSender<Control>,
}

impl Drop for Replies {
    fn drop(&mut self) {
        // Deregister at once rather than wait for the engine's sweep.
        let _ = self.ctl.send(Control::EndRequest {
            inbox: self.inbox.clone(),
        });
    }
}

impl Replies {
    /// The inbox the replies are sent to (the request's reply subject).
    pub fn inbox(&self) -> &str {
        self.inbox.as_str()
    }

    /// The next reply; `Some(Err(NoResponders))` when nobody subscribed;
    /// `None` once the node shut down.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        self.rx.recv().await
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A publication being configured; `.await` it.
#[must_use = "a publication does nothing until awaited"]
pub struct Publish<'a> {
    node: &'a Node,
    subject: Result<Subject>,
    payload: Bytes,
    level: Level,
    reply_to: Option<String>,
}

impl<'a> Publish<'a> {
    /// At most once: never retransmitted, dropped first under load, and the
    /// future resolves once the message is queued.
    pub fn best_effort(mut self) -> Self {
        self.level = Level::BestEffort;
        self
    }

    /// Reliable but unordered: delivered on arrival, still exactly once; no
    /// head-of-line blocking behind a lost message.
    pub fn unordered(mut self) -> Self {
        if let Level::Reliable(_) = self.level {
            self.level = Level::Reliable(Lane::Unordered);
        }
        self
    }

    /// Sets a reply subject, for hand-rolled request patterns.
    pub fn reply_to(mut self, subject: impl Into<String>) -> Self {
        self.reply_to = Some(subject.into());
        self
    }

    /// Hands the message to the node and returns once it is queued (after
    /// any backpressure), without waiting for the router's acknowledgement.
    /// Use [`Node::flush`] to wait for everything sent this way.
    pub async fn send(self) -> Result<()> {
        self.run(false).await
    }

    async fn run(self, wait: bool) -> Result<()> {
        let subject = self.subject?;
        let reply_to = self.reply_to.as_deref().map(Subject::literal).transpose()?;
        self.node
            .publish_parts(subject, reply_to, self.payload, self.level, wait)
            .await
    }
}

impl<'a> IntoFuture for Publish<'a> {
    type Output = Result<()>;
    type IntoFuture = BoxFuture<'a, Result<()>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run(true))
    }
}

/// A subscription being configured; `.await` it.
#[must_use = "a subscription does nothing until awaited"]
pub struct Subscribe<'a> {
    node: &'a Node,
    pattern: Result<Subject>,
    group: Option<String>,
}

impl<'a> Subscribe<'a> {
    /// Joins a queue group: each message goes to one member of the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
}

impl<'a> IntoFuture for Subscribe<'a> {
    type Output = Result<Subscription>;
    type IntoFuture = BoxFuture<'a, Result<Subscription>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let pattern = self.pattern?;
            self.node.inner.granted.check_subscribe(&pattern)?;
            let group = self.group.as_deref().map(Subject::literal).transpose()?;
            let (tx, rx) = oneshot::channel();
            self.node
                .command(Command::Subscribe {
                    pattern,
                    group,
                    done: tx,
                })
                .await?;
            rx.await.map_err(|_| Error::Closed)?
        })
    }
}

/// A request being configured; `.await` it for the reply.
#[must_use = "a request does nothing until awaited"]
pub struct Request<'a> {
    node: &'a Node,
    subject: Result<Subject>,
    payload: Bytes,
    timeout: Duration,
}

impl<'a> Request<'a> {
    /// How long to wait for the reply (default 5 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
}

impl<'a> IntoFuture for Request<'a> {
    type Output = Result<Message>;
    type IntoFuture = BoxFuture<'a, Result<Message>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let subject = self.subject?;
            self.node.inner.granted.check_publish(&subject)?;
            if self.payload.len() > self.node.inner.max_payload {
                return Err(Error::PayloadTooLarge {
                    len: self.payload.len(),
                    max: self.node.inner.max_payload,
                });
            }
            let (tx, rx) = oneshot::channel();
            let t = self.timeout;
            let fut = async {
                self.node
                    .command(Command::Request {
                        subject,
                        payload: self.payload,
                        reply: ReplySink::Once(tx),
                        inbox: None,
                    })
                    .await?;
                rx.await.map_err(|_| Error::Closed)?
            };
            tokio::time::timeout(t, fut)
                .await
                .map_err(|_| Error::Timeout(t))?
        })
    }
}
