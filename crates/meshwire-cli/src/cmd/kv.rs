//! `meshwire kv`: read, write and watch a shared map from the shell.
//!
//! Output is for programs: `get` prints one JSON object (or `null`),
//! `put`/`cas`/`delete` print the new version, `list` and `watch` print one
//! JSON object per line. `cas` exits 3 when the version did not match.

use super::{ConnectArgs, Exit, UsageError};
use meshwire::state::{Cas, Consistency, MapError, SharedMap};
use meshwire::Node;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

/// Read, write and watch a replicated map.
///
/// Linearizable maps (the default) live in the Raft group of the routers
/// started with `meshwire node --raft`; any router can be --connect-ed.
/// With --eventual the map is an eventually consistent CRDT map that every
/// node keeps a replica of.
///
/// VALUE is JSON when it parses as JSON (`42`, `{"a":1}`, `"text"`), and a
/// JSON string otherwise (`hello` is stored as "hello"); `-` reads it from
/// stdin (for values larger than a command line allows). Values are at
/// most 256 KiB of JSON.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  meshwire kv -c 127.0.0.1:4701 put config/mode fast         # prints the new version
  meshwire kv -c 127.0.0.1:4701 get config/mode              # {\"key\":..,\"value\":..,\"version\":..}
  meshwire kv -c 127.0.0.1:4701 cas config/mode 7 slow       # exit 3 if the version is not 7
  meshwire kv -c 127.0.0.1:4701 watch config/ --count 10     # one JSON change per line
  meshwire kv -c 127.0.0.1:4701 --map jobs create            # maps other than \"default\" are created first
  meshwire kv -c 127.0.0.1:4701 members                      # who is in the Raft group")]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The map to use ("default" always exists; create others with
    /// `create`).
    #[arg(
        long,
        short = 'm',
        value_name = "NAME",
        default_value = "default",
        global = true
    )]
    map: String,
    /// Use an eventually consistent (CRDT) map instead of a linearizable one.
    #[arg(long, global = true)]
    eventual: bool,
    /// Milliseconds to wait for the Raft group (retrying through leader
    /// elections and member failures meanwhile).
    #[arg(long, value_name = "MS", default_value_t = 10_000, global = true)]
    timeout: u64,
    #[command(subcommand)]
    op: Op,
}

