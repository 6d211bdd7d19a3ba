//! `meshwire demo`: the product working, in one command.
//!
//! Three routers in this process on 127.0.0.1 (port 0), each behind a
//! `CutProxy` so the demo can break their links for real (TCP resets), and
//! clients attached to them. The routers also form a Raft group (logs in a
//! temporary directory) for the shared-map scene. Each scene says what it
//! shows, then shows it.

use anyhow::{bail, Context};
use meshwire::security::{Authority, Identity};
use meshwire::testkit::CutProxy;
use meshwire::Node;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Run the demo: three routers, seven scenes, a few seconds.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Messages streamed in the link-failure scene.
    #[arg(long, default_value_t = 50_000)]
    messages: u64,
    /// How many times the links are cut during that stream.
    #[arg(long, default_value_t = 5)]
    cuts: u32,
}

const STEP: Duration = Duration::from_secs(15);

struct Router {
    name: &'static str,
    node: Node,
    proxy: CutProxy,
    /// Certifies every node of the demo, so their links are mutual TLS.
    ca: Arc<Authority>,
}

impl Router {
    /// A router whose peers reach it only through its proxy.
    async fn start(
        name: &'static str,
        ca: &Arc<Authority>,
        data: &std::path::Path,
        seed: Option<&Router>,
    ) -> anyhow::Result<Self> {
        let proxy = CutProxy::bind().await?;
        let mut b = Node::builder()
            .certified_by(ca)
            .name(name)
            .listen("127.0.0.1:0")
            .advertise(proxy.addr().to_string())
            .data_dir(data.join(name))
            .raft();
        if let Some(s) = seed {
            b = b.peer(s.proxy.addr().to_string());
        }
        let node = b.start().await?;
        proxy.set_target(node.listen_addr().unwrap_or_default());
        Ok(Self {
            name,
            node,
            proxy,
            ca: ca.clone(),
        })
    }

    async fn client(&self) -> anyhow::Result<Node> {
        Ok(Node::builder()
            .certified_by(&self.ca)
            .connect(self.proxy.addr().to_string())
            .start()
            .await?)
    }
}

fn say(text: &str) {
    println!("{text}");
}

async fn wait_for<F, Fut>(what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("timed out waiting for {what}")
}

/// Waits until `node` knows of `n` subscriptions held at other routers.
async fn interest(node: &Node, n: usize) -> anyhow::Result<()> {
    wait_for("subscriptions to propagate", || async {
        node.status().await.is_ok_and(|s| s.remote_interest >= n)
    })
    .await
}

