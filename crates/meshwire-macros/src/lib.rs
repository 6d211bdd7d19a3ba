//! # meshwire-macros — `#[meshwire::service]`
//!
//! One attribute turns a trait of async methods into a typed RPC service:
//! the server side (a trait you implement with plain `async fn`, and a
//! [`Service`] built from your implementation) and the client side (a
//! struct whose methods have the same arguments and return the typed
//! result). Use it as `meshwire::service`; this crate is not meant to be a
//! direct dependency.
//!
//! ```text
//!  #[meshwire::service] trait Calculator ─┬─► trait Calculator (+ into_service)   implement it, serve it
//!                                         ├─► struct CalculatorAddRequest, ...    one per method: the body
//!                                         └─► struct CalculatorClient             call it
//! ```
//!
//! ## Example
//!
//! ```no_run
//! use futures_util::Stream;
//! use meshwire::rpc::RpcError;
//! use meshwire::Node;
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! /// The calculator's own errors, carried to the caller.
//! #[derive(Debug, Serialize, Deserialize)]
//! pub enum CalcError {
//!     /// The result does not fit an `i64`.
//!     Overflow,
//! }
//!
//! /// A calculator, served over the mesh as `calculator`.
//! #[meshwire::service]
//! pub trait Calculator {
//!     /// Adds two numbers.
//!     #[idempotent]
//!     async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError>;
//!     /// Clears the memory (not idempotent: never retried).
//!     async fn reset(&self) -> Result<(), CalcError>;
//!     /// Counts from 1 to `upto`, one item at a time.
//!     #[server_stream]
//!     fn count(&self, upto: u32) -> impl Stream<Item = Result<u32, CalcError>> + Send + 'static;
//! }
//!
//! struct Calc;
//!
//! impl Calculator for Calc {
//!     async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError> {
//!         a.checked_add(b).ok_or(CalcError::Overflow)
//!     }
//!     async fn reset(&self) -> Result<(), CalcError> {
//!         Ok(())
//!     }
//!     fn count(&self, upto: u32) -> impl Stream<Item = Result<u32, CalcError>> + Send + 'static {
//!         futures_util::stream::iter((1..=upto).map(Ok))
//!     }
//! }
//!
//! async fn demo(server: &Node, caller: &Node) -> Result<(), RpcError<CalcError>> {
//!     // Server: serve an implementation (until `_serving` is dropped).
//!     let _serving = server.serve(Calc.into_service()).await?;
//!     // Client: typed calls; each method returns a call builder to await.
//!     let calc = CalculatorClient::connect(caller).await?;
//!     assert_eq!(calc.add(1, 2).await?, 3);
//!     let sum = calc.add(40, 2).timeout(Duration::from_millis(300)).json().await?;
//!     match calc.add(i64::MAX, 1).await {
//!         Err(RpcError::Application(CalcError::Overflow)) => {} // the service's own error
//!         other => panic!("{other:?}"),
//!     }
//!     calc.reset().await?;
//!     let mut items = calc.count(3).await?;
//!     while let Some(n) = items.next().await {
//!         println!("{}", n?);
//!     }
//!     Ok(())
//! }
//! ```
//!
//! ## What it generates
//!
//! For `pub trait Calculator` (the generated items take the trait's
//! visibility and live next to it):
//!
//! | item | what |
//! |---|---|
//! | `trait Calculator` | the trait, each `async fn m(&self, ..) -> R` rewritten to `fn m(&self, ..) -> impl Future<Output = R> + Send`, so an `impl` may still write `async fn` (its future must be `Send`: the server runs it on a task). Streaming methods keep their signature. |
//! | `Calculator::into_service(self) -> meshwire::rpc::Service` | a provided method: wraps the implementation in an `Arc` and registers every method (`unary`, or `server_stream`, with its idempotent flag). Serve it with `node.serve(..)`; chain `.weight(w)` first to advertise a weight. |
//! | `CalculatorAddRequest` | one struct per method, `{Trait}{Method}Request`, with the method's arguments as public named fields; it is the call's body (`{"a":1,"b":2}` in JSON, `{}` for a method without arguments). |
//! | `CalculatorClient` | `Clone + Debug`, wraps a [`meshwire::rpc::Client`]. |
//! | `CalculatorClient::SERVICE` | the service name (`"calculator"`). |
//! | `CalculatorClient::connect(&Node)` | a client with the default options (least-loaded balancing, 5 s default deadline): `meshwire::Result<Self>`. |
//! | `CalculatorClient::builder(&Node)` | a [`ClientBuilder`] for this service, to choose the balancing policy or timeouts; pass what it builds to `from_client`. |
//! | `CalculatorClient::from_client(Client)`, `.client()` | wrap a client of this service / reach the untyped client. |
//! | `CalculatorClient::add(&self, a, b)` | for `async fn add(..) -> Result<T, E>`: returns a [`Call`] builder, already `.idempotent()` when the method is; set `.timeout(d)`, `.key(k)`, `.metadata(k, v)`, `.json()`, then `.await` it for `Result<T, RpcError<E>>`. |
//! | `CalculatorClient::count(&self, upto)` | for a `#[server_stream]` method yielding `Result<T, E>`: `async`, returns `Result<RpcStream<T, E>, RpcError<E>>`; read items with `.next().await`. |
//! | `CalculatorClient::count_with(&self, upto, opts)` | the same with [`CallOpts`] (timeout, metadata, codec, key). |
//!
//! The service's name is the trait's name in snake case (`Calculator` →
//! `calculator`, `KvStore` → `kv_store`); the method names on the wire are
//! the methods' names. So the CLI can call any service:
//! `meshwire call --connect ADDR calculator.add '{"a":1,"b":2}'`.
//!
//! ## Attributes
//!
//! - On the trait: `#[meshwire::service(name = "calc")]` sets the service
//!   name (a subject token: letters, digits, `-`, `_`);
//!   `crate = "::path::to::meshwire"` is for a renamed or re-exported
//!   `meshwire` dependency (the default is `::meshwire`).
//! - `#[idempotent]` on a method: it may run more than once, so a client
//!   retries it on another instance when the one it called dies (within
//!   the retry budget). Methods without it are never retried once the
//!   request has left.
//! - `#[server_stream]` on a (non-`async`) method returning a `Stream` of
//!   `Result<T, E>`: the caller gets the items as they come. With
//!   `impl Stream<..>`, write `+ Send + 'static`: the stream outlives the
//!   call to the method (capture what it needs by value). Concrete types
//!   work too, e.g. `Pin<Box<dyn Stream<Item = Result<T, E>> + Send>>`.
//! - `#[context]` on one parameter of type [`meshwire::rpc::Context`]: the
//!   handler receives the call's context there (the caller's metadata, its
//!   deadline, reply metadata). That parameter is not part of the request
//!   nor of the client method.
//!
//! ## Rules, checked at compile time
//!
//! - Every method takes `&self` and returns `Result<T, E>` with both types
//!   written out (an alias like `io::Result<T>` hides `E`, which the client
//!   needs to decode the service's errors); `E` may differ per method.
//! - Arguments are owned (no `&str`: the request is deserialized into its
//!   own struct), bound to plain names; `T`, `E` and the arguments
//!   implement serde's `Serialize` and `Deserialize` (the generated structs
//!   use the serde that `meshwire` re-exports, so serde is only needed for
//!   your own types) and are `Send + 'static`.
//! - No generics, no default bodies, no items other than methods, and no
//!   method called `into_service`, `connect`, `builder`, `from_client` or
//!   `client`.
//! - The implementation must be `Send + Sync + 'static` to be served.
//!
//! [`Service`]: https://docs.rs/meshwire/latest/meshwire/rpc/struct.Service.html
//! [`meshwire::rpc::Client`]: https://docs.rs/meshwire/latest/meshwire/rpc/struct.Client.html
//! [`ClientBuilder`]: https://docs.rs/meshwire/latest/meshwire/rpc/struct.ClientBuilder.html
//! [`Call`]: https://docs.rs/meshwire/latest/meshwire/rpc/struct.Call.html
//! [`CallOpts`]: https://docs.rs/meshwire/latest/meshwire/rpc/struct.CallOpts.html
//! [`meshwire::rpc::Context`]: https://docs.rs/meshwire/latest/meshwire/rpc/struct.Context.html

