//! Permissions (issue 4, item 5): a router enforces a TOML file on its
//! clients. The matrix of allowed and denied publish, subscribe, serve and
//! call (wildcards, deny wins, groups, the "*" entry), reloads that revoke
//! on live links, the router's own check behind a client that ignores its
//! grants, and the counter.
//!
//! Nodes run TLS with an in-memory CA, so the NodeIds the rules name are
//! the ones TLS authenticated (the raw-protocol tests use `.insecure()`).

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use meshwire::rpc::{Client, Context, RpcError, Service};
use meshwire::security::{Authority, Identity, Operation};
use meshwire::{Error, Node, Subscription};
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{recv, WAIT};

struct Mesh {
    ca: Authority,
    dir: tempfile::TempDir,
    router: Node,
}

impl Mesh {
    fn file(&self) -> PathBuf {
        self.dir.path().join("perms.toml")
    }

    async fn client(&self, id: &Identity) -> Node {
        Node::builder()
            .connect(self.router.listen_addr().unwrap())
            .tls(id.clone(), self.ca.trust())
            .start()
            .await
            .unwrap()
    }
}

/// Identities certified by `ca`: the test needs their ids before the
/// router starts, so the CA is made first and handed to the mesh.
fn issue(ca: &Authority, n: usize) -> Vec<Identity> {
    (0..n).map(|_| ca.issue().unwrap()).collect()
}

async fn mesh_with(ca: Authority, rules: &str, poll: Duration) -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("perms.toml"), rules).unwrap();
    let router = Node::builder()
        .listen("127.0.0.1:0")
        .tls(ca.issue().unwrap(), ca.trust())
        .permissions_file(dir.path().join("perms.toml"))
        .configure(|c| c.permissions_poll = poll)
        .start()
        .await
        .unwrap();
    Mesh { ca, dir, router }
}

#[track_caller]
fn assert_denied<T: std::fmt::Debug>(
    r: Result<T, Error>,
    op: Operation,
    subject: &str,
    by: Option<&str>,
) {
    match r {
        Err(Error::PermissionDenied {
            op: o,
            subject: s,
            denied_by,
        }) => {
            assert_eq!((o, s.as_str()), (op, subject));
            assert_eq!(denied_by.as_deref(), by);
        }
        other => panic!("expected PermissionDenied({op} {subject}), got {other:?}"),
    }
}

/// The subscription ends (within WAIT), and says why.
async fn assert_ends_denied(sub: &mut Subscription, pattern: &str) {
    let end = tokio::time::timeout(WAIT, async { while sub.recv().await.is_some() {} }).await;
    assert!(end.is_ok(), "subscription {pattern} did not end");
    assert_denied(
        sub.error().map_or(Ok(()), Err),
        Operation::Subscribe,
        pattern,
        None,
    );
}

fn write(path: &Path, text: &str) {
    // Through a rename, as careful tools do: the poller must see it too.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn adder(name: &str) -> Service {
    Service::new(name).unary("add", true, |_c: Context, (a, b): (i64, i64)| async move {
        Ok::<_, String>(a + b)
    })
}

