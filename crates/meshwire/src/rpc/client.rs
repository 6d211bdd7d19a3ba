//! Calling a service: discovery from heartbeats, a balancer per client,
//! deadlines, cancellation on drop, idempotent failover within a retry
//! budget.

use super::detector::PhiDetector;
use super::envelope::{self, CallRef, Codec, Heartbeat, Status, ToClient, ToServer};
use super::{Metadata, RpcError};
use crate::balance::{Balancer, Endpoint, Policy, RetryBudget};
use crate::{Error, Node, NodeId, Replies};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Configures a [`Client`].
#[derive(Debug)]
#[must_use = "call .build().await"]
pub struct ClientBuilder {
    node: Node,
    service: String,
    policy: Policy,
    timeout: Duration,
    detection: Duration,
    phi_threshold: f64,
    discovery_wait: Duration,
}

impl ClientBuilder {
    /// The balancing policy (default: least loaded).
    pub fn balance(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Default deadline of a call (5 s).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// The longest an instance may stay silent before it leaves the
    /// balancer (3 s). Phi-accrual detection usually removes a dead
    /// instance sooner (see [`ClientBuilder::phi_threshold`]).
    pub fn detection(mut self, d: Duration) -> Self {
        self.detection = d;
        self
    }

    /// Suspicion level at which a silent instance is dropped (8: the
    /// silence had about a 1e-8 chance given the heartbeats seen).
    pub fn phi_threshold(mut self, phi: f64) -> Self {
        self.phi_threshold = phi;
        self
    }

    /// How long `build` waits for the first instance to announce itself
    /// (1 s; 0 to return at once).
    pub fn discovery_wait(mut self, d: Duration) -> Self {
        self.discovery_wait = d;
        self
    }

    /// Starts discovery and returns the client.
    pub async fn build(self) -> crate::Result<Client> {
        envelope::check_service_name(&self.service)?;
        let mut heartbeats = self
            .node
            .subscribe(envelope::heartbeat_subject(&self.service))
            .await?;
        let (changed, _) = watch::channel(0u64);
        let inner = Arc::new(Inner {
            node: self.node.clone(),
            service: self.service.clone(),
            timeout: self.timeout,
            state: Mutex::new(State {
                balancer: Balancer::new(self.policy),
                instances: HashMap::new(),
                overrides: HashMap::new(),
                budget: RetryBudget::new(0.2, 10, Duration::from_secs(10)),
                idempotent: Default::default(),
            }),
            changed,
        });
        let weak = Arc::downgrade(&inner);
        let detection = self.detection;
        let phi_threshold = self.phi_threshold;
        tokio::spawn(async move {
            let mut sweep = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    hb = heartbeats.recv() => {
                        let Some(hb) = hb else { return };
                        let Some(inner) = weak.upgrade() else { return };
                        if let Ok(hb) = envelope::decode::<Heartbeat>(hb.payload()) {
                            inner.on_heartbeat(Instant::now(), hb);
                        }
                    }
                    _ = sweep.tick() => {
                        let Some(inner) = weak.upgrade() else { return };
                        inner.sweep(Instant::now(), detection, phi_threshold);
                    }
                }
            }
        });
        // Ask every instance to announce itself now rather than at its next
        // heartbeat.
        let _ = self
            .node
            .publish(envelope::probe_subject(&self.service), Bytes::new())
            .best_effort()
            .await;
        // Every instance answers the probe at once: wait for the first,
        // then until 50 ms pass without a new one (all bounded), so the
        // first calls are balanced over the whole set.
        let mut rx = inner.changed.subscribe();
        let _ = tokio::time::timeout(self.discovery_wait, async {
            while inner.instance_count() == 0 {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            while let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(50), rx.changed()).await
            {}
        })
        .await;
        Ok(Client { inner })
    }
}

struct Inst {
    detector: PhiDetector,
    weight: u32,
}

struct State {
    balancer: Balancer,
    instances: HashMap<NodeId, Inst>,
    overrides: HashMap<NodeId, u32>,
    budget: RetryBudget,
    /// Methods the servers declare idempotent.
    idempotent: std::collections::HashSet<String>,
}