/// Scene 5: typed RPC balanced over three instances, one lost mid-run.
async fn rpc_scene(ra: &Router, rb: &Router, rc: &Router) -> anyhow::Result<()> {
    use meshwire::rpc::{Client, Context, Service};
    say("5. Typed RPC: balanced, with failover");
    say("   Three instances of service `calc` (one attached to each router); a client on A");
    say("   makes 3000 idempotent calls to calc.add, 8 in flight, least-loaded balancing.");
    let mut instances = Vec::new();
    for r in [ra, rb, rc] {
        // Each instance reaches its router through a proxy of its own, so
        // the demo can make it vanish without a goodbye (like a crash).
        let proxy = CutProxy::bind().await?;
        proxy.set_target(r.node.listen_addr().unwrap_or_default());
        let node = Node::builder()
            .certified_by(&r.ca)
            .connect(proxy.addr().to_string())
            .start()
            .await?;
        let serving = node
            .serve(Service::new("calc").unary(
                "add",
                true,
                |_ctx: Context, (a, b): (i64, i64)| async move { Ok::<i64, String>(a + b) },
            ))
            .await?;
        instances.push((r.name, node, serving, proxy));
    }
    let caller = ra.client().await?;
    let client = Client::builder(&caller, "calc").build().await?;
    // Instances announce themselves every 500 ms; wait until all three are in.
    let c2 = client.clone();
    wait_for("all three instances to be discovered", || {
        let c = c2.clone();
        async move { c.instances().len() == 3 }
    })
    .await?;
    let name_of = |id: meshwire::NodeId| {
        instances
            .iter()
            .find(|(_, n, _, _)| n.id() == id)
            .map(|(r, ..)| *r)
            .unwrap_or("?")
    };
    // Runs `n` calls, 8 in flight; after `cut.0` answers, partitions
    // `cut.1` (the lost instance) while calls are still flowing.
    let run = |client: Client, n: usize, cut: Option<(u64, CutProxy)>| async move {
        let mut by: BTreeMap<meshwire::NodeId, u64> = BTreeMap::new();
        let (mut ok, mut failed, mut worst) = (0u64, 0u64, Duration::ZERO);
        let mut calls = futures_util::stream::FuturesUnordered::new();
        for i in 0..n {
            let c = client.clone();
            calls.push(async move {
                let t = Instant::now();
                let body = serde_json::to_vec(&(i as i64, 1i64)).unwrap_or_default();
                let mut opts = meshwire::rpc::CallOpts::default();
                opts.idempotent = true;
                opts.codec = meshwire::rpc::Codec::Json;
                (c.call_raw("add", body, opts).await, t.elapsed())
            });
            while calls.len() >= 8 {
                if let Some((r, took)) = futures_util::StreamExt::next(&mut calls).await {
                    worst = worst.max(took);
                    match r {
                        Ok((_, _, id)) => {
                            ok += 1;
                            *by.entry(id).or_insert(0) += 1;
                        }
                        Err(_) => failed += 1,
                    }
                    if let Some((at, proxy)) = &cut {
                        if ok == *at {
                            proxy.partition();
                        }
                    }
                }
            }
        }
        while let Some((r, took)) = futures_util::StreamExt::next(&mut calls).await {
            worst = worst.max(took);
            match r {
                Ok((_, _, id)) => {
                    ok += 1;
                    *by.entry(id).or_insert(0) += 1;
                }
                Err(_) => failed += 1,
            }
        }
        (ok, failed, worst, by)
    };
    let (ok, failed, worst, by) = run(client.clone(), 3000, None).await;
    let spread: Vec<String> = by
        .iter()
        .map(|(id, n)| format!("{} {n}", name_of(*id)))
        .collect();
    say(&format!(
        "   {ok} ok, {failed} failed; per instance (by router): {}; slowest call {} µs",
        spread.join(", "),
        worst.as_micros()
    ));
    say("   Now, 1000 calls into 3000 more, the instance on C drops off the network (no goodbye).");
    let lost = instances[2].3.clone();
    let lost_id = instances[2].1.id();
    let (ok, failed, worst, by) = run(client.clone(), 3000, Some((1000, lost))).await;
    let after = by.get(&lost_id).copied().unwrap_or(0);
    say(&format!(
        "   {ok} ok, {failed} failed; C's instance answered {after} before it vanished; slowest call {} ms",
        worst.as_millis()
    ));
    if failed != 0 {
        bail!("{failed} calls failed during failover");
    }
    say("   Calls in flight to the lost instance went elsewhere once phi-accrual detection gave up on it.\n");
    for (_, node, serving, _) in instances {
        drop(serving);
        node.shutdown().await;
    }
    caller.shutdown().await;
    Ok(())
}

