//! Serving a service: method table, per-call tasks with deadlines and
//! cancellation, heartbeats for discovery.

use super::envelope::{self, Codec, Heartbeat, Status, ToClient, ToServer};
use super::Metadata;
use crate::{Message, Node};
use bytes::Bytes;
use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = T> + Send>>;

/// A failed call, as the server reports it.
pub(crate) struct Failure {
    status: Status,
    message: String,
    body: Vec<u8>,
}

impl Failure {
    fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            body: Vec::new(),
        }
    }
}

type Unary =
    Arc<dyn Fn(Context, Bytes, Codec) -> BoxFuture<Result<Vec<u8>, Failure>> + Send + Sync>;
type Streaming = Arc<
    dyn Fn(Context, Bytes, Codec) -> Result<BoxStream<Result<Vec<u8>, Failure>>, Failure>
        + Send
        + Sync,
>;

enum Handler {
    Unary(Unary),
    Stream(Streaming),
}

struct MethodEntry {
    idempotent: bool,
    handler: Handler,
}

/// What a handler knows about its call.
#[derive(Debug, Clone)]
pub struct Context {
    metadata: Metadata,
    deadline: Option<Instant>,
    reply: Arc<Mutex<Metadata>>,
}

impl Context {
    /// The caller's metadata (headers).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// When the caller stops waiting; the handler is dropped then.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Adds a metadata entry to the reply.
    pub fn set_reply_metadata(&self, key: impl Into<String>, value: impl Into<String>) {
        self.reply
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.into(), value.into());
    }
}

/// A service definition: a name and its methods. Built by hand or by
/// `#[meshwire::service]`.
pub struct Service {
    name: String,
    weight: u32,
    methods: HashMap<String, MethodEntry>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m: Vec<&String> = self.methods.keys().collect();
        m.sort();
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("methods", &m)
            .finish()
    }
}

fn reply_body<T: Serialize>(codec: Codec, v: &T) -> Result<Vec<u8>, Failure> {
    envelope::encode_body(codec, v).map_err(|e| Failure::new(Status::Internal, e))
}

/// What a handler returned, encoded for the reply: its value, or its own
/// error as an `Application` failure.
fn handler_result<T: Serialize, E: Serialize>(
    codec: Codec,
    r: Result<T, E>,
) -> Result<Vec<u8>, Failure> {
    match r {
        Ok(v) => reply_body(codec, &v),
        Err(e) => Err(Failure {
            status: Status::Application,
            message: String::new(),
            body: reply_body(codec, &e)?,
        }),
    }
}

