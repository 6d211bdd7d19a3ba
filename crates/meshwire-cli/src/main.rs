//! `meshwire`: run a node, publish, subscribe, request, reply, and see it
//! all work with `meshwire demo`.
//!
//! Contracts other programs rely on (see DESIGN.md §4): `node` prints one
//! JSON ready line on stdout; `pub` exits 0 only when every message is
//! acknowledged and prints one JSON summary; logs go to stderr; exit codes
//! are 0 success, 1 runtime failure, 2 usage error.

mod cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// meshwire — reliable messaging between the nodes of a distributed system.
///
/// Start a router with `meshwire node --listen 127.0.0.1:4700`, then attach
/// tools to it with `--connect 127.0.0.1:4700`. `meshwire demo` shows
/// everything working in one command.
#[derive(Parser, Debug)]
#[command(name = "meshwire", version, propagate_version = true)]
struct Cli {
    /// Log filter for stderr (e.g. `info`, `meshwire=debug`); RUST_LOG also works.
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a router node until SIGINT/SIGTERM (prints a JSON ready line).
    Node(cmd::node::Args),
    /// Write a new node key (Ed25519, mode 0600) and print its NodeId.
    Keygen(cmd::keygen::Args),
    /// Publish stdin lines (or generated payloads) to a topic.
    #[command(name = "pub")]
    Pub(cmd::publish::Args),
    /// Print messages matching a topic pattern.
    Sub(cmd::subscribe::Args),
    /// Send one request and print the reply.
    Request(cmd::request::Args),
    /// Answer requests on a subject (echoes by default).
    Reply(cmd::reply::Args),
    /// Serve a built-in demo service (echo, add, note, stats) over RPC.
    Serve(cmd::serve::Args),
    /// Call SERVICE.METHOD with JSON; balance, repeat, summarise.
    Call(cmd::call::Args),
    /// Three routers in one process: pub/sub, queue groups, request/reply,
    /// and a link cut mid-stream with nothing lost.
    Demo(cmd::demo::Args),
    /// Read, write and watch a replicated map (linearizable or eventual).
    Kv(cmd::kv::Args),
    /// Benchmarks: RPC, messaging, shared maps, the cost model and the raw
    /// TCP floor, with pinning (tables or JSON).
    Bench(cmd::bench::Args),
}

fn init_logging(filter: Option<&str>, default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|e| {
            eprintln!("meshwire: --log {f:?} is not a valid filter ({e}); using {default:?}");
            EnvFilter::new(default)
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 with a usage message on bad arguments
    let default_log = match cli.command {
        // openraft narrates every vote and replication hiccup at info
        // and warn; meshwire logs what an operator needs (joins, leaders).
        Command::Node(_) => "info,openraft=error",
        // The demo narrates what happens; library warnings would be noise.
        Command::Demo(_) => "error",
        _ => "warn,openraft=error",
    };
    init_logging(cli.log.as_deref(), default_log);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshwire: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Node(a) => cmd::node::run(a).await,
            Command::Keygen(a) => cmd::keygen::run(a),
            Command::Pub(a) => cmd::publish::run(a).await,
            Command::Sub(a) => cmd::subscribe::run(a).await,
            Command::Request(a) => cmd::request::run(a).await,
            Command::Reply(a) => cmd::reply::run(a).await,
            Command::Serve(a) => cmd::serve::run(a).await,
            Command::Call(a) => cmd::call::run(a).await,
            Command::Demo(a) => cmd::demo::run(a).await,
            Command::Bench(a) => cmd::bench::run(a).await,
            Command::Kv(a) => cmd::kv::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<cmd::Exit>() {
                eprintln!("meshwire: {}", exit.message);
                return ExitCode::from(exit.code);
            }
            eprintln!("meshwire: error: {e:#}");
            // Badly formed arguments are usage errors (2), whether clap or
            // the library noticed; everything else is a runtime failure (1).
            let usage = e.downcast_ref::<cmd::UsageError>().is_some()
                || matches!(
                    e.downcast_ref::<meshwire::Error>(),
                    Some(
                        meshwire::Error::Address(_)
                            | meshwire::Error::Subject(_)
                            | meshwire::Error::Config(_)
                            | meshwire::Error::Permissions(_)
                    )
                );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
