//! `meshwire keygen`: a new node key.

use super::UsageError;
use meshwire::security::Identity;
use std::io::Write;
use std::path::PathBuf;

/// Write a new Ed25519 node key and print its NodeId.
///
/// The key is PKCS#8 PEM, mode 0600; use it with `--key FILE`. Prints one
/// JSON line: {"node":"<NodeId>","key":"<FILE>"} — put the NodeId in the
/// trust files (`--trust`) of the nodes that should admit this one.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Where to write the key.
    #[arg(long, short = 'o', value_name = "FILE")]
    out: PathBuf,
    /// Replace an existing file (its node gets a new id).
    #[arg(long)]
    force: bool,
    /// Also append the new NodeId to this trust file (created if absent),
    /// with a comment naming the key file.
    #[arg(long, value_name = "TRUST_FILE")]
    add_to: Option<PathBuf>,
}

pub(crate) fn run(a: Args) -> anyhow::Result<()> {
    if !a.force && a.out.exists() {
        return Err(UsageError(format!(
            "{} already exists; pass --force to replace it (the node using it gets a new id)",
            a.out.display()
        ))
        .into());
    }
    let identity = Identity::generate()?;
    identity.save(&a.out)?;
    if let Some(trust) = &a.add_to {
        use anyhow::Context as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(trust)
            .with_context(|| format!("cannot open the trust file {}", trust.display()))?;
        writeln!(f, "{}  # {}", identity.node_id(), a.out.display())
            .with_context(|| format!("cannot write to the trust file {}", trust.display()))?;
    }
    let line = serde_json::json!({
        "node": identity.node_id().to_string(),
        "key": a.out.display().to_string(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