mod analyse;
mod generate;

use analyse::analyse;
use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{parse_quote, FnArg, ItemTrait, LitStr, Path, TraitItem};

/// Turns a trait of async methods into a typed RPC service: the trait to
/// implement (plus `into_service`), one request struct per method and a
/// typed client, `{Trait}Client`.
///
/// ```no_run
/// # use futures_util::Stream;
/// # use std::time::Duration;
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)]
/// # pub enum CalcError { Overflow }
/// /// A calculator.
/// #[meshwire::service]               // or #[meshwire::service(name = "calc")]
/// pub trait Calculator {
///     /// Adds.
///     #[idempotent]                  // may be retried on another instance
///     async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError>;
///     /// Counts to `upto`.
///     #[server_stream]
///     fn count(&self, upto: u32) -> impl Stream<Item = Result<u32, CalcError>> + Send + 'static;
/// }
/// # struct MyCalc;
/// # impl Calculator for MyCalc {
/// #     async fn add(&self, a: i64, b: i64) -> Result<i64, CalcError> { Ok(a + b) }
/// #     fn count(&self, upto: u32) -> impl Stream<Item = Result<u32, CalcError>> + Send + 'static {
/// #         futures_util::stream::iter((1..=upto).map(Ok))
/// #     }
/// # }
/// # async fn demo(node: meshwire::Node) -> Result<(), meshwire::rpc::RpcError<CalcError>> {
///
/// let _serving = node.serve(MyCalc.into_service()).await?;
/// let calc = CalculatorClient::connect(&node).await?;
/// let three = calc.add(1, 2).timeout(Duration::from_secs(1)).await?;
/// # Ok(()) }
/// ```
///
/// The full reference (every generated item, the attributes, the rules)
/// and a complete example are in [the crate documentation](crate).
#[proc_macro_attribute]
pub fn service(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand(attr.into(), item.into()).into()
}