struct Inner {
    node: Node,
    service: String,
    timeout: Duration,
    state: Mutex<State>,
    /// Bumped whenever an instance leaves, so calls waiting on it can fail
    /// over at once.
    changed: watch::Sender<u64>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn instance_count(&self) -> usize {
        self.lock().instances.len()
    }

    fn has(&self, id: &NodeId) -> bool {
        self.lock().instances.contains_key(id)
    }

    fn publish_endpoints(st: &mut State) {
        let eps: Vec<Endpoint> = st
            .instances
            .iter()
            .map(|(id, i)| Endpoint {
                id: *id,
                weight: *st.overrides.get(id).unwrap_or(&i.weight),
            })
            .collect();
        st.balancer.set_endpoints(&eps);
    }

    fn on_heartbeat(&self, now: Instant, hb: Heartbeat) {
        let id = NodeId::from_bytes(hb.node);
        let mut st = self.lock();
        if !hb.leaving {
            st.idempotent.extend(hb.idempotent);
        }
        let changed = if hb.leaving {
            st.instances.remove(&id).is_some()
        } else {
            match st.instances.get_mut(&id) {
                Some(inst) => {
                    inst.detector.heartbeat(now);
                    let changed = inst.weight != hb.weight;
                    inst.weight = hb.weight;
                    changed
                }
                None => {
                    let interval = Duration::from_millis(u64::from(hb.interval_ms.max(1)));
                    st.instances.insert(
                        id,
                        Inst {
                            detector: PhiDetector::new(now, interval),
                            weight: hb.weight,
                        },
                    );
                    true
                }
            }
        };
        if changed {
            Self::publish_endpoints(&mut st);
            drop(st);
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Drops instances whose silence is too unlikely (phi above the
    /// threshold) or longer than the detection cap.
    fn sweep(&self, now: Instant, detection: Duration, phi_threshold: f64) {
        let mut st = self.lock();
        let before = st.instances.len();
        st.instances.retain(|_, i| {
            now.saturating_duration_since(i.detector.last()) < detection
                && i.detector.phi(now) < phi_threshold
        });
        if st.instances.len() != before {
            tracing::info!(service = %self.service, gone = before - st.instances.len(), "instances stopped answering");
            Self::publish_endpoints(&mut st);
            drop(st);
            self.changed.send_modify(|v| *v += 1);
        }
    }

    fn forget(&self, id: &NodeId) {
        let mut st = self.lock();
        if st.instances.remove(id).is_some() {
            Self::publish_endpoints(&mut st);
            drop(st);
            self.changed.send_modify(|v| *v += 1);
        }
    }
}

/// A client of one service, shared cheaply by cloning.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.inner.service)
            .field("instances", &self.inner.instance_count())
            .finish()
    }
}

/// How one attempt ended.
enum Attempt {
    /// A final answer (success or a definite failure).
    Done(Result<(Vec<u8>, Metadata), RpcError<Vec<u8>>>),
    /// Nobody received it: safe to try elsewhere, whatever the method.
    NotDelivered,
    /// The instance died while the call was out.
    InstanceLost,
}

/// Sends a cancellation if dropped while armed: a call given up by its
/// caller (dropped future, deadline) stops on the server too.
struct CancelGuard {
    node: Node,
    subject: String,
    inbox: String,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            let env = envelope::encode(&ToServer::Cancel {
                inbox: std::mem::take(&mut self.inbox),
            });
            let _ = self.node.publish_detached(&self.subject, env);
        }
    }
}

