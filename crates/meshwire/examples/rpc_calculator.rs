//! Typed RPC with `#[meshwire::service]`: a router serves a calculator, a
//! client node calls it — unary calls, the service's own error, JSON, and a
//! server stream.
//! Run: `cargo run -p meshwire --example rpc_calculator`

use futures_util::Stream;
use meshwire::rpc::RpcError;
use meshwire::security::Authority;
use meshwire::Node;
use serde::{Deserialize, Serialize};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// What can go wrong in the calculator, carried to the caller as is.
#[derive(Debug, Serialize, Deserialize)]
pub enum CalcError {
    /// The result does not fit an `i64`.
    Overflow,
    /// Division by zero.
    DivideByZero,
}

/// A calculator, served as `calculator` (the trait's name in snake case).
#[meshwire::service]
pub trait Calculator {
    /// Adds two numbers. Idempotent: a client may retry it elsewhere.
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    /// Divides `a` by `b`.
    #[idempotent]
    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    /// Adds to the memory and returns it; never retried.
    async fn remember(&self, value: i64) -> Result<i64, CalcError>;
    /// Counts from 1 to `upto`, one item at a time.
    #[server_stream]
    fn count(&self, upto: u32) -> impl Stream<Item = Result<u32, CalcError>> + Send + 'static;
}

#[derive(Default)]
struct Calc {
    memory: AtomicI64,
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        a.checked_add(b).ok_or(CalcError::Overflow)
    }

    async fn div(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        if b == 0 {
            return Err(CalcError::DivideByZero);
        }
        a.checked_div(b).ok_or(CalcError::Overflow)
    }

    async fn remember(&self, value: i64) -> Result<i64, CalcError> {
        Ok(self.memory.fetch_add(value, Ordering::SeqCst) + value)
    }

    fn count(&self, upto: u32) -> impl Stream<Item = Result<u32, CalcError>> + Send + 'static {
        futures_util::stream::iter((1..=upto).map(Ok))
    }
}

async fn run() -> Result<(), RpcError<CalcError>> {
    // A router that also serves the calculator, and a client node; an
    // in-memory CA certifies both so their TLS links admit each other.
    let ca = Authority::generate("calculator").map_err(meshwire::Error::from)?;
    let router = Node::builder()
        .listen("127.0.0.1:0")
        .certified_by(&ca)
        .start()
        .await?;
    let _serving = router.serve(Calc::default().into_service()).await?;
    let caller = Node::builder()
        .connect(router.listen_addr().unwrap_or_default())
        .certified_by(&ca)
        .start()
        .await?;

    // The generated client: typed arguments and results.
    let calc = CalculatorClient::connect(&caller).await?;
    println!("service {:?}", CalculatorClient::SERVICE);
    println!("add(1, 2) = {}", calc.add(1, 2).await?);
    let q = calc.div(84, 2).timeout(Duration::from_secs(1)).await?;
    println!("div(84, 2) = {q} (with a 1 s deadline)");
    println!("add(40, 2) as JSON = {}", calc.add(40, 2).json().await?);
    match calc.div(1, 0).await {
        Err(RpcError::Application(e)) => println!("div(1, 0) -> the service's error: {e:?}"),
        other => println!("div(1, 0) -> unexpected: {other:?}"),
    }
    calc.remember(5).await?;
    println!("remember(5), remember(3) = {}", calc.remember(3).await?);

    let mut items = calc.count(3).await?;
    let mut counted = Vec::new();
    while let Some(n) = items.next().await {
        counted.push(n?);
    }
    println!("count(3) streamed {counted:?}");

    caller.shutdown().await;
    router.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match tokio::time::timeout(Duration::from_secs(30), run()).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("rpc_calculator: {e:?}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("rpc_calculator: timed out");
            ExitCode::FAILURE
        }
    }
}