/// The macro on `proc_macro2` types, so that it can be unit-tested.
fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut tr: ItemTrait = match syn::parse2(item) {
        Ok(t) => t,
        Err(e) => {
            let e = syn::Error::new(e.span(), "#[meshwire::service] goes on a trait");
            return e.to_compile_error();
        }
    };
    let analysed = parse_options(attr).and_then(|opts| {
        let methods = analyse(&tr)?;
        Ok((opts, methods))
    });
    // Our own attributes are not real ones: they go whatever happens, so
    // that on an error only our message shows, not "unknown attribute".
    strip_markers(&mut tr);
    match analysed {
        Ok((opts, methods)) => generate::generate(&opts, tr, &methods),
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#err #tr)
        }
    }
}

/// The attribute's own arguments: `#[meshwire::service(name = "..", crate = "..")]`.
pub(crate) struct Options {
    /// The service name on the wire.
    pub(crate) name: Option<LitStr>,
    /// Path of the `meshwire` crate.
    pub(crate) krate: Path,
}

fn parse_options(attr: TokenStream) -> syn::Result<Options> {
    let mut name = None;
    let mut krate: Option<Path> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("name") {
            let lit: LitStr = meta.value()?.parse()?;
            check_service_name(&lit.value(), lit.span())?;
            name = Some(lit);
            Ok(())
        } else if meta.path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse()?;
            krate = Some(lit.parse()?);
            Ok(())
        } else {
            Err(meta.error("unknown option: expected `name = \"...\"` or `crate = \"...\"`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(Options {
        name,
        krate: krate.unwrap_or_else(|| parse_quote!(::meshwire)),
    })
}

pub(crate) fn check_service_name(name: &str, span: Span) -> syn::Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(syn::Error::new(
            span,
            format!(
                "service name {name:?} is not a subject token (letters, digits, `-`, `_`); \
                 set one with #[meshwire::service(name = \"...\")]"
            ),
        ))
    }
}

/// Removes `#[idempotent]`, `#[server_stream]` and `#[context]`.
fn strip_markers(tr: &mut ItemTrait) {
    for item in &mut tr.items {
        if let TraitItem::Fn(f) = item {
            f.attrs.retain(|a| {
                !a.path().is_ident("idempotent") && !a.path().is_ident("server_stream")
            });
            for input in &mut f.sig.inputs {
                if let FnArg::Typed(pt) = input {
                    pt.attrs.retain(|a| !a.path().is_ident("context"));
                }
            }
        }
    }
}