#[tokio::test]
async fn the_permission_matrix() {
    let ca = Authority::generate("matrix").unwrap();
    let ids = issue(&ca, 3);
    let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
    let rules = format!(
        r#"
[groups]
ops = ["{b}"]

[nodes."{a}"]
publish   = {{ allow = ["orders.>"], deny = ["orders.secret.>"] }}
subscribe = {{ allow = ["orders.*"] }}
serve     = {{ allow = ["Calc"] }}
call      = {{ allow = ["*"], deny = ["Admin"] }}

[nodes."group:ops"]
subscribe = {{ allow = ["orders.>"] }}
serve     = {{ allow = ["Admin"] }}
call      = {{ allow = ["Admin", "Calc"] }}

[nodes."*"]
publish = {{ allow = ["status.*"] }}
"#,
        a = a.node_id(),
        b = b.node_id()
    );
    let m = mesh_with(ca, &rules, Duration::from_secs(60)).await;
    let (na, nb, nc) = (m.client(a).await, m.client(b).await, m.client(c).await);

    // Subscribe: covered patterns only; groups add rules.
    let mut watch = nb.subscribe("orders.>").await.unwrap();
    let mut a_sub = na.subscribe("orders.*").await.unwrap();
    assert_denied(
        na.subscribe("orders.>").await,
        Operation::Subscribe,
        "orders.>",
        None,
    );
    assert_denied(na.subscribe(">").await, Operation::Subscribe, ">", None);
    assert_denied(
        nc.subscribe("status.*").await,
        Operation::Subscribe,
        "status.*",
        None,
    );

    // Publish: wildcards allow, deny wins, "*" applies to everyone.
    na.publish("orders.eu", "1").await.unwrap();
    assert_denied(
        na.publish("orders.secret.plans", "x").await,
        Operation::Publish,
        "orders.secret.plans",
        Some("orders.secret.>"),
    );
    assert_denied(
        na.publish("payments.eu", "x").send().await,
        Operation::Publish,
        "payments.eu",
        None,
    );
    assert_denied(
        nc.publish("orders.eu", "x").await,
        Operation::Publish,
        "orders.eu",
        None,
    );
    nc.publish("status.up", "c").await.unwrap();
    na.publish("orders.us", "2").await.unwrap();
    // Nothing denied reached anyone: the next messages are the allowed ones.
    assert_eq!(recv(&mut watch).await.payload(), "1".as_bytes());
    assert_eq!(recv(&mut watch).await.payload(), "2".as_bytes());
    assert_eq!(recv(&mut a_sub).await.payload(), "1".as_bytes());
    // Requests are publications.
    assert_denied(
        nc.request("orders.q", "?").await,
        Operation::Publish,
        "orders.q",
        None,
    );

    // Serve and call.
    let _calc = na.serve(adder("Calc").await).await.unwrap();
    assert_denied(
        nb.serve(adder("Calc").await).await,
        Operation::Serve,
        "Calc",
        None,
    );
    let _admin = nb.serve(adder("Admin").await).await.unwrap();
    assert_denied(
        nc.serve(adder("Other").await).await,
        Operation::Serve,
        "Other",
        None,
    );
    let calc = Client::builder(&nb, "Calc").build().await.unwrap();
    let sum: i64 = calc.call::<_, i64, String>("add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    let admin = Client::builder(&nb, "Admin").build().await.unwrap();
    let sum: i64 = admin.call::<_, i64, String>("add", (1, 1)).await.unwrap();
    assert_eq!(sum, 2);
    // a may call anything but Admin (deny wins over its "*").
    let calc_a = Client::builder(&na, "Calc").build().await.unwrap();
    assert_eq!(
        calc_a.call::<_, i64, String>("add", (4, 4)).await.unwrap(),
        8
    );
    assert_denied(
        Client::builder(&na, "Admin").build().await,
        Operation::Call,
        "Admin",
        Some("Admin"),
    );
    assert_denied(
        Client::builder(&nc, "Calc").build().await,
        Operation::Call,
        "Calc",
        None,
    );
    for n in [na, nb, nc, m.router] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_reload_revokes_on_live_links() {
    let ca = Authority::generate("reload").unwrap();
    let ids = issue(&ca, 2);
    let (a, b) = (&ids[0], &ids[1]);
    let open = format!(
        "[nodes.\"{a}\"]\npublish = {{ allow = [\"orders.>\"] }}\n\
         subscribe = {{ allow = [\"orders.>\"] }}\n\
         [nodes.\"{b}\"]\ncall = {{ allow = [\"*\"] }}\nserve = {{ allow = [\"*\"] }}\n",
        a = a.node_id(),
        b = b.node_id()
    );
    let m = mesh_with(ca, &open, Duration::from_secs(60)).await;
    let (na, nb) = (m.client(a).await, m.client(b).await);
    let mut sub = na.subscribe("orders.>").await.unwrap();
    na.publish("orders.eu", "before").await.unwrap();
    assert_eq!(recv(&mut sub).await.payload(), "before".as_bytes());
    let _svc = nb.serve(adder("Calc").await).await.unwrap();
    let calc = Client::builder(&nb, "Calc").build().await.unwrap();
    assert_eq!(calc.call::<_, i64, String>("add", (1, 2)).await.unwrap(), 3);
    let links = |s: meshwire::Status| {
        let mut v: Vec<_> = s.peers.iter().map(|p| (p.node, p.connection)).collect();
        v.sort();
        v
    };
    let before = links(m.router.status().await.unwrap());

    // A broken file changes nothing.
    write(&m.file(), "[nodes.\"bob\"]\n");
    let e = m.router.reload_permissions().await.unwrap_err();
    assert!(matches!(e, Error::Permissions(_)), "{e}");
    assert!(e.to_string().contains("perms.toml:1"), "{e}");
    na.publish("orders.eu", "still").await.unwrap();
    assert_eq!(recv(&mut sub).await.payload(), "still".as_bytes());

    // Revoke: a keeps publish but loses its subscription; b may no longer
    // call Calc.
    write(
        &m.file(),
        &format!(
            "[nodes.\"{a}\"]\npublish = {{ allow = [\"orders.>\"] }}\n\
             subscribe = {{ allow = [\"orders.eu\"] }}\n\
             [nodes.\"{b}\"]\ncall = {{ allow = [\"*\"], deny = [\"Calc\"] }}\n\
             serve = {{ allow = [\"*\"] }}\n",
            a = a.node_id(),
            b = b.node_id()
        ),
    );
    m.router.reload_permissions().await.unwrap();
    assert_ends_denied(&mut sub, "orders.>").await;
    // The client got its new rules before the notice: refused at once.
    assert_denied(
        na.subscribe("orders.*").await,
        Operation::Subscribe,
        "orders.*",
        None,
    );
    let mut narrow = na.subscribe("orders.eu").await.unwrap();
    na.publish("orders.eu", "after").await.unwrap();
    assert_eq!(recv(&mut narrow).await.payload(), "after".as_bytes());
    // b's call is refused the moment its grants arrive (within WAIT).
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            match calc.call::<_, i64, String>("add", (1, 2)).await {
                Err(RpcError::PermissionDenied {
                    op: Operation::Call,
                    service,
                    ..
                }) => return service,
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    })
    .await
    .expect("the call is refused once the reload reached b");
    assert_eq!(refused, "Calc");
    // The same links carried all of it: nobody reconnected.
    assert_eq!(links(m.router.status().await.unwrap()), before);
    assert!(m.router.status().await.unwrap().permission_denied >= 1);
    for n in [na, nb, m.router] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_polling() {
    let ca = Authority::generate("poll").unwrap();
    let ids = issue(&ca, 1);
    let a = ids[0].node_id();
    let m = mesh_with(
        ca,
        &format!("[nodes.\"{a}\"]\nsubscribe = {{ allow = [\">\"] }}\n"),
        Duration::from_millis(20),
    )
    .await;
    let na = m.client(&ids[0]).await;
    let mut sub = na.subscribe("alerts.*").await.unwrap();
    let mut other = na.subscribe("news.*").await.unwrap();
    write(
        &m.file(),
        &format!("[nodes.\"{a}\"]\nsubscribe = {{ allow = [\"news.>\"] }}\n"),
    );
    assert_ends_denied(&mut sub, "alerts.*").await;
    // What is still allowed keeps working on the same subscription.
    m.router.publish("news.today", "n").await.unwrap();
    assert_eq!(recv(&mut other).await.payload(), "n".as_bytes());
    for n in [na, m.router] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn permissions_need_a_router_and_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[nodes.\"*\"]\npublish = { allow = [\"a..b\"] }\n").unwrap();
    let e = Node::builder()
        .listen("127.0.0.1:0")
        .insecure()
        .permissions_file(&bad)
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("bad.toml:2"), "{e}");
    let e = Node::builder()
        .listen("127.0.0.1:0")
        .insecure()
        .permissions_file(dir.path().join("missing.toml"))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Permissions(_)), "{e}");
    let e = Node::builder()
        .connect("127.0.0.1:9")
        .insecure()
        .permissions_file(&bad)
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e}");
    // Without a file, reloading is a configuration error.
    let r = Node::builder()
        .listen("127.0.0.1:0")
        .insecure()
        .start()
        .await
        .unwrap();
    assert!(matches!(
        r.reload_permissions().await,
        Err(Error::Config(_))
    ));
    r.shutdown().await;
}