impl Client {
    /// Configures a client of `service` on `node`.
    pub fn builder(node: &Node, service: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            node: node.clone(),
            service: service.into(),
            policy: Policy::LeastLoaded,
            timeout: Duration::from_secs(5),
            detection: Duration::from_secs(3),
            phi_threshold: 8.0,
            discovery_wait: Duration::from_secs(1),
        }
    }

    /// The service this client calls.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Live instances known now.
    pub fn instances(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.inner.lock().instances.keys().copied().collect();
        v.sort();
        v
    }

    /// Overrides the weight an instance advertises (weighted balancing).
    pub fn set_weight(&self, id: NodeId, weight: Option<u32>) {
        let mut st = self.inner.lock();
        match weight {
            Some(w) => st.overrides.insert(id, w),
            None => st.overrides.remove(&id),
        };
        Inner::publish_endpoints(&mut st);
    }

    /// Calls `method` with `req`. Await the builder; see [`Call`].
    pub fn call<Req, Resp, E>(&self, method: &str, req: Req) -> Call<'_, Req, Resp, E>
    where
        Req: Serialize + Send + 'static,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        Call {
            client: self,
            method: method.to_owned(),
            req,
            opts: CallOpts::default(),
            _out: PhantomData,
        }
    }

    /// Calls with an already-encoded body; the reply body comes back
    /// encoded (as `codec`). What the CLI and `tower` use.
    pub async fn call_raw(
        &self,
        method: &str,
        body: Vec<u8>,
        opts: CallOpts,
    ) -> Result<(Vec<u8>, Metadata, NodeId), RpcError<Vec<u8>>> {
        let inner = &self.inner;
        inner.node.check_call(&inner.service)?;
        let timeout = opts.timeout.unwrap_or(inner.timeout);
        // Idempotent if the caller says so or the service declares it.
        let idempotent = opts.idempotent || inner.lock().idempotent.contains(method);
        let deadline = Instant::now() + timeout;
        let mut tried: Vec<NodeId> = Vec::new();
        inner.lock().budget.deposit(Instant::now());
        loop {
            let picked = {
                let mut st = inner.lock();
                let now = Instant::now();
                let id = st.balancer.pick(now, opts.key.as_deref(), &tried);
                if let Some(id) = id {
                    st.balancer.on_start(id);
                }
                id
            };
            let Some(id) = picked else {
                return Err(RpcError::NoInstance {
                    service: inner.service.clone(),
                });
            };
            tried.push(id);
            let started = Instant::now();
            let (id, outcome) = match opts.hedge {
                Some(after) if idempotent && tried.len() == 1 => {
                    self.hedged(id, after, method, &body, &opts, deadline, &mut tried)
                        .await
                }
                _ => (id, self.attempt(id, method, &body, &opts, deadline).await),
            };
            // Only the instance's own failures count against it (outlier
            // ejection): the service's errors and bad requests do not.
            let ok = !matches!(
                outcome,
                Attempt::InstanceLost
                    | Attempt::Done(Err(RpcError::Internal(_)
                        | RpcError::Transport(_)
                        | RpcError::DeadlineExceeded))
            );
            inner
                .lock()
                .balancer
                .on_finish(Instant::now(), id, started.elapsed(), ok);
            match outcome {
                Attempt::Done(r) => return r.map(|(b, m)| (b, m, id)),
                Attempt::NotDelivered => {
                    // Never reached a server: any call may go elsewhere.
                    inner.forget(&id);
                }
                Attempt::InstanceLost => {
                    if !idempotent {
                        return Err(RpcError::Internal(format!(
                            "instance {id} was lost during a call to a non-idempotent method; \
                             it was not retried (it may or may not have run)"
                        )));
                    }
                    if !inner.lock().budget.withdraw(Instant::now()) {
                        return Err(RpcError::Internal(format!(
                            "instance {id} was lost and the retry budget is spent \
                             (too many retries recently); not retried"
                        )));
                    }
                    metrics::counter!("meshwire_rpc_retries_total").increment(1);
                }
            }
            if Instant::now() >= deadline {
                return Err(RpcError::DeadlineExceeded);
            }
        }
    }

    /// Races a first attempt against a second one started `after` later
    /// on another instance. Returns the instance whose outcome counts; the
    /// other attempt is dropped (and so cancelled on its server) and
    /// closed in the balancer's books here.
    #[allow(clippy::too_many_arguments)] // the parts of one call
    async fn hedged(
        &self,
        first: NodeId,
        after: Duration,
        method: &str,
        body: &[u8],
        opts: &CallOpts,
        deadline: Instant,
        tried: &mut Vec<NodeId>,
    ) -> (NodeId, Attempt) {
        let a = self.attempt(first, method, body, opts, deadline);
        tokio::pin!(a);
        tokio::select! {
            r = &mut a => return (first, r),
            _ = tokio::time::sleep(after) => {}
        }
        let second = {
            let mut st = self.inner.lock();
            // A hedge is a retry in advance: it spends the same budget.
            let id = if st.budget.withdraw(Instant::now()) {
                st.balancer.pick(Instant::now(), opts.key.as_deref(), tried)
            } else {
                None
            };
            if let Some(id) = id {
                st.balancer.on_start(id);
            }
            id
        };
        let Some(second) = second else {
            return (first, a.await);
        };
        tried.push(second);
        metrics::counter!("meshwire_rpc_hedges_total").increment(1);
        let started = Instant::now();
        let b = self.attempt(second, method, body, opts, deadline);
        tokio::pin!(b);
        let close = |loser: NodeId| {
            // The loser was cancelled, not at fault.
            self.inner
                .lock()
                .balancer
                .on_finish(Instant::now(), loser, started.elapsed(), true);
        };
        // A definite answer (a result, or the service's own error) ends the
        // race; a lost instance or a transport failure waits for the other.
        let definite = |r: &Attempt| {
            matches!(
                r,
                Attempt::Done(Ok(_))
                    | Attempt::Done(Err(RpcError::Application(_)
                        | RpcError::BadRequest(_)
                        | RpcError::UnknownMethod { .. }
                        | RpcError::PermissionDenied { .. }))
            )
        };
        tokio::select! {
            r = &mut a => {
                if definite(&r) {
                    close(second);
                    (first, r)
                } else {
                    close(first);
                    (second, b.await)
                }
            }
            r = &mut b => {
                if definite(&r) {
                    close(first);
                    (second, r)
                } else {
                    close(second);
                    (first, a.await)
                }
            }
        }
    }

    async fn attempt(
        &self,
        id: NodeId,
        method: &str,
        body: &[u8],
        opts: &CallOpts,
        deadline: Instant,
    ) -> Attempt {
        let inner = &self.inner;
        let subject = envelope::instance_subject(&inner.service, &id.to_string());
        let budget = deadline.saturating_duration_since(Instant::now());
        let env = envelope::encode(&CallRef::Call {
            method,
            budget_us: budget.as_micros().max(1) as u64,
            codec: opts.codec,
            metadata: &opts.metadata,
            body,
        });
        let mut gone = inner.changed.subscribe();
        let mut replies: Replies = match inner.node.request_many(&subject, env).await {
            Ok(r) => r,
            Err(e) => return Attempt::Done(Err(e.into())),
        };
        let mut guard = CancelGuard {
            node: inner.node.clone(),
            subject,
            inbox: replies.inbox().to_owned(),
            armed: true,
        };
        loop {
            tokio::select! {
                r = tokio::time::timeout_at(deadline.into(), replies.recv()) => {
                    let msg = match r {
                        Err(_) => return Attempt::Done(Err(RpcError::DeadlineExceeded)),
                        Ok(None) => return Attempt::Done(Err(RpcError::Transport(Error::Closed))),
                        Ok(Some(Err(Error::NoResponders { .. }))) => {
                            guard.armed = false;
                            return Attempt::NotDelivered;
                        }
                        Ok(Some(Err(e))) => return Attempt::Done(Err(e.into())),
                        Ok(Some(Ok(m))) => m,
                    };
                    let decoded = envelope::decode::<ToClient>(msg.payload());
                    // A stream item means a streaming method called as
                    // unary: leave the guard armed so the server stops.
                    // Any other reply ends the call on the server by itself,
                    // so nothing more is sent (the guard used to stay armed
                    // here, and every unary call cost a Cancel message).
                    guard.armed = matches!(decoded, Ok(ToClient::Item { .. }));
                    return Attempt::Done(reply_from(&inner.service, method, decoded));
                }
                c = gone.changed() => {
                    if c.is_err() || !inner.has(&id) {
                        return Attempt::InstanceLost;
                    }
                }
            }
        }
    }
}

