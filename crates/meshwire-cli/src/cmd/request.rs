//! `meshwire request`: one request, one reply.

use super::{ConnectArgs, UsageError};
use std::io::Write;
use std::time::Duration;

/// Send PAYLOAD to SUBJECT and print the reply's payload. Fails at once if
/// nobody serves the subject ("no responders"), or after --timeout.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Subject to send the request to.
    #[arg(long, short = 's', value_name = "SUBJECT")]
    subject: String,
    /// Milliseconds to wait for the reply.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    timeout: u64,
    /// The request payload.
    #[arg(default_value = "")]
    payload: String,
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    meshwire::proto::wire::Subject::literal(&a.subject)
        .map_err(|e| UsageError(format!("--subject {:?}: {e}", a.subject)))?;
    let node = a.connect.attach().await?;
    let result = node
        .request(&a.subject, a.payload.clone())
        .timeout(Duration::from_millis(a.timeout))
        .await;
    node.shutdown().await;
    match result {
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            out.write_all(reply.payload())?;
            out.write_all(b"\n")?;
            out.flush()?;
            Ok(())
        }
        Err(meshwire::Error::NoResponders { subject }) => anyhow::bail!(
            "no responders for {subject:?}: nothing subscribes to it; start one with `meshwire reply --connect ADDR --subject {subject}`"
        ),
        Err(meshwire::Error::Timeout(t)) => anyhow::bail!(
            "no reply within {} ms; raise --timeout or check the responder",
            t.as_millis()
        ),
        Err(e) => Err(e.into()),
    }
}
