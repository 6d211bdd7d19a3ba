//! NATS: a `nats-server` process on 127.0.0.1 (a free port, pinned with
//! the server side by `taskset`), and async-nats clients on pinned
//! threads, each with its own connection.
//!
//! - latency: a responder (server side) answers `bench.echo`; the
//!   requester (client side) calls `request`, serially, each timed. This is
//!   request/reply through a broker, as meshwire's `request-latency` is
//!   through its router.
//! - throughput: publisher (client side) -> nats-server -> subscriber
//!   (server side), counted at the subscriber from the first to the last
//!   measured message. Core NATS is at-most-once: a subscriber that falls
//!   behind loses messages (reported as `dropped`), nothing is resent.

use crate::pin::{join, spawn_side, Placement, Side};
use crate::report;
use crate::{Load, LATENCY_DEFAULT, RATE_DEFAULT};
use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where nats-server is.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServerArgs {
    /// The nats-server binary [default: nats-server on PATH, else /usr/sbin/nats-server,
    /// where Debian's package puts it].
    #[arg(long, value_name = "PATH")]
    nats_server: Option<String>,
}

/// The running server's pid, for the watchdog in main to kill on timeout.
static SERVER_PID: AtomicU32 = AtomicU32::new(0);

/// Kills the nats-server this process started, if it still runs.
pub(crate) fn kill_server() {
    let pid = SERVER_PID.swap(0, Ordering::SeqCst);
    if pid != 0 {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
}

/// A nats-server child, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        SERVER_PID.store(0, Ordering::SeqCst);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(a: &ServerArgs) -> anyhow::Result<String> {
    if let Some(p) = &a.nats_server {
        return Ok(p.clone());
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()))
        .unwrap_or(false);
    if on_path {
        return Ok("nats-server".to_owned());
    }
    for p in [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if std::path::Path::new(p).is_file() {
            return Ok(p.to_owned());
        }
    }
    anyhow::bail!("nats-server not found; install it (apt-get install -y nats-server) or pass --nats-server PATH")
}

fn start_server(a: &ServerArgs, p: &Placement) -> anyhow::Result<Server> {
    let bin = find_binary(a)?;
    // A free port: the kernel picks one, we let it go and hand it over. A
    // race with another program binding it in between is possible but
    // shows up as the connect below failing, not as a wrong result.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = match p.cpu(Side::Server) {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string(), &bin]);
            c
        }
        None => Command::new(&bin),
    };
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {bin} (is taskset, from util-linux, there?)"))?;
    SERVER_PID.store(child.id(), Ordering::SeqCst);
    let server = Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "nats-server did not listen on 127.0.0.1:{port} within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

const SUBJECT: &str = "bench.echo";

pub(crate) fn latency(
    load: &Load,
    a: &ServerArgs,
    p: &Placement,
) -> anyhow::Result<serde_json::Value> {
    let stop = load.stop(LATENCY_DEFAULT);
    let (size, warmup) = (load.size.max(1), load.warmup);
    let server = start_server(a, p)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let url = server.url.clone();
    let responder = spawn_side(p, Side::Server, move || async move {
        let client = async_nats::connect(&url).await?;
        let mut sub = client.subscribe(SUBJECT).await?;
        client.flush().await?;
        ready_tx.send(())?;
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply else { continue };
            // An empty request is the requester's goodbye.
            let last = msg.payload.is_empty();
            client.publish(reply, msg.payload).await?;
            if last {
                client.flush().await?;
                return Ok(());
            }
        }
        anyhow::bail!("the responder's subscription ended early")
    })?;
    ready_rx
        .recv()
        .context("the NATS responder did not start")?;
    let url = server.url.clone();
    let requester = spawn_side(p, Side::Client, move || async move {
        let client = async_nats::connect(&url).await?;
        let payload = Bytes::from(vec![7u8; size]);
        let r = report::serial(warmup, stop, || async {
            client.request(SUBJECT, payload.clone()).await?;
            Ok(())
        })
        .await?;
        client.request(SUBJECT, Bytes::new()).await?;
        Ok(r)
    })?;
    let (lat, elapsed) = join(requester)?;
    join(responder)?;
    drop(server);
    Ok(report::latency(
        report::header("nats-latency", "nats", p, size),
        &lat,
        elapsed,
    ))
}

/// First payload byte: what a message is, for the subscriber.
const WARMUP: u8 = 0;
const MEASURED: u8 = 1;

pub(crate) fn throughput(
    load: &Load,
    a: &ServerArgs,
    p: &Placement,
) -> anyhow::Result<serde_json::Value> {
    let stop = load.stop(RATE_DEFAULT);
    let (size, warmup) = (load.size.max(1), load.warmup);
    let server = start_server(a, p)?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let url = server.url.clone();
    let subscriber = spawn_side(p, Side::Server, move || async move {
        let client = async_nats::ConnectOptions::new()
            .subscription_capacity(1 << 20)
            .connect(&url)
            .await?;
        let mut sub = client.subscribe("bench.stream").await?;
        client.flush().await?;
        ready_tx.send(())?;
        let mut n = 0u64;
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        // The end marker can itself be lost (at-most-once): two quiet
        // seconds also end the run.
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            match msg.payload.first() {
                None => break,
                Some(&MEASURED) => {
                    last = Instant::now();
                    first.get_or_insert(last);
                    n += 1;
                }
                Some(_) => {}
            }
        }
        let elapsed = first.map_or(Duration::ZERO, |f| last - f);
        Ok((n, elapsed))
    })?;
    ready_rx
        .recv()
        .context("the NATS subscriber did not start")?;
    let url = server.url.clone();
    let publisher = spawn_side(p, Side::Client, move || async move {
        let client = async_nats::connect(&url).await?;
        let mut w = vec![7u8; size];
        w[0] = WARMUP;
        let mut m = w.clone();
        m[0] = MEASURED;
        let (w, m) = (Bytes::from(w), Bytes::from(m));
        for _ in 0..warmup {
            client.publish("bench.stream", w.clone()).await?;
        }
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop.reached(sent, started) {
            client.publish("bench.stream", m.clone()).await?;
            sent += 1;
        }
        client.publish("bench.stream", Bytes::new()).await?;
        client.flush().await?;
        Ok(sent)
    })?;
    let sent = join(publisher)?;
    let (n, elapsed) = join(subscriber)?;
    drop(server);
    let mut v = report::rate(
        report::header("nats-throughput", "nats", p, size),
        "msgs_per_sec",
        n,
        elapsed,
    );
    v["sent"] = sent.into();
    v["dropped"] = sent.saturating_sub(n).into();
    Ok(v)
}