/// `KvStore` → `kv_store`, `HTTPServer` → `http_server`.
pub(crate) fn snake_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary = prev.is_some_and(|p| {
                p != '_'
                    && (p.is_lowercase() || p.is_ascii_digit() || (p.is_uppercase() && next_lower))
            });
            if boundary {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `get_user` → `GetUser`.
pub(crate) fn upper_camel(s: &str) -> String {
    s.split('_')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut cs = p.chars();
            cs.next()
                .map(|f| f.to_uppercase().chain(cs).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(attr: TokenStream, item: TokenStream) -> String {
        expand(attr, item).to_string()
    }

    #[test]
    fn names() {
        assert_eq!(snake_case("Calculator"), "calculator");
        assert_eq!(snake_case("KvStore"), "kv_store");
        assert_eq!(snake_case("HTTPServer"), "http_server");
        assert_eq!(snake_case("Echo2Service"), "echo2_service");
        assert_eq!(upper_camel("get_user"), "GetUser");
        assert_eq!(upper_camel("add"), "Add");
        assert!(check_service_name("calc-2_x", Span::call_site()).is_ok());
        assert!(check_service_name("a.b", Span::call_site()).is_err());
        assert!(check_service_name("", Span::call_site()).is_err());
    }

    #[test]
    fn a_valid_trait_expands() {
        let out = expand(
            quote!(name = "calc"),
            quote! {
                pub trait Calculator {
                    #[idempotent]
                    async fn add(&self, a: i64, b: i64) -> Result<i64, E>;
                    async fn reset(&self, #[context] ctx: Context) -> Result<(), E>;
                    #[server_stream]
                    fn count(&self, upto: u32) -> impl Stream<Item = Result<u32, E>> + Send + 'static;
                    #[server_stream]
                    fn boxed(&self) -> Pin<Box<dyn Stream<Item = Result<u8, E>> + Send>>;
                }
            },
        )
        .to_string();
        assert!(!out.contains("compile_error"), "{out}");
        for expected in [
            "pub struct CalculatorAddRequest",
            "pub struct CalculatorResetRequest",
            "pub struct CalculatorClient",
            "fn count_with",
            "fn into_service",
            "\"calc\"",
        ] {
            assert!(out.contains(expected), "{expected} missing in {out}");
        }
        assert!(!out.contains("# [idempotent]") && !out.contains("# [context]"));
    }

    #[test]
    fn mistakes_are_reported_at_their_place() {
        let cases = [
            (
                quote!(
                    async fn a(&self) -> i64;
                ),
                "returns `Result<T, E>`",
            ),
            (
                quote!(
                    async fn a(&self) -> io::Result<i64>;
                ),
                "both types written out",
            ),
            (
                quote!(
                    async fn a(&self);
                ),
                "add `-> Result<(), YourError>`",
            ),
            (
                quote!(
                    fn a(&self) -> Result<i64, E>;
                ),
                "is an `async fn`",
            ),
            (
                quote!(
                    async fn a(self) -> Result<i64, E>;
                ),
                "takes `&self`",
            ),
            (
                quote!(
                    async fn a(&self, s: &str) -> Result<i64, E>;
                ),
                "owned values",
            ),
            (
                quote!(
                    async fn a<T>(&self) -> Result<T, E>;
                ),
                "cannot be generic",
            ),
            (
                quote!(
                    async fn connect(&self) -> Result<(), E>;
                ),
                "rename the method",
            ),
            (
                quote!(
                    async fn a(&self) -> Result<(), E> {
                        Ok(())
                    }
                ),
                "default body",
            ),
            (
                quote!(
                    #[server_stream]
                    fn s(&self) -> impl Stream<Item = Result<u8, E>>;
                ),
                "Send + 'static",
            ),
            (
                quote!(
                    #[server_stream]
                    fn s(&self) -> Vec<u8>;
                ),
                "cannot see the item type",
            ),
            (
                quote!(
                    #[server_stream]
                    async fn s(&self) -> Result<(), E>;
                ),
                "remove `async`",
            ),
            (
                quote!(
                    #[idempotent(yes)]
                    async fn a(&self) -> Result<(), E>;
                ),
                "takes no arguments",
            ),
            (
                quote!(
                    const X: u8;
                ),
                "holds only methods",
            ),
        ];
        for (item, msg) in cases {
            let out = errors_of(quote!(), quote!(trait T { #item }));
            assert!(out.contains("compile_error"), "no error for {item}: {out}");
            assert!(out.contains(msg), "{msg:?} not in {out}");
        }
        assert!(errors_of(
            quote!(name = "a.b"),
            quote!(
                trait T {}
            )
        )
        .contains("subject token"));
        assert!(errors_of(
            quote!(nom = "x"),
            quote!(
                trait T {}
            )
        )
        .contains("unknown option"));
        assert!(errors_of(
            quote!(),
            quote!(
                struct S;
            )
        )
        .contains("goes on a trait"));
        let two_contexts = quote! {
            trait T { async fn a(&self, #[context] a: C, #[context] b: C) -> Result<(), E>; }
        };
        assert!(errors_of(quote!(), two_contexts).contains("only one #[context]"));
    }

    #[test]
    fn a_renamed_crate_is_used_everywhere() {
        let out = expand(
            quote!(crate = "::other::mw"),
            quote!(
                trait T {
                    async fn a(&self) -> Result<(), E>;
                }
            ),
        )
        .to_string();
        assert!(!out.contains("compile_error"), "{out}");
        assert!(out.contains(":: other :: mw :: rpc :: Service"), "{out}");
        assert!(
            out.contains("\"::other::mw::rpc::__private::serde\""),
            "{out}"
        );
        assert!(!out.contains(":: meshwire ::"), "{out}");
    }
}
