//! `#[meshwire::service]` end to end: a service defined with the macro,
//! served on a router, called through the generated client from a second
//! node, in the binary and the JSON codec.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

mod support;

use futures_util::Stream;
use meshwire::rpc::{CallOpts, Codec, Context, RpcError};
use meshwire::Node;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bounds every wait of these tests.
const WAIT: Duration = Duration::from_secs(20);

/// The calculator's own errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CalcError {
    /// The result does not fit.
    Overflow,
    /// A stream was asked for more than the limit.
    TooMany {
        /// The limit.
        limit: u32,
    },
}

/// The service under test.
#[meshwire::service]
pub trait Calculator {
    /// Adds two numbers.
    #[idempotent]
    async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError>;
    /// Adds to a running total (not idempotent).
    async fn accumulate(&self, by: i64) -> Result<i64, CalcError>;
    /// Clears the running total.
    async fn reset(&self) -> Result<(), CalcError>;
    /// Greets the caller named in the `user` metadata entry.
    #[idempotent]
    async fn greet(&self, #[context] ctx: Context, greeting: String) -> Result<String, CalcError>;
    /// Counts from 1 to `upto`; more than 100 items is an error after 100.
    #[server_stream]
    fn count(&self, upto: u32) -> impl Stream<Item = Result<u32, CalcError>> + Send + 'static;
    /// The same with a concrete stream type.
    #[server_stream]
    #[idempotent]
    fn count_boxed(&self, upto: u32) -> Pin<Box<dyn Stream<Item = Result<u32, CalcError>> + Send>>;
}

/// A second service: a name set by hand, an error type that is a `String`.
#[meshwire::service(name = "kv-store")]
pub trait KvStore {
    /// Looks a key up.
    async fn get(&self, key: String) -> Result<Option<String>, String>;
}

#[derive(Default)]
struct Calc {
    total: Mutex<i64>,
    accumulations: Arc<AtomicU32>,
}

const LIMIT: u32 = 100;

fn counter(upto: u32) -> impl Stream<Item = Result<u32, CalcError>> + Send + 'static {
    futures_util::stream::iter((1..=upto.min(LIMIT + 1)).map(|n| {
        if n > LIMIT {
            Err(CalcError::TooMany { limit: LIMIT })
        } else {
            Ok(n)
        }
    }))
}

impl Calculator for Calc {
    async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError> {
        a.checked_add(b).ok_or(CalcError::Overflow)
    }

    async fn accumulate(&self, by: i64) -> Result<i64, CalcError> {
        self.accumulations.fetch_add(1, Ordering::SeqCst);
        let mut t = self.total.lock().unwrap();
        *t = t.checked_add(by).ok_or(CalcError::Overflow)?;
        Ok(*t)
    }

    async fn reset(&self) -> Result<(), CalcError> {
        *self.total.lock().unwrap() = 0;
        Ok(())
    }

    async fn greet(&self, ctx: Context, greeting: String) -> Result<String, CalcError> {
        let user = ctx
            .metadata()
            .get("user")
            .map_or("anonymous", String::as_str);
        ctx.set_reply_metadata("greeted", user);
        Ok(format!("{greeting}, {user}"))
    }

    fn count(&self, upto: u32) -> impl Stream<Item = Result<u32, CalcError>> + Send + 'static {
        counter(upto)
    }

    fn count_boxed(&self, upto: u32) -> Pin<Box<dyn Stream<Item = Result<u32, CalcError>> + Send>> {
        Box::pin(counter(upto))
    }
}

struct Kv;