/// Scene 7: shared maps, linearizable on the routers' Raft group, and
/// eventual.
async fn shared_map_scene(ra: &Router, rb: &Router, rc: &Router) -> anyhow::Result<()> {
    use meshwire::state::{Cas, Consistency, SharedMap};
    say("7. Shared maps");
    let client = rc.client().await?;
    wait_for("the Raft group of three routers", || async {
        client
            .raft_group()
            .await
            .is_ok_and(|g| g.voters.len() == 3 && g.leader.is_some())
    })
    .await?;
    if let Ok(g) = client.raft_group().await {
        say(&format!(
            "   The three routers formed a Raft group by themselves (leader {:016x}, term {}).",
            g.leader.unwrap_or_default(),
            g.term
        ));
    }
    let jobs: SharedMap<String, String> =
        client.shared_map("jobs", Consistency::Linearizable).await?;
    let key = "job/7".to_owned();
    let v = jobs.put(&key, &"queued".to_owned()).await?;
    say(&format!(
        "   A client on C queues job/7 in a linearizable map: version {v}, on disk at a majority."
    ));
    let wa = ra.client().await?;
    let wb = rb.client().await?;
    let (ma, mb): (SharedMap<String, String>, SharedMap<String, String>) = (
        wa.existing_map("jobs", Consistency::Linearizable).await?,
        wb.existing_map("jobs", Consistency::Linearizable).await?,
    );
    let (take_a, take_b) = (
        "taken by a worker on A".to_owned(),
        "taken by a worker on B".to_owned(),
    );
    let (a, b) = tokio::join!(
        ma.compare_and_swap(&key, v, &take_a),
        mb.compare_and_swap(&key, v, &take_b)
    );
    let (a, b) = (a?, b?);
    let winners = [&a, &b]
        .iter()
        .filter(|c| matches!(c, Cas::Swapped { .. }))
        .count();
    say(&format!(
        "   Workers on A and B race to claim it with compare-and-swap from version {v}:
     A: {a:?}
     B: {b:?}"
    ));
    if winners != 1 {
        bail!("{winners} workers won the same compare-and-swap; exactly one must");
    }
    let now = jobs.get(&key).await?.context("job/7 vanished")?;
    say(&format!(
        "   Read from C: job/7 = {:?} (version {}): exactly one winner.",
        now.value, now.version
    ));

    let hits_c: SharedMap<String, u64> = client.shared_map("hits", Consistency::Eventual).await?;
    let hits_a: SharedMap<String, u64> = wa.shared_map("hits", Consistency::Eventual).await?;
    hits_c.put(&"page/home".to_owned(), &42).await?;
    wait_for("the eventual map to converge", || async {
        hits_a
            .get(&"page/home".to_owned())
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await?;
    say("   An eventual map written on C (no consensus, works with every other node down)");
    say("   reaches a client on A by delta gossip: page/home = 42.\n");
    for n in [client, wa, wb] {
        n.shutdown().await;
    }
    Ok(())
}

/// Scene 6: who is refused, and what they are told.
async fn security_scene(ra: &Router) -> anyhow::Result<()> {
    say("6. Security: every link above was mutually authenticated TLS 1.3");
    let attempts = [
        (
            "a node with a key the demo's authority never certified",
            // It trusts the authority (it would accept A), but A does
            // not accept it.
            Node::builder().tls(Identity::generate()?, ra.ca.trust()),
        ),
        ("a plaintext node (--insecure)", Node::builder().insecure()),
    ];
    for (who, builder) in attempts {
        let tried = builder
            .connect(ra.proxy.addr().to_string())
            .connect_timeout(Duration::from_millis(800))
            .start()
            .await;
        match tried {
            Ok(node) => {
                node.shutdown().await;
                bail!("{who} was admitted to router A; it must be refused");
            }
            Err(e) => say(&format!(
                "   {who} tries router A: refused.\n     it is told: {e}"
            )),
        }
    }
    say("");
    Ok(())
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let t0 = Instant::now();
    say("meshwire demo — three routers on 127.0.0.1, links through proxies we can cut\n");
    // One authority certifies every node: links are mutually
    // authenticated TLS 1.3, and a key it did not certify is refused.
    let ca = Arc::new(Authority::generate("meshwire demo")?);
    let data = tempfile::Builder::new()
        .prefix("meshwire-demo-")
        .tempdir()
        .context("cannot make a temporary directory for the demo's Raft logs")?;
    let ra = Router::start("A", &ca, data.path(), None).await?;
    let rb = Router::start("B", &ca, data.path(), Some(&ra)).await?;
    let rc = Router::start("C", &ca, data.path(), Some(&ra)).await?;
    for r in [&ra, &rb, &rc] {
        say(&format!(
            "  router {}  id {}  listening on {} (peers reach it via {})",
            r.name,
            r.node.id(),
            r.node.listen_addr().unwrap_or_default(),
            r.proxy.addr()
        ));
    }
    wait_for("the full mesh", || async {
        let mut ok = true;
        for r in [&ra, &rb, &rc] {
            let up = r
                .node
                .status()
                .await
                .map(|s| s.peers.iter().filter(|p| p.router && p.up).count())
                .unwrap_or(0);
            ok &= up == 2;
        }
        ok
    })
    .await?;
    say("  B and C were given only A's address; they found each other by gossip: full mesh.\n");

    // Scene 1.
    say("1. Reliable pub/sub across routers");
    say("   A client on C subscribes to `orders.>`; a client on A publishes three orders.");
    let sub_c = rc.client().await?;
    let mut orders = sub_c.subscribe("orders.>").await?;
    interest(&ra.node, 1).await?;
    let pub_a = ra.client().await?;
    for (i, what) in ["created", "paid", "shipped"].iter().enumerate() {
        let t = Instant::now();
        pub_a
            .publish(
                format!("orders.{what}"),
                format!("order #{} {what}", 1001 + i),
            )
            .await?;
        let m = tokio::time::timeout(STEP, orders.recv())
            .await
            .context("order did not arrive")?
            .context("subscription closed")?;
        say(&format!(
            "   C received {:<16} {:?}  ({} µs after publish, via A → C)",
            m.subject(),
            String::from_utf8_lossy(m.payload()),
            t.elapsed().as_micros()
        ));
    }
    say("");

    // Scene 2.
    say("2. A queue group shares work");
    say("   One worker on each router joins group `resizers` on `jobs.resize`; 12 jobs are published at B.");
    let mut workers = Vec::new();
    for r in [&ra, &rb, &rc] {
        let c = r.client().await?;
        let s = c.subscribe("jobs.resize").group("resizers").await?;
        workers.push((r.name, c, s));
    }
    interest(&rb.node, 2).await?;
    let pub_b = rb.client().await?;
    for i in 1..=12 {
        pub_b
            .publish("jobs.resize", format!("img-{i:02}"))
            .send()
            .await?;
    }
    pub_b.flush().await?;
    let mut by_worker: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut total = 0;
    let deadline = Instant::now() + STEP;
    while total < 12 && Instant::now() < deadline {
        for (name, _, s) in workers.iter_mut() {
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(20), s.recv()).await {
                by_worker
                    .entry(name)
                    .or_default()
                    .push(String::from_utf8_lossy(m.payload()).into_owned());
                total += 1;
            }
        }
    }
    for (name, jobs) in &by_worker {
        say(&format!(
            "   worker on {name} did {:>2}: {}",
            jobs.len(),
            jobs.join(" ")
        ));
    }
    if total != 12 {
        bail!("queue group delivered {total} of 12 jobs");
    }
    say("   12 jobs, each done exactly once, shared by the group across the mesh.\n");
    drop(workers);

    // Scene 3.
    say("3. Request/reply");
    say("   A responder on B answers `time.now`; a requester on C asks.");
    let resp = rb.client().await?;
    let mut reqs = resp.subscribe("time.now").await?;
    let resp2 = resp.clone();
    let responder = tokio::spawn(async move {
        while let Some(m) = reqs.recv().await {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            if resp2.respond(&m, format!("unix-ms {now}")).await.is_err() {
                break;
            }
        }
    });
    interest(&rc.node, 1).await?;
    let req_c = rc.client().await?;
    let t = Instant::now();
    let reply = req_c.request("time.now", "").timeout(STEP).await?;
    say(&format!(
        "   reply {:?} in {} µs (C → B → C)",
        String::from_utf8_lossy(reply.payload()),
        t.elapsed().as_micros()
    ));
    let t = Instant::now();
    match req_c.request("nobody.home", "hello?").timeout(STEP).await {
        Err(meshwire::Error::NoResponders { .. }) => say(&format!(
            "   a request to `nobody.home` fails with \"no responders\" after {} µs, not after the timeout\n",
            t.elapsed().as_micros()
        )),
        other => bail!("expected no responders, got {other:?}"),
    }
    responder.abort();

    // Scene 4.
    let n = a.messages;
    say("4. Links cut mid-stream, nothing lost");
    say(&format!(
        "   A client on B streams {n} numbered messages to a subscriber on A; while they flow,"
    ));
    say(&format!(
        "   every link through A's and B's proxies is reset {} times (real TCP resets).",
        a.cuts
    ));
    let sub_a = ra.client().await?;
    let mut stream = sub_a.subscribe("metrics.cpu").await?;
    interest(&rb.node, 1).await?;
    let pub_b = rb.client().await?;
    let width = 12;
    let publisher = tokio::spawn(async move {
        for i in 0..n {
            pub_b
                .publish("metrics.cpu", format!("{i:0width$}"))
                .send()
                .await?;
        }
        pub_b.flush().await?;
        anyhow::Ok(pub_b)
    });
    let cut_every = (n / (u64::from(a.cuts) + 1)).max(1);
    let mut next_expected = 0u64;
    let mut duplicates = 0u64;
    let mut out_of_order = 0u64;
    let mut cuts_done = 0;
    let started = Instant::now();
    while next_expected < n {
        let m = match tokio::time::timeout(STEP, stream.recv()).await {
            Ok(m) => m.context("subscription closed")?,
            Err(_) => {
                for (name, node) in [("A", &ra.node), ("B", &rb.node), ("sub", &sub_a)] {
                    eprintln!("{name}: {:#?}", node.status().await);
                }
                bail!("stream stalled at message {next_expected}");
            }
        };
        let i: u64 = std::str::from_utf8(m.payload())?.parse()?;
        if i < next_expected {
            duplicates += 1;
        } else if i > next_expected {
            out_of_order += 1;
            next_expected = i + 1;
        } else {
            next_expected += 1;
        }
        if cuts_done < a.cuts && next_expected >= cut_every * u64::from(cuts_done + 1) {
            cuts_done += 1;
            ra.proxy.cut();
            rb.proxy.cut();
            say(&format!(
                "   ✂ cut #{cuts_done} at message {next_expected}: links reset, sessions resume on reconnect"
            ));
        }
    }
    let pub_b = publisher.await??;
    let secs = started.elapsed().as_secs_f64();
    say(&format!(
        "   received {next_expected} of {n}: {duplicates} duplicates, {out_of_order} gaps or reorderings, {cuts_done} cuts survived ({:.0} msgs/s)",
        n as f64 / secs
    ));
    if duplicates != 0 || out_of_order != 0 {
        bail!("delivery broke its promise: {duplicates} duplicates, {out_of_order} out of order");
    }
    say("   every message exactly once, in order, across every cut.\n");

    rpc_scene(&ra, &rb, &rc).await?;
    security_scene(&ra).await?;
    shared_map_scene(&ra, &rb, &rc).await?;

    for c in [pub_a, sub_c, resp, req_c, sub_a, pub_b] {
        c.shutdown().await;
    }
    for r in [ra, rb, rc] {
        r.node.shutdown().await;
    }
    say(&format!(
        "done in {:.1} s. Try it yourself (each process has its own key; trust.txt lists them):\n\
         \x20 for n in router sub pub; do meshwire keygen --out $n.key --add-to trust.txt; done\n\
         \x20 meshwire node --listen 127.0.0.1:4700 --key router.key --trust trust.txt\n\
         \x20 meshwire sub -c 127.0.0.1:4700 --key sub.key --trust trust.txt -t 'demo.>'\n\
         \x20 echo hi | meshwire pub -c 127.0.0.1:4700 --key pub.key --trust trust.txt -t demo.x",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}