#[derive(clap::Subcommand, Debug)]
enum Op {
    /// Print {"key":..,"value":..,"version":..}, or null when absent.
    Get {
        /// The key.
        key: String,
    },
    /// Set KEY to VALUE; print the new version.
    Put {
        /// The key.
        key: String,
        /// The value (JSON, or text stored as a JSON string).
        value: String,
    },
    /// Delete KEY; print the version of the delete.
    Delete {
        /// The key.
        key: String,
    },
    /// Set KEY to VALUE only if its version is EXPECTED_VERSION (0: only if
    /// absent); print the new version, or exit 3 on a mismatch.
    Cas {
        /// The key.
        key: String,
        /// The version the key must have (0: absent).
        expected_version: u64,
        /// The value (JSON, or text stored as a JSON string).
        value: String,
    },
    /// Print changes under PREFIX, one JSON object per line, as they
    /// commit ("value": null for a delete).
    Watch {
        /// Key prefix ("" for every key).
        #[arg(default_value = "")]
        prefix: String,
        /// Resume after this version instead of starting from now.
        #[arg(long, value_name = "VERSION")]
        from: Option<u64>,
        /// Exit after N changes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Print the keys under PREFIX, one JSON object per line, in key order.
    List {
        /// Key prefix ("" for every key).
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Create the map named by --map (nothing happens if it exists).
    Create,
    /// Print the Raft group's members and leader as JSON.
    Members,
    /// Add a router to the Raft group (it must run `meshwire node --raft`).
    AddMember {
        /// Its NodeId (the "node" of its ready line).
        node: String,
        /// The address it listens on.
        addr: String,
    },
    /// Remove a member from the Raft group.
    RemoveMember {
        /// Its NodeId.
        node: String,
    },
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let consistency = if a.eventual {
        Consistency::Eventual
    } else {
        Consistency::Linearizable
    };
    if a.eventual
        && matches!(
            a.op,
            Op::Members | Op::AddMember { .. } | Op::RemoveMember { .. }
        )
    {
        return Err(UsageError(
            "members, add-member and remove-member are about the Raft group: drop --eventual"
                .into(),
        )
        .into());
    }
    let node = a.connect.attach().await?;
    let result = execute(&node, &a, consistency).await;
    node.shutdown().await;
    result
}

async fn execute(node: &Node, a: &Args, consistency: Consistency) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(a.timeout);
    let open = || async {
        let map: SharedMap<String, Value> = node
            .existing_map(&a.map, consistency)
            .await
            .map_err(explain)?;
        anyhow::Ok(map.with_timeout(timeout))
    };
    let mut out = std::io::stdout().lock();
    match &a.op {
        Op::Get { key } => {
            let got = open().await?.get(key).await.map_err(explain)?;
            let line = match got {
                Some(v) => json!({"key": key, "value": v.value, "version": v.version}),
                None => Value::Null,
            };
            writeln!(out, "{line}")?;
        }
        Op::Put { key, value } => {
            let version = open()
                .await?
                .put(key, &parse_value(&value_text(value)?))
                .await
                .map_err(explain)?;
            writeln!(out, "{version}")?;
        }
        Op::Delete { key } => {
            let deleted = open().await?.delete(key).await.map_err(explain)?;
            if !deleted.existed {
                tracing::info!("{key:?} was not set");
            }
            writeln!(out, "{}", deleted.version)?;
        }
        Op::Cas {
            key,
            expected_version,
            value,
        } => {
            let map = open().await?;
            match map
                .compare_and_swap(key, *expected_version, &parse_value(&value_text(value)?))
                .await
                .map_err(explain)?
            {
                Cas::Swapped { version } => writeln!(out, "{version}")?,
                Cas::Mismatch { current } => {
                    return Err(Exit {
                        code: 3,
                        message: format!(
                            "version mismatch: {key:?} is at version {current}, not {expected_version}; nothing was written"
                        ),
                    }
                    .into())
                }
                other => anyhow::bail!("unexpected outcome {other:?}"),
            }
        }
        Op::Watch {
            prefix,
            from,
            count,
        } => {
            let map = open().await?;
            let mut watch = match from {
                Some(v) => map.watch_from(prefix, *v),
                None => map.watch(prefix).await.map_err(explain)?,
            };
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                let Some(change) = watch.next().await else {
                    break;
                };
                let change = change.map_err(explain)?;
                writeln!(
                    out,
                    "{}",
                    json!({"key": change.key, "value": change.value, "version": change.version})
                )?;
                out.flush()?;
                seen += 1;
            }
        }
        Op::List { prefix } => {
            let snapshot = open().await?.snapshot(prefix).await.map_err(explain)?;
            for (key, v) in snapshot {
                writeln!(
                    out,
                    "{}",
                    json!({"key": key, "value": v.value, "version": v.version})
                )?;
            }
        }
        Op::Create => {
            let _: SharedMap<String, Value> = node
                .shared_map(&a.map, consistency)
                .await
                .map_err(explain)?;
            writeln!(
                out,
                "{}",
                json!({"map": a.map, "consistency": if a.eventual {"eventual"} else {"linearizable"}})
            )?;
        }
        Op::Members => {
            let info = node.raft_group().await.map_err(explain)?;
            let members = |list: &[(u64, meshwire::state::raft::Member)]| {
                list.iter()
                    .map(|(id, m)| json!({"raft_id": format!("{id:016x}"), "node": m.node, "addr": m.addr}))
                    .collect::<Vec<_>>()
            };
            let line = json!({
                "leader": info.leader.map(|l| format!("{l:016x}")),
                "term": info.term,
                "applied": info.applied,
                "answered_by": format!("{:016x}", info.answered_by),
                "voters": members(&info.voters),
                "learners": members(&info.learners),
            });
            writeln!(out, "{line}")?;
        }
        Op::AddMember { node: id, addr } => {
            let id = parse_node(id)?;
            node.add_raft_member(id, addr).await.map_err(explain)?;
            writeln!(out, "{}", json!({"added": id.to_string(), "addr": addr}))?;
        }
        Op::RemoveMember { node: id } => {
            let id = parse_node(id)?;
            node.remove_raft_member(id).await.map_err(explain)?;
            writeln!(out, "{}", json!({"removed": id.to_string()}))?;
        }
    }
    out.flush()?;
    Ok(())
}

/// JSON when it parses, a JSON string otherwise.
/// VALUE as given, or stdin for `-` (without one trailing newline).
fn value_text(value: &str) -> anyhow::Result<String> {
    if value != "-" {
        return Ok(value.to_owned());
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| UsageError(format!("VALUE '-' reads stdin, which failed: {e}")))?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

fn parse_node(text: &str) -> anyhow::Result<meshwire::NodeId> {
    text.parse().map_err(|e| {
        UsageError(format!(
            "{text:?} is not a NodeId ({e}); use the \"node\" of a ready line"
        ))
        .into()
    })
}

/// Map errors become usage errors (exit 2) when the input was at fault.
fn explain(e: MapError) -> anyhow::Error {
    match e {
        MapError::Invalid(_) | MapError::UnknownMap { .. } => UsageError(e.to_string()).into(),
        e => e.into(),
    }
}