fn reply_from<E: std::fmt::Display>(
    service: &str,
    method: &str,
    decoded: Result<ToClient, E>,
) -> Result<(Vec<u8>, Metadata), RpcError<Vec<u8>>> {
    match decoded {
        Ok(ToClient::Ok { metadata, body }) => Ok((body, metadata.into_iter().collect())),
        Ok(ToClient::Err {
            status,
            message,
            body,
        }) => Err(match status {
            Status::Application => RpcError::Application(body),
            Status::DeadlineExceeded => RpcError::DeadlineExceeded,
            Status::Cancelled => RpcError::Cancelled,
            Status::UnknownMethod => RpcError::UnknownMethod {
                service: service.to_owned(),
                method: method.to_owned(),
            },
            Status::BadRequest => RpcError::BadRequest(message),
            Status::Internal => RpcError::Internal(message),
        }),
        Ok(ToClient::Item { .. } | ToClient::End { .. }) => Err(RpcError::BadRequest(format!(
            "{method:?} is a streaming method: call it with call_stream"
        ))),
        Err(e) => Err(RpcError::Internal(format!("malformed reply: {e}"))),
    }
}

/// Options of one call.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CallOpts {
    /// May be retried on another instance (and run more than once).
    pub idempotent: bool,
    /// Routing key for consistent hashing.
    pub key: Option<Vec<u8>>,
    /// Deadline for this call (default: the client's).
    pub timeout: Option<Duration>,
    /// Metadata (headers) sent with the call.
    pub metadata: Metadata,
    /// Body encoding.
    pub codec: Codec,
    /// For idempotent calls: if no answer came after this long, send the
    /// call to a second instance too and take whichever answers first.
    pub hedge: Option<Duration>,
}