/// A client speaking the wire protocol by hand (plaintext), to do what
/// the library's client never does: ignore its grants, or speak v1.
mod raw {
    use super::WAIT;
    use bytes::BytesMut;
    use meshwire::proto::wire::{
        Data, Decoder, Frame, Hello, Lane, LaneResume, Limits, Message, NodeId, Resume, Role,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub(super) struct RawClient {
        tcp: TcpStream,
        buf: BytesMut,
        decoder: Decoder,
        seq: u64,
    }

    impl RawClient {
        /// Connects as `node`, speaking protocol versions 1..=`max_version`.
        pub(super) async fn connect(addr: &str, node: NodeId, max_version: u16) -> Self {
            let mut c = RawClient {
                tcp: TcpStream::connect(addr).await.unwrap(),
                buf: BytesMut::new(),
                decoder: Decoder::new(Limits::default()),
                seq: 0,
            };
            c.write(Frame::Hello(Hello {
                min_version: 1,
                max_version,
                node,
                role: Role::Client,
                session: None,
                listen: None,
                max_frame: Limits::default().max_frame,
            }))
            .await;
            match c.frame().await {
                Frame::Welcome(w) => assert_eq!(w.version, max_version),
                other => panic!("expected Welcome, got {other:?}"),
            }
            let fresh = LaneResume {
                recv_next: 1,
                send_base: 1,
            };
            c.write(Frame::Resume(Resume {
                epoch: 42,
                lanes: [fresh; 2],
            }))
            .await;
            c
        }

        async fn write(&mut self, f: Frame) {
            self.tcp.write_all(&f.to_bytes()).await.unwrap();
        }

        async fn frame(&mut self) -> Frame {
            tokio::time::timeout(WAIT, async {
                loop {
                    if let Some(f) = self.decoder.decode(&mut self.buf).unwrap() {
                        return f;
                    }
                    assert!(
                        self.tcp.read_buf(&mut self.buf).await.unwrap() > 0,
                        "closed"
                    );
                }
            })
            .await
            .expect("a frame in time")
        }

        /// The next message from the router (acks and pings skipped).
        pub(super) async fn message(&mut self) -> Message {
            loop {
                if let Frame::Data(d) = self.frame().await {
                    return d.msg;
                }
            }
        }

        /// Sends `msg` on the ordered lane.
        pub(super) async fn send(&mut self, msg: Message) {
            self.seq += 1;
            self.write(Frame::Data(Data {
                lane: Some(Lane::Ordered),
                seq: self.seq,
                msg,
            }))
            .await;
        }
    }
}

fn subject(s: &str) -> meshwire::proto::wire::Subject {
    meshwire::proto::wire::Subject::pattern(s).unwrap()
}

async fn plaintext_router(rules: &str) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("perms.toml"), rules).unwrap();
    let router = Node::builder()
        .listen("127.0.0.1:0")
        .insecure()
        .permissions_file(dir.path().join("perms.toml"))
        .start()
        .await
        .unwrap();
    (router, dir)
}