impl Service {
    /// A service named `name` (a subject token: letters, digits, `-`, `_`).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            weight: 100,
            methods: HashMap::new(),
        }
    }

    /// Methods marked idempotent, sorted.
    fn idempotent_methods(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .methods
            .iter()
            .filter(|(_, m)| m.idempotent)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    /// The weight this instance advertises to weighted balancers.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when `method` exists and is marked idempotent.
    pub fn is_idempotent(&self, method: &str) -> bool {
        self.methods.get(method).is_some_and(|m| m.idempotent)
    }

    /// Adds a request/response method. `idempotent` methods may be retried
    /// by clients on another instance; others never run twice.
    pub fn unary<Req, Resp, E, F, Fut>(mut self, method: &str, idempotent: bool, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        E: Serialize + Send + 'static,
        F: Fn(Context, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        let f = Arc::new(f);
        let handler: Unary = Arc::new(move |ctx, body, codec| {
            let f = f.clone();
            Box::pin(async move {
                let req: Req = envelope::decode_body(codec, &body)
                    .map_err(|e| Failure::new(Status::BadRequest, e))?;
                handler_result(codec, f(ctx, req).await)
            })
        });
        self.methods.insert(
            method.to_owned(),
            MethodEntry {
                idempotent,
                handler: Handler::Unary(handler),
            },
        );
        self
    }

    /// Adds a server-streaming method: one request, a stream of items.
    pub fn server_stream<Req, Item, E, F, S>(mut self, method: &str, idempotent: bool, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Item: Serialize + Send + 'static,
        E: Serialize + Send + 'static,
        F: Fn(Context, Req) -> S + Send + Sync + 'static,
        S: Stream<Item = Result<Item, E>> + Send + 'static,
    {
        let handler: Streaming = Arc::new(move |ctx, body, codec| {
            let req: Req = envelope::decode_body(codec, &body)
                .map_err(|e| Failure::new(Status::BadRequest, e))?;
            let s = f(ctx, req).map(move |item| handler_result(codec, item));
            Ok(Box::pin(s) as BoxStream<_>)
        });
        self.methods.insert(
            method.to_owned(),
            MethodEntry {
                idempotent,
                handler: Handler::Stream(handler),
            },
        );
        self
    }
}

/// Heartbeat period of a serving instance.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);

/// A service being served; dropping it (or [`Serving::stop`]) stops
/// serving and tells clients to leave this instance at once.
#[derive(Debug)]
pub struct Serving {
    task: tokio::task::JoinHandle<()>,
    running: Arc<Mutex<HashMap<String, AbortHandle>>>,
    node: Node,
    service: String,
    weight: u32,
}

impl Serving {
    /// Stops serving: a last heartbeat says "leaving", running calls are
    /// dropped.
    pub async fn stop(self) {
        // Drop does the work; this only makes stopping explicit at call sites.
        drop(self);
        tokio::task::yield_now().await;
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
        // Calls in progress are dropped too: their callers fail over (or
        // fail, for non-idempotent methods) instead of getting a late reply.
        for (_, h) in self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            h.abort();
        }
        let hb = Heartbeat {
            node: *self.node.id().as_bytes(),
            weight: self.weight,
            leaving: true,
            interval_ms: HEARTBEAT.as_millis() as u32,
            idempotent: Vec::new(),
        };
        let _ = self.node.publish_detached(
            envelope::heartbeat_subject(&self.service),
            envelope::encode(&hb),
        );
    }
}

impl Node {
    /// Serves `service` from this node until the returned [`Serving`] is
    /// dropped. Clients discover it through heartbeats within a second.
    pub async fn serve(&self, service: Service) -> crate::Result<Serving> {
        envelope::check_service_name(&service.name)?;
        let me = self.id().to_string();
        let name = service.name.clone();
        let weight = service.weight;
        let mut calls = self
            .subscribe(envelope::instance_subject(&name, &me))
            .await?;
        let mut probes = self.subscribe(envelope::probe_subject(&name)).await?;
        let node = self.clone();
        let service = Arc::new(service);
        let hb_subject = envelope::heartbeat_subject(&name);
        let hb = Bytes::from(envelope::encode(&Heartbeat {
            node: *self.id().as_bytes(),
            weight,
            leaving: false,
            interval_ms: HEARTBEAT.as_millis() as u32,
            idempotent: service.idempotent_methods(),
        }));
        // First announcement before returning, so a client started right
        // after `serve` finds this instance.
        self.publish(&hb_subject, hb.clone()).await?;
        let running: Arc<Mutex<HashMap<String, AbortHandle>>> = Default::default();
        let running2 = running.clone();
        let service_name = name.clone();
        let task = tokio::spawn(async move {
            let running = running2;
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    m = calls.recv() => {
                        let Some(m) = m else {
                            if let Some(e) = calls.error() {
                                tracing::warn!(service = %service_name, error = %e, "stopped serving");
                            }
                            return;
                        };
                        on_call(&node, &service, &running, m);
                    }
                    p = probes.recv() => {
                        if p.is_none() { return }
                        let _ = node.publish(&hb_subject, hb.clone()).best_effort().await;
                    }
                    _ = tick.tick() => {
                        let _ = node.publish(&hb_subject, hb.clone()).best_effort().await;
                    }
                }
            }
        });
        Ok(Serving {
            task,
            running,
            node: self.clone(),
            service: name,
            weight,
        })
    }
}

fn on_call(
    node: &Node,
    service: &Arc<Service>,
    running: &Arc<Mutex<HashMap<String, AbortHandle>>>,
    m: Message,
) {
    let Some(reply_to) = m.reply_to().map(str::to_owned) else {
        // A cancellation (no reply expected) or a stray message.
        if let Ok(ToServer::Cancel { inbox }) = envelope::decode::<ToServer>(m.payload()) {
            let handle = running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&inbox);
            if let Some(h) = handle {
                metrics::counter!("meshwire_rpc_cancelled_total").increment(1);
                h.abort();
            }
        }
        return;
    };
    let node = node.clone();
    let call = envelope::decode::<ToServer>(m.payload());
    let service = service.clone();
    let running2 = running.clone();
    let inbox = reply_to.clone();
    let max = node.max_payload();
    // Spawned and registered under the map's lock: the task deregisters
    // under the same lock as its last step, so even a call that finishes at
    // once cannot deregister before it was registered (no leaked entry).
    let mut map = running.lock().unwrap_or_else(|e| e.into_inner());
    let task = tokio::spawn(async move {
        let reply = match call {
            Ok(ToServer::Call {
                method,
                budget_us,
                codec,
                metadata,
                body,
            }) => {
                run_call(
                    &node, &service, &reply_to, method, budget_us, codec, metadata, body,
                )
                .await
            }
            Ok(ToServer::Cancel { .. }) => None,
            Err(e) => Some(ToClient::Err {
                status: Status::BadRequest,
                message: format!("malformed call envelope: {e}"),
                body: Vec::new(),
            }),
        };
        if let Some(reply) = reply {
            let mut bytes = envelope::encode(&reply);
            if bytes.len() > max {
                // Say so rather than let the caller wait for its deadline.
                bytes = envelope::encode(&ToClient::Err {
                    status: Status::Internal,
                    message: format!(
                        "the reply ({} bytes) exceeds the payload limit ({max} bytes)",
                        bytes.len()
                    ),
                    body: Vec::new(),
                });
            }
            let _ = node.respond(&m, bytes).await;
        }
        running2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&reply_to);
    });
    map.insert(inbox, task.abort_handle());
}