/// A call being configured; `.await` it for `Result<Resp, RpcError<E>>`.
#[must_use = "a call does nothing until awaited"]
pub struct Call<'a, Req, Resp, E> {
    client: &'a Client,
    method: String,
    req: Req,
    opts: CallOpts,
    _out: PhantomData<fn() -> (Resp, E)>,
}

impl<Req, Resp, E> Call<'_, Req, Resp, E> {
    /// Marks the call as safe to run more than once (retried elsewhere on
    /// failure, within the retry budget).
    pub fn idempotent(mut self) -> Self {
        self.opts.idempotent = true;
        self
    }

    /// Routing key (for [`Policy::ConsistentHash`]).
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.opts.key = Some(key.into());
        self
    }

    /// Deadline for this call.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.opts.timeout = Some(d);
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.opts.metadata.insert(key.into(), value.into());
        self
    }

    /// Hedges the call (idempotent calls only): after `after` without an
    /// answer, a second instance gets it too; the first answer wins and
    /// the other attempt is cancelled.
    pub fn hedge(mut self, after: Duration) -> Self {
        self.opts.hedge = Some(after);
        self
    }

    /// Encodes this call as JSON instead of binary.
    pub fn json(mut self) -> Self {
        self.opts.codec = Codec::Json;
        self
    }
}

/// A typed reply with what came with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<T> {
    /// The method's result.
    pub value: T,
    /// Metadata the server set (see [`super::Context::set_reply_metadata`]).
    pub metadata: Metadata,
    /// The instance that answered.
    pub instance: NodeId,
}

impl<'a, Req, Resp, E> Call<'a, Req, Resp, E>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + Send + 'static,
{
    /// Runs the call and returns the reply's metadata and the answering
    /// instance along with the value.
    pub async fn with_metadata(self) -> Result<Reply<Resp>, RpcError<E>> {
        let codec = self.opts.codec;
        let body = envelope::encode_body(codec, &self.req).map_err(RpcError::BadRequest)?;
        match self.client.call_raw(&self.method, body, self.opts).await {
            Ok((b, metadata, instance)) => Ok(Reply {
                value: envelope::decode_body::<Resp>(codec, &b)
                    .map_err(|e| RpcError::Internal(format!("reply did not decode: {e}")))?,
                metadata,
                instance,
            }),
            Err(e) => Err(typed_error(codec, e)),
        }
    }
}

