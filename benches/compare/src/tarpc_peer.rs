//! tarpc: an echo service over TCP on 127.0.0.1 with tarpc's bincode
//! serde transport, one connection, the server's requests run as tasks on
//! the server side's runtime. The payload is a `Vec<u8>` (tarpc's
//! arguments are owned serde values).

use crate::pin::{join, spawn_side, Placement, Side};
use crate::report;
use crate::Load;
use anyhow::Context as _;
use futures::{Future, StreamExt as _};
use std::sync::mpsc;
use tarpc::server::Channel as _;
use tarpc::tokio_serde::formats::Bincode;

#[tarpc::service]
trait Echo {
    /// Returns its argument.
    async fn echo(payload: Vec<u8>) -> Vec<u8>;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: tarpc::context::Context, payload: Vec<u8>) -> Vec<u8> {
        payload
    }
}

async fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// Serial (`inflight` None: latency percentiles) or `inflight` calls
/// outstanding (calls per second).
pub(crate) fn run(
    load: &Load,
    inflight: Option<u32>,
    p: &Placement,
) -> anyhow::Result<serde_json::Value> {
    let (size, warmup) = (load.size.max(1), load.warmup);
    let (header, stop) = report::rpc_plan("tarpc", load, inflight, p);
    let (addr_tx, addr_rx) = mpsc::channel();
    let server = spawn_side(p, Side::Server, move || async move {
        let mut listener =
            tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default).await?;
        addr_tx.send(listener.local_addr())?;
        let transport = listener
            .next()
            .await
            .context("the tarpc listener closed")??;
        transport.get_ref().set_nodelay(true)?;
        // Serves until the client hangs up.
        tarpc::server::BaseChannel::with_defaults(transport)
            .execute(EchoServer.serve())
            .for_each(spawn)
            .await;
        Ok(())
    })?;
    let addr = addr_rx.recv().context("the tarpc server did not start")?;
    let client = spawn_side(p, Side::Client, move || async move {
        let transport = tarpc::serde_transport::tcp::connect(addr, Bincode::default).await?;
        transport.get_ref().set_nodelay(true)?;
        let client = EchoClient::new(tarpc::client::Config::default(), transport).spawn();
        let payload = vec![7u8; size];
        let call = || async {
            let back = client
                .echo(tarpc::context::current(), payload.clone())
                .await?;
            anyhow::ensure!(
                back.len() == size,
                "tarpc echoed {} bytes, not {size}",
                back.len()
            );
            Ok(())
        };
        report::rpc_calls(header, inflight, warmup, stop, call).await
    })?;
    let v = join(client)?;
    join(server)?;
    Ok(v)
}