#[tokio::test]
async fn the_router_refuses_a_client_that_ignores_its_grants() {
    use meshwire::proto::wire::{Message as Wire, NodeId};
    let me = NodeId::from_bytes([7; 16]);
    let (router, _dir) = plaintext_router(&format!(
        "[nodes.\"{me}\"]\npublish = {{ allow = [\"ok.>\"] }}\n"
    ))
    .await;
    let mut everything = router.subscribe(">").await.unwrap();
    let mut c = raw::RawClient::connect(router.listen_addr().unwrap(), me, 2).await;
    // First thing: its rules.
    match c.message().await {
        Wire::Grants { rules: Some(g) } => {
            assert_eq!(g.get(Operation::Publish).allow, [subject("ok.>")]);
            assert!(g.get(Operation::Subscribe).allow.is_empty());
        }
        other => panic!("expected Grants, got {other:?}"),
    }
    let inbox = subject(&format!("_INBOX.{me}.1"));
    c.send(Wire::Subscribe {
        sid: 1,
        pattern: subject("secret.>"),
        group: None,
    })
    .await;
    c.send(Wire::Publish {
        subject: subject("secret.x"),
        reply_to: Some(inbox.clone()),
        payload: "x".into(),
    })
    .await;
    c.send(Wire::Publish {
        subject: subject("ok.1"),
        reply_to: None,
        payload: "ok".into(),
    })
    .await;
    let mut denied = Vec::new();
    while denied.len() < 2 {
        match c.message().await {
            Wire::Denied {
                op,
                subject,
                sid,
                reply_to,
            } => denied.push((op, subject.to_string(), sid, reply_to)),
            Wire::Peers { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        denied,
        [
            (Operation::Subscribe, "secret.>".to_owned(), Some(1), None),
            (Operation::Publish, "secret.x".to_owned(), None, Some(inbox)),
        ]
    );
    // The denied publication was never routed: the first thing the
    // router's own `>` subscription sees is the allowed one.
    assert_eq!(recv(&mut everything).await.subject(), "ok.1");
    assert_eq!(router.status().await.unwrap().permission_denied, 2);
    drop(c); // it acknowledges nothing: let the router drain at once
    router.shutdown().await;
}

#[tokio::test]
async fn a_version_1_client_is_served_without_grants_or_notices() {
    use meshwire::proto::wire::{Message as Wire, NodeId};
    let me = NodeId::from_bytes([8; 16]);
    let (router, _dir) = plaintext_router(&format!(
        "[nodes.\"{me}\"]\npublish = {{ allow = [\"ok.>\"] }}\n"
    ))
    .await;
    let mut c = raw::RawClient::connect(router.listen_addr().unwrap(), me, 1).await;
    c.send(Wire::Publish {
        subject: subject("secret.x"),
        reply_to: Some(subject(&format!("_INBOX.{me}.1"))),
        payload: "x".into(),
    })
    .await;
    // Allowed, and nobody listens: answered with NoResponders, which
    // would come after a Denied for the first one if v1 got any.
    c.send(Wire::Publish {
        subject: subject("ok.1"),
        reply_to: Some(subject(&format!("_INBOX.{me}.2"))),
        payload: "?".into(),
    })
    .await;
    loop {
        match c.message().await {
            Wire::Peers { .. } => {}
            Wire::NoResponders { reply_to } => {
                assert_eq!(reply_to.as_str(), format!("_INBOX.{me}.2"));
                break;
            }
            other => panic!("a v1 client got {other:?}"),
        }
    }
    assert_eq!(router.status().await.unwrap().permission_denied, 1);
    drop(c);
    router.shutdown().await;
}

/// Denials are counted by operation, at the router and at the client that
/// refused one itself. (The only test here that installs a recorder: it
/// is process-wide.)
#[tokio::test]
async fn denials_are_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let ca = Authority::generate("count").unwrap();
    let ids = issue(&ca, 1);
    let a = ids[0].node_id();
    let m = mesh_with(
        ca,
        &format!("[nodes.\"{a}\"]\nsubscribe = {{ allow = [\"a.>\"] }}\n"),
        Duration::from_secs(60),
    )
    .await;
    let na = m.client(&ids[0]).await;
    let mut sub = na.subscribe("a.x").await.unwrap();
    write(&m.file(), "");
    m.router.reload_permissions().await.unwrap();
    assert_ends_denied(&mut sub, "a.x").await;
    assert!(na.publish("b", "x").await.is_err());

    let snapshot = snapshotter.snapshot().into_vec();
    let denied = |op: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(k, ..)| {
                k.key().name() == "meshwire_permission_denied_total"
                    && k.key().labels().any(|l| l.key() == "op" && l.value() == op)
            })
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert!(denied("subscribe") >= 1, "the router counts the revocation");
    assert!(denied("publish") >= 1, "the client counts what it refused");
    for n in [na, m.router] {
        n.shutdown().await;
    }
}