impl KvStore for Kv {
    async fn get(&self, key: String) -> Result<Option<String>, String> {
        match key.as_str() {
            "" => Err("empty key".to_owned()),
            "k" => Ok(Some("v".to_owned())),
            _ => Ok(None),
        }
    }
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// A router serving the calculator, and a client node attached to it.
async fn setup() -> (Node, Node, meshwire::rpc::Serving, Arc<AtomicU32>) {
    let router = bounded("router", support::builder().listen("127.0.0.1:0").start())
        .await
        .unwrap();
    let calc = Calc::default();
    let accumulations = calc.accumulations.clone();
    let serving = bounded("serve", router.serve(calc.into_service()))
        .await
        .unwrap();
    let caller = bounded(
        "client node",
        support::builder()
            .connect(router.listen_addr().unwrap())
            .start(),
    )
    .await
    .unwrap();
    (router, caller, serving, accumulations)
}

async fn connect(caller: &Node) -> CalculatorClient {
    let client = bounded("connect", CalculatorClient::connect(caller))
        .await
        .unwrap();
    bounded("discovery", async {
        while client.client().instances().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    client
}

#[test]
fn names_and_request_bodies() {
    assert_eq!(CalculatorClient::SERVICE, "calculator");
    assert_eq!(KvStoreClient::SERVICE, "kv-store");
    assert_eq!(Calc::default().into_service().name(), "calculator");
    let svc = Calc::default().into_service();
    assert!(svc.is_idempotent("add") && svc.is_idempotent("greet"));
    assert!(svc.is_idempotent("count_boxed"));
    assert!(!svc.is_idempotent("accumulate") && !svc.is_idempotent("count"));
    // The JSON the CLI sends.
    let add = CalculatorAddRequest { a: 1, b: 2 };
    assert_eq!(serde_json::to_string(&add).unwrap(), r#"{"a":1,"b":2}"#);
    assert_eq!(
        serde_json::to_string(&CalculatorResetRequest {}).unwrap(),
        "{}"
    );
    let back: CalculatorAddRequest = serde_json::from_str(r#"{"b":5,"a":4}"#).unwrap();
    assert_eq!((back.a, back.b), (4, 5));
    let _: CalculatorResetRequest = serde_json::from_str("{}").unwrap();
    // The context parameter is not part of the request.
    let greet = CalculatorGreetRequest {
        greeting: "hi".into(),
    };
    assert_eq!(
        serde_json::to_string(&greet).unwrap(),
        r#"{"greeting":"hi"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_methods_in_both_codecs() {
    let (_router, caller, _serving, accumulations) = setup().await;
    let calc = connect(&caller).await;
    bounded("unary calls", async {
        // Idempotent, binary and JSON.
        assert_eq!(calc.add(1, 2).await.unwrap(), 3);
        assert_eq!(calc.add(40, 2).json().await.unwrap(), 42);
        assert_eq!(
            calc.add(-1, 1)
                .timeout(Duration::from_secs(5))
                .await
                .unwrap(),
            0
        );
        // The service's own error, in both codecs.
        for json in [false, true] {
            let call = calc.add(i64::MAX, 1);
            let r = if json { call.json().await } else { call.await };
            match r {
                Err(RpcError::Application(CalcError::Overflow)) => {}
                other => panic!("expected the application error, got {other:?}"),
            }
        }
        // Not idempotent: runs once per call.
        assert_eq!(calc.accumulate(5).await.unwrap(), 5);
        assert_eq!(calc.accumulate(2).json().await.unwrap(), 7);
        assert_eq!(accumulations.load(Ordering::SeqCst), 2);
        // No arguments.
        calc.reset().await.unwrap();
        calc.reset().json().await.unwrap();
        assert_eq!(calc.accumulate(1).await.unwrap(), 1);
        // Metadata is optional; when sent, the handler sees it.
        assert_eq!(
            calc.greet("hello".into()).await.unwrap(),
            "hello, anonymous"
        );
        assert_eq!(
            calc.greet("hi".into())
                .metadata("user", "ann")
                .json()
                .await
                .unwrap(),
            "hi, ann"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_json_call_like_the_cli_makes() {
    let (_router, caller, _serving, _) = setup().await;
    let calc = connect(&caller).await;
    bounded("raw calls", async {
        let mut opts = CallOpts::default();
        opts.codec = Codec::Json;
        let (body, _, _) = calc
            .client()
            .call_raw("add", br#"{"a":1,"b":2}"#.to_vec(), opts.clone())
            .await
            .unwrap();
        assert_eq!(body, b"3");
        let (body, _, _) = calc
            .client()
            .call_raw("reset", b"{}".to_vec(), opts.clone())
            .await
            .unwrap();
        assert_eq!(body, b"null");
        match calc
            .client()
            .call_raw("add", br#"{"a":"one"}"#.to_vec(), opts.clone())
            .await
        {
            Err(RpcError::BadRequest(_)) => {}
            other => panic!("expected a bad request, got {other:?}"),
        }
        match calc
            .client()
            .call_raw("add", br#"{"a":9223372036854775807,"b":1}"#.to_vec(), opts)
            .await
        {
            Err(RpcError::Application(body)) => {
                assert_eq!(body, br#""Overflow""#);
            }
            other => panic!("expected the application error, got {other:?}"),
        }
        // The server kept serving.
        assert_eq!(calc.add(2, 2).await.unwrap(), 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams() {
    let (_router, caller, _serving, _) = setup().await;
    let calc = connect(&caller).await;
    bounded("streams", async {
        let mut s = calc.count(5).await.unwrap();
        let mut got = Vec::new();
        while let Some(n) = s.next().await {
            got.push(n.unwrap());
        }
        assert_eq!(got, [1, 2, 3, 4, 5]);

        let mut opts = CallOpts::default();
        opts.codec = Codec::Json;
        opts.timeout = Some(Duration::from_secs(5));
        let mut s = calc.count_boxed_with(3, opts).await.unwrap();
        let mut got = Vec::new();
        while let Some(n) = s.next().await {
            got.push(n.unwrap());
        }
        assert_eq!(got, [1, 2, 3]);

        // The application error ends the stream after the good items.
        let mut s = calc.count_boxed(LIMIT + 5).await.unwrap();
        let mut ok = 0;
        let mut last = None;
        while let Some(n) = s.next().await {
            match n {
                Ok(_) => ok += 1,
                Err(e) => last = Some(e),
            }
        }
        assert_eq!(ok, LIMIT);
        match last {
            Some(RpcError::Application(CalcError::TooMany { limit: LIMIT })) => {}
            other => panic!("expected the application error, got {other:?}"),
        }

        // An empty stream.
        let mut s = calc.count(0).await.unwrap();
        assert!(s.next().await.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_service_with_a_string_error() {
    let (router, caller, _serving, _) = setup().await;
    let _kv_serving = bounded("serve kv", router.serve(Kv.into_service().weight(7)))
        .await
        .unwrap();
    let client = bounded(
        "kv client",
        KvStoreClient::builder(&caller)
            .timeout(Duration::from_secs(5))
            .build(),
    )
    .await
    .unwrap();
    let kv = KvStoreClient::from_client(client);
    assert_eq!(kv.client().service(), "kv-store");
    bounded("kv calls", async {
        while kv.client().instances().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(kv.get("k".into()).await.unwrap(), Some("v".to_owned()));
        assert_eq!(kv.get("x".into()).json().await.unwrap(), None);
        match kv.get(String::new()).await {
            Err(RpcError::Application(e)) => assert_eq!(e, "empty key"),
            other => panic!("expected the application error, got {other:?}"),
        }
    })
    .await;
}