/// Decodes the application error of a raw call into the service's type.
fn typed_error<E: DeserializeOwned>(codec: Codec, e: RpcError<Vec<u8>>) -> RpcError<E> {
    e.try_map_app(|b| {
        envelope::decode_body::<E>(codec, &b)
            .map_err(|e| RpcError::Internal(format!("error did not decode: {e}")))
    })
}

impl<'a, Req, Resp, E> IntoFuture for Call<'a, Req, Resp, E>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
    E: DeserializeOwned + Send + 'static,
{
    type Output = Result<Resp, RpcError<E>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.with_metadata().await.map(|r| r.value) })
    }
}

impl Client {
    /// Calls a server-streaming `method`: the items arrive on the returned
    /// [`RpcStream`]. Dropping the stream cancels the call on the server.
    /// (Streams are not retried: items may already have been consumed.)
    pub async fn call_stream<Req, Item, E>(
        &self,
        method: &str,
        req: Req,
        opts: CallOpts,
    ) -> Result<RpcStream<Item, E>, RpcError<E>>
    where
        Req: Serialize,
        Item: DeserializeOwned,
        E: DeserializeOwned,
    {
        let inner = &self.inner;
        inner.node.check_call(&inner.service)?;
        let codec = opts.codec;
        let body = envelope::encode_body(codec, &req).map_err(RpcError::BadRequest)?;
        let deadline = opts.timeout.map(|t| Instant::now() + t);
        let mut tried = Vec::new();
        loop {
            let id = {
                let mut st = inner.lock();
                st.balancer
                    .pick(Instant::now(), opts.key.as_deref(), &tried)
            };
            let Some(id) = id else {
                return Err(RpcError::NoInstance {
                    service: inner.service.clone(),
                });
            };
            tried.push(id);
            let subject = envelope::instance_subject(&inner.service, &id.to_string());
            let env = envelope::encode(&CallRef::Call {
                method,
                budget_us: deadline
                    .map(|d| {
                        d.saturating_duration_since(Instant::now())
                            .as_micros()
                            .max(1) as u64
                    })
                    .unwrap_or(0),
                codec,
                metadata: &opts.metadata,
                body: &body,
            });
            let replies = inner.node.request_many(&subject, env).await?;
            let guard = CancelGuard {
                node: inner.node.clone(),
                subject,
                inbox: replies.inbox().to_owned(),
                armed: true,
            };
            let mut s = RpcStream {
                inner: inner.clone(),
                instance: id,
                gone: inner.changed.subscribe(),
                metadata: Metadata::new(),
                service: inner.service.clone(),
                method: method.to_owned(),
                codec,
                deadline,
                replies,
                guard,
                done: false,
                first: None,
                _item: PhantomData,
            };
            // The first reply tells whether anyone received the call.
            match s.next_raw().await {
                Some(Err(RpcError::Transport(Error::NoResponders { .. }))) => {
                    s.guard.armed = false;
                    inner.forget(&id);
                    continue;
                }
                first => {
                    s.first = Some(first);
                    return Ok(s);
                }
            }
        }
    }
}

/// The items of a server-streaming call. Dropping it before the end cancels
/// the call on the server.
pub struct RpcStream<Item, E> {
    inner: Arc<Inner>,
    instance: NodeId,
    gone: watch::Receiver<u64>,
    metadata: Metadata,
    service: String,
    method: String,
    codec: Codec,
    deadline: Option<Instant>,
    replies: Replies,
    guard: CancelGuard,
    done: bool,
    first: Option<Option<Result<Vec<u8>, RpcError<E>>>>,
    _item: PhantomData<fn() -> Item>,
}

