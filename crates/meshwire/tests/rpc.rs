//! RPC semantics in one process: deadlines and cancellation reach the
//! handler, errors are typed, bad input leaves the server serving.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use meshwire::balance::Policy;
use meshwire::rpc::{Client, Context, RpcError, Service};
use meshwire::Node;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{wait_instances, WAIT};

/// Records when the handler future was dropped (finished or not).
struct DropMark(Arc<Mutex<Option<Instant>>>);

impl Drop for DropMark {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

async fn mesh() -> (Node, Node, Node) {
    let router = support::builder()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addr = router.listen_addr().unwrap().to_owned();
    let server = support::builder().connect(&addr).start().await.unwrap();
    let caller = support::builder().connect(&addr).start().await.unwrap();
    (router, server, caller)
}

/// A router, one server node per service (each serving it), a caller
/// node, and a client of `name` that has discovered every instance.
struct Cluster {
    _router: Node,
    servers: Vec<(Node, meshwire::rpc::Serving)>,
    _caller: Node,
    client: Client,
}

async fn cluster(name: &str, services: Vec<Service>, policy: Policy) -> Cluster {
    let router = support::builder()
        .listen("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addr = router.listen_addr().unwrap().to_owned();
    let mut servers = Vec::new();
    for svc in services {
        let n = support::builder().connect(&addr).start().await.unwrap();
        let s = n.serve(svc).await.unwrap();
        servers.push((n, s));
    }
    let caller = support::builder().connect(&addr).start().await.unwrap();
    let client = Client::builder(&caller, name)
        .balance(policy)
        .build()
        .await
        .unwrap();
    wait_instances(&client, servers.len()).await;
    Cluster {
        _router: router,
        servers,
        _caller: caller,
        client,
    }
}

/// One instance reaching its router through a proxy the test can cut,
/// and a client of it: (router, proxy, server node, serving, caller, client).
async fn behind_proxy(
    name: &str,
    svc: Service,
) -> (
    Node,
    meshwire::testkit::CutProxy,
    Node,
    meshwire::rpc::Serving,
    Node,
    Client,
) {
    let proxy = meshwire::testkit::CutProxy::bind().await.unwrap();
    // The router advertises the proxy, so a partitioned instance cannot
    // fail over to the router's own address (learned by gossip) around it.
    let router = support::builder()
        .listen("127.0.0.1:0")
        .advertise(proxy.addr().to_string())
        .start()
        .await
        .unwrap();
    proxy.set_target(router.listen_addr().unwrap());
    let server = support::builder()
        .connect(proxy.addr().to_string())
        .start()
        .await
        .unwrap();
    let serving = server.serve(svc).await.unwrap();
    let caller = support::builder()
        .connect(router.listen_addr().unwrap())
        .start()
        .await
        .unwrap();
    let client = Client::builder(&caller, name).build().await.unwrap();
    (router, proxy, server, serving, caller, client)
}

fn slow_service(dropped: Arc<Mutex<Option<Instant>>>) -> Service {
    Service::new("slow").unary("sleep", true, move |_ctx: Context, ms: u64| {
        let mark = DropMark(dropped.clone());
        async move {
            let _mark = mark;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        }
    })
}

#[tokio::test]
async fn the_handler_is_dropped_at_the_deadline() {
    let (_r, server, caller) = mesh().await;
    let dropped = Arc::new(Mutex::new(None));
    let _serving = server.serve(slow_service(dropped.clone())).await.unwrap();
    let client = Client::builder(&caller, "slow").build().await.unwrap();
    assert_eq!(client.instances().len(), 1);

    let started = Instant::now();
    let deadline = started + Duration::from_millis(300);
    let r = client
        .call::<u64, u64, String>("sleep", 10_000)
        .timeout(Duration::from_millis(300))
        .await;
    assert!(matches!(r, Err(RpcError::DeadlineExceeded)), "{r:?}");
    // Never success after the deadline; reported close to it.
    assert!(started.elapsed() < Duration::from_millis(1500));
    // The server dropped the handler no later than the deadline (its
    // budget is what was left when the call left the client), give or
    // take scheduling.
    tokio::time::timeout(WAIT, async {
        while dropped.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    let at = dropped.lock().unwrap().unwrap();
    assert!(
        at <= deadline + Duration::from_millis(100),
        "handler dropped {:?} after the deadline",
        at - deadline
    );
}

#[tokio::test]
async fn dropping_the_call_cancels_the_handler() {
    let (_r, server, caller) = mesh().await;
    let dropped = Arc::new(Mutex::new(None));
    let _serving = server.serve(slow_service(dropped.clone())).await.unwrap();
    let client = Client::builder(&caller, "slow").build().await.unwrap();
    let c2 = client.clone();
    let call = tokio::spawn(async move {
        c2.call::<u64, u64, String>("sleep", 60_000)
            .timeout(Duration::from_secs(60))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gave_up = Instant::now();
    call.abort();
    tokio::time::timeout(WAIT, async {
        while dropped.lock().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the server dropped the handler after the caller gave up");
    let at = dropped.lock().unwrap().unwrap();
    assert!(at - gave_up < Duration::from_secs(2), "{:?}", at - gave_up);
}

#[tokio::test]
async fn errors_are_typed_and_the_server_keeps_serving() {
    let (_r, server, caller) = mesh().await;
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let svc = Service::new("math").unary("div", true, move |_ctx: Context, (a, b): (i64, i64)| {
        c.fetch_add(1, Ordering::Relaxed);
        async move {
            if b == 0 {
                Err(format!("cannot divide {a} by zero"))
            } else {
                Ok(a / b)
            }
        }
    });
    let _serving = server.serve(svc).await.unwrap();
    let client = Client::builder(&caller, "math").build().await.unwrap();

    let ok: i64 = client
        .call::<_, i64, String>("div", (7i64, 2i64))
        .await
        .unwrap();
    assert_eq!(ok, 3);
    let app = client.call::<_, i64, String>("div", (1i64, 0i64)).await;
    assert!(
        matches!(&app, Err(RpcError::Application(m)) if m.contains("zero")),
        "{app:?}"
    );
    let unknown = client.call::<_, i64, String>("mul", (1i64, 2i64)).await;
    assert!(
        matches!(unknown, Err(RpcError::UnknownMethod { .. })),
        "{unknown:?}"
    );
    // A request that does not decode as the method's type.
    let bad = client.call::<_, i64, String>("div", "not a pair").await;
    assert!(matches!(bad, Err(RpcError::BadRequest(_))), "{bad:?}");
    // Malformed JSON, the CLI's path.
    let mut opts = meshwire::rpc::CallOpts::default();
    opts.codec = meshwire::rpc::Codec::Json;
    let raw = client
        .call_raw("div", b"{nope".to_vec(), opts.clone())
        .await;
    assert!(matches!(raw, Err(RpcError::BadRequest(_))), "{raw:?}");
    // JSON works for the same method.
    let (body, _, _) = client
        .call_raw("div", b"[9,3]".to_vec(), opts)
        .await
        .unwrap();
    assert_eq!(body, b"3");
    // An unknown service: nobody to ask.
    let none = Client::builder(&caller, "nosuch")
        .discovery_wait(Duration::from_millis(100))
        .build()
        .await
        .unwrap();
    let r = none.call::<_, i64, String>("x", 1i64).await;
    assert!(matches!(r, Err(RpcError::NoInstance { .. })), "{r:?}");
    // Still serving.
    assert_eq!(
        client
            .call::<_, i64, String>("div", (8i64, 2i64))
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        4,
        "bad requests never reach the handler"
    );
}

#[tokio::test]
async fn streams_and_metadata() {
    let (_r, server, caller) = mesh().await;
    let svc = Service::new("gen")
        .server_stream("count", true, |_ctx: Context, n: u32| {
            futures_util::stream::iter((1..=n).map(Ok::<u32, String>))
        })
        .unary("whoami", true, |ctx: Context, (): ()| {
            let user = ctx.metadata().get("user").cloned().unwrap_or_default();
            ctx.set_reply_metadata("served-by", "test");
            async move { Ok::<_, String>(user) }
        });
    let _serving = server.serve(svc).await.unwrap();
    let client = Client::builder(&caller, "gen").build().await.unwrap();
    let mut s = client
        .call_stream::<_, u32, String>("count", 5u32, Default::default())
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(item) = s.next().await {
        got.push(item.unwrap());
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    let who: String = client
        .call::<_, String, String>("whoami", ())
        .metadata("user", "ada")
        .await
        .unwrap();
    assert_eq!(who, "ada");
}

#[tokio::test]
async fn a_stopped_instance_leaves_the_balancer_and_calls_go_on() {
    let echo = || {
        Service::new("echo").unary("echo", true, |_c: Context, v: u64| async move {
            Ok::<_, String>(v)
        })
    };
    // Bound whole: dropping the router or caller node would stop it.
    let mut c = cluster("echo", vec![echo(), echo(), echo()], Policy::RoundRobin).await;
    let client = c.client.clone();
    for i in 0..30u64 {
        assert_eq!(client.call::<_, u64, String>("echo", i).await.unwrap(), i);
    }
    // Graceful stop: a leaving heartbeat removes it at once.
    let (_n, s) = c.servers.pop().unwrap();
    s.stop().await;
    wait_instances(&client, 2).await;
    for i in 0..30u64 {
        assert_eq!(client.call::<_, u64, String>("echo", i).await.unwrap(), i);
    }
}

#[tokio::test]
async fn a_hedged_call_takes_the_faster_instance() {
    let getter = |delay_ms: u64| {
        Service::new("hedge").unary("get", true, move |_c: Context, (): ()| async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok::<_, String>(delay_ms)
        })
    };
    let c = cluster("hedge", vec![getter(2000), getter(0)], Policy::RoundRobin).await;
    let client = c.client.clone();
    // Whichever instance round robin picks first, every call answers fast:
    // the slow one is hedged after 50 ms.
    for _ in 0..4 {
        let t = Instant::now();
        let got: u64 = client
            .call::<_, u64, String>("get", ())
            .idempotent()
            .hedge(Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(got, 0);
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn reply_metadata_and_tower_layers() {
    use tower::ServiceExt;
    let (_r, server, caller) = mesh().await;
    let svc = Service::new("meta").unary("hello", true, |ctx: Context, name: String| {
        ctx.set_reply_metadata("greeter", "meshwire");
        async move { Ok::<_, String>(format!("hello {name}")) }
    });
    let _serving = server.serve(svc).await.unwrap();
    let client = Client::builder(&caller, "meta").build().await.unwrap();
    let reply = client
        .call::<_, String, String>("hello", "ada".to_string())
        .with_metadata()
        .await
        .unwrap();
    assert_eq!(reply.value, "hello ada");
    assert_eq!(
        reply.metadata.get("greeter").map(String::as_str),
        Some("meshwire")
    );
    assert_eq!(reply.instance, server.id());

    // The client is a tower::Service: stack a layer on it.
    let mut opts = meshwire::rpc::CallOpts::default();
    opts.codec = meshwire::rpc::Codec::Json;
    let svc = tower::ServiceBuilder::new()
        .layer(tower::layer::layer_fn(|inner| inner))
        .service(client.clone());
    let (body, _, _) = svc
        .oneshot(meshwire::rpc::RawCall {
            method: "hello".into(),
            body: br#""tower""#.to_vec(),
            opts,
        })
        .await
        .unwrap();
    assert_eq!(body, br#""hello tower""#);
}

#[tokio::test]
async fn a_partitioned_instance_leaves_within_the_detection_time_and_comes_back() {
    let ping = Service::new("flaky").unary("ping", true, |_c: Context, (): ()| async {
        Ok::<_, String>(())
    });
    let (_router, proxy, server, _serving, _caller, client) = behind_proxy("flaky", ping).await;
    assert_eq!(client.instances(), vec![server.id()]);

    proxy.partition();
    let cut = Instant::now();
    wait_instances(&client, 0).await;
    let gone_after = cut.elapsed();
    assert!(
        gone_after <= Duration::from_millis(3300),
        "left after {gone_after:?}"
    );

    proxy.heal();
    wait_instances(&client, 1).await;
    client.call::<_, (), String>("ping", ()).await.unwrap();
}

#[tokio::test]
async fn a_panicking_handler_is_an_internal_error_not_a_hang() {
    let (_r, server, caller) = mesh().await;
    let svc = Service::new("boom")
        .unary("now", false, |_c: Context, (): ()| async {
            if true {
                panic!("handler bug");
            }
            Ok::<u8, String>(0)
        })
        .server_stream("count", false, |_c: Context, (): ()| {
            futures_util::stream::unfold(0u8, |n| async move {
                assert!(n < 2, "stream handler bug");
                Some((Ok::<u8, String>(n), n + 1))
            })
        });
    let _serving = server.serve(svc).await.unwrap();
    let client = Client::builder(&caller, "boom").build().await.unwrap();
    let t = Instant::now();
    let r = client.call::<_, u8, String>("now", ()).await;
    assert!(
        matches!(&r, Err(RpcError::Internal(m)) if m.contains("panicked")),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    let mut s = client
        .call_stream::<_, u8, String>("count", (), Default::default())
        .await
        .unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 0);
    assert_eq!(s.next().await.unwrap().unwrap(), 1);
    let end = tokio::time::timeout(WAIT, s.next()).await.unwrap();
    assert!(matches!(end, Some(Err(RpcError::Internal(_)))), "{end:?}");
    // A streaming method called as unary is a typed error.
    let r = client.call::<_, u8, String>("count", ()).await;
    assert!(matches!(r, Err(RpcError::BadRequest(_))), "{r:?}");
}

#[tokio::test]
async fn service_names_are_checked() {
    let (_r, server, caller) = mesh().await;
    for bad in ["a.b", "x*", "", "HB", "has space"] {
        let e = server.serve(Service::new(bad)).await.unwrap_err();
        assert!(matches!(e, meshwire::Error::Config(_)), "{bad}: {e}");
        assert!(
            Client::builder(&caller, bad).build().await.is_err(),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_stream_from_a_vanished_instance_ends_with_an_error() {
    let svc = Service::new("ticks").server_stream("tick", true, |_c: Context, (): ()| {
        futures_util::stream::unfold(0u64, |n| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Some((Ok::<u64, String>(n), n + 1))
        })
    });
    let (_router, proxy, _server, _serving, _caller, client) = behind_proxy("ticks", svc).await;
    let mut s = client
        .call_stream::<_, u64, String>("tick", (), Default::default())
        .await
        .unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 0);
    proxy.partition();
    let t = Instant::now();
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match s.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream noticed its instance was gone");
    assert!(matches!(end, Some(Err(RpcError::Internal(_)))), "{end:?}");
    assert!(
        t.elapsed() < Duration::from_millis(3500),
        "{:?}",
        t.elapsed()
    );
}

/// A unary call that got its reply sends nothing more: only calls given up
/// before their reply send a Cancel. (Every call used to send one, which
/// doubled the messages of serial RPC.)
#[tokio::test]
async fn a_completed_call_sends_no_cancel() {
    let (router, server, caller) = mesh().await;
    let svc = Service::new("quiet").unary("echo", true, |_ctx: Context, n: u64| async move {
        Ok::<_, String>(n)
    });
    let _serving = server.serve(svc).await.unwrap();
    // Everything sent to any instance of the service passes the router.
    let mut tap = router.subscribe("_RPC.quiet.>").await.unwrap();
    let client = Client::builder(&caller, "quiet").build().await.unwrap();
    wait_instances(&client, 1).await;
    const CALLS: u64 = 20;
    for i in 0..CALLS {
        let r: u64 = client.call::<_, u64, String>("echo", i).await.unwrap();
        assert_eq!(r, i);
    }
    // Messages from one publisher arrive in order: this one marks the end
    // of what the tap must see.
    caller
        .publish(format!("_RPC.quiet.{}", server.id()), "end")
        .await
        .unwrap();
    let (mut calls, mut others) = (0, 0);
    loop {
        let m = tokio::time::timeout(WAIT, tap.recv())
            .await
            .expect("the tap saw the end marker")
            .expect("tap open");
        if m.payload() == "end" {
            break;
        }
        if m.reply_to().is_some() {
            calls += 1;
        } else {
            others += 1;
        }
    }
    assert_eq!(calls, CALLS, "every call passed the tap");
    assert_eq!(
        others, 0,
        "no Cancel (or anything else) after completed calls"
    );
}