/// Runs one call; returns the final reply (stream items are sent here).
#[allow(clippy::too_many_arguments)] // the fields of one call envelope
async fn run_call(
    node: &Node,
    service: &Service,
    reply_to: &str,
    method: String,
    budget_us: u64,
    codec: Codec,
    metadata: Vec<(String, String)>,
    body: Vec<u8>,
) -> Option<ToClient> {
    metrics::counter!("meshwire_rpc_calls_served_total").increment(1);
    let Some(entry) = service.methods.get(&method) else {
        return Some(ToClient::Err {
            status: Status::UnknownMethod,
            message: format!("service {:?} has no method {method:?}", service.name),
            body: Vec::new(),
        });
    };
    let deadline = (budget_us > 0).then(|| Instant::now() + Duration::from_micros(budget_us));
    let reply_md: Arc<Mutex<Metadata>> = Default::default();
    let ctx = Context {
        metadata: metadata.into_iter().collect(),
        deadline,
        reply: reply_md.clone(),
    };
    let body = Bytes::from(body);
    let work = async {
        match &entry.handler {
            Handler::Unary(h) => match h(ctx, body, codec).await {
                Ok(b) => ToClient::Ok {
                    metadata: take_md(&reply_md),
                    body: b,
                },
                Err(f) => failure(f),
            },
            Handler::Stream(h) => {
                let mut s = match h(ctx, body, codec) {
                    Ok(s) => s,
                    Err(f) => return failure(f),
                };
                while let Some(item) = s.next().await {
                    match item {
                        Ok(b) => {
                            let env = envelope::encode(&ToClient::Item { body: b });
                            if let Err(e) = node.publish(reply_to, env).await {
                                return ToClient::Err {
                                    status: Status::Internal,
                                    message: format!("could not send a stream item: {e}"),
                                    body: Vec::new(),
                                };
                            }
                        }
                        Err(f) => return failure(f),
                    }
                }
                ToClient::End {
                    metadata: take_md(&reply_md),
                }
            }
        }
    };
    // A panicking handler answers `Internal` instead of leaving the caller
    // to its deadline (or, for a stream without one, forever).
    let work = async {
        match std::panic::AssertUnwindSafe(work).catch_unwind().await {
            Ok(r) => r,
            Err(_) => {
                metrics::counter!("meshwire_rpc_handler_panics_total").increment(1);
                tracing::error!(method = %method, "RPC handler panicked");
                ToClient::Err {
                    status: Status::Internal,
                    message: format!("the handler of {method:?} panicked"),
                    body: Vec::new(),
                }
            }
        }
    };
    // The handler is dropped when the caller's budget runs out.
    match deadline {
        Some(d) => match tokio::time::timeout_at(d.into(), work).await {
            Ok(r) => Some(r),
            Err(_) => {
                metrics::counter!("meshwire_rpc_deadline_exceeded_total").increment(1);
                Some(ToClient::Err {
                    status: Status::DeadlineExceeded,
                    message: "deadline exceeded on the server".into(),
                    body: Vec::new(),
                })
            }
        },
        None => Some(work.await),
    }
}

fn take_md(md: &Mutex<Metadata>) -> Vec<(String, String)> {
    std::mem::take(&mut *md.lock().unwrap_or_else(|e| e.into_inner()))
        .into_iter()
        .collect()
}

fn failure(f: Failure) -> ToClient {
    ToClient::Err {
        status: f.status,
        message: f.message,
        body: f.body,
    }
}