impl<Item, E> std::fmt::Debug for RpcStream<Item, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcStream")
            .field("service", &self.service)
            .field("method", &self.method)
            .field("done", &self.done)
            .finish()
    }
}

impl<Item, E> RpcStream<Item, E> {
    /// Metadata the server set, available once the stream has ended.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The instance serving this stream.
    pub fn instance(&self) -> NodeId {
        self.instance
    }
}

impl<Item: DeserializeOwned, E: DeserializeOwned> RpcStream<Item, E> {
    /// The next item; `None` after the last one (or after an error).
    pub async fn next(&mut self) -> Option<Result<Item, RpcError<E>>> {
        let raw = match self.first.take() {
            Some(first) => first,
            None => self.next_raw().await,
        }?;
        Some(raw.and_then(|b| {
            envelope::decode_body::<Item>(self.codec, &b)
                .map_err(|e| RpcError::Internal(format!("item did not decode: {e}")))
        }))
    }

    async fn next_raw(&mut self) -> Option<Result<Vec<u8>, RpcError<E>>> {
        if self.done {
            return None;
        }
        // Wait for the next reply, the deadline, or the instance's death
        // (a stream is never retried: items may already be consumed).
        let deadline = self.deadline;
        let r = loop {
            let lost = tokio::select! {
                r = self.replies.recv() => break r,
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(d.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.done = true;
                    return Some(Err(RpcError::DeadlineExceeded));
                }
                c = self.gone.changed() => c.is_err() || !self.inner.has(&self.instance),
            };
            if lost {
                self.done = true;
                return Some(Err(RpcError::Internal(format!(
                    "instance {} was lost during the stream",
                    self.instance
                ))));
            }
        };
        let msg = match r {
            None => {
                self.done = true;
                return Some(Err(RpcError::Transport(Error::Closed)));
            }
            Some(Err(e)) => {
                self.done = true;
                return Some(Err(e.into()));
            }
            Some(Ok(m)) => m,
        };
        match envelope::decode::<ToClient>(msg.payload()) {
            Ok(ToClient::Item { body }) => Some(Ok(body)),
            Ok(ToClient::End { metadata }) => {
                self.done = true;
                self.guard.armed = false;
                self.metadata = metadata.into_iter().collect();
                None
            }
            Ok(ToClient::Ok { body, .. }) => {
                // A unary method called as a stream: one item.
                self.done = true;
                self.guard.armed = false;
                Some(Ok(body))
            }
            Ok(ToClient::Err {
                status,
                message,
                body,
            }) => {
                self.done = true;
                self.guard.armed = false;
                Some(Err(match status {
                    Status::Application => match envelope::decode_body::<E>(self.codec, &body) {
                        Ok(e) => RpcError::Application(e),
                        Err(e) => RpcError::Internal(format!("error did not decode: {e}")),
                    },
                    Status::DeadlineExceeded => RpcError::DeadlineExceeded,
                    Status::Cancelled => RpcError::Cancelled,
                    Status::UnknownMethod => RpcError::UnknownMethod {
                        service: self.service.clone(),
                        method: self.method.clone(),
                    },
                    Status::BadRequest => RpcError::BadRequest(message),
                    Status::Internal => RpcError::Internal(message),
                }))
            }
            Err(e) => {
                self.done = true;
                Some(Err(RpcError::Internal(format!("malformed reply: {e}"))))
            }
        }
    }
}

/// A raw call for [`tower::Service`]: method, encoded body, options.
#[derive(Debug, Clone)]
pub struct RawCall {
    /// Method name.
    pub method: String,
    /// Encoded request body (with `opts.codec`).
    pub body: Vec<u8>,
    /// Options.
    pub opts: CallOpts,
}

/// So users can stack tower layers (timeouts, rate limits, ...) on a client.
impl tower::Service<RawCall> for Client {
    type Response = (Vec<u8>, Metadata, NodeId);
    type Error = RpcError<Vec<u8>>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RawCall) -> Self::Future {
        let client = self.clone();
        Box::pin(async move { client.call_raw(&req.method, req.body, req.opts).await })
    }
}
